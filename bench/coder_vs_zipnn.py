#!/usr/bin/env python3
"""The fast float coder (ours-fast) against ZipNN, one thread, in one run (a benchmark: prints, asserts nothing).

    /opt/deltastore/venv/bin/python bench/coder_vs_zipnn.py [--inputs faceres.f32,small-delta.f32] \
        [--exe before=/tmp/before/codec_peers] [--exe after=build/bench/codec_peers] [--reps 3]

The inputs are bench/peers.py's (the faceres fixture pairs, the generated bf16 pair of --size-gb, the
small-delta pairs), filtered by --inputs (labels starting with one of the names). Each --exe is a
codec_peers binary run with `--methods ours-fast` (e.g. the code before and after a change, in the same
run); ZipNN is bench/peers.py's run_zipnn (threads=1, every timed call on a fresh copy). Per row: ratio,
encode and decode MB/s (best of --reps per tensor / chunk, summed; with --rounds, the best of the rounds).
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import peers  # noqa: E402

MB = 1e6


def run_ours(label_exe, ins, reps):
    name, exe = label_exe.split("=", 1)
    rows = []
    for label, b, f in ins:
        jpath = pathlib.Path(tempfile.mktemp(suffix=".jsonl"))
        cmd = [exe, str(b), str(f), "--label", label, "--reps", str(reps), "--methods", "ours-fast",
               "--json", str(jpath)]
        peers.log("$ " + " ".join(cmd))
        subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
        if jpath.exists():
            for line in jpath.read_text().splitlines():
                r = json.loads(line)
                if r["method"] == "ours-fast":
                    r["method"] = f"ours-fast {name}"
                    rows.append(r)
            jpath.unlink()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", default="", help="comma-separated label prefixes (default: all)")
    ap.add_argument("--exe", action="append", default=[], help="NAME=path of a codec_peers binary")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size-gb", type=float, default=0.5)
    ap.add_argument("--largest-mib", type=int, default=256)
    ap.add_argument("--gen-dir", default="/tmp/genpair05")
    ap.add_argument("--skip-zipnn", action="store_true")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat every method this many times, in turn, and keep each row's best encode and decode")
    args = ap.parse_args()
    args.gen_reps = args.reps
    if not args.exe:
        args.exe = [f"now={HERE.parent / 'build' / 'bench' / 'codec_peers'}"]
    if not any(p.startswith("generated") for p in args.inputs.split(",")) and args.inputs:
        args.size_gb = 0
    ins = [i for i in peers.inputs(args) if not args.inputs or any(i[0].startswith(p) for p in args.inputs.split(","))]
    peers.log(f"# load average {os.getloadavg()}")
    rows = []
    for _ in range(args.rounds):
        for exe in args.exe:
            rows += run_ours(exe, ins, args.reps)
        if not args.skip_zipnn:
            peers.run_zipnn(args, ins, rows)
        peers.log(f"# load average {os.getloadavg()}")
    best = {}
    for r in rows:  # the best of the rounds (the machine is shared: the least disturbed run)
        k = (r["input"], r["case"], r["method"])
        if k in best:
            best[k]["enc_s"] = min(best[k]["enc_s"], r["enc_s"])
            best[k]["dec_s"] = min(best[k]["dec_s"], r["dec_s"])
        else:
            best[k] = dict(r)
    rows = list(best.values())
    methods = list(dict.fromkeys(r["method"] for r in rows))
    print("| input | case | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for label, _, _ in ins:
        for case in ("base", "delta"):
            cells = []
            for m in methods:
                r = next((r for r in rows if r["input"] == label and r["case"] == case and r["method"] == m), None)
                cells.append("-" if r is None else
                             f"{r['raw'] / r['stored']:.3f}x {r['raw'] / r['enc_s'] / MB:.0f}/{r['raw'] / r['dec_s'] / MB:.0f}")
            print(f"| {label} | {case} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
