#!/usr/bin/env python3
"""Scale-out benchmark (issue 14; a benchmark, not a test: it never asserts). One run, the same files,
three configurations side by side:
  embedded   one deltastored on the embedded RocksDB
  s3+pg x1   one deltastored on PostgreSQL (metadata) + SeaweedFS S3 (chunks)
  s3+pg x2   two deltastored nodes on the same PostgreSQL + S3 and one shared spool dir
PostgreSQL and SeaweedFS are the test servers (tests/tools/{pg,s3}_server.sh) on this machine.

For each: lossless version creation of a generated bf16 pair (bench/gen_pair.py: base, then the
finetune as a delta) measured from the first upload byte to the job's success, per file; download of
the finetune (rebuilt, sha256 checked); with two nodes the two clients work at once, one per node, each
on its own copy of the models, and the figure is the aggregate. Then version-metadata reads
(GET /v1/models/m/versions/v1) per second from 8 client threads, spread over the nodes.

  /opt/deltastore/venv/bin/python bench/scaleout.py --size-gb 0.25
"""
import argparse
import hashlib
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time

import requests

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))
import gen_pair  # noqa: E402
import stores  # noqa: E402
from client_util import Client, digest_of  # noqa: E402
from conftest import Server  # noqa: E402


def create(c, model, path, base=None):
    t = time.monotonic()
    up = c.upload_chunked(path, piece=64 << 20)
    job = c.create_version(model, [("model.safetensors", up["id"])], base=base, tags=["v1"])
    job, _ = c.wait_job(job["id"], timeout=3600)
    assert job["state"] == "succeeded", job
    return time.monotonic() - t


def download(c, model, sha):
    t = time.monotonic()
    h = hashlib.sha256()
    with c.s.get(c.url(f"/v1/models/{model}/versions/v1/files/model.safetensors"), stream=True, timeout=600) as r:
        for b in r.iter_content(1 << 20):
            h.update(b)
    assert h.hexdigest() == sha
    return time.monotonic() - t


def run_config(name, nodes, base, ft, ft_sha):
    clients = [Client(n.url) for n in nodes]
    size_b, size_f = base.stat().st_size, ft.stat().st_size
    times = {}

    def work(i, c):
        times[i] = (create(c, f"base{i}", base),
                    create(c, f"ft{i}", ft, base={"model": f"base{i}", "version": "v1"}),
                    download(c, f"ft{i}", ft_sha))

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    n = len(clients)
    base_mbs = n * size_b / max(times[i][0] for i in times) / 1e6
    ft_mbs = n * size_f / max(times[i][1] for i in times) / 1e6
    dl_mbs = n * size_f / max(times[i][2] for i in times) / 1e6
    # Metadata reads: 8 threads, round robin over the nodes.
    count, stop = [0], time.monotonic() + 5

    def reader(k):
        s = requests.Session()
        url = nodes[k % len(nodes)].url + "/v1/models/base0/versions/v1"
        while time.monotonic() < stop:
            assert s.get(url, timeout=30).status_code == 200
            count[0] += 1

    rs = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    for t in rs:
        t.start()
    for t in rs:
        t.join()
    print(f"| {name} | {base_mbs:.1f} | {ft_mbs:.1f} | {dl_mbs:.1f} | {count[0] / 5:.0f} | {wall:.1f} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=0.25)
    ap.add_argument("--largest-mib", type=int, default=64)
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="deltastore_scaleout_"))
    try:
        run_all(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_all(work, args):
    base, ft, _ = gen_pair.generate(work / "pair", args.size_gb, args.largest_mib, 1)
    ft_sha = digest_of(ft).split(":")[1]
    print(f"pair: {base.stat().st_size / 1e6:.0f} MB base, {ft.stat().st_size / 1e6:.0f} MB finetune; "
          f"{os.cpu_count()} cores")
    print("| configuration | create base MB/s | create finetune MB/s | download finetune MB/s | "
          "metadata reads/s | wall s |")
    print("|---|---|---|---|---|---|")
    ext = stores.external()
    configs = [("embedded", None, 1), ("s3+pg x1", "one", 1), ("s3+pg x2", "two", 2)]
    for name, key, count in configs:
        data = work / f"data-{name.replace(' ', '').replace('+', '')}"
        store_args = ext.args_for(data) if key else []
        nodes = [Server(data, ["--node-id", f"n{i}"], store_args=store_args).start() for i in range(count)]
        try:
            run_config(name, nodes, base, ft, ft_sha)
        finally:
            for n in nodes:
                n.stop()
    ext.stop()


if __name__ == "__main__":
    main()
