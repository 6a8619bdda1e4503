"""Driver footprint vs genome size: driver RSS and object-store peak from a 10-Mb to a 1-Gb genome.

    python benchmarks/scale.py             # 10 Mb, 100 Mb, 1 Gb (a few minutes on 2 cores)
    python benchmarks/scale.py --quick     # 10 Mb and 30 Mb (smoke test, < 60 s)
    python benchmarks/scale.py --sizes 10e6,3e9

Each genome is synthetic and mostly N: a few chromosomes of N with a fixed number of small ACGT islands, so
the model runs on a handful of windows whatever the size, while *every* window goes through the whole driver
path (planned, read and encoded by a reader task, passed to the actor, stitched into null rows, written,
committed to the manifest). The FASTA goes to a temporary directory (``--tmp``, default /tmp) with its
``.fai`` written alongside (what ``samtools faidx`` would produce), and is deleted after each size.

Every 50 ms a thread samples the driver's RSS (/proc/self/status VmRSS) and the object store's bytes in use
(Ray's memory-info reply). Ray is started once before the first size, so its start-up is excluded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sampling import Sampler, rss_bytes  # noqa: E402  (benchmarks/, the script's own directory)

from enformer_batch import PredictConfig, predict  # noqa: E402

LINE = 60
ISLANDS = 3  # ACGT islands per genome, whatever its size: the model cost stays small and constant
ISLAND_BP = 20_000


def write_sparse_genome(path: str, total_bp: int, chromosomes: int, seed: int = 0) -> int:
    """Write a mostly-N FASTA and its .fai; returns the number of ACGT bases."""
    rng = np.random.default_rng(seed)
    per = total_bp // chromosomes
    island_chroms = rng.integers(0, chromosomes, size=ISLANDS)
    acgt = 0
    n_line = b"N" * LINE + b"\n"
    block_lines = 1 << 14  # write N in ~1 MB blocks
    n_block = n_line * block_lines
    with open(path, "wb") as fa, open(path + ".fai", "w") as fai:
        for c in range(chromosomes):
            name = f"chr{c + 1}"
            header = f">{name}\n".encode()
            fa.write(header)
            offset = fa.tell()
            fai.write(f"{name}\t{per}\t{offset}\t{LINE}\t{LINE + 1}\n")
            seq_islands = [int(rng.integers(0, per - ISLAND_BP)) for i in island_chroms if i == c]
            full_lines, rest = divmod(per, LINE)
            if not seq_islands:
                blocks, tail = divmod(full_lines, block_lines)
                for _ in range(blocks):
                    fa.write(n_block)
                fa.write(n_line * tail)
            else:
                seq = np.full(per, ord("N"), dtype=np.uint8)
                for start in seq_islands:
                    seq[start : start + ISLAND_BP] = rng.choice(np.frombuffer(b"ACGT", np.uint8), ISLAND_BP)
                    acgt += ISLAND_BP
                body = seq[: full_lines * LINE].reshape(full_lines, LINE)
                lines = np.concatenate([body, np.full((full_lines, 1), ord("\n"), np.uint8)], axis=1)
                fa.write(lines.tobytes())
                if rest:
                    fa.write(seq[full_lines * LINE :].tobytes())
            if rest:
                fa.write(b"N" * rest if not seq_islands else b"")
                fa.write(b"\n")
    return acgt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default="10e6,100e6,1e9", help="genome sizes in bp, comma-separated")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--tmp", default="/tmp", help="where the synthetic FASTA and the atlas go (deleted after)")
    args = ap.parse_args(argv)
    sizes = [int(float(s)) for s in ("10e6,30e6" if args.quick else args.sizes).split(",")]

    import ray

    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="ERROR", object_store_memory=512 * 1024**2)
    results = []
    try:
        for size in sizes:
            workdir = tempfile.mkdtemp(prefix="bench-scale-", dir=args.tmp)
            try:
                fasta = os.path.join(workdir, "genome.fa")
                t = time.perf_counter()
                chromosomes = max(1, min(24, size // 50_000_000))
                write_sparse_genome(fasta, size, chromosomes)
                gen_s = time.perf_counter() - t
                sampler = Sampler()
                before = rss_bytes()
                sampler.start()
                t = time.perf_counter()
                summary = predict(PredictConfig(fasta=fasta, out=os.path.join(workdir, "atlas"), model=args.model,
                                                progress=False))
                seconds = time.perf_counter() - t
                sampler.stop.set()
                sampler.join()
                results.append((size, chromosomes, summary, seconds, before, sampler))
                print(f"  {size / 1e6:,.0f} Mb: {summary.units} windows in {seconds:.1f} s "
                      f"(FASTA written in {gen_s:.1f} s)", flush=True)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        ray.shutdown()

    load = os.getloadavg()
    print(f"\nbenchmarks/scale.py — {time.strftime('%Y-%m-%d %H:%M')}, {cores} cores, model {args.model}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {ISLANDS} ACGT islands of {ISLAND_BP:,} bp "
          "per genome, the rest N")
    print("| genome | chromosomes | windows | parts | rows | seconds | windows/s | driver RSS before, MiB "
          "| driver RSS peak, MiB | peak − before, MiB | object store peak, MiB | samples |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, chromosomes, s, seconds, before, sampler in results:
        print(f"| {size / 1e6:,.0f} Mb | {chromosomes} | {s.units:,} | "
              f"{s.parts:,} | {s.rows:,} | {seconds:.1f} | {s.units / seconds:.1f} | {before / 2**20:.0f} | "
              f"{sampler.rss_peak / 2**20:.0f} | {(sampler.rss_peak - before) / 2**20:.0f} | "
              f"{sampler.store_peak / 2**20:.1f} | {sampler.samples:,} |")


if __name__ == "__main__":
    main()
