"""Independent readings of the contract, used as oracles: no code shared with the engine's stitching."""

from __future__ import annotations

import numpy as np

BIN, SPAN, CONTEXT, INPUT = 128, 114_688, 40_960, 196_608


def parse_fasta(path: str) -> dict[str, str]:
    seqs: dict[str, list[str]] = {}
    name = None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith(">"):
                name = line[1:].split()[0]
                seqs[name] = []
            else:
                seqs[name].append(line)
    return {k: "".join(v) for k, v in seqs.items()}


def onehot(seq: str, n_value: float = 0.0) -> np.ndarray:
    out = np.full((len(seq), 4), n_value, dtype=np.float32)
    for i, base in enumerate("ACGT"):
        hit = np.array([c.upper() == base for c in seq]) if seq else np.zeros(0, bool)
        out[hit] = 0.0
        out[hit, i] = 1.0
    return out


def window_input(seq: str, k: int, stride: int) -> str:
    start = k * stride - CONTEXT
    return "".join(seq[p] if 0 <= p < len(seq) else "N" for p in range(start, start + INPUT))


def owner_of_bins(length: int, stride: int) -> list[int]:
    n_windows = -(-length // stride)
    owners = []
    for b in range(-(-length // BIN)):
        centre = (b + 0.5) * BIN
        candidates = [
            (abs(centre - (k * stride + SPAN / 2)), k)
            for k in range(n_windows)
            if k * stride <= b * BIN and (b + 1) * BIN <= k * stride + SPAN
        ]
        owners.append(min(candidates)[1])
    return owners
