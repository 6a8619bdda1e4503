"""Genome atlas mode: every bin of a genome (or of BED regions) predicted into Parquet, on the engine.

Owns what is particular to atlases: the request (FASTA, regions, chromosomes, stride, output dtype), the
run identity, planning parts of consecutive windows from the FASTA index, reading a part's windows into
uint8 base codes (≈ 0.2 MB per window; a Ray task), predicting them on a replica and stitching each
window's owned bins into the part's rows. Orchestration, resume and commit are the engine's
(``engine.run_job``), shared with the other modes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .engine import (  # noqa: F401 - re-exported: the atlas API predates the engine module
    WORKER_NAME_PREFIX,
    JobPlan,
    RunError,
    RunOptions,
    RunSummary,
    _worker_layout,
    _WorkerPool,
    model_identity,
    run_job,
    stage,
)
from .genome import N_CODE, FastaSource, read_codes
from .integrity import comparable_identity
from .settings import InferenceSettings, ModelInfo, NonFiniteOutput
from .store import AtlasStore, PartRecord, StoreError, bins_table
from .windows import (
    DEFAULT_ROWS_PER_PART,
    ENFORMER,
    BinRanges,
    Geometry,
    PartPlan,
    WindowTask,
    bins_of_interval,
    merge_ranges,
    plan_selection,
    windows_per_part_for_rows,
)

if TYPE_CHECKING:
    from .inference import Predictor


@dataclass(frozen=True)
class PredictConfig(RunOptions):
    """One prediction run, as the command line or a notebook describes it (see ``RunOptions`` for the rest)."""

    fasta: str
    stride: int | None = None  # default: the model's output span (every bin predicted once)
    regions: str | None = None  # BED path or URL
    chroms: tuple[str, ...] | None = None
    dtype: str = "float16"
    # Parts are sized by rows (bins): windows per part = rows_per_part / (bins each window owns, stride /
    # bin size), so stride 128 gives parts of 14,336 one-bin windows, not 16-row parts. windows_per_part,
    # when set, overrides it; the manifest records the resolved number, and a resume keeps the recorded one.
    rows_per_part: int = DEFAULT_ROWS_PER_PART
    windows_per_part: int | None = None

    def inference_settings(self) -> InferenceSettings:  # type: ignore[override]
        return RunOptions.inference_settings(self, dtype=self.dtype)


# --- input checks ---------------------------------------------------------------------------------


def read_text_lines(url: str, what: str, storage_options: Mapping[str, str] | None = None) -> list[str]:
    """The lines of a small text input (BED, EDITS.tsv), local or any fsspec URL; ValueError naming ``what``."""
    import fsspec

    try:
        with fsspec.open(url, "rt", **dict(storage_options or {})) as f:
            return f.read().splitlines()
    except (FileNotFoundError, OSError) as e:
        raise ValueError(f"cannot read {what} {url}: {e}") from e


def read_bed_records(
    url: str, lengths: Mapping[str, int], storage_options: Mapping[str, str] | None = None, what: str = "--regions"
) -> list[tuple[int, str, int, int]]:
    """``(line, chrom, start, end)`` of every BED interval in file order, checked against the FASTA's chromosomes."""
    lines = read_text_lines(url, what, storage_options)
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        where = f"{what} {url} line {number}"
        if len(fields) < 3:
            raise ValueError(f"{where}: expected chrom, start, end; got {line!r}")
        chrom = fields[0]
        try:
            start, end = int(fields[1]), int(fields[2])
        except ValueError:
            raise ValueError(f"{where}: start and end must be integers; got {line!r}") from None
        if chrom not in lengths:
            raise ValueError(f"{where}: chromosome {chrom!r} is not in the FASTA")
        if start < 0 or end <= start:
            raise ValueError(f"{where}: needs 0 <= start < end; got {start}-{end}")
        if end > lengths[chrom]:
            raise ValueError(f"{where}: end {end} is past the end of {chrom} (length {lengths[chrom]})")
        records.append((number, chrom, start, end))
    if not records:
        raise ValueError(f"{what} {url} holds no intervals")
    return records


def read_bed(url: str, lengths: Mapping[str, int], storage_options: Mapping[str, str] | None = None):
    """BED intervals per chromosome (0-based half-open), checked against the FASTA's chromosomes."""
    intervals: dict[str, list[tuple[int, int]]] = {}
    for _, chrom, start, end in read_bed_records(url, lengths, storage_options):
        intervals.setdefault(chrom, []).append((start, end))
    return intervals


def select_bins(
    config: PredictConfig, lengths: Mapping[str, int], bin_size: int
) -> dict[str, BinRanges | None]:
    """Chromosomes to run and, for region runs, the bins wanted on each (None = every bin)."""
    if config.chroms:
        unknown = [c for c in config.chroms if c not in lengths]
        if unknown:
            known = ", ".join(list(lengths)[:8]) + (", ..." if len(lengths) > 8 else "")
            raise ValueError(f"--chroms: {', '.join(map(repr, unknown))} not in the FASTA (it has {known})")
        chroms = [c for c in lengths if c in set(config.chroms)]  # FASTA order
    else:
        chroms = list(lengths)
    if config.regions is None:
        return {c: None for c in chroms}
    intervals = read_bed(config.regions, lengths, config.storage_options)
    selected = {}
    for chrom in chroms:
        if chrom in intervals:
            selected[chrom] = merge_ranges(bins_of_interval(s, e, bin_size) for s, e in intervals[chrom])
    if not selected:
        raise ValueError("--regions and --chroms select no chromosome in common")
    return selected


def check_request(config: PredictConfig) -> None:
    config.check()
    if config.windows_per_part is not None and config.windows_per_part < 1:
        raise ValueError(f"windows_per_part must be at least 1, got {config.windows_per_part}")
    if config.rows_per_part < 1:
        raise ValueError(f"rows_per_part must be at least 1, got {config.rows_per_part}")


def resolve_windows_per_part(config: PredictConfig, geometry: Geometry, stride: int) -> int:
    """Windows per part: ``windows_per_part`` when given, else derived from ``rows_per_part`` at this stride."""
    if config.windows_per_part is not None:
        return config.windows_per_part
    return windows_per_part_for_rows(config.rows_per_part, geometry, stride)


def recorded_windows_per_part(config: PredictConfig, identity: Mapping) -> int | None:
    """The part size of the atlas already at ``--out`` when it is this run but for its part size, else None.

    Atlases started before parts were sized by rows (16 windows at any stride), or with another
    ``rows_per_part``, resume with the plan they were started with: their part names, and what ``validate``
    re-plans, follow the recorded ``windows_per_part``.
    """
    try:
        previous = AtlasStore(config.out, config.storage_options).read_manifest()
    except (StoreError, OSError):
        return None  # the engine reports an unusable --out
    recorded = comparable_identity((previous or {}).get("identity"))
    n = recorded.get("windows_per_part")
    if isinstance(n, int) and n >= 1 and recorded == {**identity, "windows_per_part": n}:
        return n
    return None


# --- the manifest ---------------------------------------------------------------------------------


def run_identity(
    config: PredictConfig,
    info: ModelInfo,
    fasta: FastaSource,
    lengths: Mapping[str, int],
    selection: Mapping[str, BinRanges | None],
    stride: int,
    windows_per_part: int | None = None,
) -> dict:
    """Everything that decides the atlas' contents; a resume must match it exactly.

    ``windows_per_part``: the resolved part size (``resolve_windows_per_part``); the plan follows it.
    """
    bins = {c: [list(r) for r in b] for c, b in selection.items() if b is not None}
    return {
        **model_identity(config, info),
        "fasta": {"name": fasta.name, "chromosomes": dict(lengths)},
        "chromosomes": list(selection),
        "regions": None
        if config.regions is None
        else {"source": os.path.basename(config.regions), "bins": bins},
        "stride": stride,
        "windows_per_part": windows_per_part if windows_per_part is not None else config.windows_per_part,
        "dtype": config.dtype,
    }


# --- the mode -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AtlasMode:
    """Windows in, per-bin rows out (the engine's ``Mode`` for atlases)."""

    fasta: FastaSource
    input_length: int
    unit: str = "window"

    def read(self, part: PartPlan) -> PartCodes:
        """The base codes under a part's windows, each base once (see ``PartCodes``)."""
        return read_part_codes(self.fasta, part, self.input_length)

    def infer(self, predictor: Predictor, part: PartPlan, codes: PartCodes) -> PartRows:
        windows = part.windows
        try:
            return predict_rows(predictor, windows, codes)
        except NonFiniteOutput as e:
            ks = [windows[i].k for i in e.window_indices]
            raise RunError(f"{part.chrom} window(s) {ks}: the model returned NaN or infinity, or a value "
                           f"too large for --dtype {predictor.settings.dtype}") from None

    def table(self, part: PartPlan, result: PartRows, info: ModelInfo) -> pa.Table:
        bin_size = info.geometry.bin_size
        # Rows run in bin order and the part's windows write exactly its wanted bins.
        start = np.concatenate([np.arange(lo, hi, dtype=np.int64) for lo, hi in part.wanted]) * bin_size
        dtype = np.dtype(result.by_track.dtype).name
        return bins_table(start, part.length, result.by_track, result.nulls, info.track_names, dtype, bin_size)

    def tally(self, result: PartRows) -> tuple[int, dict]:
        return result.windows_run, {}

    def digest(self, codes: PartCodes) -> str:
        return codes.digest()


@dataclass(frozen=True)
class PartCodes:
    """A part's base codes without the copies overlapping windows would share.

    At stride 128 a part's 14,336 windows cover ~2 MB of sequence but would be 2.8 GB as one row per window;
    this holds each stretch of the chromosome under the windows once (``spans``, stretches concatenated) and
    where each window's input starts in it. It is what a reader task sends to a replica.
    """

    spans: np.ndarray  # uint8 base codes
    offsets: np.ndarray  # int64 [n_windows]
    input_length: int

    def __len__(self) -> int:
        return len(self.offsets)

    def stack(self, indices: np.ndarray | None = None) -> np.ndarray:
        """``[n, input_length]`` codes of the windows at ``indices`` (all by default), as one array."""
        offsets = self.offsets if indices is None else self.offsets[indices]
        out = np.empty((len(offsets), self.input_length), dtype=np.uint8)
        for i, o in enumerate(offsets):
            out[i] = self.spans[o : o + self.input_length]
        return out

    def ran(self) -> np.ndarray:
        """Per window: does its input hold any base other than N/padding (else it is not run)."""
        known = np.concatenate([[0], np.cumsum(self.spans != N_CODE, dtype=np.int64)])
        return known[self.offsets + self.input_length] - known[self.offsets] > 0

    def digest(self) -> str:
        """``store.codes_digest`` of ``stack()``, without building it (digests recorded earlier still compare)."""
        h = hashlib.sha256(f"{(len(self.offsets), self.input_length)}".encode())
        for o in self.offsets:
            h.update(memoryview(self.spans[o : o + self.input_length]))
        return h.hexdigest()


@dataclass(frozen=True)
class PartRows:
    """A part's predicted rows, track-major ``[n_tracks, n_rows]`` in bin order, and which rows are null."""

    by_track: np.ndarray
    nulls: np.ndarray
    windows_run: int


def read_part_codes(fasta_source: FastaSource, part: PartPlan, input_length: int) -> PartCodes:
    """The codes under a part's windows: one read per stretch of overlapping or touching window inputs."""
    windows = part.windows
    stretches: list[list[int]] = []  # [start bp, end bp, first window index]
    for i, w in enumerate(windows):
        if stretches and w.input_start <= stretches[-1][1]:
            stretches[-1][1] = w.input_start + input_length
        else:
            stretches.append([w.input_start, w.input_start + input_length, i])
    offsets = np.empty(len(windows), dtype=np.int64)
    pieces, base = [], 0
    window = windows[0].k
    try:
        fasta = fasta_source.open()
        try:
            for start, end, i in stretches:
                window = windows[i].k
                pieces.append(read_codes(fasta, part.chrom, part.length, start, end))
                for j in range(i, len(windows)):
                    if windows[j].input_start >= end:
                        break
                    offsets[j] = base + windows[j].input_start - start
                base += end - start
        finally:
            fasta.close()
    except Exception as e:
        raise RunError(f"reading {part.chrom} window {window}: {e}") from e
    return PartCodes(np.concatenate(pieces), offsets, input_length)


def read_part(fasta_source: FastaSource, part: PartPlan, input_length: int) -> np.ndarray:
    """Base codes ``[n_windows, input_length]`` for a part's windows (one row per window)."""
    return read_part_codes(fasta_source, part, input_length).stack()


def predict_rows(predictor: Predictor, windows: tuple[WindowTask, ...], codes: PartCodes) -> PartRows:
    """Predict the windows that are not all padding/N, keeping on the device only the bins each writes.

    Batches as ``Predictor.predict`` does (the run windows, ``batch_size`` at a time), so values are those of
    ``store.part_table(part, *predictor.predict(codes.stack()))``; a part's memory is its rows, not its
    windows × output bins (at stride 128, 1 bin of 896 per window).
    """
    sizes = np.array([w.n_rows for w in windows], dtype=np.int64)
    first_row = np.concatenate([[0], np.cumsum(sizes)])
    n_tracks = len(predictor.info.track_indices)
    by_track = np.full((n_tracks, int(first_row[-1])), np.nan, dtype=predictor.settings.dtype)
    nulls = np.ones(int(first_row[-1]), dtype=bool)
    todo = np.flatnonzero(codes.ran())
    b = predictor.batch_size
    batches = [todo[i : i + b] for i in range(0, len(todo), b)]

    def requests():  # lazy: batch n+1's codes are stacked while the device computes batch n
        for batch in batches:
            local = {(lo - windows[w].first_bin, hi - windows[w].first_bin)
                     for w in batch for lo, hi in windows[w].emit}
            if len(local) == 1 and all(len(windows[w].emit) == 1 for w in batch):
                ((lo, hi),) = local  # every window keeps the same bins (interior windows): a slice, not a gather
                yield codes.stack(batch), slice(lo, hi)
                continue
            which, bins = [], []
            for j, w in enumerate(batch):
                task = windows[w]
                for lo, hi in task.emit:
                    which.append(np.full(hi - lo, j, dtype=np.int64))
                    bins.append(np.arange(lo - task.first_bin, hi - task.first_bin, dtype=np.int64))
            yield codes.stack(batch), (np.concatenate(which), np.concatenate(bins))

    # Closed on the way out, also when stitching fails: its staging buffers go back to the predictor's pool.
    with contextlib.closing(predictor.predict_stream(requests())) as results:
        for batch in batches:
            try:
                rows = next(results)
            except NonFiniteOutput as e:
                raise NonFiniteOutput([int(batch[j]) for j in e.window_indices]) from None
            r = 0
            for w in batch:
                lo, hi = first_row[w], first_row[w + 1]
                by_track[:, lo:hi] = rows[:, r : r + hi - lo]
                nulls[lo:hi] = False
                r += hi - lo
    return PartRows(by_track, nulls, len(todo))


@dataclass
class AtlasJob:
    """The driver's side of an atlas run (the engine's ``Job``)."""

    options: PredictConfig

    def __post_init__(self) -> None:
        self.fasta = FastaSource(self.options.fasta, dict(self.options.storage_options))
        self.mode = AtlasMode(self.fasta, ENFORMER.input_length)

    def inference_settings(self) -> InferenceSettings:
        return self.options.inference_settings()

    def prepare(self) -> None:
        check_request(self.options)
        form = self.fasta.form  # a missing, unreadable or empty file fails here, before any stage line
        stage(self.options, f"reading the genome index of {self.fasta.file_name} ({form})")
        self.lengths = self.fasta.lengths()
        # Fail fast, before Ray starts, on what needs no model; the stride and bins follow the model's geometry.
        select_bins(self.options, self.lengths, 1)

    def plan(self, info: ModelInfo) -> JobPlan:
        config, geometry = self.options, info.geometry
        stride = config.stride if config.stride is not None else geometry.output_span
        geometry.check_stride(stride)
        selection = select_bins(config, self.lengths, geometry.bin_size)
        per_part = resolve_windows_per_part(config, geometry, stride)
        identity = run_identity(config, info, self.fasta, self.lengths, selection, stride, per_part)
        if config.windows_per_part is None:  # an atlas at --out started with another part size keeps it
            recorded = recorded_windows_per_part(config, identity)
            if recorded is not None:
                per_part = identity["windows_per_part"] = recorded
        # A list of small plans (a few numbers each, no windows): hg38 at stride 128 is ~1,800 parts.
        parts = plan_selection(selection, self.lengths, geometry, stride, per_part)
        self.mode = AtlasMode(self.fasta, geometry.input_length)
        totals = {"parts": len(parts), "units": sum(p.units for p in parts), "rows": sum(p.n_rows for p in parts)}
        totals["windows"] = totals["units"]
        return JobPlan(identity=identity, totals=totals, parts=parts)


def predict(config: PredictConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Run (or resume) a genome atlas and return its summary.

    Raises ValueError (or a subclass) on bad input, StoreError when ``--out`` cannot be used as asked, and
    RunError when a part fails; committed parts are kept and re-running the same call resumes.
    """
    return dataclasses.replace(run_job(AtlasJob(config), on_part), row_unit="bins", output_label="atlas")
