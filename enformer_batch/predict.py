"""Ray orchestration of a prediction run: plan → read/encode (tasks) → predict + write (actors) → commit.

Owns the run: checking the request, planning parts from the FASTA index, resuming from the manifest,
and streaming parts through Ray with a bounded number in flight, so a 3-Gb genome runs with the same
driver and object-store footprint as the demo. Reader tasks turn a part's windows into uint8 base codes
(≈ 0.2 MB per window); one actor per GPU (or one CPU actor) holds a model replica, predicts, stitches
and writes the part itself, so predictions never travel through the object store. The driver only sees
part records and is the single writer of the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from . import __version__
from .genome import FastaSource, read_codes
from .inference import InferenceSettings, ModelInfo, Predictor
from .store import (
    MANIFEST_FORMAT,
    AtlasStore,
    PartRecord,
    StoreError,
    manifest_parts,
    part_table,
    records_from_manifest,
)
from .windows import BinRanges, Geometry, PartPlan, bins_of_interval, merge_ranges, plan_selection

DEFAULT_WINDOWS_PER_PART = 16
WORKER_NAME_PREFIX = "enformer-batch-worker-"


class RunError(RuntimeError):
    """A run that stopped; committed parts are kept and the run is not marked complete."""


@dataclass(frozen=True)
class PredictConfig:
    """One prediction run, as the command line or a notebook describes it."""

    fasta: str
    out: str
    model: str = "demo"
    head: str = "human"
    tracks: str | None = None
    stride: int | None = None  # default: the model's output span (every bin predicted once)
    regions: str | None = None  # BED path or URL
    chroms: tuple[str, ...] | None = None
    batch_size: int = 4
    precision: str = "fp32"
    dtype: str = "float16"
    rc: bool = False
    shifts: tuple[int, ...] = (0,)
    n_encoding: str = "zeros"
    device: str = "auto"  # "gpu": replicas ask Ray for GPUs even before any exists (autoscaling clusters)
    workers: int | None = None  # default: one per GPU-share in the cluster, else one CPU worker
    gpus_per_worker: float = 1.0
    # Torch threads per replica; default: the node's cores divided among its replicas. On CPUs the
    # reduction order, hence the last bits of fp32 results, depends on it: pin it to compare runs bit-wise.
    threads_per_worker: int | None = None
    overwrite: bool = False
    windows_per_part: int = DEFAULT_WINDOWS_PER_PART
    storage_options: Mapping[str, str] = field(default_factory=dict)
    unsquash: bool = False  # undo Borzoi's squashed target scale (see inference.InferenceSettings)
    progress: bool = True
    manifest_interval_s: float = 10.0  # how often the driver commits finished parts to the manifest
    replica_patience_s: float = 900.0  # fail when no replica has run this long (e.g. no GPU node comes up)

    def inference_settings(self) -> InferenceSettings:
        return InferenceSettings(
            model=self.model,
            head=self.head,
            tracks=self.tracks,
            precision=self.precision,
            rc=self.rc,
            shifts=tuple(self.shifts),
            n_encoding=self.n_encoding,
            batch_size=self.batch_size,
            dtype=self.dtype,
            storage_options=dict(self.storage_options),
            unsquash=self.unsquash,
        )


@dataclass(frozen=True)
class RunSummary:
    out: str
    windows: int
    windows_computed: int
    rows: int
    parts: int
    seconds: float
    resumed_parts: int

    @property
    def windows_per_second(self) -> float:
        return self.windows_computed / self.seconds if self.seconds > 0 else float("nan")

    def __str__(self) -> str:
        return (
            f"done: {self.windows} windows ({self.windows_computed} computed, {self.resumed_parts} parts resumed), "
            f"{self.rows} bins in {self.parts} parts, {self.seconds:.1f} s, "
            f"{self.windows_per_second:.2f} windows/s\natlas: {self.out}"
        )


# --- input checks ---------------------------------------------------------------------------------


def read_bed(url: str, lengths: Mapping[str, int], storage_options: Mapping[str, str] | None = None):
    """BED intervals per chromosome (0-based half-open), checked against the FASTA's chromosomes."""
    import fsspec

    intervals: dict[str, list[tuple[int, int]]] = {}
    try:
        with fsspec.open(url, "rt", **dict(storage_options or {})) as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, OSError) as e:
        raise ValueError(f"cannot read --regions {url}: {e}") from e
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        where = f"--regions {url} line {number}"
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
        intervals.setdefault(chrom, []).append((start, end))
    if not intervals:
        raise ValueError(f"--regions {url} holds no intervals")
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
    config.inference_settings().check()
    if config.workers is not None and config.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {config.workers}")
    if config.device not in ("auto", "gpu", "cpu"):
        raise ValueError(f"--device must be auto, gpu or cpu, got {config.device!r}")
    if config.threads_per_worker is not None and config.threads_per_worker < 1:
        raise ValueError(f"--threads-per-worker must be at least 1, got {config.threads_per_worker}")
    if config.gpus_per_worker <= 0:
        raise ValueError(f"--gpus-per-worker must be positive, got {config.gpus_per_worker}")
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
        "engine_version": __version__,
        "model": {"id": info.model_id, "weights_sha256": info.weights_sha256, "head": info.head,
                  "config": info.config, "family": info.family,
                  "replicates": [{"id": i, "weights_sha256": h} for i, h in info.replicates],
                  "unsquash": info.unsquash},
        "fasta": {"name": fasta.name, "chromosomes": dict(lengths)},
        "chromosomes": list(selection),
        "regions": None
        if config.regions is None
        else {"source": os.path.basename(config.regions), "bins": bins},
        "geometry": asdict(info.geometry),
        "stride": stride,
        "windows_per_part": config.windows_per_part,
        "tracks": [
            {"index": i, "name": n, "description": d}
            for i, n, d in zip(info.track_indices, info.track_names, info.track_descriptions)
        ],
        "dtype": config.dtype,
        "precision": config.precision,
        "augmentation": {"rc": config.rc, "shifts": list(config.shifts)},
        "n_encoding": config.n_encoding,
    }


def identity_digest(identity: Mapping) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def describe_difference(old: Mapping, new: Mapping) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(keys) or "format"


# --- Ray stages -----------------------------------------------------------------------------------


def read_part(fasta_source: FastaSource, part: PartPlan, input_length: int) -> np.ndarray:
    """Base codes ``[n_windows, input_length]`` for a part's windows (a Ray task runs this)."""
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


class PartWorker:
    """A model replica that predicts parts and writes them where they were computed.

    Several calls may run at once (the Ray actor is threaded): prediction is serialised by a lock so the
    device runs one batch stream, while a finished part is stitched and written beside it.
    """

    def __init__(self, settings: InferenceSettings, store: AtlasStore, num_threads: int | None = None):
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        self.predictor = Predictor(settings)
        self.store = store
        self._device_lock = threading.Lock()

    def ping(self) -> bool:
        return True

    def placement(self) -> dict:
        """Where this replica runs: node, Ray's GPU ids, and the torch device it predicts on."""
        import ray

        context = ray.get_runtime_context()
        return {"node": context.get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "device": str(self.predictor.device)}

    def run_part(self, part: PartPlan, codes: np.ndarray) -> PartRecord:
        from .inference import NonFiniteOutput

        try:
            with self._device_lock:
                values, ran = self.predictor.predict(codes)
        except NonFiniteOutput as e:
            windows = [part.windows[i].k for i in e.window_indices]
            raise RunError(f"{part.chrom} window(s) {windows}: the model returned NaN or infinity, or a value "
                           f"too large for --dtype {self.predictor.settings.dtype}") from None
        info = self.predictor.info
        table = part_table(part, values, ran, info.track_names, self.predictor.settings.dtype, info.geometry.bin_size)
        return self.store.write_part(part, table)


def _ray_init() -> None:
    import ray

    if ray.is_initialized():
        return
    # Ray's start-up chatter would bury our one-line errors and the progress bar; its errors still show.
    quiet = {"logging_level": "ERROR", "log_to_driver": True}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
    else:
        ray.init(include_dashboard=False, **quiet)


def _worker_layout(config: PredictConfig) -> tuple[int, float, int]:
    """(workers, gpus per worker, torch threads per worker) for the cluster Ray is connected to.

    ``device="auto"`` uses GPUs when the cluster has some now; ``"gpu"`` asks for them regardless, so an
    autoscaler starts GPU nodes for ``--workers`` replicas; ``"cpu"`` never uses them.
    """
    import ray

    gpus = ray.cluster_resources().get("GPU", 0.0)
    use_gpus = config.device == "gpu" or (config.device == "auto" and gpus >= config.gpus_per_worker)
    if use_gpus:
        workers = config.workers or max(1, int(gpus // config.gpus_per_worker))
        # A GPU replica's CPU threads only launch kernels; writing runs in pyarrow's own pool.
        return workers, config.gpus_per_worker, config.threads_per_worker or 2
    workers = config.workers or 1
    return workers, 0.0, config.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)


class _Progress:
    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=initial, unit="window", desc="predict", file=sys.stderr,
                mininterval=1.0, dynamic_ncols=True,
            )

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def describe_model(settings: InferenceSettings) -> ModelInfo:
    """Load the model once on the CPU and report what the run needs to know (a Ray task runs this)."""
    return Predictor(settings, device="cpu").info


def _actor_error_message(error: BaseException) -> str:
    """The last line of the exception an actor's __init__ raised, from Ray's ActorDiedError text."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error:" in line or "Error(" in line:
            return line
    return lines[-1] if lines else type(error).__name__


def _remote_error(error: BaseException) -> BaseException:
    """The exception raised inside a Ray task or actor call, unwrapped from Ray's wrappers."""
    import ray

    while isinstance(error, ray.exceptions.RayTaskError) and error.cause is not None:
        error = error.cause
    return error


class _WorkerPool:
    """The model actors and their health: parts go only to replicas known to be alive.

    A replica that dies (killed, OOM, node lost) is restarted by Ray (``max_restarts=-1``); until a ping
    answers it gets no parts, so a replica waiting for a replacement node does not hold work hostage.
    """

    def __init__(self, settings: InferenceSettings, store: AtlasStore, workers: int, gpus: float, threads: int):
        import ray

        actor_class = ray.remote(PartWorker)
        options = dict(num_cpus=1, num_gpus=gpus, max_restarts=-1, max_task_retries=0, max_concurrency=2)
        # Named so that operators (and the fault tests) can find a run's replicas: `ray list actors`.
        run = uuid.uuid4().hex[:8]
        self.actors = [
            actor_class.options(name=f"{WORKER_NAME_PREFIX}{run}-{i}", **options).remote(settings, store, threads)
            for i in range(workers)
        ]
        self.load = [0] * workers
        self.healthy = [False] * workers
        self.all_down_since: float | None = time.monotonic()
        self.pings = {actor.ping.remote(): i for i, actor in enumerate(self.actors)}

    def free_slot(self, depth: int) -> int | None:
        candidates = [i for i in range(len(self.actors)) if self.healthy[i] and self.load[i] < depth]
        return min(candidates, key=lambda i: self.load[i]) if candidates else None

    def mark_dead(self, i: int) -> None:
        """Take replica ``i`` out of rotation until a ping answers.

        It is killed (and so restarted by Ray) first: a replica that is only unreachable could otherwise
        still be writing the part that is about to be recomputed elsewhere.
        """
        import ray

        if self.healthy[i]:
            self.healthy[i] = False
            ray.kill(self.actors[i], no_restart=False)
            self.pings[self.actors[i].ping.remote()] = i
            if not any(self.healthy):
                self.all_down_since = time.monotonic()

    def on_ping(self, ref) -> None:
        import ray

        i = self.pings.pop(ref)
        try:
            ray.get(ref)
            self.healthy[i] = True
            self.all_down_since = None
        except ray.exceptions.RayActorError as e:
            if getattr(e, "actor_init_failed", False):  # the model cannot load on this replica
                raise RunError(f"a model replica failed to start: {_actor_error_message(e)}") from None
            time.sleep(0.1)  # it is restarting (or waiting for a node): ask again shortly
            self.pings[self.actors[i].ping.remote()] = i
        except ray.exceptions.RayTaskError as e:
            raise _remote_error(e) from None

    def check_progress(self, patience_s: float) -> None:
        """Fail, rather than wait forever, when no replica has been alive for ``patience_s`` seconds."""
        if self.all_down_since is not None and time.monotonic() - self.all_down_since > patience_s:
            raise RunError(
                f"no model replica has been running for {patience_s:.0f} s: the cluster lacks the resources "
                "they ask for (GPUs, CPUs) or they keep dying; see `ray status` and the Ray logs"
            )

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


def predict(config: PredictConfig, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Run (or resume) a prediction job and return its summary.

    Raises ValueError (or a subclass) on bad input, StoreError when ``--out`` cannot be used as asked, and
    RunError when a part fails; committed parts are kept and re-running the same call resumes.
    """
    import ray

    t0 = time.perf_counter()
    check_request(config)
    fasta = FastaSource(config.fasta, dict(config.storage_options))
    lengths = fasta.lengths()
    # Fail fast, before Ray starts, on what needs no model; the stride and bins follow the model's geometry.
    select_bins(config, lengths, 1)
    store = AtlasStore(config.out, config.storage_options)
    try:
        previous = store.read_manifest()
    except StoreError:
        if not config.overwrite:
            raise
        previous = None
    if previous is None and store.list_part_files() and not config.overwrite:
        raise StoreError(f"--out {config.out} holds Parquet parts but no manifest; pass --overwrite to replace them")
    store.check_writable()

    _ray_init()
    settings = config.inference_settings()
    try:
        info: ModelInfo = ray.get(ray.remote(describe_model).options(num_cpus=1, max_retries=0).remote(settings))
    except ray.exceptions.RayTaskError as e:
        raise _remote_error(e) from None
    geometry: Geometry = info.geometry
    stride = config.stride if config.stride is not None else geometry.output_span
    geometry.check_stride(stride)
    selection = select_bins(config, lengths, geometry.bin_size)
    identity = run_identity(config, info, fasta, lengths, selection, stride)
    committed = _resumable_parts(config, store, previous, identity)
    store.clear_success()

    parts = plan_selection(selection, lengths, geometry, stride, config.windows_per_part)
    planned = {store.part_relpath(p.chrom, p.name) for p in parts}
    committed = {k: v for k, v in committed.items() if k in planned}
    todo = deque(p for p in parts if store.part_relpath(p.chrom, p.name) not in committed)
    manifest = {
        "format": MANIFEST_FORMAT,
        "identity": identity,
        "run": identity_digest(identity),
        "status": "running",
        "totals": {"parts": len(parts), "windows": sum(len(p.windows) for p in parts),
                   "rows": sum(p.n_rows for p in parts)},
        "parts": manifest_parts(committed),
    }
    store.write_manifest(manifest)
    resumed = len(committed)

    def save(status: str = "running") -> None:
        manifest["status"] = status
        manifest["parts"] = manifest_parts(committed)
        store.write_manifest(manifest)

    workers, gpus, threads = _worker_layout(config)
    pool = _WorkerPool(settings, store, workers, gpus, threads)
    total_windows = manifest["totals"]["windows"]
    progress = _Progress(total_windows, total_windows - sum(len(p.windows) for p in todo), config.progress)
    computed = 0
    try:
        for record, part in _stream_parts(
            todo, pool, fasta, geometry, save, config.manifest_interval_s, config.replica_patience_s
        ):
            committed[record.path] = record
            computed += len(part.windows)
            progress.update(len(part.windows))
            if on_part is not None:
                on_part(record)
    except BaseException:
        pool.shutdown()  # first, so that no replica publishes a part after the manifest is saved
        try:
            save()  # whatever committed so far stays committed; the run is not complete
        except Exception as e:  # noqa: BLE001 - the original failure is the one to report
            print(f"enformer-batch: could not save the manifest after the failure: {e}", file=sys.stderr)
        raise
    finally:
        progress.close()
        pool.shutdown()
    save("complete")
    store.mark_success()
    return RunSummary(
        out=config.out,
        windows=total_windows,
        windows_computed=computed,
        rows=sum(r.rows for r in committed.values()),
        parts=len(committed),
        seconds=time.perf_counter() - t0,
        resumed_parts=resumed,
    )


def _resumable_parts(config: PredictConfig, store: AtlasStore, previous: Mapping | None, identity: Mapping):
    """Committed parts of an earlier run with the same identity (present with the recorded size)."""
    if previous is None:
        if config.overwrite:
            store.remove_all()
        return {}
    if previous.get("format") != MANIFEST_FORMAT or previous.get("identity") != identity:
        if not config.overwrite:
            what = describe_difference(previous.get("identity") or {}, identity)
            raise StoreError(
                f"--out {config.out} holds a run with another configuration ({what} differ); "
                "pass --overwrite to replace it, or choose another --out"
            )
        store.remove_all()
        return {}
    # A part whose file is gone or has another size (truncated) is recomputed; checksums are left to validate,
    # which reads every byte, so that resuming a large atlas does not.
    return {
        path: record
        for path, record in records_from_manifest(previous).items()
        if store.exists(path) and store.size(path) == record.bytes
    }


def _stream_parts(
    todo: deque, pool: _WorkerPool, fasta: FastaSource, geometry: Geometry, save, interval: float, patience_s: float
):
    """Yield ``(record, part)`` as parts commit, keeping at most ``depth`` parts queued per replica."""
    import ray

    depth = 2  # one running, one read and waiting, so the device never waits on a read
    # Reads need no CPU reservation: at most `depth` per replica are in flight, and reserving a CPU could
    # deadlock a cluster whose CPUs are all held by CPU replicas.
    read_task = ray.remote(read_part).options(num_cpus=0, max_retries=3)
    in_flight: dict = {}
    attempts: dict[str, int] = {}
    last_save = time.monotonic()
    while todo or in_flight:
        while todo and (slot := pool.free_slot(depth)) is not None:
            part = todo.popleft()
            codes = read_task.remote(fasta, part, geometry.input_length)
            in_flight[pool.actors[slot].run_part.remote(part, codes)] = (part, slot)
            pool.load[slot] += 1
        ready, _ = ray.wait(list(in_flight) + list(pool.pings), num_returns=1, timeout=1.0)
        for ref in ready:
            if ref in pool.pings:
                pool.on_ping(ref)
                continue
            part, slot = in_flight.pop(ref)
            pool.load[slot] -= 1
            try:
                record: PartRecord = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # the part itself failed: stop, naming it
                raise RunError(f"run stopped: {_remote_error(e)}; committed parts are kept and the run is not "
                               "complete; fix the cause and re-run the same command to resume") from None
            except ray.exceptions.RayError as e:
                # The system failed the part (replica died or unreachable, an object or node lost): recompute
                # it. The name is deterministic, so whatever it may have published is replaced, not duplicated.
                if isinstance(e, ray.exceptions.RayActorError):
                    pool.mark_dead(slot)
                key = f"{part.chrom}/{part.name}"
                attempts[key] = attempts.get(key, 0) + 1
                if attempts[key] > 3:
                    raise RunError(f"{part.chrom} windows {part.first_window}-{part.end_window - 1} failed 4 "
                                   f"times ({type(e).__name__}); see the Ray logs") from None
                todo.appendleft(part)
                continue
            yield record, part
        pool.check_progress(patience_s)
        if time.monotonic() - last_save >= interval:
            try:
                save()
            except Exception as e:  # noqa: BLE001 - a store hiccup; parts stay committable at the next save
                print(f"enformer-batch: manifest update failed, will retry: {e}", file=sys.stderr)
            last_save = time.monotonic()
