"""The edits kind: arbitrary sequence edits from an EDITS.tsv, each scored like a variant.

Owns, per the contract (docs/contract.md, "Variants and sequence edits"): parsing EDITS.tsv (errors name the
line), the parts, run identity and output table, the coverage ``validate`` runs (the manifest lists every
edit, so each is checked to appear exactly once), and ``edit_predictions`` for ``plot-edit``. An edit
replaces ``[start, end)`` by a sequence and is scored like a variant at ``pos = start + 1`` with REF the
FASTA's bases there (empty sequence = deletion; ``start == end`` = insertion). Scoring is the scoring
core's (``kinds.scoring``), orchestration the engine's.
"""

from __future__ import annotations

import argparse
import functools
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..engine import RunOptions, RunSummary, run_job
from ..genome import FastaSource
from ..regions import read_text_lines
from ..settings import InferenceSettings, ModelInfo
from ..store import OutputStore, PartRecord, codes_digest
from ..vcf import VariantRow
from ..windows import Geometry
from .arguments import add_model_arguments, run_options
from .base import FastaJob
from .scoring import (
    RowCoverage,
    RowRange,
    VariantInputs,
    VariantResult,
    add_scores_argument,
    alternate_codes,
    check_finite,
    check_scores,
    read_variant_inputs,
    row_part_bounds,
    score_part,
    scores_schema,
    scores_table,
    status_counts,
)

if TYPE_CHECKING:
    from ..inference import Predictor


@dataclass(frozen=True)
class Edit:
    line: int  # in the EDITS.tsv; 0 for an edit re-planned from a manifest (which lists edits, not lines)
    name: str
    chrom: str
    start: int
    end: int
    sequence: str


def read_edits(url: str, lengths: Mapping[str, int], storage_options: Mapping[str, str] | None = None) -> list[Edit]:
    """EDITS.tsv: ``name chrom start end sequence`` per line, tab-separated, no header, ``#`` comments.

    0-based half-open; an empty sequence deletes ``[start, end)`` (the line still has its fifth, empty field:
    a line of four fields is an error, not a deletion), ``start == end`` inserts before ``start``.
    """
    lines = read_text_lines(url, "EDITS", storage_options)
    edits = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        where = f"{url} line {number}"
        fields = line.split("\t")
        if len(fields) == 4:  # a lost sequence (or a stripped tab) must not silently become a deletion
            raise ValueError(f"{where}: expected 5 tab-separated fields (name chrom start end sequence), got 4; "
                             "a deletion ends with a tab and an empty sequence")
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
    """Parts of at most ``per_part`` consecutive edits of one chromosome, chromosomes in order of appearance."""
    by_chrom: dict[str, list[Edit]] = {}
    for e in edits:
        by_chrom.setdefault(e.chrom, []).append(e)
    return [
        EditPart(chrom, first, end, lengths[chrom], tuple(by_chrom[chrom][first:end]))
        for chrom, first, end in row_part_bounds({c: len(rows) for c, rows in by_chrom.items()}, per_part)
    ]


def plan_parts(identity: Mapping) -> list[EditPart]:
    """The parts of an edits run, from its identity (the run and ``validate`` both plan with this)."""
    edits = [Edit(0, name, chrom, start, end, sequence) for name, chrom, start, end, sequence in identity["edits"]]
    return edit_parts(edits, identity["fasta"]["chromosomes"], identity["edits_per_part"])


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
        return read_variant_inputs(self.fasta, part.chrom, part.length, rows, self.input_length, 0)

    def infer(self, predictor: Predictor, part: EditPart, inputs: VariantInputs) -> VariantResult:
        result = score_part(predictor, inputs, self.scores)
        check_finite(result, f"{part.chrom} edits {part.first}-{part.end - 1}")
        return result

    def table(self, part: EditPart, result: VariantResult, info: ModelInfo) -> pa.Table:
        e = part.edits
        leading = [[x.name for x in e], [x.start for x in e], [x.end for x in e], [x.sequence for x in e],
                   result.statuses]
        return scores_table(leading, scores_schema(EDIT_FIELDS, self.scores, info.track_names), result)

    def tally(self, result: VariantResult) -> tuple[int, dict]:
        return status_counts(result)

    def digest(self, inputs: VariantInputs) -> str:
        return codes_digest(inputs.windows)


@functools.lru_cache(maxsize=4)
def edit_reader(fasta: str, storage_options: tuple, input_length: int) -> EditMode:
    """The edits reader stage on ``fasta``, once per task process: what ``validate --fasta`` re-reads with."""
    return EditMode(FastaSource(fasta, dict(storage_options)), input_length, ())


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


class EditsJob(FastaJob):
    options: EditsConfig

    def make_mode(self, geometry: Geometry) -> EditMode:
        return EditMode(self.fasta, geometry.input_length, tuple(self.options.scores))

    def read_inputs(self) -> None:
        self.edits = read_edits(self.options.edits, self.lengths, self.options.storage_options)

    def identity_fields(self, info: ModelInfo, previous: Mapping | None) -> dict:
        rows_by_chrom: dict[str, int] = {}
        for e in self.edits:
            rows_by_chrom[e.chrom] = rows_by_chrom.get(e.chrom, 0) + 1
        return {
            "mode": "edits",
            "edits": [[e.name, e.chrom, e.start, e.end, e.sequence] for e in self.edits],
            "rows_by_chrom": rows_by_chrom,
            "scores": list(self.options.scores),
            "edits_per_part": self.options.edits_per_part,
        }

    def totals(self, identity: Mapping, parts: list[EditPart]) -> dict:
        return {"parts": len(parts), "units": len(self.edits)}


def edits(config: EditsConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Score every edit of an EDITS.tsv (or resume doing so); returns the run's summary."""
    return run_job(EditsJob(config, KIND), on_part)


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
    from ..inference import Predictor

    predictor = Predictor(settings)
    geometry = predictor.info.geometry
    part = EditPart(edit.chrom, 0, 1, lengths[edit.chrom], (edit,))
    inputs = EditMode(source, geometry.input_length, ("sad",)).read(part)
    window = torch.tensor(inputs.windows[0])
    alt = alternate_codes(window, int(inputs.offset[0]), int(inputs.ref_len[0]),
                          torch.tensor(inputs.alt_codes), geometry.input_length)
    values, _ = predictor.predict(np.stack([inputs.windows[0, : geometry.input_length], alt.numpy()]))
    first_bp = edit.start - geometry.input_length // 2 + geometry.context
    return edit, values[0].astype(np.float32), values[1].astype(np.float32), first_bp, predictor.info


# --- validation -----------------------------------------------------------------------------------


class EditCoverage(RowCoverage):
    """Edit tables: the manifest lists every edit, so each is checked to appear exactly once."""

    def __init__(self, identity: Mapping, store: OutputStore):
        super().__init__(identity, store, plan_parts(identity), KIND.schema(identity), identity["rows_by_chrom"],
                         keys=("name", "start", "end", "sequence"),
                         reader=functools.partial(edit_reader, input_length=identity["geometry"]["input_length"]))

    def wants_keys(self, inputs: Mapping[str, str]) -> bool:
        return True  # the manifest lists every edit

    def expected(self, inputs: Mapping[str, str], storage_options) -> Counter:
        return Counter((chrom, name, start, end, seq) for name, chrom, start, end, seq in self.identity["edits"])


# --- the kind -------------------------------------------------------------------------------------


class EditsKind:
    """Sequence edits (``enformer-batch edits``)."""

    name = "edits"
    command = "edits"
    config = EditsConfig
    help = "score sequence edits (deletions, insertions, replacements) from an EDITS.tsv"
    description = (
        "EDITS.tsv: no header, '#' comments, tab-separated name chrom start end sequence (0-based half-open; "
        "empty sequence = deletion of [start, end), the line ending in a tab; start == end = insertion before "
        "start). Each edit is scored like a variant centred on start: the reference input, and the input with "
        "[start, end) replaced. Rows: name, start, end, sequence, status, then <score>:<track>. Re-running resumes."
    )
    validate_inputs: Mapping[str, str] = {}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("fasta", help="FASTA path or URL")
        parser.add_argument("edits", help="EDITS.tsv path or URL")
        add_model_arguments(parser)
        add_scores_argument(parser)

    def config_from_args(self, args: argparse.Namespace) -> EditsConfig:
        return EditsConfig(fasta=args.fasta, edits=args.edits, scores=args.scores, **run_options(args))

    def run(self, config: EditsConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
        return edits(config, on_part)

    def parts(self, identity: Mapping) -> list[EditPart]:
        return plan_parts(identity)

    def schema(self, identity: Mapping) -> pa.Schema:
        return scores_schema(EDIT_FIELDS, identity["scores"], [t["name"] for t in identity["tracks"]])

    def coverage(self, identity: Mapping, store: OutputStore) -> EditCoverage:
        return EditCoverage(identity, store)


KIND = EditsKind()
