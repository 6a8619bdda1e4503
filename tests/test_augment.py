"""Reverse-complement / shift test-time augmentation and precision contexts."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from enformer_batch.augment import autocast_context, predict_augmented, reverse_complement, shift_onehot
from enformer_batch.loader import load_model
from enformer_batch.model import SEQUENCE_LENGTH

ACGT = "ACGT"


def _onehot_np(seq: str) -> np.ndarray:
    out = np.zeros((len(seq), 4), dtype=np.float32)
    for i, base in enumerate(seq):
        if base in ACGT:
            out[i, ACGT.index(base)] = 1.0
    return out


def test_reverse_complement_of_string():
    seq = "AACGTN"
    rc = reverse_complement(torch.from_numpy(_onehot_np(seq)))
    np.testing.assert_array_equal(rc.numpy(), _onehot_np("NACGTT"))


def test_shift_convention_and_padding():
    x = torch.from_numpy(_onehot_np("ACGTA"))
    np.testing.assert_array_equal(shift_onehot(x, 2).numpy(), _onehot_np("NNACG"))
    np.testing.assert_array_equal(shift_onehot(x, -1).numpy(), _onehot_np("CGTAN"))
    padded = shift_onehot(x, 1, n_value=0.25).numpy()
    np.testing.assert_array_equal(padded[0], [0.25] * 4)
    with pytest.raises(ValueError):
        shift_onehot(x, 5)


def _binned_model(x: torch.Tensor) -> torch.Tensor:
    """A deterministic, strand-asymmetric toy model: 64-bp bins, two tracks."""
    w = torch.tensor([[1.0, 0.5], [2.0, -1.0], [3.0, 0.25], [4.0, 2.0]])
    pos = torch.linspace(0, 1, x.shape[1])[None, :, None]
    y = (x @ w) * (1 + pos)  # position dependence makes the strand matter
    return torch.nn.functional.softplus(y.reshape(x.shape[0], -1, 64, 2).mean(2))


@pytest.mark.parametrize("shifts", [(0,), (-1, 0, 1), (-3, 0, 3)])
def test_rc_augmentation_is_strand_symmetric(shifts):
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 1024), generator=g), 4).float()
    fwd = predict_augmented(_binned_model, x, rc=True, shifts=shifts)
    rev = predict_augmented(_binned_model, reverse_complement(x), rc=True, shifts=shifts)
    torch.testing.assert_close(rev, fwd.flip(-2), rtol=1e-6, atol=1e-6)
    # Without rc averaging the toy model is not strand-symmetric, so the check above is not vacuous.
    plain = predict_augmented(_binned_model, x, rc=False, shifts=(0,))
    plain_rev = predict_augmented(_binned_model, reverse_complement(x), rc=False, shifts=(0,))
    assert not torch.allclose(plain_rev, plain.flip(-2), atol=1e-3)


def test_augmentation_matches_manual_computation_on_demo_model():
    model = load_model("demo").model
    rng = np.random.default_rng(1)
    seq = "".join(rng.choice(list(ACGT), SEQUENCE_LENGTH))
    x_np = _onehot_np(seq)[None]
    shifts = (-2, 0, 3)

    def run(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(a)), head="human").numpy()

    expected = []
    for s in shifts:
        shifted = np.full_like(x_np, 0.25)
        if s > 0:
            shifted[:, s:] = x_np[:, :-s]
        elif s < 0:
            shifted[:, :s] = x_np[:, -s:]
        else:
            shifted = x_np
        expected.append(run(shifted))
        expected.append(run(shifted[:, ::-1, ::-1])[:, ::-1])
    expected_mean = np.mean(expected, axis=0)

    with torch.no_grad():
        got = predict_augmented(lambda t: model(t, head="human"), torch.from_numpy(x_np), True, shifts, 0.25)
    np.testing.assert_allclose(got.numpy(), expected_mean, rtol=1e-5, atol=1e-6)
    # The augmentation changes the prediction (the demo model is not strand-symmetric).
    assert np.abs(expected_mean - run(x_np)).max() > 1e-3


def test_autocast_context():
    assert isinstance(autocast_context("fp32", "cpu"), contextlib.nullcontext)
    with autocast_context("bf16", "cpu"):
        y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    assert y.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision"):
        autocast_context("fp8", "cpu")


def _stranded_model(x: torch.Tensor) -> torch.Tensor:
    """Toy model with 5 tracks: (0, 1) and (2, 3) are +/- strand pairs, 4 is unstranded."""
    w = torch.tensor([[1.0, 0.2, 0.5, -1.0, 0.3], [2.0, -1.0, 1.5, 0.1, 0.3], [0.1, 3.0, -0.5, 2.0, 0.7],
                      [4.0, 0.5, 1.0, 0.0, 0.7]])
    pos = torch.linspace(0, 1, x.shape[1])[None, :, None]
    return torch.nn.functional.softplus(((x @ w) * (1 + pos)).reshape(x.shape[0], -1, 32, 5).mean(2))


def test_rc_augmentation_swaps_strand_pairs():
    """docs/contract.md, "Geometry": the reverse-complement prediction, bins reversed back, has each stranded
    track swapped with its pair before averaging; unpaired tracks stay."""
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 640), generator=g), 4).float()
    pairs = torch.tensor([1, 0, 3, 2, 4])
    got = predict_augmented(_stranded_model, x, rc=True, strand_pairs=pairs)
    # Direct computation, track by track.
    fwd = _stranded_model(x)
    rc_seq = torch.from_numpy(np.ascontiguousarray(x.numpy()[:, ::-1, ::-1]))
    rev = _stranded_model(rc_seq).numpy()[:, ::-1, :]
    expected = np.empty_like(fwd.numpy())
    for t, partner in enumerate([1, 0, 3, 2, 4]):
        expected[..., t] = (fwd.numpy()[..., t] + rev[..., partner]) / 2
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7)
    # Without the pairing the stranded tracks come out different: the swap is not vacuous.
    unpaired = predict_augmented(_stranded_model, x, rc=True)
    assert not torch.allclose(unpaired[..., :4], got[..., :4], atol=1e-3)
    torch.testing.assert_close(unpaired[..., 4], got[..., 4])
    # With the pairing, rc averaging is strand-symmetric: the reverse strand's '+' is the forward '-'.
    flipped = predict_augmented(_stranded_model, reverse_complement(x), rc=True, strand_pairs=pairs)
    torch.testing.assert_close(flipped, got.flip(-2)[..., [1, 0, 3, 2, 4]], rtol=1e-6, atol=1e-6)
