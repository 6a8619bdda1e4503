"""Attribution on one device, without Ray: which input bases drive a prediction (docs/contract.md, "Attribution").

For a window's one-hot input ``x`` and a set of output bins ``B``, the target is
``f(x) = Σ_{b∈B} mean_{t∈tracks} ŷ[b, t](x)`` (``ln(1 + …)`` with ``log``), where ``ŷ`` is the run's prediction:
the replicate ensemble's mean, averaged over the test-time augmentation passes (``--rc``, ``--shifts``) exactly as
``augment.predict_augmented`` averages it for an atlas. ``G = ∂f/∂x`` is one backward pass through that averaged
prediction, and per input position ``attr = Σ_c x·G`` (input × gradient) and ``hyp_c = G − mean_c G`` (the
hypothetical contributions TF-MoDISco reads). ``tracks`` are the selected ones; for a gene target, those of the
gene's strand and the unstranded ones (the strand rule of docs/contract.md, "Genes").

Efficiency: a window's target depends only on its own input (eval-mode BatchNorm), so the gradient of the sum of a
batch's targets is every window's gradient at once: one batched backward per batch. Only the region's rows of
``attr`` and ``hyp`` leave the device. The batch size comes from free memory: the bytes autograd keeps for one
window's backward are counted once per replica (``saved_bytes_per_window``, a forward whose saved tensors are
counted, not kept).

Precision: fp32 by default (``auto`` means fp32 here, not bf16). Under bf16 autocast the forward's convolutions and
matmuls, and so their backward, round to bf16's 8-bit mantissa: gradients carry about 2-3 significant digits, and
small contributions can change sign; the leaf gradient ``G`` is still returned in fp32.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .genome import N_CODE
from .inference import Predictor
from .settings import (  # noqa: F401 - CHECKPOINT_MODES, attribution_precision: torch-free, for the driver
    CHECKPOINT_MODES,
    CPU_BATCH_SIZE,
    GPU_MAX_AUTO_BATCH,
    NonFiniteOutput,
    attribution_precision,
)
from .windows import Geometry

__all__ = [
    "Attribution",
    "Attributor",
    "CHECKPOINT_MODES",
    "attribution_precision",
    "center_bins",
    "contributions",
    "region_bins",
    "region_rows",
    "target_values",
]

# Batch sizes are planned for regions this wide (the mutagenesis window's limit, docs/contract.md); wider rows only
# widen the focused crop (see ``Attributor``), a few percent of an Enformer window's activations.
PLANNED_REGION_BP = 10_000
# Margin on the counted bytes for what the backward allocates besides them (gradient buffers as large as the
# activations they flow through) and the forward's transients. On the demo model (CPU) a batch of 4 peaked 109 MiB
# above a plain forward's peak against 158 MiB counted; not yet measured on a GPU.
BACKWARD_MARGIN = 1.5


# --- the target's bins and the region's rows ---------------------------------------------------------------


def first_output_base(geometry: Geometry, midpoint: int) -> int:
    """Genome position of the first output base of the window whose input index ``input_length // 2`` is
    ``midpoint`` (the mutagenesis window): ``o = m − (output_bins // 2) · bin_size``."""
    return midpoint - (geometry.output_bins // 2) * geometry.bin_size


def center_bins(geometry: Geometry) -> np.ndarray:
    """``[output_bins]`` bool: the target ``center``, the bin ``output_bins // 2``."""
    mask = np.zeros(geometry.output_bins, bool)
    mask[geometry.output_bins // 2] = True
    return mask


def region_bins(geometry: Geometry, start: int, end: int, midpoint: int) -> np.ndarray:
    """``[output_bins]`` bool: the target ``region``, the output bins overlapping ``[start, end)``."""
    o, size = first_output_base(geometry, midpoint), geometry.bin_size
    first = max(0, (start - o) // size)
    last = min(geometry.output_bins, -(-(end - o) // size))  # exclusive
    mask = np.zeros(geometry.output_bins, bool)
    mask[first:last] = True
    return mask


def region_rows(geometry: Geometry, start: int, end: int, midpoint: int) -> tuple[int, int]:
    """Input indices ``[lo, hi)`` of the region's positions: ``i = q − m + input_length // 2``."""
    lo = start - midpoint + geometry.input_length // 2
    hi = end - midpoint + geometry.input_length // 2
    if lo < 0 or hi > geometry.input_length or hi < lo:
        raise ValueError(f"region [{start}, {end}) does not fit in the window centred on {midpoint}")
    return lo, hi


# --- the arithmetic ------------------------------------------------------------------------------------------


def target_values(pred: Tensor, bins: Tensor, log: bool, tracks: Tensor | None = None) -> Tensor:
    """Per window ``Σ_{b∈B} mean_t ŷ[b, t]`` (``ln(1 + …)`` with ``log``): ``pred [n, bins, T]``, ``bins [n, bins]``
    bool → ``[n]``. ``tracks [n, T]`` bool: the mean runs over these tracks only (a gene target: the tracks of the
    gene's strand and the unstranded ones); None: over all."""
    pred = pred.float()
    if tracks is None:
        per_bin = pred.mean(dim=-1)
    else:
        weights = tracks.to(pred.dtype)
        per_bin = (pred * weights[:, None, :]).sum(dim=-1) / weights.sum(dim=-1, keepdim=True)
    total = (per_bin * bins.to(per_bin.dtype)).sum(dim=-1)
    return torch.log1p(total) if log else total


def contributions(onehot: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    """``attr = Σ_c x·G`` ``[..., L]`` and ``hyp = G − mean_c G`` ``[..., L, 4]`` from ``x``, ``G`` ``[..., L, 4]``."""
    attr = (onehot * grad).sum(dim=-1)
    hyp = grad - grad.mean(dim=-1, keepdim=True)
    return attr, hyp


@dataclass(frozen=True)
class Attribution:
    """One region's rows: ``attr [length]`` and ``hyp [length, 4]`` (channels A, C, G, T), float32."""

    attr: np.ndarray
    hyp: np.ndarray


# --- on the device --------------------------------------------------------------------------------------------


class Attributor:
    """Gradients of the target for batches of windows, with a ``Predictor``'s model, tracks, augmentation and
    precision (build the predictor at ``attribution_precision``; ``auto`` would give bf16 on a GPU).

    ``checkpoint``: activation checkpointing per augmentation pass. Differentiating the averaged prediction keeps
    every pass's activations until the backward; checkpointing keeps only each pass's input and recomputes the
    pass during the backward, one pass's activations alive at a time, for one more forward of every pass (+70 % on
    the demo model with six passes, docs/performance.md "Attribution").
    ``auto`` turns it on only where not even one window fits in memory without it (it never pays otherwise: a
    larger batch gains little once it is a few windows, see ``settings.GPU_MAX_AUTO_BATCH``); it cannot help
    without augmentation (a single pass is recomputed whole).
    """

    def __init__(self, predictor: Predictor, checkpoint: str = "auto", batch_size: int | None = None,
                 memory_share: float = 1.0):
        if checkpoint not in CHECKPOINT_MODES:
            raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINT_MODES)}, got {checkpoint!r}")
        self.predictor = predictor
        self.device = predictor.device
        # The engine computes several parts at once on a replica (threads); their backward passes, each planned to
        # take the memory batch_size allows, take turns.
        self._lock = threading.Lock()
        self.geometry = predictor.info.geometry
        s = predictor.settings
        self.passes = (2 if s.rc else 1) * len(s.shifts)
        self.checkpoint = False  # decided below, from the memory of one window without it
        self.saved_bytes = self.saved_bytes_per_window()  # all passes' activations of one window
        free = self._free_bytes() * min(1.0, memory_share)
        fits = int(0.8 * free // (BACKWARD_MARGIN * self.saved_bytes))
        if checkpoint == "auto":
            checkpoint = "on" if fits < 1 and self.passes > 1 else "off"
        self.checkpoint = checkpoint == "on"
        if self.checkpoint:
            fits = int(0.8 * free // (BACKWARD_MARGIN * self.saved_bytes / self.passes))
        cap = GPU_MAX_AUTO_BATCH if self.device.type == "cuda" else CPU_BATCH_SIZE
        self.batch_size = batch_size or max(1, min(cap, fits))

    def _free_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.mem_get_info(self.device)[0])
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):  # no sysconf (Windows): assume room for the CPU batch
            return int(CPU_BATCH_SIZE * BACKWARD_MARGIN * self.saved_bytes / 0.8)

    def saved_bytes_per_window(self) -> int:
        """Bytes autograd saves for the backward of one window's target, through every augmentation pass.

        Counted on one forward over an all-N window whose saved tensors are measured and dropped at once (the
        graph is never run backward), so the count costs one window's forward and no activation memory.
        Parameters and buffers are already resident and not counted; tensors sharing storage count once.
        """
        resident = {t.untyped_storage().data_ptr() for t in self.predictor.model.parameters()}
        resident |= {t.untyped_storage().data_ptr() for t in self.predictor.model.buffers()}
        # Storage address -> a tensor saved there. Nothing is kept, so a freed buffer's address can come back for
        # another tensor: an address counts again unless the tensor first saved there is still alive (a view of
        # the same storage). A real graph keeps them all, so no address is reused there.
        seen: dict[int, weakref.ref] = {}
        total = 0

        def pack(t: Tensor):
            nonlocal total
            storage = t.untyped_storage()
            key = storage.data_ptr()
            earlier = seen.get(key)
            if key not in resident and (earlier is None or earlier() is None):
                seen[key] = weakref.ref(t)
                total += storage.nbytes()
            return None  # nothing is kept: this graph is never differentiated

        half = self.geometry.input_length // 2
        codes = torch.full((1, self.geometry.input_length), N_CODE, dtype=torch.uint8, device=self.device)
        x = self.predictor.onehot_rows(codes).requires_grad_(True)
        forward = self._forward([(half - PLANNED_REGION_BP // 2, half + PLANNED_REGION_BP // 2)], checkpoint=False)
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda _: None):
            self.predictor.predict_onehot(x, forward)
        return max(total, 1)

    def focus(self, rows: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
        """The input span every pass's gradient is needed on, or None to differentiate the whole input.

        A region's rows sit around the window's midpoint (the mutagenesis window), and a shift moves them by at
        most ``max |shift|``; the span is symmetric about the midpoint, so the reverse strand's rows (mirrored) lie in
        it too. An Enformer then keeps a graph over a crop around the span only (``Enformer.forward_focused``);
        models without it (Borzoi's U-net, whose upsampling path reads the tower at every level) take the whole
        input; a replicate ensemble of Enformers focuses each member (``loader.Ensemble.forward_focused``).
        """
        model = self.predictor.model
        if not hasattr(model, "forward_focused") or not getattr(model, "focusable", True):
            return None
        half = self.geometry.input_length // 2
        reach = max(max(half - lo, hi - half) for lo, hi in rows) + max(abs(s) for s in self.predictor.settings.shifts)
        if 2 * reach > self.geometry.input_length // 4:
            return None  # rows far from the midpoint: the crop would be most of the input
        return half - reach, half + reach

    def _forward(self, rows: Sequence[tuple[int, int]], checkpoint: bool | None = None):
        """The model call of each augmentation pass (None: the plain one), focused and checkpointed as planned."""
        span = self.focus(rows)
        head = self.predictor.settings.head
        forward = self.predictor.eager_forward
        if span is not None:
            model = self.predictor.model

            def forward(inp: Tensor) -> Tensor:
                return model.forward_focused(inp, span[0], span[1], head)

        if self.checkpoint if checkpoint is None else checkpoint:
            from torch.utils.checkpoint import checkpoint as checkpointed

            plain = forward

            def forward(inp: Tensor) -> Tensor:
                return checkpointed(plain, inp, use_reentrant=False)

        return forward

    def gradients_on_device(self, codes: Tensor, bins: Tensor, rows: Sequence[tuple[int, int]], log: bool,
                            tracks: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(x, G, f)`` for integer codes ``[n, L]`` on the device: the one-hot input, ``∂f/∂x`` ``[n, L, 4]``
        (fp32; exact on each window's ``rows``, see ``focus``) and the targets ``[n]``, each window's gradient from
        one batched backward (``f`` summed); ``tracks`` as for ``target_values``."""
        with torch.enable_grad():
            x = self.predictor.onehot_rows(codes).float().requires_grad_(True)
            pred = self.predictor.predict_onehot(x, self._forward(rows))
            f = target_values(pred, bins, log, tracks)
            (grad,) = torch.autograd.grad(f.sum(), x)
        return x.detach(), grad, f.detach()

    def attribute(self, codes: np.ndarray, bins: np.ndarray, rows: Sequence[tuple[int, int]], log: bool = False,
                  tracks: np.ndarray | None = None) -> list[Attribution]:
        """Attributions of windows ``codes [n, L]`` (uint8), targets ``bins [n, output_bins]`` (bool), each
        window's region rows ``rows[k] = (lo, hi)`` (input indices); batches of ``batch_size``. ``tracks
        [n, selected tracks]`` (bool): the tracks each window's target averages (None: all; a gene target's are
        those of the gene's strand and the unstranded ones).

        Raises ``NonFiniteOutput`` naming the windows whose target or gradient is NaN or infinite.
        """
        n = codes.shape[0]
        if bins.shape != (n, self.geometry.output_bins) or len(rows) != n:
            raise ValueError(f"{n} windows need bins [{n}, {self.geometry.output_bins}] and {n} row ranges")
        n_tracks = len(self.predictor.info.track_indices)
        if tracks is not None and (tracks.shape != (n, n_tracks) or not tracks.any(axis=1).all()):
            raise ValueError(f"{n} windows need tracks [{n}, {n_tracks}], at least one track each")
        out: list[Attribution] = []
        for first in range(0, n, self.batch_size):
            last = min(n, first + self.batch_size)
            try:
                with self._lock:
                    out += self._attribute_batch(codes[first:last], bins[first:last], rows[first:last], log,
                                                 None if tracks is None else tracks[first:last])
            except NonFiniteOutput as e:
                raise NonFiniteOutput([first + k for k in e.window_indices]) from None
        return out

    def _attribute_batch(self, codes: np.ndarray, bins: np.ndarray, rows: Sequence[tuple[int, int]], log: bool,
                         tracks: np.ndarray | None) -> list[Attribution]:
        # np.require copies only arrays torch cannot wrap (read-only ones, as Ray hands a task's inputs over).
        x_codes = torch.from_numpy(np.require(codes, requirements=["C", "W"])).to(self.device)
        mask = torch.from_numpy(np.require(bins, requirements=["C", "W"])).to(self.device)
        track_mask = None if tracks is None else torch.from_numpy(np.array(tracks, bool)).to(self.device)
        x, grad, f = self.gradients_on_device(x_codes, mask, rows, log, track_mask)
        # Only the regions' rows leave the device, gathered into one copy.
        index = torch.cat([torch.arange(lo, hi, device=self.device) + k * x.shape[1]
                           for k, (lo, hi) in enumerate(rows)])
        attr, hyp = contributions(x.reshape(-1, 4)[index], grad.reshape(-1, 4)[index])
        finite_rows = torch.isfinite(attr) & torch.isfinite(hyp).all(dim=-1)
        packed = torch.cat([attr[:, None], hyp], dim=1).cpu().numpy()
        finite = np.ones(len(rows), bool)
        finite &= torch.isfinite(f).cpu().numpy()
        finite_rows = finite_rows.cpu().numpy()
        out = []
        offset = 0
        for k, (lo, hi) in enumerate(rows):
            block = packed[offset : offset + hi - lo]
            finite[k] &= bool(finite_rows[offset : offset + hi - lo].all())
            out.append(Attribution(attr=block[:, 0].copy(), hyp=block[:, 1:].copy()))
            offset += hi - lo
        if not finite.all():
            raise NonFiniteOutput(np.flatnonzero(~finite).tolist())
        return out
