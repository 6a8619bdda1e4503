"""The model call, without Ray: base codes in, selected tracks out, batch by batch on one device.

Owns what happens on the accelerator: one-hot rows built on the device from uint8 codes (4× less to copy
than float one-hot), autocast at the chosen precision, test-time augmentation, track selection and the
cast to the output dtype before anything is copied back. ``Predictor`` is a plain class: the Ray actor
``engine.ReplicaWorker`` wraps it, and tests and benchmarks call it directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from .augment import autocast_context, predict_augmented
from .gene_scores import track_strands
from .genome import N_CODE, onehot_table
from .integrity import check_weights
from .loader import load_model
from .model import NEAR_MAX_SPAN
from .settings import (  # noqa: F401 - re-exported: they lived here before settings.py
    CPU_BATCH_SIZE,
    DTYPES,
    PRECISIONS,
    STREAMS_IN_FLIGHT,
    InferenceSettings,
    ModelInfo,
    NonFiniteOutput,
    auto_batch_size,
)
from .simulated import is_simulated, load_simulated
from .tracks import select_tracks, track_names
from .windows import Geometry


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → bf16 where the device computes it natively (CUDA GPUs from Ampere on), else fp32.

    CPUs get fp32 even where torch accepts bf16: without bf16 units it is emulated and many times slower.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda" and _native_bf16(device):
        return "bf16"
    return "fp32"


def _native_bf16(device: torch.device) -> bool:
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before 2.4 has no including_emulation (and counted emulation as support)
        return torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_compile(mode: str, device: torch.device, simulated: bool = False) -> bool:
    """``auto`` → torch.compile on CUDA devices (1.47x eager for full-size Enformer at bf16 on an H200, after
    ~23 s of compilation per replica), eager on CPUs (slower there, and minutes to compile)."""
    if simulated:
        return False  # the stand-in computes nothing worth compiling
    if mode == "auto":
        return device.type == "cuda"
    return mode == "on"


def _compile_errors() -> tuple[type[BaseException], ...]:
    """What torch.compile raises when it cannot compile (no C compiler, an unsupported op): not OOM, not CUDA
    errors or bad input, which the eager model would raise too."""
    errors: list[type[BaseException]] = []
    try:
        from torch._dynamo.exc import TorchDynamoException

        errors.append(TorchDynamoException)
    except ImportError:  # pragma: no cover - torch without dynamo
        pass
    try:
        from torch._inductor.exc import InductorError

        errors.append(InductorError)
    except ImportError:  # pragma: no cover - older torch
        pass
    return tuple(errors) or (RuntimeError,)


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


SLOT_WAIT_S = 600.0  # a stream waits this long for a staging slot before it calls the pool leaked


class Predictor:
    """One model replica on one device; ``predict(codes)`` runs a part's windows in batches."""

    def __init__(
        self,
        settings: InferenceSettings,
        device: str | torch.device | None = None,
        compile_model: bool | None = None,
        memory_share: float = 1.0,
        streams: int = STREAMS_IN_FLIGHT,
    ):
        """``memory_share``: the part of the GPU's free memory this replica may plan its batches for (replicas
        sharing a GPU, ``--gpus-per-worker 0.5``, get their share). ``compile_model`` overrides
        ``settings.compile``. ``streams``: how many batch streams (parts) may be in flight at once."""
        settings.check()
        self.settings = settings
        self.device = torch.device(device) if device is not None else default_device()
        self.memory_share = memory_share  # what attribution plans its own batches with
        self._passes = (2 if settings.rc else 1) * len(settings.shifts)  # forward passes per window
        self.precision = resolve_precision(settings.precision, self.device)
        if self.precision == "fp32" and self.device.type == "cuda":
            # fp32 means fp32: Ampere+ GPUs would otherwise run convolutions (cuDNN's default) in TF32.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        if is_simulated(settings.model):  # a stand-in for an accelerator of a given speed (benchmarks, tests)
            loaded = load_simulated(settings.model, device=self.device)
        else:
            loaded = load_model(settings.model, storage_options=dict(settings.storage_options), device=self.device)
        check_weights(loaded.weights_sha256, settings.weights_sha256, settings.model)  # no mixed-weights atlas
        self.model = loaded.model.eval()
        config, geometry = loaded.config.to_dict(), self.model.geometry
        self.batch_size = settings.batch_size or self._auto_batch_size(config, geometry, memory_share)
        heads = dict(loaded.config.output_heads)
        if settings.head not in heads:
            raise ValueError(f"--head {settings.head!r} is not in the model; it has {', '.join(heads)}")
        table = loaded.tracks.get(settings.head)
        indices = select_tracks(settings.tracks, heads[settings.head], table)
        names = track_names(indices, table)
        descriptions = tuple(table.descriptions[i] if table is not None else None for i in indices)
        strand_column = table.column("strand") if table is not None else None
        strands = track_strands(names, None if strand_column is None else [strand_column[i] for i in indices])
        self.info = ModelInfo(
            model_id=loaded.model_id,
            weights_sha256=loaded.weights_sha256,
            config=config,
            geometry=geometry,
            head=settings.head,
            track_indices=tuple(indices),
            track_names=tuple(names),
            track_descriptions=descriptions,
            family=loaded.family,
            replicates=loaded.replicates,
            unsquash=settings.unsquash,
            precision=self.precision,
            batch_size=self.batch_size,
            device=device_label(self.device),
            track_strands=strands,
        )
        pairs = table.strand_pairs() if table is not None else None
        self._strand_pairs = None if pairs is None else torch.tensor(pairs, dtype=torch.long, device=self.device)
        self._unsquash = None
        if settings.unsquash:
            if table is None:
                raise ValueError(f"--unsquash needs a track table for head {settings.head!r}; the model has none")
            from .borzoi import unsquash_parameters

            self._unsquash = tuple(p[indices].to(self.device) for p in unsquash_parameters(table))
        self._onehot = torch.from_numpy(onehot_table(settings.n_encoding)).to(self.device)
        self._n_value = float(self._onehot[N_CODE, 0])
        self._tracks = torch.tensor(indices, dtype=torch.long, device=self.device)
        # Every track in head order: no selection to make (a full-track atlas saves a copy per window).
        self._all_tracks = list(indices) == list(range(heads[settings.head]))
        self._out_dtype = {"float16": torch.float16, "float32": torch.float32}[settings.dtype]
        self._out_max = float(torch.finfo(self._out_dtype).max)
        self._pinned: dict[tuple, torch.Tensor] = {}  # page-locked staging buffers, see _staging
        # Recent references and their towers per augmentation pass (predict_near_on_device); a few, since the
        # parts in flight (``streams``) interleave their batches.
        self._streams = max(1, streams)
        self._near_cache: list[tuple[bytes, list[torch.Tensor]]] = []
        # Device work is queued by one thread at a time (so at most one batch's activations are being
        # allocated), but several streams may be in flight: while one part's last batch is copied back and
        # stitched, the next part's first batch is already queued, so the device does not idle between parts.
        self._launch_lock = threading.RLock()
        self._slots: queue.Queue[int] = queue.Queue()  # staging-buffer slots not holding an uncollected batch
        for slot in range(2 * self._streams):  # a stream holds at most two: in flight, and yielded
            self._slots.put(slot)
        self._sim_rate = self.model.spec.rate if is_simulated(settings.model) else None
        # torch.compile pays over many batches of one shape: every window has the same length, and batches
        # smaller than batch_size are padded to it (see predict_on_device), so a replica compiles once.
        compiled = resolve_compile(settings.compile, self.device, is_simulated(settings.model))
        if compile_model is not None:
            compiled = compile_model
        self._model_fn = torch.compile(self.model, dynamic=False) if compiled else self.model
        self._pad_batches = compiled
        self._compile_verified = not compiled  # auto falls back to eager if compiling fails (no C compiler...)
        self.info = dataclasses.replace(self.info, compiled=compiled)

    def _auto_batch_size(self, config: Mapping, geometry: Geometry, memory_share: float) -> int:
        """``--batch-size auto``: from the GPU's free memory once the weights are on it; CPUs: CPU_BATCH_SIZE."""
        if self.device.type != "cuda":
            return CPU_BATCH_SIZE
        free, _ = torch.cuda.mem_get_info(self.device)
        return auto_batch_size(free, config, self.precision, geometry.input_length, self._passes,
                               fraction=0.8 * min(1.0, memory_share))

    def _forward(self, onehot: torch.Tensor) -> torch.Tensor:
        if self._compile_verified:
            return self._model_fn(onehot, head=self.settings.head)
        try:
            y = self._model_fn(onehot, head=self.settings.head)
        except _compile_errors() as e:
            if self.settings.compile == "on" or isinstance(e, torch.OutOfMemoryError):
                raise
            print(f"enformer-batch: torch.compile failed on {device_label(self.device)} "
                  f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); running eager",
                  file=sys.stderr, flush=True)
            self._model_fn, self._pad_batches = self.model, False
            self.info = dataclasses.replace(self.info, compiled=False)
            y = self._model_fn(onehot, head=self.settings.head)
        self._compile_verified = True
        return y

    def _to_device(self, codes: np.ndarray, slot: int = 0) -> torch.Tensor:
        """Codes onto the device; on a GPU through page-locked staging buffer ``slot`` (one per batch in flight).

        A slot is refilled only after the batch that used it was collected, so its copy has completed.
        """
        x = torch.from_numpy(np.ascontiguousarray(codes))
        if self.device.type != "cuda":
            return x
        staged = self._staging(("in", slot), x.shape, x.dtype)
        staged.copy_(x)
        return staged.to(self.device, non_blocking=True)

    def _staging(self, key: tuple, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        """A reused page-locked host buffer viewed as ``shape``: pinning per batch (cudaHostAlloc) costs more
        than the copy it enables. Kept flat, so batches of other shapes (a part's last, edge windows) reuse it."""
        numel = int(np.prod(shape))
        buffer = self._pinned.get(key)
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype:
            buffer = self._pinned[key] = torch.empty(numel, dtype=dtype).pin_memory()
        return buffer[:numel].view(shape)

    def _pace(self, started: float, windows: int) -> None:
        """Simulated accelerator: the device-side work of a batch takes ``windows × passes / rate`` seconds."""
        if self._sim_rate is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        remaining = started + windows * self._passes / self._sim_rate - time.perf_counter()
        if remaining > 0:
            time.sleep(remaining)

    @torch.inference_mode()
    def predict_on_device(self, x: torch.Tensor, pace: bool = True) -> torch.Tensor:
        with self._launch_lock:
            return self._predict_on_device(x, pace)

    def _predict_on_device(self, x: torch.Tensor, pace: bool) -> torch.Tensor:
        """``[b, input_length]`` integer codes on the device → ``[b, output_bins, n_selected]`` float32 there.

        Augmentation included; nothing leaves the device, so a mode can reduce the predictions first.
        """
        started = time.perf_counter()
        n = x.shape[0]
        if self._pad_batches and n < self.batch_size:  # one shape for the compiled model: pad with all-N rows
            x = torch.cat([x, x.new_full((self.batch_size - n, x.shape[1]), N_CODE)])
        y = self._augmented(self._forward, self._onehot[x.long()])
        y = self._select(y[:n] if y.shape[0] != n else y)
        if pace:
            self._pace(started, n)
        return y

    def _augmented(self, forward, onehot: torch.Tensor) -> torch.Tensor:
        """``forward`` over the run's augmentation passes (shifts × strands), averaged, at the run's precision."""
        s = self.settings
        with autocast_context(self.precision, self.device.type):
            return predict_augmented(forward, onehot, rc=s.rc, shifts=s.shifts, n_value=self._n_value,
                                     strand_pairs=self._strand_pairs)

    def _select(self, y: torch.Tensor) -> torch.Tensor:
        """The selected tracks of predictions ``[b, bins, head tracks]``, unsquashed if asked."""
        y = y if self._all_tracks else y.index_select(-1, self._tracks)
        if self._unsquash is not None:
            from .borzoi import unsquash_tensor

            y = unsquash_tensor(y, None, self._unsquash)
        return y

    def onehot_rows(self, codes: torch.Tensor) -> torch.Tensor:
        """Integer codes ``[b, L]`` on the device → one-hot rows ``[b, L, 4]`` there, N and padding as the run
        encodes them (``--n-encoding``)."""
        return self._onehot[codes.long()]

    def predict_onehot(self, onehot: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       ) -> torch.Tensor:
        """Selected, augmented predictions ``[b, bins, n_selected]`` (fp32) of one-hot rows ``[b, L, 4]`` on the
        device, under the caller's autograd mode: attribution differentiates through it. Always eager (a compiled
        model is compiled for inference). ``forward`` replaces the model call ``model(x, head=...)`` of each
        augmentation pass (attribution wraps it in activation checkpointing)."""
        if forward is None:
            forward = self.eager_forward
        return self._select(self._augmented(forward, onehot))

    def eager_forward(self, onehot: torch.Tensor) -> torch.Tensor:
        """One pass of the model (the ensemble's mean for replicates) over one-hot rows, the run's head."""
        return self.model(onehot, head=self.settings.head)

    @property
    def predicts_near(self) -> bool:
        """Whether ``predict_near_on_device`` saves work here: an Enformer (not an ensemble, not Borzoi's U-net,
        whose skip connections would need splicing at every level, not the simulated model). The near path runs
        eager even where the model is compiled (its crops vary in length)."""
        return hasattr(self.model, "forward_near") and self._sim_rate is None

    @torch.inference_mode()
    def predict_near_on_device(self, reference: torch.Tensor, x: torch.Tensor, key: bytes) -> torch.Tensor:
        """``predict_on_device(x)`` for codes ``x`` ``[b, L]`` that differ from ``reference`` ``[L]`` only in a
        short stretch (mutants of one window, SNVs at one position): the conv tower is recomputed only around
        the change (``Enformer.forward_near``), the reference's tower once per reference and augmentation pass.
        Values are those of ``predict_on_device`` up to floating-point rounding; without ``predicts_near``, or
        when the changes spread wider than ``NEAR_MAX_SPAN`` (an insertion), it is that call. ``key`` identifies
        the reference's contents (a digest the caller computes on the host; no device sync to compare).
        """
        if not self.predicts_near:
            return self.predict_on_device(x)
        with self._launch_lock:
            n = x.shape[0]
            changed = torch.nonzero((x != reference).any(dim=0)).flatten()
            if changed.numel() and int(changed[-1]) + 1 - int(changed[0]) > NEAR_MAX_SPAN:
                return self._predict_on_device(x, pace=False)
            towers = self._reference_towers(key)
            passes = iter(range(self._passes))

            def near(inp: torch.Tensor) -> torch.Tensor:  # row 0 is the reference, as augmented in this pass
                k = next(passes)
                if k == len(towers):
                    towers.append(self.model.tower(inp[:1]))
                return self.model.forward_near(inp[1:], inp[:1], towers[k], self.settings.head)

            y = self._augmented(near, self._onehot[torch.cat([reference[None], x]).long()])
            assert y.shape[0] == n
            return self._select(y)

    def _reference_towers(self, key: bytes) -> list[torch.Tensor]:
        for i, (known, towers) in enumerate(self._near_cache):
            if known == key:
                self._near_cache.append(self._near_cache.pop(i))
                return towers
        self._near_cache = [*self._near_cache[-(2 * self._streams - 1):], (key, [])]
        return self._near_cache[-1][1]

    @torch.inference_mode()
    def _launch(self, codes: np.ndarray, slot: int, keep: Keep | None = None) -> _Launched:
        """Queue a batch on the device and its copy back to host memory, without waiting for either.

        ``keep``: (window index in the batch, output bin) pairs, or one ``slice`` of output bins that every window
        keeps; only those rows leave the device (at a small stride a window writes one bin of its 896), track-major
        ``[n_selected, n_keep]`` as Parquet columns want them, so the host copies contiguous runs.
        """
        with self._launch_lock:
            return self._launch_locked(codes, slot, keep)

    def _launch_locked(self, codes: np.ndarray, slot: int, keep: Keep | None) -> _Launched:
        started = time.perf_counter()
        y = self._predict_on_device(self._to_device(codes, slot), pace=False)
        # One fp32 pass finds NaN (amax propagates it), infinity and values the output dtype cannot hold
        # (float16 > 65504 would be stored as inf): an error, never a stored non-finite value. It covers every
        # bin, kept or not: a model that emits NaN anywhere is broken.
        largest = y.abs().flatten(1).amax(dim=1)
        if isinstance(keep, slice):  # the same bins of every window (a stride at the output span): no gather
            y = y[:, keep].reshape(-1, y.shape[-1])
        elif keep is not None:
            y = y[torch.as_tensor(keep[0], device=self.device), torch.as_tensor(keep[1], device=self.device)]
        out = y.to(self._out_dtype)
        if keep is not None:
            out = out.T.contiguous()
        done = None
        if self.device.type == "cuda":
            # Copies into page-locked buffers, queued behind the batch: the host goes on to launch the next batch
            # while this one computes and copies; collecting it waits on the event.
            host_out = self._staging(("out", slot), out.shape, out.dtype)
            host_largest = self._staging(("largest", slot), largest.shape, largest.dtype)
            host_out.copy_(out, non_blocking=True)
            host_largest.copy_(largest, non_blocking=True)
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(self.device))
            out, largest = host_out, host_largest
        self._pace(started, codes.shape[0])
        return _Launched(out, largest, done, slot)

    def _collect(self, launched: _Launched) -> np.ndarray:
        """Wait for a launched batch; its values, or NonFiniteOutput naming its bad batch positions."""
        if launched.done is not None:
            launched.done.synchronize()
        bad = ~(launched.largest <= self._out_max)
        if bool(bad.any()):
            raise NonFiniteOutput(torch.nonzero(bad).flatten().tolist())
        return launched.out.numpy()

    def predict_stream(self, batches: Iterable[tuple[np.ndarray, Keep | None]]) -> Iterator[np.ndarray]:
        """Each batch's values (``predict_batch``), in order; batch n+1 is queued on the device before batch n is
        copied out, so the device does not wait for the host.

        A yielded array is valid until the next one is asked for (on a GPU it is a reused staging buffer): copy
        what you keep. A NonFiniteOutput names positions in the batch being yielded.
        """
        owned: list[int] = []  # staging slots this stream holds: batches in flight and the one yielded
        pending: _Launched | None = None
        try:
            for codes, keep in batches:
                slot = self._take_slot()
                owned.append(slot)
                launched = self._launch(codes, slot, keep)
                if pending is not None:
                    yield self._collect(pending)
                    owned.remove(pending.slot)  # the caller asked for the next batch: that buffer is free
                    self._slots.put(pending.slot)
                pending = launched
            if pending is not None:
                yield self._collect(pending)
        finally:
            for slot in owned:
                self._slots.put(slot)

    def _take_slot(self) -> int:
        try:
            return self._slots.get(timeout=SLOT_WAIT_S)
        except queue.Empty:
            raise RuntimeError(
                f"no staging buffer came free in {SLOT_WAIT_S:.0f} s: more batch streams are open on this "
                "predictor than it was made for (close predict_stream generators that stop early)") from None

    def predict_batch(self, codes: np.ndarray, keep: Keep | None = None) -> np.ndarray:
        """``[b, input_length]`` uint8 codes → ``[b, output_bins, n_selected]`` in the output dtype.

        ``keep`` (see ``_launch``): only those rows leave the device, as ``[n_selected, n_keep]``; the check for
        non-finite values still covers every bin.
        """
        slot = self._take_slot()
        try:
            values = self._collect(self._launch(codes, slot, keep))
            return values.copy() if self.device.type == "cuda" else values  # a GPU's staging buffer is reused
        finally:
            self._slots.put(slot)

    def predict(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predict every window of ``codes`` ``[n, input_length]`` that is not all padding/N.

        Returns ``(values [n, output_bins, n_selected], ran [n] bool)``; skipped windows hold NaN.
        """
        n = codes.shape[0]
        geometry = self.info.geometry
        values = np.full((n, geometry.output_bins, len(self.info.track_indices)), np.nan, self.settings.dtype)
        ran = (codes != N_CODE).any(axis=1)
        todo = np.flatnonzero(ran)
        b = self.batch_size
        batches = [todo[i : i + b] for i in range(0, len(todo), b)]
        with contextlib.closing(self.predict_stream((codes[batch], None) for batch in batches)) as results:
            for batch in batches:
                try:
                    values[batch] = next(results)
                except NonFiniteOutput as e:
                    raise NonFiniteOutput([int(batch[j]) for j in e.window_indices]) from None
        return values, ran


# (window index in the batch, output bin) of each row to return, or the slice of bins every window returns
Keep = tuple[np.ndarray, np.ndarray] | slice


@dataclass
class _Launched:
    """A batch queued on the device: its output (host buffer on a GPU, once ``done``) and per-window max |value|."""

    out: torch.Tensor
    largest: torch.Tensor
    done: torch.cuda.Event | None
    slot: int = 0
