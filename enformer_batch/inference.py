"""The model call, without Ray: base codes in, selected tracks out, batch by batch on one device.

Owns what happens on the accelerator: one-hot rows built on the device from uint8 codes (4× less to copy
than float one-hot), autocast at the chosen precision, test-time augmentation, track selection and the
cast to the output dtype before anything is copied back. ``Predictor`` is a plain class: the Ray actor in
``predict`` wraps it, and tests and benchmarks call it directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .augment import autocast_context, predict_augmented
from .genome import N_CODE, onehot_table
from .integrity import check_weights
from .model import load_model
from .simulated import is_simulated, load_simulated
from .tracks import select_tracks, track_names
from .windows import ENFORMER, Geometry

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = ("float16", "float32")


class NonFiniteOutput(RuntimeError):
    """The model returned NaN or infinity for some windows."""

    def __init__(self, window_indices: Sequence[int]):
        super().__init__(f"model returned NaN/inf for window(s) {list(window_indices)}")
        self.window_indices = list(window_indices)


@dataclass(frozen=True)
class InferenceSettings:
    """What the predictor computes; everything here is recorded in the run manifest."""

    model: str = "demo"
    head: str = "human"
    tracks: str | None = None  # selection spec, see tracks.select_tracks
    precision: str = "fp32"
    rc: bool = False
    shifts: tuple[int, ...] = (0,)
    n_encoding: str = "zeros"
    batch_size: int = 4
    dtype: str = "float16"
    storage_options: Mapping[str, str] = field(default_factory=dict)
    # The sha256 the run records for the weights; a replica that loads other bytes refuses (issue 15).
    weights_sha256: str | None = None
    unsquash: bool = False  # undo Borzoi's squashed target scale (needs clip_soft/scale/sum_stat in the table)

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        onehot_table(self.n_encoding)
        if not self.shifts:
            raise ValueError("--shifts needs at least one shift (0 means none)")
        if self.unsquash and self.dtype != "float32":
            raise ValueError("--unsquash gives counts beyond float16's range (65,504): add --dtype float32")


@dataclass(frozen=True)
class ModelInfo:
    """What the driver needs to know about the loaded model, without holding its weights."""

    model_id: str
    weights_sha256: str
    config: dict
    geometry: Geometry
    head: str
    track_indices: tuple[int, ...]
    track_names: tuple[str, ...]
    track_descriptions: tuple[str | None, ...]
    family: str = "enformer"
    # (source, weights sha256) of every replicate; one entry for a single checkpoint.
    replicates: tuple[tuple[str, str], ...] = ()
    unsquash: bool = False


def geometry_of(model_or_config) -> Geometry:
    """The geometry a model declares (``model.geometry``); an Enformer config is read the same way."""
    geometry = getattr(model_or_config, "geometry", None)
    if isinstance(geometry, Geometry):
        return geometry
    config = model_or_config
    bin_size = 2 ** int(getattr(config, "num_downsamples", 7))
    return Geometry(input_length=ENFORMER.input_length, bin_size=bin_size, output_bins=int(config.target_length))


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def auto_batch_size(
    free_bytes: int,
    config: Mapping,
    precision: str = "bf16",
    input_length: int = ENFORMER.input_length,
    augment_passes: int = 1,
    fraction: float = 0.8,
    max_batch: int = 64,
) -> int:
    """The largest batch whose activations fit in ``fraction`` of ``free_bytes`` (a pure estimate, ≥ 1).

    ``config`` is the model config dict (``ModelInfo.config``). Per window the peak is set by the conv tower's
    first blocks at full length (input, BatchNorm/GELU output, conv output and residual of ``dim/2`` channels
    at ``input_length`` positions live at once) or by attention (relative logits ``[heads, n, 2n-1]`` plus
    logits ``[heads, n, n]`` at ``n = input_length / 128`` positions), whichever is larger. Weights are in
    fp32 in memory either way. ``augment_passes`` does not multiply memory: passes run one after another.
    On a GPU, ``free_bytes`` is ``torch.cuda.mem_get_info()[0]`` after the model is loaded.
    """
    del augment_passes  # documented above: sequential passes reuse the same memory
    act = 4 if precision == "fp32" else 2
    dim = int(config.get("dim", 1536))
    heads = int(config.get("heads", 8))
    n = input_length // 2 ** int(config.get("num_downsamples", 7))
    conv_peak = 4 * (dim // 2) * input_length * act
    if "bins_to_return" in config:  # Borzoi: the stem's full-length output, then tower block 0 at L/2
        stem = int(config.get("stem_channels", 512))
        n = input_length // 128
        conv_peak = (stem * input_length + 3 * stem * input_length // 2) * act
    # Attention logits stay fp32 under autocast's softmax; count them at 4 bytes.
    attn_peak = heads * n * (3 * n - 1) * 4 + 4 * n * dim * act
    per_window = max(conv_peak, attn_peak)
    budget = int(free_bytes * fraction)
    return int(max(1, min(max_batch, budget // per_window)))


class Predictor:
    """One model replica on one device; ``predict(codes)`` runs a part's windows in batches."""

    def __init__(
        self, settings: InferenceSettings, device: str | torch.device | None = None, compile_model: bool = False
    ):
        settings.check()
        self.settings = settings
        self.device = torch.device(device) if device is not None else default_device()
        if settings.precision == "fp32" and self.device.type == "cuda":
            # fp32 means fp32: Ampere+ GPUs would otherwise run convolutions (cuDNN's default) in TF32.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        if is_simulated(settings.model):  # a stand-in for an accelerator of a given speed (benchmarks, tests)
            loaded = load_simulated(settings.model, device=self.device)
        else:
            loaded = load_model(settings.model, storage_options=dict(settings.storage_options), device=self.device)
        check_weights(loaded.weights_sha256, settings.weights_sha256, settings.model)  # no mixed-weights atlas
        self.model = loaded.model.eval()
        heads = dict(loaded.config.output_heads)
        if settings.head not in heads:
            raise ValueError(f"--head {settings.head!r} is not in the model; it has {', '.join(heads)}")
        table = loaded.tracks.get(settings.head)
        indices = select_tracks(settings.tracks, heads[settings.head], table)
        names = track_names(indices, table)
        descriptions = tuple(table.descriptions[i] if table is not None else None for i in indices)
        self.info = ModelInfo(
            model_id=loaded.model_id,
            weights_sha256=loaded.weights_sha256,
            config=loaded.config.to_dict(),
            geometry=geometry_of(loaded.model),
            head=settings.head,
            track_indices=tuple(indices),
            track_names=tuple(names),
            track_descriptions=descriptions,
            family=loaded.family,
            replicates=loaded.replicates,
            unsquash=settings.unsquash,
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
        # Reused page-locked staging buffer for host→device copies: pinning per batch (cudaHostAlloc) costs
        # more than the copy it enables.
        self._pinned: torch.Tensor | None = None
        # torch.compile pays only over many batches of one shape (every window has the same length, and the
        # last, smaller batch costs one more compilation); off by default: compilation takes minutes.
        self._model_fn = torch.compile(self.model, dynamic=False) if compile_model else self.model

    def _forward(self, onehot: torch.Tensor) -> torch.Tensor:
        return self._model_fn(onehot, head=self.settings.head)

    def _to_device(self, codes: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(codes))
        if self.device.type != "cuda":
            return x
        if self._pinned is None or self._pinned.shape[0] < x.shape[0] or self._pinned.shape[1:] != x.shape[1:]:
            self._pinned = torch.empty(x.shape, dtype=x.dtype).pin_memory()
        staged = self._pinned[: x.shape[0]]
        staged.copy_(x)
        # Safe to reuse the buffer next batch: predict_batch ends with a synchronising copy back.
        return staged.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def predict_on_device(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, input_length]`` integer codes on the device → ``[b, output_bins, n_selected]`` float32 there.

        Augmentation included; nothing leaves the device, so a mode can reduce the predictions first.
        """
        onehot = self._onehot[x.long()]
        s = self.settings
        with autocast_context(s.precision, self.device.type):
            y = predict_augmented(
                self._forward, onehot, rc=s.rc, shifts=s.shifts, n_value=self._n_value, strand_pairs=self._strand_pairs
            )
        y = y if self._all_tracks else y.index_select(-1, self._tracks)
        if self._unsquash is not None:
            from .borzoi import unsquash_tensor

            y = unsquash_tensor(y, None, self._unsquash)
        return y

    @torch.inference_mode()
    def predict_batch(self, codes: np.ndarray, keep: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """``[b, input_length]`` uint8 codes → ``[b, output_bins, n_selected]`` in the output dtype.

        ``keep`` (window index in the batch, output bin) pairs: only those rows ``[n_keep, n_selected]``, in
        that order, leave the device (at a small stride a window writes one bin of its 896); the check for
        non-finite values still covers every bin.
        """
        y = self.predict_on_device(self._to_device(codes))
        # One fp32 pass finds NaN (amax propagates it), infinity and values the output dtype cannot hold
        # (float16 > 65504 would be stored as inf): an error, never a stored non-finite value.
        largest = y.abs().flatten(1).amax(dim=1)
        bad = ~(largest <= self._out_max)
        if bool(bad.any()):
            raise NonFiniteOutput(torch.nonzero(bad).flatten().tolist())
        if keep is not None:
            y = y[torch.as_tensor(keep[0], device=self.device), torch.as_tensor(keep[1], device=self.device)]
        return y.to(self._out_dtype).cpu().numpy()

    def predict(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predict every window of ``codes`` ``[n, input_length]`` that is not all padding/N.

        Returns ``(values [n, output_bins, n_selected], ran [n] bool)``; skipped windows hold NaN.
        """
        n = codes.shape[0]
        geometry = self.info.geometry
        values = np.full((n, geometry.output_bins, len(self.info.track_indices)), np.nan, self.settings.dtype)
        ran = (codes != N_CODE).any(axis=1)
        todo = np.flatnonzero(ran)
        b = self.settings.batch_size
        for i in range(0, len(todo), b):
            batch = todo[i : i + b]
            try:
                values[batch] = self.predict_batch(codes[batch])
            except NonFiniteOutput as e:
                raise NonFiniteOutput([int(batch[j]) for j in e.window_indices]) from None
        return values, ran
