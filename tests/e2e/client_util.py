"""Small client for the deltastored HTTP API (docs/http_api.md), shared by the e2e tests.

Everything asserts the documented protocol as it goes (status codes, headers, bodies), so a test
that only calls these helpers already checks the happy path of the routes it uses.
"""
import hashlib
import os
import pathlib
import time
import weakref

import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("DS_BUILD_DIR", ROOT / "build"))
TOOL = BUILD / "tools" / "deltastore-tool"

TIMEOUT = 60  # per request
JOB_TIMEOUT = 120  # per job
PROGRESS_FIELDS = ("tensors_done", "tensors_total", "bytes_done", "bytes_total")


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, piece=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(piece)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def digest_of(path_or_bytes):
    """'sha256:<hex>' of a file path or of bytes."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        return "sha256:" + sha256_bytes(path_or_bytes)
    return "sha256:" + sha256_file(path_or_bytes)


def assert_error(r, status=None, code=None):
    """Checks the error envelope {"errors":[{"code","message"}]}; returns the first error."""
    if status is not None:
        statuses = status if isinstance(status, (tuple, list, set)) else (status,)
        assert r.status_code in statuses, f"expected {statuses}, got {r.status_code}: {r.text[:500]}"
    assert 400 <= r.status_code < 600, r.status_code
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body.get("errors"), list) and body["errors"], body
    err = body["errors"][0]
    assert isinstance(err.get("code"), str) and err["code"], body
    assert isinstance(err.get("message"), str), body
    if code is not None:
        assert err["code"] == code, body
    return err


def content_range(start, end_inclusive):
    return f"bytes {start}-{end_inclusive}"


_CLIENTS = weakref.WeakSet()


def close_all():
    """Closes the keep-alive connections of every Client (the server fixture calls this before it
    stops the server, which otherwise waits for idle connections). Clients stay usable."""
    for c in list(_CLIENTS):
        c.s.close()


def wait_until_upload_busy(client, uid, timeout=60):
    """Polls until a request is inside a PATCH of upload `uid`: sealing it is refused as busy. The
    probe writes nothing (a writer of its own could make that PATCH the refused one); while the
    upload is free the probe is refused for its digest and the upload stays open."""
    wrong = "sha256:" + "0" * 64
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.put(f"/v1/uploads/{uid}", params={"digest": wrong}, data=b"")
        if r.status_code == 409:
            assert_error(r, 409, "UPLOAD_BUSY")
            return
        assert_error(r, 400, "DIGEST_INVALID")
    raise AssertionError(f"no request is writing upload {uid}")


class Client:
    def __init__(self, base_url):
        self.base = base_url.rstrip("/")
        self.s = requests.Session()
        _CLIENTS.add(self)

    def url(self, path):
        return self.base + path

    # --- raw requests ------------------------------------------------------------------------------
    def get(self, path, **kw):
        kw.setdefault("timeout", TIMEOUT)
        return self.s.get(self.url(path), **kw)

    def head(self, path, **kw):
        kw.setdefault("timeout", TIMEOUT)
        return self.s.head(self.url(path), **kw)

    def post(self, path, **kw):
        kw.setdefault("timeout", TIMEOUT)
        return self.s.post(self.url(path), **kw)

    def put(self, path, **kw):
        kw.setdefault("timeout", TIMEOUT)
        return self.s.put(self.url(path), **kw)

    def patch(self, path, **kw):
        kw.setdefault("timeout", TIMEOUT)
        return self.s.patch(self.url(path), **kw)

    def delete(self, path, **kw):
        kw.setdefault("timeout", TIMEOUT)
        return self.s.delete(self.url(path), **kw)

    # --- uploads -----------------------------------------------------------------------------------
    def start_upload(self):
        """POST /v1/uploads -> upload id (checks 202, Location, Upload-Offset: 0, body)."""
        r = self.post("/v1/uploads")
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["state"] == "open" and body["offset"] == 0, body
        uid = body["id"]
        assert isinstance(uid, str) and uid
        assert r.headers["Location"] == f"/v1/uploads/{uid}", r.headers
        assert int(r.headers["Upload-Offset"]) == 0, r.headers
        return uid

    def patch_upload(self, uid, data, start, check=True):
        """PATCH bytes [start, start+len) with Content-Range; checks 202 and the new offset."""
        r = self.patch(f"/v1/uploads/{uid}", data=data,
                       headers={"Content-Range": content_range(start, start + len(data) - 1),
                                "Content-Type": "application/octet-stream"})
        if check:
            end = start + len(data)
            assert r.status_code == 202, r.text
            assert int(r.headers["Upload-Offset"]) == end, r.headers
            assert r.headers["Range"] == f"0-{end - 1}", r.headers
            body = r.json()
            assert body["id"] == uid and body["offset"] == end and body["state"] == "open", body
        return r

    def upload_state(self, uid):
        r = self.get(f"/v1/uploads/{uid}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert int(r.headers["Upload-Offset"]) == body["offset"], (r.headers, body)
        return body

    def seal_upload(self, uid, digest, last_piece=b"", start=None):
        """PUT ?digest (optionally with the last piece); returns the response (unchecked)."""
        headers = {"Content-Type": "application/octet-stream"}
        if last_piece and start is not None:
            headers["Content-Range"] = content_range(start, start + len(last_piece) - 1)
        return self.put(f"/v1/uploads/{uid}", params={"digest": digest}, data=last_piece,
                        headers=headers)

    def upload_chunked(self, path, piece=1 << 20, last_in_put=False):
        """Uploads a file with PATCH pieces and a sealing PUT; returns the sealed upload body."""
        data = pathlib.Path(path).read_bytes()
        uid = self.start_upload()
        digest = digest_of(data)
        end = len(data)
        tail = b""
        if last_in_put and end > 0:
            tail_start = max(0, end - piece // 2 - 1)
            tail = data[tail_start:]
            end = tail_start
        off = 0
        while off < end:
            n = min(piece, end - off)
            self.patch_upload(uid, data[off:off + n], off)
            off += n
        r = self.seal_upload(uid, digest, tail, start=off if tail else None)
        assert r.status_code == 201, r.text
        body = r.json()
        assert (body["id"], body["state"], body["size"], body["digest"]) == \
            (uid, "sealed", len(data), digest), body
        return body

    def upload_single(self, path_or_bytes):
        """POST /v1/uploads?digest=… with the whole file; returns the sealed upload body."""
        data = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) \
            else pathlib.Path(path_or_bytes).read_bytes()
        digest = digest_of(data)
        r = self.post("/v1/uploads", params={"digest": digest}, data=data,
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["state"] == "sealed" and body["size"] == len(data) and body["digest"] == digest, body
        assert isinstance(body["id"], str) and body["id"]
        return body

    # --- versions and jobs -------------------------------------------------------------------------
    def create_version_raw(self, model, files, base=None, policy=None, tags=None):
        """POST /v1/models/{model}/versions; `files` is [(path, upload id)]. Unchecked response."""
        doc = {"files": [{"path": p, "upload": u} for p, u in files]}
        if base is not None:
            doc["base"] = base
        if policy is not None:
            doc["policy"] = policy
        if tags is not None:
            doc["tags"] = list(tags)
        return self.post(f"/v1/models/{model}/versions", json=doc)

    def create_version(self, model, files, **kw):
        """Like create_version_raw, but checks 202 + Location and returns the job object."""
        r = self.create_version_raw(model, files, **kw)
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        assert r.headers["Location"] == f"/v1/jobs/{job['id']}", r.headers
        assert job["state"] in ("queued", "running", "succeeded"), job
        assert job["model"] == model, job
        return job

    def get_job(self, job_id):
        r = self.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["id"] == job_id, job
        assert job["state"] in ("queued", "running", "succeeded", "failed"), job
        for f in PROGRESS_FIELDS:
            assert isinstance(job["progress"][f], int), job
        assert "created_at" in job and "updated_at" in job, job
        return job

    def wait_job_encoding(self, job_id, timeout=120, poll=0.05):
        """Polls until the job runs and has encoded a tensor (to cut it short there); returns the job."""
        deadline = time.monotonic() + timeout
        while True:
            j = self.get_job(job_id)
            if j["state"] == "running" and j["progress"].get("phase") == "encoding" and j["progress"]["tensors_done"] > 0:
                return j
            assert j["state"] in ("queued", "running") and time.monotonic() < deadline, j
            time.sleep(poll)

    def wait_job(self, job_id, timeout=JOB_TIMEOUT, poll=0.05):
        """Polls GET /v1/jobs/{id} until succeeded/failed; returns (final job, states seen)."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            job = self.get_job(job_id)
            if not seen or seen[-1] != job["state"]:
                seen.append(job["state"])
            p = job["progress"]
            assert p["tensors_done"] <= p["tensors_total"], job
            if job["state"] in ("succeeded", "failed"):
                return job, seen
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not finished after {timeout}s: {job}")
            time.sleep(poll)

    def register(self, model, path, base=None, tags=None, policy=None, file_name="model.safetensors",
                 chunked=False, timeout=JOB_TIMEOUT):
        """Uploads one file, creates a version from it, waits; returns (job, version summary)."""
        up = self.upload_chunked(path) if chunked else self.upload_single(path)
        job = self.create_version(model, [(file_name, up["id"])], base=base, tags=tags, policy=policy)
        job, _ = self.wait_job(job["id"], timeout=timeout)
        assert job["state"] == "succeeded", job
        digest = job["version"]
        assert isinstance(digest, str) and digest.startswith("sha256:") and len(digest) == 71, job
        return job, self.version(model, digest)

    def version(self, model, ref):
        r = self.get(f"/v1/models/{model}/versions/{ref}")
        assert r.status_code == 200, r.text
        return r.json()

    def stats(self):
        r = self.get("/v1/stats")
        assert r.status_code == 200, r.text
        body = r.json()
        for k in ("chunks", "stored_bytes", "models", "versions"):
            assert isinstance(body[k], int), body
        return body

    # --- downloads ---------------------------------------------------------------------------------
    def download(self, path, dest, headers=None):
        """Streams GET `path` to the file `dest`; returns (response, sha256 hex of the body)."""
        h = hashlib.sha256()
        with self.s.get(self.url(path), stream=True, timeout=TIMEOUT, headers=headers or {}) as r:
            assert r.status_code in (200, 206), f"{r.status_code}: {r.text[:500]}"
            with open(dest, "wb") as f:
                for b in r.iter_content(1 << 20):
                    h.update(b)
                    f.write(b)
        return r, h.hexdigest()
