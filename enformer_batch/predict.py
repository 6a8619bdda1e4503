"""Genome atlas mode: every bin of a genome (or of BED regions) predicted into Parquet, on the engine.

Owns what is particular to atlases: the request (FASTA, regions, chromosomes, stride, output dtype), the
run identity, planning parts of consecutive windows from the FASTA index, reading a part's windows into
uint8 base codes (≈ 0.2 MB per window; a Ray task), predicting them on a replica and stitching each
window's owned bins into the part's rows. Orchestration, resume and commit are the engine's
(``engine.run_job``), shared with the other modes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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
from .genome import FastaSource, read_codes
from .inference import InferenceSettings, ModelInfo, NonFiniteOutput, Predictor
from .store import PartRecord, codes_digest, part_table
from .windows import ENFORMER, BinRanges, PartPlan, bins_of_interval, merge_ranges, plan_selection

DEFAULT_WINDOWS_PER_PART = 16


@dataclass(frozen=True)
class PredictConfig(RunOptions):
    """One prediction run, as the command line or a notebook describes it (see ``RunOptions`` for the rest)."""

    fasta: str
    stride: int | None = None  # default: the model's output span (every bin predicted once)
    regions: str | None = None  # BED path or URL
    chroms: tuple[str, ...] | None = None
    dtype: str = "float16"
    windows_per_part: int = DEFAULT_WINDOWS_PER_PART

    def inference_settings(self) -> InferenceSettings:  # type: ignore[override]
        return RunOptions.inference_settings(self, dtype=self.dtype)


def emitted_bins(part: PartPlan) -> tuple[int, int]:
    """The output bins ``[lo, hi)``, relative to each window, that some window of ``part`` writes.

    At a stride below the output span a window writes only its central bins (one at stride = bin size), so
    the rest is dropped on the device rather than copied back; windows at a chromosome's ends write more.
    """
    local = [(lo - w.first_bin, hi - w.first_bin) for w in part.windows for lo, hi in w.emit]
    return min(lo for lo, _ in local), max(hi for _, hi in local)


# --- input checks ---------------------------------------------------------------------------------


def read_bed_records(
    url: str, lengths: Mapping[str, int], storage_options: Mapping[str, str] | None = None, what: str = "--regions"
) -> list[tuple[int, str, int, int]]:
    """``(line, chrom, start, end)`` of every BED interval in file order, checked against the FASTA's chromosomes."""
    import fsspec

    try:
        with fsspec.open(url, "rt", **dict(storage_options or {})) as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, OSError) as e:
        raise ValueError(f"cannot read {what} {url}: {e}") from e
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
    if config.windows_per_part < 1:
        raise ValueError("windows_per_part must be at least 1")


# --- the manifest ---------------------------------------------------------------------------------


def run_identity(
    config: PredictConfig,
    info: ModelInfo,
    fasta: FastaSource,
    lengths: Mapping[str, int],
    selection: Mapping[str, BinRanges | None],
    stride: int,
) -> dict:
    """Everything that decides the atlas' contents; a resume must match it exactly."""
    bins = {c: [list(r) for r in b] for c, b in selection.items() if b is not None}
    return {
        **model_identity(config, info),
        "fasta": {"name": fasta.name, "chromosomes": dict(lengths)},
        "chromosomes": list(selection),
        "regions": None
        if config.regions is None
        else {"source": os.path.basename(config.regions), "bins": bins},
        "stride": stride,
        "windows_per_part": config.windows_per_part,
        "dtype": config.dtype,
    }


# --- the mode -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AtlasMode:
    """Windows in, per-bin rows out (the engine's ``Mode`` for atlases)."""

    fasta: FastaSource
    input_length: int
    unit: str = "window"

    def read(self, part: PartPlan) -> np.ndarray:
        """Base codes ``[n_windows, input_length]`` for a part's windows."""
        return read_part(self.fasta, part, self.input_length)

    def infer(self, predictor: Predictor, part: PartPlan, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        keep = emitted_bins(part)
        try:
            return (*predictor.predict(codes, keep), keep[0])
        except NonFiniteOutput as e:
            windows = [part.windows[i].k for i in e.window_indices]
            raise RunError(f"{part.chrom} window(s) {windows}: the model returned NaN or infinity, or a value "
                           f"too large for --dtype {predictor.settings.dtype}") from None

    def table(self, part: PartPlan, result: tuple[np.ndarray, np.ndarray, int], info: ModelInfo) -> pa.Table:
        values, ran, offset = result
        dtype = np.dtype(values.dtype).name
        return part_table(part, values, ran, info.track_names, dtype, info.geometry.bin_size, offset)

    def tally(self, result: tuple[np.ndarray, np.ndarray, int]) -> tuple[int, dict]:
        return int(result[1].sum()), {}

    def digest(self, codes: np.ndarray) -> str:
        return codes_digest(codes)


def read_part(fasta_source: FastaSource, part: PartPlan, input_length: int) -> np.ndarray:
    """Base codes ``[n_windows, input_length]`` for a part's windows."""
    codes = np.empty((len(part.windows), input_length), dtype=np.uint8)
    window = part.windows[0].k
    try:
        fasta = fasta_source.open()
        try:
            for i, w in enumerate(part.windows):
                window = w.k
                codes[i] = read_codes(fasta, part.chrom, part.length, w.input_start, w.input_start + input_length)
        finally:
            fasta.close()
    except Exception as e:
        raise RunError(f"reading {part.chrom} window {window}: {e}") from e
    return codes


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
        identity = run_identity(config, info, self.fasta, self.lengths, selection, stride)
        parts = plan_selection(selection, self.lengths, geometry, stride, config.windows_per_part)
        self.mode = AtlasMode(self.fasta, geometry.input_length)
        totals = {"parts": len(parts), "units": sum(len(p.windows) for p in parts),
                  "rows": sum(p.n_rows for p in parts)}
        totals["windows"] = totals["units"]
        return JobPlan(identity=identity, totals=totals, parts=parts)


def predict(config: PredictConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Run (or resume) a genome atlas and return its summary.

    Raises ValueError (or a subclass) on bad input, StoreError when ``--out`` cannot be used as asked, and
    RunError when a part fails; committed parts are kept and re-running the same call resumes.
    """
    return dataclasses.replace(run_job(AtlasJob(config), on_part), row_unit="bins", output_label="atlas")
