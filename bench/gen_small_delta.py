#!/usr/bin/env python3
"""Writes a "small-delta" finetune of the real faceres base: every weight touched, about 1% relative change
per tensor, as a short finetune of a pretrained model looks (issue 13).

For every float tensor w of ../shared/fixtures/faceres.f32.safetensors (a real pretrained net), the
finetune is w + 0.01 * rms(w) * N(0, 1), computed in f32 (seed fixed). Writes OUT_DIR/{base,finetune}.f32
and OUT_DIR/{base,finetune}.bf16 safetensors (bf16 = the f32 values rounded to nearest even, as the
fixtures were made); other tensors (I32) are copied as they are. Normal noise is what this pair is
about: the delta is small next to every weight (a few ulps in bf16), so the coder's context for the
size of the neighbours' differences matters, unlike on the faceres pair (deep finetune, 7-23% per tensor).

Usage
  /opt/deltastore/venv/bin/python bench/gen_small_delta.py OUT_DIR [--rel 0.01] [--seed 1]
"""
import argparse
import json
import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent.parent / "shared" / "fixtures"


def read(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], data[b:e])
    return out


def write(path, tensors):
    doc = {"__metadata__": {"format": "pt", "source": "deltastore bench/gen_small_delta.py"}}
    off = 0
    blobs = []
    for name in sorted(tensors):
        dtype, shape, blob = tensors[name]
        doc[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(blob)]}
        off += len(blob)
        blobs.append(blob)
    h = json.dumps(doc, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def to_bf16(f32):
    u = f32.view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype("<u2")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--rel", type=float, default=0.01, help="noise rms relative to each tensor's rms")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    out = pathlib.Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    src = read(FIXTURES / "faceres.f32.safetensors")
    files = {k: {} for k in ("base.f32", "finetune.f32", "base.bf16", "finetune.bf16")}
    for name, (dtype, shape, blob) in sorted(src.items()):
        if dtype != "F32":
            for k in files:
                files[k][name] = (dtype, shape, blob)
            continue
        w = np.frombuffer(blob, dtype="<f4")
        rms = float(np.sqrt(np.mean(w.astype(np.float64) ** 2))) if w.size else 0.0
        ft = (w + (a.rel * rms * rng.standard_normal(w.size)).astype(np.float32)).astype("<f4")
        files["base.f32"][name] = ("F32", shape, w.tobytes())
        files["finetune.f32"][name] = ("F32", shape, ft.tobytes())
        files["base.bf16"][name] = ("BF16", shape, to_bf16(w.copy()).tobytes())
        files["finetune.bf16"][name] = ("BF16", shape, to_bf16(ft).tobytes())
    for k, t in files.items():
        write(out / f"{k}.safetensors", t)
        print(out / f"{k}.safetensors")


if __name__ == "__main__":
    main()
