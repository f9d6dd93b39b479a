"""The `deltastore` command line, run as a subprocess against the real server."""
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1]
BASE = "faceres.bf16.safetensors"
FT = "faceres-deep.bf16.safetensors"


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def cli(server, tmp_path):
    """Runs `deltastore --url <server> ARGS` (the installed console script when there is one)."""
    script = pathlib.Path(sys.executable).with_name("deltastore")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "deltastore_client"]
    env = dict(os.environ, DELTASTORE_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("DELTASTORE_URL", None)
    env["PYTHONPATH"] = os.pathsep.join([str(PKG)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))

    def run(*args, rc=0):
        p = subprocess.run(cmd + ["--url", server.url, *map(str, args)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == rc, f"{args}: rc {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p
    return run


def test_cli_upload_ls_download(cli, fixtures, tmp_path):
    p = cli("upload", fixtures / BASE, "--model", "faceres", "--tag", "v1", "--piece-size", "2")
    assert p.stdout.startswith("faceres@sha256:"), p.stdout
    assert "100%|" in p.stderr  # the upload and encode bars
    base_digest = p.stdout.split()[0].split("@")[1]

    p = cli("upload", fixtures / FT, "--model", "faceres-deep", "--base", "faceres@v1",
            "--tag", "v1", "--tag", "latest")
    ft_digest = p.stdout.split()[0].split("@")[1]
    assert "delta" in p.stdout and "stored" in p.stdout

    p = cli("ls")
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "VERSIONS", "CREATED"]
    assert [ln.split()[0] for ln in lines[1:]] == ["faceres", "faceres-deep"]
    p = cli("ls", "faceres-deep")
    assert ft_digest in p.stdout and "faceres@" + base_digest[:19] in p.stdout
    p = cli("--json", "ls", "faceres-deep")
    assert json.loads(p.stdout)[0]["digest"] == ft_digest

    p = cli("download", "faceres-deep", "out")  # bare model: the tag latest
    assert sha256(tmp_path / "out" / FT) == sha256(fixtures / FT)
    assert "verified" in p.stdout and "100%|" in p.stderr
    p = cli("-q", "download", f"faceres-deep@{ft_digest}", "out2", "--parallel", "2")
    assert sha256(tmp_path / "out2" / FT) == sha256(fixtures / FT) and p.stderr == ""
    cli("-q", "download", "faceres-deep@v1", "ft.dsc", "--delta")
    assert (tmp_path / "ft.dsc").stat().st_size > 0

    p = cli("tag", "faceres-deep", "prod", ft_digest)
    assert f"faceres-deep:prod -> {ft_digest}" in p.stdout
    p = cli("--json", "stats")
    st = json.loads(p.stdout)
    assert st["models"] == 2 and st["versions"] == 2

    p = cli("rm", "faceres@v1", rc=1)
    assert "VERSION_IN_USE" in p.stderr and "409" in p.stderr
    p = cli("download", "nosuch@v1", "x", rc=1)
    assert "MODEL_UNKNOWN" in p.stderr
    p = cli("audit")
    lines = p.stdout.splitlines()
    assert lines[0].startswith("total: 2 version(s) in 2 model(s);"), p.stdout
    assert any(l.split()[:2] == ["faceres-deep", "1"] for l in lines), p.stdout
    assert any(l.startswith("MODEL") and "DEDUP" in l and "LOSSY" in l for l in lines), p.stdout
    assert any(l.startswith("faceres@sha256:") and "faceres,faceres-deep" in l for l in lines), p.stdout
    p = cli("audit", "--model", "faceres-deep")
    assert p.stdout.startswith("faceres-deep: logical ") and ft_digest[:19] in p.stdout and "v1" in p.stdout
    audit = json.loads(cli("--json", "audit").stdout)
    t = audit["totals"]
    assert t["logical_bytes"] == (t["stored_bytes"] + t["saved_dedup_bytes"] + t["saved_lossless_bytes"]
                                  + t["saved_lossy_bytes"])
    assert t["stored_bytes"] == st["stored_bytes"]
    hist = json.loads(cli("--json", "audit", "--history").stdout)
    assert [h["event"]["event"] for h in hist] == ["ingest", "ingest"]
    p = cli("audit", "--model", "nosuch", rc=1)
    assert "MODEL_UNKNOWN" in p.stderr and "Traceback" not in p.stderr
    p = cli("rm", "faceres-deep@prod")
    assert f"deleted faceres-deep@{ft_digest}" in p.stdout
    p = cli("--json", "stats")
    assert json.loads(p.stdout)["versions"] == 1


def test_cli_unreachable_registry_is_a_clear_error(tmp_path):
    script = pathlib.Path(sys.executable).with_name("deltastore")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "deltastore_client"]
    env = dict(os.environ, PYTHONPATH=str(PKG))
    p = subprocess.run(cmd + ["--url", "http://127.0.0.1:9", "--timeout", "2", "--retries", "1", "stats"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "cannot reach the registry" in p.stderr and "Traceback" not in p.stderr
