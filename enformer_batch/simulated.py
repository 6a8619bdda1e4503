"""A simulated accelerator: a model stand-in that emits outputs of the real shape at a set rate, computing nothing.

``--model sim:rate=90,tracks=5313`` (or ``load_simulated("sim:...")`` from Python) gives a model whose forward
returns ``[batch, 896, tracks]`` float32 values that are deterministic, NaN-free, positive, and vary by window
(through the input's content) and by bin and track, computing nothing. The ``Predictor`` holding it paces each
batch's device-side work (one-hot, forward passes, track selection, cast) to ``windows × passes / rate``
seconds, as an accelerator of that speed would take, so host work that a GPU leaves to its device does not
count against the rate. Everything around it is real: reading, the replica, device-side track selection and
cast, stitching, writing, committing. It answers one question without a GPU: does the pipeline keep up with an
accelerator of a given speed?

Spec keys: ``rate`` (windows/s per replica, default 90: an H100 at bf16, order of magnitude), ``tracks``
(default 5313: Enformer's human head), ``bins`` (default 896).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from .loader import LoadedModel
from .model import EnformerConfig
from .windows import ENFORMER, Geometry

PREFIX = "sim:"


@dataclass(frozen=True)
class SimSpec:
    rate: float = 90.0
    tracks: int = 5313
    bins: int = 896


def is_simulated(source: str) -> bool:
    return source.startswith(PREFIX)


def parse_spec(source: str) -> SimSpec:
    """``sim:rate=90,tracks=5313`` → SimSpec; one clear error for anything else."""
    fields: dict = {}
    for item in filter(None, source[len(PREFIX) :].split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in ("rate", "tracks", "bins"):
            raise ValueError(f"--model {source}: expected sim:rate=R,tracks=T[,bins=B], got {item!r}")
        try:
            fields[key] = float(value) if key == "rate" else int(value)
        except ValueError:
            raise ValueError(f"--model {source}: {key} must be a number, got {value!r}") from None
    spec = SimSpec(**fields)
    if spec.rate <= 0 or spec.tracks < 1 or spec.bins < 1:
        raise ValueError(f"--model {source}: rate, tracks and bins must be positive")
    return spec


class SimulatedModel(torch.nn.Module):
    """Real-shaped outputs at no cost; ``spec.rate`` is applied by the ``Predictor`` (see the module docstring)."""

    def __init__(self, spec: SimSpec):
        super().__init__()
        self.spec = spec
        g = torch.Generator().manual_seed(0)
        self.register_buffer("bin_term", torch.rand(spec.bins, 1, generator=g) + 0.5)
        self.register_buffer("track_term", torch.rand(1, spec.tracks, generator=g) + 0.5)

    @property
    def geometry(self) -> Geometry:
        """Enformer's input and bin size, ``bins`` output bins (what downstream stages read from a model)."""
        return Geometry(input_length=ENFORMER.input_length, bin_size=ENFORMER.bin_size, output_bins=self.spec.bins)

    def forward(self, onehot: torch.Tensor, head: str = "human") -> torch.Tensor:
        # A per-window factor from a sparse sample of the input: cheap, and different for different windows.
        sample = onehot[:, :: max(1, onehot.shape[1] // 512)].float()
        window = (sample * torch.arange(1, 5, dtype=sample.dtype, device=sample.device)).sum(dim=(1, 2))
        factor = 1.0 + (window % 97.0) / 97.0
        return self.bin_term * self.track_term * factor[:, None, None]


def load_simulated(source: str, device: str | torch.device = "cpu") -> LoadedModel:
    """The stand-in as a loaded model: Enformer's geometry, one ``human`` head of ``tracks`` tracks."""
    spec = parse_spec(source)
    config = EnformerConfig.from_dict({"output_heads": {"human": spec.tracks}, "target_length": spec.bins})
    return LoadedModel(
        model=SimulatedModel(spec).to(device).eval(),
        config=config,
        model_id=source,
        weights_sha256=hashlib.sha256(source.encode()).hexdigest(),
        tracks={"human": None},
        replicates=((source, hashlib.sha256(source.encode()).hexdigest()),),
    )
