"""The Enformer model: architecture, configuration and weight-name mapping.

This module owns our own compact implementation of Enformer (Avsec et al. 2021) for inference: a
convolutional stem, a conv tower of ``num_downsamples - 1`` blocks with attention pooling, a transformer
with relative positional encodings, a centre crop to ``target_length`` bins, a pointwise layer and one
softplus head per organism. Parameter names equal those of ``enformer-pytorch`` (including its
``_trunk.*`` aliases), so checkpoints in the layout of the Hugging Face ``EleutherAI/enformer-official-rough``
weights (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``) load here (``loader`` reads them,
``families.EnformerFamily`` maps their names) and vice versa.

The forward pass is written for speed rather than as a transliteration: attention pooling over pairs
needs one half-length matmul (softmax of two logits is a sigmoid of their difference, which is linear in
the inputs), positional features and their relative shift are computed once and cached, and attention
runs through ``scaled_dot_product_attention`` with the relative-position logits as an additive mask.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .windows import ENFORMER, Geometry

__all__ = [
    "EnformerConfig",
    "Enformer",
    "calibrate_batchnorm",
    "canonical_state_dict",
]

SEQUENCE_LENGTH = ENFORMER.input_length
TARGET_LENGTH = ENFORMER.output_bins
BIN_SIZE = ENFORMER.bin_size


# ----------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class EnformerConfig:
    """Hyper-parameters, named as in enformer-pytorch's ``EnformerConfig`` / the HF ``config.json``."""

    dim: int = 1536
    depth: int = 11
    heads: int = 8
    output_heads: dict[str, int] = field(default_factory=lambda: {"human": 5313, "mouse": 1643}, hash=False)
    target_length: int = TARGET_LENGTH
    attn_dim_key: int = 64
    dropout_rate: float = 0.4
    attn_dropout: float = 0.05
    pos_dropout: float = 0.01
    num_downsamples: int = 7
    dim_divisible_by: int = 128
    use_tf_gamma: bool = False
    # Accepted for config compatibility only: gradient checkpointing is a training concern and
    # enformer-pytorch ignores use_convnext too.
    use_checkpointing: bool = False
    use_convnext: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnformerConfig:
        """Build from a config dict, ignoring unknown keys (HF adds ``architectures``, ``model_type``…)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if "output_heads" in kwargs:
            kwargs["output_heads"] = {str(k): int(v) for k, v in dict(kwargs["output_heads"]).items()}
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["output_heads"] = dict(self.output_heads)
        return d

    def validate(self) -> None:
        if self.dim % 2 or self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be even and divisible by heads {self.heads}")
        if (self.dim // self.heads) % 6:
            raise ValueError(
                f"dim // heads = {self.dim // self.heads} must be divisible by 6 (positional features)"
            )
        if self.num_downsamples < 3:
            raise ValueError("num_downsamples must be >= 3")
        if not self.output_heads:
            raise ValueError("output_heads must name at least one head")

    @property
    def bin_size(self) -> int:
        return 2**self.num_downsamples

    def filter_list(self) -> list[int]:
        """Conv-tower channel widths, rounded exactly as enformer-pytorch's ``exponential_linspace_int``."""
        half, num = self.dim // 2, self.num_downsamples - 1
        base = math.exp(math.log(self.dim / half) / (num - 1))
        div = self.dim_divisible_by
        return [half] + [int(round(half * base**i / div) * div) for i in range(num)]


# ----------------------------------------------------------------------------------------------------
# Building blocks. Module/attribute names and nesting mirror enformer-pytorch so state_dict keys match.


GELU_ALPHA = 1.702


def _gelu(x: Tensor) -> Tensor:
    # Enformer's GELU approximation (sigmoid(1.702 x) x), not torch's erf GELU.
    return torch.sigmoid(GELU_ALPHA * x) * x


def _inplace_ok() -> bool:
    # In-place activations overwrite what autograd would save; only safe when nothing is recorded.
    return not torch.is_grad_enabled() or torch.is_inference_mode_enabled()


def _bn_gelu_scaled(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """``1.702 * gelu(bn(x))`` for an eval-mode BatchNorm, in two memory passes instead of four.

    ``sigmoid(a y) y = silu(a y) / a``: the factor ``a`` goes into BatchNorm's affine parameters and ``1/a``
    into the next layer's weights, so the activations are only read by BatchNorm and by an in-place SiLU.
    On a CPU these element-wise passes over long sequences cost as much as the convolutions at small widths.
    """
    y = F.batch_norm(
        x, bn.running_mean, bn.running_var, bn.weight * GELU_ALPHA, bn.bias * GELU_ALPHA, False, 0.0, bn.eps
    )
    return F.silu(y, inplace=_inplace_ok())


class _GELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return _gelu(x)


class _Layout(nn.Module):
    """Parameter-free placeholder at the positions of enformer-pytorch's ``Rearrange``/crop modules, so
    ``_trunk.<i>`` indices line up; never called."""

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover
        raise RuntimeError("layout placeholder is not callable")


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) + x


class _ConvBlock(nn.Sequential):
    """BatchNorm -> GELU -> Conv1d, channels-first ``[B, C, L]`` (indices 0, 1, 2 as in enformer-pytorch)."""

    def forward(self, x: Tensor) -> Tensor:
        bn, conv = self[0], self[2]
        if bn.training:  # calibrate_batchnorm: batch statistics, the plain composition
            return conv(_gelu(bn(x)))
        # The 1/1.702 of _bn_gelu_scaled goes into the (small) weight, not the (long) activations.
        return F.conv1d(_bn_gelu_scaled(bn, x), conv.weight / GELU_ALPHA, conv.bias, padding=conv.padding)


def _conv_block(dim: int, dim_out: int, kernel_size: int) -> _ConvBlock:
    return _ConvBlock(nn.BatchNorm1d(dim), _GELU(), nn.Conv1d(dim, dim_out, kernel_size, padding=kernel_size // 2))


class AttentionPool(nn.Module):
    """Softmax-weighted pooling over pairs of positions with 1x1-conv logits: ``[B, C, L] -> [B, C, L/2]``."""

    def __init__(self, dim: int, pool_size: int = 2) -> None:
        super().__init__()
        if pool_size != 2:
            raise ValueError("only pool_size 2 is supported (as in Enformer)")
        self.to_attn_logits = nn.Conv2d(dim, dim, 1, bias=False)
        nn.init.dirac_(self.to_attn_logits.weight)
        with torch.no_grad():
            self.to_attn_logits.weight.mul_(2)

    def forward(self, x: Tensor) -> Tensor:
        b, c, n = x.shape
        odd = n % 2
        if odd:
            # enformer-pytorch pads with a masked (zero-weight) position: the last, unpaired position
            # passes through unchanged.
            last = x[..., -1:]
            x = x[..., :-1]
        even, odd_pos = x[..., 0::2], x[..., 1::2]
        # softmax([l0, l1]) = [s, 1 - s] with s = sigmoid(l0 - l1), and l0 - l1 = W (x0 - x1), so one
        # half-length matmul replaces the full-length logits computation.
        diff = even - odd_pos
        w = self.to_attn_logits.weight[:, :, 0, 0]
        s = torch.sigmoid(F.conv1d(diff, w[:, :, None]))
        out = torch.addcmul(odd_pos, diff, s)
        if odd:
            out = torch.cat((out, last), dim=-1)
        return out


# Relative positional features (Enformer: exponential, central mask and gamma basis functions, each also
# multiplied by sign(distance)).


def _features_exponential(dist: Tensor, n_feat: int, seq_len: int, min_half_life: float = 3.0) -> Tensor:
    max_range = math.log(seq_len) / math.log(2.0)
    half_life = 2 ** torch.linspace(min_half_life, max_range, n_feat, device=dist.device)
    return torch.exp(-math.log(2.0) / half_life[None, :] * dist.abs()[:, None])


def _features_central_mask(dist: Tensor, n_feat: int) -> Tensor:
    widths = 2 ** torch.arange(1, n_feat + 1, device=dist.device).float() - 1
    return (widths[None, :] > dist.abs()[:, None]).float()


def _gamma_pdf(x: Tensor, concentration: Tensor, rate: Tensor) -> Tensor:
    log_unnormalized = torch.xlogy(concentration - 1.0, x) - rate * x
    log_normalization = torch.lgamma(concentration) - concentration * torch.log(rate)
    return torch.exp(log_unnormalized - log_normalization)


def _features_gamma(dist: Tensor, n_feat: int, seq_len: int, tf_normalization: bool) -> Tensor:
    stddev = seq_len / (2 * n_feat)
    mean = torch.linspace(seq_len / n_feat, seq_len, n_feat, device=dist.device)[None, :]
    concentration = (mean / stddev) ** 2
    rate = mean / stddev**2
    prob = _gamma_pdf(dist.float().abs()[:, None], concentration, rate) + 1e-8
    # The TensorFlow original normalises each basis function by its max over distances; enformer-pytorch
    # (use_tf_gamma=False) normalises each distance by its max over basis functions.
    return prob / prob.amax(dim=0 if tf_normalization else -1, keepdim=True)


def positional_features(seq_len: int, n_features: int, use_tf_gamma: bool, device: torch.device) -> Tensor:
    """``[2 * seq_len - 1, n_features]`` features for distances ``-(seq_len-1) .. seq_len-1`` (fp32).

    ``use_tf_gamma`` reproduces the TensorFlow gamma normalisation; enformer-pytorch ships TF's float32 table
    instead, from which this computation differs by at most ~0.2 % (TF's float32 lgamma rounding).
    """
    if n_features % 6:
        raise ValueError(f"number of positional features {n_features} is not divisible by 6")
    per = n_features // 6
    dist = torch.arange(-seq_len + 1, seq_len, device=device)
    emb = torch.cat(
        [
            _features_exponential(dist, per, seq_len),
            _features_central_mask(dist, per),
            _features_gamma(dist, per, seq_len, use_tf_gamma),
        ],
        dim=-1,
    )
    return torch.cat((emb, torch.sign(dist)[:, None] * emb), dim=-1)


def relative_shift(x: Tensor) -> Tensor:
    """``[..., n, 2n-1]`` logits indexed by distance -> ``[..., n, n]`` indexed by key position.

    ``out[..., i, j] = x[..., i, j - i + n - 1]`` (distance ``j - i``), taken as a strided view.
    """
    *lead, n, m = x.shape
    assert m == 2 * n - 1
    x = x.contiguous()
    strides = list(x.stride())
    # Row i starts at offset (n - 1 - i) within row i of x: stride m - 1 along i, 1 along j.
    view = x.as_strided((*lead, n, n), (*strides[:-2], m - 1, 1), x.storage_offset() + n - 1)
    return view


class Attention(nn.Module):
    """Multi-head self-attention with Enformer/Transformer-XL relative position logits."""

    def __init__(
        self,
        dim: int,
        *,
        num_rel_pos_features: int,
        heads: int,
        dim_key: int,
        dim_value: int,
        dropout: float = 0.0,
        pos_dropout: float = 0.0,
        use_tf_gamma: bool = False,
    ) -> None:
        super().__init__()
        self.scale = dim_key**-0.5
        self.heads = heads
        self.dim_key = dim_key
        self.to_q = nn.Linear(dim, dim_key * heads, bias=False)
        self.to_k = nn.Linear(dim, dim_key * heads, bias=False)
        self.to_v = nn.Linear(dim, dim_value * heads, bias=False)
        self.to_out = nn.Linear(dim_value * heads, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)
        self.num_rel_pos_features = num_rel_pos_features
        self.to_rel_k = nn.Linear(num_rel_pos_features, dim_key * heads, bias=False)
        self.rel_content_bias = nn.Parameter(torch.randn(1, heads, 1, dim_key))
        self.rel_pos_bias = nn.Parameter(torch.randn(1, heads, 1, dim_key))
        self.pos_dropout = pos_dropout
        self.attn_dropout = dropout
        self.use_tf_gamma = use_tf_gamma
        # Not a buffer: it is a pure function of (length, device) and must not appear in state_dict.
        self._pos_cache: dict[tuple[int, str], Tensor] = {}

    def _positions(self, n: int, device: torch.device) -> Tensor:
        key = (n, str(device))
        pos = self._pos_cache.get(key)
        if pos is None:
            pos = positional_features(n, self.num_rel_pos_features, self.use_tf_gamma, device)
            self._pos_cache = {key: pos}  # keep only the latest length
        return pos

    def _rel_logits(self, q: Tensor, n: int, device: torch.device) -> Tensor:
        """Position logits ``q · to_rel_k(features(distance))``: ``[b, h, n, dk] -> [b, h, n, 2n-1]``."""
        positions = self._positions(n, device).to(self.to_rel_k.weight.dtype)
        if self.training and self.pos_dropout:
            positions = F.dropout(positions, self.pos_dropout)
        rel_k = self.to_rel_k(positions).view(-1, self.heads, self.dim_key).transpose(0, 1)  # [h, 2n-1, dk]
        return torch.matmul(q, rel_k.transpose(-1, -2))

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        h = self.heads
        q = self.to_q(x).view(b, n, h, -1).transpose(1, 2)
        k = self.to_k(x).view(b, n, h, -1).transpose(1, 2)
        v = self.to_v(x).view(b, n, h, -1).transpose(1, 2)
        q = q * self.scale

        bias = relative_shift(self._rel_logits(q + self.rel_pos_bias, n, x.device))

        qc = q + self.rel_content_bias
        if x.device.type == "cpu" and qc.dtype == torch.float32 and not self.training and _inplace_ok():
            # On CPUs SDPA takes its math fallback with a float mask (extra passes for scaling and fully
            # masked rows); adding the bias inside the GEMM (baddbmm) is the same arithmetic, ~1.4x faster.
            # Reduced precision keeps SDPA, which accumulates the softmax in fp32. Its in-place softmax has no
            # gradient: attributions (autograd on) take SDPA.
            if bias.dtype == k.dtype == torch.float32:
                # Everything in one buffer: a fresh allocation of this size costs more in page faults than
                # the softmax itself (Borzoi: 0.5 GB of logits per layer).
                logits = bias.reshape(b * h, n, n).contiguous()
                logits.baddbmm_(qc.reshape(b * h, n, -1), k.reshape(b * h, n, -1).mT)
                torch.ops.aten._softmax.out(logits, -1, False, out=logits)
            else:  # CPU autocast: baddbmm casts its inputs, the in-place form would not
                logits = torch.baddbmm(bias.reshape(b * h, n, n), qc.reshape(b * h, n, -1), k.reshape(b * h, n, -1).mT)
                logits = logits.softmax(dim=-1)
            out = torch.bmm(logits, v.reshape(b * h, n, -1))
            return self.to_out(out.view(b, h, n, -1).transpose(1, 2).reshape(b, n, -1))
        # SDPA computes softmax(qc k^T * scale + mask) v; with scale 1 that is exactly Enformer's
        # softmax((q*s + r_c) k^T + rel_logits) v.
        out = F.scaled_dot_product_attention(
            qc,
            k,
            v,
            attn_mask=bias.to(qc.dtype),
            dropout_p=self.attn_dropout if self.training else 0.0,
            scale=1.0,
        )
        out = out.transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


class _TransformerBlock(nn.Sequential):
    """Residual(LN, Attention, Dropout) then Residual(LN, Linear, Dropout, ReLU, Linear, Dropout)."""

    def __init__(self, cfg: EnformerConfig) -> None:
        attn = Attention(
            cfg.dim,
            heads=cfg.heads,
            dim_key=cfg.attn_dim_key,
            dim_value=cfg.dim // cfg.heads,
            dropout=cfg.attn_dropout,
            pos_dropout=cfg.pos_dropout,
            num_rel_pos_features=cfg.dim // cfg.heads,
            use_tf_gamma=cfg.use_tf_gamma,
        )
        super().__init__(
            _Residual(nn.Sequential(nn.LayerNorm(cfg.dim), attn, nn.Dropout(cfg.dropout_rate))),
            _Residual(
                nn.Sequential(
                    nn.LayerNorm(cfg.dim),
                    nn.Linear(cfg.dim, cfg.dim * 2),
                    nn.Dropout(cfg.dropout_rate),
                    nn.ReLU(),
                    nn.Linear(cfg.dim * 2, cfg.dim),
                    nn.Dropout(cfg.dropout_rate),
                )
            ),
        )


# forward_near's limit: changes spread over more bases than this take the full forward.
NEAR_MAX_SPAN = 8192


class Enformer(nn.Module):
    """Enformer. ``forward(x [B, L, 4]) -> {head: [B, target_length, n_tracks]}`` (or one head's tensor)."""

    def __init__(self, config: EnformerConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        dim, half = config.dim, config.dim // 2
        filters = config.filter_list()

        self.stem = nn.Sequential(
            nn.Conv1d(4, half, 15, padding=7),
            _Residual(_conv_block(half, half, 1)),
            AttentionPool(half),
        )
        self.conv_tower = nn.Sequential(
            *[
                nn.Sequential(
                    _conv_block(d_in, d_out, 5),
                    _Residual(_conv_block(d_out, d_out, 1)),
                    AttentionPool(d_out),
                )
                for d_in, d_out in zip(filters[:-1], filters[1:], strict=True)
            ]
        )
        self.transformer = nn.Sequential(*[_TransformerBlock(config) for _ in range(config.depth)])
        self.final_pointwise = nn.Sequential(
            _Layout(),
            _conv_block(filters[-1], dim * 2, 1),
            _Layout(),
            nn.Dropout(config.dropout_rate / 8),
            _GELU(),
        )
        # enformer-pytorch's trunk Sequential; it makes every parameter also appear as `_trunk.<i>.*` in
        # state_dict, which checkpoints saved by torch.save(state_dict) carry.
        self._trunk = nn.Sequential(
            _Layout(),
            self.stem,
            self.conv_tower,
            _Layout(),
            self.transformer,
            _Layout(),
            self.final_pointwise,
        )
        self._heads = nn.ModuleDict(
            {
                name: nn.Sequential(nn.Linear(dim * 2, n), nn.Softplus())
                for name, n in config.output_heads.items()
            }
        )

    @property
    def geometry(self) -> Geometry:
        """Enformer's input length is fixed by training; bins and bin size follow the config."""
        return Geometry(input_length=SEQUENCE_LENGTH, bin_size=self.config.bin_size,
                        output_bins=self.config.target_length)

    @property
    def head_names(self) -> list[str]:
        return list(self._heads.keys())

    def n_tracks(self, head: str) -> int:
        return self.config.output_heads[head]

    def _crop(self, x: Tensor) -> Tensor:
        target = self.config.target_length
        if target == -1:
            return x
        n = x.shape[1]
        if n < target:
            raise ValueError(f"sequence length {n} bins is less than target length {target}")
        trim = (n - target) // 2
        return x[:, trim : trim + target] if trim else x

    def tower(self, x: Tensor) -> Tensor:
        """One-hot ``[B, L, 4]`` -> the convolutional stem and tower's output ``[B, channels, L / bin_size]``.

        Local: tower bin ``j`` depends only on input bases within ``tower_radius`` bp of ``[j, j + 1) * bin_size``
        (the stem's width-15 convolution, then one width-5 convolution per halving), which ``forward_near``
        relies on."""
        return self.conv_tower(self.stem(x.transpose(1, 2)))

    @property
    def tower_radius(self) -> int:
        """Bases beyond a tower bin's own ``bin_size`` that its value depends on, each side."""
        return 7 + sum(2 * 2**k for k in range(1, self.config.num_downsamples))

    def forward_near(self, x: Tensor, reference: Tensor, reference_tower: Tensor, head: str) -> Tensor:
        """``forward(x, head)`` for inputs ``[B, L, 4]`` that differ from ``reference`` ``[1, L, 4]`` only in a
        short stretch (mutants of one window): the tower is recomputed only on a crop around the changed bases
        and spliced into ``reference_tower`` (``tower(reference)``); the transformer and heads run in full.

        The full forward's arithmetic, equal up to floating-point rounding (the spliced bins come from
        convolutions over a shorter input): the splice takes only tower bins whose inputs lie wholly inside the
        crop or reach a true end of the input. Inputs whose changes span more than ``NEAR_MAX_SPAN`` bp (an
        insertion shifts everything after it) take the full forward.
        """
        changed = torch.nonzero((x != reference).any(dim=-1).any(dim=0)).flatten()
        if changed.numel() == 0:
            return self._from_tower(reference_tower.expand(x.shape[0], -1, -1), head)
        lo, hi = int(changed[0]), int(changed[-1]) + 1
        if hi - lo > NEAR_MAX_SPAN:
            return self(x, head=head)
        return self._from_tower(self._splice(x, lo, hi, reference_tower.expand(x.shape[0], -1, -1).clone()), head)

    def forward_focused(self, x: Tensor, lo: int, hi: int, head: str) -> Tensor:
        """``forward(x, head)`` for the gradient with respect to input positions ``[lo, hi)`` (attribution).

        The values are the full forward's (up to floating-point rounding); the autograd graph reaches the input only
        through a crop around ``[lo, hi)``: the tower runs over the whole input without a graph, and again, with
        one, over the crop, spliced in as in ``forward_near`` (every tower bin that ``[lo, hi)`` reaches, each from
        inputs wholly inside the crop). So ``∂/∂x`` is exact on ``[lo, hi)`` (partial near the crop's edges, zero
        outside it), and the full-length activations, most of a backward pass's memory and work, are never kept.
        """
        with torch.no_grad():
            tower = self.tower(x)
        return self._from_tower(self._splice(x, lo, hi, tower), head)

    def _splice(self, x: Tensor, lo: int, hi: int, tower: Tensor) -> Tensor:
        """``tower`` (the tower of an input equal to ``x`` away from ``[lo, hi)``) with the bins that input positions
        ``[lo, hi)`` reach recomputed from ``x`` over a crop; written in place."""
        size, radius, length = self.config.bin_size, self.tower_radius, x.shape[1]
        n_bins = tower.shape[-1]
        first = max(0, (lo - radius) // size - 1)  # tower bins the change can reach, with a bin to spare
        last = min(n_bins, -(-(hi + radius) // size) + 1)
        start = max(0, ((first * size - radius) // size - 1) * size)  # their inputs, whole bins, one to spare
        end = min(length, (-(-(last * size + radius) // size) + 1) * size)
        local = self.tower(x[:, start:end])
        tower[:, :, first:last] = local[:, :, first - start // size : last - start // size].to(tower.dtype)
        return tower

    def _from_tower(self, tower: Tensor, head: str) -> Tensor:
        return self._heads[head](self._after_tower(tower.transpose(1, 2).contiguous()))

    def trunk(self, x: Tensor) -> Tensor:
        """One-hot ``[B, L, 4]`` -> embeddings ``[B, target_length, 2 * dim]``."""
        return self._after_tower(self.tower(x).transpose(1, 2).contiguous())

    def _after_tower(self, x: Tensor) -> Tensor:
        """Tower output, channels-last ``[B, n, channels]`` -> embeddings ``[B, target_length, 2 * dim]``."""
        x = self.transformer(x)
        x = self._crop(x)
        block = self.final_pointwise[1]
        # Pointwise conv on channels-last is a Linear: avoids two transposes of the cropped activations.
        bn, conv = block[0], block[2]
        if bn.training:
            x = F.linear(_gelu(bn(x.transpose(1, 2)).transpose(1, 2)), conv.weight[:, :, 0], conv.bias)
        else:
            x = _bn_gelu_scaled(bn, x.transpose(1, 2)).transpose(1, 2)
            x = F.linear(x, conv.weight[:, :, 0] / GELU_ALPHA, conv.bias)
        x = self.final_pointwise[3](x)
        return _gelu(x)

    def forward(self, x: Tensor, head: str | None = None) -> Tensor | dict[str, Tensor]:
        if x.ndim != 3 or x.shape[-1] != 4:
            raise ValueError(f"expected one-hot input [batch, length, 4], got shape {tuple(x.shape)}")
        emb = self.trunk(x)
        if head is not None:
            if head not in self._heads:
                raise KeyError(f"unknown head {head!r}; model heads: {self.head_names}")
            return self._heads[head](emb)
        return {name: mod(emb) for name, mod in self._heads.items()}


@torch.no_grad()
def calibrate_batchnorm(model: Enformer, batches: list[Tensor]) -> None:
    """Set every BatchNorm's running statistics to the statistics of ``batches`` (one-hot ``[B, L, 4]``).

    A data-dependent initialisation for randomly initialised models (demo model, tests): with default
    running statistics the signal shrinks through the conv tower and predictions become nearly constant
    along the sequence. Only BatchNorm layers switch to training mode, so dropout stays off.
    """
    was_training = model.training
    model.eval()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
        m.train()
    for x in batches:
        model.trunk(x)
    for m in norms:
        m.momentum = 0.1
        m.eval()
    model.train(was_training)


# ----------------------------------------------------------------------------------------------------
# Checkpoints (the weights' name mapping is ``families.EnformerFamily.load_weights``)


def canonical_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """State dict without the ``_trunk.*`` aliases (what we save: safetensors refuses shared tensors)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("_trunk.")}


def _enformer_config(raw: dict[str, Any], use_tf_gamma: bool | None) -> EnformerConfig:
    """The config of a checkpoint's ``config.json``, ``use_tf_gamma`` decided as below unless given."""
    if use_tf_gamma is None and "use_tf_gamma" not in raw:
        # The official weights (EleutherAI/enformer-official-rough) were ported from TensorFlow and saved before
        # enformer-pytorch had this field; enformer-pytorch switches it on for them by name. We decide from the
        # checkpoint itself: a config without the field, at the TF table's shape (192 features per head), is
        # such a port. Configs written by enformer-pytorch since then carry the field and are obeyed.
        dim, heads = int(raw.get("dim", 1536)), int(raw.get("heads", 8))
        use_tf_gamma = dim // heads == 192
    if use_tf_gamma is not None:
        raw = {**raw, "use_tf_gamma": use_tf_gamma}
    return EnformerConfig.from_dict(raw)
