"""Regenerate docs/attribution-logo.png from the demo model (CPU, about a minute).

    python docs/make_attribution_logo.py

The demo model's weights are random: the picture shows what ``plot-attribution`` draws, not biology.
"""

from __future__ import annotations

import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from enformer_batch import AttributionConfig, attribute  # noqa: E402
from enformer_batch.demo import write_demo_genome  # noqa: E402
from enformer_batch.export import plot_attribution  # noqa: E402

REGION = "chr1:24980-25060"  # the end of chr1's N run at 20-25 kb (no contribution) and the bases after it


def main() -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        fasta = write_demo_genome(os.path.join(tmp, "demo.fa"))
        out = os.path.join(tmp, "attribution")
        attribute(AttributionConfig(fasta=fasta, regions=REGION, out=out, tracks="DEMO0000009", target="region",
                                    log=True, rc=True, progress=False))
        plot_attribution(out, REGION, os.path.join(ROOT, "docs", "attribution-logo.png"), width_px=1200,
                         height_px=320)


if __name__ == "__main__":
    main()
