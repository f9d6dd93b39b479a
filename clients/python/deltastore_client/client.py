"""`Client`: the registry's HTTP API (docs/http_api.md, api/openapi.yaml) on a `requests` session.

Uploads are chunked and resumable: a dropped connection or a restarted server makes the client ask
the committed offset (`GET /v1/uploads/{id}`) and go on from there, and the upload ids are kept in a
small state file so that rerunning the same upload after the client itself died resumes as well.
Downloads resume from a `.partial` file, fetch large files as parallel byte ranges, and are moved
into place only once their sha256 matches the version's record.
"""
import fnmatch
import os
import pathlib
import random
import sys
import threading
import time

import requests
from tqdm import tqdm

from .errors import ConnectionFailed, DeltastoreError, JobFailed
from ._common import (DEFAULT_URL, DIGEST_RE, MiB, NETWORK_ERRORS, RETRY_STATUSES,  # noqa: F401 (re-exported)
                      _q, sha256_file)
from .downloads import _Downloads
from .uploads import _FileUpload
from .state import UploadState, default_state_file

def parse_ref(text, default_ref="latest"):
    """'MODEL@REF' -> (model, ref); 'MODEL' -> (model, default_ref)."""
    model, sep, ref = str(text).partition("@")
    if not model or (sep and not ref):
        raise ValueError(f"expected MODEL or MODEL@REF, got {text!r}")
    return model, (ref if sep else default_ref)


def _fmt_bytes(n):
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


class Client(_Downloads):
    """A deltastore registry client.

    url: the registry (default: $DELTASTORE_URL or http://127.0.0.1:8080). token: sent as
    `Authorization: Bearer <token>` (default: $DELTASTORE_TOKEN). timeout: seconds per socket
    operation. retries/backoff: how often and how patiently a request is retried on connection
    errors and 5xx answers (exponential backoff with jitter, capped at max_backoff seconds).
    state_file: where upload ids are remembered for resuming after a crash of the client
    (default ~/.cache/deltastore/uploads.json; False disables it). verify: for https URLs, a CA
    bundle (PEM path) to trust, True for the system's, False to skip the check (default:
    $DELTASTORE_CA_BUNDLE, else True).
    """

    def __init__(self, url=None, token=None, timeout=120.0, retries=5, backoff=0.25, max_backoff=8.0,
                 state_file=None, user_agent=None, verify=None):
        self.url = (url or os.environ.get("DELTASTORE_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else (os.environ.get("DELTASTORE_TOKEN") or None)
        self.verify = verify if verify is not None else (os.environ.get("DELTASTORE_CA_BUNDLE") or True)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.user_agent = user_agent or f"deltastore-client/{_version()}"
        if state_file is False:
            self.state = None
        else:
            self.state = UploadState(state_file or default_state_file())
        self.last_upload = []  # per-file details of the latest upload() (ids, resumes)
        self._local = threading.local()
        self._sessions = []
        self._lock = threading.Lock()

    # --- plumbing ----------------------------------------------------------------------------------
    def _new_session(self):
        s = requests.Session()
        s.headers["User-Agent"] = self.user_agent
        if self.token:
            s.headers["Authorization"] = f"Bearer {self.token}"
        s.verify = self.verify
        if self.verify is not True:
            # requests lets $REQUESTS_CA_BUNDLE override a session's verify (it merges the environment
            # first): an
            # explicit CA bundle (or False) given to this client wins.
            merge = s.merge_environment_settings

            def merge_keeping_verify(url, proxies, stream, verify, cert):
                out = merge(url, proxies, stream, verify, cert)
                if verify is None:
                    out["verify"] = self.verify
                return out
            s.merge_environment_settings = merge_keeping_verify
        return s

    @property
    def session(self):
        """The calling thread's requests.Session."""
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = self._new_session()
            with self._lock:
                self._sessions.append(s)
        return s

    def close(self):
        """Closes the keep-alive connections (the client stays usable)."""
        with self._lock:
            for s in self._sessions:
                s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _sleep_backoff(self, attempt, retry_after=None):
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        delay *= 0.5 + random.random() / 2
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), 60.0))
            except ValueError:
                pass
        time.sleep(delay)

    def request(self, method, path, ok=(200,), retry=True, session=None, context=None, **kw):
        """One HTTP request with retries on connection errors and 5xx; raises DeltastoreError when
        the final status is not in `ok` (ok=None returns whatever came)."""
        url = path if path.startswith(("http://", "https://")) else self.url + path
        kw.setdefault("timeout", self.timeout)
        attempt = 0
        while True:
            try:
                r = (session or self.session).request(method, url, **kw)
            except NETWORK_ERRORS as e:
                if retry and attempt < self.retries:
                    self._sleep_backoff(attempt)
                    attempt += 1
                    continue
                raise ConnectionFailed(f"cannot reach the registry at {self.url} ({method} {path}): {e}",
                                       code="UNREACHABLE") from e
            if retry and r.status_code in RETRY_STATUSES and attempt < self.retries:
                r.close()
                self._sleep_backoff(attempt, r.headers.get("Retry-After"))
                attempt += 1
                continue
            if ok is not None and r.status_code not in ok:
                raise DeltastoreError.from_response(r, context)
            return r

    def _json(self, method, path, ok=(200,), **kw):
        r = self.request(method, path, ok=ok, **kw)
        return r.json() if r.content else {}

    def _paginate(self, path, key, limit=100):
        after = None
        while True:
            params = {"limit": limit}
            if after:
                params["after"] = after
            body = self._json("GET", path, params=params)
            yield from body.get(key) or []
            after = body.get("next")
            if not after:
                return

    # --- reading -----------------------------------------------------------------------------------
    def health(self):
        return self._json("GET", "/healthz")

    def ready(self):
        return self._json("GET", "/readyz")

    def models(self):
        """Every model: [{"name","created_at","versions"}]."""
        return list(self._paginate("/v1/models", "models"))

    def model(self, model):
        return self._json("GET", f"/v1/models/{_q(model)}")

    def ls(self, model=None):
        """Without a model: the models; with one: its versions (summaries)."""
        return self.models() if model is None else self.versions(model)

    def versions(self, model):
        return list(self._paginate(f"/v1/models/{_q(model)}/versions", "versions"))

    def version(self, model, ref="latest"):
        """The version summary with `files` and `manifest`."""
        return self._json("GET", f"/v1/models/{_q(model)}/versions/{_q(ref)}")

    def tags(self, model):
        return self._json("GET", f"/v1/models/{_q(model)}/tags").get("tags", {})

    def stats(self):
        return self._json("GET", "/v1/stats")

    def job(self, job_id):
        return self._json("GET", f"/v1/jobs/{_q(job_id)}")

    def cancel_job(self, job_id):
        """DELETE /v1/jobs/{id}: the job as it is now. A queued job comes back ended (`failed`,
        error `JOB_CANCELLED`); a running one comes back still `running` with `cancel_requested` and
        ends at its next check (poll it with `job` or `wait_job`). A finished job raises (409 JOB_FINISHED)."""
        return self._json("DELETE", f"/v1/jobs/{_q(job_id)}", ok=(200, 202))

    def audit(self, model=None):
        """The storage-savings audit (docs/audit.md): GET /v1/audit (totals, per model, per base), or
        with `model` that model's figures and every one of its versions' (all pages)."""
        if model is None:
            return self._json("GET", "/v1/audit")
        path = f"/v1/audit/models/{_q(model)}"
        first = self._json("GET", path, params={"limit": 1000})
        versions, after = list(first.get("versions") or []), first.get("next")
        while after:
            page = self._json("GET", path, params={"limit": 1000, "after": after})
            versions += page.get("versions") or []
            after = page.get("next")
        first["versions"], first["next"] = versions, None
        return first

    def audit_history(self):
        """Every audit snapshot (recorded at each ingest, deletion and GC), oldest first."""
        return list(self._paginate("/v1/audit/history", "snapshots", limit=1000))

    # --- changing ----------------------------------------------------------------------------------
    def resolve(self, model, ref):
        """A tag or digest of `model` -> the version digest."""
        if DIGEST_RE.match(str(ref)):
            return ref
        return self.version(model, ref)["digest"]

    def default_ref(self, model):
        """The version a bare MODEL means: its tag `latest`, else its newest version."""
        tags = self.tags(model)
        if "latest" in tags:
            return tags["latest"]
        versions = self.versions(model)
        if not versions:
            raise DeltastoreError(f"model {model} has no versions", code="VERSION_UNKNOWN", status=404)
        return max(versions, key=lambda v: (v.get("created_at") or "", v["digest"]))["digest"]

    def tag(self, model, tag, version):
        """Points `tag` at `version` (a digest, or another tag which is resolved first)."""
        digest = self.resolve(model, version)
        return self._json("PUT", f"/v1/models/{_q(model)}/tags/{_q(tag)}", json={"version": digest})

    def untag(self, model, tag):
        self.request("DELETE", f"/v1/models/{_q(model)}/tags/{_q(tag)}", ok=(204,))

    def delete(self, model, ref):
        """Deletes a version: {"deleted","freed_bytes"}."""
        return self._json("DELETE", f"/v1/models/{_q(model)}/versions/{_q(ref)}")

    def gc(self):
        return self._json("POST", "/v1/gc")

    # --- tokens (admin scope) ----------------------------------------------------------------------
    def create_token(self, scope, name=""):
        """A new bearer token: {"id","name","scope","created_at","token"}; the token is shown only here."""
        return self._json("POST", "/v1/tokens", json={"name": name, "scope": scope}, ok=(201,))

    def tokens(self):
        """Token records (never their secrets)."""
        return self._json("GET", "/v1/tokens")

    def revoke_token(self, token_id):
        self.request("DELETE", f"/v1/tokens/{_q(token_id)}", ok=(204,))

    # --- uploads -----------------------------------------------------------------------------------
    def upload_status(self, upload_id):
        """GET /v1/uploads/{id}: {"id","offset","state","size","digest"}."""
        return self._json("GET", f"/v1/uploads/{_q(upload_id)}")

    def delete_upload(self, upload_id):
        self.request("DELETE", f"/v1/uploads/{_q(upload_id)}", ok=(204,))

    def _open_upload(self):
        return self._json("POST", "/v1/uploads", ok=(202,))["id"]

    @staticmethod
    def _collect_files(path, files):
        """[(path in the version, local path)] for a file, a directory, or an explicit selection."""
        if isinstance(files, dict):
            out = [(str(k), pathlib.Path(v)) for k, v in files.items()]
        else:
            p = pathlib.Path(path)
            if p.is_dir():
                found = sorted(
                    (q.relative_to(p).as_posix(), q) for q in p.rglob("*")
                    if q.is_file() and not any(part.startswith(".") for part in q.relative_to(p).parts)
                    and not q.name.endswith((".partial", ".partial.json")))
                if files:
                    pats = [files] if isinstance(files, str) else list(files)
                    found = [(rel, q) for rel, q in found
                             if any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(q.name, pat) for pat in pats)]
                out = found
            elif p.is_file():
                if files:
                    raise ValueError("files= selects files inside a directory; PATH is a single file")
                out = [(p.name, p)]
            else:
                raise FileNotFoundError(f"{path}: no such file or directory")
        if not out:
            raise ValueError(f"{path}: no files to upload")
        paths = [v for v, _ in out]
        if len(set(paths)) != len(paths):
            raise ValueError("the paths of the version's files must be unique")
        return out

    @staticmethod
    def _base_ref(base):
        if base is None:
            return None
        if isinstance(base, dict):
            return dict(base)
        if isinstance(base, (tuple, list)):
            model, ref = base
        else:
            model, ref = parse_ref(base, default_ref=None)
        return {"model": model, "version": ref} if ref else {"model": model}

    def upload(self, path, model, base=None, policy=None, tags=None, files=None, wait=True,
               progress=True, piece_size=64 * MiB, callback=None, resume=True, max_attempts=10,
               job_timeout=None):
        """Uploads a file or a directory (a sharded checkpoint: every file in it, or those matching
        `files` globs; or `files` as {path in version: local path}) and creates a version of `model`.

        base: "MODEL@REF", "MODEL" (its `latest`), (model, ref) or {"model","version"}.
        policy: {"mode": "lossless"} (default on the server) or e.g. {"mode": "lossy", "ratio": 16}.
        tags: tags to point at the new version. wait: poll the job until it ends and return the
        version summary (else return the job). progress: tqdm bars on stderr.
        piece_size: bytes per PATCH. callback(event, path, offset): called with "sent" (bytes handed
        to the connection), "committed" (the server's durable offset), "resumed" and "sealed".
        resume: reuse/remember upload ids in the state file. max_attempts: consecutive failed tries
        (without progress) of one file before giving up.
        """
        entries = self._collect_files(path, files)
        base_ref = self._base_ref(base)
        if isinstance(policy, str):
            policy = {"mode": policy}
        total = sum(lp.stat().st_size for _, lp in entries)
        self.last_upload = []
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"upload {model}",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        refs, keys = [], []
        try:
            for vpath, lpath in entries:
                info = self._upload_file(lpath, piece_size, bar, callback, resume, max_attempts)
                info["path"] = vpath
                self.last_upload.append(info)
                refs.append({"path": vpath, "upload": info["upload"]})
                keys.append(info["state_key"])
        finally:
            bar.close()
        doc = {"files": refs}
        if base_ref:
            doc["base"] = base_ref
        if policy:
            doc["policy"] = policy
        if tags:
            doc["tags"] = [tags] if isinstance(tags, str) else list(tags)
        r = self.request("POST", f"/v1/models/{_q(model)}/versions", ok=(202,), json=doc,
                         context=f"creating a version of {model}")
        job = r.json()["job"]
        if self.state is not None:
            self.state.remove(k for k in keys if k)  # the uploads now belong to the job
        if not wait:
            return job
        job = self.wait_job(job["id"], progress=progress, timeout=job_timeout)
        return self.version(model, job["version"])

    def _upload_file(self, lpath, piece_size, bar, callback, resume, max_attempts):
        return _FileUpload(self, lpath, bar, callback, resume, max_attempts).run(piece_size)

    # --- jobs --------------------------------------------------------------------------------------
    def wait_job(self, job_id, progress=True, timeout=None, poll=0.05, max_poll=1.0):
        """Polls GET /v1/jobs/{id} until it ends, with a tqdm bar of tensors (bytes as postfix);
        returns the succeeded job, raises JobFailed on a failed one. The bar is labelled "plan" while
        a lossy job's rate allocation probes the tensors (progress phase "planning"), then "encode";
        the server counts the tensors again from 0 for the second phase, and so does the bar."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = tqdm(total=None, unit="tensor", desc="encode", disable=not progress, file=sys.stderr,
                   dynamic_ncols=True)
        phase = None
        unreachable = 0
        try:
            while True:
                try:
                    job = self.job(job_id)
                    unreachable = 0
                except ConnectionFailed:
                    unreachable += 1  # jobs survive restarts: wait for the server a while longer
                    if unreachable > 5:
                        raise
                    continue
                p = job.get("progress") or {}
                total = p.get("tensors_total") or None
                if p.get("phase") and p["phase"] != phase:
                    if phase is not None:
                        bar.reset(total=total)
                    phase = p["phase"]
                    bar.set_description_str("plan" if phase == "planning" else "encode", refresh=False)
                if total and bar.total != total:
                    bar.total = total
                    bar.refresh()
                done = int(p.get("tensors_done") or 0)
                if done != bar.n:
                    bar.update(done - bar.n)
                if p.get("bytes_total"):
                    bar.set_postfix_str(f"{_fmt_bytes(p.get('bytes_done'))}/{_fmt_bytes(p['bytes_total'])}")
                state = job.get("state")
                if state == "succeeded":
                    return job
                if state == "failed":
                    err = job.get("error") or {}
                    raise JobFailed(f"job {job_id} for {job.get('model')} failed: "
                                    f"{err.get('message') or 'no reason given'}",
                                    code=err.get("code") or "JOB_FAILED", job=job)
                if deadline is not None and time.monotonic() > deadline:
                    raise DeltastoreError(f"job {job_id} still {state} after {timeout}s", code="TIMEOUT")
                time.sleep(poll)
                poll = min(max_poll, poll * 1.5)
        finally:
            bar.close()

    # --- downloads ---------------------------------------------------------------------------------

def _version():
    from . import __version__
    return __version__


