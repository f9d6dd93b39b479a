"""Two deltastored nodes on one PostgreSQL (metadata) and one SeaweedFS S3 (chunks), both real servers
started by the tests (stores.py), each node with its own data dir: nothing is shared but the two stores
(upload bytes go to S3 too; README, "Scaling out").
Whatever node a request lands on, the answer is the same; a node killed mid-job loses the job to the
other; concurrent changes from both nodes end in one consistent state."""
import json
import subprocess
import threading
import time

import requests

import stores
from client_util import BUILD, Client, digest_of, sha256_bytes
from slow_jobs import LOSSY_MANY, write_lossy_pair

LEASE = 2  # seconds: a killed node's job moves within about this long


def two_nodes(make_server, tmp_path):
    store_args = stores.external().args_for(tmp_path / "shared")
    nodes = []
    for node in ("node-a", "node-b"):
        nodes.append(make_server(["--node-id", node, "--job-lease", str(LEASE), "--job-poll", "0.2", "--workers", "1"],
                                 data_dir=tmp_path / node, store_args=store_args))
    return nodes


def test_upload_pieces_alternate_between_nodes_and_each_node_serves_the_version(make_server, tmp_path, fixtures):
    a, b = two_nodes(make_server, tmp_path)
    ca, cb = Client(a.url), Client(b.url)
    data = (fixtures / "faceres.bf16.safetensors").read_bytes()
    uid = ca.start_upload()
    piece = len(data) // 4 + 1
    for i, start in enumerate(range(0, len(data), piece)):
        (ca if i % 2 == 0 else cb).patch_upload(uid, data[start:start + piece], start)
    assert ca.upload_state(uid)["offset"] == cb.upload_state(uid)["offset"] == len(data)
    sealed = cb.seal_upload(uid, digest_of(data))
    assert sealed.status_code == 201, sealed.text
    job = ca.create_version("faceres", [("model.safetensors", uid)], tags=["v1"])
    done, _ = cb.wait_job(job["id"])
    assert done["state"] == "succeeded", done
    for c in (ca, cb):
        r = c.get("/v1/models/faceres/versions/v1/files/model.safetensors")
        assert r.status_code == 200, r.text
        assert sha256_bytes(r.content) == digest_of(data).split(":")[1]
        assert r.headers["ETag"].strip('"') == digest_of(data)


def test_a_job_of_a_killed_node_finishes_on_the_other(make_server, tmp_path):
    a, b = two_nodes(make_server, tmp_path)
    ca, cb = Client(a.url), Client(b.url)
    base, finetune = write_lossy_pair(tmp_path)
    ca.register("base32", base, tags=["v1"])
    up = ca.upload_single(finetune)
    # A lossy job of many tensors is caught running; whichever node claimed it is killed.
    job = ca.create_version("deep32", [("model.safetensors", up["id"])], base={"model": "base32", "version": "v1"},
                            policy=LOSSY_MANY)
    j = ca.wait_job_encoding(job["id"])
    runner, other, other_client = (a, b, cb) if j["node"] == "node-a" else (b, a, ca)
    killed_at = time.monotonic()
    runner.kill()
    done, _ = other_client.wait_job(job["id"], timeout=300)
    taken_over = time.monotonic() - killed_at
    assert done["state"] == "succeeded", done
    assert done["restarts"] == 1, done
    assert done["node"] == ("node-b" if runner is a else "node-a"), done
    print(f"the killed node's job finished on the other node {taken_over:.1f} s after the kill "
          f"(lease {LEASE} s)")
    # The version the survivor committed rebuilds to the same bytes on either node.
    runner.start()
    got = [Client(n.url).get(f"/v1/models/deep32/versions/{done['version']}/files/model.safetensors")
           for n in (a, b)]
    assert got[0].status_code == got[1].status_code == 200
    assert got[0].content == got[1].content
    assert got[0].headers["ETag"] == got[1].headers["ETag"] == f'"sha256:{sha256_bytes(got[0].content)}"'


def test_tag_updates_from_both_nodes_end_in_one_answer(make_server, tmp_path, fixtures):
    a, b = two_nodes(make_server, tmp_path)
    ca, cb = Client(a.url), Client(b.url)
    _, v1 = ca.register("m", fixtures / "faceres.bf16.safetensors")
    _, v2 = cb.register("m", fixtures / "faceres-deep.bf16.safetensors")
    digests = [v1["digest"], v2["digest"]]
    errors = []

    def mover(client, k):
        s = requests.Session()
        for i in range(30):
            r = s.put(client.url(f"/v1/models/m/tags/prod"), json={"version": digests[(i + k) % 2]}, timeout=30)
            if r.status_code != 200:
                errors.append(r.text)

    threads = [threading.Thread(target=mover, args=(c, k)) for k, c in enumerate((ca, cb, ca, cb))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    seen = {c.version("m", "prod")["digest"] for c in (ca, cb)}
    assert len(seen) == 1 and seen <= set(digests), seen


def test_gc_on_one_node_while_the_other_ingests_loses_nothing(make_server, tmp_path, fixtures):
    a, b = two_nodes(make_server, tmp_path)
    ca, cb = Client(a.url), Client(b.url)
    files = [fixtures / n for n in ("faceres.bf16.safetensors", "faceres-deep.bf16.safetensors",
                                    "blazeface.f32.safetensors", "blazeface-back.f32.safetensors")]
    stop = threading.Event()
    gc_errors = []

    def collector():
        # Node A registers and deletes a throwaway model and collects garbage, over and over: its chunks
        # are the very ones node B is storing again.
        i = 0
        while not stop.is_set():
            _, v = ca.register(f"tmp{i}", files[i % len(files)])
            r = ca.delete(f"/v1/models/tmp{i}/versions/{v['digest']}")
            if r.status_code != 200:
                gc_errors.append(r.text)
            r = ca.post("/v1/gc")
            if r.status_code != 200:
                gc_errors.append(r.text)
            i += 1

    t = threading.Thread(target=collector)
    t.start()
    try:
        kept = [cb.register(f"keep{i}", f, tags=["v1"])[1] for i, f in enumerate(files * 2)]
    finally:
        stop.set()
        t.join()
    assert gc_errors == []
    for i, f in enumerate(files * 2):
        r = ca.get(f"/v1/models/keep{i}/versions/v1/files/model.safetensors")
        assert r.status_code == 200, r.text
        assert sha256_bytes(r.content) == digest_of(f).split(":")[1]
    # Both nodes stopped, the store checks clean.
    a.stop()
    b.stop()
    out = subprocess.run([str(BUILD / "server" / "deltastored"), "check", "--data-dir", str(a.data_dir),
                          *a.store_args], capture_output=True, text=True, timeout=120)
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["ok"], out.stdout + out.stderr
    assert report["versions"] == len(kept)
