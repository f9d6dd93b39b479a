"""Hostile and bad input against the real server: each gets a clear JSON 4xx (or a failed job with an
error code) and leaves a stored model exactly as it was. The whole catalogue, with the tests that
cover each entry elsewhere, is docs/hardening.md."""
import json
import socket
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import save_file

from client_util import Client, assert_error, digest_of
from conftest import Server

FILE = "model.safetensors"


def rand(shape, seed):
    return np.random.default_rng(seed).normal(0, 0.02, size=shape).astype(np.float32)


def checkpoint(path, tensors):
    save_file(tensors, str(path))
    return path


def stored_state(c, model, ref, tmp_path):
    """A stored version's digest, its files' entries, and the sha256 of its downloaded file."""
    v = c.version(model, ref)
    _, sha = c.download(f"/v1/models/{model}/versions/{ref}/files/{FILE}", tmp_path / "stored.out")
    return v["digest"], json.dumps(v.get("files"), sort_keys=True), sha


@pytest.fixture
def keep(client, tmp_path):
    """A stored model "keep"@v1 (the base of the lossy tests) and a function that checks it is unchanged."""
    tensors = {"layer0.weight": rand((128, 64), 1), "layer1.weight": rand((32, 64), 2), "layer1.bias": rand((32,), 3)}
    client.register("keep", checkpoint(tmp_path / "keep.safetensors", tensors), tags=["v1"])
    before = stored_state(client, "keep", "v1", tmp_path)

    def unchanged():
        assert stored_state(client, "keep", "v1", tmp_path) == before

    unchanged.tensors = tensors
    return unchanged


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_nonfinite_weights_in_lossy_mode_fail_the_job_clearly(client, keep, tmp_path, bad):
    c = client
    ft = {k: v + rand(v.shape, 10) * 0.1 for k, v in keep.tensors.items()}
    ft["layer0.weight"][3, 5] = bad
    up = c.upload_single(checkpoint(tmp_path / "ft.safetensors", ft))
    before = c.stats()
    r = c.create_version_raw("ft", [(FILE, up["id"])], base={"model": "keep", "version": "v1"},
                             policy={"mode": "lossy", "ratio": 8})
    if r.status_code == 202:
        job, _ = c.wait_job(r.json()["job"]["id"])
        assert job["state"] == "failed", job
        assert job["error"]["code"] == "NONFINITE_WEIGHTS", job
        assert "layer0.weight" in job["error"]["message"] or "NaN" in job["error"]["message"], job
    else:
        assert_error(r, 400, "NONFINITE_WEIGHTS")
    after = c.stats()
    assert (after["versions"], after["stored_bytes"]) == (before["versions"], before["stored_bytes"])
    assert c.get("/v1/models/ft").status_code == 404
    keep()
    # Lossless mode stores any bits, NaN included, and gives them back exactly.
    up = c.upload_single(tmp_path / "ft.safetensors")
    job = c.create_version("ft", [(FILE, up["id"])], base={"model": "keep", "version": "v1"}, tags=["v1"])
    job, _ = c.wait_job(job["id"])
    assert job["state"] == "succeeded", job
    _, sha = c.download(f"/v1/models/ft/versions/v1/files/{FILE}", tmp_path / "back")
    assert "sha256:" + sha == digest_of(tmp_path / "ft.safetensors")
    keep()


def test_duplicate_patch_is_416_and_changes_nothing(client, keep):
    """A client that resends a PATCH (its answer was lost) is told the committed offset."""
    c = client
    data = bytes(range(256)) * 64
    uid = c.start_upload()
    c.patch_upload(uid, data[:4096], 0)
    for _ in range(2):
        r = c.patch_upload(uid, data[:4096], 0, check=False)
        assert_error(r, 416, "RANGE_INVALID")
        assert int(r.headers["Upload-Offset"]) == 4096
    c.patch_upload(uid, data[4096:], 4096)
    r = c.seal_upload(uid, digest_of(data))
    assert r.status_code == 201, r.text
    assert r.json()["size"] == len(data)
    # Sealed: the same PATCH again is a conflict, and the upload keeps its digest.
    r = c.patch_upload(uid, data[:10], 0, check=False)
    assert_error(r, 409)
    assert c.upload_state(uid)["digest"] == digest_of(data)
    keep()


def test_range_past_the_end_is_416(client, keep):
    c = client
    size = int(c.head(f"/v1/models/keep/versions/v1/files/{FILE}").headers["Content-Length"])
    for rng in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=99999999999-"):
        r = c.get(f"/v1/models/keep/versions/v1/files/{FILE}", headers={"Range": rng})
        assert_error(r, 416)
    keep()


def test_too_many_open_uploads_is_a_429(tmp_path):
    server = Server(tmp_path / "data", ["--max-open-uploads", "2"]).start()
    try:
        c = Client(server.url)
        c.register("keep", checkpoint(tmp_path / "keep.safetensors", {"w": rand((8, 8), 4)}), tags=["v1"])
        before = stored_state(c, "keep", "v1", tmp_path)
        ids = [c.start_upload(), c.start_upload()]
        r = c.post("/v1/uploads")
        assert_error(r, 429, "TOO_MANY_UPLOADS")
        # A one-shot upload needs a session too.
        r = c.post("/v1/uploads", params={"digest": digest_of(b"x")}, data=b"x")
        assert_error(r, 429, "TOO_MANY_UPLOADS")
        # Deleting one frees its slot.
        assert c.delete(f"/v1/uploads/{ids[0]}").status_code == 204
        c.start_upload()
        assert stored_state(c, "keep", "v1", tmp_path) == before
    finally:
        server.stop()


class SlowClient(threading.Thread):
    """Sends `head` at once, then `trickle` one byte every `interval` seconds; records whether the
    server closed the connection before the bytes ran out."""

    def __init__(self, port, head, trickle, interval=0.5):
        super().__init__(daemon=True)
        self.port, self.head, self.trickle, self.interval = port, head, trickle, interval
        self.cut_off = False
        self.sent = 0
        self.answer = b""

    def run(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(self.head)
            for b in self.trickle:
                try:
                    s.sendall(bytes([b]))
                    self.sent += 1
                except OSError:  # reset or broken pipe: the server hung up
                    self.cut_off = True
                    return
                # A closed connection shows as a readable socket with nothing (or an answer) in it.
                s.settimeout(self.interval)
                try:
                    got = s.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    self.cut_off = True
                    return
                # Closed (b"") or answered before the request was complete: either way it is over.
                self.answer += got
                self.cut_off = True
                return


def test_slowloris_is_cut_off_and_others_are_served(tmp_path):
    server = Server(tmp_path / "data", ["--header-timeout", "1", "--body-timeout", "1", "--threads", "2"]).start()
    try:
        c = Client(server.url)
        c.s.headers["Connection"] = "close"  # idle keep-alive connections time out after 1 s too
        data_path = checkpoint(tmp_path / "keep.safetensors", {"w": rand((256, 256), 5)})
        c.register("keep", data_path, tags=["v1"])
        before = stored_state(c, "keep", "v1", tmp_path)
        uid = c.start_upload()
        body = b"z" * 4096
        slow = []
        # Headers one byte at a time (never finished: 60 bytes would take 30 s).
        for _ in range(4):
            slow.append(SlowClient(server.port, b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 60))
        # Bodies one byte at a time: a PATCH of 4096 bytes and a small JSON POST.
        patch_head = (f"PATCH /v1/uploads/{uid} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                      f"Content-Range: 0-{len(body) - 1}\r\n\r\n").encode()
        slow.append(SlowClient(server.port, patch_head, body[:60]))
        post_head = b"POST /v1/models/m/versions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        slow.append(SlowClient(server.port, post_head, b"{" + b" " * 59))
        for t in slow:
            t.start()
        # Meanwhile the server answers everyone else, downloads included.
        served = 0
        while any(t.is_alive() for t in slow):
            assert c.get("/healthz").status_code == 200
            _, sha = c.download(f"/v1/models/keep/versions/v1/files/{FILE}", tmp_path / "dl")
            assert "sha256:" + sha == digest_of(data_path)
            served += 1
        for t in slow:
            t.join()
            assert t.cut_off, (t.head, t.sent)
            assert t.sent < len(t.trickle), (t.head, t.sent)
        assert served > 0
        # The slow PATCH keeps what arrived (a dropped body), and the upload can be finished the way a
        # client resumes: the server may still be committing the dropped request's bytes when the client
        # sees the connection close (409 UPLOAD_BUSY), then 416 tells the committed offset.
        for _ in range(100):
            st = c.upload_state(uid)
            assert st["state"] == "open" and st["offset"] <= 60, st
            r = c.patch_upload(uid, body[st["offset"]:], st["offset"], check=False)
            if r.status_code == 202:
                break
            code = assert_error(r, (409, 416))["code"]
            assert code in ("UPLOAD_BUSY", "RANGE_INVALID"), r.text
            time.sleep(0.05)
        assert r.status_code == 202, r.text
        assert c.seal_upload(uid, digest_of(body)).status_code == 201
        assert stored_state(c, "keep", "v1", tmp_path) == before
    finally:
        server.stop()


def many_tensor_safetensors(n):
    """A valid safetensors file of n one-byte tensors (U8, shape [1])."""
    entries = ",".join(f'"t{i}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{i + 1}]}}' for i in range(n))
    header = ("{" + entries + "}").encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + bytes(n)


def test_a_header_of_200000_tensors_is_refused_within_a_second(client):
    """The issue's hostile header: 200,000 one-byte tensors (a 15 MB file). The limit is 100,000
    tensors per file (codec/safetensors.h, kMaxSafetensorsTensors): 400 TOO_MANY_TENSORS, fast."""
    before = client.stats()
    up = client.upload_single(many_tensor_safetensors(200_000))
    start = time.monotonic()
    r = client.create_version_raw("many", [(FILE, up["id"])])
    elapsed = time.monotonic() - start
    err = assert_error(r, 400, "TOO_MANY_TENSORS")
    assert err["message"].startswith(f"{FILE}: "), err
    assert elapsed < 1.0, elapsed
    assert_error(client.get("/v1/models/many"), 404, "MODEL_UNKNOWN")
    after = client.stats()
    assert (after["models"], after["versions"], after["chunks"], after["stored_bytes"]) == \
        (before["models"], before["versions"], before["chunks"], before["stored_bytes"]), (before, after)


def test_a_malformed_file_is_named_as_the_client_named_it_never_by_a_server_path(client, server):
    data = (16).to_bytes(8, "little") + b'{"a":1}'  # header length past the end of the file
    up = client.upload_single(data)
    r = client.create_version_raw("bad", [(FILE, up["id"])])
    err = assert_error(r, 400, "SAFETENSORS_INVALID")
    assert err["message"].startswith(f"{FILE}: "), err
    assert str(server.data_dir) not in err["message"], err
    assert "/uploads/" not in err["message"], err
    assert up["id"] not in err["message"], err
    assert_error(client.get("/v1/models/bad"), 404, "MODEL_UNKNOWN")
