"""The scoring core the scored kinds share (variants, mutagenesis, edits): alleles in, scores out.

Owns, per the contract (docs/contract.md, "Variants and sequence edits"): the scores and row statuses; parts
of consecutive input rows of one chromosome (``RowRange``, ``row_part_bounds``); a row's status (REF checked
against the FASTA) and the centred reference window shared by every allele at a position (or, with
``group_bp``, by nearby positions), read in a Ray task (``read_variant_inputs``); alternate sequences built on
the device from the shared reference codes and scores reduced there so only kilobytes leave it
(``score_part``); the scored tables (leading columns of the kind, then ``<score>:<track>``); and the row
coverage check ``validate`` runs on variant and edit tables (``RowCoverage``).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..engine import RunError
from ..genome import N_CODE, FastaSource, encode, read_codes
from ..vcf import VariantRow
from ..windows import Geometry
from .arguments import str_list
from .base import ChromCoverage, codes_problems

SCORES = ("sad", "logsad", "l2", "center")
STATUSES = ("ok", "n_at_variant", "ref_mismatch", "symbolic", "unknown_chrom")
GENE_STATUSES = (*STATUSES, "no_gene")  # score-variants --genes: a scored allele with no gene in range
SCORED = ("ok", "n_at_variant")

if TYPE_CHECKING:
    from ..inference import Predictor


def check_scores(scores: tuple[str, ...]) -> None:
    """``--scores``: a non-empty subset of ``SCORES``, each named once (variants, mutagenesis and edits)."""
    unknown = [s for s in scores if s not in SCORES]
    if unknown or not scores:
        raise ValueError(f"--scores takes a comma-separated subset of {','.join(SCORES)}; got "
                         f"{','.join(scores) or 'nothing'}")
    if len(set(scores)) != len(scores):
        raise ValueError(f"--scores lists a score twice: {','.join(scores)}")


class RowRange:
    """Name and size of a part holding input rows ``[first, end)`` of one chromosome (variants, edits)."""

    chrom: str
    first: int
    end: int

    @property
    def name(self) -> str:
        return f"part-{self.first:09d}-{self.end:09d}.parquet"

    @property
    def units(self) -> int:
        return self.end - self.first


def row_part_bounds(rows_by_chrom: Mapping[str, int], per_part: int) -> Iterator[tuple[str, int, int]]:
    """``(chrom, first, end)`` of every part, from the per-chromosome row counts (variants and edits plan with it)."""
    for chrom, n in rows_by_chrom.items():
        for first in range(0, n, per_part):
            yield chrom, first, min(first + per_part, n)


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
    gene_windows: list | None = None  # score-variants --genes: per window, its genes in range and their masks


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


def read_variant_inputs(fasta_source: FastaSource, chrom: str, length: int, rows: Sequence[VariantRow],
                        input_length: int, group_bp: int) -> VariantInputs:
    """Statuses of a part's rows (of one chromosome, ``length`` long; 0: not in the FASTA) and the reference
    windows its scored rows share."""
    half = input_length // 2
    if length == 0:
        statuses = ["symbolic" if r.symbolic else "unknown_chrom" for r in rows]
        return scored_inputs(statuses, np.zeros((0, input_length), np.uint8), [], [], [], [], [])
    fasta = fasta_source.open()
    try:
        statuses = [row_status(r, fasta, chrom, length) for r in rows]
        scored = [i for i, s in enumerate(statuses) if s in SCORED]
        positions = [rows[i].pos - 1 for i in scored]
        centres = group_centres(positions, group_bp)
        extra = max((max(0, len(rows[i].ref) - len(rows[i].alt)) for i in scored), default=0)
        distinct = sorted(set(centres))
        index = {c: g for g, c in enumerate(distinct)}
        windows = np.stack([read_codes(fasta, chrom, length, c - half, c + half + extra) for c in distinct]) \
            if distinct else np.zeros((0, input_length + extra), np.uint8)
    finally:
        fasta.close()
    return scored_inputs(
        statuses, windows, scored, [index[c] for c in centres],
        [half + p - c for p, c in zip(positions, centres)],
        [len(rows[i].ref) for i in scored], [encode(rows[i].alt) for i in scored],
    )


def scored_inputs(statuses: list[str], windows: np.ndarray, rows, group, offset, ref_len, alts) -> VariantInputs:
    """``VariantInputs`` from per-row lists (``alts``: each scored row's alternate codes)."""
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
    # score-variants --genes: each scored allele's gene scores [G, gene scores, tracks] (None: no gene in range),
    # the windows' genes and which window each scored allele was predicted in.
    genes: list[np.ndarray | None] | None = None
    gene_windows: list | None = None
    group: np.ndarray | None = None


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
                if scores:  # none when only gene scores are asked for (they reduce in ``predictions``)
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


def scores_schema(leading: Sequence[pa.Field], scores: Sequence[str], track_names: Sequence[str]) -> pa.Schema:
    """A scored table's schema: the kind's leading columns, then one float32 column per (score, track)."""
    return pa.schema(list(leading) + [pa.field(name, pa.float32()) for name in score_columns(scores, track_names)])


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


def check_finite(result: VariantResult, where: str) -> None:
    """A NaN or infinite score fails the part, naming ``where``."""
    if len(result.rows) and not np.isfinite(result.scores).all():
        raise RunError(f"{where}: the model returned NaN or infinity")


def status_counts(result: VariantResult) -> tuple[int, dict]:
    """A scored mode's ``tally``: model inputs computed, and rows by status."""
    return result.sequences, dict(Counter(result.statuses))


# --- coverage of row tables (variants, edits) ------------------------------------------------------


class RowCoverage:
    """Coverage of a table of input rows: each part holds its planned rows; with the input, each exactly once.

    ``planned``: the kind's parts (``RowRange``s, from its ``parts(identity)``); ``keys``: the columns that,
    with the chromosome, identify an input row; ``expected``: every input row as such a key (None: not known,
    row counts suffice).
    """

    unit = "rows"

    def __init__(self, identity: Mapping, store: Any, planned: Sequence[RowRange], schema: pa.Schema,
                 rows_by_chrom: Mapping[str, int], keys: tuple[str, ...], reader: Callable[[str, tuple], Any]):
        self.identity = identity
        self.reader = reader  # the kind's reader stage on a FASTA, for --fasta (picklable: shipped to tasks)
        self.store = store
        self.planned = planned
        self.schema = schema
        self.rows_by_chrom = rows_by_chrom
        self.keys = keys
        self.found: Counter = Counter()
        self.rows: Counter = Counter()
        self.parts: Counter = Counter()
        self.input_problems: list[str] = []

    def fasta_chromosomes(self) -> list[str]:
        return [c for c in self.rows_by_chrom if c in self.identity["fasta"]["chromosomes"]]

    def planned_paths(self) -> dict:
        return {self.store.part_relpath(p.chrom, p.name): p for p in self.planned}

    def with_inputs(self, planned: Mapping, inputs: Mapping[str, str], storage_options) -> Mapping:
        return planned

    def wants_keys(self, inputs: Mapping[str, str]) -> bool:
        """Whether parts send back their rows' keys (only when there is something to compare them with)."""
        raise NotImplementedError

    def checks_codes(self, inputs: Mapping[str, str]) -> bool:
        """Whether ``--fasta`` can compare the bases under the parts (their inputs are known)."""
        return True

    def expected(self, inputs: Mapping[str, str], storage_options) -> Counter | None:
        raise NotImplementedError

    def checker(self, inputs: Mapping[str, str], fasta: str | None, storage_options) -> RowChecker:
        keys = self.keys if self.wants_keys(inputs) else ()
        return RowChecker(self.schema, ("status", *keys) if "status" in self.schema.names else keys, keys,
                          frozenset(STATUSES), fasta if fasta is not None and self.checks_codes(inputs) else None,
                          tuple(sorted(dict(storage_options or {}).items())), self.reader)

    def merge(self, path: str, planned: RowRange, summary: tuple[int, list | None]) -> None:
        rows, keys = summary
        if keys is not None:
            self.found.update((planned.chrom, *row) for row in keys)
        self.rows[planned.chrom] += rows
        self.parts[planned.chrom] += 1

    def finish(self, complete: bool, inputs: Mapping[str, str], storage_options,
               ) -> tuple[list[ChromCoverage], list[str]]:
        lines = [ChromCoverage(chrom, self.identity["fasta"]["chromosomes"].get(chrom, 0), rows, self.rows[chrom], 0,
                               self.parts[chrom]) for chrom, rows in self.rows_by_chrom.items()]
        want = self.expected(inputs, storage_options)
        return lines, self.input_problems + ([] if want is None else self.compare(want))

    def compare(self, want: Counter) -> list[str]:
        problems = []
        missing, extra = want - self.found, self.found - want
        for what, rows in (("missing", missing), ("not in the input, or more often than in it", extra)):
            if rows:
                key, _ = next(iter(rows.items()))
                problems.append(f"{sum(rows.values())} row(s) {what} (e.g. {' '.join(map(str, key))})")
        return problems


@dataclass(frozen=True)
class RowChecker:
    """What a task needs to check a variant or edit part: its row count and statuses, and the rows' keys."""

    schema: pa.Schema
    columns: tuple[str, ...]  # read from the part: the status and the keys, never the scores
    keys: tuple[str, ...]  # identify an input row; empty when nothing is compared with the input
    statuses: frozenset = frozenset()
    fasta: str | None = None  # compare the bases under each part with this genome's (None: not checked)
    storage_options: tuple = ()
    reader: Callable[[str, tuple], Any] | None = None  # the kind's reader stage on (fasta, storage_options)

    def summarise(self, path: str, planned: RowRange, table: pa.Table) -> tuple[list[str], tuple]:
        problems = []
        if table.num_rows != planned.end - planned.first:
            problems.append(f"part {path}: {table.num_rows} rows, the plan has {planned.end - planned.first}")
        if "status" in table.column_names:
            statuses = set(table.column("status").to_pylist())
            if statuses - self.statuses:
                problems.append(f"part {path}: unknown status {sorted(statuses - self.statuses)}")
        keys = list(zip(*(table.column(c).to_pylist() for c in self.keys))) if self.keys else None
        return problems, (table.num_rows, keys)

    def check_codes(self, path: str, planned: RowRange, recorded: str) -> list[str]:
        mode = self.reader(self.fasta, self.storage_options)
        return codes_problems(mode, self.fasta, path, planned, recorded,
                              f"{planned.chrom} {mode.unit}s {planned.first}-{planned.end - 1}")


def add_scores_argument(parser: argparse.ArgumentParser) -> None:
    """``--scores`` of the mutagenesis and edits commands."""
    parser.add_argument("--scores", type=str_list, default=("sad",),
                        help=f"comma-separated scores, from {','.join(SCORES)} (as for score-variants)")
