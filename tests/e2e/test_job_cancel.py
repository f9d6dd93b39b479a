"""DELETE /v1/jobs/{id} (docs/http_api.md, "Jobs"): a queued job ends cancelled at once, a running one
stops at its next check, between tensors or between the steps of a lossy tensor; either way it ends `failed` with JOB_CANCELLED, nothing is
committed, the store checks clean and the same uploads make the version afterwards. Two nodes on one
PostgreSQL and S3: the DELETE may reach the node that does not run the job.

A job is caught running by polling its state (never by sleeping): the checkpoint has many tensors and
the adaptive coder (`level: max`) is slow, so the job is still encoding long after its first tensor."""
import json
import struct
import subprocess
import time

import numpy as np

import stores
from client_util import BUILD, Client, assert_error
from slow_jobs import SLOW, write_checkpoint


def delete_job(client, job_id, status):
    r = client.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == status, r.text
    job = r.json()
    assert job["id"] == job_id, job
    return job


def assert_cancelled(job):
    assert job["state"] == "failed", job
    assert job["error"]["code"] == "JOB_CANCELLED", job
    assert "version" not in job, job


def wait_running(client, job_id):
    """Polls until the job has encoded a tensor; it has many more to go."""
    j = client.wait_job_encoding(job_id, timeout=300)
    assert j["progress"]["tensors_done"] < j["progress"]["tensors_total"], j
    return j


def check_clean(server):
    out = subprocess.run([str(BUILD / "server" / "deltastored"), "check", "--data-dir", str(server.data_dir),
                          *server.store_args], capture_output=True, text=True, timeout=300)
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["ok"], out.stdout + out.stderr
    return report


def versions(client, model):
    r = client.get(f"/v1/models/{model}/versions")
    if r.status_code == 404:
        return []
    assert r.status_code == 200, r.text
    return r.json()["versions"]


def test_deleting_queued_and_running_jobs_cancels_them(make_server, tmp_path):
    server = make_server(["--workers", "1"])
    client = Client(server.url)
    big = client.upload_single(write_checkpoint(tmp_path / "big.safetensors"))
    small = client.upload_single(write_checkpoint(tmp_path / "small.safetensors", seed=2))
    running = client.create_version("big", [("model.safetensors", big["id"])], policy=SLOW, tags=["v1"])
    wait_running(client, running["id"])
    # The only worker is busy: the second job waits in the queue, and a DELETE ends it at once.
    queued = client.create_version("small", [("model.safetensors", small["id"])])
    assert client.get_job(queued["id"])["state"] == "queued"
    assert_cancelled(delete_job(client, queued["id"], 200))
    assert_cancelled(delete_job(client, queued["id"], 200))  # asked again: the same answer
    # The running job is asked to stop and stops at its next check.
    stopping = delete_job(client, running["id"], 202)
    assert stopping["state"] == "running" and stopping["cancel_requested"] is True, stopping
    done, _ = client.wait_job(running["id"], timeout=300)
    assert_cancelled(done)
    assert done["progress"]["tensors_done"] < done["progress"]["tensors_total"], done
    assert_cancelled(delete_job(client, running["id"], 200))
    assert versions(client, "big") == [] and versions(client, "small") == []
    assert_error(client.delete("/v1/jobs/" + "0" * 32), 404, "JOB_UNKNOWN")
    server.stop()
    check_clean(server)
    server.start()
    client = Client(server.url)
    # The uploads were kept: the same requests (the fast coder this time) make the versions.
    for model, up in (("big", big), ("small", small)):
        job = client.create_version(model, [("model.safetensors", up["id"])], tags=["v1"])
        done, _ = client.wait_job(job["id"], timeout=300)
        assert done["state"] == "succeeded", done
        assert_error(client.delete(f"/v1/jobs/{job['id']}"), 409, "JOB_FINISHED")
    assert len(versions(client, "big")) == 1 and len(versions(client, "small")) == 1
    server.stop()
    report = check_clean(server)
    assert report["versions"] == 2, report


def test_a_delete_on_one_node_stops_the_job_running_on_the_other(make_server, tmp_path):
    store_args = stores.external().args_for(tmp_path / "shared")
    a, b = (make_server(["--node-id", node, "--job-lease", "2", "--job-poll", "0.2", "--workers", "1"],
                        data_dir=tmp_path / node, store_args=store_args) for node in ("node-a", "node-b"))
    ca, cb = Client(a.url), Client(b.url)
    up = ca.upload_single(write_checkpoint(tmp_path / "big.safetensors"))
    job = ca.create_version("big", [("model.safetensors", up["id"])], policy=SLOW)
    j = wait_running(ca, job["id"])
    # Ask the node that does not run the job.
    other = cb if j["node"] == "node-a" else ca
    stopping = delete_job(other, job["id"], 202)
    assert stopping["cancel_requested"] is True, stopping
    done, _ = other.wait_job(job["id"], timeout=300)
    assert_cancelled(done)
    assert done["node"] == j["node"], done  # ended by the node that ran it, not taken over
    assert done.get("restarts", 0) == 0, done
    assert versions(ca, "big") == []
    job = cb.create_version("big", [("model.safetensors", up["id"])])
    done, _ = ca.wait_job(job["id"], timeout=300)
    assert done["state"] == "succeeded", done
    a.stop()
    b.stop()
    report = check_clean(a)
    assert report["versions"] == 1, report


def write_pair_tensor(path, seed, base=None):
    """One 2048 x 2048 F32 tensor (a lossy candidate large enough to take seconds): the base when `base` is
    None, else base + a small dense delta."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((2048, 2048), dtype=np.float32) * 0.05
    if base is not None:
        w = base + rng.standard_normal(base.shape, dtype=np.float32) * 0.004
    head = json.dumps({"layers.0.mlp.weight": {"dtype": "F32", "shape": list(w.shape),
                                               "data_offsets": [0, w.nbytes]}}).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + w.tobytes())
    return w


def test_a_lossy_tensor_moves_the_progress_and_a_delete_stops_it_inside(make_server, tmp_path):
    server = make_server(["--workers", "1"])
    client = Client(server.url)
    base = write_pair_tensor(tmp_path / "base.safetensors", 1)
    write_pair_tensor(tmp_path / "ft.safetensors", 2, base)
    client.register("m", tmp_path / "base.safetensors", tags=["v1"])
    up = client.upload_single(tmp_path / "ft.safetensors")
    policy = {"mode": "lossy", "ratio": 16, "allocate": False}
    job = client.create_version("m", [("model.safetensors", up["id"])], base={"model": "m", "version": "v1"},
                                policy=policy)
    # Progress moves inside the file's only tensor (bytes_done between 0 and the tensor's bytes).
    deadline = time.monotonic() + 300
    while True:
        j = client.get_job(job["id"])
        p = j["progress"]
        assert j["state"] in ("queued", "running") and time.monotonic() < deadline, j
        if p.get("phase") == "encoding" and p["tensors_done"] == 0 and 0 < p["bytes_done"] < p["bytes_total"]:
            break
        time.sleep(0.05)  # the poll interval
    stopping = delete_job(client, job["id"], 202)
    assert stopping["cancel_requested"] is True, stopping
    done, _ = client.wait_job(job["id"], timeout=300)
    assert_cancelled(done)
    assert done["progress"]["tensors_done"] == 0, done  # stopped inside the tensor
    assert len(versions(client, "m")) == 1  # the base only
    server.stop()
    check_clean(server)
