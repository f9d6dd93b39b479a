"""Register a base and a finetune over HTTP, then read them back byte for byte (whole, ranges,
conditional, HEAD), as a delta container rebuilt offline, and check that identical files dedup."""
import http.client
import subprocess

import pytest

from client_util import TOOL, Client, assert_error, sha256_file

FILE = "model.safetensors"
N_TENSORS = 128  # faceres and faceres-deep (fixtures README)


def register_pair(c, fixtures, dtype):
    """faceres (standalone, tag v1) + faceres-deep (delta against faceres:v1, chunked upload)."""
    base_file = fixtures / f"faceres.{dtype}.safetensors"
    ft_file = fixtures / f"faceres-deep.{dtype}.safetensors"
    _, base_v = c.register("faceres", base_file, tags=["v1"])
    up = c.upload_chunked(ft_file, piece=1 << 20)
    job = c.create_version("faceres-deep", [(FILE, up["id"])],
                           base={"model": "faceres", "version": "v1"}, policy={"mode": "lossless"})
    job, seen = c.wait_job(job["id"])
    assert job["state"] == "succeeded", (job, seen)
    ft_v = c.version("faceres-deep", job["version"])
    return base_file, ft_file, base_v, ft_v, job


def check_file_entry(v, path, size, hexdigest):
    files = {f["path"]: f for f in v["files"]}
    f = files[path]
    assert (f["kind"], f["size"], f["sha256"]) == ("safetensors", size, "sha256:" + hexdigest), f


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
# Over 100 lines on purpose: one scenario (upload, create, download, ranges), step by step.
def test_finetune_roundtrip(server, fixtures, tmp_path, dtype):
    c = Client(server.url)
    base_file, ft_file, base_v, ft_v, job = register_pair(c, fixtures, dtype)
    base_hex, ft_hex = sha256_file(base_file), sha256_file(ft_file)
    base_size, ft_size = base_file.stat().st_size, ft_file.stat().st_size

    # The base: standalone, tagged, described by its summary.
    assert base_v["model"] == "faceres"
    assert base_v["base"] is None
    assert "v1" in base_v["tags"]
    assert base_v["mode"] == "lossless"
    assert base_v["logical_bytes"] == base_size
    assert base_v["stats"]["tensors"] == N_TENSORS
    assert base_v["stats"]["tensors_standalone"] == N_TENSORS
    check_file_entry(base_v, FILE, base_size, base_hex)
    assert c.version("faceres", "v1")["digest"] == base_v["digest"]

    # The job: progress complete, the version it made.
    p = job["progress"]
    assert p["tensors_done"] == p["tensors_total"] == N_TENSORS, job
    assert 0 < p["bytes_done"] == p["bytes_total"] <= ft_size, job
    assert job["model"] == "faceres-deep"
    assert job["version"] == ft_v["digest"]

    # The finetune: a delta against the base's digest, smaller than its input.
    assert ft_v["model"] == "faceres-deep"
    assert ft_v["base"] == {"model": "faceres", "digest": base_v["digest"]}
    assert ft_v["mode"] == "lossless"
    assert ft_v["logical_bytes"] == ft_size
    assert 0 < ft_v["stored_bytes"] < ft_size
    st = ft_v["stats"]
    assert st["tensors"] == N_TENSORS
    assert st["tensors_delta"] + st["tensors_same"] + st["tensors_standalone"] == N_TENSORS
    assert st["tensors_delta"] > 0
    assert 0 < st["new_bytes"] <= st["encoded_bytes"]
    check_file_entry(ft_v, FILE, ft_size, ft_hex)
    manifest = ft_v["manifest"]
    assert manifest["format"] == "deltastore.manifest" and manifest["format_version"] == 1
    assert manifest["base"] == base_v["digest"]
    assert len(manifest["files"][0]["tensors"]) == N_TENSORS

    # Whole-file downloads: bytes, Content-Length, ETag, Accept-Ranges.
    url = f"/v1/models/faceres-deep/versions/{ft_v['digest']}/files/{FILE}"
    r, got = c.download(url, tmp_path / "ft.safetensors")
    assert r.status_code == 200
    assert got == ft_hex
    assert int(r.headers["Content-Length"]) == ft_size
    assert r.headers["ETag"] == f'"sha256:{ft_hex}"'
    assert r.headers["Accept-Ranges"] == "bytes"
    r, got = c.download(f"/v1/models/faceres/versions/v1/files/{FILE}", tmp_path / "base.safetensors")
    assert r.status_code == 200 and got == base_hex
    assert r.headers["ETag"] == f'"sha256:{base_hex}"'

    # Ranges (rebuilt from deltas, so they cross chunk and tensor boundaries).
    data = ft_file.read_bytes()
    for rng, lo, hi in [("bytes=100-1099", 100, 1099),
                        ("bytes=-10", ft_size - 10, ft_size - 1),
                        (f"bytes={ft_size // 2 - 3000}-{ft_size // 2 + ft_size // 4}",
                         ft_size // 2 - 3000, ft_size // 2 + ft_size // 4),
                        (f"bytes={ft_size - 5000}-", ft_size - 5000, ft_size - 1),
                        ("bytes=0-0", 0, 0)]:
        r = c.get(url, headers={"Range": rng})
        assert r.status_code == 206, (rng, r.status_code, r.text[:200])
        assert r.headers["Content-Range"] == f"bytes {lo}-{hi}/{ft_size}", rng
        assert int(r.headers["Content-Length"]) == hi - lo + 1, rng
        assert r.content == data[lo:hi + 1], rng
    # A last byte past the end is clamped to the end (RFC 9110).
    r = c.get(url, headers={"Range": f"bytes={ft_size - 4}-{ft_size + 100}"})
    assert r.status_code == 206 and r.content == data[-4:]
    for rng in (f"bytes={ft_size}-", f"bytes={ft_size + 10}-{ft_size + 20}"):
        r = c.get(url, headers={"Range": rng})
        assert_error(r, 416)
        if "Content-Range" in r.headers:
            assert r.headers["Content-Range"] == f"bytes */{ft_size}"

    # Conditional GET.
    etag = f'"sha256:{ft_hex}"'
    r = c.get(url, headers={"If-None-Match": etag})
    assert r.status_code == 304
    assert r.content == b""
    r = c.get(url, headers={"If-None-Match": f'"sha256:{"0" * 64}"'})
    assert r.status_code == 200 and len(r.content) == ft_size

    # HEAD: the headers of a GET and no body (the next response on the connection parses cleanly).
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("HEAD", url)
        resp = conn.getresponse()
        assert resp.status == 200
        assert int(resp.getheader("Content-Length")) == ft_size
        assert resp.getheader("ETag") == etag
        assert resp.getheader("Accept-Ranges") == "bytes"
        assert resp.read() == b""
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 200 and b"ok" in resp.read()
    finally:
        conn.close()

    # Unknown file or version.
    assert_error(c.get(f"/v1/models/faceres-deep/versions/{ft_v['digest']}/files/nope.bin"), 404)
    assert_error(c.get(f"/v1/models/faceres-deep/versions/sha256:{'0' * 64}/files/{FILE}"), 404)
    assert_error(c.get("/v1/models/faceres-deep/versions/nosuchtag"), 404)


def test_delta_container_rebuilds_offline(server, fixtures, tmp_path):
    c = Client(server.url)
    base_file, ft_file, base_v, ft_v, _ = register_pair(c, fixtures, "bf16")
    url = f"/v1/models/faceres-deep/versions/{ft_v['digest']}/delta"
    container = tmp_path / "faceres-deep.container"
    r, _ = c.download(url, container)
    assert r.status_code == 200
    size = container.stat().st_size
    assert int(r.headers["Content-Length"]) == size
    # Deltas of a related pair compress: the container is smaller than the file it rebuilds.
    assert 0 < size < ft_file.stat().st_size
    h = c.head(url)
    assert h.status_code == 200 and int(h.headers["Content-Length"]) == size
    assert h.content == b""

    assert TOOL.exists(), f"{TOOL} not built"
    out = tmp_path / "rebuilt"
    p = subprocess.run([str(TOOL), "rebuild", "--base", str(base_file), "--container", str(container),
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert sha256_file(out / FILE) == sha256_file(ft_file)


def test_delta_container_refuses_the_wrong_base(server, fixtures, tmp_path):
    """Rebuilding against another checkpoint of the same shapes must fail, not write wrong bytes."""
    c = Client(server.url)
    _, ft_file, _, ft_v, _ = register_pair(c, fixtures, "bf16")
    container = tmp_path / "faceres-deep.container"
    c.download(f"/v1/models/faceres-deep/versions/{ft_v['digest']}/delta", container)
    out = tmp_path / "rebuilt"
    p = subprocess.run([str(TOOL), "rebuild", "--base", str(ft_file), "--container", str(container),
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0, p.stdout
    assert (p.stdout + p.stderr).strip(), "the failure should say why"
    # A failed rebuild leaves no file that could pass for the model.
    assert not (out / FILE).exists()


def test_identical_files_are_stored_once(server, fixtures, tmp_path):
    c = Client(server.url)
    a_file = fixtures / "blazeface.f32.safetensors"
    b_file = fixtures / "blazeface-back.f32.safetensors"
    assert sha256_file(a_file) == sha256_file(b_file), "fixture pair should be byte-identical"

    _, a_v = c.register("blaze-a", a_file)
    assert a_v["stats"]["new_bytes"] > 0
    before = c.stats()
    assert before["stored_bytes"] > 0 and before["chunks"] > 0
    _, b_v = c.register("blaze-b", b_file)
    after = c.stats()

    assert b_v["base"] is None
    assert b_v["stats"]["new_bytes"] == 0
    assert b_v["stats"]["tensors_standalone"] == b_v["stats"]["tensors"] > 0
    assert after["stored_bytes"] == before["stored_bytes"]
    assert after["chunks"] == before["chunks"]
    assert after["models"] == before["models"] + 1
    # Same manifest (the model name is not part of it), so the same digest.
    assert b_v["digest"] == a_v["digest"]
    r, got = c.download(f"/v1/models/blaze-b/versions/{b_v['digest']}/files/{FILE}", tmp_path / "b")
    assert got == sha256_file(b_file)
