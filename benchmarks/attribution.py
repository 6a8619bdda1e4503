"""Attribution throughput: a naive autograd loop vs enformer-batch's batched backward, side by side, demo model.

    python benchmarks/attribution.py                 # 8 regions of 500 bp, target: centre bin, all tracks
    python benchmarks/attribution.py --regions 2     # smoke test

Rows, on the same regions of a demo genome in one run (regions/s, higher is better):

* naive loop: what a user writes by hand: pyfaidx slice of the window centred on the region → one-hot in numpy
  → enformer-pytorch with ``requires_grad`` → the target (centre bin, mean over tracks) → ``torch.autograd.grad``
  → input × gradient and hypothetical contributions of the region's rows in numpy; one region at a time.
* attributor: ``enformer_batch.attribution.Attributor`` on one device: codes read by our genome reader, one-hot
  built on the device, batches of ``--batch-size`` windows per backward, only the regions' rows copied back.
* attribute job: ``enformer_batch.attribute`` on a local Ray cluster started beforehand, one replica (actor
  start-up, model load, reading the FASTA and the Parquet commit included).

Also printed: the cost of one attribution relative to one forward pass of the same model (the ``Predictor``'s
inference path, same batch size; CPU time, which other jobs on the machine disturb less than wall time): a
backward through the whole network costs about two forwards, so ~3 would be a plain gradient's floor.
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


def naive_loop(fasta: str, regions: list[tuple[str, int, int]], model) -> tuple[float, list[np.ndarray]]:
    import pyfaidx
    import torch

    t = time.perf_counter()
    genome = pyfaidx.Fasta(fasta, as_raw=True)
    out = []
    for chrom, start, end in regions:
        centre = (start + end) // 2
        window = str(genome[chrom][centre - INPUT // 2 : centre + INPUT // 2])
        x = torch.from_numpy(ONEHOT[np.frombuffer(window.encode(), np.uint8)])[None].requires_grad_(True)
        y = model(x, head="human")[0]
        f = y[y.shape[0] // 2].mean()
        (grad,) = torch.autograd.grad(f, x)
        g = grad[0].numpy()
        lo, hi = INPUT // 2 + start - centre, INPUT // 2 + end - centre
        attr = (x[0].detach().numpy() * g).sum(-1)[lo:hi]
        hyp = (g - g.mean(-1, keepdims=True))[lo:hi]
        out.append(np.concatenate([attr[:, None], hyp], axis=1))
    return time.perf_counter() - t, out


def attributor_run(fasta: str, regions: list[tuple[str, int, int]], batch_size: int,
                   ) -> tuple[float, list[np.ndarray], float, object]:
    """(seconds, rows per region, CPU seconds of the attributions over those of a plain forward of the same
    windows, the attributor). CPU time, not wall time, for the ratio: other jobs on the machine slow both."""
    from enformer_batch.attribution import Attributor, center_bins, region_rows
    from enformer_batch.genome import FastaSource, read_codes
    from enformer_batch.inference import Predictor
    from enformer_batch.settings import InferenceSettings

    settings = InferenceSettings(model="demo", precision="fp32", dtype="float32", compile="off",
                                 batch_size=batch_size)
    predictor = Predictor(settings, device="cpu")
    attributor = Attributor(predictor, batch_size=batch_size)
    geometry = attributor.geometry
    t = time.perf_counter()
    source = FastaSource(fasta)
    lengths = source.lengths()
    fh = source.open()
    try:
        codes = np.stack([read_codes(fh, c, lengths[c], (s + e) // 2 - INPUT // 2, (s + e) // 2 + INPUT // 2)
                          for c, s, e in regions])
    finally:
        fh.close()
    bins = np.stack([center_bins(geometry)] * len(regions))
    rows = [region_rows(geometry, s, e, (s + e) // 2) for _, s, e in regions]
    cpu = time.process_time()
    got = attributor.attribute(codes, bins, rows)
    attribution_cpu = time.process_time() - cpu
    seconds = time.perf_counter() - t
    cpu = time.process_time()
    predictor.predict(codes)
    cost = attribution_cpu / (time.process_time() - cpu)
    return seconds, [np.concatenate([a.attr[:, None], a.hyp], axis=1) for a in got], cost, attributor


def job_run(fasta: str, regions: list[tuple[str, int, int]], work: str, batch_size: int, threads: int) -> float:
    from enformer_batch import AttributionConfig, attribute

    bed = os.path.join(work, "regions.bed")
    with open(bed, "w") as f:
        f.writelines(f"{c}\t{s}\t{e}\n" for c, s, e in regions)
    t = time.perf_counter()
    attribute(AttributionConfig(fasta=fasta, regions=bed, out=os.path.join(work, "attr"), batch_size=batch_size,
                                workers=1, threads_per_worker=threads, progress=False))
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", type=int, default=8, help="number of regions")
    parser.add_argument("--length", type=int, default=500, help="region length in bp")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per backward pass (ours)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (both sides)")
    args = parser.parse_args()

    # Imported here, not at the top, so that --help answers without loading torch.
    import enformer_pytorch
    import torch

    from enformer_batch.demo import DemoChrom, write_demo_genome
    from enformer_batch.loader import load_model

    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="bench-attribution-")
    fasta = write_demo_genome(os.path.join(work, "g.fa"), (DemoChrom("chr1", 400_000 + 20_000 * args.regions),))
    regions = [("chr1", 200_000 + 20_000 * k, 200_000 + 20_000 * k + args.length) for k in range(args.regions)]

    ours = load_model("demo").model
    reference = enformer_pytorch.Enformer.from_hparams(**ours.config.to_dict()).eval()
    reference.load_state_dict(ours.state_dict())

    naive_s, naive = naive_loop(fasta, regions, reference)
    ours_s, got, cost, attributor = attributor_run(fasta, regions, args.batch_size)
    worst = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(got, naive))

    import ray

    # address="local": a cluster of our own even where a `ray start` head runs on this machine
    ray.init(address="local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, logging_level="ERROR")
    try:
        job_s = job_run(fasta, regions, work, args.batch_size, args.threads)
    finally:
        ray.shutdown()

    n = len(regions)
    print(f"{n} regions of {args.length} bp, demo model, target: centre bin (mean of 12 tracks), fp32, "
          f"{args.threads} torch threads, batch {args.batch_size}")
    print("| method | seconds | regions/s | vs naive |")
    print("|---|---:|---:|---:|")
    print(f"| naive loop (enformer-pytorch + torch.autograd, one region at a time) | {naive_s:.1f} | {n / naive_s:.2f} "
          "| 1.00x |")
    print(f"| Attributor (one device, batched backward) | {ours_s:.1f} | {n / ours_s:.2f} | {naive_s / ours_s:.2f}x |")
    print(f"| attribute job (Ray, 1 replica; start-up and commit included) | {job_s:.1f} | {n / job_s:.2f} | "
          f"{naive_s / job_s:.2f}x |")
    print(f"cost of an attribution: {cost:.2f} forward passes of the same windows (CPU time); autograd keeps "
          f"{attributor.saved_bytes / 2**20:.0f} MiB per window")
    print(f"largest difference to the naive loop's rows: {worst:.2e} of its largest value")


if __name__ == "__main__":
    main()
