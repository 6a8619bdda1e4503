"""Ray job: predict the bins overlapping a BED file's intervals into an atlas URL, then validate it.

Thin over the public API; each written row equals the whole-genome run's row for that bin. Submit with

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/regions.py s3://bucket/hg38.fa s3://bucket/promoters.bed --out s3://bucket/atlases/promoters

Re-submitting the same command resumes. Exits 0 only when the atlas validates.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """FASTA and BED, then the options of ``enformer-batch predict`` (see its ``--help``)."""
    from enformer_batch.kinds import KINDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    KINDS["atlas"].add_arguments(parser)
    parser.add_argument("bed", help="BED path or URL (chrom, start, end; 0-based half-open)")
    args = parser.parse_args(argv)
    if args.regions is not None:
        parser.error("give the BED file as the second argument, not --regions")
    args.regions = args.bed
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from genome_atlas import run_and_validate  # jobs/ is the script's directory, hence on sys.path

    return run_and_validate(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
