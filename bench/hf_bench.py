#!/usr/bin/env python3
"""Figures for the Hugging Face–compatible API and per-tensor downloads (a benchmark: it never asserts).

What it does
  1. Starts <build-dir>/service/deltastored on 127.0.0.1 (a free port), data dir in a temporary dir.
  2. Stores a multi-file version as a real deployment would pull it: a base model of --shards F32
     safetensors shards of --shard-mib MiB each (+ index, config, tokenizer files), and a lossless
     finetune of it (every tensor base + small noise), so the served shards are rebuilt from deltas.
  3. snapshot_download of the finetune (by its commit id) with huggingface_hub, --reps times with a fresh
     cache each, from deltastored, and from a plain static server holding the same bytes: nginx
     (Debian's nginx-light) laid out as a hub (the tree listing as a JSON file, `X-Repo-Commit` added to
     every answer), or python's http.server with the same layout when nginx is missing (it says which).
     Runs alternate between the two; the median and the best are printed. Every file's sha256 is checked.
  4. Per-tensor download of one tensor of a large file (--large-tensors tensors of --large-tensor-mib MiB
     in one file), from the standalone base and from the lossless finetune: bytes sent, chunk reads and
     stored bytes read (X-Deltastore-Chunks-Read / -Stored-Bytes-Read), against the stored bytes a whole
     rebuild of the file reads (its chunks in the manifest, plus the base's for the finetune).

Usage
  /opt/deltastore/venv/bin/python bench/hf_bench.py [--shards 4 --shard-mib 32 --reps 5]
  options: --build-dir DIR (default $DS_BUILD_DIR or ./build), --large-tensors N, --large-tensor-mib N,
  --keep (keep the temporary dir).
"""
import argparse
import hashlib
import http.server
import json
import os
import pathlib
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import requests
from safetensors.numpy import save

ROOT = pathlib.Path(__file__).resolve().parents[1]
MiB = 1 << 20
NS = "deltastore"

NGINX_CONF = """daemon off;
{user}
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  sendfile on;
  default_type application/octet-stream;
  map_hash_bucket_size 256;
  map $uri $linked_etag {{
{etags}
  }}
  server {{
    listen 127.0.0.1:{port};
    root {www};
    location /api/ {{ default_type application/json; add_header X-Repo-Commit {commit} always; }}
    location / {{ add_header X-Repo-Commit {commit} always; add_header X-Linked-Etag $linked_etag; }}
  }}
}}
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha(data):
    return hashlib.sha256(data).hexdigest()


def start_server(build, data_dir):
    proc = subprocess.Popen([str(build / "service" / "deltastored"), "--data-dir", str(data_dir),
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode()
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"deltastored did not start: {line!r}")
    url = f"http://127.0.0.1:{m.group(1)}"
    for _ in range(200):
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("deltastored did not answer /healthz")


def add_version(s, url, model, files, **extra):
    ups = []
    for path, data in files.items():
        r = s.post(url + "/v1/uploads", params={"digest": "sha256:" + sha(data)}, data=data)
        r.raise_for_status()
        ups.append({"path": path, "upload": r.json()["id"]})
    r = s.post(f"{url}/v1/models/{model}/versions", json={"files": ups, **extra})
    r.raise_for_status()
    job_id = r.json()["job"]["id"]
    while True:
        job = s.get(f"{url}/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed"):
            break
        time.sleep(0.1)
    if job["state"] != "succeeded":
        raise SystemExit(f"job failed: {job}")
    return job["version"]


def checkpoint(rng, shards, shard_mib, base=None):
    """{path: bytes} of a sharded F32 checkpoint (+ index, config, tokenizer), and its tensors."""
    rows = shard_mib * MiB // (4 * 1024) // 2  # two weight tensors per shard
    tensors, files, weight_map = {}, {}, {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        shard = {}
        for k in range(2):
            t = f"layers.{2 * s + k}.weight"
            noise = rng.standard_normal((rows, 1024), dtype=np.float32)
            shard[t] = (base[t] + noise * np.float32(1e-3)) if base is not None else noise * np.float32(0.02)
            weight_map[t] = name
        tensors.update(shard)
        files[name] = save(shard, metadata={"format": "pt"})
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}).encode()
    files["config.json"] = json.dumps({"model_type": "bench", "layers": 2 * shards}).encode()
    files["tokenizer.json"] = json.dumps({"model": {"vocab": {f"t{i}": i for i in range(20000)}}}).encode()
    files["tokenizer_config.json"] = b'{"model_max_length": 2048}'
    return files, tensors


class HubStaticHandler(http.server.SimpleHTTPRequestHandler):
    """python http.server over the same layout, adding X-Repo-Commit and X-Linked-Etag (nginx's add_header)."""
    commit = ""
    etags = {}
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def end_headers(self):
        self.send_header("X-Repo-Commit", self.commit)
        etag = self.etags.get(self.path.split("?", 1)[0])
        if etag:
            self.send_header("X-Linked-Etag", etag)
        super().end_headers()

    def guess_type(self, path):
        return "application/json" if "/api/" in str(path) else "application/octet-stream"

    def translate_path(self, path):
        return super().translate_path(path.split("?", 1)[0])


def static_server(work, www, commit, etags):
    """nginx if installed, else python's http.server; returns (url, label, stop()). `etags`: URL path ->
    quoted sha256, sent as X-Linked-Etag (huggingface_hub names its cache blobs by it; nginx's own ETag,
    mtime-size, is the same for equal-sized files written in the same second)."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    port = free_port()
    if nginx:
        nd = work / "nginx"
        nd.mkdir()
        (nd / "nginx.conf").write_text(NGINX_CONF.format(
            d=nd, port=port, www=www, commit=commit, user="user root;" if os.geteuid() == 0 else "",
            etags="\n".join(f"    {path} '{etag}';" for path, etag in etags.items())))
        proc = subprocess.Popen([nginx, "-c", str(nd / "nginx.conf"), "-e", str(nd / "error.log")],
                                stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                requests.get(url + "/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
        version = version.replace("nginx version: ", "") + " (static files)"
        return url, version, lambda: (proc.terminate(), proc.wait())
    HubStaticHandler.commit = commit
    HubStaticHandler.etags = etags
    handler = lambda *a, **k: HubStaticHandler(*a, directory=str(www), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}", "python http.server (nginx not installed)", httpd.shutdown


def timed_snapshot(endpoint, repo, commit, cache, files):
    from huggingface_hub import snapshot_download
    t0 = time.perf_counter()
    folder = snapshot_download(repo, revision=commit, endpoint=endpoint, cache_dir=cache)
    dt = time.perf_counter() - t0
    for path, data in files.items():
        got = sha((pathlib.Path(folder) / path).read_bytes())
        if got != sha(data):
            raise SystemExit(f"{endpoint}: {path} differs")
    return dt


def snapshot_figures(args, s, url, work):
    rng = np.random.default_rng(1)
    base_files, base_t = checkpoint(rng, args.shards, args.shard_mib)
    ft_files, _ = checkpoint(rng, args.shards, args.shard_mib, base=base_t)
    log("storing the base and the finetune ...")
    add_version(s, url, "bench-base", base_files, tags=["v1"])
    digest = add_version(s, url, "bench", ft_files, base={"model": "bench-base", "version": "v1"},
                         policy={"mode": "lossless"}, tags=["v1"])
    commit = digest[7:47]
    www = work / "www"
    tree = s.get(f"{url}/api/models/{NS}/bench/tree/{commit}", params={"recursive": "true"}).content
    (www / "api" / "models" / NS / "bench" / "tree").mkdir(parents=True)
    (www / "api" / "models" / NS / "bench" / "tree" / commit).write_bytes(tree)
    etags = {}
    for path, data in ft_files.items():
        p = www / NS / "bench" / "resolve" / commit / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        etags[f"/{NS}/bench/resolve/{commit}/{path}"] = f'"{sha(data)}"'
    static_url, label, stop = static_server(work, www, commit, etags)
    total = sum(len(b) for b in ft_files.values())
    times = {"deltastored": [], label: []}
    try:
        for rep in range(args.reps):
            order = [("deltastored", url), (label, static_url)]
            for name, endpoint in (order if rep % 2 == 0 else order[::-1]):
                cache = work / f"cache-{name[:5]}-{rep}"
                times[name].append(timed_snapshot(endpoint, f"{NS}/bench", commit, cache, ft_files))
                shutil.rmtree(cache)
    finally:
        stop()
    print(f"\nsnapshot_download of {NS}/bench@{commit[:12]} (a lossless finetune): {len(ft_files)} files, "
          f"{total / MiB:.1f} MiB, {args.reps} runs each, alternating, fresh cache each run")
    print("| server | median s | best s | median MiB/s |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} | {min(ts):.3f} | {total / MiB / med:.1f} |")


def per_tensor_figures(args, s, url):
    rng = np.random.default_rng(2)
    rows = args.large_tensor_mib * MiB // 4 // 1024
    base = {f"w{i:02d}": rng.standard_normal((rows, 1024), dtype=np.float32) for i in range(args.large_tensors)}
    ft = {k: v + rng.standard_normal(v.shape, dtype=np.float32) * np.float32(1e-3) for k, v in base.items()}
    log("storing the large file (base and lossless finetune) ...")
    bdig = add_version(s, url, "large-base", {"model.safetensors": save(base)}, tags=["v1"])
    fdig = add_version(s, url, "large", {"model.safetensors": save(ft)},
                       base={"model": "large-base", "version": "v1"}, policy={"mode": "lossless"}, tags=["v1"])
    print(f"\nper-tensor download of one {args.large_tensor_mib} MiB tensor of a "
          f"{args.large_tensors * args.large_tensor_mib} MiB file ({args.large_tensors} tensors)")
    print("| version | whole file: chunks / stored MiB a rebuild reads | ?tensors=w03: bytes sent | chunks read "
          "| stored bytes read | s |")
    print("|---|---|---|---|---|---|")

    def stored(manifest_file):
        chunks = [manifest_file["header"]] + [c for t in manifest_file["tensors"] for c in t["chunks"]]
        return len(chunks), sum(c[2] for c in chunks)

    bman = s.get(f"{url}/v1/models/large-base/versions/{bdig}").json()["manifest"]["files"][0]
    fman = s.get(f"{url}/v1/models/large/versions/{fdig}").json()["manifest"]["files"][0]
    for label, model, whole in (("base (standalone)", "large-base", stored(bman)),
                                ("finetune (lossless delta)", "large",
                                 tuple(a + b for a, b in zip(stored(fman), stored(bman))))):
        t0 = time.perf_counter()
        r = s.get(f"{url}/v1/models/{model}/versions/v1/files/model.safetensors", params={"tensors": "w03"})
        dt = time.perf_counter() - t0
        r.raise_for_status()
        n, b = int(r.headers["X-Deltastore-Chunks-Read"]), int(r.headers["X-Deltastore-Stored-Bytes-Read"])
        print(f"| {label} | {whole[0]} / {whole[1] / MiB:.1f} | {len(r.content):,} | {n} | {b:,} "
              f"({b / MiB:.2f} MiB) | {dt:.3f} |")


def main():
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.environ.get("DS_BUILD_DIR", ROOT / "build"))
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--shard-mib", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--large-tensors", type=int, default=16)
    ap.add_argument("--large-tensor-mib", type=int, default=8)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="hf_bench_"))
    work.chmod(0o755)  # nginx's workers read the files through it
    proc, url = start_server(pathlib.Path(args.build_dir), work / "data")
    s = requests.Session()
    try:
        import huggingface_hub
        print(f"huggingface_hub {huggingface_hub.__version__}, deltastored at {url}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        snapshot_figures(args, s, url, work)
        per_tensor_figures(args, s, url)
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    finally:
        s.close()
        proc.terminate()
        proc.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
