"""Resumable uploads (POST / PATCH / GET / PUT / DELETE /v1/uploads), including a server restart."""
import http.client
import time

from client_util import Client, assert_error, digest_of, sha256_file

FILE = "model.safetensors"


def test_resumable_upload_survives_a_restart(server, fixtures, tmp_path):
    path = fixtures / "faceres-deep.bf16.safetensors"
    data = path.read_bytes()
    half = len(data) // 2
    c = Client(server.url)
    uid = c.start_upload()
    piece = 1 << 20
    off = 0
    while off < half:
        n = min(piece, half - off)
        c.patch_upload(uid, data[off:off + n], off)
        off += n

    server.stop()
    server.start()
    c = Client(server.url)

    st = c.upload_state(uid)
    assert st["id"] == uid and st["offset"] == half and st["state"] == "open", st
    h = c.head(f"/v1/uploads/{uid}")
    assert h.status_code == 200 and int(h.headers["Upload-Offset"]) == half and h.content == b""

    # The rest in one PATCH, with the OCI form of Content-Range this time.
    r = c.patch(f"/v1/uploads/{uid}", data=data[half:],
                headers={"Content-Range": f"{half}-{len(data) - 1}", "Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    assert int(r.headers["Upload-Offset"]) == len(data)
    assert r.headers["Range"] == f"0-{len(data) - 1}"

    digest = digest_of(data)
    r = c.seal_upload(uid, digest)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["id"], body["state"], body["size"], body["digest"]) == (uid, "sealed", len(data), digest), body
    st = c.upload_state(uid)
    assert st["state"] == "sealed" and st["size"] == len(data) and st["digest"] == digest
    assert st["offset"] == len(data)

    # The bytes that crossed the restart are the right ones: store and read them back.
    job = c.create_version("resumed", [(FILE, uid)])
    job, _ = c.wait_job(job["id"])
    assert job["state"] == "succeeded", job
    _, got = c.download(f"/v1/models/resumed/versions/{job['version']}/files/{FILE}", tmp_path / "out")
    assert got == sha256_file(path)


def test_out_of_order_patch_is_416_and_changes_nothing(client):
    c = client
    data = bytes(range(256)) * 40  # 10240 bytes
    uid = c.start_upload()
    c.patch_upload(uid, data[:1000], 0)

    for start in (2000, 0, 999, 1001):  # a gap, a rewind, overlaps
        r = c.patch_upload(uid, data[start:start + 500], start, check=False)
        assert_error(r, 416, "RANGE_INVALID")
        assert int(r.headers["Upload-Offset"]) == 1000, (start, r.headers)
        assert c.upload_state(uid)["offset"] == 1000

    c.patch_upload(uid, data[1000:], 1000)
    r = c.seal_upload(uid, digest_of(data))
    assert r.status_code == 201, r.text
    assert r.json()["size"] == len(data)


def test_patch_without_content_range_appends_at_the_offset(client):
    c = client
    a, b = b"first piece " * 100, b"second piece " * 100
    uid = c.start_upload()
    for i, piece in enumerate((a, b)):
        r = c.patch(f"/v1/uploads/{uid}", data=piece, headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
        assert int(r.headers["Upload-Offset"]) == len(a) + (len(b) if i else 0)
    r = c.seal_upload(uid, digest_of(a + b))
    assert r.status_code == 201, r.text
    assert r.json()["digest"] == digest_of(a + b)


def test_put_may_carry_the_last_piece(client, fixtures):
    body = client.upload_chunked(fixtures / "blazeface.f32.safetensors", piece=128 << 10, last_in_put=True)
    assert body["digest"] == digest_of(fixtures / "blazeface.f32.safetensors")


def test_wrong_digest_is_400_and_leaves_the_upload_open(client):
    c = client
    data = b"some bytes of a model" * 1000
    uid = c.start_upload()
    c.patch_upload(uid, data, 0)

    r = c.seal_upload(uid, digest_of(data + b"x"))
    assert_error(r, 400, "DIGEST_INVALID")
    st = c.upload_state(uid)
    assert st["state"] == "open" and st["offset"] == len(data), st

    # Malformed digests are rejected too, without sealing.
    for bad in ("sha256:abc", "md5:" + "0" * 32, "sha256:" + "G" * 64):
        r = c.put(f"/v1/uploads/{uid}", params={"digest": bad})
        assert_error(r, 400)
        assert c.upload_state(uid)["state"] == "open"

    # It can still be finished with the right digest.
    r = c.seal_upload(uid, digest_of(data))
    assert r.status_code == 201, r.text
    assert c.upload_state(uid)["state"] == "sealed"


def test_single_request_upload(client, fixtures):
    c = client
    path = fixtures / "blazeface.f32.safetensors"
    body = c.upload_single(path)
    st = c.upload_state(body["id"])
    assert st["state"] == "sealed"
    assert st["size"] == st["offset"] == path.stat().st_size
    assert st["digest"] == digest_of(path)

    # With a wrong digest nothing is sealed (and nothing usable is left behind).
    r = c.post("/v1/uploads", params={"digest": digest_of(b"other")}, data=b"these bytes",
               headers={"Content-Type": "application/octet-stream"})
    assert_error(r, 400, "DIGEST_INVALID")


def another_id_like(uid):
    """An id of the same shape as `uid` (same length, same character classes) that differs from it."""
    out = list(uid)
    changed = 0
    for i in range(len(out) - 1, -1, -1):
        ch = out[i]
        if ch.isdigit():
            out[i] = str((int(ch) + 1) % 10)
        elif ch in "abcdef":
            out[i] = "abcdef"[("abcdef".index(ch) + 1) % 6]
        elif ch in "ABCDEF":
            out[i] = "ABCDEF"[("ABCDEF".index(ch) + 1) % 6]
        else:
            continue
        changed += 1
        if changed == 6:
            break
    fake = "".join(out)
    assert fake != uid
    return fake


def test_unknown_upload_is_404(client):
    c = client
    uid = c.start_upload()
    r = c.delete(f"/v1/uploads/{uid}")
    assert r.status_code == 204 and r.content == b""

    fake = another_id_like(uid)
    for u in (uid, fake):
        assert_error(c.get(f"/v1/uploads/{u}"), 404)
        assert c.head(f"/v1/uploads/{u}").status_code == 404
        assert_error(c.patch_upload(u, b"abc", 0, check=False), 404)
        assert_error(c.seal_upload(u, digest_of(b"")), 404)
        assert_error(c.delete(f"/v1/uploads/{u}"), 404)


def test_patch_after_sealing_is_409(client):
    c = client
    data = b"\x01\x02\x03" * 5000
    uid = c.start_upload()
    c.patch_upload(uid, data, 0)
    assert c.seal_upload(uid, digest_of(data)).status_code == 201

    assert_error(c.patch_upload(uid, b"more", len(data), check=False), 409)
    r = c.patch(f"/v1/uploads/{uid}", data=b"more", headers={"Content-Type": "application/octet-stream"})
    assert_error(r, 409)
    st = c.upload_state(uid)
    assert st["state"] == "sealed" and st["size"] == len(data) and st["digest"] == digest_of(data)


def test_dropped_body_keeps_the_bytes_that_arrived(server):
    """A PATCH whose connection drops mid-body keeps what arrived; the client resumes from there."""
    c = Client(server.url)
    uid = c.start_upload()
    data = bytes(range(256)) * 4096  # 1 MiB
    sent = 300_000
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("PATCH", f"/v1/uploads/{uid}")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(len(data)))
    conn.putheader("Content-Range", f"bytes 0-{len(data) - 1}")
    conn.endheaders()
    conn.send(data[:sent])
    conn.close()

    # The server notices the drop when it reads the socket; the offset settles at what arrived.
    deadline = time.monotonic() + 10
    while True:
        off = c.upload_state(uid)["offset"]
        if off == sent or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert off == sent
    c.patch_upload(uid, data[off:], off)
    r = c.seal_upload(uid, digest_of(data))
    assert r.status_code == 201, r.text
