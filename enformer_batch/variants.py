"""Variant effect scoring mode: VCF rows → reference and alternate predictions → per-track scores.

Owns what is particular to variants, per the contract (design.md, "Variants and sequence edits"): the
request and its run identity; parts of consecutive rows of one output chromosome, planned from a first
pass over the VCF and filled by a second, streaming one; each row's status (REF checked against the
FASTA); the centred reference window shared by every allele at a position (or, with ``group_bp``, by
nearby positions); alternate sequences built on the device from the shared reference codes; scores
reduced on the device so only kilobytes leave it; and the output table. Orchestration, resume and commit
are the engine's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .engine import JobPlan, RunError, RunOptions, RunSummary, model_identity, run_job
from .genome import N_CODE, FastaSource, encode, read_codes
from .settings import InferenceSettings, ModelInfo
from .store import PartRecord, codes_digest
from .vcf import ChromMatcher, VariantRow, VcfDigest, read_rows, scan
from .windows import ENFORMER, Geometry

SCORES = ("sad", "logsad", "l2", "center")
STATUSES = ("ok", "n_at_variant", "ref_mismatch", "symbolic", "unknown_chrom")
SCORED = ("ok", "n_at_variant")
DEFAULT_VARIANTS_PER_PART = 256

if TYPE_CHECKING:
    from .inference import Predictor


def check_scores(scores: tuple[str, ...]) -> None:
    """``--scores``: a non-empty subset of ``SCORES``, each named once (variants, mutagenesis and edits)."""
    unknown = [s for s in scores if s not in SCORES]
    if unknown or not scores:
        raise ValueError(f"--scores takes a comma-separated subset of {','.join(SCORES)}; got "
                         f"{','.join(scores) or 'nothing'}")
    if len(set(scores)) != len(scores):
        raise ValueError(f"--scores lists a score twice: {','.join(scores)}")


@dataclass(frozen=True)
class VariantConfig(RunOptions):
    """One variant-scoring run (see ``RunOptions`` for the model and replica settings)."""

    vcf: str
    fasta: str
    scores: tuple[str, ...] = ("sad",)
    strict: bool = False  # a REF that does not match the FASTA fails the run (before anything is computed)
    group_bp: int = 0  # >0: variants within this many bp share one reference window (not exactly centred)
    variants_per_part: int = DEFAULT_VARIANTS_PER_PART

    def check(self) -> None:
        super().check()
        check_scores(tuple(self.scores))
        if self.group_bp < 0:
            raise ValueError(f"--group-bp must be 0 (off) or positive, got {self.group_bp}")
        if self.variants_per_part < 1:
            raise ValueError("variants_per_part must be at least 1")


class RowRange:
    """Name and size of a part holding input rows ``[first, end)`` of one chromosome (variants, edits)."""

    first: int
    end: int

    @property
    def name(self) -> str:
        return f"part-{self.first:09d}-{self.end:09d}.parquet"

    @property
    def units(self) -> int:
        return self.end - self.first


@dataclass(frozen=True)
class VariantPart(RowRange):
    """Rows ``[first, end)`` of one output chromosome, in VCF order (the engine's ``Part``)."""

    chrom: str
    first: int
    end: int
    length: int  # the FASTA chromosome's length; 0 for a chromosome the FASTA lacks
    rows: tuple[VariantRow, ...] = ()


def part_bounds(rows_by_chrom: Mapping[str, int], per_part: int) -> Iterator[tuple[str, int, int]]:
    """``(chrom, first, end)`` of every part, from the per-chromosome row counts (validate re-derives these)."""
    for chrom, n in rows_by_chrom.items():
        for first in range(0, n, per_part):
            yield chrom, first, min(first + per_part, n)


def stream_parts(
    url: str, lengths: Mapping[str, int], digest: VcfDigest, per_part: int,
    storage_options: Mapping[str, str] | None = None,
) -> Iterator[VariantPart]:
    """Parts filled from a second pass over the VCF, each yielded as soon as its last row is read.

    The driver holds at most one unfinished part per chromosome, whatever the size of the VCF.
    """
    match = ChromMatcher(lengths)
    buffers: dict[str, list[VariantRow]] = {}
    done: dict[str, int] = {}
    check = VcfDigest()
    for row in read_rows(url, storage_options, check):
        chrom = match(row.chrom) or row.chrom
        buffer = buffers.setdefault(chrom, [])
        buffer.append(row)
        first = done.get(chrom, 0)
        if len(buffer) == min(per_part, digest.rows_by_chrom.get(chrom, 0) - first):
            done[chrom] = first + len(buffer)
            yield VariantPart(chrom, first, first + len(buffer), lengths.get(chrom, 0), tuple(buffer))
            buffer.clear()
    if check.sha256 != digest.sha256 or any(buffers.values()):
        raise RunError(f"{url} changed while the run was reading it; re-run to start from its new content")


# --- statuses and reference windows (a Ray task) --------------------------------------------------


def row_status(row: VariantRow, fasta, chrom: str, length: int) -> str:
    """The contract's status of a row: symbolic, unknown_chrom, ref_mismatch, n_at_variant or ok.

    REF is compared case-insensitively; a FASTA base that is N (or any non-ACGT code) matches anything and
    makes the row ``n_at_variant`` (still scored), as does nothing else. A REF running past the end of the
    chromosome is a mismatch.
    """
    if row.symbolic:
        return "symbolic"
    if length == 0:
        return "unknown_chrom"
    p = row.pos - 1
    if p + len(row.ref) > length:
        return "ref_mismatch"
    genome = read_codes(fasta, chrom, length, p, p + len(row.ref))
    given = encode(row.ref)
    known = (genome != N_CODE) & (given != N_CODE)
    if np.any(genome[known] != given[known]):
        return "ref_mismatch"
    return "n_at_variant" if np.any(genome == N_CODE) else "ok"


@dataclass
class VariantInputs:
    """What a replica needs for a part: statuses, the shared reference windows and each scored allele.

    ``windows[g]`` holds reference codes from ``centre_g - input_length // 2`` on, ``input_length + extra``
    long (the extra right flank that deletions pull in). Scored row ``j`` (row index ``rows[j]``) sits at
    input offset ``offset[j]`` of window ``group[j]``, replacing ``ref_len[j]`` bases by
    ``alt_codes[alt_start[j]:alt_start[j + 1]]``.
    """

    statuses: list[str]
    windows: np.ndarray  # uint8 [groups, input_length + extra]
    rows: np.ndarray  # int64 [scored]
    group: np.ndarray  # int64 [scored]
    offset: np.ndarray  # int64 [scored]
    ref_len: np.ndarray  # int64 [scored]
    alt_codes: np.ndarray  # uint8, concatenated
    alt_start: np.ndarray  # int64 [scored + 1]


def group_centres(positions: Sequence[int], group_bp: int) -> list[int]:
    """Centre of the reference window for each position: itself, or with ``group_bp`` the middle of its cluster.

    Clusters are runs of sorted distinct positions whose span is at most ``group_bp``.
    """
    if group_bp <= 0:
        return list(positions)
    distinct = sorted(set(positions))
    centre_of: dict[int, int] = {}
    i = 0
    while i < len(distinct):
        j = i
        while j + 1 < len(distinct) and distinct[j + 1] - distinct[i] <= group_bp:
            j += 1
        centre = (distinct[i] + distinct[j]) // 2
        for q in distinct[i : j + 1]:
            centre_of[q] = centre
        i = j + 1
    return [centre_of[q] for q in positions]


def read_variant_inputs(fasta_source: FastaSource, part: VariantPart, input_length: int, group_bp: int,
                        ) -> VariantInputs:
    """Statuses of a part's rows and the reference windows its scored rows share."""
    half = input_length // 2
    if part.length == 0:
        statuses = ["symbolic" if r.symbolic else "unknown_chrom" for r in part.rows]
        return _inputs(statuses, np.zeros((0, input_length), np.uint8), [], [], [], [], [])
    fasta = fasta_source.open()
    try:
        statuses = [row_status(r, fasta, part.chrom, part.length) for r in part.rows]
        scored = [i for i, s in enumerate(statuses) if s in SCORED]
        positions = [part.rows[i].pos - 1 for i in scored]
        centres = group_centres(positions, group_bp)
        extra = max((max(0, len(part.rows[i].ref) - len(part.rows[i].alt)) for i in scored), default=0)
        distinct = sorted(set(centres))
        index = {c: g for g, c in enumerate(distinct)}
        windows = np.stack([read_codes(fasta, part.chrom, part.length, c - half, c + half + extra) for c in distinct]) \
            if distinct else np.zeros((0, input_length + extra), np.uint8)
    finally:
        fasta.close()
    return _inputs(
        statuses, windows, scored, [index[c] for c in centres],
        [half + p - c for p, c in zip(positions, centres)],
        [len(part.rows[i].ref) for i in scored], [encode(part.rows[i].alt) for i in scored],
    )


def _inputs(statuses, windows, rows, group, offset, ref_len, alts) -> VariantInputs:
    starts = np.zeros(len(alts) + 1, dtype=np.int64)
    np.cumsum([len(a) for a in alts], out=starts[1:])
    return VariantInputs(
        statuses=statuses, windows=windows,
        rows=np.asarray(rows, np.int64), group=np.asarray(group, np.int64), offset=np.asarray(offset, np.int64),
        ref_len=np.asarray(ref_len, np.int64),
        alt_codes=np.concatenate(alts) if alts else np.zeros(0, np.uint8), alt_start=starts,
    )


# --- on the device --------------------------------------------------------------------------------


def alternate_codes(window, offset: int, ref_len: int, alt, input_length: int):
    """The alternate input: the window's left flank up to ``offset``, then ``alt``, then the reference from
    ``offset + ref_len`` on, cut to ``input_length`` (torch tensors on one device; ``window`` long enough)."""
    import torch

    i = torch.arange(input_length, device=window.device)
    source = torch.cat([window, alt])
    n_alt = alt.shape[0]
    index = torch.where(i < offset, i, torch.where(i < offset + n_alt, window.shape[0] + i - offset,
                                                   i - n_alt + ref_len))
    return source[index]


def variant_scores(ref, alt, scores: Sequence[str]):
    """``[n, bins, tracks]`` fp32 predictions → ``[n, len(scores), tracks]`` float32, summed in float64.

    ``sad`` sums per-bin differences (a small effect on a large signal survives); ``center`` is the difference
    at the middle output bin, the variant's own bin when it is exactly centred (the contract's definition, kept
    for mutagenesis and ``--group-bp`` too).
    """
    import torch

    r, a = ref.double(), alt.double()
    diff = a - r
    out = []
    for name in scores:
        if name == "sad":
            out.append(diff.sum(dim=1))
        elif name == "logsad":
            out.append(torch.log2(a.sum(dim=1) + 1) - torch.log2(r.sum(dim=1) + 1))
        elif name == "l2":
            out.append(torch.sqrt((diff * diff).sum(dim=1)))
        elif name == "center":
            out.append(diff[:, diff.shape[1] // 2])
        else:
            raise ValueError(f"unknown score {name!r}")
    return torch.stack(out, dim=1).float()


@dataclass(frozen=True)
class VariantResult:
    statuses: list[str]
    rows: np.ndarray  # row index of each scored allele
    scores: np.ndarray  # float32 [scored, n_scores, n_tracks]
    sequences: int


def score_part(predictor: Predictor, inputs: VariantInputs, scores: Sequence[str],
               predictions: Callable[[int, Any, Any], None] | None = None) -> VariantResult:
    """Predict each shared reference once and every alternate beside it, in batches; reduce to scores.

    The model sees, in order, each reference followed by its alternates; a reference prediction is kept on
    the device only until its last alternate is scored, so device memory stays at about two batches. A batch of
    one reference's inputs goes through ``Predictor.predict_near_on_device`` (alternates recompute the conv
    tower only around their change; equal to the full forward up to rounding). ``predictions``, if given, is
    called with each scored index and the reference and alternate predictions ``[bins, tracks]`` (on the
    device) its scores came from: ``serve`` plots them beside scores equal to a batch run's.
    """
    import torch

    geometry: Geometry = predictor.info.geometry
    length = geometry.input_length
    device = predictor.device
    n_scored, n_tracks = len(inputs.rows), len(predictor.info.track_indices)
    out = torch.empty((n_scored, len(scores), n_tracks), dtype=torch.float32, device=device)
    if n_scored == 0:
        return VariantResult(inputs.statuses, inputs.rows, out.cpu().numpy(), 0)
    # Copied straight to the device: arrays from Ray's object store are read-only.
    windows = torch.tensor(inputs.windows, device=device)
    alt_codes = torch.tensor(inputs.alt_codes, device=device)
    order = np.argsort(inputs.group, kind="stable")
    last_use = {int(inputs.group[j]): k for k, j in enumerate(order)}
    schedule: list[tuple[int, int]] = []  # (group, scored index or -1 for the reference)
    for j in order:
        g = int(inputs.group[j])
        if not schedule or schedule[-1][0] != g:
            schedule.append((g, -1))
        schedule.append((g, int(j)))
    position = {j: k for k, j in enumerate(order)}
    refs: dict[int, torch.Tensor] = {}
    keys: dict[int, bytes] = {}
    b = predictor.batch_size
    if predictor.predicts_near:
        # Batches of one reference and its alternates: an alternate then costs only the conv tower near its
        # change, which outweighs fuller batches (a biallelic SNV is a batch of two).
        runs = [list(run) for _, run in itertools.groupby(schedule, key=lambda item: item[0])]
        batches = [run[i : i + b] for run in runs for i in range(0, len(run), b)]
    else:
        batches = [schedule[i : i + b] for i in range(0, len(schedule), b)]
    with torch.inference_mode():
        for batch in batches:
            x = torch.stack([
                windows[g, :length] if j < 0 else alternate_codes(
                    windows[g], int(inputs.offset[j]), int(inputs.ref_len[j]),
                    alt_codes[inputs.alt_start[j] : inputs.alt_start[j + 1]], length)
                for g, j in batch
            ])
            groups = {g for g, _ in batch}
            if len(groups) == 1:  # one reference and its alternates (mutants): recompute only near the change
                g = groups.pop()
                if g not in keys:  # the reference's contents, hashed on the host once per part
                    keys[g] = hashlib.blake2b(inputs.windows[g, :length].tobytes(), digest_size=16).digest()
                y = predictor.predict_near_on_device(windows[g, :length], x, keys[g])
            else:
                y = predictor.predict_on_device(x)
            alts = []
            for k, (g, j) in enumerate(batch):
                if j < 0:
                    refs[g] = y[k]
                else:
                    alts.append((k, g, j))
            if alts:
                ks = [k for k, _, _ in alts]
                ref = torch.stack([refs[g] for _, g, _ in alts])
                out[[j for _, _, j in alts]] = variant_scores(ref, y[ks], scores)
                if predictions is not None:
                    for k, g, j in alts:
                        predictions(j, refs[g], y[k])
                for _, g, j in alts:
                    if last_use[g] == position[j]:
                        refs.pop(g, None)
    return VariantResult(inputs.statuses, inputs.rows, out.cpu().numpy(), len(schedule))


def score_columns(scores: Sequence[str], track_names: Sequence[str]) -> list[str]:
    """Output columns ``<score>:<track>``, in score then head order."""
    return [f"{s}:{t}" for s in scores for t in track_names]


VARIANT_FIELDS = (
    pa.field("pos", pa.int64(), nullable=False), pa.field("id", pa.string()),
    pa.field("ref", pa.string(), nullable=False), pa.field("alt", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
)


def scores_schema(leading: Sequence[pa.Field], scores: Sequence[str], track_names: Sequence[str]) -> pa.Schema:
    """A scored table's schema: the mode's leading columns, then one float32 column per (score, track)."""
    return pa.schema(list(leading) + [pa.field(name, pa.float32()) for name in score_columns(scores, track_names)])


def variant_schema(scores: Sequence[str], track_names: Sequence[str]) -> pa.Schema:
    return scores_schema(VARIANT_FIELDS, scores, track_names)


def scores_table(leading: Sequence[list], schema: pa.Schema, result: VariantResult) -> pa.Table:
    """Rows of a scored table: ``leading`` column values, then the scores (null where a row was not scored)."""
    n = len(leading[0]) if leading else 0
    n_values = len(schema) - len(leading)
    values = np.zeros((n_values, n), dtype=np.float32)
    if len(result.rows):
        values[:, result.rows] = result.scores.reshape(len(result.rows), n_values).T
    valid = np.zeros(n, dtype=bool)
    valid[result.rows] = True
    mask = None if valid.all() else ~valid
    columns = [pa.array(col, schema.field(i).type) for i, col in enumerate(leading)]
    columns += [pa.array(values[c], pa.float32(), mask=mask) for c in range(n_values)]
    return pa.Table.from_arrays(columns, schema=schema)


def variant_table(part: VariantPart, result: VariantResult, scores: Sequence[str], track_names: Sequence[str],
                  ) -> pa.Table:
    rows = part.rows
    leading = [[r.pos for r in rows], [r.id for r in rows], [r.ref for r in rows], [r.alt for r in rows],
               result.statuses]
    return scores_table(leading, variant_schema(scores, track_names), result)


@dataclass(frozen=True)
class VariantMode:
    """VCF rows in, one row of scores per allele out (the engine's ``Mode`` for variants)."""

    fasta: FastaSource
    input_length: int
    scores: tuple[str, ...]
    group_bp: int = 0
    unit: str = "variant"

    def read(self, part: VariantPart) -> VariantInputs:
        return read_variant_inputs(self.fasta, part, self.input_length, self.group_bp)

    def infer(self, predictor: Predictor, part: VariantPart, inputs: VariantInputs) -> VariantResult:
        result = score_part(predictor, inputs, self.scores)
        bad = ~np.isfinite(result.scores).all(axis=(1, 2))
        if bad.any():
            lines = [part.rows[int(result.rows[j])].line for j in np.flatnonzero(bad)[:5]]
            raise RunError(f"{part.chrom}: the model returned NaN or infinity for the variant(s) on VCF line(s) "
                           f"{lines}")
        return result

    def table(self, part: VariantPart, result: VariantResult, info: ModelInfo) -> pa.Table:
        return variant_table(part, result, self.scores, info.track_names)

    def tally(self, result: VariantResult) -> tuple[int, dict]:
        return result.sequences, dict(Counter(result.statuses))

    def digest(self, inputs: VariantInputs) -> str:
        return codes_digest(inputs.windows)


# --- the job --------------------------------------------------------------------------------------


@dataclass
class VariantJob:
    """The driver's side of a variant-scoring run (the engine's ``Job``)."""

    options: VariantConfig

    def __post_init__(self) -> None:
        self.fasta = FastaSource(self.options.fasta, dict(self.options.storage_options))
        self.mode = VariantMode(self.fasta, ENFORMER.input_length, tuple(self.options.scores), self.options.group_bp)

    def inference_settings(self) -> InferenceSettings:
        return self.options.inference_settings()

    def prepare(self) -> None:
        """Read the FASTA index and pass over the VCF once: every record checked, rows counted, content hashed."""
        self.lengths = self.fasta.lengths()
        self.digest = scan(self.options.vcf, self.lengths, self.options.storage_options)
        if self.options.strict:
            check_ref_alleles(self.options.vcf, self.fasta, self.lengths, self.options.storage_options)

    def plan(self, info: ModelInfo) -> JobPlan:
        o, geometry, digest = self.options, info.geometry, self.digest
        if o.group_bp > geometry.output_span // 2:
            raise ValueError(f"--group-bp {o.group_bp} is more than half the model's output span "
                             f"({geometry.output_span // 2} bp): grouped variants would fall outside the output")
        self.mode = VariantMode(self.fasta, geometry.input_length, tuple(o.scores), o.group_bp)
        identity = {
            **model_identity(o, info),
            "mode": "variants",
            "fasta": {"name": self.fasta.name, "chromosomes": dict(self.lengths)},
            "vcf": {"name": os.path.basename(o.vcf.rstrip("/")), "sha256": digest.sha256, "records": digest.records,
                    "rows_by_chrom": dict(digest.rows_by_chrom)},
            "scores": list(o.scores),
            "group_bp": o.group_bp,
            "variants_per_part": o.variants_per_part,
        }
        n_parts = sum(1 for _ in part_bounds(digest.rows_by_chrom, o.variants_per_part))
        notes = []
        if digest.renamed:
            pairs = ", ".join(f"{a}→{b}" for a, b in list(digest.renamed.items())[:5])
            notes.append(f"chromosome names matched through a 'chr' prefix: {pairs}"
                         + (" ..." if len(digest.renamed) > 5 else ""))
        if digest.unknown:
            notes.append(f"not in the FASTA (status unknown_chrom): {', '.join(list(digest.unknown)[:5])}"
                         + (" ..." if len(digest.unknown) > 5 else ""))
        parts = stream_parts(o.vcf, self.lengths, digest, o.variants_per_part, o.storage_options)
        return JobPlan(identity=identity, totals={"parts": n_parts, "units": digest.rows, "rows": digest.rows},
                       parts=parts, notes=tuple(notes))


def check_ref_alleles(url: str, fasta_source: FastaSource, lengths: Mapping[str, int],
                      storage_options: Mapping[str, str] | None = None) -> None:
    """``--strict``: fail on the first REF that does not match the FASTA, naming its line."""
    match = ChromMatcher(lengths)
    fasta = fasta_source.open()
    try:
        for row in read_rows(url, storage_options):
            chrom = match(row.chrom)
            if chrom is None or row.symbolic:
                continue
            if row_status(row, fasta, chrom, lengths[chrom]) == "ref_mismatch":
                p = row.pos - 1
                found = fasta[chrom][p : min(p + len(row.ref), lengths[chrom])]
                raise ValueError(f"{url} line {row.line}: REF {row.ref} does not match the FASTA's {found!r} at "
                                 f"{chrom}:{row.pos} (--strict)")
    finally:
        fasta.close()


def score_variants(config: VariantConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Score every ALT allele of a VCF (or resume doing so) and return the run's summary.

    Raises ValueError (or a subclass) on bad input, StoreError when ``--out`` cannot be used as asked, and
    RunError when a part fails; committed parts are kept and re-running the same call resumes.
    """
    summary = run_job(VariantJob(config), on_part)
    scored = sum(summary.counts.get(s, 0) for s in SCORED)
    return dataclasses.replace(summary, notes=(f"scored: {scored} of {summary.units_computed} rows computed in this "
                                               "run",) + summary.notes)
