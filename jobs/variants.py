"""Ray job: score every ALT allele of a VCF into a variant table URL, then validate it against the VCF.

Thin over the public API (``enformer_batch.score_variants`` / ``enformer_batch.validate``); submit with

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/variants.py s3://bucket/gwas.vcf.gz --fasta s3://bucket/hg38.fa \
            --out s3://bucket/scores/gwas --tracks '^CAGE:' --scores sad,logsad --rc

Re-submitting the same command resumes: committed parts are kept. Exits 0 only when every row of the VCF
is in the table exactly once.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options of ``enformer-batch score-variants`` (see ``enformer-batch score-variants --help``)."""
    from enformer_batch.kinds import KINDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    KINDS["variants"].add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from enformer_batch import score_variants, validate
    from enformer_batch.kinds import KINDS

    args = parse_args(argv)
    # Job logs are not a terminal: no progress bar.
    config = dataclasses.replace(KINDS["variants"].config_from_args(args), progress=False)
    print(score_variants(config), flush=True)
    report = validate(config.out, fasta=config.fasta, vcf=config.vcf, storage_options=config.storage_options)
    print(report.table(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
