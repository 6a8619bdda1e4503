"""Model families (Enformer, Borzoi) behind one protocol, ``Family``, and their registry ``FAMILIES``.

A family knows everything that depends on which architecture a checkpoint is: whether a ``config.json``
belongs to it, the geometry and heads that config declares, its bundled track tables, the cost of a window
(FLOPs, activation memory), and, importing torch only then, how to build the network and load its weights.
The checkpoint loader, the estimate and batch sizing go through ``family_of`` / ``FAMILIES`` rather than
branching on a family's name.

This module does not import torch: dry runs (``estimate``) and the driver use it without paying for torch;
``build`` and ``load_weights`` import their architecture module when called.

Adding a family: its architecture module (a config with ``from_dict`` / ``to_dict`` / ``output_heads``, a
network with ``geometry`` and ``forward(x, head=...)``), a ``Family`` class below, and one line in ``FAMILIES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .windows import ENFORMER, Geometry

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = [
    "CheckpointError", "Family", "EnformerFamily", "BorzoiFamily", "FAMILIES", "family_of", "family_for_config",
    "DATA_DIR",
    "DEMO_CHECKPOINTS", "demo_checkpoint",
]

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"  # bundled track tables (Apache-2.0; see data/README.md)
# The packaged demo checkpoints: --model name -> directory inside the package.
DEMO_CHECKPOINTS = {"demo": "demo_model", "demo-borzoi": "demo_borzoi"}


class CheckpointError(ValueError):
    """A checkpoint is missing files or does not fit the model described by its config."""


def demo_checkpoint(name: str) -> Path | None:
    """The directory of a packaged demo checkpoint (``demo``, ``demo-borzoi``), None for any other name."""
    if name not in DEMO_CHECKPOINTS:
        return None
    from importlib import resources

    return Path(str(resources.files("enformer_batch") / DEMO_CHECKPOINTS[name]))


@runtime_checkable
class Family(Protocol):
    """One model family: what a checkpoint of it declares, what it costs, and how to build and load it."""

    name: str  # as ``model_type`` in config.json and ``family`` in manifests
    display_name: str  # "Enformer"
    article: str  # "an" / "a", for messages naming the family
    official: str  # what ``--model <name>`` stands for in ``estimate``: the published checkpoint, in words
    input_length: int  # bp of one window
    official_heads: Mapping[str, int]  # head sizes of the published checkpoints
    # FLOPs of one forward pass of the published model over one window (human head), in TFLOP.
    tflop_per_window: float
    # Share of a GPU's dense bf16 peak the compiled model sustains (measured; ``estimate`` uses it).
    utilisation: float
    # Bundled track tables (file names in DATA_DIR) by head, for checkpoints that carry none; used only when
    # the head has exactly the table's number of tracks.
    bundled_tables: Mapping[str, str]

    def recognises(self, raw: Mapping[str, Any]) -> bool:
        """Whether a ``config.json`` without ``model_type`` is this family's (by fields only it has)."""
        ...

    def geometry(self, raw: Mapping[str, Any]) -> Geometry:
        """The geometry a config declares (the same as the built network's ``geometry``)."""
        ...

    def heads(self, raw: Mapping[str, Any]) -> dict[str, int]:
        """Head name -> track count, as the built network will have them."""
        ...

    def activation_bytes(self, config: Mapping[str, Any], act_bytes: int, input_length: int) -> int:
        """Peak activation bytes of one window's forward pass at ``act_bytes`` per value (batch sizing)."""
        ...

    def build(self, raw: Mapping[str, Any], use_tf_gamma: bool | None = None) -> tuple[Any, nn.Module]:
        """``(config, network)`` from a ``config.json``, weights uninitialised; ValueError/TypeError if invalid."""
        ...

    def load_weights(self, model: nn.Module, state: Mapping[str, Tensor], origin: str) -> None:
        """Load a checkpoint's state dict (key names canonicalised) into ``model``, or raise CheckpointError."""
        ...


def _load_state(
    model: nn.Module, state: Mapping[str, Tensor], origin: str, aliases: Mapping[str, str] | None = None
) -> None:
    """Load a state dict whose keys may carry wrapper prefixes (``module.``, ``enformer.``) and, for families
    with a module aliased under other names (``aliases``: alias prefix -> its module's prefix), either name; the
    model's own state dict without the aliases is what must be matched. CheckpointError lists what does not."""
    aliases = aliases or {}
    canonical: dict[str, Tensor] = {}
    for key, value in state.items():
        name = key
        for prefix in ("module.", "enformer."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        name = next((module + name[len(alias):] for alias, module in aliases.items() if name.startswith(alias)), name)
        # The named module wins over its alias; both hold the same tensor in a consistent checkpoint.
        if name not in canonical or name == key:
            canonical[name] = value
    roots = {alias.split(".")[0] + "." for alias in aliases}
    expected = {k: v for k, v in model.state_dict().items() if not any(k.startswith(r) for r in roots)}
    missing = [k for k in expected if k not in canonical and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in canonical if k not in expected]
    mis_shaped = [f"{k} (checkpoint {tuple(canonical[k].shape)}, model {tuple(v.shape)})"
                  for k, v in expected.items() if k in canonical and tuple(canonical[k].shape) != tuple(v.shape)]
    problems = [f"{what} {len(keys)}: {_summarize(keys)}"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped))
                if keys]
    if problems:
        raise CheckpointError(f"{origin} does not fit the model config: " + "; ".join(problems))
    model.load_state_dict({k: v for k, v in canonical.items() if k in expected}, strict=False)


def _summarize(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … (+{len(items) - limit} more)" if len(items) > limit else "")


def _attention_bytes(config: Mapping[str, Any], n: int, act_bytes: int) -> int:
    # Attention logits stay fp32 under autocast's softmax: relative logits [heads, n, 2n-1] plus logits
    # [heads, n, n], counted at 4 bytes, and a few [n, dim] activations.
    heads, dim = int(config.get("heads", 8)), int(config.get("dim", 1536))
    return heads * n * (3 * n - 1) * 4 + 4 * n * dim * act_bytes


class EnformerFamily:
    """Enformer (Avsec et al. 2021), enformer-pytorch's config and parameter names (``model``)."""

    name = "enformer"
    display_name = "Enformer"
    article = "an"
    official = "official checkpoint"
    input_length = ENFORMER.input_length
    official_heads: Mapping[str, int] = {"human": 5313, "mouse": 1643}
    # Measured with enformer-pytorch; torch.utils.flop_counter on ours counts 3.01.
    tflop_per_window = 3.29
    # Checked on one H200 (2026-11-25, benchmarks/gpu.py, docs/performance.md): the device stage, compiled at
    # batch 8, ran 298 TFLOP/s of the datasheet's 989 (0.30; eager 0.20). End to end at 5,313 float16 tracks a
    # 16-core node wrote 67.5 windows/s, 0.67 of the device's rate (Parquet encoding).
    utilisation = 0.30
    bundled_tables: Mapping[str, str] = {"human": "targets_human.txt", "mouse": "targets_mouse.txt"}

    def recognises(self, raw: Mapping[str, Any]) -> bool:
        architectures = [str(a).lower() for a in raw.get("architectures") or []]
        named = any(a.startswith("enformer") for a in architectures)
        return named or bool({"output_heads", "target_length"} & set(raw))

    def geometry(self, raw: Mapping[str, Any]) -> Geometry:
        return Geometry(input_length=self.input_length, bin_size=2 ** int(raw.get("num_downsamples", 7)),
                        output_bins=int(raw.get("target_length", ENFORMER.output_bins)))

    def heads(self, raw: Mapping[str, Any]) -> dict[str, int]:
        return {str(k): int(v) for k, v in dict(raw.get("output_heads", self.official_heads)).items()}

    def activation_bytes(self, config: Mapping[str, Any], act_bytes: int, input_length: int) -> int:
        # The conv tower's first blocks at full length: input, BatchNorm/GELU output, conv output and residual
        # of dim/2 channels live at once; or attention at input_length / bin_size positions.
        dim = int(config.get("dim", 1536))
        conv = 4 * (dim // 2) * input_length * act_bytes
        n = input_length // 2 ** int(config.get("num_downsamples", 7))
        return max(conv, _attention_bytes(config, n, act_bytes))

    def build(self, raw: Mapping[str, Any], use_tf_gamma: bool | None = None) -> tuple[Any, nn.Module]:
        from .model import Enformer, _enformer_config

        config = _enformer_config(dict(raw), use_tf_gamma)
        return config, Enformer(config)

    # enformer-pytorch's trunk Sequential makes every parameter also appear as `_trunk.<i>.*`, which checkpoints
    # saved by torch.save(state_dict) carry.
    _TRUNK_ALIASES: Mapping[str, str] = {
        "_trunk.1.": "stem.", "_trunk.2.": "conv_tower.", "_trunk.4.": "transformer.", "_trunk.6.": "final_pointwise.",
    }

    def load_weights(self, model: nn.Module, state: Mapping[str, Tensor], origin: str) -> None:
        _load_state(model, state, origin, self._TRUNK_ALIASES)


class BorzoiFamily:
    """Borzoi (Linder et al. 2025) and Flashzoi, borzoi-pytorch's config and parameter names (``borzoi``)."""

    name = "borzoi"
    display_name = "Borzoi"
    article = "a"
    official = "official replicate"
    input_length = 524_288
    official_heads: Mapping[str, int] = {"human": 7611, "mouse": 2608}
    # torch.utils.flop_counter on our Borzoi at borzoi-pytorch's sizes (dim 1536, depth 8, 7,611 tracks); the
    # fixed conv tower is 2.4 of it, the transformer 1.9, the 7,611-track head 0.18.
    tflop_per_window = 4.91
    # The same H200 run: Borzoi compiled at bf16 ran 39.7 windows/s x 4.91 TFLOP = 195 TFLOP/s (0.20 of 989).
    utilisation = 0.20
    bundled_tables: Mapping[str, str] = {"human": "borzoi_targets_human.txt"}

    def recognises(self, raw: Mapping[str, Any]) -> bool:
        architectures = [str(a).lower() for a in raw.get("architectures") or []]
        return any(a in ("borzoi", "annotatedborzoi") for a in architectures) or "bins_to_return" in raw

    def geometry(self, raw: Mapping[str, Any]) -> Geometry:
        # borzoi-pytorch crops to 16,384 - 32 bins when return_center_bins_only is false.
        bins = int(raw.get("bins_to_return", 6144)) if raw.get("return_center_bins_only", True) else 16_384 - 32
        return Geometry(input_length=self.input_length, bin_size=32, output_bins=bins)

    def heads(self, raw: Mapping[str, Any]) -> dict[str, int]:
        heads = {}
        if raw.get("enable_human_head", True):
            heads["human"] = int(raw.get("human_tracks", self.official_heads["human"]))
        if raw.get("enable_mouse_head", False):
            heads["mouse"] = int(raw.get("mouse_tracks", self.official_heads["mouse"]))
        return heads

    def activation_bytes(self, config: Mapping[str, Any], act_bytes: int, input_length: int) -> int:
        # The stem's full-length output, then tower block 0 at L/2; attention at L / 128 positions.
        stem = int(config.get("stem_channels", 512))
        conv = (stem * input_length + 3 * stem * input_length // 2) * act_bytes
        return max(conv, _attention_bytes(config, input_length // 128, act_bytes))

    def build(self, raw: Mapping[str, Any], use_tf_gamma: bool | None = None) -> tuple[Any, nn.Module]:
        from .borzoi import Borzoi, BorzoiConfig

        del use_tf_gamma  # an Enformer setting; Borzoi's positional features have no TF variant
        config = BorzoiConfig.from_dict(dict(raw))
        return config, Borzoi(config)

    def load_weights(self, model: nn.Module, state: Mapping[str, Tensor], origin: str) -> None:
        _load_state(model, state, origin)  # borzoi-pytorch's names are ours


# The registry, in the order configs without ``model_type`` are tried.
FAMILIES: dict[str, Family] = {f.name: f for f in (EnformerFamily(), BorzoiFamily())}

def family_of(raw: Mapping[str, Any], origin: str) -> Family:
    """The family of a checkpoint's ``config.json``; CheckpointError for anything else.

    ``model_type`` decides when present (both libraries write it); hand-written configs without it are told
    apart by the fields only one family has (``Family.recognises``, tried in registry order).
    """
    model_type = str(raw.get("model_type", "")).lower()
    architectures = [str(a) for a in raw.get("architectures") or []]
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    if not model_type:
        for family in FAMILIES.values():
            if family.recognises(raw):
                return family
    found = f"model_type {model_type!r}" if model_type else "no model_type"
    found += f", architectures {architectures}" if architectures else ""
    known = " nor ".join(f"{f.article} {f.display_name}" for f in FAMILIES.values())
    raise CheckpointError(f"checkpoint {origin} is neither {known} checkpoint: its config.json has {found}")


def family_for_config(config: Mapping[str, Any]) -> Family:
    """The family of a built model's config dict (``ModelInfo.config``); Enformer when nothing tells
    (the simulated stand-in has an Enformer config)."""
    try:
        return family_of(config, "model config")
    except CheckpointError:
        return FAMILIES["enformer"]

