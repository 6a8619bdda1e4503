"""Generate the packaged demo checkpoint ``enformer_batch/demo_model/`` (deterministic, seeded).

The demo model is Enformer at full geometry (196,608 bp in, 896 bins of 128 bp out) at a tiny width, with
random weights and BatchNorm statistics calibrated on random sequence so that its predictions vary along
the sequence. It is saved exactly like real weights: ``config.json`` + ``model.safetensors`` (enformer-pytorch
parameter names) + ``targets_human.txt`` / ``targets_mouse.txt`` (made-up Basenji-style track tables).

The demo Borzoi (``enformer_batch/demo_borzoi/``, ``--model demo-borzoi``) is made the same way: Borzoi's
full geometry (524,288 bp in, 6,144 bins of 32 bp out) with every width reduced (tower, transformer, final
block: our config fields beyond borzoi-pytorch's), 12 human tracks in Borzoi's table layout with strand
pairs and squash parameters, and 4 mouse tracks.

Usage: ``python tools/make_demo_model.py [--borzoi] [OUT_DIR]``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enformer_batch import borzoi  # noqa: E402
from enformer_batch.model import (  # noqa: E402
    SEQUENCE_LENGTH,
    Enformer,
    EnformerConfig,
    calibrate_batchnorm,
    canonical_state_dict,
)
from enformer_batch.tracks import TrackTable, write_track_table  # noqa: E402

SEED = 20240611
CONFIG = EnformerConfig(
    dim=48,
    depth=1,
    heads=2,
    attn_dim_key=16,
    dim_divisible_by=8,
    output_heads={"human": 12, "mouse": 4},
    dropout_rate=0.0,
    attn_dropout=0.0,
    pos_dropout=0.0,
)

HUMAN_TRACKS = [
    ("DEMO0000001", "DNASE:demo cell 1"),
    ("DEMO0000002", "DNASE:demo cell 2"),
    ("DEMO0000003", "DNASE:demo tissue 3"),
    ("DEMO0000004", "DNASE:demo tissue 4"),
    ("DEMO0000005", "CHIP:H3K4me3:demo cell 1"),
    ("DEMO0000006", "CHIP:H3K27ac:demo cell 1"),
    ("DEMO0000007", "CHIP:CTCF:demo cell 2"),
    ("DEMO0000008", "CHIP:H3K27me3:demo tissue 3"),
    ("DEMO0000009", "CAGE:demo cell 1"),
    ("DEMO0000010", "CAGE:demo cell 2"),
    ("DEMO0000011", "CAGE:demo tissue 3"),
    ("DEMO0000012", "CAGE:demo tissue 4"),
]
MOUSE_TRACKS = [
    ("DEMOM000001", "DNASE:demo mouse cell 1"),
    ("DEMOM000002", "CHIP:H3K4me3:demo mouse cell 1"),
    ("DEMOM000003", "CAGE:demo mouse tissue 1"),
    ("DEMOM000004", "CAGE:demo mouse tissue 2"),
]


def build() -> Enformer:
    torch.manual_seed(SEED)
    model = Enformer(CONFIG)
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        # Attention output projections start at zero in Enformer; give them (and biases) random values so
        # the transformer contributes, and widen the heads so tracks differ visibly from each other.
        for name, p in canonical_state_dict(model).items():
            if name.endswith(("to_out.weight", "bias")) and p.is_floating_point():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            if name.startswith("_heads.") and name.endswith("weight"):
                p.mul_(3.0)
        calib = torch.nn.functional.one_hot(torch.randint(0, 4, (2, SEQUENCE_LENGTH), generator=g), 4).float()
    calibrate_batchnorm(model, [calib[:1], calib[1:]])
    return model.eval()


BORZOI_CONFIG = borzoi.BorzoiConfig(
    dim=32,
    depth=1,
    heads=2,
    attn_dim_key=8,
    attn_dim_value=16,
    dropout_rate=0.0,
    attn_dropout=0.0,
    pos_dropout=0.0,
    enable_mouse_head=True,
    stem_channels=16,
    tower_channels=(16, 20, 24, 28, 32),
    final_channels=32,
    human_tracks=12,
    mouse_tracks=4,
)
# (identifier, description, clip_soft, scale, sum_stat, strand pair offset: +1 / -1 / 0 unstranded)
BORZOI_HUMAN_TRACKS = [
    ("DEMOB01+", "CAGE:demo cell 1", "384", "1.0", "sum", 1),
    ("DEMOB01-", "CAGE:demo cell 1", "384", "1.0", "sum", -1),
    ("DEMOB02+", "CAGE:demo tissue 2", "384", "1.0", "sum", 1),
    ("DEMOB02-", "CAGE:demo tissue 2", "384", "1.0", "sum", -1),
    ("DEMOB03+", "RNA:demo tissue 3", "384", "0.3", "sum_sqrt", 1),
    ("DEMOB03-", "RNA:demo tissue 3", "384", "0.3", "sum_sqrt", -1),
    ("DEMOB04+", "RNA:demo cell 4", "384", "0.3", "sum_sqrt", 1),
    ("DEMOB04-", "RNA:demo cell 4", "384", "0.3", "sum_sqrt", -1),
    ("DEMOB05", "DNASE:demo cell 5", "32", "2.0", "mean", 0),
    ("DEMOB06", "ATAC:demo tissue 6", "32", "2.0", "mean", 0),
    ("DEMOB07", "CHIP:H3K27ac:demo cell 5", "32", "2.0", "mean", 0),
    ("DEMOB08", "CHIP:CTCF:demo cell 5", "32", "2.0", "mean", 0),
]


def build_borzoi() -> borzoi.Borzoi:
    torch.manual_seed(SEED)
    model = borzoi.Borzoi(BORZOI_CONFIG)
    g = torch.Generator().manual_seed(SEED + 2)
    with torch.no_grad():
        # Random weights at unit gain, random biases and norm affines: outputs then vary along the sequence
        # by a sizeable fraction of their mean once BatchNorm statistics are calibrated.
        for name, p in model.named_parameters():
            if name.endswith("bias") or "rel_" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
        calib = torch.nn.functional.one_hot(torch.randint(0, 4, (1, borzoi.SEQUENCE_LENGTH), generator=g), 4)
    borzoi.calibrate_batchnorm(model, [calib.float()])
    return model.eval()


def borzoi_track_table() -> TrackTable:
    rows, extra = [], []
    for i, (ident, desc, clip_soft, scale, sum_stat, pair) in enumerate(BORZOI_HUMAN_TRACKS):
        rows.append((ident, desc))
        extra.append({"file": f"{ident}.w5", "clip": "768" if pair else "32", "clip_soft": clip_soft,
                      "scale": scale, "sum_stat": sum_stat, "strand_pair": str(i + pair)})
    return TrackTable(tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple(extra))


def main_borzoi(out_dir: str | None = None) -> None:
    out = Path(out_dir) if out_dir else Path(__file__).resolve().parents[1] / "enformer_batch" / "demo_borzoi"
    out.mkdir(parents=True, exist_ok=True)
    model = build_borzoi()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt", "seed": str(SEED)})
    config = {**BORZOI_CONFIG.to_dict(), "architectures": ["Borzoi"], "model_type": "borzoi"}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    write_track_table(borzoi_track_table(), out / "targets_human.txt")
    write_track_table(TrackTable.from_rows(MOUSE_TRACKS), out / "targets_mouse.txt")
    print(f"wrote {out}")


def main(out_dir: str | None = None) -> None:
    out = Path(out_dir) if out_dir else Path(__file__).resolve().parents[1] / "enformer_batch" / "demo_model"
    out.mkdir(parents=True, exist_ok=True)
    model = build()
    state = {k: v.contiguous() for k, v in canonical_state_dict(model).items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt", "seed": str(SEED)})
    config = {**CONFIG.to_dict(), "architectures": ["Enformer"], "model_type": "enformer"}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    write_track_table(TrackTable.from_rows(HUMAN_TRACKS), out / "targets_human.txt")
    write_track_table(TrackTable.from_rows(MOUSE_TRACKS), out / "targets_mouse.txt")
    print(f"wrote {out}")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--borzoi"]:
        main_borzoi(args[1] if len(args) > 1 else None)
    else:
        main(args[0] if args else None)
