"""The mutagenesis kind: saturation mutagenesis of regions, every position × the three other bases, scored.

Owns, per the contract (docs/contract.md, "Mutagenesis of a region"): parsing regions (``chr:start-end`` or
a BED, each at most ``MAX_REGION_BP``), their parts, run identity and output table, and the coverage
``validate`` runs. The region ``[s, e)`` gets one window centred on ``m = (s + e) // 2``; every position ``q``
in it and each base other than the reference is an SNV scored against that window (not re-centred). A
position whose reference base is N gets all four bases (status ``n_at_variant``). A part is at most
``positions_per_part`` consecutive positions of one region; it predicts the shared reference once. Scoring is
the scoring core's (``kinds.scoring``), orchestration the engine's.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..engine import RunOptions, RunSummary, run_job
from ..genome import N_CODE, FastaSource, read_codes
from ..regions import parse_region, read_bed_records
from ..settings import ModelInfo
from ..store import OutputStore, PartRecord, codes_digest
from ..windows import Geometry
from .arguments import add_model_arguments, run_options
from .base import ChromCoverage, FastaJob, codes_problems
from .scoring import (
    VariantInputs,
    VariantResult,
    add_scores_argument,
    check_finite,
    check_scores,
    score_part,
    scored_inputs,
    scores_schema,
    scores_table,
    status_counts,
)

if TYPE_CHECKING:
    from ..inference import Predictor

MAX_REGION_BP = 10_000
BASES = "ACGT"


@dataclass(frozen=True)
class Region:
    chrom: str
    start: int
    end: int
    source: str  # where it was given, for messages: "chr1:10-20" or "regions.bed line 3"

    @property
    def label(self) -> str:
        return f"{self.chrom}:{self.start}-{self.end}"

    @property
    def centre(self) -> int:
        return (self.start + self.end) // 2


def parse_regions(spec: str, lengths: Mapping[str, int], storage_options: Mapping[str, str] | None = None,
                  max_bp: int = MAX_REGION_BP) -> list[Region]:
    """``chr:start-end`` (0-based half-open, commas allowed) or a BED path/URL → checked regions, in order."""
    if "://" in spec or os.path.exists(spec) or spec.lower().endswith((".bed", ".bed.gz")):
        regions = [Region(c, s, e, f"{spec} line {n}")
                   for n, c, s, e in read_bed_records(spec, lengths, storage_options, what="REGIONS")]
    else:
        chrom, start, end = parse_region(spec)
        if start is None or end is None:
            raise ValueError(f"region {spec!r} needs a range: chr:start-end (0-based half-open)")
        if chrom not in lengths:
            raise ValueError(f"region {spec}: chromosome {chrom!r} is not in the FASTA")
        if end > lengths[chrom]:
            raise ValueError(f"region {spec}: end {end} is past the end of {chrom} (length {lengths[chrom]})")
        regions = [Region(chrom, start, end, spec)]
    for r in regions:
        if r.end - r.start > max_bp:
            raise ValueError(f"{r.source}: region {r.label} is {r.end - r.start:,} bp; at most {max_bp:,} bp per "
                             "region (split it, or score fewer positions at once)")
    return regions


@dataclass(frozen=True)
class MutagenesisPart:
    """Positions ``[first, end)`` of region number ``index`` (the engine's ``Part``)."""

    chrom: str
    index: int
    region: Region
    first: int
    end: int
    length: int

    @property
    def name(self) -> str:
        return f"part-r{self.index:06d}-{self.first - self.region.start:05d}.parquet"

    @property
    def units(self) -> int:
        return 3 * (self.end - self.first)


def mutagenesis_parts(regions: list[Region], lengths: Mapping[str, int], per_part: int) -> list[MutagenesisPart]:
    return [
        MutagenesisPart(r.chrom, i, r, q, min(q + per_part, r.end), lengths[r.chrom])
        for i, r in enumerate(regions)
        for q in range(r.start, r.end, per_part)
    ]


def plan_parts(identity: Mapping) -> list[MutagenesisPart]:
    """The parts of a mutagenesis run, from its identity (the run and ``validate`` both plan with this)."""
    regions = [Region(c, s, e, f"{c}:{s}-{e}") for c, s, e in identity["regions"]]
    return mutagenesis_parts(regions, identity["fasta"]["chromosomes"], identity["positions_per_part"])


@dataclass(frozen=True)
class MutantLabels:
    pos: list[int]
    ref: list[str]
    alt: list[str]


def read_mutants(fasta_source: FastaSource, part: MutagenesisPart, input_length: int,
                 ) -> tuple[MutantLabels, VariantInputs]:
    """The region's shared reference window and every SNV of the part's positions, as variant inputs."""
    half = input_length // 2
    centre = part.region.centre
    fasta = fasta_source.open()
    try:
        window = read_codes(fasta, part.chrom, part.length, centre - half, centre + half)
    finally:
        fasta.close()
    pos, refs, alts, statuses, offsets, alt_codes = [], [], [], [], [], []
    for q in range(part.first, part.end):
        offset = half + q - centre
        code = int(window[offset])
        ref = BASES[code] if code != N_CODE else "N"
        for b, base in enumerate(BASES):
            if b == code:
                continue
            pos.append(q + 1)
            refs.append(ref)
            alts.append(base)
            statuses.append("ok" if code != N_CODE else "n_at_variant")
            offsets.append(offset)
            alt_codes.append(np.array([b], np.uint8))
    n = len(pos)
    inputs = scored_inputs(statuses, window[None], list(range(n)), [0] * n, offsets, [1] * n, alt_codes)
    return MutantLabels(pos, refs, alts), inputs


MUTAGENESIS_FIELDS = (
    pa.field("region", pa.string(), nullable=False), pa.field("pos", pa.int64(), nullable=False),
    pa.field("ref", pa.string(), nullable=False), pa.field("alt", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
)


@dataclass(frozen=True)
class MutagenesisMode:
    fasta: FastaSource
    input_length: int
    scores: tuple[str, ...]
    unit: str = "mutant"

    def read(self, part: MutagenesisPart) -> tuple[MutantLabels, VariantInputs]:
        return read_mutants(self.fasta, part, self.input_length)

    def infer(self, predictor: Predictor, part: MutagenesisPart, inputs) -> tuple[MutantLabels, VariantResult]:
        labels, variant_inputs = inputs
        result = score_part(predictor, variant_inputs, self.scores)
        check_finite(result, f"{part.region.label} positions {part.first}-{part.end - 1}")
        return labels, result

    def table(self, part: MutagenesisPart, result, info: ModelInfo) -> pa.Table:
        labels, scored = result
        leading = [[part.region.label] * len(labels.pos), labels.pos, labels.ref, labels.alt, scored.statuses]
        return scores_table(leading, scores_schema(MUTAGENESIS_FIELDS, self.scores, info.track_names), scored)

    def tally(self, result) -> tuple[int, dict]:
        return status_counts(result[1])

    def digest(self, inputs) -> str:
        return codes_digest(inputs[1].windows)


@functools.lru_cache(maxsize=4)
def mutagenesis_reader(fasta: str, storage_options: tuple, input_length: int) -> MutagenesisMode:
    """The mutagenesis reader stage on ``fasta``, once per task process: what ``validate --fasta`` re-reads with."""
    return MutagenesisMode(FastaSource(fasta, dict(storage_options)), input_length, ())


@dataclass(frozen=True)
class MutagenesisConfig(RunOptions):
    """Saturation mutagenesis of regions (see ``RunOptions`` for the model and replica settings)."""

    fasta: str
    regions: str  # chr:start-end, or a BED path or URL
    scores: tuple[str, ...] = ("sad",)
    max_region_bp: int = MAX_REGION_BP
    positions_per_part: int = 256

    def check(self) -> None:
        super().check()
        check_scores(tuple(self.scores))
        if self.positions_per_part < 1:
            raise ValueError("positions_per_part must be at least 1")


class MutagenesisJob(FastaJob):
    options: MutagenesisConfig

    def make_mode(self, geometry: Geometry) -> MutagenesisMode:
        return MutagenesisMode(self.fasta, geometry.input_length, tuple(self.options.scores))

    def read_inputs(self) -> None:
        self.regions = parse_regions(self.options.regions, self.lengths, self.options.storage_options,
                                     self.options.max_region_bp)

    def identity_fields(self, info: ModelInfo, previous: Mapping | None) -> dict:
        return {
            "mode": "mutagenesis",
            "regions": [[r.chrom, r.start, r.end] for r in self.regions],
            "scores": list(self.options.scores),
            "positions_per_part": self.options.positions_per_part,
        }

    def totals(self, identity: Mapping, parts: list[MutagenesisPart]) -> dict:
        return {"parts": len(parts), "units": sum(p.units for p in parts),
                "positions": sum(r.end - r.start for r in self.regions)}


def mutagenesis(config: MutagenesisConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Score every SNV of every position of the regions (or resume doing so); returns the run's summary."""
    return run_job(MutagenesisJob(config, KIND), on_part)


# --- validation -----------------------------------------------------------------------------------


class MutagenesisCoverage:
    """Mutagenesis tables: each part holds every position of its range, with each base but the reference."""

    unit = "rows"

    def __init__(self, identity: Mapping, store: OutputStore):
        self.store = store
        self.input_length: int = identity["geometry"]["input_length"]
        self.plan = plan_parts(identity)
        self.schema = KIND.schema(identity)
        self.coverage: dict[str, ChromCoverage] = {}
        for part in self.plan:
            cov = self.coverage.setdefault(part.chrom, ChromCoverage(part.chrom, part.length, 0))
            cov.bins_expected += 3 * (part.end - part.first)

    def fasta_chromosomes(self) -> list[str]:
        return list(self.coverage)

    def planned_paths(self) -> dict:
        return {self.store.part_relpath(p.chrom, p.name): p for p in self.plan}

    def with_inputs(self, planned: Mapping, inputs: Mapping[str, str], storage_options) -> Mapping:
        return planned

    def checker(self, inputs: Mapping[str, str], fasta: str | None, storage_options) -> MutagenesisChecker:
        return MutagenesisChecker(self.schema, fasta, tuple(sorted(dict(storage_options or {}).items())),
                                  self.input_length)

    def merge(self, path: str, part: MutagenesisPart, rows: int) -> None:
        cov = self.coverage[part.chrom]
        cov.bins_found += rows
        cov.parts += 1

    def finish(self, complete: bool, inputs: Mapping[str, str], storage_options,
               ) -> tuple[list[ChromCoverage], list[str]]:
        return list(self.coverage.values()), []


@dataclass(frozen=True)
class MutagenesisChecker:
    """Checks a mutagenesis part whole in its task (every position, each other base once); sends back its rows."""

    schema: pa.Schema
    fasta: str | None = None  # compare the bases under each part with this genome's (None: not checked)
    storage_options: tuple = ()
    input_length: int = 0
    columns: tuple[str, ...] = ("region", "pos", "ref", "alt")

    def summarise(self, path: str, part: MutagenesisPart, table: pa.Table) -> tuple[list[str], int]:
        rows = list(zip(*(table.column(c).to_pylist() for c in self.columns)))
        problems = []
        if {r[0] for r in rows} != {part.region.label}:
            problems.append(f"part {path}: rows of another region than {part.region.label}")
        per_position: Counter = Counter()
        for _, pos, ref, alt in rows:
            per_position[pos] += 1
            if ref == alt or alt not in "ACGT":
                problems.append(f"part {path}: position {pos} has the mutant {ref}>{alt}")
                break
        expected = set(range(part.first + 1, part.end + 1))
        if set(per_position) != expected or any(
            n != (4 if r == "N" else 3) for (_, pos, r, _), n in ((row, per_position[row[1]]) for row in rows)
        ):
            problems.append(f"part {path}: not every position of {part.first + 1}-{part.end} with each other base "
                            "exactly once")
        return problems, len(rows)

    def check_codes(self, path: str, part: MutagenesisPart, recorded: str) -> list[str]:
        return codes_problems(mutagenesis_reader(self.fasta, self.storage_options, self.input_length), self.fasta,
                              path, part, recorded, f"region {part.region.label}")


# --- the kind -------------------------------------------------------------------------------------


class MutagenesisKind:
    """Saturation mutagenesis (``enformer-batch mutagenesis``)."""

    name = "mutagenesis"
    command = "mutagenesis"
    config = MutagenesisConfig
    help = "saturation mutagenesis: every position x the three other bases of regions, scored"
    description = (
        f"For each region [s, e) (at most {MAX_REGION_BP:,} bp), one model input centred on m = (s + e) // 2 is "
        "the shared reference; every position and each base other than the reference is an SNV scored against it "
        "(not re-centred). Rows: region, pos (1-based), ref, alt, status, then <score>:<track>. A position whose "
        "reference is N gets all four bases (status n_at_variant). Re-running resumes."
    )
    validate_inputs: Mapping[str, str] = {}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("fasta", help="FASTA path or URL")
        parser.add_argument("regions", help="chr:start-end (0-based half-open, commas allowed) or a BED file/URL")
        add_model_arguments(parser)
        add_scores_argument(parser)

    def config_from_args(self, args: argparse.Namespace) -> MutagenesisConfig:
        return MutagenesisConfig(fasta=args.fasta, regions=args.regions, scores=args.scores, **run_options(args))

    def run(self, config: MutagenesisConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
        return mutagenesis(config, on_part)

    def parts(self, identity: Mapping) -> list[MutagenesisPart]:
        return plan_parts(identity)

    def schema(self, identity: Mapping) -> pa.Schema:
        return scores_schema(MUTAGENESIS_FIELDS, identity["scores"], [t["name"] for t in identity["tracks"]])

    def coverage(self, identity: Mapping, store: OutputStore) -> MutagenesisCoverage:
        return MutagenesisCoverage(identity, store)


KIND = MutagenesisKind()
