"""Regenerate docs/demo-plot.png: the demo model over chr1:0-400,000 of the demo genome (CPU, about a minute).

    python docs/make_demo_plot.py
"""

from __future__ import annotations

import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from enformer_batch import PredictConfig, open_atlas, predict  # noqa: E402
from enformer_batch.demo import write_demo_genome  # noqa: E402
from enformer_batch.export import plot_region  # noqa: E402


def main() -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        fasta = write_demo_genome(os.path.join(tmp, "demo.fa"))
        out = os.path.join(tmp, "atlas")
        predict(PredictConfig(fasta=fasta, out=out, chroms=("chr1",), progress=False))
        # chr1 has an N run at 20-25 kb: the plot shows what the model makes of it.
        plot_region(open_atlas(out), "chr1", 0, 400_000, "0,4,8", os.path.join(ROOT, "docs", "demo-plot.png"),
                    width_px=1000, row_height_px=110)


if __name__ == "__main__":
    main()
