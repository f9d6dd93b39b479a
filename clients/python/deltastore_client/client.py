"""`Client`: the registry's HTTP API (docs/http_api.md, api/openapi.yaml) on a `requests` session.

Uploads are chunked and resumable: a dropped connection or a restarted server makes the client ask
the committed offset (`GET /v1/uploads/{id}`) and go on from there, and the upload ids are kept in a
small state file so that rerunning the same upload after the client itself died resumes as well.
Downloads resume from a `.partial` file, fetch large files as parallel byte ranges, and are moved
into place only once their sha256 matches the version's record.
"""
import fnmatch
import hashlib
import json
import os
import pathlib
import random
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import requests
from tqdm import tqdm

from .errors import ConnectionFailed, DeltastoreError, DigestMismatch, JobFailed
from .state import UploadState, default_state_file

DEFAULT_URL = "http://127.0.0.1:8080"
RETRY_STATUSES = frozenset({500, 502, 503, 504})
NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout,
                  requests.exceptions.ChunkedEncodingError)
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
MiB = 1 << 20


def _q(segment):
    return quote(str(segment), safe=":@")


def sha256_file(path, block=8 * MiB):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(block)
            if not b:
                break
            h.update(b)
    return "sha256:" + h.hexdigest()


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


class Client:
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
    def download(self, model, ref=None, dest=".", form="checkpoint", files=None, parallel=4,
                 progress=True, min_part_size=16 * MiB, callback=None, max_attempts=10):
        """Downloads a version.

        ref: a tag or digest; None means the tag `latest`, or the newest version without one.
        form="checkpoint": every file of the version (or those matching `files`) into the directory
        `dest`, each through `<file>.partial` (resumed with Range when it exists; files of at least
        2*min_part_size are fetched as up to `parallel` ranges at once) and renamed only once its
        sha256 equals the version's record. Returns {"model","version","dest","files":[...]}.
        form="delta": the compressed container (`/delta`) to `dest` (a file, or a directory to put
        `<model>-<digest12>.dsc` in). callback(event, path, offset) sees "received" events.
        """
        if ref is None:
            ref = self.default_ref(model)
        if form == "delta":
            return self._download_delta(model, ref, dest, progress)
        if form != "checkpoint":
            raise ValueError(f"form must be 'checkpoint' or 'delta', not {form!r}")
        summary = self.version(model, ref)
        digest = summary["digest"]
        entries = summary.get("files") or []
        if files:
            pats = [files] if isinstance(files, str) else list(files)
            entries = [e for e in entries if any(fnmatch.fnmatch(e["path"], p) for p in pats)]
            if not entries:
                raise DeltastoreError(f"{model}@{ref} has no file matching {pats}", code="FILE_UNKNOWN")
        dest = pathlib.Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=sum(int(e["size"]) for e in entries), unit="B", unit_scale=True,
                   unit_divisor=1024, desc=f"download {model}", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        results = []
        try:
            for e in entries:
                results.append(self._download_file(model, digest, e, dest, parallel, min_part_size,
                                                   bar, callback, max_attempts))
        finally:
            bar.close()
        return {"model": model, "version": digest, "dest": str(dest), "files": results}

    def _download_file(self, model, version, entry, dest, parallel, min_part_size, bar, callback,
                       max_attempts):
        vpath, size, expected = entry["path"], int(entry["size"]), entry["sha256"]
        rel = pathlib.PurePosixPath(vpath)
        if rel.is_absolute() or ".." in rel.parts:
            raise DeltastoreError(f"refusing the file path {vpath!r}", code="PATH_INVALID")
        target = dest.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        result = {"file": vpath, "path": str(target), "size": size, "sha256": expected,
                  "status": "downloaded", "resumed_from": 0, "fetched": 0, "parts": 0}
        if target.exists() and target.stat().st_size == size and sha256_file(target) == expected:
            bar.update(size)
            result["status"] = "present"
            return result
        partial = target.with_name(target.name + ".partial")
        statef = target.with_name(target.name + ".partial.json")
        url = f"{self.url}/v1/models/{_q(model)}/versions/{_q(version)}/files/{quote(vpath, safe='/')}"

        for round_ in range(2):  # a second round from scratch when the first one's bytes are wrong
            parts = self._plan_parts(partial, statef, size, expected, parallel, min_part_size)
            have = sum(p[2] for p in parts)
            result["resumed_from"] = have
            result["parts"] = len(parts)
            bar.update(have)
            fetched = self._fetch_parts(url, vpath, partial, statef, parts, size, expected, version,
                                        bar, callback, max_attempts, parallel)
            result["fetched"] += fetched
            got = sha256_file(partial)
            if got == expected:
                os.replace(partial, target)
                _unlink(statef)
                return result
            _unlink(partial)
            _unlink(statef)
            bar.update(-size)
            if round_ == 1:
                raise DigestMismatch(f"{vpath}: downloaded bytes have {got}, the version records "
                                     f"{expected}", code="DIGEST_MISMATCH")
        raise AssertionError("unreachable")

    @staticmethod
    def _plan_parts(partial, statef, size, expected, parallel, min_part_size):
        """[[start, end, done]] for a file: the saved plan clamped to what the .partial holds, or a
        fresh split (an existing .partial without a plan counts as a prefix)."""
        have = partial.stat().st_size if partial.exists() else 0
        if have > size:
            os.truncate(partial, size)
            have = size
        parts = None
        if partial.exists() and statef.exists():
            try:
                st = json.loads(statef.read_text())
                if st.get("sha256") == expected and st.get("size") == size:
                    parts = [[int(a), int(b), int(d)] for a, b, d in st["parts"]]
            except (ValueError, KeyError, TypeError):
                parts = None
        if parts is not None:
            for p in parts:  # a truncated .partial loses what lay past its end
                p[2] = max(0, min(p[2], p[1] - p[0], have - p[0]))
            return parts
        prefix = min(have, size) if partial.exists() else 0
        if not partial.exists():
            partial.touch()
        rest = size - prefix
        k = max(1, min(int(parallel or 1), rest // max(1, min_part_size)))
        parts = [[0, prefix, prefix]] if prefix else []
        step = -(-rest // k) if rest else 0
        for i in range(k):
            a = prefix + i * step
            b = min(size, a + step)
            if b > a:
                parts.append([a, b, 0])
        return parts or [[0, 0, 0]]

    def _fetch_parts(self, url, vpath, partial, statef, parts, size, expected, version, bar, callback,
                     max_attempts, parallel):
        todo = [p for p in parts if p[0] + p[2] < p[1]]
        lock = threading.Lock()
        stop = threading.Event()
        fetched = [0]
        unsaved = [0]
        cb = callback or (lambda *a: None)

        def save():
            tmp = statef.with_name(statef.name + ".tmp")
            tmp.write_text(json.dumps({"sha256": expected, "size": size, "version": version,
                                       "parts": parts}))
            os.replace(tmp, statef)

        fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            def worker(part):
                session = self._new_session()
                attempts = 0
                try:
                    while part[0] + part[2] < part[1] and not stop.is_set():
                        pos, end = part[0] + part[2], part[1]
                        try:
                            r = session.get(url, headers={"Range": f"bytes={pos}-{end - 1}"},
                                            stream=True, timeout=self.timeout)
                            with r:
                                if _range_ignored(r, vpath, pos, end, size):  # take it from 0
                                    with lock:
                                        bar.update(-part[2])
                                        part[2] = 0
                                    pos = part[0]
                                    if pos != 0:
                                        raise DeltastoreError(f"{vpath}: the server does not "
                                                              "answer byte ranges", code="RANGE_UNSUPPORTED")
                                _check_etag(r, vpath, expected)
                                for chunk in r.iter_content(1 * MiB):
                                    if stop.is_set():
                                        return
                                    chunk = chunk[:end - pos]
                                    if not chunk:
                                        break
                                    os.pwrite(fd, chunk, pos)
                                    pos += len(chunk)
                                    with lock:
                                        part[2] = pos - part[0]
                                        fetched[0] += len(chunk)
                                        unsaved[0] += len(chunk)
                                        bar.update(len(chunk))
                                        if unsaved[0] >= 4 * MiB:
                                            save()
                                            unsaved[0] = 0
                                    attempts = 0
                                    cb("received", vpath, pos)
                                    if pos >= end:
                                        break
                        except NETWORK_ERRORS as e:
                            attempts += 1
                            if attempts > max_attempts:
                                raise ConnectionFailed(f"downloading {vpath} failed {attempts} times in "
                                                       f"a row at byte {pos}: {e}", code="UNREACHABLE") from e
                            self._sleep_backoff(min(attempts - 1, 5))
                finally:
                    session.close()

            try:
                if len(todo) <= 1 or parallel <= 1:
                    for p in todo:
                        worker(p)
                else:
                    with ThreadPoolExecutor(max_workers=min(parallel, len(todo))) as pool:
                        futures = [pool.submit(worker, p) for p in todo]
                        first = None
                        for fut in futures:
                            try:
                                fut.result()
                            except BaseException as e:  # noqa: B902 - stop the others, re-raise
                                stop.set()
                                first = first or e
                        if first is not None:
                            raise first
            finally:
                with lock:
                    os.fsync(fd)
                    save()
        finally:
            os.close(fd)
        return fetched[0]

    def download_tensors(self, model, ref, tensors, dest, file=None, progress=False):
        """Downloads only some tensors: for each safetensors file holding some of `tensors`, a valid
        safetensors file with just those (GET .../files/{path}?tensors=a,b), rebuilt by the registry
        from their chunks alone, checked against its ETag (the sha256 of what was sent).

        ref: a tag or digest (None: the tag `latest`, else the newest version). file: the file to
        take them from (default: found in the version's manifest, across shards). dest: a file path
        when one file results, else a directory (each result under the file's own path). Unknown
        names raise DeltastoreError TENSOR_UNKNOWN listing them. Returns {"model","version",
        "files":[{"file","path","tensors","size","sha256","chunks_read","stored_bytes_read"}]}.
        """
        names = [tensors] if isinstance(tensors, str) else list(dict.fromkeys(tensors))
        if not names or any(not n or "," in n for n in names):
            raise ValueError("tensors must be non-empty names without commas")
        if ref is None:
            ref = self.default_ref(model)
        summary = self._json("GET", f"/v1/models/{_q(model)}/versions/{_q(ref)}")
        digest = summary["digest"]
        groups = {}
        if file is not None:
            groups[file] = names
        else:
            owner = {}
            for f in (summary.get("manifest") or {}).get("files") or []:
                for t in f.get("tensors") or []:
                    owner.setdefault(t["name"], f["path"])
            unknown = [n for n in names if n not in owner]
            if unknown:
                raise DeltastoreError(f"{model}@{ref} has no tensor{'s' if len(unknown) > 1 else ''} "
                                      + ", ".join(unknown), code="TENSOR_UNKNOWN")
            for n in names:
                groups.setdefault(owner[n], []).append(n)
        dest = pathlib.Path(dest)
        results = []
        for vpath, group in groups.items():
            rel = pathlib.PurePosixPath(vpath)
            if rel.is_absolute() or ".." in rel.parts:
                raise DeltastoreError(f"refusing the file path {vpath!r}", code="PATH_INVALID")
            target = dest.joinpath(*rel.parts) if (len(groups) > 1 or dest.is_dir()) else dest
            results.append(self._download_subset(model, digest, vpath, group, target, progress))
        return {"model": model, "version": digest, "files": results}

    def _download_subset(self, model, version, vpath, names, target, progress):
        url = f"/v1/models/{_q(model)}/versions/{_q(version)}/files/{quote(vpath, safe='/')}"
        r = self.request("GET", url, params={"tensors": ",".join(names)}, stream=True,
                         context=f"downloading tensors of {model}@{version[:19]} {vpath}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        h = hashlib.sha256()
        n = 0
        with r:
            etag = r.headers.get("ETag", "").strip()
            etag = (etag[2:] if etag.startswith("W/") else etag).strip('"')
            total = int(r.headers["Content-Length"]) if "Content-Length" in r.headers else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"tensors {vpath}",
                      disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar, \
                    open(partial, "wb") as f:
                try:
                    for chunk in r.iter_content(1 * MiB):
                        f.write(chunk)
                        h.update(chunk)
                        n += len(chunk)
                        bar.update(len(chunk))
                except NETWORK_ERRORS as e:
                    raise ConnectionFailed(f"the tensor download of {vpath} broke off at byte {n}: {e}",
                                           code="UNREACHABLE") from e
        got = "sha256:" + h.hexdigest()
        if (total is not None and n != total) or (etag and got != etag):
            partial.unlink(missing_ok=True)
            raise DigestMismatch(f"tensors of {vpath}: got {n} bytes with {got}, expected "
                                 f"{total} bytes with {etag}", code="DIGEST_MISMATCH")
        os.replace(partial, target)
        return {"file": vpath, "path": str(target), "tensors": names, "size": n, "sha256": got,
                "chunks_read": int(r.headers.get("X-Deltastore-Chunks-Read", -1)),
                "stored_bytes_read": int(r.headers.get("X-Deltastore-Stored-Bytes-Read", -1))}

    def _download_delta(self, model, ref, dest, progress):
        as_dir = str(dest).endswith(("/", os.sep))
        dest = pathlib.Path(dest)
        r = self.request("GET", f"/v1/models/{_q(model)}/versions/{_q(ref)}/delta", stream=True,
                         context=f"downloading the delta of {model}@{ref}")
        with r:
            version = r.headers.get("ETag", "").strip('"') or None
            if as_dir or dest.is_dir():
                m = re.search(r'filename="([^"/\\]+)"', r.headers.get("Content-Disposition", ""))
                name = m.group(1) if m else f"{model}-{(version or 'sha256:unknown')[7:19]}.dsc"
                dest.mkdir(parents=True, exist_ok=True)
                dest = dest / name
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
            total = int(r.headers["Content-Length"]) if "Content-Length" in r.headers else None
            partial = dest.with_name(dest.name + ".partial")
            n = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"delta {model}",
                      disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar, \
                    open(partial, "wb") as f:
                try:
                    for chunk in r.iter_content(1 * MiB):
                        f.write(chunk)
                        n += len(chunk)
                        bar.update(len(chunk))
                except NETWORK_ERRORS as e:
                    raise ConnectionFailed(f"the delta download of {model}@{ref} broke off at byte {n}: {e}",
                                           code="UNREACHABLE") from e
            if total is not None and n != total:
                raise DeltastoreError(f"delta of {model}@{ref}: got {n} of {total} bytes", code="SHORT_READ")
            os.replace(partial, dest)
        return {"model": model, "version": version, "path": str(dest), "size": n}


def _range_ignored(r, vpath, pos, end, size):
    """Checks the answer to a GET of bytes pos..end-1 (raises on errors); True when the server
    answered the whole file (200) to a request from a later position."""
    if r.status_code in RETRY_STATUSES:
        raise requests.ConnectionError(f"HTTP {r.status_code}")
    if r.status_code == 206:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+)", r.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != pos or int(m.group(3)) != size:
            raise DeltastoreError(f"{vpath}: asked bytes {pos}-{end - 1}, got "
                                  f"{r.headers.get('Content-Range')!r}", code="RANGE_MISMATCH")
        return False
    if r.status_code == 200:
        return pos != 0
    raise DeltastoreError.from_response(r, f"downloading {vpath}")


def _check_etag(r, vpath, expected):
    etag = r.headers.get("ETag", "").strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    if etag and etag.strip('"') != expected:
        raise DigestMismatch(f"{vpath}: the server sends ETag {etag}, the "
                             f"version records {expected}", code="ETAG_MISMATCH")


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


def _code(r):
    try:
        return (r.json().get("errors") or [{}])[0].get("code")
    except ValueError:
        return None


def _unlink(p):
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def _version():
    from . import __version__
    return __version__
