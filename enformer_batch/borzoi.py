"""The Borzoi model (Linder et al. 2025) and its Flashzoi variant: architecture and configuration.

Our own compact PyTorch Borzoi for inference. One window is 524,288 bp of one-hot sequence; the model
predicts 6,144 bins of 32 bp over its centre (196,608 bp):

* a stem (15-wide convolution, 512 channels, max-pool) and a conv tower of five BatchNorm/GELU/conv blocks
  with max-pooling between them, down to 32-bp resolution (1,280 channels): the U-net's first skip;
* one more pooled block at 64 bp (``dim`` channels): the second skip; then a last pool to 128 bp;
* a transformer over the 4,096 positions of 128 bp: Enformer-style relative position logits built from
  central-mask features (Borzoi), or rotary embeddings with grouped K/V heads (Flashzoi, ``flashed``);
* a U-net up-sampling path: a pointwise block, nearest-neighbour up-sampling x2, the skip (through its own
  pointwise block) added, a depthwise-separable 3-wide convolution; twice, back to 32 bp;
* a centre crop to ``bins_to_return`` bins, a pointwise block to 1,920 channels, GELU, and one softplus head
  per organism (7,611 human tracks, 2,608 mouse tracks).

Parameter names and config fields equal borzoi-pytorch's (``johahi/borzoi-replicate-*`` and
``johahi/flashzoi-replicate-*`` on Hugging Face), so those checkpoints load here. Our config is a superset:
the stem/tower/final widths and head sizes, fixed in borzoi-pytorch, are fields here (its values by default)
so a tiny demo model can keep Borzoi's full geometry. Input ``[B, L, 4]`` (channel order A, C, G, T) and
output ``[B, bins, tracks]``, like our Enformer; the final head runs in fp32 even under autocast, as in
borzoi-pytorch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import Attention, calibrate_batchnorm  # noqa: F401 - calibrate_batchnorm: also Borzoi's
from .windows import Geometry

__all__ = ["BorzoiConfig", "Borzoi", "SEQUENCE_LENGTH", "central_mask_features", "calibrate_batchnorm"]

SEQUENCE_LENGTH = 524_288
BIN_SIZE = 32
# Borzoi's positional features are scaled for the 4,096 transformer positions it was trained with.
TRAIN_POSITIONS = 4096
FULL_CROP_BINS = 16_384 - 32  # borzoi-pytorch's crop when return_center_bins_only is false
BN_EPS = 1e-3
LN_EPS = 1e-3


@dataclass(frozen=True)
class BorzoiConfig:
    """Hyper-parameters, named as in borzoi-pytorch's ``BorzoiConfig`` plus our width fields."""

    dim: int = 1536
    depth: int = 8
    heads: int = 8
    attn_dim_key: int = 64
    attn_dim_value: int = 192
    dropout_rate: float = 0.2
    attn_dropout: float = 0.05
    pos_dropout: float = 0.01
    return_center_bins_only: bool = True
    bins_to_return: int = 6144
    enable_human_head: bool = True
    enable_mouse_head: bool = False
    flashed: bool = False
    # Ours (fixed in borzoi-pytorch): widths of the stem, the five tower blocks and the final block, head
    # sizes, number of relative-position features, rotary settings of Flashzoi.
    stem_channels: int = 512
    tower_channels: tuple[int, ...] = (608, 736, 896, 1056, 1280)
    final_channels: int = 1920
    human_tracks: int = 7611
    mouse_tracks: int = 2608
    num_rel_pos_features: int = 32
    rotary_dim: int = 128
    rotary_base: float = 20_000.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BorzoiConfig:
        """Build from a config dict, ignoring unknown keys (HF adds ``architectures``, ``model_type``…)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if "tower_channels" in kwargs:
            kwargs["tower_channels"] = tuple(int(c) for c in kwargs["tower_channels"])
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tower_channels"] = list(self.tower_channels)
        return d

    def validate(self) -> None:
        if len(self.tower_channels) != 5:
            raise ValueError(f"tower_channels needs 5 widths (the 32-bp geometry), got {len(self.tower_channels)}")
        if not (self.enable_human_head or self.enable_mouse_head):
            raise ValueError("a Borzoi config needs enable_human_head or enable_mouse_head")
        if self.num_rel_pos_features % 2:
            raise ValueError("num_rel_pos_features must be even")
        if self.flashed:
            if self.dim % self.heads or self.heads % 2:
                raise ValueError(f"flashed: dim {self.dim} must divide by heads {self.heads}, heads must be even")
            if self.rotary_dim > self.dim // self.heads or self.rotary_dim % 2:
                raise ValueError(f"rotary_dim {self.rotary_dim} must be even and at most dim // heads")
        if self.output_bins > SEQUENCE_LENGTH // BIN_SIZE:
            raise ValueError(f"bins_to_return {self.bins_to_return} exceeds the {SEQUENCE_LENGTH // BIN_SIZE} bins")

    @property
    def output_heads(self) -> dict[str, int]:
        heads = {}
        if self.enable_human_head:
            heads["human"] = self.human_tracks
        if self.enable_mouse_head:
            heads["mouse"] = self.mouse_tracks
        return heads

    @property
    def output_bins(self) -> int:
        return self.bins_to_return if self.return_center_bins_only else FULL_CROP_BINS

    @property
    def geometry(self) -> Geometry:
        return Geometry(input_length=SEQUENCE_LENGTH, bin_size=BIN_SIZE, output_bins=self.output_bins)


# ----------------------------------------------------------------------------------------------------
# Building blocks. Names and nesting mirror borzoi-pytorch so state_dict keys match.


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x) + x


class _Stem(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_layer = nn.Conv1d(4, channels, 15, padding=7)
        self.max_pool = nn.MaxPool1d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.max_pool(self.conv_layer(x))


class _ConvBlock(nn.Module):
    """BatchNorm -> tanh-GELU -> Conv1d ('same' padding), channels-first ``[B, C, L]``."""

    def __init__(self, dim: int, dim_out: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, eps=BN_EPS)
        self.conv_layer = nn.Conv1d(dim, dim_out, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_layer(F.gelu(self.norm(x), approximate="tanh"))

    def pointwise_last(self, x: Tensor) -> Tensor:
        """The same block for a 1-wide kernel on channels-last ``[B, L, C]`` (a Linear: no transposes)."""
        norm, conv = self.norm, self.conv_layer
        if norm.training:
            y = norm(x.transpose(1, 2)).transpose(1, 2)
        else:
            inv = torch.rsqrt(norm.running_var + norm.eps) * norm.weight
            y = torch.addcmul(norm.bias - norm.running_mean * inv, x, inv)
        return F.linear(F.gelu(y, approximate="tanh"), conv.weight[:, :, 0], conv.bias)


class _SeparableBlock(nn.Module):
    """Depthwise 3-wide conv (no bias) then pointwise conv; no norm or activation (Borzoi's 'separable')."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.Identity()
        self.conv_layer = nn.Sequential(
            nn.Conv1d(dim, dim, 3, groups=dim, padding=1, bias=False),
            nn.Conv1d(dim, dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_layer(x)


def _separable_range(block: _SeparableBlock, x: Tensor, start: int, lo: int, hi: int, n: int) -> Tensor:
    """``block`` over positions ``[lo, hi)`` of a length-``n`` sequence, from ``x`` holding ``[start, ...)``
    with one position of margin each side where the sequence has one (zeros, as 'same' padding, past its
    ends)."""
    x = F.pad(x, (1 if lo == 0 else 0, 1 if hi == n else 0))
    begin = lo - 1 - (start - (1 if lo == 0 else 0))
    x = x[..., begin : begin + hi - lo + 2]
    depthwise, pointwise = block.conv_layer
    return pointwise(F.conv1d(x, depthwise.weight, None, groups=depthwise.groups))


def central_mask_features(seq_len: int, n_features: int, device: torch.device) -> Tensor:
    """``[2 * seq_len - 1, n_features]`` Borzoi positional features for distances ``-(seq_len-1)..seq_len-1``.

    Half are central masks (1 where ``|distance|`` is below a width; widths grow geometrically so that the
    last one spans the training length), the other half the same times ``sign(distance)``.
    """
    per = n_features // 2
    dist = torch.arange(-seq_len + 1, seq_len, device=device)
    growth = math.exp(math.log(TRAIN_POSITIONS + 1) / per)
    widths = torch.pow(growth, torch.arange(1, per + 1, device=device)).float() - 1
    mask = (widths[None, :] > dist.abs()[:, None]).float()
    return torch.cat((mask, torch.sign(dist)[:, None] * mask), dim=-1)


class BorzoiAttention(Attention):
    """Enformer's relative-position attention (same parameters, same fast path) with Borzoi's features."""

    def _positions(self, n: int, device: torch.device) -> Tensor:
        key = (n, str(device))
        pos = self._pos_cache.get(key)
        if pos is None:
            pos = central_mask_features(n, self.num_rel_pos_features, device)
            self._pos_cache = {key: pos}
        return pos

    def _rel_logits(self, q: Tensor, n: int, device: torch.device) -> Tensor:
        features = self.num_rel_pos_features
        if features >= self.dim_key or (self.training and self.pos_dropout):
            return super()._rel_logits(q, n, device)
        # q · (W p) = (q W) · p: with fewer features (32) than key dimensions (64), projecting the queries onto
        # the feature space first halves the [n, 2n-1] product, the largest matmul of the attention.
        positions = self._positions(n, device).to(self.to_rel_k.weight.dtype)
        w = self.to_rel_k.weight.view(self.heads, self.dim_key, features)  # [h, dk, F]
        return torch.matmul(torch.matmul(q, w), positions.T)


def rotary(x: Tensor, rotary_dim: int, base: float) -> Tensor:
    """Rotary position embedding on the first ``rotary_dim`` features of ``x [B, h, n, d]``.

    Non-interleaved (GPT-NeoX) layout as flash-attn's default: feature ``i`` pairs with ``i + rotary_dim/2``
    and the pair is rotated by ``position * base ** (-2i / rotary_dim)``; angles are computed in fp32.
    """
    n, half = x.shape[-2], rotary_dim // 2
    inv_freq = 1.0 / base ** (torch.arange(0, rotary_dim, 2, device=x.device, dtype=torch.float32) / rotary_dim)
    angles = torch.outer(torch.arange(n, device=x.device, dtype=torch.float32), inv_freq)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2, rest = x[..., :half], x[..., half:rotary_dim], x[..., rotary_dim:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest), dim=-1)


class RotaryAttention(nn.Module):
    """Flashzoi's attention: fused QKV projection (K/V with half the heads), rotary positions, SDPA.

    Parameters sit under ``mha.Wqkv`` / ``mha.out_proj`` as in flash-attn's ``MHA`` that Flashzoi uses; the
    maths (scale ``head_dim ** -0.5``, query head ``i`` reading K/V head ``i // 2``) is the same, computed
    with PyTorch's scaled_dot_product_attention so no flash-attn is needed.
    """

    def __init__(self, dim: int, heads: int, rotary_dim: int, base: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.kv_heads = heads, heads // 2
        self.head_dim = dim // heads
        self.rotary_dim, self.base, self.dropout = rotary_dim, base, dropout
        self.mha = nn.ModuleDict(
            {
                "Wqkv": nn.Linear(dim, dim + 2 * self.kv_heads * self.head_dim),
                "out_proj": nn.Linear(dim, dim),
            }
        )

    def forward(self, x: Tensor) -> Tensor:
        b, n, dim = x.shape
        d, kvd = self.head_dim, self.kv_heads * self.head_dim
        qkv = self.mha["Wqkv"](x)
        q = qkv[..., :dim].view(b, n, self.heads, d).transpose(1, 2)
        k = qkv[..., dim : dim + kvd].view(b, n, self.kv_heads, d).transpose(1, 2)
        v = qkv[..., dim + kvd :].view(b, n, self.kv_heads, d).transpose(1, 2)
        q, k = rotary(q, self.rotary_dim, self.base), rotary(k, self.rotary_dim, self.base)
        # Query head i reads K/V head i // group (flash-attn's grouping); repeated explicitly rather than
        # SDPA's enable_gqa, which needs torch >= 2.5.
        group = self.heads // self.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.mha["out_proj"](out.transpose(1, 2).reshape(b, n, dim))


def _transformer_block(cfg: BorzoiConfig) -> nn.Sequential:
    if cfg.flashed:
        attn: nn.Module = RotaryAttention(cfg.dim, cfg.heads, cfg.rotary_dim, cfg.rotary_base, cfg.attn_dropout)
    else:
        attn = BorzoiAttention(
            cfg.dim,
            heads=cfg.heads,
            dim_key=cfg.attn_dim_key,
            dim_value=cfg.attn_dim_value,
            dropout=cfg.attn_dropout,
            pos_dropout=cfg.pos_dropout,
            num_rel_pos_features=cfg.num_rel_pos_features,
        )
    return nn.Sequential(
        _Residual(nn.Sequential(nn.LayerNorm(cfg.dim, eps=LN_EPS), attn, nn.Dropout(0.2))),
        _Residual(
            nn.Sequential(
                nn.LayerNorm(cfg.dim, eps=LN_EPS),
                nn.Linear(cfg.dim, cfg.dim * 2),
                nn.Dropout(cfg.dropout_rate),
                nn.ReLU(),
                nn.Linear(cfg.dim * 2, cfg.dim),
                nn.Dropout(cfg.dropout_rate),
            )
        ),
    )


class Borzoi(nn.Module):
    """Borzoi / Flashzoi. ``forward(x [B, L, 4]) -> {head: [B, bins, n_tracks]}`` (or one head's tensor)."""

    def __init__(self, config: BorzoiConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        dim, widths = config.dim, (config.stem_channels, *config.tower_channels)
        self.conv_dna = _Stem(config.stem_channels)
        pool = nn.MaxPool1d(2)
        tower: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
            tower += ([pool] if i else []) + [_ConvBlock(d_in, d_out, 5)]
        self.res_tower = nn.Sequential(*tower)  # blocks at 0, 2, 4, 6, 8 as in borzoi-pytorch
        self.unet1 = nn.Sequential(pool, _ConvBlock(widths[-1], dim, 5))
        self.transformer = nn.Sequential(*[_transformer_block(config) for _ in range(config.depth)])
        self.horizontal_conv0 = _ConvBlock(widths[-1], dim, 1)
        self.horizontal_conv1 = _ConvBlock(dim, dim, 1)
        self.upsampling_unet1 = nn.Sequential(_ConvBlock(dim, dim, 1), nn.Upsample(scale_factor=2))
        self.separable1 = _SeparableBlock(dim)
        self.upsampling_unet0 = nn.Sequential(_ConvBlock(dim, dim, 1), nn.Upsample(scale_factor=2))
        self.separable0 = _SeparableBlock(dim)
        self.final_joined_convs = nn.Sequential(
            _ConvBlock(dim, config.final_channels, 1), nn.Dropout(0.1), nn.GELU(approximate="tanh")
        )
        for head, n in config.output_heads.items():
            self.add_module(f"{head}_head", nn.Conv1d(config.final_channels, n, 1))

    @property
    def geometry(self) -> Geometry:
        return self.config.geometry

    @property
    def head_names(self) -> list[str]:
        return list(self.config.output_heads)

    def n_tracks(self, head: str) -> int:
        return self.config.output_heads[head]

    def trunk(self, x: Tensor) -> Tensor:
        """One-hot ``[B, L, 4]`` -> cropped embeddings ``[B, bins, final_channels]`` (after the last GELU)."""
        x = self.conv_dna(x.transpose(1, 2))
        skip0 = self.res_tower(x)  # 32 bp
        skip1 = self.unet1(skip0)  # 64 bp
        x = F.max_pool1d(skip1, 2).transpose(1, 2)  # 128 bp, channels-last for the transformer
        x = self.transformer(x)
        # Up-sampling path, computed only where the crop needs it: after the transformer every block is
        # pointwise except the two 3-wide separable convolutions, so the bins kept (6,144 of 16,384) plus a
        # one-bin margin per separable block decide what is computed. Pointwise blocks before an
        # up-sampling run at the lower resolution (nearest-neighbour up-sampling commutes with them).
        n0, n1 = skip0.shape[-1], skip1.shape[-1]
        bins = self.config.output_bins
        crop = (n0 - bins) // 2
        a0, b0 = max(crop - 1, 0), min(crop + bins + 1, n0)  # 32 bp: input of separable0
        a1, b1 = a0 // 2, (b0 + 1) // 2  # 64 bp: output of separable1
        p1, q1 = max(a1 - 1, 0), min(b1 + 1, n1)  # 64 bp: input of separable1
        a2, b2 = p1 // 2, (q1 + 1) // 2  # 128 bp: transformer output used
        u = self.upsampling_unet1[0].pointwise_last(x[:, a2:b2]).transpose(1, 2)
        y = u.repeat_interleave(2, dim=-1)[..., p1 - 2 * a2 : q1 - 2 * a2] + self.horizontal_conv1(skip1[..., p1:q1])
        y = _separable_range(self.separable1, y, p1, a1, b1, n1)
        y = self.upsampling_unet0[0](y)
        y = y.repeat_interleave(2, dim=-1)[..., a0 - 2 * a1 : b0 - 2 * a1] + self.horizontal_conv0(skip0[..., a0:b0])
        y = _separable_range(self.separable0, y, a0, crop, crop + bins, n0)
        return F.gelu(self.final_joined_convs[0].pointwise_last(y.transpose(1, 2)), approximate="tanh")

    def _head(self, name: str, emb: Tensor) -> Tensor:
        conv = getattr(self, f"{name}_head")
        # The head runs in fp32 (as borzoi-pytorch does): outputs feed sums over thousands of bins.
        with torch.autocast(emb.device.type, enabled=False):
            return F.softplus(F.linear(emb.float(), conv.weight[:, :, 0].float(), conv.bias.float()))

    def forward(self, x: Tensor, head: str | None = None) -> Tensor | dict[str, Tensor]:
        if x.ndim != 3 or x.shape[-1] != 4:
            raise ValueError(f"expected one-hot input [batch, length, 4], got shape {tuple(x.shape)}")
        emb = self.trunk(x)
        if head is not None:
            if head not in self.config.output_heads:
                raise KeyError(f"unknown head {head!r}; model heads: {self.head_names}")
            return self._head(head, emb)
        return {name: self._head(name, emb) for name in self.config.output_heads}


# ----------------------------------------------------------------------------------------------------
# Squashed target scale


def unsquash_parameters(table) -> tuple[Tensor, Tensor, Tensor]:
    """Per-track ``(scale, clip_soft, exponent)`` from a Borzoi targets table (``TrackTable``).

    Borzoi was trained on coverage transformed per track as ``y = min(x ** t, soft-clipped) * scale`` with
    ``t = 3/4`` for ``sum_sqrt`` tracks (RNA) and ``1`` otherwise, values above ``clip_soft`` compressed
    by a square root; ``unsquash_tensor`` inverts that.
    """
    cols = {name: table.column(name) for name in ("scale", "clip_soft", "sum_stat")}
    missing = [name for name, col in cols.items() if col is None]
    if missing:
        raise ValueError(f"--unsquash needs the track table columns {', '.join(missing)}, which it lacks")
    scale = torch.tensor([float(v) for v in cols["scale"]])
    clip_soft = torch.tensor([float(v) for v in cols["clip_soft"]])
    exponent = torch.tensor([0.75 if v.strip() == "sum_sqrt" else 1.0 for v in cols["sum_stat"]])
    return scale, clip_soft, exponent


def unsquash_tensor(pred: Tensor, table, params: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
    """Undo Borzoi's squashed scale on ``pred [..., tracks]`` (all of the table's tracks, head order), as
    borzoi-pytorch's ``AnnotatedBorzoi._undo_squashed_scale`` (its default, ``old_transform``) defines it:
    ``x = pred / scale``; above ``clip_soft``, ``x = (x - clip_soft)² + clip_soft``; then ``x ** (1 / t)``."""
    scale, clip_soft, exponent = (p.to(pred.device) for p in (params or unsquash_parameters(table)))
    x = pred.float() / scale
    x = torch.where(x > clip_soft, (x - clip_soft) ** 2 + clip_soft, x)
    return x ** (1.0 / exponent)
