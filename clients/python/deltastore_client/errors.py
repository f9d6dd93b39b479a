"""Exceptions: every failure the registry reports (its error envelope) or the client detects."""


class DeltastoreError(Exception):
    """An error from the registry (`{"errors":[{"code","message"}]}`) or from the client.

    `code` is the upper-case reason (`VERSION_UNKNOWN`, `DIGEST_INVALID`, ...), `message` the
    human-readable detail, `status` the HTTP status (None when no response carried the error).
    """

    def __init__(self, message, code=None, status=None, errors=None, response=None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.errors = list(errors or [])
        self.response = response

    def __str__(self):
        head = " ".join(x for x in (f"HTTP {self.status}" if self.status else "", self.code or "") if x)
        return f"{head}: {self.message}" if head else self.message

    @classmethod
    def from_response(cls, r, context=None):
        code, message, errors = None, None, []
        try:
            body = r.json()
            errors = body.get("errors") or []
            if errors and isinstance(errors[0], dict):
                code = errors[0].get("code")
                message = errors[0].get("message")
        except ValueError:
            pass
        if code is None:
            code = f"HTTP_{r.status_code}"
        if not message:
            text = (r.text or "").strip() if r.request is None or r.request.method != "HEAD" else ""
            message = text[:300] or r.reason or "request failed"
        if context:
            message = f"{context}: {message}"
        return cls(message, code=code, status=r.status_code, errors=errors, response=r)


class ConnectionFailed(DeltastoreError):
    """The registry could not be reached (after the retries)."""


class DigestMismatch(DeltastoreError):
    """Downloaded bytes whose sha256 differs from the version's record."""


class JobFailed(DeltastoreError):
    """A version-creation job that ended in `failed`; `job` holds the job document."""

    def __init__(self, message, job=None, **kw):
        super().__init__(message, **kw)
        self.job = job
