"""Pipeline overhead: the model alone (no Ray) vs the full Ray pipeline, side by side in one run.

    python benchmarks/pipeline.py [--fasta FASTA] [--model demo] [--batch-size 4] [--precision fp32]

Both sides run the same model, batch size, thread count and windows (the demo genome by default). The
model-alone side reads every part's codes first and times only ``Predictor.predict``; the pipeline side is
``enformer_batch.predict`` on a local Ray cluster started beforehand (Ray's start-up is excluded; actor
start-up and model loading are included in "end to end" and excluded in "steady state", which runs from the
first committed part to the last). Driver RSS and object-store use are sampled every 50 ms during the run.

Prints one table: windows/s of the model alone and of the pipeline (end to end and steady state), their
ratios, when the first part was committed and how much of that was start-up, and the driver's RSS and
object-store peaks.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _sampling import Sampler, rss_bytes  # noqa: E402  (benchmarks/, the script's own directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", default=None, help="default: the demo genome")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()

    # Imported here, not at the top, so that --help answers without loading torch.
    import torch

    from enformer_batch import PredictConfig, predict
    from enformer_batch.demo import write_demo_genome
    from enformer_batch.genome import FastaSource
    from enformer_batch.inference import InferenceSettings, Predictor
    from enformer_batch.kinds.atlas import read_part
    from enformer_batch.windows import ENFORMER, plan_chromosome

    workdir = tempfile.mkdtemp(prefix="bench-pipeline-")
    fasta = args.fasta or write_demo_genome(os.path.join(workdir, "genome.fa"))
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    settings = InferenceSettings(model=args.model, batch_size=args.batch_size, precision=args.precision)

    # Model alone: the same parts, codes read beforehand, only the model call timed.
    source = FastaSource(fasta)
    lengths = source.lengths()
    parts = [p for c, n in lengths.items() for p in plan_chromosome(c, n, ENFORMER, ENFORMER.output_span, 16)]
    codes = [read_part(source, p, ENFORMER.input_length) for p in parts]
    windows = sum(len(p.windows) for p in parts)
    ran = sum(int((c != 4).any(axis=1).sum()) for c in codes)
    predictor = Predictor(settings)
    predictor.predict(codes[0][:1])  # warm-up (allocator, kernels), as the actor's first part would be
    t = time.perf_counter()
    for c in codes:
        predictor.predict(c)
    model_seconds = time.perf_counter() - t
    del predictor

    import ray

    ray.init(num_cpus=threads, include_dashboard=False, logging_level="WARNING",
             object_store_memory=256 * 1024**2)
    sampler = Sampler()
    baseline_rss = rss_bytes()
    sampler.start()
    stamps: list[float] = []
    t = time.perf_counter()
    summary = predict(
        PredictConfig(fasta=fasta, out=os.path.join(workdir, "atlas"), model=args.model,
                      batch_size=args.batch_size, precision=args.precision, progress=False),
        on_part=lambda record: stamps.append(time.perf_counter()),
    )
    e2e_seconds = time.perf_counter() - t
    sampler.stop.set()
    sampler.join()
    ray.shutdown()
    first_part_windows = len(parts[0].windows)
    steady = (windows - first_part_windows) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")

    model_rate = windows / model_seconds
    rows = [
        ("windows (run / total)", f"{ran} / {windows}"),
        ("model alone, windows/s", f"{model_rate:.3f}"),
        ("pipeline end to end, windows/s", f"{windows / e2e_seconds:.3f}"),
        ("pipeline steady state, windows/s", f"{steady:.3f}"),
        ("end to end / model alone", f"{windows / e2e_seconds / model_rate:.3f}"),
        ("steady state / model alone", f"{steady / model_rate:.3f}"),
        ("first committed part, s after predict() (Ray up)", f"{stamps[0] - t:.2f}"),
        (f"  of which its {first_part_windows} windows at the model-alone rate, s",
         f"{first_part_windows / model_rate:.2f}"),
        ("  start-up (the rest: replicas, model load, plan, read, write), s",
         f"{stamps[0] - t - first_part_windows / model_rate:.2f}"),
        ("driver RSS peak during run, MiB", f"{sampler.rss_peak / 2**20:.0f} (before: {baseline_rss / 2**20:.0f})"),
        ("object store peak, MiB", f"{sampler.store_peak / 2**20:.1f}"),
    ]
    print(f"\nbenchmarks/pipeline.py — model {args.model}, batch {args.batch_size}, {args.precision}, "
          f"{threads} threads, genome {os.path.basename(fasta)} ({sum(lengths.values()):,} bp), "
          f"torch {torch.__version__}, {summary.parts} parts")
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")


if __name__ == "__main__":
    main()
