"""The atlas kind: every bin of a genome (or of BED regions) predicted into Parquet, on the engine.

Owns what is particular to atlases: the request (FASTA, regions, chromosomes, stride, output dtype), the
run identity, planning parts of consecutive windows from the identity (``plan_parts``: the run and
``validate`` both plan with it), reading a part's windows into uint8 base codes (≈ 0.2 MB per window; a Ray
task), predicting them on a replica and stitching each window's owned bins into the part's rows, and the bin
coverage ``validate`` runs (every expected bin exactly once; with ``--fasta``, the bases under every part).
Orchestration, resume and commit are the engine's (``engine.run_job``), shared with the other kinds; the
atlas reader (``enformer_batch.atlas``) reads what this writes (docs/contract.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..engine import RunError, RunOptions, RunSummary, run_job, stage
from ..genome import N_CODE, FastaSource, read_codes
from ..integrity import comparable_identity
from ..regions import read_bed
from ..settings import InferenceSettings, ModelInfo, NonFiniteOutput
from ..store import OutputStore, PartRecord, bins_table, track_schema
from ..windows import (
    DEFAULT_ROWS_PER_PART,
    BinRanges,
    Geometry,
    PartPlan,
    WindowTask,
    bins_of_interval,
    merge_ranges,
    n_bins,
    plan_selection,
    windows_per_part_for_rows,
)
from .arguments import add_model_arguments, run_options, str_list
from .base import ChromCoverage, FastaJob, codes_problems

if TYPE_CHECKING:
    from ..inference import Predictor


@dataclass(frozen=True)
class AtlasConfig(RunOptions):
    """One atlas run, as the command line or a notebook describes it (see ``RunOptions`` for the rest)."""

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

    def check(self) -> None:
        super().check()
        if self.windows_per_part is not None and self.windows_per_part < 1:
            raise ValueError(f"windows_per_part must be at least 1, got {self.windows_per_part}")
        if self.rows_per_part < 1:
            raise ValueError(f"rows_per_part must be at least 1, got {self.rows_per_part}")


PredictConfig = AtlasConfig  # the name the API had before job kinds (users and jobs/ call it)


# --- the plan -------------------------------------------------------------------------------------


def select_bins(
    config: AtlasConfig, lengths: Mapping[str, int], bin_size: int
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


def resolve_windows_per_part(config: AtlasConfig, geometry: Geometry, stride: int) -> int:
    """Windows per part: ``windows_per_part`` when given, else derived from ``rows_per_part`` at this stride."""
    if config.windows_per_part is not None:
        return config.windows_per_part
    return windows_per_part_for_rows(config.rows_per_part, geometry, stride)


def recorded_windows_per_part(identity: Mapping, previous: Mapping | None) -> int | None:
    """The part size of the atlas already at ``--out`` (``previous``: its manifest) when it is this run but for
    its part size, else None.

    Atlases started before parts were sized by rows (16 windows at any stride), or with another
    ``rows_per_part``, resume with the plan they were started with: their part names, and what ``validate``
    re-plans, follow the recorded ``windows_per_part``.
    """
    recorded = comparable_identity((previous or {}).get("identity"))
    n = recorded.get("windows_per_part")
    if isinstance(n, int) and n >= 1 and recorded == {**identity, "windows_per_part": n}:
        return n
    return None


def selection_of(identity: Mapping) -> dict[str, BinRanges | None]:
    """The run's selection, as ``predict`` planned it: each chromosome's wanted bin ranges (None = all)."""
    regions = identity.get("regions")
    return {
        chrom: None if regions is None else tuple(tuple(r) for r in regions["bins"].get(chrom, []))
        for chrom in identity["chromosomes"]
    }


def plan_parts(identity: Mapping) -> list[PartPlan]:
    """The parts of an atlas run, from its identity (the run and ``validate`` both plan with this).

    A list of small plans (a few numbers each, no windows): hg38 at stride 128 is ~1,800 parts.
    """
    return plan_selection(selection_of(identity), identity["fasta"]["chromosomes"],
                          Geometry(**identity["geometry"]), identity["stride"], identity["windows_per_part"])


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


class AtlasJob(FastaJob):
    """The driver's side of an atlas run."""

    options: AtlasConfig

    def make_mode(self, geometry: Geometry) -> AtlasMode:
        return AtlasMode(self.fasta, geometry.input_length)

    def prepare(self) -> None:
        form = self.fasta.form  # a missing, unreadable or empty file fails here, before any stage line
        stage(self.options, f"reading the genome index of {self.fasta.file_name} ({form})")
        super().prepare()

    def read_inputs(self) -> None:
        # Fail fast, before Ray starts, on what needs no model; the stride and bins follow the model's geometry.
        select_bins(self.options, self.lengths, 1)

    def identity_fields(self, info: ModelInfo, previous: Mapping | None) -> dict:
        config, geometry = self.options, info.geometry
        stride = config.stride if config.stride is not None else geometry.output_span
        geometry.check_stride(stride)
        selection = select_bins(config, self.lengths, geometry.bin_size)
        bins = {c: [list(r) for r in b] for c, b in selection.items() if b is not None}
        return {
            "chromosomes": list(selection),
            "regions": None if config.regions is None else {"source": os.path.basename(config.regions), "bins": bins},
            "stride": stride,
            "windows_per_part": resolve_windows_per_part(config, geometry, stride),
            "dtype": config.dtype,
        }

    def identity(self, info: ModelInfo, previous: Mapping | None = None) -> dict:
        identity = super().identity(info, previous)
        if self.options.windows_per_part is None:  # an atlas at --out started with another part size keeps it
            recorded = recorded_windows_per_part(identity, previous)
            if recorded is not None:
                identity["windows_per_part"] = recorded
        return identity

    def totals(self, identity: Mapping, parts: list[PartPlan]) -> dict:
        units = sum(p.units for p in parts)
        return {"parts": len(parts), "units": units, "rows": sum(p.n_rows for p in parts), "windows": units}


def predict(config: AtlasConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Run (or resume) a genome atlas and return its summary.

    Raises ValueError (or a subclass) on bad input, StoreError when ``--out`` cannot be used as asked, and
    RunError when a part fails; committed parts are kept and re-running the same call resumes.
    """
    return dataclasses.replace(run_job(AtlasJob(config, KIND), on_part), row_unit="bins", output_label="atlas")


# --- validation -----------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _atlas_reader(fasta: str, options: tuple, input_length: int):
    """The atlas reader stage on ``fasta``, once per task process (reused across the parts of a batch)."""
    return AtlasMode(FastaSource(fasta, dict(options)), input_length)


class BinCoverage:
    """Atlas coverage: every expected bin of every selected chromosome written exactly once."""

    unit = "bins"

    def __init__(self, identity: Mapping, store: OutputStore):
        self.identity = identity
        self.lengths: dict[str, int] = identity["fasta"]["chromosomes"]
        self.geometry = Geometry(**identity["geometry"])
        self.store = store
        self.schema = KIND.schema(identity)
        self.plan = plan_parts(identity)
        self.runs: dict[str, list[np.ndarray]] = {c: [] for c in identity["chromosomes"]}
        self.coverage = {c: ChromCoverage(c, self.lengths[c], 0) for c in identity["chromosomes"]}

    def fasta_chromosomes(self) -> list[str]:
        return list(self.identity["chromosomes"])

    def planned_paths(self) -> dict:
        return {self.store.part_relpath(part.chrom, part.name): part for part in self.plan}

    def with_inputs(self, planned: Mapping, inputs: Mapping[str, str], storage_options) -> Mapping:
        return planned

    def checker(self, inputs: Mapping[str, str], fasta: str | None, storage_options) -> BinChecker:
        lengths = {c: self.lengths[c] for c in self.identity["chromosomes"]}
        return BinChecker(self.schema, self.geometry.bin_size, lengths, fasta,
                          tuple(sorted(dict(storage_options or {}).items())), self.geometry.input_length)

    def merge(self, path: str, part, runs: np.ndarray) -> None:
        self.runs[part.chrom].append(runs)
        self.coverage[part.chrom].parts += 1

    def finish(self, complete: bool, inputs: Mapping[str, str], storage_options,
               ) -> tuple[list[ChromCoverage], list[str]]:
        problems = []
        selection = selection_of(self.identity)
        for chrom in self.identity["chromosomes"]:
            cov = self.coverage[chrom]
            total = n_bins(self.lengths[chrom], self.geometry.bin_size)
            ranges = ((0, total),) if selection[chrom] is None else selection[chrom]
            want = np.array([(min(lo, total), min(hi, total)) for lo, hi in ranges] or np.empty((0, 2)), np.int64)
            found = np.concatenate(self.runs[chrom] or [np.empty((0, 2), np.int64)])
            tally = tally_bins(found, want.reshape(-1, 2))
            cov.bins_expected = tally.wanted
            cov.bins_found = tally.found
            cov.duplicates = tally.duplicates
            if cov.duplicates:
                problems.append(f"{chrom}: {cov.duplicates} bins written more than once")
            if tally.missing and complete:
                first = tally.first_missing * self.geometry.bin_size
                problems.append(f"{chrom}: {tally.missing} bins missing (first at {first})")
            if tally.extra:
                problems.append(f"{chrom}: {tally.extra} bins outside the selection")
        return [self.coverage[c] for c in self.identity["chromosomes"]], problems


@dataclass(frozen=True)
class BinChecker:
    """What a task needs to check an atlas part: the schema, the bins, and the genome for ``--fasta``."""

    schema: pa.Schema
    bin_size: int
    lengths: Mapping[str, int]
    fasta: str | None = None
    storage_options: tuple = ()
    input_length: int = 0
    columns: tuple[str, ...] = ("start", "end")

    def summarise(self, path: str, part, table: pa.Table) -> tuple[list[str], np.ndarray]:
        """The start/end check, and the part's bins as runs ``[[lo, hi), ...]`` (one run for a normal part)."""
        start = table.column("start").to_numpy()
        end = table.column("end").to_numpy()
        problems = []
        if np.any(start % self.bin_size) or np.any(end != np.minimum(start + self.bin_size, self.lengths[part.chrom])):
            problems.append(f"part {path}: start/end are not the bins [i*{self.bin_size}, (i+1)*...)")
        return problems, bin_runs(start // self.bin_size)

    def check_codes(self, path: str, part, recorded: str) -> list[str]:
        return codes_problems(_atlas_reader(self.fasta, self.storage_options, self.input_length), self.fasta,
                              path, part, recorded, f"{part.chrom} windows {part.first}-{part.end - 1}")


def bin_runs(bins: np.ndarray) -> np.ndarray:
    """Bins in row order as runs of consecutive bins, ``[k, 2]`` of ``[lo, hi)``: the same multiset, kB not MB.

    A repeated or out-of-order bin starts a run of its own, so duplicates within a part stay countable.
    """
    bins = np.asarray(bins, dtype=np.int64)
    if not len(bins):
        return np.empty((0, 2), np.int64)
    breaks = np.flatnonzero(np.diff(bins) != 1) + 1
    first = np.concatenate([[0], breaks])
    last = np.concatenate([breaks - 1, [len(bins) - 1]])
    return np.stack([bins[first], bins[last] + 1], axis=1)


@dataclass(frozen=True)
class Tally:
    wanted: int  # distinct bins wanted
    found: int  # distinct bins found
    duplicates: int  # bins found more than once
    missing: int  # wanted, not found
    extra: int  # found, not wanted
    first_missing: int  # the first missing bin (-1: none)


def tally_bins(found: np.ndarray, want: np.ndarray) -> Tally:
    """Compare runs of found bins (a multiset) with runs of wanted ones (a set), in O(runs log runs)."""
    points = np.unique(np.concatenate([found.ravel(), want.ravel()]))
    if len(points) < 2:
        return Tally(0, 0, 0, 0, 0, -1)
    seg, length = points[:-1], np.diff(points)

    def depth(runs: np.ndarray) -> np.ndarray:  # how many runs cover each segment [points[i], points[i+1])
        runs = runs[runs[:, 1] > runs[:, 0]]
        return (np.searchsorted(np.sort(runs[:, 0]), seg, "right")
                - np.searchsorted(np.sort(runs[:, 1]), seg, "right"))

    have, need = depth(found), depth(want) > 0
    gaps = need & (have == 0)
    return Tally(
        wanted=int(length[need].sum()),
        found=int(length[have > 0].sum()),
        duplicates=int(length[have > 1].sum()),
        missing=int(length[gaps].sum()),
        extra=int(length[(have > 0) & ~need].sum()),
        first_missing=int(seg[gaps][0]) if gaps.any() else -1,
    )


# --- the kind -------------------------------------------------------------------------------------


class AtlasKind:
    """Genome atlases (``enformer-batch predict``)."""

    name = "atlas"
    command = "predict"
    config = AtlasConfig
    help = "predict every bin of a genome (or of BED regions) into a Parquet atlas"
    description = (
        "Tile FASTA into model windows (Enformer: 196,608 bp in, 896 bins of 128 bp out; Borzoi: 524,288 bp "
        "in, 6,144 bins of 32 bp out), predict them on "
        "Ray actors (one per GPU, or one CPU worker), and write <out>/chrom=<name>/part-*.parquet with "
        "columns start, end and one per track, plus _manifest.json and _SUCCESS. Re-running the same "
        "command on the same --out resumes; an --out holding another configuration (or other weights, or a "
        "FASTA with other bases under committed parts) is refused unless --overwrite. One predict at a "
        "time per --out: a second one is refused while the first holds the lease (<out>/_lease.json)."
    )
    validate_inputs: Mapping[str, str] = {}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The options of ``enformer-batch predict`` (also used by the ``jobs/`` entrypoints)."""
        parser.add_argument("fasta", help="genome path or fsspec URL (s3://, gs://, https://...): FASTA (.fai), "
                            "bgzip FASTA (.fai/.gzi), plain-gzip FASTA (decompressed once into "
                            "$ENFORMER_BATCH_CACHE) or .2bit")
        add_model_arguments(parser)
        parser.add_argument("--stride", type=int, default=None, help="bp between windows; multiple of the bin "
                            "size, at most the output span (default: the output span, 114,688 for Enformer); "
                            "Parquet parts hold ~14,336 bins (rows) at any stride")
        parser.add_argument("--regions", default=None, help="BED file: predict only bins overlapping these "
                            "intervals")
        parser.add_argument("--chroms", type=str_list, default=None, help="comma-separated chromosomes (default: "
                            "all)")
        parser.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored value type")

    def config_from_args(self, args: argparse.Namespace) -> AtlasConfig:
        """The run that parsed ``predict`` arguments describe."""
        return AtlasConfig(fasta=args.fasta, stride=args.stride, regions=args.regions, chroms=args.chroms,
                           dtype=args.dtype, **run_options(args))

    def run(self, config: AtlasConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
        return predict(config, on_part)

    def parts(self, identity: Mapping) -> list[PartPlan]:
        return plan_parts(identity)

    def schema(self, identity: Mapping) -> pa.Schema:
        return track_schema([t["name"] for t in identity["tracks"]], identity["dtype"])

    def coverage(self, identity: Mapping, store: OutputStore) -> BinCoverage:
        return BinCoverage(identity, store)


KIND = AtlasKind()
