"""Shared fixtures: one local Ray cluster per test session, small synthetic genomes."""

from __future__ import annotations

import os

import pytest

from enformer_batch.demo import DemoChrom, write_demo_genome

# Three chromosomes that between them hit every edge of the contract at the full Enformer geometry:
# skipped all-N windows (chrA from 60 kb on), a short last bin (chrB: 130,000 = 1015*128 + 80), and a
# contig shorter than a bin's worth of windows (contig_s: 1,000 bp, one window, mostly padding).
TEST_GENOME = (
    DemoChrom("chrA", 300_007, ((60_000, 300_007),)),
    DemoChrom("chrB", 130_000, ((5_000, 6_000),)),
    DemoChrom("contig_s", 1_000),
)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster: explicit CPUs, two fake GPUs for actor placement, a small object store."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(
        num_cpus=4,
        num_gpus=2,
        object_store_memory=160 * 1024**2,
        include_dashboard=False,
        logging_level="WARNING",
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def test_fasta(tmp_path_factory) -> str:
    return write_demo_genome(str(tmp_path_factory.mktemp("genome") / "test.fa"), TEST_GENOME)
