"""Regenerate docs/demo-mutagenesis.png and docs/demo-edit.png from the demo model (CPU, a few minutes).

    python docs/make_experiment_plots.py

The demo model's weights are random: the pictures show what the commands draw, not biology.
"""

from __future__ import annotations

import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from enformer_batch.demo import write_demo_genome  # noqa: E402
from enformer_batch.export import plot_edit, plot_mutagenesis  # noqa: E402
from enformer_batch.inference import InferenceSettings  # noqa: E402
from enformer_batch.kinds.edits import edit_predictions  # noqa: E402
from enformer_batch.kinds.mutagenesis import MutagenesisConfig, mutagenesis  # noqa: E402

REGION = "chr1:24970-25030"  # the end of chr1's N run at 20-25 kb and the bases after it


def main() -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        fasta = write_demo_genome(os.path.join(tmp, "demo.fa"))
        out = os.path.join(tmp, "mutagenesis")
        mutagenesis(MutagenesisConfig(fasta=fasta, regions=REGION, out=out, progress=False))
        plot_mutagenesis(out, REGION, "DEMO0000009", os.path.join(ROOT, "docs", "demo-mutagenesis.png"),
                         width_px=1000)
        edits = os.path.join(tmp, "edits.tsv")
        with open(edits, "w") as f:
            f.write("enhancer_deletion\tchr1\t300000\t302000\t\n")
        edit, ref, alt, first_bp, info = edit_predictions(fasta, edits, "enhancer_deletion",
                                                          InferenceSettings(tracks="0,8", dtype="float32"))
        plot_edit(edit, ref, alt, first_bp, info.geometry.bin_size, info.track_names,
                  os.path.join(ROOT, "docs", "demo-edit.png"), width_px=1000, row_height_px=120)


if __name__ == "__main__":
    main()
