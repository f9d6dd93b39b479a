#!/usr/bin/env python3
"""Generates a large bf16 base/finetune safetensors pair with the statistics of the real fixture pair.

Why not normal noise: a delta coder's ratio depends on the joint distribution of (base value, delta) -
how big the delta is next to the base value's exponent, how heavy its tails are, how it varies along a
row - and a weight codec's ratio on the base depends on the weights' distribution (the real tensors
have kurtosis 3-20, not 3). Measured on ../shared/fixtures/faceres{,-deep}.f32 (tensors with at least
16384 values): rms(delta)/rms(base) 0.07-0.23 per tensor, delta kurtosis 4-12, corr(|base|, |delta|)
0.2-0.8. Normal base + independent normal noise has none of that.

How: a block bootstrap of the real pair. Each large tensor takes one real tensor as its profile
(cycling over the real tensors with >= 16384 values). It is filled with blocks of 256 (base, delta)
values copied from 256 consecutive values of the profile's f32 base and f32 delta at a random offset,
in a random order within the block; every block is multiplied by its own random factor in
[0.8, 1.25] and a random sign. The shuffle matters: copied in order, the exponent bytes of the
smaller profiles (16384 values) repeat as long runs that zstd finds (first version: byte planes +
zstd 1.75x on the base, above its order-0 entropy of 1.53x; a real model has no such repeats). The base
file holds bf16(base), the finetune bf16(base + delta), both rounded to nearest even, as the real
bf16 fixtures were made from the f32 ones. So per-tensor delta size and spread, the delta's relation
to the base value and the local magnitude (within 256 values) are the real pair's; what is not kept
is the order within 256 values and structure longer than that.

Layout: tensors named layers.{i}.weight with 4096 columns (largest --largest-mib MiB, then halves
and quarters of it) plus a 4096-value layers.{i}.bias each, as bench/http_throughput.py plans them;
or, with --llm-layers N, the tensor names and shapes of a Llama-style model (llm_tensors below).

Usage
  /opt/deltastore/venv/bin/python bench/gen_pair.py OUT_DIR [--size-gb 1] [--largest-mib 256] [--seed 1]
  /opt/deltastore/venv/bin/python bench/gen_pair.py OUT_DIR --llm-layers 4   # 1.07 B parameters
writes OUT_DIR/base.safetensors and OUT_DIR/finetune.safetensors (skips when both exist with the
same parameters, recorded in OUT_DIR/params.json) and prints their sha256.
"""
import argparse
import hashlib
import json
import os
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from http_throughput import plan_tensors, to_bf16, header_bytes  # noqa: E402

FIXTURES = HERE.parent.parent / "shared" / "fixtures"
BLOCK = 256
PIECE_BLOCKS = 16384  # 4M values per generated piece


def load_profiles(fixtures):
    from safetensors.numpy import load_file

    base = load_file(str(fixtures / "faceres.f32.safetensors"))
    ft = load_file(str(fixtures / "faceres-deep.f32.safetensors"))
    profiles = []
    for name in sorted(base):
        b, f = base[name], ft.get(name)
        if b.dtype != np.float32 or f is None or f.shape != b.shape or b.size < 16384:
            continue
        profiles.append((name, b.ravel().copy(), (f.ravel() - b.ravel()).astype(np.float32)))
    if not profiles:
        raise SystemExit(f"no float tensors with >= 16384 values in {fixtures}")
    return profiles


def llm_tensors(layers, hidden=4096, ffn=11008, vocab=32000):
    """[(name, shape)] of a Llama-style decoder: embedding, per layer q/k/v/o (hidden x hidden), the gated
    MLP (ffn x hidden twice, hidden x ffn), two RMSNorm vectors, then the final norm and the LM head.
    4 layers at the defaults are 1.07 B parameters (2.1 GB in bf16); the largest tensor is the 32000 x 4096
    embedding (262 MB)."""
    t = [("model.embed_tokens.weight", [vocab, hidden])]
    for i in range(layers):
        p = f"model.layers.{i}."
        t += [(p + "input_layernorm.weight", [hidden])]
        t += [(p + f"self_attn.{m}_proj.weight", [hidden, hidden]) for m in "qkvo"]
        t += [(p + "post_attention_layernorm.weight", [hidden])]
        t += [(p + "mlp.gate_proj.weight", [ffn, hidden]), (p + "mlp.up_proj.weight", [ffn, hidden]),
              (p + "mlp.down_proj.weight", [hidden, ffn])]
    t += [("model.norm.weight", [hidden]), ("lm_head.weight", [vocab, hidden])]
    return t


def generate(out_dir, size_gb, largest_mib, seed, fixtures=FIXTURES, llm_layers=0):
    """llm_layers > 0: the tensors of llm_tensors(llm_layers) instead of size_gb / largest_mib."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"size_gb": size_gb, "largest_mib": largest_mib, "seed": seed, "version": 2}
    if llm_layers:
        params = {"llm_layers": llm_layers, "seed": seed, "version": 2}
    base_path, ft_path = out_dir / "base.safetensors", out_dir / "finetune.safetensors"
    pfile = out_dir / "params.json"
    if base_path.exists() and ft_path.exists() and pfile.exists():
        old = json.loads(pfile.read_text())
        if old.get("params") == params:
            return base_path, ft_path, old["sha256"]
    if llm_layers:
        tensors = llm_tensors(llm_layers)
    else:
        tensors, _ = plan_tensors(int(size_gb * (1 << 30)), largest_mib << 20)
    profiles = load_profiles(pathlib.Path(fixtures))
    head, _ = header_bytes(tensors)
    rng = np.random.default_rng(seed)
    hashes = [hashlib.sha256(), hashlib.sha256()]
    with open(base_path, "wb") as fb, open(ft_path, "wb") as ff:
        for f, h in zip((fb, ff), hashes):
            f.write(head)
            h.update(head)
        for i, (name, shape) in enumerate(tensors):
            _, pb, pd = profiles[(i // 2) % len(profiles)]
            n = int(np.prod(shape))
            done = 0
            while done < n:
                k = min(PIECE_BLOCKS * BLOCK, n - done)
                nblk = -(-k // BLOCK)
                starts = rng.integers(0, pb.size - BLOCK, nblk)
                # Shuffled within each block: the block keeps its values (and so its local scale) but
                # not their order, so no long runs of the small profiles repeat.
                offs = rng.permuted(np.broadcast_to(np.arange(BLOCK), (nblk, BLOCK)), axis=1)
                idx = (starts[:, None] + offs).ravel()[:k]
                scale = np.exp(rng.uniform(np.log(0.8), np.log(1.25), nblk)).astype(np.float32)
                scale *= rng.choice(np.array([-1, 1], dtype=np.float32), nblk)
                s = np.repeat(scale, BLOCK)[:k]
                b = pb[idx] * s
                d = pd[idx] * s
                for f, h, arr in ((fb, hashes[0], to_bf16(b)), (ff, hashes[1], to_bf16(b + d))):
                    data = arr.astype("<u2", copy=False).tobytes()
                    f.write(data)
                    h.update(data)
                done += k
    sha = [h.hexdigest() for h in hashes]
    pfile.write_text(json.dumps({"params": params, "sha256": sha}))
    return base_path, ft_path, sha


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--largest-mib", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--llm-layers", type=int, default=0,
                    help="LLM shapes instead (4096x4096 attention, 4096x11008 MLP, 32000x4096 embedding and "
                         "head): this many decoder layers; 4 layers = 1.07 B parameters")
    ap.add_argument("--fixtures", type=pathlib.Path, default=FIXTURES,
                    help="the folder holding faceres{,-deep}.f32.safetensors (default ../shared/fixtures)")
    a = ap.parse_args()
    b, f, sha = generate(a.out_dir, a.size_gb, a.largest_mib, a.seed, fixtures=a.fixtures, llm_layers=a.llm_layers)
    print(f"{b} {os.path.getsize(b)} {sha[0]}")
    print(f"{f} {os.path.getsize(f)} {sha[1]}")


if __name__ == "__main__":
    main()
