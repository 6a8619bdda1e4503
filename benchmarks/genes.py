"""Gene expression throughput: predict-genes genes/s against an atlas's windows/s, side by side on one genome.

    python benchmarks/genes.py                  # 2 Mb demo genome, a gene every 15 kb, demo model
    python benchmarks/genes.py --mb 1 --spacing 30000   # smoke test

Each gene is one model input (its window centred on its first TSS), as each atlas window is, so at the model's
rate the two should match; the rows say what the rest costs. Rows, each on a local Ray cluster started
beforehand (replica start-up and model load included, as a user's run has them), the same model, batch 4, fp32:

* model alone: ``Predictor.predict`` on the atlas's windows in this process (no Ray, no reading, no writing);
  the rate both runs would have if nothing else cost anything.
* predict (atlas): every window of the genome (``enformer_batch.predict``).
* predict-genes: every gene of a synthetic GTF (two-transcript genes every ``--spacing`` bp, both strands;
  ``enformer_batch.kinds.genes.predict_genes``): reading each gene's window (genes' windows overlap, so bases
  are read several times), its exon and TSS bin masks built on the host, the sums taken on the device.

Printed: a table of seconds, windows (or genes) per second, and each run against the model alone and genes/s
against the atlas's windows/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _gtf import write_gtf  # noqa: E402  (benchmarks/, the script's own directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=2.0, help="length of the demo chromosome, in Mb")
    parser.add_argument("--spacing", type=int, default=15_000, help="bp between consecutive genes' starts")
    parser.add_argument("--model", default="demo", help="demo or demo-borzoi")
    args = parser.parse_args()

    # Imported here, not at the top, so that --help answers without loading torch or Ray.
    import numpy as np
    import ray
    import torch

    from enformer_batch import PredictConfig, predict
    from enformer_batch.demo import DemoChrom, write_demo_genome
    from enformer_batch.genome import FastaSource, read_codes
    from enformer_batch.inference import InferenceSettings, Predictor
    from enformer_batch.kinds.genes import GenesConfig, predict_genes

    work = tempfile.mkdtemp(prefix="bench-genes-")
    length = int(args.mb * 1_000_000)
    fasta = write_demo_genome(os.path.join(work, "g.fa"), (DemoChrom("chr1", length),))
    gtf = os.path.join(work, "genes.gtf")
    n_genes = write_gtf(gtf, length, spacing=args.spacing)
    torch.set_num_threads(os.cpu_count() or 1)
    common = dict(fasta=fasta, model=args.model, batch_size=4, progress=False)

    # Model alone, on the atlas's own windows (read beforehand, not timed).
    predictor = Predictor(InferenceSettings(model=args.model, batch_size=4, dtype="float32"))
    geometry = predictor.info.geometry
    source = FastaSource(fasta)
    handle = source.open()
    try:
        starts = range(-geometry.context, length - geometry.context, geometry.output_span)
        codes = np.stack([read_codes(handle, "chr1", length, s, s + geometry.input_length) for s in starts])
    finally:
        handle.close()
    predictor.predict(codes[:4])  # warm-up: first-call allocations
    t = time.perf_counter()
    predictor.predict(codes)
    model_s = time.perf_counter() - t
    model_rate = len(codes) / model_s
    del predictor

    ray.init(num_cpus=os.cpu_count(), object_store_memory=200 * 2**20, include_dashboard=False,
             logging_level="ERROR")
    t = time.perf_counter()
    atlas = predict(PredictConfig(out=os.path.join(work, "atlas"), dtype="float32", **common))  # as gene tables
    atlas_s = time.perf_counter() - t
    t = time.perf_counter()
    genes = predict_genes(GenesConfig(genes=gtf, out=os.path.join(work, "genes"), **common))
    genes_s = time.perf_counter() - t
    ray.shutdown()
    assert genes.units == n_genes, (genes.units, n_genes)

    atlas_rate, genes_rate = atlas.units / atlas_s, genes.units / genes_s
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n{args.model} model, chr1 of {length:,} bp, {n_genes} genes (one every {args.spacing:,} bp), "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}, load average at the end {load}\n")
    print("| run | model inputs | seconds | inputs/s | vs model alone | vs atlas |")
    print("|---|---|---|---|---|---|")
    print(f"| model alone (Predictor, batch 4, atlas windows) | {len(codes)} windows | {model_s:.1f} | "
          f"{model_rate:.2f} windows/s | 1.00x | |")
    print(f"| predict (atlas) | {atlas.units} windows | {atlas_s:.1f} | {atlas_rate:.2f} windows/s | "
          f"{atlas_rate / model_rate:.2f}x | 1.00x |")
    print(f"| predict-genes | {genes.units} genes | {genes_s:.1f} | {genes_rate:.2f} genes/s | "
          f"{genes_rate / model_rate:.2f}x | {genes_rate / atlas_rate:.2f}x |")
    print(f"\nwall times include replica start-up and model load; the runs' own rates (their summaries): atlas "
          f"{atlas.units_per_second:.2f} windows/s, predict-genes {genes.units_per_second:.2f} genes/s")


if __name__ == "__main__":
    main()
