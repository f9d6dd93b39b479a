"""Crash safety: SIGKILL the server during an upload, a compression job, garbage collection and a
download; after each, `deltastored check` must find every chunk readable and every reference count
right, and the registry must carry on (uploads resume from their committed offset, jobs run again)."""
import json
import subprocess
import threading

import requests

from client_util import BUILD, digest_of, sha256_file, wait_until_upload_busy
from slow_jobs import LOSSY_MANY, write_lossy_pair
import stores


def check(server, repair=False):
    """Runs `deltastored check` on the (stopped) server's data dir; returns its report.

    On the embedded store a restart recounts references, so the check is clean. On a shared store
    (DS_E2E_STORES=servers) no node may recount while others could be ingesting: a killed node's job
    leaves its chunks' references behind. Those are the only problems allowed there, and never fewer
    references than the manifests need; `check --repair` (all nodes stopped) drops them."""
    out = subprocess.run([str(BUILD / "server" / "deltastored"), "check", "--data-dir", str(server.data_dir),
                          *stores.server_args(server.data_dir), *(["--repair"] if repair else [])],
                         capture_output=True, text=True, timeout=120)
    report = json.loads(out.stdout)
    if stores.mode() == "embedded":
        assert out.returncode == 0 and report["ok"], out.stdout + out.stderr
    else:
        assert all(p["kind"] == "refcount_mismatch" and p["stored"] > p["expected"] for p in report["problems"]), \
            out.stdout + out.stderr
        assert report["refcounts_repaired"] == (len(report["problems"]) if repair else 0), out.stdout
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

    done = threading.Event()

    def slow_body():
        yield data[1 << 20:2 << 20]
        done.wait(60)  # the server dies while this request is open
        yield b""

    def patch():
        try:
            requests.patch(client.url(f"/v1/uploads/{uid}"), data=slow_body(),
                           headers={"Content-Range": f"bytes {1 << 20}-{len(data) - 1}"}, timeout=60)
        except requests.ConnectionError:
            pass  # the server was killed under it

    t = threading.Thread(target=patch, daemon=True)
    t.start()
    wait_until_upload_busy(client, uid)  # the second PATCH is in the server
    restart_after_kill(server)
    done.set()
    # A request cut by a kill commits nothing: the offset is the first PATCH's.
    offset = client.upload_state(uid)["offset"]
    assert offset == 1 << 20
    client.patch_upload(uid, data[offset:], offset)
    sealed = client.seal_upload(uid, digest_of(data))
    assert sealed.status_code == 201, sealed.text
    assert sealed.json()["digest"] == digest_of(data)


def test_kill_during_a_job_runs_it_again(server, client, tmp_path):
    base, finetune = write_lossy_pair(tmp_path)
    client.register("base32", base, tags=["v1"])
    up = client.upload_single(finetune)
    job = client.create_version("deep32", [("model.safetensors", up["id"])], base={"model": "base32", "version": "v1"},
                                policy=LOSSY_MANY)
    # Kill once the job has encoded a tensor, well inside the compression (160 tensors).
    client.wait_job_encoding(job["id"])
    restart_after_kill(server)
    done, _ = client.wait_job(job["id"], timeout=300)
    assert done["state"] == "succeeded", done
    assert done["restarts"] == 1, done
    server.stop()
    if stores.mode() != "embedded":
        check(server, repair=True)
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
    def delete():
        try:
            requests.delete(client.url(f"/v1/models/m/versions/{v['digest']}"), timeout=60)
        except requests.ConnectionError:
            pass  # killed before or while it answered

    t = threading.Thread(target=delete, daemon=True)
    t.start()
    restart_after_kill(server)  # at once: the kill lands before, during or after the deletion
    client.post("/v1/gc")
    models = {m["name"]: m["versions"] for m in client.get("/v1/models").json()["models"]}
    server.stop()
    report = check(server)
    # check (offline) and the API (online) agree on what survived, whichever it was.
    assert report["versions"] == sum(models.values()), (report, models)
    assert models["other"] == 1
    server.start()
    assert client.version("other", client.get("/v1/models/other/versions").json()["versions"][0]["digest"])
