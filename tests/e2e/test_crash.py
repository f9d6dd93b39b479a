"""Crash safety: SIGKILL the server during an upload, a compression job, garbage collection and a
download; after each, `deltastored check` must find every chunk readable and every reference count
right, and the registry must carry on (uploads resume from their committed offset, jobs run again)."""
import json
import subprocess
import threading
import time

import requests

from client_util import BUILD, digest_of, sha256_file


def check(server):
    """Runs `deltastored check` on the (stopped) server's data dir; returns its report."""
    out = subprocess.run([str(BUILD / "server" / "deltastored"), "check", "--data-dir", str(server.data_dir)],
                         capture_output=True, text=True, timeout=120)
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["ok"], out.stdout + out.stderr
    return report


def restart_after_kill(server):
    """SIGKILL, start (which recovers), stop cleanly, check, start again."""
    server.kill()
    server.start()
    server.stop()
    report = check(server)
    server.start()
    return report


def test_kill_during_upload_keeps_the_committed_bytes(server, client, fixtures):
    data = (fixtures / "faceres.bf16.safetensors").read_bytes()
    uid = client.start_upload()
    client.patch_upload(uid, data[:1 << 20], 0)

    def slow_body():
        yield data[1 << 20:2 << 20]
        time.sleep(30)  # the server dies while this request is open
        yield b""

    t = threading.Thread(target=lambda: requests.patch(
        client.url(f"/v1/uploads/{uid}"), data=slow_body(),
        headers={"Content-Range": f"bytes {1 << 20}-{len(data) - 1}"}, timeout=60), daemon=True)
    t.start()
    time.sleep(1.0)
    restart_after_kill(server)
    offset = client.upload_state(uid)["offset"]
    assert 1 << 20 <= offset <= 2 << 20
    client.patch_upload(uid, data[offset:], offset)
    sealed = client.seal_upload(uid, digest_of(data))
    assert sealed.status_code == 201, sealed.text
    assert sealed.json()["digest"] == digest_of(data)


def test_kill_during_a_job_runs_it_again(server, client, fixtures):
    client.register("base32", fixtures / "faceres.f32.safetensors", tags=["v1"])
    up = client.upload_single(fixtures / "faceres-deep.f32.safetensors")
    job = client.create_version("deep32", [("model.safetensors", up["id"])], base={"model": "base32", "version": "v1"},
                                policy={"mode": "lossy", "ratio": 32})
    deadline = time.time() + 60
    while client.get_job(job["id"])["state"] == "queued" and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the compression
    restart_after_kill(server)
    done, _ = client.wait_job(job["id"], timeout=300)
    assert done["state"] == "succeeded", done
    assert done.get("restarts", 0) >= 1, done
    server.stop()
    check(server)
    server.start()


def test_kill_during_download_and_gc(server, client, fixtures):
    path = fixtures / "faceres.bf16.safetensors"
    _, v = client.register("m", path, tags=["v1"])
    client.register("other", fixtures / "blazeface.f32.safetensors")
    r = requests.get(client.url("/v1/models/m/versions/v1/files/model.safetensors"), stream=True, timeout=60)
    it = r.iter_content(1 << 16)
    next(it)
    restart_after_kill(server)
    _, sha = client.download("/v1/models/m/versions/v1/files/model.safetensors", server.data_dir.parent / "dl")
    assert sha == sha256_file(path)

    # GC: delete the version (which collects) and kill while it runs.
    t = threading.Thread(target=lambda: requests.delete(client.url(f"/v1/models/m/versions/{v['digest']}"), timeout=60),
                         daemon=True)
    t.start()
    time.sleep(0.02)
    restart_after_kill(server)
    client.post("/v1/gc")
    server.stop()
    report = check(server)
    assert report["versions"] in (1, 2)
    server.start()
    assert client.version("other", client.get("/v1/models/other/versions").json()["versions"][0]["digest"])
