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

A second table plans (as a run's driver does, from the FASTA index alone) genomes a CPU cannot run end to end:
hg38's chromosome lengths at the default stride and at stride 128, and with ~3,000 alt/decoy/HLA-sized
contigs, reporting parts, planning seconds and the driver's peak Python allocation while planning
(tracemalloc). ``--plan-only`` prints only that table; ``--windows-per-part N`` plans N windows a part, as
every atlas did before parts were sized by rows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from _sampling import Sampler, rss_bytes  # noqa: E402  (benchmarks/, the script's own directory)

from enformer_batch import PredictConfig, predict  # noqa: E402
from enformer_batch.windows import ENFORMER, plan_selection  # noqa: E402

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


# GRCh38 primary assembly (UCSC hg38 chrom.sizes): what an atlas of the whole human genome plans.
HG38 = {
    "chr1": 248_956_422, "chr2": 242_193_529, "chr3": 198_295_559, "chr4": 190_214_555, "chr5": 181_538_259,
    "chr6": 170_805_979, "chr7": 159_345_973, "chr8": 145_138_636, "chr9": 138_394_717, "chr10": 133_797_422,
    "chr11": 135_086_622, "chr12": 133_275_309, "chr13": 114_364_328, "chr14": 107_043_718,
    "chr15": 101_991_189, "chr16": 90_338_345, "chr17": 83_257_441, "chr18": 80_373_285, "chr19": 58_617_616,
    "chr20": 64_444_167, "chr21": 46_709_983, "chr22": 50_818_468, "chrX": 156_040_895, "chrY": 57_227_415,
    "chrM": 16_569,
}


def with_small_contigs(lengths: dict[str, int], n: int = 3_000, seed: int = 0) -> dict[str, int]:
    """``lengths`` plus ``n`` contigs of alt/decoy/HLA sizes (log-uniform, 1 kb to 500 kb)."""
    rng = np.random.default_rng(seed)
    sizes = np.exp(rng.uniform(np.log(1_000), np.log(500_000), n)).astype(int)
    return {**lengths, **{f"chrUn_ctg{i}": int(s) for i, s in enumerate(sizes)}}


def plan_footprint(lengths: dict[str, int], stride: int, windows_per_part: int | None) -> tuple:
    """(windows per part, parts, windows, rows, seconds, peak MiB) of planning every bin as a run's driver does."""
    try:
        from enformer_batch.kinds.atlas import resolve_windows_per_part

        per_part = resolve_windows_per_part(PredictConfig(fasta="", out="", stride=stride,
                                                          windows_per_part=windows_per_part), ENFORMER, stride)
    except ImportError:  # a release before parts were sized by rows: 16 windows a part
        per_part = windows_per_part or 16
    tracemalloc.start()
    t = time.perf_counter()
    parts = plan_selection(dict.fromkeys(lengths), lengths, ENFORMER, stride, per_part)
    units = sum(p.units if hasattr(p, "units") else len(p.windows) for p in parts)
    rows = sum(p.n_rows for p in parts)
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return per_part, len(parts), units, rows, seconds, peak / 2**20


def plan_table(windows_per_part: int | None, chroms: int) -> None:
    hg38 = dict(list(HG38.items())[:chroms])
    cases = [
        ("hg38 primary", hg38, ENFORMER.output_span),
        ("hg38 primary", hg38, 128),
        ("hg38 + 3,000 small contigs", with_small_contigs(hg38), ENFORMER.output_span),
        ("hg38 + 3,000 small contigs", with_small_contigs(hg38), 128),
    ]
    print(f"\nplanning (driver only, Enformer geometry), {time.strftime('%Y-%m-%d %H:%M')}; "
          f"windows per part: {windows_per_part or 'from the row target'}")
    print("| genome | records | stride | windows/part | parts | windows | rows | rows/part | planning s "
          "| peak traced MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, lengths, stride in cases:
        per_part, parts, units, rows, seconds, peak = plan_footprint(lengths, stride, windows_per_part)
        print(f"| {name} | {len(lengths):,} | {stride:,} | {per_part:,} | {parts:,} | {units:,} | {rows:,} | "
              f"{rows / parts:,.0f} | {seconds:.2f} | {peak:,.1f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default="10e6,100e6,1e9", help="genome sizes in bp, comma-separated")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--tmp", default="/tmp", help="where the synthetic FASTA and the atlas go (deleted after)")
    ap.add_argument("--plan-only", action="store_true", help="only the planning table (no Ray, no model)")
    ap.add_argument("--windows-per-part", type=int, default=None,
                    help="plan N windows a part (the sizing before parts were sized by rows: 16)")
    ap.add_argument("--plan-chroms", type=int, default=len(HG38), help="plan only hg38's first N chromosomes")
    args = ap.parse_args(argv)
    if args.plan_only:
        plan_table(args.windows_per_part, args.plan_chroms)
        return
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
    plan_table(args.windows_per_part, args.plan_chroms)


if __name__ == "__main__":
    main()
