#!/usr/bin/env python3
"""HTTP throughput benchmark for deltastored (a benchmark, not a test: it never asserts).

What it does
  1. Generates a synthetic bf16 safetensors checkpoint of about --size-gb GiB: a handful of large 2-D
     tensors (the largest --largest-mib MiB, default 256; then halves and quarters of it, repeated)
     plus a small bias per large tensor, values normal(0, 0.02) rounded to bf16 (round to nearest
     even). With --finetune (the default) it also writes a finetune: every large tensor is
     base + normal(0, --noise-std) rounded to bf16, the biases are unchanged (same_as_base).
     Both files are written piece by piece (header first, then each tensor), so this script stays
     in bounded memory (a few hundred MB) whatever the size.
  2. Starts <build-dir>/server/deltastored on 127.0.0.1 (a free port) with its data dir in the
     work dir.
  3. Measures, for the base and then the finetune:
       - `cat file > /dev/null` (the local read rate, a ceiling for the upload; the file was just
         written, so it is usually in the page cache),
       - upload: POST /v1/uploads, PATCH pieces of --piece-mib MiB (default 64) with Content-Range,
         PUT ?digest=… to seal,
       - version creation: POST /v1/models/{model}/versions and the job's time until it succeeds
         (the finetune's base is the base version),
       - download: GET /v1/models/{model}/versions/{digest}/files/model.safetensors streamed to
         /dev/null with its sha256 checked against the input's,
     and at the end the server's peak RSS (VmHWM in /proc/<pid>/status).
  4. Prints a table and checks (PASS/FAIL, printed only) that
       peak RSS <= 2 x largest tensor + 64 MiB.

Usage
  /opt/deltastore/venv/bin/python bench/http_throughput.py                 # 2 GiB, needs ~12 GB disk
  /opt/deltastore/venv/bin/python bench/http_throughput.py --size-gb 0.05  # a quick smoke run
  options: --build-dir DIR (default $DS_BUILD_DIR or ./build), --work-dir DIR (parent of the
  temporary directory, default $TMPDIR), --no-finetune, --keep (keep the work dir), --piece-mib N,
  --largest-mib N, --noise-std X, --seed N, --job-timeout S, --server-arg ARG (repeatable, passed to
  deltastored, e.g. --server-arg=--threads=4).

Disk: the inputs (1x or 2x size), the server's upload spool (same again) and its chunk store (about
the base's size plus the finetune's compressed delta). The exit status is 0 when every step worked
(whatever the PASS/FAIL of the memory check), 1 when a step failed, 2 on bad arguments.
"""
import argparse
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import requests

ROOT = pathlib.Path(__file__).resolve().parents[1]
MiB = 1 << 20
GEN_PIECE = 8 << 20  # elements generated at a time (32 MB of float32)
FILE = "model.safetensors"


class BenchError(Exception):
    pass


# --- checkpoint generation ---------------------------------------------------------------------------

def plan_tensors(total_bytes, largest_bytes):
    """[(name, shape)] of bf16 tensors adding up to about total_bytes."""
    cols = 4096 if largest_bytes >= 4096 * 2 * 64 else 256
    row = cols * 2
    largest = max(row, min(largest_bytes, total_bytes // 4) // row * row)
    pattern = [largest, largest // 2, largest // 4, largest // 4]
    tensors, used, i = [], 0, 0
    while used + row <= total_bytes:
        size = min(pattern[i % len(pattern)], (total_bytes - used) // row * row)
        size = max(row, size // row * row)
        tensors.append((f"layers.{i}.weight", [size // row, cols]))
        tensors.append((f"layers.{i}.bias", [cols]))
        used += size + row
        i += 1
    return tensors, largest


def to_bf16(f32):
    """float32 array -> uint16 bf16 bits, round to nearest even (finite inputs)."""
    u = f32.view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def from_bf16(bits):
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def header_bytes(tensors):
    doc = {"__metadata__": {"format": "pt", "source": "deltastore bench/http_throughput.py"}}
    off = 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * 2
        doc[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(doc, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h, off


def generate(base_path, ft_path, tensors, noise_std, seed):
    """Writes the base (and the finetune when ft_path) piece by piece; returns their sha256 hex."""
    head, data_bytes = header_bytes(tensors)
    outs = [(open(base_path, "wb"), hashlib.sha256())]
    if ft_path:
        outs.append((open(ft_path, "wb"), hashlib.sha256()))
    try:
        for f, h in outs:
            f.write(head)
            h.update(head)
        rng = np.random.default_rng(seed)
        noise_rng = np.random.default_rng(seed + 1)
        for name, shape in tensors:
            n = int(np.prod(shape))
            done = 0
            while done < n:
                k = min(GEN_PIECE, n - done)
                base = to_bf16(rng.standard_normal(k, dtype=np.float32) * np.float32(0.02))
                pieces = [base]
                if ft_path:
                    if name.endswith(".bias"):
                        pieces.append(base)  # unchanged by the finetune
                    else:
                        noise = noise_rng.standard_normal(k, dtype=np.float32) * np.float32(noise_std)
                        pieces.append(to_bf16(from_bf16(base) + noise))
                for (f, h), arr in zip(outs, pieces):
                    b = arr.astype("<u2", copy=False).tobytes()
                    f.write(b)
                    h.update(b)
                done += k
    finally:
        for f, _ in outs:
            f.close()
    return [h.hexdigest() for _, h in outs], len(head) + data_bytes


# --- the server --------------------------------------------------------------------------------------

class Server:
    def __init__(self, binary, data_dir, log_path, extra_args):
        self.binary, self.data_dir, self.log_path, self.extra = binary, data_dir, log_path, extra_args
        self.proc = None
        self.url = None

    def start(self):
        if not self.binary.exists():
            raise BenchError(f"{self.binary} not found (build first, or pass --build-dir)")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(self.binary), "--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0",
                                      *self.extra], stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline().decode()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            self.stop()
            raise BenchError(f"deltastored did not start: {line!r} (see {self.log_path})")
        self.url = f"http://127.0.0.1:{m.group(1)}"
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise BenchError("deltastored did not answer /healthz")

    def proc_status(self, field):
        """A /proc/<pid>/status memory field (VmHWM, VmRSS) in bytes, or None when unreadable."""
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def peak_rss(self):
        return self.proc_status("VmHWM")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- the client steps --------------------------------------------------------------------------------

def expect(r, status, what):
    if r.status_code != status:
        raise BenchError(f"{what}: HTTP {r.status_code} (expected {status}): {r.text[:300]}")
    return r


def upload(s, url, path, digest_hex, piece):
    r = expect(s.post(url + "/v1/uploads", timeout=60), 202, "POST /v1/uploads")
    uid = r.json()["id"]
    size = path.stat().st_size
    off = 0
    with open(path, "rb") as f:
        while off < size:
            b = f.read(piece)
            r = s.patch(f"{url}/v1/uploads/{uid}", data=b, timeout=600,
                        headers={"Content-Range": f"bytes {off}-{off + len(b) - 1}",
                                 "Content-Type": "application/octet-stream"})
            expect(r, 202, f"PATCH at {off}")
            off += len(b)
            if int(r.headers.get("Upload-Offset", -1)) != off:
                raise BenchError(f"Upload-Offset {r.headers.get('Upload-Offset')} after PATCH, expected {off}")
    r = expect(s.put(f"{url}/v1/uploads/{uid}", params={"digest": "sha256:" + digest_hex}, timeout=600),
               201, "PUT (seal)")
    if r.json().get("digest") != "sha256:" + digest_hex:
        raise BenchError(f"sealed digest {r.json().get('digest')} differs from the file's")
    return uid


def create_version(s, url, model, uid, base, timeout):
    doc = {"files": [{"path": FILE, "upload": uid}], "policy": {"mode": "lossless"}}
    if base:
        doc["base"] = base
    r = expect(s.post(f"{url}/v1/models/{model}/versions", json=doc, timeout=600), 202, "POST versions")
    job = r.json()["job"]
    deadline = time.monotonic() + timeout
    while job["state"] not in ("succeeded", "failed"):
        if time.monotonic() > deadline:
            raise BenchError(f"job {job['id']} not done after {timeout}s: {job}")
        time.sleep(0.2)
        job = expect(s.get(f"{url}/v1/jobs/{job['id']}", timeout=60), 200, "GET job").json()
    if job["state"] != "succeeded":
        raise BenchError(f"job failed: {job.get('error')}")
    v = expect(s.get(f"{url}/v1/models/{model}/versions/{job['version']}", timeout=60), 200, "GET version").json()
    return job["version"], v


def download(s, url, model, digest, expect_hex):
    h = hashlib.sha256()
    n = 0
    with s.get(f"{url}/v1/models/{model}/versions/{digest}/files/{FILE}", stream=True, timeout=600) as r:
        expect(r, 200, "GET file")
        for b in r.iter_content(MiB):
            h.update(b)
            n += len(b)
    if h.hexdigest() != expect_hex:
        raise BenchError(f"downloaded {model} has sha256 {h.hexdigest()}, expected {expect_hex}")
    return n


def timed(fn, *a):
    t0 = time.perf_counter()
    out = fn(*a)
    return out, time.perf_counter() - t0


def cat(path):
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)


# --- main --------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-gb", type=float, default=2.0, help="checkpoint size in GiB (default 2)")
    ap.add_argument("--build-dir", default=os.environ.get("DS_BUILD_DIR", str(ROOT / "build")))
    ap.add_argument("--work-dir", default=None, help="parent of the temporary work directory")
    ap.add_argument("--finetune", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--piece-mib", type=int, default=64, help="PATCH piece size in MiB (default 64)")
    ap.add_argument("--largest-mib", type=int, default=256, help="largest tensor in MiB (default 256)")
    ap.add_argument("--noise-std", type=float, default=2e-4, help="finetune noise (weights are N(0, 0.02))")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--job-timeout", type=float, default=3600)
    ap.add_argument("--server-arg", action="append", default=[], help="extra deltastored argument")
    a = ap.parse_args()
    if a.size_gb <= 0 or a.piece_mib <= 0 or a.largest_mib <= 0:
        ap.error("sizes must be positive")

    work = pathlib.Path(tempfile.mkdtemp(prefix="ds-bench-", dir=a.work_dir))
    idle_rss = None
    server = Server(pathlib.Path(a.build_dir) / "server" / "deltastored", work / "data", work / "deltastored.log",
                    a.server_arg)
    rows = []
    ok = True
    try:
        tensors, largest = plan_tensors(int(a.size_gb * (1 << 30)), a.largest_mib * MiB)
        base_path = work / "base.safetensors"
        ft_path = work / "finetune.safetensors" if a.finetune else None
        print(f"generating {len(tensors)} tensors ({largest / MiB:.1f} MiB largest) in {work} ...", flush=True)
        (hexes, size), gen_s = timed(generate, base_path, ft_path, tensors, a.noise_std, a.seed)
        rows.append(("generate inputs", size * (2 if ft_path else 1), gen_s))

        server.start()
        idle_rss = server.proc_status("VmRSS")
        s = requests.Session()
        inputs = [("bench-base", base_path, hexes[0], None)]
        if ft_path:
            inputs.append(("bench-ft", ft_path, hexes[1], {"model": "bench-base", "version": None}))
        stored = []
        for model, path, hx, base in inputs:
            print(f"{model}: cat, upload, create, download ...", flush=True)
            _, t = timed(cat, path)
            rows.append((f"cat {path.name} > /dev/null", size, t))
            uid, t = timed(upload, s, server.url, path, hx, a.piece_mib * MiB)
            rows.append((f"upload {model} ({a.piece_mib} MiB PATCHes + seal)", size, t))
            if base:
                base["version"] = stored[0][1]
            (digest, v), t = timed(create_version, s, server.url, model, uid, base, a.job_timeout)
            rows.append((f"create {model} (job{', delta' if base else ', standalone'})", size, t))
            stored.append((model, digest, v))
            n, t = timed(download, s, server.url, model, digest, hx)
            rows.append((f"download {model} (rebuild, sha256 ok)", n, t))
        rss = server.peak_rss()
    except (BenchError, requests.RequestException, OSError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        ok = False
        rss = server.peak_rss() if server.proc else None
        stored = locals().get("stored", [])
    finally:
        server.stop()

    print()
    print(f"{'step':<52} {'MB':>10} {'seconds':>9} {'MB/s':>9}")
    for name, n, t in rows:
        print(f"{name:<52} {n / 1e6:>10.1f} {t:>9.2f} {n / 1e6 / t if t > 0 else float('inf'):>9.1f}")
    for model, digest, v in stored:
        lb, sb = v.get("logical_bytes", 0), v.get("stored_bytes", 0)
        ratio = f"{lb / sb:.2f}x" if sb else "n/a"
        print(f"stored {model}: {sb / 1e6:.1f} MB of {lb / 1e6:.1f} MB ({ratio}); stats {v.get('stats')}")
    if rss is not None and "largest" in locals():
        limit = 2 * largest + 64 * MiB
        verdict = "PASS" if rss <= limit else "FAIL"
        print(f"peak RSS (VmHWM) {rss / MiB:.1f} MiB; limit 2 x largest tensor ({largest / MiB:.1f} MiB) + 64 MiB"
              f" = {limit / MiB:.1f} MiB: {verdict}")
        if idle_rss is not None:
            # The idle server (shared libraries, compute backend probe) is part of the peak; show it apart.
            growth = rss - idle_rss
            print(f"  (idle RSS right after start {idle_rss / MiB:.1f} MiB; growth under load {growth / MiB:.1f} MiB"
                  f" = {growth / largest:.2f} x largest tensor)")
    else:
        print("peak RSS: not available")
    if a.keep:
        print(f"work dir kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
