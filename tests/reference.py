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


def variant_sequences(seq: str, pos: int, ref: str, alt: str, length: int = INPUT) -> tuple[str, str]:
    """Reference and alternate model inputs of a variant, written straight from the contract's words.

    The variant's 0-based position p sits at input index length // 2; outside the chromosome is N. The
    alternate is the left flank up to p, then ALT, then the chromosome from p + len(REF) on, cut to length.
    """
    p = pos - 1
    start = p - length // 2

    def bases(lo: int, hi: int) -> str:
        return "".join(seq[q] if 0 <= q < len(seq) else "N" for q in range(lo, hi))

    reference = bases(start, start + length)
    left = bases(start, p)
    right = bases(p + len(ref), p + len(ref) + max(0, length - len(left) - len(alt)))
    return reference, (left + alt + right)[:length]


def write_bgzf(path: str, data: bytes, block: int = 1 << 15) -> None:
    """BGZF (what ``bgzip`` writes): gzip members of at most 64 KiB with the 'BC' block-size field, then EOF."""
    import struct
    import zlib

    out = bytearray()
    for i in range(0, len(data), block):
        chunk = data[i : i + block]
        deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = deflate.compress(chunk) + deflate.flush()
        header = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x06\x00BC\x02\x00"
        size = len(header) + 2 + len(body) + 8
        out += header + struct.pack("<H", size - 1) + body + struct.pack("<II", zlib.crc32(chunk), len(chunk))
    out += bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")  # the BGZF EOF block
    with open(path, "wb") as f:
        f.write(out)
