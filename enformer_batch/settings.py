"""What a run asks of the model and what it learns about it: plain dataclasses and arithmetic, no torch.

The driver, the reader tasks and the command line import this rather than ``inference`` (which imports torch,
~1 s per process): only model replicas pay for torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .families import family_for_config
from .genome import onehot_table
from .windows import ENFORMER, Geometry

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: bf16 on accelerators that have it, else fp32
CPU_BATCH_SIZE = 4  # --batch-size auto on CPUs: larger batches do not raise a CPU's windows/s
# --batch-size auto on GPUs: at most this. Full-size Enformer at bf16 on an H200 (docs/performance.md) ran at
# 56.7, 65.6, 67.4, 64.8, 61.0 windows/s at batch 1, 4, 8, 16, 64: past 8 a larger batch only costs memory.
GPU_MAX_AUTO_BATCH = 8
# Parts a replica computes at once: their batches interleave on the device, so it never idles while one part's
# last batch is copied back and stitched (H200, full-size Enformer: see docs/performance.md).
STREAMS_IN_FLIGHT = 2
COMPILE_MODES = ("auto", "on", "off")  # auto: torch.compile on CUDA devices, eager elsewhere
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
    precision: str = "auto"  # resolved per device by resolve_precision
    rc: bool = False
    shifts: tuple[int, ...] = (0,)
    n_encoding: str = "zeros"
    batch_size: int | None = None  # None: auto, from the device's free memory (resolve_batch_size)
    dtype: str = "float16"
    storage_options: Mapping[str, str] = field(default_factory=dict)
    # The sha256 the run records for the weights; a replica that loads other bytes refuses (issue 15).
    weights_sha256: str | None = None
    unsquash: bool = False  # undo Borzoi's squashed target scale (needs clip_soft/scale/sum_stat in the table)
    compile: str = "auto"  # torch.compile the model: auto = on CUDA devices (see inference.resolve_compile)

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.batch_size is not None and self.batch_size < 1:
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
    family: str = "enformer"  # a key of families.FAMILIES
    # (source, weights sha256) of every replicate; one entry for a single checkpoint.
    replicates: tuple[tuple[str, str], ...] = ()
    unsquash: bool = False
    precision: str = "fp32"  # as resolved on the replica's device (never "auto")
    batch_size: int = CPU_BATCH_SIZE  # as resolved on the replica's device
    device: str = "cpu"  # what the replica predicts on, e.g. "cuda (NVIDIA H100 80GB HBM3)"
    compiled: bool = False  # torch.compile'd (values differ from eager in the last bits only)
    # Per selected track: "+", "-" or "" (unstranded), from the track table (gene_scores.track_strands).
    track_strands: tuple[str, ...] = ()


def auto_batch_size(
    free_bytes: int,
    config: Mapping,
    precision: str = "bf16",
    input_length: int = ENFORMER.input_length,
    augment_passes: int = 1,
    fraction: float = 0.8,
    max_batch: int = GPU_MAX_AUTO_BATCH,
) -> int:
    """The largest batch, at most ``max_batch``, whose activations fit in ``fraction`` of ``free_bytes`` (≥ 1).

    ``config`` is the model config dict (``ModelInfo.config``); its family (``families.family_for_config``)
    says what one window's activations peak at (``Family.activation_bytes``): for Enformer the conv tower's
    first blocks at full length or attention, whichever is larger. Weights are in fp32 in memory either way.
    ``augment_passes`` does not multiply memory: passes run one after another. On a GPU, ``free_bytes`` is
    ``torch.cuda.mem_get_info()[0]`` after the model is loaded. Measured on an H200 at bf16: 0.97 GiB per
    full-size Enformer window against the 1.13 GiB this estimates.
    """
    del augment_passes  # documented above: sequential passes reuse the same memory
    act = 4 if precision == "fp32" else 2
    per_window = family_for_config(config).activation_bytes(config, act, input_length)
    budget = int(free_bytes * fraction)
    return int(max(1, min(max_batch, budget // per_window)))


# Attribution's options, here so that the driver and the command line read them without torch.
CHECKPOINT_MODES = ("auto", "on", "off")


def attribution_precision(precision: str) -> str:
    """The precision an attribution runs at: ``auto`` → fp32 (gradients in bf16 lose most of their digits)."""
    return "fp32" if precision == "auto" else precision
