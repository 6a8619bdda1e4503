"""Generate the packaged demo checkpoint ``enformer_batch/demo_model/`` (deterministic, seeded).

The demo model is Enformer at full geometry (196,608 bp in, 896 bins of 128 bp out) at a tiny width, with
random weights and BatchNorm statistics calibrated on random sequence so that its predictions vary along
the sequence. It is saved exactly like real weights: ``config.json`` + ``model.safetensors`` (enformer-pytorch
parameter names) + ``targets_human.txt`` / ``targets_mouse.txt`` (made-up Basenji-style track tables).

Usage: ``python tools/make_demo_model.py [OUT_DIR]``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
    main(sys.argv[1] if len(sys.argv) > 1 else None)
