"""Saturation mutagenesis throughput: a naive loop vs ``enformer-batch mutagenesis``, side by side.

    python benchmarks/mutagenesis.py               # a 200-bp region (600 mutants), demo model
    python benchmarks/mutagenesis.py --length 20   # smoke test

Rows, on the same region of the demo genome in one run:

* naive loop: what a user writes by hand: pyfaidx slice of the window centred on the region → one-hot in numpy
  → enformer-pytorch on the reference once, then one forward per mutant (the base changed in numpy), batch 1,
  SAD in numpy.
* mutagenesis: ``enformer_batch.mutagenesis`` on a local Ray cluster started beforehand (actor start-up and
  model load included): one shared reference per region, mutants built on the device, batches of 4.

Also printed: model inputs per mutant (the goal is 1 + 1/(3 · length): one shared reference).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

INPUT = 196_608
ONEHOT = np.zeros((256, 4), np.float32)
for _i, _b in enumerate("ACGT"):
    ONEHOT[ord(_b), _i] = ONEHOT[ord(_b.lower()), _i] = 1.0


def naive_loop(fasta: str, chrom: str, start: int, end: int, model) -> tuple[float, int]:
    import pyfaidx
    import torch

    t = time.perf_counter()
    genome = pyfaidx.Fasta(fasta, as_raw=True)
    centre = (start + end) // 2
    window = str(genome[chrom][centre - INPUT // 2 : centre + INPUT // 2])
    x = ONEHOT[np.frombuffer(window.encode(), np.uint8)]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)[None], head="human")[0].double().numpy()
    n = 0
    for q in range(start, end):
        i = INPUT // 2 + q - centre
        for b in range(4):
            if x[i, b] == 1.0:
                continue
            mutant = x.copy()
            mutant[i] = 0.0
            mutant[i, b] = 1.0
            with torch.no_grad():
                alt = model(torch.from_numpy(mutant)[None], head="human")[0].double().numpy()
            (alt - ref).sum(0)
            n += 1
    return time.perf_counter() - t, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=200, help="region length in bp")
    args = parser.parse_args()

    # Imported here, not at the top, so that --help answers without loading torch.
    import enformer_pytorch
    import ray
    import torch

    from enformer_batch.demo import DemoChrom, write_demo_genome
    from enformer_batch.kinds.mutagenesis import MutagenesisConfig, mutagenesis
    from enformer_batch.loader import load_model

    work = tempfile.mkdtemp(prefix="bench-mutagenesis-")
    fasta = write_demo_genome(os.path.join(work, "g.fa"), (DemoChrom("chr1", 400_000),))
    start = 200_000
    end = start + args.length
    torch.set_num_threads(os.cpu_count() or 1)
    loaded = load_model("demo")
    reference = enformer_pytorch.Enformer.from_hparams(
        **{k: v for k, v in loaded.config.to_dict().items() if k not in ("architectures", "model_type")}).eval()
    reference.load_state_dict(loaded.model.state_dict())
    naive_s, mutants = naive_loop(fasta, "chr1", start, end, reference)

    ray.init(num_cpus=os.cpu_count(), object_store_memory=200 * 2**20, include_dashboard=False,
             logging_level="ERROR")
    t = time.perf_counter()
    summary = mutagenesis(MutagenesisConfig(fasta=fasta, regions=f"chr1:{start}-{end}", out=os.path.join(work, "m"),
                                            batch_size=4, progress=False))
    ours_s = time.perf_counter() - t
    ray.shutdown()
    print(f"\n{args.length}-bp region, {mutants} mutants, demo model, {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__}\n")
    print("| run | seconds | mutants/s | model inputs per mutant | vs naive |")
    print("|---|---|---|---|---|")
    print(f"| naive loop (enformer-pytorch, batch 1) | {naive_s:.1f} | {mutants / naive_s:.2f} | "
          f"{(mutants + 1) / mutants:.4f} | 1.00x |")
    print(f"| enformer-batch mutagenesis | {ours_s:.1f} | {mutants / ours_s:.2f} | "
          f"{summary.sequences / mutants:.4f} | {naive_s / ours_s:.2f}x |")
    print(f"\ngoal for model inputs per mutant: 1 + 1/(3 x {args.length}) = {1 + 1 / (3 * args.length):.4f}")


if __name__ == "__main__":
    main()
