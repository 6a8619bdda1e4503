"""Ray job: predict a whole genome (or some chromosomes) into an atlas URL, then validate it.

Thin over the public API (``enformer_batch.predict`` / ``enformer_batch.validate``); submit with

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/genome_atlas.py s3://bucket/hg38.fa --out s3://bucket/atlases/hg38

Inside a job ``RAY_ADDRESS`` is set, so the run uses the cluster's GPU nodes (one model replica per GPU by
default). Re-submitting the same command resumes: committed parts are kept. Exits 0 only when the atlas
validates.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options of ``enformer-batch predict`` (see ``enformer-batch predict --help``)."""
    from enformer_batch.kinds import KINDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    KINDS["atlas"].add_arguments(parser)
    return parser.parse_args(argv)


def run_and_validate(args: argparse.Namespace) -> int:
    """Predict what the parsed ``predict`` options describe, then validate; 0 only for a sound atlas."""
    from enformer_batch import predict, validate
    from enformer_batch.kinds import KINDS

    config = dataclasses.replace(KINDS["atlas"].config_from_args(args), progress=False)  # job logs are not a terminal
    print(predict(config), flush=True)
    report = validate(args.out, fasta=args.fasta, storage_options=config.storage_options)
    print(report.table(), flush=True)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_and_validate(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
