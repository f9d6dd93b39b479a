"""`deltastored copy`: a registry moves from the embedded store to S3 + PostgreSQL (real servers, started
by the tests) and back, every digest unchanged, every file byte-exact, and each copy checks clean."""
import json
import subprocess

import stores
from client_util import BUILD, Client, digest_of


def run(*args):
    out = subprocess.run([str(BUILD / "server" / "deltastored"), *map(str, args)], capture_output=True, text=True,
                         timeout=300)
    return out


def check_clean(data_dir, store_args):
    out = run("check", "--data-dir", data_dir, *store_args)
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["ok"], out.stdout + out.stderr
    return report


def test_copy_to_s3_and_postgresql_and_back(make_server, tmp_path, fixtures):
    embedded = tmp_path / "embedded"
    s = make_server(data_dir=embedded, store_args=[])
    c = Client(s.url)
    base_file, ft_file = fixtures / "faceres.bf16.safetensors", fixtures / "faceres-deep.bf16.safetensors"
    _, base = c.register("faceres", base_file, tags=["v1"])
    _, ft = c.register("faceres-deep", ft_file, base={"model": "faceres", "version": "v1"}, tags=["latest"])
    stored = c.stats()
    s.stop()

    servers = stores.external().args_for(tmp_path / "shared")
    to_args = ["--to-meta-store", servers[1], "--to-chunk-store", servers[3]]
    out = run("copy", "--data-dir", embedded, *to_args)
    assert out.returncode == 0, out.stderr
    copied = json.loads(out.stdout)
    assert copied["chunks"] == stored["chunks"] and copied["chunk_bytes"] == stored["stored_bytes"], (copied, stored)
    # Into stores that hold versions already: refused, nothing changed.
    again = run("copy", "--data-dir", embedded, *to_args)
    assert again.returncode == 1 and "already holds versions" in again.stderr, again.stderr
    assert check_clean(tmp_path / "shared", servers)["versions"] == 2

    for data_dir, store_args in ((tmp_path / "shared", servers), (tmp_path / "back", None)):
        if store_args is None:  # and back into a new embedded data dir
            out = run("copy", "--data-dir", tmp_path / "shared", *servers, "--to-data-dir", data_dir)
            assert out.returncode == 0, out.stderr
            store_args = []
            check_clean(data_dir, [])
        n = make_server(data_dir=data_dir, store_args=store_args)
        nc = Client(n.url)
        assert nc.version("faceres", "v1")["digest"] == base["digest"]
        assert nc.version("faceres-deep", "latest")["digest"] == ft["digest"]
        for model, ref, f in (("faceres", "v1", base_file), ("faceres-deep", "latest", ft_file)):
            r = nc.get(f"/v1/models/{model}/versions/{ref}/files/model.safetensors")
            assert r.status_code == 200 and digest_of(r.content) == digest_of(f)
        assert nc.stats()["stored_bytes"] == stored["stored_bytes"]
        n.stop()
