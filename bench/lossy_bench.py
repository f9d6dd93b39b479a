#!/usr/bin/env python3
"""Lossy compression benchmark through the registry's real path (a benchmark: it prints, never asserts).

For each model pair it starts deltastored, registers the base, then for every ratio x method uploads the
finetune with that lossy policy, waits for the job, downloads the rebuilt checkpoint, and reports:
  - gain kept: (acc(rebuilt) - acc(base)) / (acc(finetune) - acc(base)) on the pair's held-out set
    (self-trained pairs only; bench/pairs/make_pairs.py makes them),
  - output error and weight error from the version's quality report (2-D weights stored lossily),
  - the achieved ratio: the lossy tensors' delta bytes in their own dtype / their stored chunk bytes,
    and "ratio_all": the whole version's tensor bytes / (all its chunks + its manifest).
Pairs: mlp and tfm (self-trained, bench/pairs), minilm (pretrained all-MiniLM-L6-v2 and a short finetune,
bench/pairs) and the faceres f32 fixture pair (errors only).
--embeddings true|false|both sets the policy's `embeddings` (lossy also for tensors named *embed*: in minilm
the 30522x384 word embedding matrix is half the weights); "seconds" is the job's wall time per cell.
--dense adds "gain kept, dense" for minilm: on its held-out paragraphs' windows at every word offset
(bench/pairs/evaluate.py task "ft-dense", 4,247 windows; one of the 552 is 2.9% of the gain), ~40 s a cell.
--seeds 1,2,3 runs every cell once per mask seed (the policy's `seed`; a "seed" column is added): the spread
of gain kept over seeds is the noise of the measure between estimates of the same quality.

Usage: /opt/deltastore/venv/bin/python bench/lossy_bench.py [--pairs mlp,tfm,faceres,minilm]
           [--ratios 8,16,32,64,128] [--embeddings false|true|both] [--methods deltadq,deltadq-nodbms,groupk4,random4,dare,bitdelta,topk8,lowbit]
           [--calibrated] [--dense] [--seeds 1,2,3] [--out bench/results/lossy.md]
"""
import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench" / "pairs"))

from conftest import Server  # noqa: E402
from client_util import Client  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures"


def pair_files(pair, pairs_dir):
    if pair == "faceres":
        return FIXTURES / "faceres.f32.safetensors", FIXTURES / "faceres-deep.f32.safetensors", None
    d = pathlib.Path(pairs_dir)
    calib = d / f"{pair}.calib.safetensors"
    return d / f"{pair}.base.safetensors", d / f"{pair}.ft.safetensors", calib if calib.exists() else None


def emit_spread(emit, over_seeds, dense):
    """Gain kept over the seeds of each cell: mean (least - most)."""
    emit("Over the seeds: mean (least - most)")
    emit()
    emit("| ratio | method | emb | seeds | gain kept |" + (" gain kept, dense |" if dense else ""))
    emit("|---|---|---|---|---|" + ("---|" if dense else ""))
    for cell, runs in over_seeds.items():
        cols = [[run[i] for run in runs] for i in range(len(runs[0]))]
        emit(f"{cell} {len(runs)} |" + "".join(f" {sum(c) / len(c):.1f}% ({min(c):.1f} - {max(c):.1f}) |" for c in cols))
    emit()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default="mlp,tfm,faceres")
    ap.add_argument("--ratios", default="8,16,32,64,128")
    ap.add_argument("--methods", default="deltadq,deltadq-nodbms,groupk4,random4,dare,bitdelta,topk8,lowbit")
    ap.add_argument("--pairs-dir", default=os.environ.get("DS_PAIRS_DIR", "/tmp/deltastore-pairs"))
    ap.add_argument("--calibrated", action="store_true", help="also run deltadq with the pair's calibration statistics")
    ap.add_argument("--embeddings", choices=("false", "true", "both"), default="false",
                    help="policy 'embeddings' (also lossy for *embed* tensors); both: a row for each")
    ap.add_argument("--dense", action="store_true",
                    help="minilm: also gain kept on the held-out windows at every word offset")
    ap.add_argument("--seeds", default=None, help="comma-separated mask seeds: each cell once per seed")
    ap.add_argument("--out", default=None, help="also write the tables (markdown) here")
    args = ap.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    methods = args.methods.split(",")
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [None]
    if args.calibrated:
        methods.append("deltadq+calib")

    embeddings = {"false": [False], "true": [True], "both": [False, True]}[args.embeddings]

    pairs = args.pairs.split(",")
    trained = [p for p in pairs if p != "faceres"]
    if trained:
        import make_pairs  # noqa: F401  (bench/pairs)
        os.system(f"{sys.executable} {ROOT / 'bench' / 'pairs' / 'make_pairs.py'} --out {args.pairs_dir} "
                  f"--pairs {','.join(trained)}")
        import torch
        torch.set_num_threads(1)  # bench/pairs/README.md: 1 thread is faster on this shared machine
        from evaluate import accuracy
    lines = []

    def emit(s=""):
        print(s, flush=True)
        lines.append(s)
        if args.out:  # rewritten as rows come: a long run that is stopped keeps its rows
            pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            pathlib.Path(args.out).write_text("\n".join(lines) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        server = Server(tmp / "data").start()
        try:
            c = Client(server.url)
            for pair in pairs:
                base, ft, calib = pair_files(pair, args.pairs_dir)
                c.register(f"{pair}-base", base, tags=["v1"])
                acc_base = acc_ft = None
                dense = args.dense and pair == "minilm"
                if pair != "faceres":
                    acc_base = accuracy(pair, str(base), args.pairs_dir)
                    acc_ft = accuracy(pair, str(ft), args.pairs_dir)
                if dense:
                    dense_base = accuracy(pair, str(base), args.pairs_dir, "ft-dense")
                    dense_ft = accuracy(pair, str(ft), args.pairs_dir, "ft-dense")
                calib_id = c.upload_single(calib)["id"] if (calib and args.calibrated) else None
                emit(f"## {pair}" + (f" (accuracy: base {acc_base:.4f}, finetune {acc_ft:.4f})" if acc_ft else ""))
                if dense:
                    emit(f"dense held-out windows: base {dense_base:.4f}, finetune {dense_ft:.4f}")
                emit()
                seed_col = " seed |" if args.seeds else ""
                over_seeds = {}  # "| ratio | method | emb |" -> [[gain kept, dense gain kept], ...]
                emit("| ratio | method | emb |" + seed_col + " achieved | ratio_all | gain kept |" + (" gain kept, dense |" if dense else "")
                     + " output err | weight err | seconds |")
                emit("|---|---|---|---|---|---|" + ("---|" if args.seeds else "") + ("---|" if dense else "")
                     + "---|---|---|")
                cells = ((r, m, e, sd) for r in ratios for m in methods for e in embeddings for sd in seeds)
                for ratio, m, emb, seed in cells:
                    cell = f"| {ratio:.0f}x | {m} | {'yes' if emb else 'no'} |" + (f" {seed} |" if args.seeds else "")
                    policy = {"mode": "lossy", "ratio": ratio, "method": m.split("-")[0].split("+")[0],
                              "dbms": "-nodbms" not in m and m.startswith("deltadq"), "embeddings": emb}
                    if seed is not None:
                        policy["seed"] = seed
                    if m == "deltadq+calib":
                        if not calib_id:
                            continue
                        # the calibration upload is consumed by a version: upload it again each time
                        policy["calibration"] = c.upload_single(calib)["id"]
                    up = c.upload_single(ft)
                    t0 = time.time()
                    model = (f"{pair}-{m.replace('+', '-')}-{int(ratio)}{'-emb' if emb else ''}"
                             + (f"-s{seed}" if seed is not None else ""))
                    r = c.post(f"/v1/models/{model}/versions",
                               json={"files": [{"path": "model.safetensors", "upload": up["id"]}],
                                     "base": {"model": f"{pair}-base", "version": "v1"}, "policy": policy})
                    if r.status_code != 202:
                        emit(f"{cell} error {r.status_code}: {r.json()['errors'][0]['message'][:60]} |||||")
                        continue
                    job, _ = c.wait_job(r.json()["job"]["id"], timeout=3600)
                    secs = time.time() - t0
                    if job["state"] != "succeeded":
                        emit(f"{cell} failed: {job.get('error', {}).get('message', '')[:60]} |||||")
                        continue
                    v = c.version(model, job["version"])
                    q = v["quality"]
                    gain = "-"
                    if acc_ft is not None:
                        out = tmp / "rebuilt.safetensors"
                        c.download(f"/v1/models/{model}/versions/{job['version']}/files/model.safetensors", out)
                        acc = accuracy(pair, str(out), args.pairs_dir)
                        kept = [100 * (acc - acc_base) / (acc_ft - acc_base)]
                        gain = f"{kept[0]:.1f}%"
                        if dense:
                            acc = accuracy(pair, str(out), args.pairs_dir, "ft-dense")
                            kept.append(100 * (acc - dense_base) / (dense_ft - dense_base))
                            gain += f" | {kept[1]:.1f}%"
                        over_seeds.setdefault(cell.rsplit("|", 2)[0] + "|", []).append(kept)
                    emit(f"{cell} {q['lossy_ratio']:.1f}x | {q['ratio']:.1f}x | {gain} | "
                         f"{q['output_error']:.3f} | {q['weight_error']:.3f} | {secs:.1f} |")
                    c.delete(f"/v1/models/{model}/versions/{job['version']}")
                emit()
                if args.seeds and over_seeds:
                    emit_spread(emit, over_seeds, dense)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
