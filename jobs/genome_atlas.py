"""Ray job: predict a whole genome (or some chromosomes) into an atlas URL, then validate it.

Thin over the public API (``enformer_batch.predict`` / ``enformer_batch.validate``); submit with

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/genome_atlas.py s3://bucket/hg38.fa --out s3://bucket/atlases/hg38 --precision bf16

Inside a job ``RAY_ADDRESS`` is set, so the run uses the cluster's GPU nodes (one model replica per GPU by
default). Re-submitting the same command resumes: committed parts are kept. Exits 0 only when the atlas
validates.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fasta", help="FASTA path or URL (s3://, gs://, https://...), indexed via FASTA.fai")
    p.add_argument("--out", required=True, help="atlas directory or object-store prefix")
    p.add_argument("--model", default="demo", help="'demo', a checkpoint directory/URL, or hf://ORG/NAME")
    p.add_argument("--head", default="human")
    p.add_argument("--tracks", default=None, help="track selection (default: all)")
    p.add_argument("--chroms", default=None, help="comma-separated chromosomes (default: all)")
    p.add_argument("--stride", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"],
                   help="gpu: ask for GPUs even before the autoscaler has started any (give --workers)")
    p.add_argument("--workers", type=int, default=None, help="model replicas (default: one per GPU)")
    p.add_argument("--gpus-per-worker", type=float, default=1.0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--storage-option", type=key_value, action="append", default=[], metavar="KEY=VALUE")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from enformer_batch import PredictConfig, predict, validate

    args = parse_args(argv)
    options = dict(args.storage_option)
    config = PredictConfig(
        fasta=args.fasta,
        out=args.out,
        model=args.model,
        head=args.head,
        tracks=args.tracks,
        stride=args.stride,
        chroms=tuple(c for c in args.chroms.split(",") if c) if args.chroms else None,
        batch_size=args.batch_size,
        precision=args.precision,
        dtype=args.dtype,
        device=args.device,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        overwrite=args.overwrite,
        storage_options=options,
        progress=False,  # job logs are not a terminal
    )
    print(predict(config), flush=True)
    report = validate(args.out, fasta=args.fasta, storage_options=options)
    print(report.table(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
