"""In-silico experiments on the engine: saturation mutagenesis of regions, and arbitrary sequence edits.

Owns what is particular to them, per the contract (design.md, "Mutagenesis of a region" and edits): parsing
regions (``chr:start-end`` or a BED, each at most ``MAX_REGION_BP``) and EDITS.tsv files (errors name the
line), their parts, run identities and output tables. Everything else is the variant mode's: one shared
reference window per region (or per edit position), alternates built on the device from the shared reference
codes, scores reduced there, and the engine's commit protocol.

* Mutagenesis: the region ``[s, e)`` gets one window centred on ``m = (s + e) // 2``; every position ``q`` in
  it and each base other than the reference is an SNV scored against that window (not re-centred). A
  position whose reference base is N gets all four bases (status ``n_at_variant``). A part is at most
  ``positions_per_part`` consecutive positions of one region; it predicts the shared reference once.
* Edits: ``[start, end)`` replaced by a sequence, scored like a variant at ``pos = start + 1`` with REF the
  FASTA's bases there (empty sequence = deletion; ``start == end`` = insertion).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .engine import JobPlan, RunOptions, RunSummary, model_identity, run_job
from .genome import N_CODE, FastaSource, read_codes
from .settings import InferenceSettings, ModelInfo
from .store import PartRecord, codes_digest
from .variants import (
    RowRange,
    VariantInputs,
    VariantPart,
    VariantResult,
    _inputs,
    check_scores,
    read_variant_inputs,
    score_part,
    scores_schema,
    scores_table,
)
from .vcf import VariantRow
from .windows import ENFORMER

MAX_REGION_BP = 10_000
BASES = "ACGT"

if TYPE_CHECKING:
    from .inference import Predictor


# --- mutagenesis ----------------------------------------------------------------------------------


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
    from .atlas import parse_region
    from .predict import read_bed_records

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
    inputs = _inputs(statuses, window[None], list(range(n)), [0] * n, offsets, [1] * n, alt_codes)
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
        _check_finite(result, f"{part.region.label} positions {part.first}-{part.end - 1}")
        return labels, result

    def table(self, part: MutagenesisPart, result, info: ModelInfo) -> pa.Table:
        labels, scored = result
        leading = [[part.region.label] * len(labels.pos), labels.pos, labels.ref, labels.alt, scored.statuses]
        return scores_table(leading, scores_schema(MUTAGENESIS_FIELDS, self.scores, info.track_names), scored)

    def tally(self, result) -> tuple[int, dict]:
        _, scored = result
        return scored.sequences, {s: scored.statuses.count(s) for s in set(scored.statuses)}

    def digest(self, inputs) -> str:
        return codes_digest(inputs[1].windows)


def _check_finite(result: VariantResult, where: str) -> None:
    from .engine import RunError

    if len(result.rows) and not np.isfinite(result.scores).all():
        raise RunError(f"{where}: the model returned NaN or infinity")


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


@dataclass
class MutagenesisJob:
    options: MutagenesisConfig

    def __post_init__(self) -> None:
        self.fasta = FastaSource(self.options.fasta, dict(self.options.storage_options))
        self.mode = MutagenesisMode(self.fasta, ENFORMER.input_length, tuple(self.options.scores))

    def inference_settings(self) -> InferenceSettings:
        return self.options.inference_settings()

    def prepare(self) -> None:
        self.lengths = self.fasta.lengths()
        self.regions = parse_regions(self.options.regions, self.lengths, self.options.storage_options,
                                     self.options.max_region_bp)

    def plan(self, info: ModelInfo) -> JobPlan:
        o = self.options
        self.mode = MutagenesisMode(self.fasta, info.geometry.input_length, tuple(o.scores))
        parts = mutagenesis_parts(self.regions, self.lengths, o.positions_per_part)
        identity = {
            **model_identity(o, info),
            "mode": "mutagenesis",
            "fasta": {"name": self.fasta.name, "chromosomes": dict(self.lengths)},
            "regions": [[r.chrom, r.start, r.end] for r in self.regions],
            "scores": list(o.scores),
            "positions_per_part": o.positions_per_part,
        }
        totals = {"parts": len(parts), "units": sum(p.units for p in parts),
                  "positions": sum(r.end - r.start for r in self.regions)}
        return JobPlan(identity=identity, totals=totals, parts=parts)


def mutagenesis(config: MutagenesisConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Score every SNV of every position of the regions (or resume doing so); returns the run's summary."""
    return run_job(MutagenesisJob(config), on_part)


def planned_mutagenesis_parts(identity: Mapping) -> list[MutagenesisPart]:
    """The parts a mutagenesis run planned, re-derived from its manifest (for validate)."""
    regions = [Region(c, s, e, f"{c}:{s}-{e}") for c, s, e in identity["regions"]]
    return mutagenesis_parts(regions, identity["fasta"]["chromosomes"], identity["positions_per_part"])


# --- edits ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    line: int
    name: str
    chrom: str
    start: int
    end: int
    sequence: str


def read_edits(url: str, lengths: Mapping[str, int], storage_options: Mapping[str, str] | None = None) -> list[Edit]:
    """EDITS.tsv: ``name chrom start end sequence`` per line, tab-separated, no header, ``#`` comments.

    0-based half-open; an empty sequence deletes ``[start, end)``, ``start == end`` inserts before ``start``.
    """
    from .predict import read_text_lines

    lines = read_text_lines(url, "EDITS", storage_options)
    edits = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        where = f"{url} line {number}"
        fields = line.split("\t")
        if len(fields) == 4:
            fields.append("")
        if len(fields) != 5:
            raise ValueError(f"{where}: expected 5 tab-separated fields (name chrom start end sequence), "
                             f"got {len(fields)}")
        name, chrom, start_text, end_text, sequence = fields
        try:
            start, end = int(start_text), int(end_text)
        except ValueError:
            raise ValueError(f"{where}: start and end must be integers; got {start_text!r}, {end_text!r}") from None
        if chrom not in lengths:
            raise ValueError(f"{where}: chromosome {chrom!r} is not in the FASTA")
        if not 0 <= start <= end <= lengths[chrom]:
            raise ValueError(f"{where}: needs 0 <= start <= end <= {lengths[chrom]:,} (the length of {chrom}); "
                             f"got {start}-{end}")
        if start == end and not sequence:
            raise ValueError(f"{where}: an empty sequence at start == end changes nothing")
        if sequence.strip("ACGTNacgtn"):
            raise ValueError(f"{where}: the sequence must be bases (A, C, G, T, N)")
        edits.append(Edit(number, name, chrom, start, end, sequence.upper()))
    if not edits:
        raise ValueError(f"EDITS {url} holds no edits")
    return edits


@dataclass(frozen=True)
class EditPart(RowRange):
    chrom: str
    first: int
    end: int
    length: int
    edits: tuple[Edit, ...]


def edit_parts(edits: list[Edit], lengths: Mapping[str, int], per_part: int) -> list[EditPart]:
    by_chrom: dict[str, list[Edit]] = {}
    for e in edits:
        by_chrom.setdefault(e.chrom, []).append(e)
    return [
        EditPart(chrom, i, min(i + per_part, len(rows)), lengths[chrom], tuple(rows[i : i + per_part]))
        for chrom, rows in by_chrom.items()
        for i in range(0, len(rows), per_part)
    ]


EDIT_FIELDS = (
    pa.field("name", pa.string(), nullable=False), pa.field("start", pa.int64(), nullable=False),
    pa.field("end", pa.int64(), nullable=False), pa.field("sequence", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
)


def edit_as_variant(edit: Edit, fasta) -> VariantRow:
    """An edit is a variant at ``pos = start + 1`` whose REF is whatever the FASTA holds in ``[start, end)``."""
    ref = str(fasta[edit.chrom][edit.start : edit.end]) if edit.end > edit.start else ""
    return VariantRow(edit.line, edit.chrom, edit.start + 1, edit.name, ref, edit.sequence)


@dataclass(frozen=True)
class EditMode:
    fasta: FastaSource
    input_length: int
    scores: tuple[str, ...]
    unit: str = "edit"

    def read(self, part: EditPart) -> VariantInputs:
        fasta = self.fasta.open()
        try:
            rows = tuple(edit_as_variant(e, fasta) for e in part.edits)
        finally:
            fasta.close()
        return read_variant_inputs(self.fasta, VariantPart(part.chrom, part.first, part.end, part.length, rows),
                                   self.input_length, 0)

    def infer(self, predictor: Predictor, part: EditPart, inputs: VariantInputs) -> VariantResult:
        result = score_part(predictor, inputs, self.scores)
        _check_finite(result, f"{part.chrom} edits {part.first}-{part.end - 1}")
        return result

    def table(self, part: EditPart, result: VariantResult, info: ModelInfo) -> pa.Table:
        e = part.edits
        leading = [[x.name for x in e], [x.start for x in e], [x.end for x in e], [x.sequence for x in e],
                   result.statuses]
        return scores_table(leading, scores_schema(EDIT_FIELDS, self.scores, info.track_names), result)

    def tally(self, result: VariantResult) -> tuple[int, dict]:
        return result.sequences, {s: result.statuses.count(s) for s in set(result.statuses)}

    def digest(self, inputs: VariantInputs) -> str:
        return codes_digest(inputs.windows)


@dataclass(frozen=True)
class EditsConfig(RunOptions):
    """Sequence edits from an EDITS.tsv (see ``RunOptions`` for the model and replica settings)."""

    fasta: str
    edits: str
    scores: tuple[str, ...] = ("sad",)
    edits_per_part: int = 64

    def check(self) -> None:
        super().check()
        check_scores(tuple(self.scores))
        if self.edits_per_part < 1:
            raise ValueError("edits_per_part must be at least 1")


@dataclass
class EditsJob:
    options: EditsConfig

    def __post_init__(self) -> None:
        self.fasta = FastaSource(self.options.fasta, dict(self.options.storage_options))
        self.mode = EditMode(self.fasta, ENFORMER.input_length, tuple(self.options.scores))

    def inference_settings(self) -> InferenceSettings:
        return self.options.inference_settings()

    def prepare(self) -> None:
        self.lengths = self.fasta.lengths()
        self.edits = read_edits(self.options.edits, self.lengths, self.options.storage_options)

    def plan(self, info: ModelInfo) -> JobPlan:
        o = self.options
        self.mode = EditMode(self.fasta, info.geometry.input_length, tuple(o.scores))
        parts = edit_parts(self.edits, self.lengths, o.edits_per_part)
        rows_by_chrom: dict[str, int] = {}
        for e in self.edits:
            rows_by_chrom[e.chrom] = rows_by_chrom.get(e.chrom, 0) + 1
        identity = {
            **model_identity(o, info),
            "mode": "edits",
            "fasta": {"name": self.fasta.name, "chromosomes": dict(self.lengths)},
            "edits": [[e.name, e.chrom, e.start, e.end, e.sequence] for e in self.edits],
            "rows_by_chrom": rows_by_chrom,
            "scores": list(o.scores),
            "edits_per_part": o.edits_per_part,
        }
        return JobPlan(identity=identity, totals={"parts": len(parts), "units": len(self.edits)}, parts=parts)


def edits(config: EditsConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Score every edit of an EDITS.tsv (or resume doing so); returns the run's summary."""
    return run_job(EditsJob(config), on_part)


def edit_predictions(fasta: str, edits_url: str, name: str, settings: InferenceSettings,
                     storage_options: Mapping[str, str] | None = None,
                     ) -> tuple[Edit, np.ndarray, np.ndarray, int, ModelInfo]:
    """Reference and alternate predictions ``[output_bins, tracks]`` of one named edit, computed here (no Ray).

    Returns ``(edit, ref, alt, first_bp, info)``; ``first_bp`` is where the reference output's first bin starts.
    """
    import torch

    source = FastaSource(fasta, dict(storage_options or {}))
    lengths = source.lengths()
    matches = [e for e in read_edits(edits_url, lengths, storage_options) if e.name == name]
    if not matches:
        raise ValueError(f"no edit named {name!r} in {edits_url}")
    edit = matches[0]
    from .inference import Predictor

    predictor = Predictor(settings)
    geometry = predictor.info.geometry
    part = EditPart(edit.chrom, 0, 1, lengths[edit.chrom], (edit,))
    inputs = EditMode(source, geometry.input_length, ("sad",)).read(part)
    from .variants import alternate_codes

    window = torch.tensor(inputs.windows[0])
    alt = alternate_codes(window, int(inputs.offset[0]), int(inputs.ref_len[0]),
                          torch.tensor(inputs.alt_codes), geometry.input_length)
    values, _ = predictor.predict(np.stack([inputs.windows[0, : geometry.input_length], alt.numpy()]))
    first_bp = edit.start - geometry.input_length // 2 + geometry.context
    return edit, values[0].astype(np.float32), values[1].astype(np.float32), first_bp, predictor.info
