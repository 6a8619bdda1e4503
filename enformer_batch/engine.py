"""The engine: Ray orchestration shared by every mode (genome atlas, variant scores, ...).

Owns a run's life cycle, whatever its work units are: checking ``--out``, starting Ray, asking the model
what it is, resuming from the manifest, streaming parts through reader tasks and model replicas with a
bounded number in flight, committing finished parts to the manifest (the driver is its only writer) and
marking the run complete. A *mode* says what a part is and supplies three plain functions that run
where the data is: ``read`` (a Ray task: FASTA → base codes and whatever else the part needs), ``infer``
(on a replica, holding its device: codes → small arrays, e.g. predictions or scores) and ``table`` (on
the same replica, off the device: arrays → the part's Arrow table). One actor per GPU (or one CPU actor)
holds a model replica and writes what it computed, so results never travel through the object store;
the driver only sees part records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from .integrity import NUMERICS_VERSION, GenomeMismatch, check_weights, comparable_identity, refusal, verify_genome
from .lease import Lease, LeaseLost
from .retry import with_retries
from .settings import STREAMS_IN_FLIGHT, InferenceSettings, ModelInfo
from .store import MANIFEST_FORMAT, OutputStore, PartRecord, StoreError, manifest_parts, records_from_manifest
from .version import __version__

if TYPE_CHECKING:
    from .inference import Predictor

WORKER_NAME_PREFIX = "enformer-batch-worker-"


class RunError(RuntimeError):
    """A run that stopped; committed parts are kept and the run is not marked complete."""


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What every mode's run shares: the output, the model and how it is computed, and the replicas."""

    out: str
    model: str = "demo"
    head: str = "human"
    tracks: str | None = None
    batch_size: int | None = None  # None: auto (from the GPU's free memory; 4 on CPUs)
    precision: str = "auto"  # auto: bf16 on accelerators that have it, fp32 on CPUs
    compile: str = "auto"  # torch.compile: auto = on CUDA devices, eager on CPUs
    rc: bool = False
    shifts: tuple[int, ...] = (0,)
    n_encoding: str = "zeros"
    device: str = "auto"  # "gpu": replicas ask Ray for GPUs even before any exists (autoscaling clusters)
    workers: int | None = None  # default: one per GPU-share in the cluster, else one CPU worker
    gpus_per_worker: float = 1.0
    # Torch threads per replica; default: the node's cores divided among its replicas. On CPUs the
    # reduction order, hence the last bits of fp32 results, depends on it: pin it to compare runs bit-wise.
    threads_per_worker: int | None = None
    # Threads per replica that table and write finished parts while the device computes the next ones
    # (default: 1 on CPU replicas; on GPU replicas the node's CPUs per replica, less one, at most 16).
    writers_per_worker: int | None = None
    overwrite: bool = False
    storage_options: Mapping[str, str] = field(default_factory=dict)
    unsquash: bool = False  # undo Borzoi's squashed target scale (see inference.InferenceSettings)
    progress: bool = True
    manifest_interval_s: float = 10.0  # how often the driver commits finished parts to the manifest
    replica_patience_s: float = 900.0  # fail when no replica has run this long (e.g. no GPU node comes up)

    def inference_settings(self, dtype: str = "float32") -> InferenceSettings:
        return InferenceSettings(
            model=self.model,
            head=self.head,
            tracks=self.tracks,
            precision=self.precision,
            rc=self.rc,
            shifts=tuple(self.shifts),
            n_encoding=self.n_encoding,
            batch_size=self.batch_size,
            dtype=dtype,
            storage_options=dict(self.storage_options),
            unsquash=self.unsquash,
            compile=self.compile,
        )

    def check(self) -> None:
        self.inference_settings().check()
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.device not in ("auto", "gpu", "cpu"):
            raise ValueError(f"--device must be auto, gpu or cpu, got {self.device!r}")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise ValueError(f"--threads-per-worker must be at least 1, got {self.threads_per_worker}")
        if self.gpus_per_worker <= 0:
            raise ValueError(f"--gpus-per-worker must be positive, got {self.gpus_per_worker}")
        if self.writers_per_worker is not None and self.writers_per_worker < 1:
            raise ValueError(f"--writers-per-worker must be at least 1, got {self.writers_per_worker}")


class Part(Protocol):
    """A unit of commit: one Parquet file under ``chrom=<chrom>/<name>``, holding units ``[first, end)``."""

    chrom: str
    name: str
    first: int
    end: int

    @property
    def units(self) -> int: ...  # work units (windows, variants) in this part, for progress


class Mode(Protocol):
    """A kind of run. Picklable and small: the engine ships it to reader tasks and replicas."""

    unit: str  # what progress counts: "window", "variant"

    def read(self, part: Any) -> Any:
        """Runs in a Ray task: the part's inputs (base codes and the like) from the FASTA."""

    def infer(self, predictor: Predictor, part: Any, inputs: Any) -> Any:
        """Runs on a replica while it holds the device; returns only what must leave it."""

    def table(self, part: Any, result: Any, info: ModelInfo) -> pa.Table:
        """Runs on the replica off the device: the part's rows."""

    def tally(self, result: Any) -> tuple[int, Mapping[str, int]]:
        """(model inputs computed, counts by status) of a finished part, for the summary."""

    def digest(self, inputs: Any) -> str:
        """A digest of the genome under the part (its base codes), recorded so a resume can tell genomes apart."""


@dataclass
class JobPlan:
    """What a mode planned: the run identity, totals for progress and the manifest, and its parts in order.

    ``parts`` must be re-iterable (a resume iterates it once to check the genome under committed parts, then
    again to run): a mode whose input is a stream (a VCF) gives an object that re-streams it when iterated.
    """

    identity: dict
    totals: dict  # at least "parts" and "units"
    parts: Iterable[Any]
    notes: tuple[str, ...] = ()  # one-line facts for the user (e.g. how chromosome names were matched)
    kind: str | None = None  # the job kind, recorded in the manifest so readers know what the output is


@dataclass(frozen=True)
class PartResult:
    record: PartRecord
    sequences: int  # model inputs computed for the part (before augmentation)
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    out: str
    unit: str
    units: int
    units_computed: int
    rows: int
    parts: int
    seconds: float
    resumed_parts: int
    sequences: int = 0  # model inputs computed (before augmentation passes)
    counts: Mapping[str, int] = field(default_factory=dict)  # rows by status, for modes that have one
    notes: tuple[str, ...] = ()
    row_unit: str = "rows"  # what a row is, for the summary line ("bins" in an atlas)
    output_label: str = "output"

    @property
    def units_per_second(self) -> float:
        return self.units_computed / self.seconds if self.seconds > 0 else float("nan")

    def __str__(self) -> str:
        lines = [
            f"done: {self.units} {self.unit}s ({self.units_computed} computed, {self.resumed_parts} parts resumed), "
            f"{self.rows} {self.row_unit} in {self.parts} parts, {self.seconds:.1f} s, "
            f"{self.units_per_second:.2f} {self.unit}s/s"
        ]
        if self.counts:
            lines.append("status: " + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())))
        computed_rows = sum(self.counts.values())  # modes with a status per row: variants, mutants, edits
        if computed_rows and self.sequences:
            lines.append(f"model inputs per {self.unit}: {self.sequences / computed_rows:.3f}")
        lines += list(self.notes)
        lines.append(f"{self.output_label}: {self.out}")
        return "\n".join(lines)


# --- the run identity -----------------------------------------------------------------------------


def model_identity(options: RunOptions, info: ModelInfo) -> dict:
    """The part of a run identity every mode shares: the model, its geometry and tracks, and how it is run."""
    return {
        "numerics_version": NUMERICS_VERSION,  # not the package version: a patch release resumes a run
        "model": {"id": info.model_id, "weights_sha256": info.weights_sha256, "head": info.head,
                  "config": info.config, "family": info.family,
                  "replicates": [{"id": i, "weights_sha256": h} for i, h in info.replicates],
                  "unsquash": info.unsquash},
        "geometry": asdict(info.geometry),
        "tracks": [
            {"index": i, "name": n, "description": d}
            for i, n, d in zip(info.track_indices, info.track_names, info.track_descriptions)
        ],
        "precision": info.precision,  # resolved: "auto" is not a precision
        "augmentation": {"rc": options.rc, "shifts": list(options.shifts)},
        "n_encoding": options.n_encoding,
    }


def identity_digest(identity: Mapping) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


# --- Ray stages -----------------------------------------------------------------------------------


def read_inputs(mode: Mode, part: Any) -> Any:
    """A Ray task: the mode reads a part's inputs, transient I/O errors retried with backoff."""
    try:
        return with_retries(lambda: mode.read(part), f"reading {part.chrom} {mode.unit}s {part.first}-{part.end - 1}")
    except RunError:
        raise
    except Exception as e:
        raise RunError(f"reading {part.chrom} {mode.unit}s {part.first}-{part.end - 1}: {e}") from e


class ReplicaWorker:
    """A model replica that computes parts and writes them where they were computed.

    Several calls run at once (the Ray actor is threaded, ``STREAMS_IN_FLIGHT + writers`` calls): two parts
    compute at once, their batches queued one at a time (``Predictor``), so the device runs one batch stream
    without a gap between parts, while up to ``writers`` finished parts are tabled, serialised and written
    beside it, so the device never waits for Parquet. pyarrow's encoder, numpy's copies
    and hashlib release the GIL, so the writer threads use as many cores as they are given.
    """

    def __init__(self, settings: InferenceSettings, store: OutputStore, num_threads: int | None = None,
                 memory_share: float = 1.0, parts_on_device: int = STREAMS_IN_FLIGHT):
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        self.store = store
        # Up to STREAMS_IN_FLIGHT parts compute at once; the predictor queues their batches one at a time, so
        # the device runs one batch stream but starts the next part before the last one's results are out.
        self._device_parts = threading.BoundedSemaphore(parts_on_device)
        # A model that cannot load (a bad --head, a missing checkpoint) is reported by every call with its own
        # exception, rather than as an actor that died in its constructor: the user gets one clear line.
        self._load_error: BaseException | None = None
        try:
            from .inference import Predictor  # torch: only model replicas import it

            self.predictor = Predictor(settings, memory_share=memory_share, streams=parts_on_device)
        except Exception as e:  # noqa: BLE001 - re-raised by every call
            self._load_error = e

    def _loaded(self) -> Predictor:
        if self._load_error is not None:
            raise self._load_error
        return self.predictor

    def ping(self) -> bool:
        self._loaded()
        return True

    def describe(self) -> ModelInfo:
        """What the driver needs to plan a run, from the model as loaded on this replica's device."""
        return self._loaded().info

    def placement(self) -> dict:
        """Where this replica runs: node, Ray's GPU ids, and the torch device it predicts on."""
        import ray

        context = ray.get_runtime_context()
        return {"node": context.get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "device": str(self.predictor.device)}

    def run_part(self, mode: Mode, part: Any, inputs: Any, expected: ModelInfo | None = None) -> PartResult:
        """Compute, table and write one part; ``expected``: the model the run records (refused if different)."""
        predictor = self._loaded()
        if expected is not None:
            check_replica(predictor.info, expected)
        with self._device_parts:
            result = mode.infer(predictor, part, inputs)
        table = mode.table(part, result, predictor.info)
        sequences, counts = mode.tally(result)
        record = self.store.write_part(part, table, codes_sha256=mode.digest(inputs))
        return PartResult(record, sequences, dict(counts))


def check_replica(info: ModelInfo, expected: ModelInfo) -> None:
    """Refuse to predict with other weights or another resolved precision than the run records."""
    check_weights(info.weights_sha256, expected.weights_sha256, info.model_id)
    if info.precision != expected.precision:
        raise RunError(
            f"this replica ({info.device}) resolved --precision to {info.precision}, the run records "
            f"{expected.precision}: give --precision {expected.precision} explicitly, or run on devices of one kind"
        )


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


@dataclass(frozen=True)
class WorkerLayout:
    workers: int
    gpus: float  # per replica
    threads: int  # torch threads per replica
    writers: int  # writer threads per replica
    cpus: int  # CPUs each replica reserves: its own, plus its writers' on GPU replicas


def _worker_layout(options: RunOptions) -> WorkerLayout:
    """How many replicas, and what each gets, on the cluster Ray is connected to.

    ``device="auto"`` uses GPUs when the cluster has some now; ``"gpu"`` asks for them regardless, so an
    autoscaler starts GPU nodes for ``--workers`` replicas; ``"cpu"`` never uses them. A GPU replica reserves
    CPUs for its writer threads (writing a 5,313-track part costs more CPU than predicting it on a GPU); a
    CPU replica computes on the cores itself and gets one writer.
    """
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), int(resources.get("CPU", 1))
    use_gpus = options.device == "gpu" or (options.device == "auto" and gpus >= options.gpus_per_worker)
    if use_gpus:
        workers = options.workers or max(1, int(gpus // options.gpus_per_worker))
        writers = options.writers_per_worker or max(1, min(16, cpus // workers - 1))
        # Reserve the writers' CPUs where the cluster has them; where it does not (several replicas sharing a
        # GPU on a small node), reserving would leave replicas unschedulable, so they share the node's cores.
        reserved = 1 + writers if cpus // workers >= 1 + writers else 1
        # A GPU replica's torch threads only launch kernels.
        return WorkerLayout(workers, options.gpus_per_worker, options.threads_per_worker or 2, writers, reserved)
    workers = options.workers or 1
    threads = options.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    return WorkerLayout(workers, 0.0, threads, options.writers_per_worker or 1, 1)


class _Progress:
    def __init__(self, total: int, unit: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, unit=unit, desc="run", file=sys.stderr, mininterval=1.0, dynamic_ncols=True,
            )

    def note(self, text: str) -> None:
        """A line above the bar (tqdm redraws the bar below it)."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def stage(options: RunOptions, text: str) -> None:
    """One line on stderr per start-up stage (genome, Ray, model, replicas), so a slow start is not silence."""
    if options.progress:
        print(f"enformer-batch: {text}", file=sys.stderr, flush=True)


def describe_model(settings: InferenceSettings) -> ModelInfo:
    """Load the model once and report what the run needs to know (a Ray task runs this on resume)."""
    from .inference import Predictor

    return Predictor(settings).info


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

    def __init__(self, settings: InferenceSettings, store: OutputStore, layout: WorkerLayout):
        import ray

        actor_class = ray.remote(ReplicaWorker)
        workers, threads = layout.workers, layout.threads
        # Queued per replica: STREAMS_IN_FLIGHT on the device, one read and waiting, and one per writer thread.
        self.depth = STREAMS_IN_FLIGHT + 1 + layout.writers
        options = dict(num_cpus=layout.cpus, num_gpus=layout.gpus, max_restarts=-1, max_task_retries=0,
                       max_concurrency=STREAMS_IN_FLIGHT + layout.writers)
        # Named so that operators (and the fault tests) can find a run's replicas: `ray list actors`.
        run = uuid.uuid4().hex[:8]
        self.actors = [
            actor_class.options(name=f"{WORKER_NAME_PREFIX}{run}-{i}", **options).remote(
                settings, store, threads, min(1.0, layout.gpus) or 1.0)
            for i in range(workers)
        ]
        self.load = [0] * workers
        self.healthy = [False] * workers
        self.all_down_since: float | None = time.monotonic()
        self.pings = {actor.ping.remote(): i for i, actor in enumerate(self.actors)}
        self.say: Callable[[str], None] = lambda text: None  # start-up lines ("replica 1/2 ready")
        self._started: set[int] = set()
        self.expected: ModelInfo | None = None  # the model the run records; replicas refuse any other

    def describe(self, patience_s: float) -> ModelInfo:
        """The model as the first replica to load it describes it (the run's plan needs its geometry).

        Waits through the pings like the run itself: a model that cannot load raises the loader's own error,
        and no replica alive for ``patience_s`` fails the run (``on_ping``, ``check_progress``).
        """
        import ray

        while True:
            for i in [i for i, healthy in enumerate(self.healthy) if healthy]:
                try:
                    return ray.get(self.actors[i].describe.remote())
                except ray.exceptions.RayActorError:  # died since its ping (killed, node lost): it restarts
                    self.mark_dead(i)
            ready, _ = ray.wait(list(self.pings), num_returns=1, timeout=1.0)
            for ref in ready:
                self.on_ping(ref)
            self.check_progress(patience_s)

    def free_slot(self) -> int | None:
        candidates = [i for i in range(len(self.actors)) if self.healthy[i] and self.load[i] < self.depth]
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
            if i not in self._started:
                self._started.add(i)
                self.say(f"replica {len(self._started)}/{len(self.actors)} ready")
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


# --- the run --------------------------------------------------------------------------------------


class Job(Protocol):
    """A mode's driver side: input checks before Ray starts, and the plan once the model is known."""

    options: RunOptions
    mode: Mode

    def inference_settings(self) -> InferenceSettings: ...

    def prepare(self) -> None:
        """Fail fast on bad input, before Ray starts."""

    def plan(self, info: ModelInfo, previous: Mapping | None = None) -> JobPlan:
        """The run identity and parts, once the model is known; ``previous``: the manifest at ``--out`` (None
        if none), for a kind whose plan follows how an earlier run was started (an atlas' part size)."""


def open_output(options: RunOptions, store: OutputStore) -> Mapping | None:
    """The manifest of an earlier run at the output (None if none), refusing unusable outputs; removes the
    temporary files of a crashed run (the caller holds the lease)."""
    try:
        previous = store.read_manifest()
    except StoreError:
        if not options.overwrite:
            raise
        previous = None
    if previous is None and store.list_part_files() and not options.overwrite:
        raise StoreError(f"--out {options.out} holds Parquet parts but no manifest; pass --overwrite to replace them")
    store.check_writable()
    leftovers = store.remove_leftovers()
    if leftovers:
        print(f"enformer-batch: removed {len(leftovers)} temporary file(s) left by an interrupted run", file=sys.stderr)
    return previous


def run_job(job: Job, on_part: Callable[[PartRecord], None] | None = None) -> RunSummary:
    """Run (or resume) a job and return its summary.

    Raises ValueError (or a subclass) on bad input, StoreError when ``--out`` cannot be used as asked, and
    RunError when a part fails; committed parts are kept and re-running the same call resumes.
    """
    t0 = time.perf_counter()
    options = job.options
    options.check()
    job.prepare()
    store = OutputStore(options.out, options.storage_options)
    lease = Lease(store).acquire()  # one driver per --out, held until the run returns
    try:
        return _run_leased(job, store, on_part, t0)
    finally:
        lease.release()


def _run_leased(job: Job, store: OutputStore, on_part, t0: float) -> RunSummary:
    import ray

    options = job.options
    previous = open_output(options, store)
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        stage(options, f"connecting to the Ray cluster at {address}" if address else "starting a local Ray cluster")
    _ray_init()
    settings = job.inference_settings()
    layout = _worker_layout(options)
    pool: _WorkerPool | None = None
    if previous is None:
        # A new run computes: start the replicas now and plan with the first one's description of the model,
        # so that loading the model overlaps the rest of the start and happens once per replica, not once more.
        pool = _start_replicas(options, settings, store, layout)
    try:
        return _run_with_pool(job, store, on_part, t0, previous, settings, layout, pool)
    finally:
        if pool is not None:
            pool.shutdown()


def _start_replicas(options: RunOptions, settings: InferenceSettings, store: OutputStore,
                    layout: WorkerLayout, say: Callable[[str], None] | None = None) -> _WorkerPool:
    device = f"{layout.gpus:g} GPU" if layout.gpus else "CPU"
    say = say or (lambda text: stage(options, text))
    say(f"starting {layout.workers} model replica(s) ({device}, {layout.threads} torch thread(s), "
        f"{layout.writers} writer thread(s) each); each loads the model ({options.model})")
    pool = _WorkerPool(settings, store, layout)
    pool.say = say
    return pool


def _run_with_pool(job: Job, store: OutputStore, on_part, t0: float, previous: Mapping | None,
                   settings: InferenceSettings, layout: WorkerLayout, pool: _WorkerPool | None) -> RunSummary:
    options = job.options
    info, settings = _model_info(options, settings, previous, pool)
    plan = job.plan(info, previous)
    committed = _committed_parts(job, store, plan, previous)
    store.clear_success()
    manifest = _new_manifest(plan, info, committed)
    store.write_manifest(manifest)
    resumed = len(committed)

    def save(status: str = "running") -> None:
        manifest["status"] = status
        manifest["parts"] = manifest_parts(committed)
        store.write_manifest(manifest)

    progress = _Progress(int(plan.totals["units"]), job.mode.unit, options.progress)
    computed = sequences = 0
    counts: Counter = Counter()

    def fresh_parts():
        for part in plan.parts:
            if store.part_relpath(part.chrom, part.name) in committed:
                progress.update(part.units)
            else:
                yield part

    # On a resumed run, replicas start only when a part needs computing: fully resumed, no model loads anywhere.
    fresh = fresh_parts()
    first = next(fresh, None)

    def note(text: str) -> None:  # a start-up line above the progress bar
        progress.note(f"enformer-batch: {text}")

    if first is not None and pool is None:
        if resumed:
            note(f"resuming: {resumed} parts already committed are kept")
        pool = _start_replicas(options, settings, store, layout, note)
    if pool is not None:
        pool.expected = info
        pool.say = note
    try:
        for result, part in _stream_parts(
            itertools.chain([first], fresh) if first is not None else (), job.mode, pool, save,
            options.manifest_interval_s, options.replica_patience_s,
            check=store.lease.check if store.lease is not None else None,
        ):
            committed[result.record.path] = result.record
            computed += part.units
            sequences += result.sequences
            counts.update(result.counts)
            progress.update(part.units)
            if on_part is not None:
                on_part(result.record)
    except BaseException as failure:
        if pool is not None:
            pool.shutdown()  # first, so that no replica publishes a part after the manifest is saved
        if not isinstance(failure, LeaseLost):  # the manifest is no longer this driver's to write
            try:
                save()  # whatever committed so far stays committed; the run is not complete
            except Exception as e:  # noqa: BLE001 - the original failure is the one to report
                print(f"enformer-batch: could not save the manifest after the failure: {e}", file=sys.stderr)
        raise
    finally:
        progress.close()
        if pool is not None:
            pool.shutdown()  # before the late-write check below: no replica may publish after it
    _drop_late_writes(store, committed, save)
    save("complete")
    store.mark_success()
    return RunSummary(
        out=options.out,
        unit=job.mode.unit,
        units=int(plan.totals["units"]),
        units_computed=computed,
        rows=sum(r.rows for r in committed.values()),
        parts=len(committed),
        seconds=time.perf_counter() - t0,
        resumed_parts=resumed,
        sequences=sequences,
        counts=dict(counts),
        notes=plan.notes,
    )


def _model_info(options: RunOptions, settings: InferenceSettings, previous: Mapping | None,
                pool: _WorkerPool | None) -> tuple[ModelInfo, InferenceSettings]:
    """What the model is (from the first replica, or from a one-off task on a resume), and the settings every
    replica started from here on runs with: these weights (they refuse others), this precision."""
    import ray

    if pool is not None:
        info = pool.describe(options.replica_patience_s)
    else:
        # A resumed run may have nothing left to compute: describe the model in a (CPU) task, start no replica
        # yet.
        recorded = ((previous or {}).get("identity") or {}).get("precision")
        if settings.precision == "auto" and recorded in ("fp32", "bf16", "fp16"):
            # --precision auto resumes at the precision the atlas was started with, whatever device resumes it.
            settings = dataclasses.replace(settings, precision=recorded)
        stage(options, f"loading the model ({options.model}) once to read its geometry and tracks")
        describe = ray.remote(describe_model).options(num_cpus=1, max_retries=0)
        try:
            info = ray.get(describe.remote(settings))
        except ray.exceptions.RayTaskError as e:
            raise _remote_error(e) from None
    return info, dataclasses.replace(settings, weights_sha256=info.weights_sha256, precision=info.precision)


def _committed_parts(job: Job, store: OutputStore, plan: JobPlan, previous: Mapping | None) -> dict:
    """The earlier run's parts this run keeps: same identity, intact files, and the same bases under them."""
    options = job.options
    committed = _resumable_parts(options, store, previous, plan.identity)
    if not committed:
        return committed
    if iter(plan.parts) is plan.parts:  # an iterator would be spent by the check: a kind's bug, not the user's
        raise TypeError("JobPlan.parts must be re-iterable (a streamed plan re-streams its input when iterated)")
    try:  # refuse a FASTA whose bases differ under committed parts, of every kind (--overwrite: start over)
        verify_genome(options.out, committed, plan.parts, lambda p: store.part_relpath(p.chrom, p.name), job.mode)
    except GenomeMismatch:
        if not options.overwrite:
            raise
        store.remove_all()
        return {}
    return committed


def _new_manifest(plan: JobPlan, info: ModelInfo, committed: Mapping[str, PartRecord]) -> dict:
    return {
        "format": MANIFEST_FORMAT,
        **({"kind": plan.kind} if plan.kind else {}),  # not in the identity: earlier runs of every kind resume
        "engine_version": __version__,  # informational; resume compares the identity's numerics_version
        "identity": plan.identity,
        "run": identity_digest(plan.identity),
        # How the first replica ran the model (informational: batch size and device do not change values).
        "resolved": {"precision": info.precision, "batch_size": info.batch_size, "device": info.device,
                     "compiled": info.compiled},
        "status": "running",
        "totals": plan.totals,
        "parts": manifest_parts(committed),
    }


def _drop_late_writes(store: OutputStore, committed: dict, save: Callable[[], None]) -> None:
    """A part rewritten after its commit (a late write that landed during the run) leaves the run incomplete."""
    _, changed = store.intact_parts(committed)
    if not changed:
        return
    for path in changed:
        del committed[path]
    save()
    raise RunError(f"{len(changed)} committed part(s) changed after their commit ({next(iter(changed))}: "
                   f"{next(iter(changed.values()))}); re-run the same command to recompute them")


def _resumable_parts(options: RunOptions, store: OutputStore, previous: Mapping | None, identity: Mapping):
    """Committed parts of an earlier run with the same identity (present with the recorded size)."""
    if previous is None:
        if options.overwrite:
            store.remove_all()
        return {}
    if previous.get("format") != MANIFEST_FORMAT or comparable_identity(previous.get("identity")) != identity:
        if not options.overwrite:
            raise StoreError(refusal(options.out, comparable_identity(previous.get("identity")), identity))
        store.remove_all()
        return {}
    # A part whose file is gone, has another size, or was rewritten after its commit (a late write) is
    # recomputed; one listing plus a read of each changed file, not a read of the output.
    kept, dropped = store.intact_parts(records_from_manifest(previous))
    rewritten = [p for p, why in dropped.items() if "rewritten" in why]
    if rewritten:
        print(f"enformer-batch: {len(rewritten)} committed part(s) were rewritten after their commit (first: "
              f"{rewritten[0]}); recomputing them", file=sys.stderr)
    return kept


def _stream_parts(
    parts: Iterable[Any], mode: Mode, pool: _WorkerPool | None, save, interval: float, patience_s: float,
    check: Callable[[], None] | None = None,
):
    """Yield ``(result, part)`` as parts commit, keeping at most ``pool.depth`` parts queued per replica.

    ``parts`` is consumed lazily (it may be a stream); parts the system failed are retried first.
    ``check`` (the lease's) runs at least once a second and stops the run by raising (``LeaseLost``).
    """
    import ray

    if pool is None:
        return
    # Reads need no CPU reservation: at most `depth` per replica are in flight, and reserving a CPU could
    # deadlock a cluster whose CPUs are all held by CPU replicas.
    read_task = ray.remote(read_inputs).options(num_cpus=0, max_retries=3)
    mode_ref = ray.put(mode)  # shipped once, not with every call
    fresh = iter(parts)
    retry: deque = deque()
    exhausted = False
    in_flight: dict = {}
    attempts: dict[str, int] = {}
    last_save = time.monotonic()

    def next_part():
        nonlocal exhausted
        if retry:
            return retry.popleft()
        if not exhausted:
            part = next(fresh, None)
            if part is not None:
                return part
            exhausted = True
        return None

    failure: RunError | None = None  # once set, nothing new starts; parts in flight finish and commit

    while True:
        while failure is None and (slot := pool.free_slot()) is not None and (part := next_part()) is not None:
            inputs = read_task.remote(mode_ref, part)
            in_flight[pool.actors[slot].run_part.remote(mode_ref, part, inputs, pool.expected)] = (part, slot)
            pool.load[slot] += 1
        if failure is not None and not in_flight:
            raise failure
        if exhausted and not retry and not in_flight:
            break
        ready, _ = ray.wait(list(in_flight) + list(pool.pings), num_returns=1, timeout=1.0)
        for ref in ready:
            if ref in pool.pings:
                pool.on_ping(ref)
                continue
            part, slot = in_flight.pop(ref)
            pool.load[slot] -= 1
            try:
                result: PartResult = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # the part itself failed: stop, naming it
                # Parts already in flight are drained and committed first: stopping at once would leave
                # their finished files on the store, uncommitted (stray) and recomputed on resume.
                if failure is None:
                    failure = RunError(f"run stopped: {_remote_error(e)}; committed parts are kept and the run "
                                       "is not complete; fix the cause and re-run the same command to resume")
                continue
            except ray.exceptions.RayError as e:
                if failure is not None:
                    continue
                # The system failed the part (replica died or unreachable, an object or node lost): recompute
                # it. The name is deterministic, so whatever it may have published is replaced, not duplicated.
                if isinstance(e, ray.exceptions.RayActorError):
                    pool.mark_dead(slot)
                key = f"{part.chrom}/{part.name}"
                attempts[key] = attempts.get(key, 0) + 1
                if attempts[key] > 3:
                    failure = RunError(f"{part.chrom} {mode.unit}s {part.first}-{part.end - 1} failed 4 "
                                       f"times ({type(e).__name__}); see the Ray logs")
                    continue
                retry.append(part)
                continue
            yield result, part
        pool.check_progress(patience_s)
        if check is not None:
            check()
        if time.monotonic() - last_save >= interval:
            try:
                save()
            except LeaseLost:
                raise
            except Exception as e:  # noqa: BLE001 - a store hiccup; parts stay committable at the next save
                print(f"enformer-batch: manifest update failed, will retry: {e}", file=sys.stderr)
            last_save = time.monotonic()
