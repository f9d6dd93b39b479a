"""Per-tensor downloads through the library (Client.download_tensors) and the CLI
(`deltastore download MODEL@REF DEST --tensors a,b`), against the real server."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from deltastore_client import DeltastoreError

PKG = pathlib.Path(__file__).resolve().parents[1]


def shard(path, seed, names):
    rng = np.random.default_rng(seed)
    t = {n: rng.standard_normal((256, 64), dtype=np.float32) for n in names}
    save_file(t, str(path), metadata={"format": "pt"})
    return t


@pytest.fixture
def sharded(ds, tmp_path):
    """A version with two shards (a.*, b.*) and a config file."""
    src = tmp_path / "ckpt"
    src.mkdir()
    t = shard(src / "model-00001-of-00002.safetensors", 1, ["a.weight", "a.bias"])
    t.update(shard(src / "model-00002-of-00002.safetensors", 2, ["b.weight", "b.bias"]))
    (src / "config.json").write_text("{}")
    v = ds.upload(src, "sharded", tags=["v1"], progress=False)
    return t, v


def test_download_tensors_from_one_file(ds, sharded, tmp_path):
    t, v = sharded
    out = ds.download_tensors("sharded", "v1", ["a.bias"], tmp_path / "a.safetensors",
                              file="model-00001-of-00002.safetensors")
    assert out["version"] == v["digest"]
    [f] = out["files"]
    assert f["path"] == str(tmp_path / "a.safetensors") and f["tensors"] == ["a.bias"]
    assert f["chunks_read"] == 2  # the header chunk and the tensor's one chunk
    got = load_file(f["path"])
    assert list(got) == ["a.bias"] and got["a.bias"].tobytes() == t["a.bias"].tobytes()


def test_download_tensors_across_shards(ds, sharded, tmp_path):
    t, _ = sharded
    out = ds.download_tensors("sharded", None, ["b.weight", "a.weight"], tmp_path / "subset")
    by_file = {f["file"]: f for f in out["files"]}
    assert sorted(by_file) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    for name, fname in (("a.weight", "model-00001-of-00002.safetensors"),
                        ("b.weight", "model-00002-of-00002.safetensors")):
        got = load_file(tmp_path / "subset" / fname)
        assert list(got) == [name] and got[name].tobytes() == t[name].tobytes()


def test_download_tensors_unknown_names(ds, sharded, tmp_path):
    with pytest.raises(DeltastoreError) as e:
        ds.download_tensors("sharded", "v1", ["a.weight", "zz", "yy"], tmp_path / "x")
    assert e.value.code == "TENSOR_UNKNOWN" and e.value.message == "sharded@v1 has no tensors zz, yy"
    with pytest.raises(DeltastoreError) as e:  # the server's answer when the file is named
        ds.download_tensors("sharded", "v1", ["zz"], tmp_path / "x", file="model-00001-of-00002.safetensors")
    assert (e.value.status, e.value.code) == (400, "TENSOR_UNKNOWN")
    assert not (tmp_path / "x").exists()


def test_cli_download_tensors(server, sharded, tmp_path):
    t, _ = sharded
    env = dict(os.environ, DELTASTORE_CACHE_DIR=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join([str(PKG)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    dest = tmp_path / "one.safetensors"
    p = subprocess.run([sys.executable, "-m", "deltastore_client", "--url", server.url, "-q", "--json",
                        "download", "sharded@v1", str(dest), "--tensors", "b.bias"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [f["tensors"] for f in out["files"]] == [["b.bias"]]
    got = load_file(dest)
    assert list(got) == ["b.bias"] and got["b.bias"].tobytes() == t["b.bias"].tobytes()
    p = subprocess.run([sys.executable, "-m", "deltastore_client", "--url", server.url, "-q",
                        "download", "sharded@v1", str(dest), "--tensors", "nope"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "TENSOR_UNKNOWN" in p.stderr and "nope" in p.stderr, p.stderr
