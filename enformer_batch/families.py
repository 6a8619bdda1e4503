"""Model families (Enformer, Borzoi) as a checkpoint's ``config.json`` describes them, without torch.

Owns what can be known about a model before its weights are read: which family a ``config.json`` belongs
to, the geometry it declares (input length, bin size, output bins), its heads and track counts, and the
published size of the official checkpoints. ``model`` builds the networks from this; ``plan`` uses it for
dry runs without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .windows import Geometry

__all__ = ["CheckpointError", "Family", "FAMILIES", "checkpoint_family", "geometry_from_config", "heads_from_config"]


class CheckpointError(ValueError):
    """A checkpoint is missing files or does not fit the model described by its config."""


@dataclass(frozen=True)
class Family:
    name: str
    input_length: int
    official_heads: Mapping[str, int]  # head sizes of the published checkpoints
    # FLOPs of one forward pass of the published model over one window (human head).
    tflop_per_window: float


FAMILIES = {
    # 3.29: measured with enformer-pytorch (see plan.py); torch.utils.flop_counter on ours counts 3.01.
    "enformer": Family("enformer", 196_608, {"human": 5313, "mouse": 1643}, 3.29),
    # torch.utils.flop_counter on our Borzoi at borzoi-pytorch's sizes (dim 1536, depth 8, 7,611 tracks); the
    # fixed conv tower is 2.4 of it, the transformer 1.9, the 7,611-track head 0.18.
    "borzoi": Family("borzoi", 524_288, {"human": 7611, "mouse": 2608}, 4.91),
}


# Track tables bundled in data/ (Apache-2.0; see data/README.md) for checkpoints that carry none, by family and
# head; used only when the head has exactly the table's number of tracks.
BUNDLED_TABLES = {
    ("enformer", "human"): "targets_human.txt",
    ("enformer", "mouse"): "targets_mouse.txt",
    ("borzoi", "human"): "borzoi_targets_human.txt",
}


def checkpoint_family(raw: Mapping[str, Any], origin: str) -> str:
    """``"enformer"`` or ``"borzoi"`` from a checkpoint's ``config.json``; CheckpointError for anything else.

    ``model_type`` decides when present (both libraries write it); hand-written configs without it are told
    apart by the fields only one family has.
    """
    model_type = str(raw.get("model_type", "")).lower()
    architectures = [str(a) for a in raw.get("architectures") or []]
    if model_type in FAMILIES:
        return model_type
    if not model_type:
        if any(a.lower().startswith("enformer") for a in architectures) or {"output_heads", "target_length"} & set(raw):
            return "enformer"
        if any(a.lower() in ("borzoi", "annotatedborzoi") for a in architectures) or "bins_to_return" in raw:
            return "borzoi"
    found = f"model_type {model_type!r}" if model_type else "no model_type"
    found += f", architectures {architectures}" if architectures else ""
    raise CheckpointError(
        f"checkpoint {origin} is neither an Enformer nor a Borzoi checkpoint: its config.json has {found}"
    )


def geometry_from_config(family: str, raw: Mapping[str, Any]) -> Geometry:
    """The geometry a config declares (the same as the built model's ``geometry``)."""
    if family == "borzoi":
        bins = int(raw.get("bins_to_return", 6144)) if raw.get("return_center_bins_only", True) else 16_384 - 32
        return Geometry(input_length=FAMILIES["borzoi"].input_length, bin_size=32, output_bins=bins)
    return Geometry(input_length=FAMILIES["enformer"].input_length,
                    bin_size=2 ** int(raw.get("num_downsamples", 7)), output_bins=int(raw.get("target_length", 896)))


def heads_from_config(family: str, raw: Mapping[str, Any]) -> dict[str, int]:
    """Head name -> track count, as the built model will have them."""
    if family == "borzoi":
        heads = {}
        if raw.get("enable_human_head", True):
            heads["human"] = int(raw.get("human_tracks", 7611))
        if raw.get("enable_mouse_head", False):
            heads["mouse"] = int(raw.get("mouse_tracks", 2608))
        return heads
    return {str(k): int(v) for k, v in dict(raw.get("output_heads", FAMILIES["enformer"].official_heads)).items()}
