#!/usr/bin/env python3
"""Estimator study behind deltadq's low-rank + dropout hybrid (a benchmark: it prints, never asserts).

An idealised Python model of the estimators, without the container (sizes are raw bits: codes and
scales, no headers, no zstd), to compare their shapes on the self-trained pairs (bench/pairs), by the
share of the finetune's accuracy gain kept. Every 2-D weight of at least 4096 elements is replaced by
base + estimate of its delta at `ratio` (f32: 32 / ratio bits per weight):

  dropout   unbiased group k-of-64 dropout, survivors scaled by g/k, 2-bit per-row min/max codes
  lowrank   the top-r SVD triplets, factors A = U sqrt(S), B = sqrt(S) V^T with 4-bit symmetric codes
            (one scale per component), r the largest that fits: biased
  hybrid    lowrank r + dropout of (delta - L_r) in the rest of the budget, r chosen per tensor by the
            least weight error (unbiased: the error is the dropout's variance)
  hybrid+alloc  hybrid with each tensor's budget chosen among 0.25x..4x its share to minimise the sum of
            absolute squared errors within the model's budget (Lagrangian)

Usage: /opt/deltastore/venv/bin/python bench/lossy_estimators.py [--pairs tfm,mlp] [--ratios 32,64,128]
Takes a few minutes per pair on 2 cores. The registry's own results: bench/lossy_bench.py.
"""
import argparse
import os
import pathlib
import sys

import torch
from safetensors.torch import load_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "pairs"))
from evaluate import accuracy_state_dict  # noqa: E402

MULTIPLIERS = [0.25, 0.5, 0.71, 1.0, 1.41, 2.0, 4.0]


def q_sym(x, bits, dim):
    levels = 2 ** (bits - 1) - 1
    s = x.abs().amax(dim=dim, keepdim=True).clamp_min(1e-12) / levels
    return torch.round(x / s).clamp(-levels, levels) * s


def low_rank(d, r, bits=4):
    if r == 0:
        return torch.zeros_like(d)
    U, S, Vh = torch.linalg.svd(d, full_matrices=False)
    root = S[:r].sqrt()
    return q_sym(U[:, :r] * root, bits, 0) @ q_sym(Vh[:r, :] * root[:, None], bits, 1)


def low_rank_bits(m, n, r, bits=4):
    return r * ((m + n) * bits + 32)


def dropout(d, budget_bits, gen, g=64):
    m, n = d.shape
    k = min(g, max(1, int(budget_bits / (m * n) / 2 * g)))
    mask = torch.zeros(m, n, dtype=d.dtype)
    for c0 in range(0, n, g):
        width = min(g, n - c0)
        kk = max(1, round(k * width / g))
        pick = torch.rand(m, width, generator=gen).argsort(1)[:, :kk]
        mask[:, c0:c0 + width].scatter_(1, pick, 1.0)
    v = d * mask * (g / k)
    big = torch.full_like(v, float("inf"))
    lo = torch.where(mask > 0, v, big).amin(1, keepdim=True)
    hi = torch.where(mask > 0, v, -big).amax(1, keepdim=True)
    s = ((hi - lo) / 3).clamp_min(1e-12)
    return (torch.round((v - lo) / s).clamp(0, 3) * s + lo) * mask


def hybrid(d, budget_bits, gen):
    m, n = d.shape
    best = None
    for r in range(0, int(budget_bits // low_rank_bits(m, n, 1)) + 1):
        left = budget_bits - low_rank_bits(m, n, r)
        if r > 0 and left < m * n * 2 / 64:  # at least one kept element per group of 64
            break
        L = low_rank(d, r)
        e = L + dropout(d - L, left, gen)
        err = ((d - e).norm() / d.norm()).item()
        if best is None or err < best[0]:
            best = (err, e)
    return best


def allocate(curves, budget):
    """curves: name -> [(bits, err2, estimate)]; the Lagrangian choice within `budget` bits."""
    def choose(lam):
        pick = {k: min(c, key=lambda p: p[1] + lam * p[0]) for k, c in curves.items()}
        return pick, sum(p[0] for p in pick.values())
    lo, hi = 1e-30, 1e10
    for _ in range(100):
        mid = (lo * hi) ** 0.5
        if choose(mid)[1] > budget:
            lo = mid
        else:
            hi = mid
    return choose(hi)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default="tfm,mlp")
    ap.add_argument("--ratios", default="32,64,128")
    ap.add_argument("--pairs-dir", default=os.environ.get("DS_PAIRS_DIR", "/tmp/deltastore-pairs"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| pair | ratio | dropout | lowrank | hybrid | hybrid+alloc |")
    print("|---|---|---|---|---|---|")
    for pair in args.pairs.split(","):
        base = load_file(f"{args.pairs_dir}/{pair}.base.safetensors")
        ft = load_file(f"{args.pairs_dir}/{pair}.ft.safetensors")
        acc_base = accuracy_state_dict(pair, base, args.pairs_dir)
        acc_ft = accuracy_state_dict(pair, ft, args.pairs_dir)
        names = [k for k in base if base[k].dim() == 2 and base[k].numel() >= 4096]

        def gain(estimates):
            sd = {k: (base[k].double() + estimates[k]).float() if k in estimates else ft[k] for k in base}
            return 100 * (accuracy_state_dict(pair, sd, args.pairs_dir) - acc_base) / (acc_ft - acc_base)

        for ratio in [float(r) for r in args.ratios.split(",")]:
            gen = torch.Generator().manual_seed(1)
            est = {"dropout": {}, "lowrank": {}, "hybrid": {}}
            curves = {}
            for k in names:
                d = (ft[k] - base[k]).double()
                m, n = d.shape
                budget = m * n * 32 / ratio
                est["dropout"][k] = dropout(d, budget, gen)
                r = int(budget // low_rank_bits(m, n, 1))
                est["lowrank"][k] = low_rank(d, min(r, min(m, n)))
                curves[k] = []
                for mult in MULTIPLIERS:
                    if budget * mult > m * n * 16:  # at most 2x
                        continue
                    err, e = hybrid(d, budget * mult, gen)
                    curves[k].append((budget * mult, (err * d.norm().item()) ** 2, e))
                    if mult == 1.0:
                        est["hybrid"][k] = e
            total = sum(base[k].numel() * 32 / ratio for k in names)
            est["hybrid+alloc"] = {k: p[2] for k, p in allocate(curves, total).items()}
            cells = " | ".join(f"{gain(est[m]):.1f}%" for m in ("dropout", "lowrank", "hybrid", "hybrid+alloc"))
            print(f"| {pair} | {ratio:.0f}x | {cells} |", flush=True)


if __name__ == "__main__":
    main()
