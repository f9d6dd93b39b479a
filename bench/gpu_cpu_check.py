#!/usr/bin/env python3
"""The lossy job on the CPU and on cuda:0 through the real server (scripts/gpu_check.sh runs it).

For each device (cpu always, cuda when libtorch sees one; DS_COMPUTE_DEVICE=cpu forces the CPU) it starts
deltastored, registers the faceres f32 base (or --pair-dir's), stores the finetune as a lossy version
(deltadq, fixed seed) at each ratio, and prints the job time and weights per second. Then it checks, and
exits 1 when a check fails:
  - the file the server serves equals the offline CPU rebuild of the version's container
    (deltastore-tool rebuild), byte for byte, on every device;
  - the GPU version keeps the CPU version's masks (Philox): per lossy tensor the same estimator, group,
    keep and keep fraction in the versions' quality reports.
It also prints whether the versions are identical (the same codes too, one digest) and, when they are not,
how many rebuilt weights differ and by how much, beside both versions' errors.

Usage: /opt/deltastore/venv/bin/python bench/gpu_cpu_check.py [--ratios 16,128] [--pair-dir DIR]
(--pair-dir: DIR/base.safetensors and DIR/finetune.safetensors, as bench/gen_pair.py writes them, instead)
"""
import json
import argparse
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import BUILD, Server  # noqa: E402
from client_util import Client, sha256_file  # noqa: E402

FIXTURES = pathlib.Path(os.environ.get("DS_FIXTURES", ROOT.parent / "shared" / "fixtures"))
BASE = FIXTURES / "faceres.f32.safetensors"
FT = FIXTURES / "faceres-deep.f32.safetensors"


def count_weights(path):
    """The number of values in a safetensors file (its header's shapes)."""
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def run_device(device, ratios, work):
    os.environ["DS_COMPUTE_DEVICE"] = device
    server = Server(work / f"data-{device}").start()
    try:
        c = Client(server.url)
        try:
            c.register("base", BASE, tags=["v1"], timeout=900)  # a 0.9 GB LLM-shaped base on a slow CPU
        except AssertionError as e:
            raise SystemExit(f"{device}: registering the base failed: {e}") from None
        weights = count_weights(FT)
        rows = []
        for ratio in ratios:
            policy = {"mode": "lossy", "ratio": ratio, "method": "deltadq", "seed": 7}
            t0 = time.monotonic()
            up = c.upload_single(FT)
            job = c.create_version(f"ft{int(ratio)}", [("model.safetensors", up["id"])],
                                   base={"model": "base", "version": "v1"}, policy=policy)
            job, _ = c.wait_job(job["id"], timeout=900)  # a slow CPU is the finding, not a failure
            secs = time.monotonic() - t0
            if job["state"] != "succeeded":
                raise SystemExit(f"{device} {ratio}x: the job ended {job['state']}: {job.get('error')}")
            version = c.version(f"ft{int(ratio)}", job["version"])
            served = work / f"{device}-{ratio}.safetensors"
            c.download(f"/v1/models/ft{int(ratio)}/versions/{job['version']}/files/model.safetensors", served)
            container = work / f"{device}-{ratio}.dsc"
            c.download(f"/v1/models/ft{int(ratio)}/versions/{job['version']}/delta", container)
            out = work / f"rebuilt-{device}-{ratio}"
            subprocess.run([str(BUILD / "tools" / "deltastore-tool"), "rebuild", "--container", str(container),
                            "--base", str(BASE), "--out", str(out)], check=True, stdout=subprocess.DEVNULL,
                           env={**os.environ, "DS_COMPUTE_DEVICE": "cpu"})
            same = sha256_file(out / "model.safetensors") == sha256_file(served)
            print(f"{device} {ratio:.0f}x: job {secs:.2f} s, {weights / secs:.3e} weights/s, rebuild",
                  "the same" if same else "DIFFERS", flush=True)  # before the table, in case of a time limit
            rows.append({"ratio": ratio, "version": job["version"], "secs": secs, "weights": weights,
                         "rebuild_equal": same, "quality": version["quality"], "served": served})
        return rows
    finally:
        server.stop()


# With the policy's seed and the tensor's stream, these fix a tensor's Philox mask (docs/lossy_format.md).
MASK_KEYS = ("estimator", "group", "keep", "keep_fraction")
CHOICE_KEYS = ("bits", "rank", "scale")


def compare(cpu, gpu):
    """The GPU version against the CPU one at one ratio: the same masks (required), the same other choices,
    and how far the rebuilt weights are apart when the versions differ. True when the masks agree."""
    ct = {t["name"]: t for t in cpu["quality"]["tensors"]}
    gt = {t["name"]: t for t in gpu["quality"]["tensors"]}
    r = f"ratio {cpu['ratio']:.0f}:"
    if ct.keys() != gt.keys():
        print(r, "the devices made different tensors lossy")
        return False
    masks = [n for n in ct if any(ct[n][k] != gt[n][k] for k in MASK_KEYS)]
    choices = [n for n in ct if any(ct[n][k] != gt[n][k] for k in CHOICE_KEYS)]
    dlam = max(abs(ct[n]["lambda"] - gt[n]["lambda"]) for n in ct)
    print(r, f"masks DIFFER in {len(masks)}" if masks else "masks the same in all", f"of {len(ct)} lossy tensors;",
          f"bits/rank/scale differ in {len(choices)}; largest |lambda difference| {dlam:.3g}")
    for n in masks + [n for n in choices if n not in masks]:
        print("   ", n, {k: (ct[n][k], gt[n][k]) for k in MASK_KEYS + CHOICE_KEYS if ct[n][k] != gt[n][k]})
    q = cpu["quality"], gpu["quality"]
    print(r, f"weight error cpu {q[0]['weight_error']:.6f} cuda {q[1]['weight_error']:.6f}, output error",
          f"cpu {q[0]['output_error']:.6f} cuda {q[1]['output_error']:.6f}")
    if cpu["version"] == gpu["version"]:
        print(r, "GPU and CPU versions identical")
    else:
        from safetensors.torch import load_file  # torch, not numpy: bf16 pairs too
        a, b, base, ft = load_file(cpu["served"]), load_file(gpu["served"]), load_file(BASE), load_file(FT)
        n_diff = sum(int((a[k] != b[k]).sum()) for k in a)
        total = sum(a[k].numel() for k in a)
        worst = max((float((a[k].float() - b[k].float()).abs().max() / (ft[k].float() - base[k].float()).std())
                     for k in ct if (a[k] != b[k]).any()), default=0.0)
        print(r, f"GPU and CPU versions DIFFER: {n_diff} of {total} rebuilt weights differ, the largest by",
              f"{worst:.3g} x its tensor's delta rms")
    return not masks


def main():
    if os.environ.get("DS_BIN_LIBRARY_PATH"):  # gpu_check.sh's bundle: its libraries, for the server and tool
        os.environ["LD_LIBRARY_PATH"] = os.environ["DS_BIN_LIBRARY_PATH"]
    ap = argparse.ArgumentParser()
    ap.add_argument("--ratios", default="16,128")
    ap.add_argument("--pair-dir", type=pathlib.Path, default=None)
    ap.add_argument("--cuda-first", action="store_true", help="the GPU's versions first (a short lease)")
    args = ap.parse_args()
    if args.pair_dir:
        global BASE, FT
        BASE, FT = args.pair_dir / "base.safetensors", args.pair_dir / "finetune.safetensors"
    ratios = [float(r) for r in args.ratios.split(",")]
    import torch
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if args.cuda_first:
        devices.reverse()
    ok = True
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            try:
                results[device] = run_device(device, ratios, pathlib.Path(tmp))
            except SystemExit as e:  # a failed job on one device: say so, and still run and print the other
                log = pathlib.Path(tmp) / f"data-{device}.log"
                tail = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else []
                print(e, "\nthe server's log ends:", *tail, sep="\n", file=sys.stderr)
                ok = False
        print(f"{'device':6} {'ratio':>6} {'job s':>7} {'weights/s':>12} {'rebuild':>8}  version")
        for device, rows in results.items():
            for r in rows:
                print(f"{device:6} {r['ratio']:6.0f} {r['secs']:7.2f} {r['weights'] / r['secs']:12.3e} "
                      f"{'same' if r['rebuild_equal'] else 'DIFFERS':>8}  {r['version']}")
                ok &= r["rebuild_equal"]
        if "cuda" in results and "cpu" in results:
            for cpu, gpu in zip(results["cpu"], results["cuda"]):
                ok &= compare(cpu, gpu)
        if "cuda" not in devices:
            print("no CUDA device: the CPU part ran; the GPU comparison needs one")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
