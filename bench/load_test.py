#!/usr/bin/env python3
"""Load test for deltastored (a benchmark: it prints figures; its exit status says whether every
request worked, which tests/e2e/test_load.py checks on a tiny configuration).

What it does
  1. Starts <build-dir>/server/deltastored on 127.0.0.1 (a free port, a fresh data dir), unless
     --url is given, and registers the base `faceres.bf16` as model "base"@v1.
  2. Runs --clients threads in parallel, each for --rounds rounds (or until --time-limit seconds have
     passed since the start; a round is never cut short). One round of client i:
       - uploads one fixture (by turns: faceres-deep.bf16, blazeface.f32, blazeface-back.f32),
         in 1 MiB PATCHes with Content-Range, then PUT ?digest= to seal;
       - creates a version of model "load-<i>" from it (faceres-deep with base "base"@v1, a lossless
         delta; the others standalone), tagged "r<round>", and polls its job until it ends;
       - downloads --downloads-per-round stored files, picked at random among every version
         registered so far by any client, and checks the sha256 of every download against the
         sha256 of the fixture it came from (lossless: byte-exact).
  3. Prints requests/s, MB/s up and down, the count of versions and verified downloads, errors (any
     unexpected status, failed job or digest mismatch; each is listed), and the server's peak RSS
     (VmHWM of /proc/<pid>/status).

Usage
  /opt/deltastore/venv/bin/python bench/load_test.py                       # 8 clients x 4 rounds
  /opt/deltastore/venv/bin/python bench/load_test.py --clients 2 --rounds 1 --fixture-set small
  options: --build-dir DIR (default $DS_BUILD_DIR or ./build), --fixtures DIR (default
  ../shared/fixtures), --fixture-set all|small (small: the two blazeface files only, no base),
  --time-limit S (default 600), --downloads-per-round N (default 2), --server-arg ARG (repeatable),
  --url URL --pid PID (use a running server), --json (one JSON line instead of the table).
Exit status: 0 when there were no errors, 1 otherwise, 2 on bad arguments or missing fixtures.
"""
import argparse
import hashlib
import json
import os
import pathlib
import random
import re
import subprocess
import sys
import tempfile
import threading
import time

import requests

ROOT = pathlib.Path(__file__).resolve().parents[1]
MiB = 1 << 20
FILE = "model.safetensors"
PIECE = 1 * MiB
TIMEOUT = 120


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(MiB), b""):
            h.update(b)
    return h.hexdigest()


def peak_rss_kib(pid):
    try:
        text = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.versions = 0
        self.downloads_verified = 0
        self.errors = []

    def add(self, requests=0, up=0, down=0, versions=0, verified=0):
        with self.lock:
            self.requests += requests
            self.bytes_up += up
            self.bytes_down += down
            self.versions += versions
            self.downloads_verified += verified

    def error(self, what):
        with self.lock:
            self.errors.append(what)


class LoadClient:
    """One client: its own HTTP session; every request is counted and every surprise is an error."""

    def __init__(self, url, stats):
        self.url = url.rstrip("/")
        self.s = requests.Session()
        self.stats = stats

    def request(self, method, path, expect, **kw):
        kw.setdefault("timeout", TIMEOUT)
        r = self.s.request(method, self.url + path, **kw)
        self.stats.add(requests=1, up=len(kw.get("data") or b""))
        if r.status_code not in expect:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r

    def upload(self, path):
        data = pathlib.Path(path).read_bytes()
        uid = self.request("POST", "/v1/uploads", (202,)).json()["id"]
        for off in range(0, len(data), PIECE):
            piece = data[off:off + PIECE]
            self.request("PATCH", f"/v1/uploads/{uid}", (202,), data=piece,
                         headers={"Content-Range": f"{off}-{off + len(piece) - 1}",
                                  "Content-Type": "application/octet-stream"})
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        body = self.request("PUT", f"/v1/uploads/{uid}", (201,), params={"digest": digest}).json()
        if body["digest"] != digest or body["size"] != len(data):
            raise RuntimeError(f"sealed upload disagrees: {body}")
        return uid

    def create_version(self, model, uid, base=None, tags=()):
        doc = {"files": [{"path": FILE, "upload": uid}], "tags": list(tags)}
        if base:
            doc["base"] = base
        job = self.request("POST", f"/v1/models/{model}/versions", (202,), json=doc).json()["job"]
        deadline = time.monotonic() + TIMEOUT
        while job["state"] in ("queued", "running"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job['id']} still {job['state']} after {TIMEOUT}s")
            time.sleep(0.05)
            job = self.request("GET", f"/v1/jobs/{job['id']}", (200,)).json()
        if job["state"] != "succeeded":
            raise RuntimeError(f"job {job['id']} {job['state']}: {job.get('error')}")
        self.stats.add(versions=1)
        return job["version"]

    def download_and_verify(self, model, ref, want_hex):
        h = hashlib.sha256()
        n = 0
        with self.s.get(f"{self.url}/v1/models/{model}/versions/{ref}/files/{FILE}", stream=True,
                        timeout=TIMEOUT) as r:
            self.stats.add(requests=1)
            if r.status_code != 200:
                raise RuntimeError(f"download {model}@{ref}: {r.status_code} {r.text[:300]}")
            for b in r.iter_content(MiB):
                h.update(b)
                n += len(b)
        self.stats.add(down=n)
        if h.hexdigest() != want_hex:
            raise RuntimeError(f"download {model}@{ref}: sha256 {h.hexdigest()} != {want_hex}")
        self.stats.add(verified=1)


def run(url, pid, fixtures, clients=8, rounds=4, downloads_per_round=2, time_limit=600.0,
        fixture_set="all", seed=0):
    """Runs the load against a server at `url` (process `pid`, for its peak RSS); returns a dict of
    figures with "errors" (a list of messages) and "downloads_verified"."""
    fixtures = pathlib.Path(fixtures)
    names = ["blazeface.f32.safetensors", "blazeface-back.f32.safetensors"]
    if fixture_set == "all":
        names = ["faceres-deep.bf16.safetensors"] + names
    sources = {n: fixtures / n for n in names + (["faceres.bf16.safetensors"] if fixture_set == "all" else [])}
    shas = {n: sha256_file(p) for n, p in sources.items()}
    stats = Stats()
    registered = []  # (model, digest, fixture name) of every version so far
    reg_lock = threading.Lock()
    start = time.monotonic()

    setup = LoadClient(url, stats)
    base = None
    if fixture_set == "all":
        digest = setup.create_version("base", setup.upload(sources["faceres.bf16.safetensors"]), tags=["v1"])
        registered.append(("base", digest, "faceres.bf16.safetensors"))
        base = {"model": "base", "version": "v1"}

    def client_main(i):
        c = LoadClient(url, stats)
        rng = random.Random(seed * 1000 + i)
        for r in range(rounds):
            if time.monotonic() - start > time_limit:
                return
            name = names[(i + r) % len(names)]
            try:
                uid = c.upload(sources[name])
                model = f"load-{i}"
                digest = c.create_version(model, uid, base=base if name.startswith("faceres") else None,
                                          tags=[f"r{r}"])
                with reg_lock:
                    registered.append((model, digest, name))
                    picks = [rng.choice(registered) for _ in range(downloads_per_round)]
                for m, d, n in picks:
                    c.download_and_verify(m, d, shas[n])
            except Exception as e:  # every failure is counted and reported, none stops the others
                stats.error(f"client {i} round {r}: {e}")

    threads = [threading.Thread(target=client_main, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    return {
        "clients": clients, "rounds": rounds, "fixture_set": fixture_set, "seconds": round(elapsed, 2),
        "requests": stats.requests, "requests_per_s": round(stats.requests / elapsed, 1),
        "mb_up": round(stats.bytes_up / 1e6, 1), "mb_down": round(stats.bytes_down / 1e6, 1),
        "mb_per_s_up": round(stats.bytes_up / 1e6 / elapsed, 1),
        "mb_per_s_down": round(stats.bytes_down / 1e6 / elapsed, 1),
        "versions_created": stats.versions, "downloads_verified": stats.downloads_verified,
        "errors": stats.errors, "server_peak_rss_mib": (round(peak_rss_kib(pid) / 1024, 1)
                                                         if pid and peak_rss_kib(pid) else None),
    }


def start_server(build_dir, data_dir, extra_args):
    log = open(pathlib.Path(data_dir).parent / "server.log", "ab")
    proc = subprocess.Popen([str(pathlib.Path(build_dir) / "server" / "deltastored"), "--data-dir", str(data_dir),
                             "--listen", "127.0.0.1:0", *extra_args], stdout=subprocess.PIPE, stderr=log)
    line = proc.stdout.readline().decode()
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"deltastored did not start: {line!r}")
    url = f"http://127.0.0.1:{m.group(1)}"
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if requests.get(url + "/healthz", timeout=1).ok:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("deltastored did not answer /healthz")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.environ.get("DS_BUILD_DIR", str(ROOT / "build")))
    ap.add_argument("--fixtures", default=str(ROOT.parent / "shared" / "fixtures"))
    ap.add_argument("--fixture-set", choices=("all", "small"), default="all")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--downloads-per-round", type=int, default=2)
    ap.add_argument("--time-limit", type=float, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--server-arg", action="append", default=[])
    ap.add_argument("--url")
    ap.add_argument("--pid", type=int)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.clients < 1 or args.rounds < 1:
        ap.error("--clients and --rounds must be >= 1")
    if not (pathlib.Path(args.fixtures) / "blazeface.f32.safetensors").exists():
        print(f"fixtures missing at {args.fixtures}", file=sys.stderr)
        return 2

    proc = None
    with tempfile.TemporaryDirectory(prefix="ds_load_") as work:
        url, pid = args.url, args.pid
        if not url:
            proc, url = start_server(args.build_dir, pathlib.Path(work) / "data", args.server_arg)
            pid = proc.pid
        try:
            res = run(url, pid, args.fixtures, args.clients, args.rounds, args.downloads_per_round,
                      args.time_limit, args.fixture_set, args.seed)
        finally:
            if proc:
                proc.terminate()
                proc.wait(timeout=30)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"deltastored load test: {res['clients']} clients x {res['rounds']} rounds, "
              f"fixtures {res['fixture_set']}, loopback")
        for k in ("seconds", "requests", "requests_per_s", "mb_up", "mb_per_s_up", "mb_down", "mb_per_s_down",
                  "versions_created", "downloads_verified", "server_peak_rss_mib"):
            print(f"  {k:22s} {res[k]}")
        print(f"  {'errors':22s} {len(res['errors'])}")
        for e in res["errors"]:
            print(f"    {e}")
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
