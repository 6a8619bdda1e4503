"""What ``validate`` reads and how long it takes, on a synthetic atlas of 5,313 float16 tracks (Enformer's human head).

    python benchmarks/validate.py            # 3 parts of 16 windows (the default part size), ~330 MB
    python benchmarks/validate.py --quick    # 2 parts of 4 windows, ~60 MB

The atlas is written by the real pipeline (``predict`` with the simulated model ``sim:rate=1000,tracks=5313``:
real reading, stitching, Parquet writing and commit). Each mode runs in this process and in Ray tasks (a local
cluster of 2 CPUs, warm: the first run's worker start-up is printed apart). "bytes read" is what ``validate``
pulled through the file objects it opened (its report); for runs in this process the kernel's count of the
process' reads (``/proc/self/io``) is printed beside it.
Files are in the page cache (just written), so seconds are CPU time plus the cost of the reads, not disk or
network time; bytes read is what carries over to object storage.
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

from enformer_batch import PredictConfig, predict, validate  # noqa: E402
from enformer_batch.demo import DemoChrom, write_demo_genome  # noqa: E402

SPAN = 114_688  # bp one Enformer window writes


def rchar() -> int | None:
    try:
        with open("/proc/self/io") as f:
            return int(next(line for line in f if line.startswith("rchar:")).split()[1])
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", default=None, help="directory to build the atlas in and keep (default: temporary)")
    args = parser.parse_args()
    windows_per_part, parts = (4, 2) if args.quick else (16, 3)

    import ray

    ray.init(num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False, logging_level="ERROR")
    root = args.keep or tempfile.mkdtemp(prefix="validate-bench-")
    try:
        fasta = write_demo_genome(os.path.join(root, "g.fa"), (DemoChrom("chr1", parts * windows_per_part * SPAN),))
        out = os.path.join(root, "atlas")
        t0 = time.perf_counter()
        predict(PredictConfig(fasta=fasta, out=out, model="sim:rate=1000,tracks=5313",
                              windows_per_part=windows_per_part, workers=1, progress=False))
        print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
        validate(out, parallel=False)  # imports warm
        t0 = time.perf_counter()
        validate(out, parallel=True)  # Ray's worker processes start and import pyarrow: once per cluster
        cold = time.perf_counter() - t0

        rows = []
        for label, checksums in (("fast", False), ("--checksums", True)):
            for where, parallel in (("this process", False), ("Ray tasks", True)):
                before = rchar()
                t0 = time.perf_counter()
                report = validate(out, parallel=parallel, checksums=checksums)
                seconds = time.perf_counter() - t0
                assert report.ok, report.table()
                kernel = "" if before is None or parallel else f"{(rchar() - before) / 1e6:.2f}"
                n_parts = sum(c.parts for c in report.chroms)
                rows.append((label, where, str(n_parts), f"{report.part_bytes / 1e6:.1f}",
                             f"{report.bytes_read / 1e6:.2f}", kernel,
                             f"{100 * report.bytes_read / report.part_bytes:.2f}", f"{seconds:.2f}"))
                if label == "fast" and not parallel:
                    per_part = report.bytes_read / n_parts
                    part_size = report.part_bytes / n_parts

        header = ("mode", "where", "parts", "atlas MB", "MB read", "kernel MB", "% read", "seconds")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            print("  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
        print(f"(first validate in Ray tasks, workers starting: {cold:.2f} s; the rows above are warm)")
        hg38 = 1_700  # parts of 16 windows in a whole-genome hg38 atlas
        print(f"fast mode reads {per_part / 1e6:.2f} MB per {part_size / 1e6:.0f} MB part (its footer: ~150 B per "
              f"track; start/end); an hg38 atlas of {hg38:,} such parts: ~{hg38 * per_part / 1e9:.1f} GB read of "
              f"~{hg38 * part_size / 1e9:.0f} GB")
    finally:
        ray.shutdown()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
