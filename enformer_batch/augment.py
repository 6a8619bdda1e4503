"""Test-time augmentation (reverse complement, sequence shifts) and reduced-precision contexts.

Conventions (one-hot channel order A, C, G, T):

* Reverse complement: reverse the sequence axis and the channel axis (A<->T, C<->G); the prediction of the
  reverse-complemented input is reversed along bins so it lines up with the forward strand again and, when
  the model's track table pairs stranded tracks (Borzoi's ``strand_pair``), each track takes its pair's
  value: the reverse strand's "+" track is the forward strand's "-" track. Unpaired tracks stay in place.
* Shift ``s`` (as Basenji's ``shift_sequence``): the sequence content moves ``s`` positions towards higher
  coordinates, ``shifted[i] = onehot[i - s]``; vacated positions are filled with the N row
  (``n_value`` in every channel: 0.0 for our default all-zero N, 0.25 for Basenji's convention). As in
  Basenji/Enformer the predictions of shifted inputs are averaged without being shifted back (shifts are
  much smaller than a 128-bp bin).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["reverse_complement", "shift_onehot", "predict_augmented", "autocast_context", "PRECISIONS"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def reverse_complement(onehot: Tensor) -> Tensor:
    """Reverse complement of ACGT one-hot ``[..., L, 4]`` (an N row stays an N row)."""
    return onehot.flip(-2).flip(-1)


def shift_onehot(onehot: Tensor, shift: int, n_value: float = 0.0) -> Tensor:
    """``out[..., i, :] = onehot[..., i - shift, :]``; vacated positions become ``n_value`` rows."""
    if shift == 0:
        return onehot
    length = onehot.shape[-2]
    if abs(shift) >= length:
        raise ValueError(f"shift {shift} is not smaller than the sequence length {length}")
    out = torch.full_like(onehot, n_value)
    if shift > 0:
        out[..., shift:, :] = onehot[..., :-shift, :]
    else:
        out[..., :shift, :] = onehot[..., -shift:, :]
    return out


def predict_augmented(
    model_fn: Callable[[Tensor], Tensor],
    onehot: Tensor,
    rc: bool,
    shifts: Sequence[int] = (0,),
    n_value: float = 0.0,
    strand_pairs: Tensor | None = None,
) -> Tensor:
    """Average ``model_fn`` over shifts x strands; ``onehot [B, L, 4]`` -> ``[B, bins, T]`` (fp32).

    ``model_fn`` maps ``[B, L, 4]`` to ``[B, bins, T]``. Each shift is predicted on the forward strand and,
    when ``rc``, on the reverse complement of the shifted sequence (bins flipped back, and tracks permuted
    by ``strand_pairs``, a ``[T]`` index tensor where ``strand_pairs[i]`` is track ``i``'s other-strand
    track, itself when unstranded). An empty ``shifts`` means no shift.
    """
    shift_list = list(shifts) or [0]
    total: Tensor | None = None
    count = 0
    for s in shift_list:
        x = shift_onehot(onehot, int(s), n_value)
        variants = [(x, False)] + ([(reverse_complement(x), True)] if rc else [])
        for inp, flipped in variants:
            pred = model_fn(inp).float()
            if flipped:
                pred = pred.flip(-2)
                if strand_pairs is not None:
                    pred = pred.index_select(-1, strand_pairs)
            total = pred if total is None else total + pred
            count += 1
    assert total is not None
    return total / count


def autocast_context(precision: str, device_type: str) -> contextlib.AbstractContextManager:
    """``fp32`` -> no-op context; ``bf16`` / ``fp16`` -> ``torch.autocast`` on ``device_type``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)
