#!/usr/bin/env python3
"""What an unbiased keep rule could gain on a pair's real deltas (a benchmark: it prints, never asserts).

Unbiased dropout keeps element i with probability p_i and scales it by 1/p_i; its expected squared error is
sum (1/p_i - 1) r_i^2 over the residual r (the delta less the base shift, lambda = <D, W> / <W, W>). This
prints, for each 2-D tensor (embeddings left out: they are lookups) and a mean keep fraction q, the relative
error sqrt(sum (1/p - 1) r^2 / sum r^2) of these rules, all at the same mean keep fraction (p capped at 1):
  uniform   p = q everywhere (the group mask's share; k of g is the same per element),
  row       p proportional to the row's norm of r (a keep count per row, stored: about a byte a row),
  col       p proportional to the column's norm of r (a keep count per column),
  row*col   p proportional to the product of both,
  |base|    p proportional to |W_base|^0.5 (free: the decoder holds the base),
  |r|       p proportional to |r| (the best any rule can do; the decoder cannot draw it without positions).
With --calibrated the errors are weighted by the pair's calibration statistics (per input column
diag(X^T X)), as output errors on real activations. Also, of the unweighted residual: the correlation of
|r| with |W_base| and the share of ||r||^2 in the top 8 / 32 singular directions. (|base| is huge where a
base holds weights near zero: minilm's head has one of 8e-34.)

Usage: /opt/deltastore/venv/bin/python bench/lossy_keep_variance.py [--pair minilm] [--keep 0.1]
           [--calibrated] [--per-tensor] [--pairs-dir /tmp/deltastore-pairs]
"""
import argparse
import os
import pathlib
import statistics

import torch
from safetensors.torch import load_file


def relative_error(r2, p):
    p = p.clamp(max=1.0)
    return (((1 / p - 1) * r2).sum() / r2.sum()).sqrt().item()


def at_mean(shape, q):
    """shape * m, capped at 1, with m such that the mean is q (bisection on log m, to 0.001%)."""
    shape = shape.float()
    lo, hi = q / shape.max().item(), 1.0 / max(shape.min().item(), 1e-30)
    while hi / lo > 1.00001:
        m = (lo * hi) ** 0.5
        lo, hi = (m, hi) if (shape * m).clamp(max=1).mean().item() < q else (lo, m)
    return (shape.double() * hi).clamp(max=1)


def tensor_row(w, d, col_weight, q):
    lam = (d * w).sum() / (w * w).sum()
    r = d - lam * w
    r2 = r * r * col_weight[None, :]
    rows, cols = r2.sum(1).sqrt()[:, None], r2.sum(0).sqrt()[None, :]
    shapes = {
        "uniform": torch.ones_like(r),
        "row": rows.expand_as(r),
        "col": cols.expand_as(r),
        "row*col": rows * cols,
        "|base|": w.abs().sqrt() + 1e-30,
        "|r|": r2.sqrt() + 1e-30,
    }
    out = {k: relative_error(r2, at_mean(s, q)) for k, s in shapes.items()}
    out["corr"] = torch.corrcoef(torch.stack([r.abs().flatten(), w.abs().flatten()]))[0, 1].item()
    s = torch.linalg.svdvals(r)
    e = (s * s).cumsum(0) / (s * s).sum()
    out["top8"], out["top32"] = e[min(7, len(e) - 1)].item(), e[min(31, len(e) - 1)].item()
    return out


def kind(name):
    for key, label in (("query", "query"), ("key", "key"), ("value", "value"), ("attention.output", "attn out"),
                       ("intermediate", "ffn in"), ("output.dense", "ffn out")):
        if key in name:
            return label
    return name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pair", default="minilm")
    ap.add_argument("--keep", type=float, default=0.1, help="mean keep fraction q")
    ap.add_argument("--calibrated", action="store_true", help="weight columns by the calibration statistics")
    ap.add_argument("--per-tensor", action="store_true")
    ap.add_argument("--pairs-dir", default=os.environ.get("DS_PAIRS_DIR", "/tmp/deltastore-pairs"))
    args = ap.parse_args()
    d = pathlib.Path(args.pairs_dir)
    base = load_file(str(d / f"{args.pair}.base.safetensors"))
    ft = load_file(str(d / f"{args.pair}.ft.safetensors"))
    calib = load_file(str(d / f"{args.pair}.calib.safetensors")) if args.calibrated else {}
    cols = ["uniform", "row", "col", "row*col", "|base|", "|r|", "corr", "top8", "top32"]
    print(f"{args.pair}, mean keep {args.keep}, errors {'calibration-weighted' if args.calibrated else 'unweighted'}")
    print()
    print("| tensors | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    by_kind = {}
    for name, t in ft.items():
        if t.dim() != 2 or "embed" in name or (args.calibrated and name not in calib):
            continue
        w, delta = base[name].double(), t.double() - base[name].double()
        weight = calib[name].double() if args.calibrated else torch.ones(w.shape[1], dtype=torch.float64)
        row = tensor_row(w, delta, weight, args.keep)
        by_kind.setdefault(kind(name), []).append(row)
        if args.per_tensor:
            print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
    for k, rows in by_kind.items():
        print(f"| {k} (median of {len(rows)}) | " +
              " | ".join(f"{statistics.median(r[c] for r in rows):.3f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
