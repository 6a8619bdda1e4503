"""The simulated accelerator and the replica's writer threads: the pipeline around the model, without a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from enformer_batch import PredictConfig, predict, validate
from enformer_batch.inference import InferenceSettings, NonFiniteOutput, Predictor
from enformer_batch.simulated import parse_spec

from .conftest import read_atlas


def test_simulated_model_emits_real_shaped_deterministic_values():
    predictor = Predictor(InferenceSettings(model="sim:rate=500,tracks=40", dtype="float32"))
    assert predictor.info.geometry.output_bins == 896 and len(predictor.info.track_names) == 40
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, (3, predictor.info.geometry.input_length)).astype(np.uint8)
    values, ran = predictor.predict(codes)
    again, _ = predictor.predict(codes)
    assert values.shape == (3, 896, 40) and ran.all() and np.isfinite(values).all() and (values > 0).all()
    np.testing.assert_array_equal(values, again)  # deterministic
    assert not np.allclose(values[0], values[1])  # varies by window ...
    assert not np.allclose(values[0, 0], values[0, 1]) and not np.allclose(values[0, :, 0], values[0, :, 1])


@pytest.mark.parametrize("spec, message", [("sim:rate=0", "positive"), ("sim:speed=3", "expected sim:"),
                                           ("sim:tracks=many", "must be a number")])
def test_bad_simulator_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)


def test_writer_threads_give_the_same_atlas_and_a_resumed_run_starts_no_replica(
    ray_cluster, test_fasta, tmp_path, monkeypatch
):
    """Three writer threads beside the device write what one does; re-running a complete run loads no model."""
    runs = {}
    for writers in (1, 3):
        out = tmp_path / f"w{writers}"
        predict(PredictConfig(fasta=test_fasta, out=str(out), model="sim:rate=400,tracks=24", device="cpu",
                              writers_per_worker=writers, windows_per_part=1, progress=False))
        report = validate(str(out), fasta=test_fasta)
        assert report.ok, report.table()
        runs[writers] = read_atlas(out)
    for key in runs[1]:
        a, b = np.ma.asarray(runs[1][key]), np.ma.asarray(runs[3][key])
        assert np.array_equal(np.ma.getmaskarray(a), np.ma.getmaskarray(b)) and np.ma.allequal(a, b), key

    import enformer_batch.engine as engine

    def no_replicas(*args, **kwargs):
        raise AssertionError("a fully resumed run started replicas")

    monkeypatch.setattr(engine, "_WorkerPool", no_replicas)
    again = predict(PredictConfig(fasta=test_fasta, out=str(tmp_path / "w3"), model="sim:rate=400,tracks=24",
                                  device="cpu", writers_per_worker=3, windows_per_part=1, progress=False))
    assert again.units_computed == 0 and again.resumed_parts == again.parts


def test_the_simulated_accelerator_keeps_its_rate_per_forward_pass():
    """A lower bound only (sleeping guarantees it): a stand-in faster than its rate would flatter the pipeline."""
    import time

    codes = np.random.default_rng(1).integers(0, 4, (8, 196_608)).astype(np.uint8)
    for rc, passes in ((False, 1), (True, 2)):
        predictor = Predictor(InferenceSettings(model="sim:rate=80,tracks=16", dtype="float32", rc=rc, batch_size=4))
        started = time.perf_counter()
        predictor.predict(codes)
        assert time.perf_counter() - started >= 8 * passes / 80


def test_a_non_finite_window_is_named_by_its_index_while_batches_overlap():
    """Batch n+1 is queued before batch n is checked and copied out: an error must still name the right window."""
    import torch

    from enformer_batch.genome import N_CODE

    predictor = Predictor(InferenceSettings(model="sim:rate=100000,tracks=4", dtype="float32", batch_size=2))
    clean = predictor._model_fn

    def poisoned(onehot: torch.Tensor, head: str = "human") -> torch.Tensor:
        y = clean(onehot, head=head)
        return torch.where(onehot[:, :1, :1] == 1, torch.nan, y)  # NaN wherever a window starts with A

    predictor._model_fn = poisoned
    codes = np.random.default_rng(2).integers(1, 4, (8, 196_608)).astype(np.uint8)  # C, G, T only
    codes[1] = N_CODE  # all N: skipped, so batch positions and window indices differ
    codes[6, 0] = 0  # A
    values, _ = predictor.predict(codes[:6])
    assert np.isfinite(values[[0, 2, 3, 4, 5]]).all() and np.isnan(values[1]).all()
    with pytest.raises(NonFiniteOutput) as error:
        predictor.predict(codes)
    assert error.value.window_indices == [6]


def test_precision_auto_resumes_at_the_precision_the_atlas_was_started_with(ray_cluster, test_fasta, tmp_path):
    """An atlas started at fp16 (or on a GPU, at bf16) resumes under the default --precision auto, not refused."""
    import json

    out = tmp_path / "atlas"
    settings = dict(fasta=test_fasta, out=str(out), chroms=["contig_s"], dtype="float32", progress=False)
    first = predict(PredictConfig(precision="fp16", **settings))
    again = predict(PredictConfig(**settings))  # precision="auto", which on this CPU alone would be fp32
    assert first.units_computed == 1 and again.units_computed == 0 and again.resumed_parts == 1
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["identity"]["precision"] == "fp16" and manifest["status"] == "complete"
    fresh = predict(PredictConfig(**{**settings, "out": str(tmp_path / "new")}))
    assert json.loads((tmp_path / "new" / "_manifest.json").read_text())["resolved"] == {
        "precision": "fp32", "batch_size": 4, "device": "cpu", "compiled": False} and fresh.units_computed == 1
