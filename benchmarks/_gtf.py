"""A synthetic gene annotation for the gene benchmarks (shared by variants.py and genes.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_gtf(path: str, length: int, seed: int = 0, spacing: int = 15_000, chrom: str = "chr1") -> int:
    """Two-transcript genes every ``spacing`` bp of ``chrom`` (from 20 kb to ``length`` − 20 kb), three or four
    exons each, either strand; at 15 kb a window holds about eight genes, as a gene-dense stretch of a human
    chromosome does. Returns the number of genes written."""
    rng = np.random.default_rng(seed)
    lines = []
    starts = range(20_000, length - 20_000, spacing)
    for k, start in enumerate(starts):
        strand = "+-"[int(rng.integers(2))]
        for t in range(2):
            pos = start + int(rng.integers(0, 500))
            for _ in range(int(rng.integers(3, 5))):
                end = pos + int(rng.integers(80, 300))
                lines.append(f'{chrom}\tbench\texon\t{pos}\t{end}\t.\t{strand}\t.\tgene_id "G{k}"; '
                             f'transcript_id "G{k}.{t}"; gene_name "GENE{k}"; gene_type "protein_coding";')
                pos = end + int(rng.integers(500, 3_000))
    Path(path).write_text("\n".join(lines) + "\n")
    return len(starts)
