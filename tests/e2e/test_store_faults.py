"""The scale-out stores failing under a running node, on real servers of this test's own (so the rest
of the session's stores stay up): PostgreSQL restarted (requests answer 503 STORE_UNAVAILABLE, then
work again), the S3 server stopped during an ingest (the job fails clearly, no half-written version is
visible, the same request succeeds once S3 is back), and what /readyz says meanwhile."""
import json
import subprocess
import time

import pytest

import stores
from client_util import BUILD, Client, assert_error, digest_of
from slow_jobs import LOSSY_MANY, write_lossy_pair


@pytest.fixture
def own_stores():
    ext = stores.ExternalStores()
    yield ext
    ext.stop()


def wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_postgresql_restart_answers_503_then_recovers(make_server, tmp_path, fixtures, own_stores):
    data = tmp_path / "data"
    node = make_server(data_dir=data, store_args=own_stores.args_for(data))
    c = Client(node.url)
    _, v = c.register("m", fixtures / "faceres.bf16.safetensors", tags=["v1"])
    ready = c.get("/readyz").json()
    assert (ready["meta_store"], ready["chunk_store"]) == ("postgresql", "s3"), ready

    subprocess.run([str(stores.TOOLS / "pg_server.sh"), "kill", str(own_stores.pg_dir)], check=True)
    t = time.monotonic()
    r = c.get("/v1/models/m/versions/v1")
    assert_error(r, 503, "STORE_UNAVAILABLE")
    assert time.monotonic() - t < 10
    assert_error(c.get("/readyz"), 503, "STORE_UNAVAILABLE")

    own_stores.restart_pg()
    wait_for(lambda: c.get("/v1/models/m/versions/v1").status_code == 200)
    assert c.version("m", "v1")["digest"] == v["digest"]
    assert c.get("/readyz").status_code == 200


def test_s3_stopped_during_an_ingest_fails_the_job_clearly_and_nothing_half_written_shows(
        make_server, tmp_path, own_stores):
    data = tmp_path / "data"
    store_args = own_stores.args_for(data)
    node = make_server(data_dir=data, store_args=store_args)
    c = Client(node.url)
    base, ft = write_lossy_pair(tmp_path)
    c.register("base32", base, tags=["v1"])
    up = c.upload_single(ft)
    job = c.create_version("deep32", [("model.safetensors", up["id"])], base={"model": "base32", "version": "v1"},
                           policy=LOSSY_MANY)
    c.wait_job_encoding(job["id"])
    subprocess.run([str(stores.TOOLS / "s3_server.sh"), "kill", str(own_stores.s3_dir)], check=True)
    done, _ = c.wait_job(job["id"], timeout=300)
    assert done["state"] == "failed", done
    assert done["error"]["code"] == "STORE_UNAVAILABLE", done
    assert_error(c.get("/v1/models/deep32/versions"), 404, "MODEL_UNKNOWN")
    assert_error(c.get("/readyz"), 503, "STORE_UNAVAILABLE")

    own_stores.restart_s3()
    wait_for(lambda: c.get("/readyz").status_code == 200)
    up = c.upload_single(ft)
    job = c.create_version("deep32", [("model.safetensors", up["id"])], base={"model": "base32", "version": "v1"},
                           policy=LOSSY_MANY, tags=["v1"])
    done, _ = c.wait_job(job["id"], timeout=300)
    assert done["state"] == "succeeded", done
    r = c.get("/v1/models/deep32/versions/v1/files/model.safetensors")
    assert r.status_code == 200 and r.headers["ETag"] == f'"{digest_of(r.content)}"'
    node.stop()
    out = subprocess.run([str(BUILD / "server" / "deltastored"), "check", "--data-dir", str(data), *store_args],
                         capture_output=True, text=True, timeout=120)
    report = json.loads(out.stdout)
    # The failed job gave back the references it had taken, the failed Put its own.
    assert out.returncode == 0 and report["ok"], out.stdout + out.stderr
    assert report["versions"] == 2


def test_unreachable_stores_and_refused_credentials_stop_the_server_at_start(tmp_path, own_stores, monkeypatch):
    def start(*store_args):
        out = subprocess.run([str(BUILD / "server" / "deltastored"), "--data-dir", str(tmp_path / "d"), "--listen",
                              "127.0.0.1:0", *store_args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 1, out.stdout + out.stderr
        return out.stderr

    meta, chunks = own_stores.args_for(tmp_path / "d")[1::2]
    dead_port = stores.free_port()
    err = start("--meta-store", f"postgresql://deltastore@127.0.0.1:{dead_port}/deltastore")
    assert err.startswith("error: UNAVAILABLE: cannot connect to PostgreSQL") and "Connection refused" in err, err
    err = start("--meta-store", meta, "--chunk-store", f"s3://deltastore/x?endpoint=http%3A%2F%2F127.0.0.1%3A{dead_port}")
    assert err.startswith("error: UNAVAILABLE: ") and f"http://127.0.0.1:{dead_port}" in err, err
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    err = start("--meta-store", meta, "--chunk-store", chunks)
    assert err.startswith("error: PERMISSION_DENIED: ") and "not-the-secret" not in err, err
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    err = start("--meta-store", meta, "--chunk-store", chunks)
    assert "AWS_SECRET_ACCESS_KEY" in err, err
