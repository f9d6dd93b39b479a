#!/usr/bin/env python3
"""Task accuracy of a checkpoint of one of the pairs made by make_pairs.py.

    accuracy(pair, checkpoint_path, pairs_dir) -> float

rebuilds the pair's architecture (from <pairs_dir>/<pair>.json), loads the
checkpoint (safetensors; any float dtype is cast to float32; every tensor of
the model must be present) and returns its accuracy on the held-out set of the
finetune task (<pair>.eval.safetensors). task="base" uses the base task's
held-out set instead (to measure forgetting; not for minilm, whose base is
the pretrained encoder with a linear probe on the same task). task="ft-dense"
(minilm only) uses the held-out paragraphs' windows at every word offset
(4,247 overlapping windows against the 552 non-overlapping ones), rebuilt from
the pair's config: one held-out window is 2.9% of minilm's gain, too coarse
to tell 97% from 99%; this finer measure is computed, never stored.

accuracy_state_dict(pair, state_dict, pairs_dir) does the same for tensors
already in memory.

CLI: evaluate.py PAIR CHECKPOINT [--pairs-dir DIR] [--task ft|base]
"""
import argparse
import functools
import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402

DEFAULT_PAIRS_DIR = "/tmp/deltastore-pairs"


@functools.lru_cache(maxsize=16)
def _load_pair(pairs_dir, pair, mtime_key):
    with open(os.path.join(pairs_dir, f"{pair}.json")) as f:
        info = json.load(f)
    ev = load_file(os.path.join(pairs_dir, f"{pair}.eval.safetensors"))
    return info, ev


def _pair(pairs_dir, pair):
    paths = [os.path.join(pairs_dir, f"{pair}.{s}") for s in ("json", "eval.safetensors")]
    for p in paths:
        if not os.path.exists(p):
            raise FileNotFoundError(
                f"{p} missing: run bench/pairs/make_pairs.py --out {pairs_dir}")
    key = tuple(os.stat(p).st_mtime_ns for p in paths)
    return _load_pair(os.path.abspath(pairs_dir), pair, key)


@functools.lru_cache(maxsize=4)
def _dense_set(task_json):
    import make_pairs  # noqa: E402  (bench/pairs; imported here: it needs transformers)
    task = make_pairs.make_task(json.loads(task_json))
    if not hasattr(task, "eval_dense"):
        raise ValueError("task 'ft-dense' applies to the minilm pair only")
    return task.tokenize(task.eval_dense)


def _held_out(info, ev, task):
    if task == "ft-dense":
        return _dense_set(json.dumps(info["config"]["task"], sort_keys=True))
    if task not in ("ft", "base"):
        raise ValueError(f"task must be 'ft', 'ft-dense' or 'base', not {task!r}")
    prefix = "" if task == "ft" else "base_task."
    if prefix + "inputs" not in ev:
        raise ValueError(f"pair {info['pair']!r} has no base-task held-out set "
                         "(minilm: the base is a pretrained encoder with a linear probe)")
    return ev[prefix + "inputs"], ev[prefix + "labels"]


def accuracy_state_dict(pair, state_dict, pairs_dir=DEFAULT_PAIRS_DIR, task="ft",
                        batch=1024):
    info, ev = _pair(pairs_dir, pair)
    X, Y = _held_out(info, ev, task)
    model = models.build(info["arch"])
    sd = {}
    for k, v in state_dict.items():
        v = torch.as_tensor(v)
        sd[k] = v.float() if v.is_floating_point() else v
    model.load_state_dict(sd, strict=True)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(X), batch):
            correct += (model(X[i:i + batch]).argmax(1) == Y[i:i + batch]).sum().item()
    return correct / len(X)


def accuracy(pair: str, checkpoint_path: str, pairs_dir: str = DEFAULT_PAIRS_DIR,
             task: str = "ft") -> float:
    return accuracy_state_dict(pair, load_file(checkpoint_path), pairs_dir, task)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Accuracy of a checkpoint on a pair's held-out set.")
    ap.add_argument("pair")
    ap.add_argument("checkpoint")
    ap.add_argument("--pairs-dir", default=DEFAULT_PAIRS_DIR)
    ap.add_argument("--task", choices=("ft", "ft-dense", "base"), default="ft",
                    help="held-out set: finetune task (default), its windows at every word "
                         "offset (minilm), or base task")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(accuracy(args.pair, args.checkpoint, args.pairs_dir, args.task))


if __name__ == "__main__":
    main()
