"""Does the pipeline keep up with a GPU? A simulated accelerator through the real pipeline, side by side.

    python benchmarks/gpu_rate.py            # 12 and 5,313 tracks, 1 and 2 writer threads, rate 90 windows/s
    python benchmarks/gpu_rate.py --quick    # fewer windows (smoke test)

The model is ``sim:rate=R,tracks=T`` (``enformer_batch/simulated.py``): outputs of the real shape and dtype at R
windows/s per replica, computing nothing, so everything else is real: reading, the replica, device-side
selection and cast, stitching, writing, committing. For each row, in one run on this machine:

* model rate: the simulated accelerator's windows/s (what a GPU would sustain);
* writer capacity: a replica writer thread's work on one part (its table, codes digest, Parquet, sha256, the
  file written), timed alone in this process (windows/s per core), times the writer threads given to the replica;
* end to end: ``enformer_batch.predict`` wall time, Ray already up (replica start-up included), and steady
  state (first to last committed part);
* efficiency = steady state / min(model rate, writer capacity): 1.0 means the pipeline adds nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from enformer_batch.demo import DemoChrom, write_demo_genome  # noqa: E402
from enformer_batch.kinds.atlas import AtlasMode, PartCodes, PartRows  # noqa: E402
from enformer_batch.store import OutputStore  # noqa: E402
from enformer_batch.windows import ENFORMER, plan_chromosome  # noqa: E402

WINDOWS_PER_PART = 16


def writer_rate(tracks: int, workdir: str, repeats: int = 3) -> float:
    """Windows/s one thread writes at ``tracks`` float16 tracks, doing exactly a replica's writer-thread work on
    a part: its table (``AtlasMode.table``), the codes digest, Parquet, sha256 and the file written
    (``OutputStore.write_part``, local disk)."""
    length = WINDOWS_PER_PART * ENFORMER.output_span - 1000
    (part,) = plan_chromosome("chr1", length, ENFORMER, ENFORMER.output_span, WINDOWS_PER_PART)
    rng = np.random.default_rng(0)
    by_track = (rng.random((tracks, part.n_rows), dtype=np.float32) + 0.5).astype(np.float16)
    result = PartRows(by_track, np.zeros(part.n_rows, bool), WINDOWS_PER_PART)
    offsets = np.arange(WINDOWS_PER_PART, dtype=np.int64) * ENFORMER.output_span
    spans = rng.integers(0, 4, int(offsets[-1]) + ENFORMER.input_length).astype(np.uint8)
    codes = PartCodes(spans, offsets, ENFORMER.input_length)
    mode = AtlasMode(None, ENFORMER.input_length)
    info = SimpleNamespace(geometry=ENFORMER, track_names=[f"track_{i:04d}" for i in range(tracks)])
    store = OutputStore(os.path.join(workdir, f"writer-{tracks}"))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        store.write_part(part, mode.table(part, result, info), codes_sha256=mode.digest(codes))
        best = min(best, time.perf_counter() - t)
    return WINDOWS_PER_PART / best


def run(fasta: str, out: str, rate: float, tracks: int, writers: int) -> tuple[float, float, int]:
    from enformer_batch import PredictConfig, predict

    commits: list[float] = []
    t0 = time.perf_counter()
    config = PredictConfig(fasta=fasta, out=out, model=f"sim:rate={rate},tracks={tracks}", device="cpu",
                           writers_per_worker=writers, threads_per_worker=1, progress=False,
                           windows_per_part=WINDOWS_PER_PART)
    summary = predict(config, on_part=lambda record: commits.append(time.perf_counter()))
    total = time.perf_counter() - t0
    windows = summary.units_computed
    steady = (windows - WINDOWS_PER_PART) / (commits[-1] - commits[0]) if len(commits) > 1 else float("nan")
    return windows / total, steady, windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=90.0, help="simulated windows/s per replica")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=os.cpu_count(), object_store_memory=300 * 2**20, include_dashboard=False,
             logging_level="ERROR")
    work = tempfile.mkdtemp(prefix="bench-gpu-rate-")
    rows = []
    try:
        for tracks in (12, 5313):
            per_core = writer_rate(tracks, work)
            for writers in (1, 2):
                capacity = per_core * writers
                bound = min(args.rate, capacity)
                seconds = 8 if args.quick else 25  # of work at the expected rate
                windows = max(3 * WINDOWS_PER_PART, int(bound * seconds) // WINDOWS_PER_PART * WINDOWS_PER_PART)
                length = windows * ENFORMER.output_span - 1
                fasta = write_demo_genome(os.path.join(work, f"g{windows}.fa"), (DemoChrom("chr1", length),))
                out = os.path.join(work, f"atlas-{tracks}-{writers}")
                e2e, steady, done = run(fasta, out, args.rate, tracks, writers)
                shutil.rmtree(out, ignore_errors=True)
                rows.append((tracks, writers, args.rate, per_core, capacity, done, e2e, steady, steady / bound))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nsimulated accelerator at {args.rate:g} windows/s, one replica, {os.cpu_count()} CPU cores, "
          f"{WINDOWS_PER_PART} windows per part, float16\n")
    print("| tracks | writer threads | model rate | writer w/s per core | writer capacity | windows | "
          "end to end w/s | steady w/s | efficiency |")
    print("|---|---|---|---|---|---|---|---|---|")
    for tracks, writers, rate, per_core, capacity, done, e2e, steady, eff in rows:
        print(f"| {tracks:,} | {writers} | {rate:g} | {per_core:.1f} | {capacity:.1f} | {done} | {e2e:.1f} | "
              f"{steady:.1f} | {eff:.2f} |")


if __name__ == "__main__":
    main()
