"""The attribution kind: which bases of each region drive the model's prediction, as a batch job.

Owns, per the contract (docs/contract.md, "Attribution"): the target (``center``, ``region``), the run identity,
parts, output table and the coverage ``validate`` runs. Regions are read as for mutagenesis (``chr:start-end`` or a
BED, each at most ``MAX_REGION_BP``); each gets one window centred on its midpoint ``m = (s + e) // 2`` (the
mutagenesis window) and one row per position: ``region``, ``pos`` (1-based), ``ref``, ``attr`` (input × gradient)
and ``hyp_a..hyp_t`` (hypothetical contributions), float32. The gradients are ``attribution.Attributor``'s: one
batched backward per batch of windows through the replica ensemble and the augmentation passes, in fp32 unless
``--precision`` says otherwise.

A part holds whole regions (consecutive in the input, of one chromosome, at most ``regions_per_part``): a
region's gradient comes from one backward over its whole window, so splitting a region would repeat it. Progress
counts regions.
"""

from __future__ import annotations

import argparse
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..engine import RunError, RunOptions, RunSummary, run_job
from ..genome import N_CODE, FastaSource, read_codes
from ..settings import CHECKPOINT_MODES, InferenceSettings, ModelInfo, NonFiniteOutput, attribution_precision
from ..store import OutputStore, PartRecord, codes_digest
from ..windows import Geometry
from .arguments import add_model_arguments, run_options
from .base import ChromCoverage, FastaJob, codes_problems
from .mutagenesis import MAX_REGION_BP, Region, parse_regions

if TYPE_CHECKING:  # the driver never imports torch: the gradient code loads on replicas only
    from ..attribution import Attribution, Attributor
    from ..inference import Predictor

BASES = "ACGT"
TARGETS = ("center", "region")
HYP_COLUMNS = ("hyp_a", "hyp_c", "hyp_g", "hyp_t")
ATTRIBUTION_SCHEMA = pa.schema(
    [pa.field("region", pa.string(), nullable=False), pa.field("pos", pa.int64(), nullable=False),
     pa.field("ref", pa.string(), nullable=False), pa.field("attr", pa.float32(), nullable=False)]
    + [pa.field(name, pa.float32(), nullable=False) for name in HYP_COLUMNS]
)


def check_target(target: str) -> None:
    """``--target``: ``center`` or ``region`` (one line otherwise)."""
    if target.startswith("gene:"):
        raise ValueError(f"--target {target}: gene targets need gene annotations (--genes), which this version does "
                         "not read yet; use center or region")
    if target not in TARGETS:
        raise ValueError(f"--target must be {' or '.join(TARGETS)}, got {target!r}")


@dataclass(frozen=True)
class AttributionPart:
    """Regions ``[first, end)`` of the input (the engine's ``Part``), all on ``chrom``; progress counts regions."""

    chrom: str
    first: int
    regions: tuple[Region, ...]
    length: int  # the chromosome's

    @property
    def end(self) -> int:
        return self.first + len(self.regions)

    @property
    def name(self) -> str:
        return f"part-r{self.first:06d}-{self.end:06d}.parquet"

    @property
    def units(self) -> int:
        return len(self.regions)


def attribution_parts(regions: list[Region], lengths: Mapping[str, int], per_part: int) -> list[AttributionPart]:
    """Consecutive regions of one chromosome, at most ``per_part`` to a part, in input order."""
    parts: list[AttributionPart] = []
    group: list[Region] = []
    first = 0
    for i, region in enumerate(regions):
        if group and (region.chrom != group[0].chrom or len(group) == per_part):
            parts.append(AttributionPart(group[0].chrom, first, tuple(group), lengths[group[0].chrom]))
            group, first = [], i
        group.append(region)
    if group:
        parts.append(AttributionPart(group[0].chrom, first, tuple(group), lengths[group[0].chrom]))
    return parts


def plan_parts(identity: Mapping) -> list[AttributionPart]:
    """The parts of an attribution run, from its identity (the run and ``validate`` both plan with this)."""
    regions = [Region(c, s, e, f"{c}:{s}-{e}") for c, s, e in identity["regions"]]
    return attribution_parts(regions, identity["fasta"]["chromosomes"], identity["regions_per_part"])


# --- on the replicas ------------------------------------------------------------------------------------------

# One Attributor per predictor (its memory probe and batch size), built on first use; a predictor runs several
# parts at once (threads), whose backward passes take turns on the device (``Attributor`` locks).
_ATTRIBUTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ATTRIBUTORS_LOCK = threading.Lock()


def attributor_for(predictor: Predictor, checkpoint: str) -> Attributor:
    with _ATTRIBUTORS_LOCK:
        attributor = _ATTRIBUTORS.get(predictor)
        if attributor is None:
            from ..attribution import Attributor

            attributor = _ATTRIBUTORS[predictor] = Attributor(
                predictor, checkpoint=checkpoint, batch_size=predictor.settings.batch_size,
                memory_share=predictor.memory_share)
        return attributor


@dataclass(frozen=True)
class AttributionResult:
    refs: list[str]  # reference letters of every row, regions in order
    attributions: list[Attribution]


@dataclass(frozen=True)
class AttributionMode:
    fasta: FastaSource
    geometry: Geometry
    target: str
    log: bool
    checkpoint: str = "auto"
    unit: str = "region"

    def read(self, part: AttributionPart) -> np.ndarray:
        """The windows ``[regions, input_length]`` (uint8 codes), each centred on its region's midpoint."""
        half = self.geometry.input_length // 2
        fasta = self.fasta.open()
        try:
            return np.stack([read_codes(fasta, part.chrom, part.length, r.centre - half, r.centre + half)
                             for r in part.regions])
        finally:
            fasta.close()

    def infer(self, predictor: Predictor, part: AttributionPart, codes: np.ndarray) -> AttributionResult:
        g = self.geometry
        from ..attribution import center_bins, region_bins, region_rows

        rows = [region_rows(g, r.start, r.end, r.centre) for r in part.regions]
        if self.target == "center":
            bins = np.stack([center_bins(g)] * len(part.regions))
        else:
            bins = np.stack([region_bins(g, r.start, r.end, r.centre) for r in part.regions])
        try:
            got = attributor_for(predictor, self.checkpoint).attribute(codes, bins, rows, log=self.log)
        except NonFiniteOutput as e:
            bad = ", ".join(part.regions[k].label for k in e.window_indices[:3])
            raise RunError(f"the model's target or its gradient is NaN or infinite for region(s) {bad}") from None
        refs = [BASES[c] if c != N_CODE else "N" for k, (lo, hi) in enumerate(rows) for c in codes[k, lo:hi]]
        return AttributionResult(refs, got)

    def table(self, part: AttributionPart, result: AttributionResult, info: ModelInfo) -> pa.Table:
        labels = np.concatenate([np.full(r.end - r.start, r.label, dtype=object) for r in part.regions])
        pos = np.concatenate([np.arange(r.start + 1, r.end + 1, dtype=np.int64) for r in part.regions])
        attr = np.concatenate([a.attr for a in result.attributions])
        hyp = np.concatenate([a.hyp for a in result.attributions])
        columns = [pa.array(labels, pa.string()), pa.array(pos), pa.array(result.refs, pa.string()),
                   pa.array(attr, pa.float32())] + [pa.array(hyp[:, c], pa.float32()) for c in range(4)]
        return pa.Table.from_arrays(columns, schema=ATTRIBUTION_SCHEMA)

    def tally(self, result: AttributionResult) -> tuple[int, dict]:
        return len(result.attributions), {}

    def digest(self, codes: np.ndarray) -> str:
        return codes_digest(codes)


# --- the job --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributionConfig(RunOptions):
    """Attribution of regions (see ``RunOptions`` for the model and replica settings; ``precision`` ``auto`` means
    fp32 here: gradients in bf16 keep 2-3 significant digits)."""

    fasta: str
    regions: str  # chr:start-end, or a BED path or URL
    target: str = "center"
    log: bool = False
    checkpoint: str = "auto"  # activation checkpointing per augmentation pass (attribution.Attributor)
    max_region_bp: int = MAX_REGION_BP
    regions_per_part: int = 64

    def inference_settings(self, dtype: str = "float32") -> InferenceSettings:
        settings = super().inference_settings(dtype)
        # The model runs eager for gradients: a compiled model would only be compiled for inference.
        return replace(settings, precision=attribution_precision(settings.precision), compile="off")

    def check(self) -> None:
        super().check()
        check_target(self.target)
        if self.checkpoint not in CHECKPOINT_MODES:
            raise ValueError(f"--checkpoint must be one of {', '.join(CHECKPOINT_MODES)}, got {self.checkpoint!r}")
        if self.regions_per_part < 1:
            raise ValueError("regions_per_part must be at least 1")


class AttributionJob(FastaJob):
    options: AttributionConfig

    def make_mode(self, geometry: Geometry) -> AttributionMode:
        o = self.options
        return AttributionMode(self.fasta, geometry, o.target, o.log, o.checkpoint)

    def read_inputs(self) -> None:
        self.regions = parse_regions(self.options.regions, self.lengths, self.options.storage_options,
                                     self.options.max_region_bp)

    def identity_fields(self, info: ModelInfo, previous: Mapping | None) -> dict:
        return {
            "mode": "attribution",
            "regions": [[r.chrom, r.start, r.end] for r in self.regions],
            "target": self.options.target,
            "log": self.options.log,
            "regions_per_part": self.options.regions_per_part,
        }

    def totals(self, identity: Mapping, parts: list[AttributionPart]) -> dict:
        return {"parts": len(parts), "units": len(self.regions),
                "positions": sum(r.end - r.start for r in self.regions)}


def attribute(config: AttributionConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Attributions of every position of every region (or resume computing them); returns the run's summary."""
    return run_job(AttributionJob(config, KIND), on_part)


# --- validation -----------------------------------------------------------------------------------------------


class AttributionCoverage:
    """Attribution tables: each part holds every position of each of its regions once, and nothing else."""

    unit = "rows"

    def __init__(self, identity: Mapping, store: OutputStore):
        self.store = store
        self.geometry = Geometry(**identity["geometry"])
        self.plan = plan_parts(identity)
        self.coverage: dict[str, ChromCoverage] = {}
        for part in self.plan:
            cov = self.coverage.setdefault(part.chrom, ChromCoverage(part.chrom, part.length, 0))
            cov.bins_expected += sum(r.end - r.start for r in part.regions)

    def fasta_chromosomes(self) -> list[str]:
        return list(self.coverage)

    def planned_paths(self) -> dict:
        return {self.store.part_relpath(p.chrom, p.name): p for p in self.plan}

    def with_inputs(self, planned: Mapping, inputs: Mapping[str, str], storage_options) -> Mapping:
        return planned

    def checker(self, inputs: Mapping[str, str], fasta: str | None, storage_options) -> AttributionChecker:
        return AttributionChecker(ATTRIBUTION_SCHEMA, fasta=fasta,
                                  storage_options=tuple(sorted(dict(storage_options or {}).items())),
                                  geometry=self.geometry)

    def merge(self, path: str, part: AttributionPart, rows: int) -> None:
        cov = self.coverage[part.chrom]
        cov.bins_found += rows
        cov.parts += 1

    def finish(self, complete: bool, inputs: Mapping[str, str], storage_options,
               ) -> tuple[list[ChromCoverage], list[str]]:
        return list(self.coverage.values()), []


@dataclass(frozen=True)
class AttributionChecker:
    """Checks an attribution part whole in its task: every position of each of its regions exactly once."""

    schema: pa.Schema
    columns: tuple[str, ...] = ("region", "pos", "ref")
    fasta: str | None = None  # compare the bases under each part with this genome's (None: not checked)
    storage_options: tuple = ()
    geometry: Geometry | None = None

    def summarise(self, path: str, part: AttributionPart, table: pa.Table) -> tuple[list[str], int]:
        got = Counter(zip(table.column("region").to_pylist(), table.column("pos").to_pylist()))
        expected = Counter((r.label, q + 1) for r in part.regions for q in range(r.start, r.end))
        problems = []
        if got != expected:
            extra, missing = got - expected, expected - got
            what = (f"{sum(missing.values())} position(s) missing" if missing else "") + (
                ", " if missing and extra else "") + (f"{sum(extra.values())} unexpected or repeated" if extra else "")
            problems.append(f"part {path}: not every position of its regions exactly once ({what})")
        if any(b not in "ACGTN" for b in set(table.column("ref").to_pylist())):
            problems.append(f"part {path}: a ref that is not A, C, G, T or N")
        return problems, table.num_rows

    def check_codes(self, path: str, part: AttributionPart, recorded: str) -> list[str]:
        reader = AttributionMode(FastaSource(self.fasta, dict(self.storage_options)), self.geometry, "center", False)
        labels = ", ".join(r.label for r in part.regions[:3]) + (", ..." if len(part.regions) > 3 else "")
        return codes_problems(reader, self.fasta, path, part, recorded, f"regions {labels}")


# --- the kind -------------------------------------------------------------------------------------------------


class AttributionKind:
    """Attribution (``enformer-batch attribute``)."""

    name = "attribution"
    command = "attribute"
    config = AttributionConfig
    help = "which bases drive a prediction: input x gradient and hypothetical contributions over regions"
    description = (
        f"For each region [s, e) (at most {MAX_REGION_BP:,} bp), one model input centred on m = (s + e) // 2; the "
        "target f = sum over bins B of the mean over --tracks of the prediction (B: the centre bin, or with "
        "--target region the bins overlapping the region; --log: ln(1 + f)), differentiated through --rc/--shifts "
        "and replicate ensembles. Rows: region, pos (1-based), ref, attr (input x gradient), hyp_a..hyp_t "
        "(gradient minus its mean over the four bases: TF-MoDISco's hypothetical contributions), float32. "
        "--precision auto means fp32 here. Re-running resumes; export with export-attributions."
    )
    validate_inputs: Mapping[str, str] = {}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("fasta", help="FASTA path or URL")
        parser.add_argument("regions", help="chr:start-end (0-based half-open, commas allowed) or a BED file/URL")
        add_model_arguments(parser)
        parser.add_argument("--target", default="center", help="center: the centre output bin; region: the bins "
                            "overlapping the region")
        parser.add_argument("--log", action="store_true", help="differentiate ln(1 + target)")
        parser.add_argument("--checkpoint", default="auto", choices=CHECKPOINT_MODES,
                            help="activation checkpointing per augmentation pass; auto: only where one window "
                            "does not fit in memory without it")
        parser.add_argument("--regions-per-part", type=int, default=64, help="regions per output part")

    def config_from_args(self, args: argparse.Namespace) -> AttributionConfig:
        return AttributionConfig(fasta=args.fasta, regions=args.regions, target=args.target, log=args.log,
                                 checkpoint=args.checkpoint, regions_per_part=args.regions_per_part,
                                 **run_options(args))

    def run(self, config: AttributionConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
        return attribute(config, on_part)

    def parts(self, identity: Mapping) -> list[AttributionPart]:
        return plan_parts(identity)

    def schema(self, identity: Mapping) -> pa.Schema:
        return ATTRIBUTION_SCHEMA

    def coverage(self, identity: Mapping, store: OutputStore) -> AttributionCoverage:
        return AttributionCoverage(identity, store)


KIND = AttributionKind()
