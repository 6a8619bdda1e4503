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
        address="local",  # a new cluster even if a `ray start` head (the jobs test's) is running
        num_cpus=4,
        num_gpus=2,
        object_store_memory=160 * 1024**2,
        include_dashboard=False,
        logging_level="WARNING",
        configure_logging=False,
        log_to_driver=False,  # worker output would land in tests that read the driver's stderr
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def test_fasta(tmp_path_factory) -> str:
    return write_demo_genome(str(tmp_path_factory.mktemp("genome") / "test.fa"), TEST_GENOME)


def run_and_validate(fasta: str, out, **kw):
    """Predict into ``out`` with the session cluster and check the atlas with ``validate``."""
    from enformer_batch import PredictConfig, predict, validate

    summary = predict(PredictConfig(fasta=fasta, out=str(out), progress=False, **kw))
    report = validate(str(out), fasta=fasta)
    assert report.ok, report.table()
    return summary


@pytest.fixture(scope="session")
def reference_atlas(ray_cluster, test_fasta, tmp_path_factory):
    """The whole test genome in float32, run once per session; other runs compare against it.

    One torch thread per replica: on CPUs the thread count changes the reduction order (the last bits of
    fp32 results), so runs compared bit-for-bit pin it.
    """
    out = tmp_path_factory.mktemp("atlas") / "reference"
    run_and_validate(test_fasta, out, dtype="float32", batch_size=2, threads_per_worker=1)
    return out


def read_atlas(out) -> dict:
    """Every row of an atlas via DuckDB (an independent reader), ordered by chrom and start."""
    import duckdb

    return duckdb.sql(
        f"select * from read_parquet('{out}/*/*.parquet', hive_partitioning=true) order by chrom, start"
    ).fetchnumpy()


@pytest.fixture(scope="session")
def real_genes() -> dict[str, str]:
    """The real chr20 genome and gene models (tools/fetch_real_data.sh); the test fetches them where
    ``make test`` has not, and is skipped, saying why, only where no package registry can be reached."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data = os.path.join(repo, ".real-data")
    names = ("20.fa.gz", "4.vcf.gz", "20.genes.gtf.gz", "20.genes.gff3.gz", "20.genes.spliceai.txt")
    if not all(os.path.exists(os.path.join(data, n)) for n in names):
        done = subprocess.run(["bash", os.path.join(repo, "tools", "fetch_real_data.sh"), data],
                              capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
        if not all(os.path.exists(os.path.join(data, n)) for n in names):
            pytest.skip(f"real chr20 gene models unavailable: {done.stderr.strip()}")
    return {n: os.path.join(data, n) for n in names}


# --- the Enformer oracle: enformer-pytorch on the demo checkpoint's weights -------------------------------------


@pytest.fixture(scope="session")
def oracle_model():
    """enformer-pytorch built from the demo checkpoint's config, with its weights: the reference implementation
    the numerics tests compare with."""
    ep = pytest.importorskip("enformer_pytorch")
    from enformer_batch.loader import load_model

    loaded = load_model("demo")
    reference = ep.Enformer.from_hparams(**{k: v for k, v in loaded.config.to_dict().items()
                                            if k not in ("architectures", "model_type")}).eval()
    reference.load_state_dict(loaded.model.state_dict())
    return reference


@pytest.fixture(scope="session")
def oracle_predict(oracle_model):
    """enformer-pytorch's human head on a sequence or its reverse complement (mirrored back), float64; each
    computed once per session: the forward and rc cases share their forward passes, the alleles of a
    multi-allelic record their reference."""
    import numpy as np
    import torch

    from .reference import onehot

    done: dict[tuple[str, bool], np.ndarray] = {}

    def predict(seq: str, reverse: bool) -> np.ndarray:
        if (seq, reverse) not in done:
            x = torch.from_numpy(onehot(seq))[None]
            with torch.no_grad():
                out = oracle_model(x.flip(1).flip(2) if reverse else x, head="human").double().numpy()[0]
            done[seq, reverse] = out[::-1] if reverse else out
        return done[seq, reverse]

    return predict
