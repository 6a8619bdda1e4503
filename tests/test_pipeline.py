"""End to end on a real local Ray cluster: genome → atlas, read back by DuckDB and pyarrow.dataset."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch

from enformer_batch.loader import load_model

from .conftest import TEST_GENOME, read_atlas, run_and_validate
from .reference import BIN, SPAN, onehot, owner_of_bins, parse_fasta, window_input


def values(rows, col) -> np.ndarray:
    """A track column as float64 with NaN for nulls (DuckDB returns nulls as a masked array)."""
    return np.ma.filled(np.ma.asarray(rows[col]).astype(np.float64), np.nan)


def track_columns(rows) -> list[str]:
    return [k for k in rows if k not in ("chrom", "start", "end")]


def run(test_fasta, out, **kw) -> dict:
    run_and_validate(test_fasta, out, **kw)
    return read_atlas(out)


@pytest.fixture(scope="module")
def genome_run(reference_atlas):
    return reference_atlas, read_atlas(reference_atlas)


def test_every_bin_written_exactly_once(genome_run):
    _, rows = genome_run
    for chrom in TEST_GENOME:
        mine = rows["chrom"] == chrom.name
        starts = rows["start"][mine]
        n = -(-chrom.length // BIN)
        assert len(starts) == n
        assert np.array_equal(starts, np.arange(n) * BIN)  # sorted, no duplicate, none missing
        assert rows["end"][mine][-1] == chrom.length
        assert np.array_equal(rows["end"][mine][:-1], starts[1:])


def assert_contract_values(rows, fasta: str, chroms, stride: int) -> None:
    """Every row equals a direct model call on the window the contract assigns to its bin."""
    model = load_model("demo").model.eval()
    seqs = parse_fasta(fasta)
    for chrom in chroms:
        mine = rows["chrom"] == chrom.name
        block = np.stack([values(rows, c)[mine] for c in track_columns(rows)], axis=1)
        owners = owner_of_bins(chrom.length, stride)
        assert len(block) == len(owners)
        for k in sorted(set(owners)):
            window = window_input(seqs[chrom.name], k, stride)
            bins = [b for b, o in enumerate(owners) if o == k]
            if set(window) == {"N"}:
                assert np.isnan(block[bins]).all(), f"{chrom.name} window {k} is all N: nulls expected"
                continue
            with torch.no_grad():
                ref = model(torch.from_numpy(onehot(window))[None], head="human")[0].numpy()
            expected = ref[[b - k * (stride // BIN) for b in bins]]
            np.testing.assert_allclose(block[bins], expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_values_equal_the_model_on_the_contract_windows(genome_run, test_fasta):
    _, rows = genome_run
    assert_contract_values(rows, test_fasta, TEST_GENOME, SPAN)


def test_a_small_stride_keeps_the_contract_with_bins_dropped_on_the_device(ray_cluster, test_fasta, tmp_path):
    """At a stride of 40 bins a window writes only its central 40 (ends excepted); the rest never leaves the
    device, and every bin still comes from the window the contract assigns to it."""
    chroms = [c for c in TEST_GENOME if c.name in ("chrB", "contig_s")]
    rows = run(test_fasta, tmp_path / "atlas", chroms=[c.name for c in chroms], stride=40 * BIN, dtype="float32",
               windows_per_part=3)
    assert_contract_values(rows, test_fasta, chroms, 40 * BIN)


def test_skipped_windows_are_null_and_others_are_not(genome_run):
    _, rows = genome_run
    for col in track_columns(rows):
        v = values(rows, col)
        on_a = rows["chrom"] == "chrA"
        # chrA is N from 60,000 on: windows 1 and 2 (inputs from 73,728) are skipped, window 0 is not.
        assert not np.isnan(v[on_a & (rows["start"] < SPAN)]).any()
        assert np.isnan(v[on_a & (rows["start"] >= SPAN)]).all()
        assert not np.isnan(v[rows["chrom"] != "chrA"]).any()


def test_manifest_records_the_run(genome_run, test_fasta):
    out, _ = genome_run
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["status"] == "complete" and (out / "_SUCCESS").exists()
    identity = manifest["identity"]
    assert identity["fasta"]["chromosomes"] == {c.name: c.length for c in TEST_GENOME}
    assert identity["geometry"] == {"input_length": 196_608, "bin_size": 128, "output_bins": 896}
    assert identity["stride"] == SPAN and identity["dtype"] == "float32" and identity["precision"] == "fp32"
    assert identity["model"]["weights_sha256"] == load_model("demo").weights_sha256
    assert sum(p["rows"] for p in manifest["parts"]) == sum(-(-c.length // BIN) for c in TEST_GENOME)
    assert all(p["path"].startswith(f"chrom={p['chrom']}/part-") for p in manifest["parts"])


def test_pyarrow_dataset_reads_the_hive_layout(genome_run):
    out, rows = genome_run
    table = ds.dataset(str(out), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == len(rows["start"])
    assert set(table.column("chrom").to_pylist()) == {c.name for c in TEST_GENOME}
    assert table.schema.field("start").type == "int64"


def test_region_run_gives_the_genome_rows_for_its_bins(genome_run, test_fasta, tmp_path):
    _, whole = genome_run
    bed = tmp_path / "regions.bed"
    bed.write_text("chrB\t1000\t1300\nchrB\t120000\t130000\nchrA\t0\t129\n")
    rows = run(test_fasta, tmp_path / "regions", dtype="float32", regions=str(bed), batch_size=3,
               threads_per_worker=1)
    keys = set(zip(rows["chrom"], rows["start"]))
    expected = {("chrB", s) for s in range(896, 1300, BIN)} | {("chrB", s) for s in range(119_936, 130_000, BIN)}
    expected |= {("chrA", 0), ("chrA", 128)}
    assert keys == expected
    index = {(c, s): i for i, (c, s) in enumerate(zip(whole["chrom"], whole["start"]))}
    for col in track_columns(rows):
        theirs = values(whole, col)[[index[k] for k in zip(rows["chrom"], rows["start"])]]
        np.testing.assert_array_equal(values(rows, col), theirs)


def test_workers_and_batch_size_do_not_change_predictions(genome_run, test_fasta, tmp_path):
    _, whole = genome_run
    # The reference ran 2 replicas at batch 2; this is 1 replica at batch 1, then 2 replicas at batch 3.
    rows = run(test_fasta, tmp_path / "w1b1", dtype="float32", workers=1, batch_size=1, chroms=("chrA", "chrB"),
               threads_per_worker=1)
    mine = np.isin(whole["chrom"], ["chrA", "chrB"])
    for col in track_columns(rows):
        np.testing.assert_array_equal(values(rows, col), values(whole, col)[mine])
    rows = run(test_fasta, tmp_path / "w2b3", dtype="float32", workers=2, batch_size=3, threads_per_worker=1)
    for col in track_columns(rows):
        np.testing.assert_array_equal(values(rows, col), values(whole, col))


def test_float16_atlas_is_the_rounded_float32_atlas(genome_run, test_fasta, tmp_path):
    _, whole = genome_run
    rows = run(test_fasta, tmp_path / "f16", chroms=("chrB",), batch_size=3, threads_per_worker=1)
    table = ds.dataset(str(tmp_path / "f16"), format="parquet", partitioning="hive").to_table()
    mine = whole["chrom"] == "chrB"
    for col in track_columns(rows):
        assert str(table.schema.field(col).type) == "halffloat"
        np.testing.assert_array_equal(values(rows, col), values(whole, col)[mine].astype(np.float16))


def test_rc_run_on_the_reverse_complemented_chromosome_is_the_mirror_image(ray_cluster, tmp_path):
    """--rc makes predictions strand-symmetric: the reverse-complement chromosome gives the mirrored track."""
    from enformer_batch.demo import DemoChrom, chrom_sequence, write_fasta

    length = 2 * SPAN  # whole windows, so the tiling of the reversed chromosome mirrors the forward one
    forward = chrom_sequence(DemoChrom("fwd", length, ((150_000, 152_000),)), seed=3)
    reverse = forward[::-1].translate(bytes.maketrans(b"ACGTacgtN", b"TGCAtgcaN"))
    fasta = write_fasta(str(tmp_path / "pair.fa"), [("fwd", forward), ("rev", reverse)])
    rows = run(fasta, tmp_path / "rc", dtype="float32", rc=True, threads_per_worker=1)
    fwd, rev = rows["chrom"] == "fwd", rows["chrom"] == "rev"
    for col in track_columns(rows):
        np.testing.assert_allclose(values(rows, col)[rev], values(rows, col)[fwd][::-1], rtol=1e-5, atol=1e-6)


def test_demo_summary_describes_the_atlas(genome_run):
    from enformer_batch.demo import show_atlas

    out, _ = genome_run
    text = show_atlas(str(out))
    assert "chrA: 2,344 bins, last ends at 300,007, 1,448 null (all-N windows)" in text
    assert "contig_s: 8 bins, last ends at 1,000" in text and "read_parquet(" in text


def test_one_replica_per_gpu_each_on_its_own_gpu(ray_cluster, tmp_path):
    """With GPUs in the cluster (two fake ones here), the default is one replica per GPU, each given its own."""
    from enformer_batch import PredictConfig
    from enformer_batch.engine import _worker_layout, _WorkerPool
    from enformer_batch.store import OutputStore

    config = PredictConfig(fasta="unused.fa", out=str(tmp_path))
    layout = _worker_layout(config)
    assert (layout.workers, layout.gpus) == (2, 1.0)
    # Four CPUs, two GPUs: each GPU replica gets one writer thread and reserves a CPU for it.
    assert (layout.writers, layout.cpus) == (1, 2)
    pool = _WorkerPool(config.inference_settings(), OutputStore(str(tmp_path)), dataclasses.replace(layout, threads=1))
    try:
        placements = ray_cluster.get([a.placement.remote() for a in pool.actors])
    finally:
        pool.shutdown()
    assert sorted(p["gpu_ids"][0] for p in placements) == ["0", "1"]
    assert all(len(p["gpu_ids"]) == 1 for p in placements)
    half = PredictConfig(fasta="unused.fa", out=str(tmp_path), gpus_per_worker=0.5)
    quarter = _worker_layout(half)
    assert (quarter.workers, quarter.gpus) == (4, 0.5)  # fractional shares put several replicas on one GPU
    assert quarter.cpus == 1  # not enough CPUs to reserve writers' too: they share the node's cores


def test_device_choice_decides_gpu_requests(ray_cluster, tmp_path):
    from enformer_batch import PredictConfig
    from enformer_batch.engine import _worker_layout

    def layout(**kw):
        layout = _worker_layout(PredictConfig(fasta="unused.fa", out=str(tmp_path), **kw))
        return layout.workers, layout.gpus

    assert layout(device="cpu") == (1, 0.0)
    assert layout(device="cpu", workers=2) == (2, 0.0)
    assert layout(device="gpu", workers=8) == (8, 1.0)  # more than exist now: an autoscaler adds nodes
    assert layout(device="auto") == (2, 1.0)


def test_n_encoding_uniform_changes_only_windows_with_n_and_is_recorded(tmp_path):
    """--n-encoding uniform feeds 0.25 rows for N/padding; a window of pure ACGT predicts the same."""
    from enformer_batch.genome import encode
    from enformer_batch.inference import InferenceSettings, Predictor
    from enformer_batch.kinds.atlas import KIND, AtlasJob

    rng = np.random.default_rng(1)
    clean = encode(rng.choice(np.frombuffer(b"ACGT", np.uint8), SPAN + 2 * 40_960).tobytes())
    assert (clean != 4).all()
    with_n = clean.copy()
    with_n[90_000:100_000] = 4
    codes = np.stack([clean, with_n])
    zeros = Predictor(InferenceSettings(dtype="float32", n_encoding="zeros"))
    uniform = Predictor(InferenceSettings(dtype="float32", n_encoding="uniform"))
    (a, _), (b, _) = zeros.predict(codes), uniform.predict(codes)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.abs(a[1] - b[1]).max() > 1e-4
    from enformer_batch import PredictConfig

    config = PredictConfig(fasta="g.fa", out=str(tmp_path), n_encoding="uniform")
    job = AtlasJob(config, KIND)
    job.lengths = {"c": 10}  # what prepare() reads from the FASTA index
    identity = job.identity(uniform.info)
    assert identity["n_encoding"] == "uniform"
