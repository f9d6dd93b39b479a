#!/usr/bin/env python3
"""A large pair through the registry (a benchmark: it prints, never asserts): time, peak RSS, progress.

Registers the base of a pair losslessly, then the finetune against it with the given policy, downloads
the finetune's rebuilt file (sha256 checked by the server on the way; lossless: also compared with the
upload here), and reports per step:
  - seconds and MB/s (of the file),
  - the server's peak RSS (VmHWM, reset before each step), beside the memory target of issues 13 and 17:
    2 x the largest tensor + 64 MiB (for lossy jobs that is "beyond the compute library's own footprint":
    the RSS of the server after libtorch has loaded is printed too),
  - for version creation, the longest time between two changes of the job's progress (phase,
    tensors_done, bytes_done) as seen by polling every 0.2 s,
  - the version's stored bytes and ratio, and for lossy policies the lossy tensors' ratio.

Usage
  /opt/deltastore/venv/bin/python bench/big_ingest.py [--pair-dir /tmp/deltastore-llm1b] [--llm-layers 4]
      [--policy '{"mode": "lossless"}'] [--build-dir build] [--out bench/results/big_ingest.md]
The pair is made by bench/gen_pair.py --llm-layers N when missing (1.07 B parameters at 4 layers: 2 x 2.1 GB).
"""
import argparse
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

import requests

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from gen_pair import generate  # noqa: E402
from http_throughput import Server  # noqa: E402
from peers import curl, curl_json, sha256_file, reset_peak, cpu_seconds  # noqa: E402

MiB = 1 << 20


def largest_tensor(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return max(t["data_offsets"][1] - t["data_offsets"][0] for t in h.values())


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def create(s, url, model, uid, base, policy, pid=None, phase_rss=None):
    """Creates a version and polls its job; returns (job, seconds, longest progress gap, samples). With a
    pid, phase_rss receives the largest RSS of that process seen in each phase of the job."""
    doc = {"files": [{"path": "model.safetensors", "upload": uid}], "policy": policy}
    if base:
        doc["base"] = base
    t0 = time.monotonic()
    r = s.post(f"{url}/v1/models/{model}/versions", json=doc, timeout=600)
    if r.status_code != 202:
        raise SystemExit(f"POST versions: {r.status_code} {r.text[:300]}")
    job = r.json()["job"]
    last, last_t, gap, samples = None, t0, 0.0, 0
    while job["state"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.2)  # a benchmark's poll interval, not a synchronisation
        job = s.get(f"{url}/v1/jobs/{job['id']}", timeout=60).json()
        now = time.monotonic()
        p = job.get("progress") or {}
        key = (p.get("phase"), p.get("tensors_done"), p.get("bytes_done"))
        if pid is not None and phase_rss is not None:
            ph = p.get("phase") or job["state"]
            phase_rss[ph] = max(phase_rss.get(ph, 0), rss(pid))
        if key != last:
            gap = max(gap, now - last_t)
            last, last_t = key, now
        samples += 1
    if job["state"] != "succeeded":
        raise SystemExit(f"job {job['id']} {job['state']}: {job.get('error')}")
    gap = max(gap, time.monotonic() - last_t)
    return job, time.monotonic() - t0, gap, samples


def load_compute_library(s, url, pid):
    """A lossy version of a 2-tensor model (64 x 64 f32), so that the server loads libtorch and its thread
    pools before the measured steps; returns the server's RSS after it."""
    import struct
    import random
    rng = random.Random(1)

    def st(scale):
        names = ["a", "b"]
        header, blobs, off = {}, [], 0
        for n in names:
            blob = struct.pack("<4096f", *[rng.gauss(0, scale) for _ in range(4096)])
            header[n] = {"dtype": "F32", "shape": [64, 64], "data_offsets": [off, off + len(blob)]}
            blobs.append(blob)
            off += len(blob)
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        return struct.pack("<Q", len(h)) + h + b"".join(blobs)

    ids = []
    for data in (st(1.0), st(1.0)):
        r = s.post(f"{url}/v1/uploads?digest=sha256:{hashlib.sha256(data).hexdigest()}", data=data,
                   headers={"Content-Type": "application/octet-stream"}, timeout=60)
        if r.status_code >= 300:
            raise SystemExit(f"POST uploads: {r.status_code} {r.text[:300]}")
        ids.append(r.json()["id"])
    job, _, _, _ = create(s, url, "tiny", ids[0], None, {"mode": "lossless"})
    create(s, url, "tiny", ids[1], {"model": "tiny", "version": job["version"]}, {"mode": "lossy", "ratio": 16})
    return rss(pid)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair-dir", default="/tmp/deltastore-llm1b")
    ap.add_argument("--llm-layers", type=int, default=4)
    ap.add_argument("--policy", default='{"mode": "lossless"}', help="the finetune's policy (JSON)")
    ap.add_argument("--build-dir", default=os.environ.get("DS_BUILD_DIR", str(ROOT / "build")))
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--server-arg", action="append", default=[])
    ap.add_argument("--out", default=None, help="append the table to this markdown file")
    ap.add_argument("--save-version", default=None,
                    help="write the finetune version's record (digest, stored bytes, quality report) as JSON here")
    a = ap.parse_args()
    policy = json.loads(a.policy)
    bpath, fpath, _ = generate(a.pair_dir, 0, 0, 1, llm_layers=a.llm_layers)
    size = fpath.stat().st_size
    target = 2 * largest_tensor(fpath) + 64 * MiB
    if a.work_dir:
        pathlib.Path(a.work_dir).mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="ds-big-", dir=a.work_dir))
    srv = Server(pathlib.Path(a.build_dir) / "server" / "deltastored", work / "data", work / "server.log",
                 a.server_arg)
    srv.start()
    rows = []

    def row(step, seconds=None, rss=None, note=""):
        mbps = f"{size / seconds / 1e6:.1f}" if seconds else ""
        rows.append((step, f"{seconds:.1f}" if seconds else "", mbps,
                     f"{rss / MiB:.0f}" if rss else "", note))
        print(f"{step:40s} {rows[-1][1]:>8s} s {mbps:>8s} MB/s  peak RSS {rows[-1][3]:>6s} MiB  {note}", flush=True)

    try:
        s = requests.Session()
        pid = srv.proc.pid
        versions = {}
        torch_rss = None
        if policy.get("mode") == "lossy":
            torch_rss = load_compute_library(s, srv.url, pid)
            row("tiny lossy version (loads libtorch)", None, torch_rss,
                f"server RSS after it: {torch_rss / MiB:.0f} MiB, the compute library's footprint here")
        for name, path, pol in (("base", bpath, {"mode": "lossless"}), ("finetune", fpath, policy)):
            sha = sha256_file(path)
            reset_peak(pid)
            doc, t = curl_json("-X", "POST", "-H", "Content-Type: application/octet-stream", "-T", str(path),
                               f"{srv.url}/v1/uploads?digest=sha256:{sha}")
            row(f"upload {name}", t, srv.peak_rss())
            reset_peak(pid)
            c0 = cpu_seconds(pid)
            base = {"model": "big", "version": versions["base"]} if name == "finetune" else None
            phase_rss = {}
            rss_before = rss(pid)
            job, t, gap, _ = create(s, srv.url, "big", doc["id"], base, pol, pid, phase_rss)
            versions[name] = job["version"]
            v = s.get(f"{srv.url}/v1/models/big/versions/{job['version']}", timeout=60).json()
            stored = v.get("stored_bytes")
            note = (f"policy {json.dumps(pol)}; stored {stored} B ({size / stored:.2f}x of the file); longest "
                    f"progress gap {gap:.1f} s; server CPU {cpu_seconds(pid) - c0:.0f} s")
            q = v.get("quality")
            if q:
                note += f"; lossy tensors {q.get('tensors_lossy')}, {q.get('lossy_ratio', 0):.1f}x on them"
            peak = srv.peak_rss()
            if torch_rss and name == "finetune":
                note += f"; peak beyond the compute library's footprint {(peak - torch_rss) / MiB:.0f} MiB"
            note += f"; server RSS when the job began {rss_before / MiB:.0f} MiB"
            note += "; largest RSS sampled per phase: " + ", ".join(
                f"{k} {v / MiB:.0f} MiB" for k, v in phase_rss.items())
            row(f"create {name} version", t, peak, note)
            if name == "finetune" and a.save_version:
                pathlib.Path(a.save_version).write_text(json.dumps(v, indent=1, sort_keys=True))
        reset_peak(pid)
        u = f"{srv.url}/v1/models/big/versions/{versions['finetune']}/files/model.safetensors"
        t, n, _, _ = curl(u)
        if n != size and policy.get("mode") == "lossless":
            raise SystemExit(f"download: {n} bytes, expected {size}")
        row("download finetune", t, srv.peak_rss(), "server checks the rebuilt file's sha256")
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)  # gigabytes of store and uploads
    print(f"memory target: 2 x largest tensor + 64 MiB = {target / MiB:.0f} MiB")
    if a.out:
        with open(a.out, "a") as f:
            f.write(f"\n**{fpath.name} of {a.pair_dir} ({size / 1e9:.2f} GB), policy {json.dumps(policy)}**"
                    f" ({time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}; memory target "
                    f"{target / MiB:.0f} MiB)\n\n| step | s | MB/s | peak RSS MiB | note |\n|---|---|---|---|---|\n")
            for r in rows:
                f.write("| " + " | ".join(r) + " |\n")


if __name__ == "__main__":
    main()
