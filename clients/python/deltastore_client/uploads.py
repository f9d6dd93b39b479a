"""One file's resumable upload (`Client.upload` runs one per file): pieces PATCHed from the committed
offset, the offset asked again after a failure, the upload id remembered in the state file, and the
seal with the digest of the bytes sent."""
import hashlib
import pathlib

from ._common import MiB, NETWORK_ERRORS, RETRY_STATUSES, _code, _q, sha256_file
from .errors import ConnectionFailed, DeltastoreError
from .state import UploadState


class _PieceBody:
    """A bytes piece as a file-like request body with a length (so requests sends Content-Length)
    that reports how far it has been read (sent)."""

    def __init__(self, buf, on_read=None):
        self._mv = memoryview(buf)
        self._pos = 0
        self._on_read = on_read

    def __len__(self):
        return len(self._mv)

    def read(self, n=-1):
        size = len(self._mv)
        if self._pos >= size:
            return b""
        end = size if n is None or n < 0 else min(size, self._pos + n)
        out = self._mv[self._pos:end].tobytes()
        self._pos = end
        if self._on_read is not None:
            self._on_read(end)
        return out


class _PrefixHasher:
    """sha256 of the first `n` bytes of a file, advanced from bytes already in memory when it can
    and from the file otherwise (a resume at an offset the client has not hashed yet)."""

    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def advance(self, target, buf=None, buf_start=0):
        if target < self.n:  # never happens with a durable server offset; start over if it does
            self.h, self.n = hashlib.sha256(), 0
        while self.n < target:
            if buf is not None and buf_start <= self.n < buf_start + len(buf):
                end = min(target, buf_start + len(buf))
                self.h.update(memoryview(buf)[self.n - buf_start:end - buf_start])
                self.n = end
                continue
            self.f.seek(self.n)
            b = self.f.read(min(8 * MiB, target - self.n))
            if not b:
                raise DeltastoreError(f"{self.f.name}: file shrank while uploading", code="FILE_CHANGED")
            self.h.update(b)
            self.n += len(b)

    def digest(self):
        return "sha256:" + self.h.hexdigest()


def _retryable(r):
    """A failed upload request worth retrying after asking the committed offset."""
    return (r.status_code in RETRY_STATUSES or r.status_code == 429
            or (r.status_code == 409 and _code(r) == "UPLOAD_BUSY"))


class _FileUpload:
    """One file's upload (Client._upload_file): resumes a remembered upload or opens one, PATCHes
    pieces from the committed offset, asks the offset again after failures, and seals with the
    digest of the bytes sent."""

    def __init__(self, client, lpath, bar, callback, resume, max_attempts):
        self.client = client
        self.lpath = pathlib.Path(lpath)
        self.st = self.lpath.stat()
        self.size = self.st.st_size
        self.key = UploadState.key(client.url, self.lpath, self.st) \
            if (resume and client.state is not None) else None
        self.info = {"local": str(self.lpath), "size": self.size, "resumed": [], "reused": False,
                     "state_key": self.key}
        self.cb = callback or (lambda *a: None)
        self.bar = bar
        self.shown = 0
        self.max_attempts = max_attempts
        self.uid, self.url = None, None
        self.offset = self.best = 0
        self.failures = self.restarts = 0
        self.hasher = None

    def show(self, n):  # this file's share of the bar is n bytes
        if n != self.shown:
            self.bar.update(n - self.shown)
            self.shown = n

    def run(self, piece_size):
        if self._reuse_saved():
            return self.info
        if self.uid is None:
            self._use(self.client._open_upload())
        else:
            self._use(self.uid, remember=False)
        with open(self.lpath, "rb") as f:
            self.hasher = _PrefixHasher(f)
            self.show(self.offset)
            while True:
                if self.offset < self.size:
                    self._send_piece(f, piece_size)
                    continue
                digest = self._seal()
                if digest is not None:
                    break
        self.show(self.size)
        self.cb("sealed", str(self.lpath), self.size)
        self.info["digest"] = digest
        return self.info

    def _use(self, uid, remember=True):
        self.uid = uid
        self.url = f"{self.client.url}/v1/uploads/{_q(uid)}"
        self.info["upload"] = uid
        if remember and self.key:
            self.client.state.put(self.key, uid)

    def _reuse_saved(self):
        """With a remembered upload: True when it is sealed with this file's bytes; else resumes it
        (sets uid and offset) when it is still open."""
        saved = self.client.state.get(self.key) if self.key else None
        if not saved:
            return False
        try:
            up = self.client.upload_status(saved)
        except DeltastoreError as e:
            if e.status != 404:
                raise
            up = None
        if up and up.get("state") == "sealed" and up.get("size") == self.size \
                and up.get("digest") == sha256_file(self.lpath):
            self.show(self.size)
            self.cb("sealed", str(self.lpath), self.size)
            self.info.update(upload=saved, digest=up["digest"], reused=True)
            return True
        if up and up.get("state") == "open" and 0 <= int(up.get("offset", 0)) <= self.size:
            self.uid, self.offset = saved, int(up["offset"])
            self.best = self.offset
            self.info["resumed"].append(self.offset)
            self.cb("resumed", str(self.lpath), self.offset)
        return False

    def _recover(self, exc_or_resp):
        """After a failed request: count it, wait, and ask the committed offset."""
        self.failures += 1
        if self.failures > self.max_attempts:
            what = exc_or_resp if isinstance(exc_or_resp, Exception) else \
                DeltastoreError.from_response(exc_or_resp)
            raise DeltastoreError(
                f"upload of {self.lpath} failed {self.failures} times in a row at byte {self.offset}: {what}",
                code="UPLOAD_FAILED") from (exc_or_resp if isinstance(exc_or_resp, Exception) else None)
        self.client._sleep_backoff(min(self.failures - 1, 5))
        try:
            return self.client.upload_status(self.uid)
        except ConnectionFailed:
            return None  # still unreachable: the next round tries again (bounded above)

    def _patch(self, buf, start):
        def on_read(k):
            self.show(start + k)
            self.cb("sent", str(self.lpath), start + k)

        try:
            return self.client.session.patch(
                self.url, data=_PieceBody(buf, on_read), timeout=self.client.timeout,
                headers={"Content-Range": f"bytes {start}-{start + len(buf) - 1}",
                         "Content-Type": "application/octet-stream"}), None
        except NETWORK_ERRORS as e:
            return None, e

    def _send_piece(self, f, piece_size):
        """PATCHes the piece at the offset; afterwards the offset is the server's (or the piece's
        start again when the server could not be asked)."""
        n = min(piece_size, self.size - self.offset)
        f.seek(self.offset)
        buf = f.read(n)
        if len(buf) != n:
            raise DeltastoreError(f"{self.lpath}: file shrank while uploading", code="FILE_CHANGED")
        start = self.offset
        r, err = self._patch(buf, start)
        if r is not None and r.status_code == 202:
            new = int(r.headers.get("Upload-Offset", start + n))
            self.hasher.advance(new, buf, start)
            self.offset = new
            self.show(self.offset)
            if self.offset > self.best:
                self.best, self.failures = self.offset, 0
            self.cb("committed", str(self.lpath), self.offset)
            return
        if r is not None and r.status_code == 416 and "Upload-Offset" in r.headers:
            self.offset = int(r.headers["Upload-Offset"])  # the server's offset is the truth
            self.failures += 1
            if self.failures > self.max_attempts:
                raise DeltastoreError.from_response(r, f"upload of {self.lpath}")
            self.hasher.advance(self.offset, buf, start)
            self.show(self.offset)
            return
        if r is not None and r.status_code == 404 and self.restarts == 0:
            # The upload is gone (expired or the store was replaced): start over once.
            self.restarts += 1
            self._use(self.client._open_upload())
            self.offset = self.best = 0
            self.show(0)
            return
        if r is not None and not _retryable(r):
            raise DeltastoreError.from_response(r, f"upload of {self.lpath}")
        up = self._recover(err if r is None else r)
        if up is not None:
            if up.get("state") != "open":
                raise DeltastoreError(f"upload {self.uid} of {self.lpath} was sealed before all its "
                                      "bytes were sent", code="UPLOAD_SEALED")
            self.offset = int(up["offset"])
            self.hasher.advance(self.offset, buf, start)
            self.info["resumed"].append(self.offset)
            self.cb("resumed", str(self.lpath), self.offset)
        else:
            self.offset = start  # unknown yet: the next PATCH's 416 or 202 tells
        self.show(self.offset)

    def _seal(self):
        """All bytes are there: seals with the digest of what was sent. Returns the digest once
        sealed, None to go on (the offset may have moved back)."""
        self.hasher.advance(self.size)
        digest = self.hasher.digest()
        try:
            r, err = self.client.session.put(self.url, params={"digest": digest}, timeout=self.client.timeout,
                                             headers={"Content-Type": "application/octet-stream"}), None
        except NETWORK_ERRORS as e:
            r, err = None, e
        if r is not None and r.status_code == 201:
            return digest
        if r is not None and r.status_code == 409 and _code(r) == "UPLOAD_SEALED":
            up = self.client.upload_status(self.uid)
            if up.get("digest") == digest:
                return digest
            raise DeltastoreError.from_response(r, f"upload of {self.lpath}")
        if r is not None and r.status_code == 400 and _code(r) == "DIGEST_INVALID":
            raise DeltastoreError(
                f"the registry holds other bytes for {self.lpath} than were read from it (was the "
                f"file changed during the upload?): {DeltastoreError.from_response(r).message}",
                code="DIGEST_INVALID", status=400, response=r)
        if r is not None and not _retryable(r):
            raise DeltastoreError.from_response(r, f"sealing the upload of {self.lpath}")
        up = self._recover(err if r is None else r)
        if up is not None:
            if up.get("state") == "sealed" and up.get("digest") == digest:
                return digest
            if up.get("state") == "open":
                self.offset = int(up["offset"])
                if self.offset < self.size:
                    self.info["resumed"].append(self.offset)
                    self.cb("resumed", str(self.lpath), self.offset)
                    self.hasher.advance(self.offset)
                    self.show(self.offset)
        return None
