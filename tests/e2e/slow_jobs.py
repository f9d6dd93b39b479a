"""Jobs long enough to be caught running by polling (never by sleeping), with seconds to spare.

- `write_checkpoint`: TENSORS varied F32 tensors of 1 MiB, worth coding. Its lossless version at `level:
  max` (SLOW) is still encoding long after its first tensor.
- `write_lossy_pair`: that checkpoint as a base, and a finetune of it (small noise on every weight).
  LOSSY_MANY compresses the finetune's 160 tensors in turn, with no planning pass. A job caught encoding
  by `Client.wait_job_encoding` then has seconds left: on a Zen 4 core pair it was seen at 0.9 s with 9
  tensors done, and it ended at 4.6 s. The faceres fixture pair these tests used before (128 tensors of
  14 MB in all) took under a second there, and finished before the poll saw it encoding."""
import json
import pathlib
import struct

import numpy as np

TENSORS = 160
VALUES = 1 << 18  # F32 values per tensor: 1 MiB each
SLOW = {"mode": "lossless", "level": "max"}
LOSSY_MANY = {"mode": "lossy", "ratio": 32, "allocate": False}


def write_checkpoint(path, seed=1):
    """A safetensors file of TENSORS varied F32 tensors (worth coding, so slow to code)."""
    rng = np.random.default_rng(seed)
    header, offset = {}, 0
    for i in range(TENSORS):
        header[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [VALUES // 512, 512],
                                        "data_offsets": [offset, offset + 4 * VALUES]}
        offset += 4 * VALUES
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for _ in range(TENSORS):
            f.write((rng.standard_normal(VALUES, dtype=np.float32) * 0.02).tobytes())
    return path


def write_lossy_pair(directory, seed=1):
    """(base, finetune) paths under `directory`: write_checkpoint's file, and the same tensors each with
    N(0, 0.002^2) noise added (a delta of a tenth of the weights' spread)."""
    directory = pathlib.Path(directory)
    base = write_checkpoint(directory / "slow-base.safetensors", seed)
    data = base.read_bytes()
    start = 8 + struct.unpack("<Q", data[:8])[0]
    values = np.frombuffer(data, dtype=np.float32, offset=start)
    rng = np.random.default_rng(seed + 1000)
    noisy = values + rng.standard_normal(values.size, dtype=np.float32) * np.float32(0.002)
    finetune = directory / "slow-finetune.safetensors"
    finetune.write_bytes(data[:start] + noisy.astype(np.float32).tobytes())
    return base, finetune
