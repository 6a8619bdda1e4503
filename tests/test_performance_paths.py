"""The fast paths added for throughput give the same results as the plain ones (no Ray, no GPU needed)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from enformer_batch.inference import InferenceSettings, Predictor, auto_batch_size, resolve_compile
from enformer_batch.model import EnformerConfig
from enformer_batch.settings import GPU_MAX_AUTO_BATCH, NonFiniteOutput
from enformer_batch.store import part_table
from enformer_batch.windows import ENFORMER, plan_chromosome

FULL = EnformerConfig().to_dict()


def test_auto_batch_size_is_monotonic_and_bounded() -> None:
    sizes = [auto_batch_size(gib * 2**30, FULL, "bf16") for gib in (1, 8, 40, 80, 140)]
    assert sizes == sorted(sizes)
    assert sizes[0] == 1  # never below one window, even when nothing fits
    assert sizes[3] == GPU_MAX_AUTO_BATCH  # an 80-GB GPU holds the measured best batch of full-size windows
    assert auto_batch_size(10 * 2**30, FULL, "fp32") < auto_batch_size(10 * 2**30, FULL, "bf16")
    assert auto_batch_size(10**15, FULL, "bf16", max_batch=16) == 16


def test_compile_auto_is_on_for_cuda_only_and_the_manifest_says_which() -> None:
    assert resolve_compile("auto", torch.device("cuda")) and not resolve_compile("auto", torch.device("cpu"))
    assert resolve_compile("on", torch.device("cpu")) and not resolve_compile("off", torch.device("cuda"))
    assert not resolve_compile("on", torch.device("cuda"), simulated=True)
    assert Predictor(InferenceSettings(), device="cpu").info.compiled is False
    with pytest.raises(ValueError, match="--compile must be one of"):
        InferenceSettings(compile="yes").check()


def test_padded_batches_give_the_values_of_unpadded_ones() -> None:
    """A compiled replica pads short batches with all-N rows to one shape; the rows it returns are unchanged."""
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 4, size=(3, ENFORMER.input_length), dtype=np.uint8)
    plain = Predictor(InferenceSettings(batch_size=4, dtype="float32"), device="cpu")
    padded = Predictor(InferenceSettings(batch_size=4, dtype="float32"), device="cpu")
    padded._pad_batches = True
    want = plain.predict_batch(codes)
    got = padded.predict_batch(codes)
    assert got.shape == want.shape == (3, 896, 12)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    keep = (np.array([0, 2, 2]), np.array([5, 0, 895]))  # a gather names windows of the unpadded batch
    np.testing.assert_allclose(padded.predict_batch(codes, keep), want[keep].T, rtol=1e-5, atol=1e-6)


def test_compile_auto_falls_back_to_eager_when_compiling_fails(capsys) -> None:
    predictor = Predictor(InferenceSettings(batch_size=2, dtype="float32"), device="cpu", compile_model=True)

    from torch._dynamo.exc import TorchDynamoException

    def broken(*args, **kwargs):
        raise TorchDynamoException("no C compiler found")

    predictor._model_fn = broken
    codes = np.random.default_rng(4).integers(0, 4, size=(1, ENFORMER.input_length), dtype=np.uint8)
    values = predictor.predict_batch(codes)
    assert np.isfinite(values).all() and predictor.info.compiled is False
    assert "torch.compile failed" in capsys.readouterr().err
    on = Predictor(InferenceSettings(batch_size=2, compile="on"), device="cpu")
    on._model_fn = broken
    with pytest.raises(TorchDynamoException, match="no C compiler"):
        on.predict_batch(codes)
    # Not a compilation error (out of memory, bad input): raised as it is, compilation stays on.
    oom = Predictor(InferenceSettings(batch_size=2), device="cpu", compile_model=True)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    oom._model_fn = out_of_memory
    with pytest.raises(torch.OutOfMemoryError):
        oom.predict_batch(codes)
    assert oom.info.compiled is True


def test_part_table_matches_column_by_column_construction() -> None:
    rng = np.random.default_rng(0)
    names = [f"t{i}" for i in range(5)]
    for dtype in ("float16", "float32"):
        for part in plan_chromosome("c", 5 * ENFORMER.output_span + 777, ENFORMER, ENFORMER.output_span // 4, 4):
            n = len(part.windows)
            predictions = rng.random((n, ENFORMER.output_bins, len(names))).astype(dtype)
            ran = rng.random(n) < 0.6
            table = part_table(part, predictions, ran, names, dtype, ENFORMER.bin_size)
            # The straightforward construction: one strided column at a time, nulls from a mask.
            rows = [(i, lo, hi) for i, w in enumerate(part.windows) for lo, hi in w.emit]
            block = np.concatenate([predictions[i, lo - part.windows[i].first_bin : hi - part.windows[i].first_bin]
                                    for i, lo, hi in rows])
            nulls = np.concatenate([np.full(hi - lo, not ran[i]) for i, lo, hi in rows])
            for j, name in enumerate(names):
                mask = nulls if nulls.any() else None
                expected = pa.array(block[:, j], type=table.schema.field(name).type, mask=mask)
                assert table.column(name).combine_chunks().equals(expected)


def test_fused_conv_block_matches_plain_composition() -> None:
    """The eval-mode BatchNorm+GELU fusion equals BatchNorm -> GELU -> Conv1d with non-trivial statistics.

    (The CPU attention path is covered by the enformer-pytorch oracle tests in test_model.py.)
    """
    from enformer_batch.model import _conv_block, _gelu

    torch.manual_seed(0)
    block = _conv_block(24, 32, 5).eval()
    bn = block[0]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.2, 0.2)
    h = torch.randn(2, 24, 300)
    with torch.inference_mode():
        plain = block[2](_gelu(bn(h)))
        fused = block(h)
    assert torch.allclose(fused, plain, rtol=1e-5, atol=1e-5)
    # With autograd recording, the fused path must not modify tensors in place that backward needs.
    h.requires_grad_(True)
    block(h).sum().backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()


def test_predictor_accepts_compile_flag_off() -> None:
    predictor = Predictor(InferenceSettings(batch_size=2), device="cpu", compile_model=False)
    codes = np.full((1, ENFORMER.input_length), 4, dtype=np.uint8)
    values, ran = predictor.predict(codes)
    assert not ran.any() and np.isnan(values).all()


def test_the_driver_and_reader_tasks_never_import_torch(tmp_path):
    """Only model replicas pay for torch (~1 s per process): a reader task's worker reads parts without it."""
    import subprocess
    import sys

    script = f"""
import pickle, sys
from enformer_batch.demo import write_demo_genome
from enformer_batch.engine import read_inputs
from enformer_batch.genome import FastaSource
from enformer_batch.kinds.atlas import AtlasMode
from enformer_batch.windows import ENFORMER, plan_chromosome
import enformer_batch.cli, enformer_batch.validate, enformer_batch.kinds
import enformer_batch.estimate, enformer_batch.families, enformer_batch.settings
fasta = write_demo_genome({str(tmp_path / "g.fa")!r})
mode = pickle.loads(pickle.dumps(AtlasMode(FastaSource(fasta), ENFORMER.input_length)))
(part, *_) = plan_chromosome("chrX", FastaSource(fasta).lengths()["chrX"], ENFORMER, ENFORMER.output_span, 2)
codes = read_inputs(mode, part)
assert len(codes) == 2, codes
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_two_parts_streaming_at_once_each_get_their_own_values_and_every_staging_slot_comes_back() -> None:
    """A replica computes two parts at once (their batches interleave on the device): each stream must get its own
    batches' values, in order, and give its staging slots back however it ends."""
    import threading

    from enformer_batch.settings import STREAMS_IN_FLIGHT

    predictor = Predictor(InferenceSettings(batch_size=2, dtype="float32"), device="cpu")
    rng = np.random.default_rng(5)
    parts = [rng.integers(0, 4, size=(6, ENFORMER.input_length), dtype=np.uint8) for _ in range(2)]
    want = [[predictor.predict_batch(codes[i : i + 2]) for i in range(0, 6, 2)] for codes in parts]
    got: list[list[np.ndarray]] = [[], []]
    start = threading.Barrier(2)

    def stream(k: int) -> None:
        start.wait()
        for values in predictor.predict_stream((parts[k][i : i + 2], None) for i in range(0, 6, 2)):
            got[k].append(values.copy())

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for k in range(2):
        assert len(got[k]) == 3
        for a, b in zip(got[k], want[k]):
            np.testing.assert_array_equal(a, b)
    free = 2 * STREAMS_IN_FLIGHT
    assert predictor._slots.qsize() == free
    abandoned = predictor.predict_stream((parts[0][i : i + 2], None) for i in range(0, 6, 2))
    next(abandoned)
    abandoned.close()  # a part that stops half-way (an error while stitching) returns its slots
    assert predictor._slots.qsize() == free


def test_a_failed_prediction_returns_its_staging_slots_even_while_its_error_is_kept() -> None:
    """Predictor.predict closes its stream: an error kept with its traceback must not hold buffers forever."""
    from enformer_batch.settings import STREAMS_IN_FLIGHT

    predictor = Predictor(InferenceSettings(batch_size=1, dtype="float32"), device="cpu")
    predictor._model_fn = lambda x, head: torch.full((x.shape[0], 896, 12), float("nan"))
    codes = np.random.default_rng(9).integers(0, 4, size=(3, ENFORMER.input_length), dtype=np.uint8)
    kept = []
    for _ in range(3):
        try:
            predictor.predict(codes)
        except NonFiniteOutput as e:
            kept.append(e)
    assert len(kept) == 3 and kept[0].__traceback__ is not None
    assert predictor._slots.qsize() == 2 * STREAMS_IN_FLIGHT
