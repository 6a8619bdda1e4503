"""Attribution on one device against an oracle: ``torch.autograd.grad`` of the contract's target (docs/contract.md,
"Attribution") through enformer-pytorch on the same weights, with the augmentation and the ensemble average
written out here from the contract's words (no code shared with ``augment`` or the model).

Every forward runs at the full 196,608-bp input on the demo model's small widths.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from enformer_batch.annotation import Gene
from enformer_batch.attribution import (
    Attributor,
    attribution_precision,
    center_bins,
    region_bins,
    region_rows,
)
from enformer_batch.families import demo_checkpoint
from enformer_batch.gene_scores import tracks_on_strand
from enformer_batch.genome import N_CODE
from enformer_batch.inference import Predictor
from enformer_batch.kinds.attribution import gene_bins
from enformer_batch.loader import load_model
from enformer_batch.model import canonical_state_dict
from enformer_batch.settings import InferenceSettings
from enformer_batch.windows import Geometry

from .reference import INPUT

GEOMETRY = Geometry(input_length=INPUT, bin_size=128, output_bins=896)
SELECTED = "0,2,5"  # a subset: with strand pairs 0<->1, 2<->3 the reverse strand reads other tracks


def _checkpoint(root: Path, name: str, noise_seed: int | None = None, stranded: bool = False) -> str:
    """The demo checkpoint with a strand-paired track table (0<->1, 2<->3, the rest unstranded), optionally with
    perturbed weights (a second ensemble member) and a ``strand`` column (``stranded``: tracks 0, 2 on +, 1, 3 on
    -, the rest unstranded)."""
    out = root / name
    shutil.copytree(demo_checkpoint("demo"), out)
    lines = (out / "targets_human.txt").read_text().splitlines()
    pairs = {0: 1, 1: 0, 2: 3, 3: 2}
    strands = {0: "+", 1: "-", 2: "+", 3: "-"}
    rows = [lines[0] + "\tstrand_pair" + ("\tstrand" if stranded else "")]
    rows += [f"{line}\t{pairs.get(i, i)}" + (f"\t{strands.get(i, '.')}" if stranded else "")
             for i, line in enumerate(lines[1:])]
    (out / "targets_human.txt").write_text("\n".join(rows) + "\n")
    if noise_seed is not None:
        from safetensors.torch import save_file

        model = load_model(str(out)).model
        g = torch.Generator().manual_seed(noise_seed)
        state = {}
        for k, v in canonical_state_dict(model).items():
            if v.is_floating_point() and v.numel() > 1 and "running_" not in k:  # BN statistics stay valid
                v = v + 0.05 * v.std() * torch.randn(v.shape, generator=g)
            state[k] = v.contiguous()
        (out / "model.safetensors").unlink()
        save_file(state, str(out / "model.safetensors"))
    return str(out)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("attr_models")
    return _checkpoint(root, "a"), _checkpoint(root, "b", noise_seed=7)


def _codes(seed: int, n_runs: list[tuple[int, int]] = ()) -> np.ndarray:
    g = np.random.default_rng(seed)
    codes = g.integers(0, 4, INPUT).astype(np.uint8)
    for lo, hi in n_runs:
        codes[lo:hi] = N_CODE
    return codes


def _enformer_pytorch(source: str):
    """enformer-pytorch on the weights of ``source``: ``[1, L, 4] -> [1, bins, tracks]`` of the human head."""
    ep = pytest.importorskip("enformer_pytorch")
    ours = load_model(source).model
    ref = ep.Enformer.from_hparams(**ours.config.to_dict()).eval()
    ref.load_state_dict(ours.state_dict())
    return lambda x: ref(x, head="human")


def _borzoi_pytorch():
    """borzoi-pytorch on the demo Borzoi's weights, human head, on ``[batch, length, 4]`` inputs."""
    from .test_borzoi import demo_borzoi_pytorch

    ref = demo_borzoi_pytorch()
    return lambda x: ref(x.transpose(1, 2)).transpose(1, 2)


def _oracle(forwards, codes: np.ndarray, tracks: list[int], bins: np.ndarray, log: bool, rc: bool,
            shifts: tuple[int, ...], pairs: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(x, G) of one window, straight from the contract: ŷ is the mean over replicates and over shifts × strands,
    f = Σ_{b∈B} mean_t ŷ[b, t] (ln(1 + f) with log), G = ∂f/∂x by torch.autograd.grad."""
    length = len(codes)
    x = torch.zeros(length, 4)
    known = codes < 4
    x[torch.from_numpy(np.flatnonzero(known)), torch.from_numpy(codes[known].astype(np.int64))] = 1.0
    x.requires_grad_(True)
    preds = []
    for s in shifts:
        # shifted[i] = x[i - s]; vacated positions are N (all zeros)
        shifted = torch.cat([torch.zeros(s, 4), x[: length - s]]) if s >= 0 else torch.cat([x[-s:], torch.zeros(-s, 4)])
        for forward in forwards:
            preds.append(forward(shifted[None])[0])
            if rc:
                back = forward(shifted.flip(0).flip(1)[None])[0].flip(0)
                preds.append(back[:, pairs])  # the reverse strand's track i is the forward strand's pairs[i]
    y = torch.stack(preds).mean(0)[:, tracks]
    f = y.mean(-1)[torch.from_numpy(bins)].sum()
    if log:
        f = torch.log1p(f)
    (grad,) = torch.autograd.grad(f, x)
    return x.detach().numpy(), grad.numpy()


def _ours(sources: list[str], codes: np.ndarray, bins: np.ndarray, rows, log: bool, rc: bool = False,
          shifts: tuple[int, ...] = (0,), tracks: str = SELECTED, track_mask: np.ndarray | None = None, **kw):
    settings = InferenceSettings(model=",".join(sources), tracks=tracks, precision=attribution_precision("auto"),
                                 rc=rc, shifts=shifts, dtype="float32", compile="off")
    attributor = Attributor(Predictor(settings, device="cpu"), **kw)
    return attributor, attributor.attribute(codes, bins, rows, log=log, tracks=track_mask)


def _assert_matches(got, x: np.ndarray, grad: np.ndarray, lo: int, hi: int) -> None:
    attr = (x * grad).sum(-1)[lo:hi]
    hyp = (grad - grad.mean(-1, keepdims=True))[lo:hi]
    assert got.attr.dtype == np.float32 and got.hyp.dtype == np.float32
    assert got.attr.shape == (hi - lo,) and got.hyp.shape == (hi - lo, 4)
    scale = float(np.abs(grad[lo:hi]).max())
    assert scale > 0, "degenerate test: no gradient in the region"
    np.testing.assert_allclose(got.attr, attr, rtol=0, atol=2e-4 * scale)
    np.testing.assert_allclose(got.hyp, hyp, rtol=0, atol=2e-4 * scale)


def test_center_target_in_one_batch_with_n_bases(checkpoints):
    """Two windows in one backward pass; the second has an N stretch inside its region: attr 0 there."""
    a, _ = checkpoints
    region = (1_000_000, 1_000_600)
    mid = sum(region) // 2
    lo, hi = region_rows(GEOMETRY, *region, mid)
    codes = np.stack([_codes(1), _codes(2, [(lo + 100, lo + 140)])])
    bins = np.stack([center_bins(GEOMETRY)] * 2)
    attributor, got = _ours([a], codes, bins, [(lo, hi)] * 2, log=False)
    assert attributor.batch_size >= 2 and not attributor.checkpoint
    assert attributor.focus([(lo, hi)]) is not None  # an Enformer: the graph reaches only a crop around the rows
    ref = _enformer_pytorch(a)
    for k in range(2):
        x, grad = _oracle([ref], codes[k], [0, 2, 5], bins[k], False, False, (0,), list(range(12)))
        _assert_matches(got[k], x, grad, lo, hi)
    assert np.all(got[1].attr[100:140] == 0)
    assert np.any(got[1].hyp[100:140] != 0)  # the gradient there is not zero: only x is


def test_region_target_with_log_and_reverse_complement(checkpoints):
    a, _ = checkpoints
    region = (5_000, 5_900)
    mid = sum(region) // 2
    lo, hi = region_rows(GEOMETRY, *region, mid)
    bins = region_bins(GEOMETRY, *region, mid)
    assert bins.sum() == 8  # [5000, 5900) with o = mid - 448*128 spans bins 444..451
    codes = _codes(3)[None]
    _, got = _ours([a], codes, bins[None], [(lo, hi)], log=True, rc=True)
    pairs = [1, 0, 3, 2] + list(range(4, 12))
    x, grad = _oracle([_enformer_pytorch(a)], codes[0], [0, 2, 5], bins, True, True, (0,), pairs)
    _assert_matches(got[0], x, grad, lo, hi)


def test_shifts_and_an_ensemble(checkpoints):
    a, b = checkpoints
    region = (70_000, 70_300)
    mid = sum(region) // 2
    lo, hi = region_rows(GEOMETRY, *region, mid)
    codes = _codes(4)[None]
    bins = center_bins(GEOMETRY)[None]
    attributor, got = _ours([a, b], codes, bins, [(lo, hi)], log=False, shifts=(-2, 3))
    assert attributor.focus([(lo, hi)]) == (INPUT // 2 - 153, INPUT // 2 + 153)  # the rows, and 3 bp of shift
    x, grad = _oracle([_enformer_pytorch(a), _enformer_pytorch(b)], codes[0], [0, 2, 5], bins[0], False, False, (-2, 3),
                      list(range(12)))
    _assert_matches(got[0], x, grad, lo, hi)
    # Checkpointing each pass recomputes it in the backward: the same gradient.
    checkpointed = Attributor(attributor.predictor, checkpoint="on").attribute(codes, bins, [(lo, hi)])
    assert np.allclose(checkpointed[0].hyp, got[0].hyp, rtol=0, atol=1e-6 * float(np.abs(got[0].hyp).max()))


def test_borzoi_region_target_with_log_and_strand_pairs():
    """Borzoi's geometry (524,288 bp in, 32-bp bins) and its own strand-paired table, against borzoi-pytorch."""
    geometry = Geometry(input_length=524_288, bin_size=32, output_bins=6144)
    region = (300_000, 300_500)
    mid = sum(region) // 2
    lo, hi = region_rows(geometry, *region, mid)
    bins = region_bins(geometry, *region, mid)
    assert bins.sum() == 16
    g = np.random.default_rng(5)
    codes = g.integers(0, 4, geometry.input_length).astype(np.uint8)[None]
    attributor, got = _ours(["demo-borzoi"], codes, bins[None], [(lo, hi)], log=True, rc=True)
    assert attributor.geometry == geometry
    pairs = [1, 0, 3, 2, 5, 4, 7, 6, 8, 9, 10, 11]
    x, grad = _oracle([_borzoi_pytorch()], codes[0], [0, 2, 5], bins, True, True, (0,), pairs)
    _assert_matches(got[0], x, grad, lo, hi)


def _gene(chrom: str, strand: str, exons: list[tuple[int, int]]) -> Gene:
    return Gene(chrom, "ENSGT0001.1", "GENET", strand, None, np.asarray(exons, np.int64),
                np.asarray([exons[0][0] if strand == "+" else exons[-1][1] - 1], np.int64))


def _exon_bins_by_hand(geometry: Geometry, exons: list[tuple[int, int]], mid: int) -> np.ndarray:
    """B_g from the contract's words: the bins [o + b·size, o + (b+1)·size) sharing a base with an exon."""
    o, size = mid - (geometry.output_bins // 2) * geometry.bin_size, geometry.bin_size
    return np.array([any(o + b * size < e and s < o + (b + 1) * size for s, e in exons)
                     for b in range(geometry.output_bins)])


def test_gene_target_on_its_strands_tracks_with_log_and_reverse_complement(tmp_path):
    """--target gene:NAME: the exon bins of a − gene, averaged over the selected tracks of its strand and the
    unstranded ones (tracks 0 +, 1 −, 5 unstranded selected: 1 and 5 count), through --rc and --log."""
    stranded = _checkpoint(tmp_path, "s", stranded=True)
    mid = 80_150
    region = (80_000, 80_300)
    lo, hi = region_rows(GEOMETRY, *region, mid)
    # An exon inside the region, one across a bin edge, one reaching past the output's left end (o = 22,806).
    exons = [(10_000, 23_000), (80_100, 80_200), (90_050, 90_400)]
    gene = _gene("chrT", "-", exons)
    bins = gene_bins(GEOMETRY, gene, mid)
    assert np.array_equal(bins, _exon_bins_by_hand(GEOMETRY, exons, mid))
    assert np.flatnonzero(bins).tolist() == [0, 1, 447, 448, 525, 526, 527, 528]
    settings = InferenceSettings(model=stranded, tracks="0,1,5", precision="fp32", dtype="float32", compile="off")
    strands = Predictor(settings, device="cpu").info.track_strands
    assert strands == ("+", "-", "")
    on_strand = tracks_on_strand(gene.strand, strands)
    assert on_strand.tolist() == [False, True, True]
    codes = _codes(6)[None]
    _, got = _ours([stranded], codes, bins[None], [(lo, hi)], log=True, rc=True, tracks="0,1,5",
                   track_mask=on_strand[None])
    pairs = [1, 0, 3, 2] + list(range(4, 12))
    x, grad = _oracle([_enformer_pytorch(stranded)], codes[0], [1, 5], bins, True, True, (0,), pairs)
    _assert_matches(got[0], x, grad, lo, hi)


def test_borzoi_gene_target_on_stranded_tracks():
    """Borzoi's own stranded tracks (identifiers ending in +/-): a + gene averages DEMOB01+ and the unstranded
    DEMOB05, not DEMOB01-."""
    geometry = Geometry(input_length=524_288, bin_size=32, output_bins=6144)
    region = (300_000, 300_400)
    mid = sum(region) // 2
    lo, hi = region_rows(geometry, *region, mid)
    exons = [(299_990, 300_050), (300_700, 301_000)]
    gene = _gene("chrT", "+", exons)
    bins = gene_bins(geometry, gene, mid)
    assert np.array_equal(bins, _exon_bins_by_hand(geometry, exons, mid)) and bins.sum() == 3 + 10
    on_strand = tracks_on_strand("+", ("+", "-", ""))
    g = np.random.default_rng(8)
    codes = g.integers(0, 4, geometry.input_length).astype(np.uint8)[None]
    attributor, got = _ours(["demo-borzoi"], codes, bins[None], [(lo, hi)], log=True, tracks="0,1,8",
                            track_mask=on_strand[None])
    assert attributor.predictor.info.track_strands == ("+", "-", "")
    x, grad = _oracle([_borzoi_pytorch()], codes[0], [0, 8], bins, True, False, (0,), list(range(12)))
    _assert_matches(got[0], x, grad, lo, hi)


def test_bins_and_rows_follow_the_mutagenesis_window():
    mid = 10_000
    # The region's midpoint sits at input index input_length // 2, the first base of bin output_bins // 2.
    assert region_rows(GEOMETRY, mid, mid + 1, mid) == (INPUT // 2, INPUT // 2 + 1)
    assert np.flatnonzero(region_bins(GEOMETRY, mid, mid + 1, mid)).tolist() == [448]
    assert np.flatnonzero(region_bins(GEOMETRY, mid - 1, mid + 128, mid)).tolist() == [447, 448]
    assert np.flatnonzero(center_bins(GEOMETRY)).tolist() == [448]
    assert attribution_precision("auto") == "fp32" and attribution_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="does not fit"):
        region_rows(GEOMETRY, 0, 200_000, 100_000)


# --- exports, on an output written by hand in the attribution schema ------------------------------------------

ATTR_FIELDS = ["region", "pos", "ref", "attr", "hyp_a", "hyp_c", "hyp_g", "hyp_t"]


def _write_output(root: Path, regions: list[tuple[str, int, int]], seed: int = 0) -> dict[str, dict]:
    """An attribution output (manifest + one part per region) with random values; returns its rows by region."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    g = np.random.default_rng(seed)
    parts, rows = [], {}
    for k, (chrom, s, e) in enumerate(regions):
        label = f"{chrom}:{s}-{e}"
        n = e - s
        ref = g.choice(list("ACGTN"), n, p=[0.24, 0.24, 0.24, 0.24, 0.04])
        hyp = g.normal(size=(n, 4)).astype(np.float32)
        hyp -= hyp.mean(1, keepdims=True)
        attr = np.where(ref == "N", 0, hyp[np.arange(n), np.maximum(0, np.char.find("ACGT", ref))]).astype(np.float32)
        columns = {"region": [label] * n, "pos": np.arange(s + 1, e + 1), "ref": ref.tolist(), "attr": attr,
                   **{f"hyp_{b}": hyp[:, i] for i, b in enumerate("acgt")}}
        order = g.permutation(n)  # rows in any order: readers sort by pos
        table = pa.table({c: pa.array(np.asarray(v)[order]) for c, v in columns.items()})
        path = f"chrom={chrom}/part-r{k:06d}.parquet"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / path)
        parts.append({"path": path, "chrom": chrom, "first_window": k, "end_window": k + 1, "rows": n,
                      "bytes": (root / path).stat().st_size, "sha256": "0" * 64})
        rows[label] = columns
    identity = {"mode": "attribution", "regions": [list(r) for r in regions], "target": "region", "log": True,
                "fasta": {"name": "t.fa", "chromosomes": {"chr1": 50_000, "chr2": 20_000}},
                "tracks": [{"index": 0, "name": "DEMO0000001", "description": "DNASE:demo cell 1"}],
                "model": {"id": "demo"}}
    (root / "_manifest.json").write_text(json.dumps({"identity": identity, "status": "complete", "parts": parts}))
    return rows


def test_modisco_export_round_trips(tmp_path):
    from enformer_batch.export import export_modisco

    regions = [("chr2", 1_000, 1_400), ("chr1", 30_000, 30_400), ("chr1", 100, 500)]
    rows = _write_output(tmp_path / "run", regions)
    ohe_path, shap_path = export_modisco(str(tmp_path / "run"), str(tmp_path / "modisco"))
    # Read as TF-MoDISco-lite's `modisco motifs -s ohe.npz -a shap.npz` reads them: key arr_0, (N, 4, L).
    ohe, shap = np.load(ohe_path)["arr_0"], np.load(shap_path)["arr_0"]
    assert ohe.shape == shap.shape == (3, 4, 400) and ohe.dtype == shap.dtype == np.float32
    for k, (chrom, s, e) in enumerate(regions):  # the run's region order, not sorted
        expected = rows[f"{chrom}:{s}-{e}"]
        ref = np.array(expected["ref"])
        for c, base in enumerate("ACGT"):
            assert np.array_equal(ohe[k, c], (ref == base).astype(np.float32))
            assert np.array_equal(shap[k, c], expected[f"hyp_{base.lower()}"])
        assert np.all(ohe[k][:, ref == "N"] == 0)
    # The contributions at the reference base are attr: what modisco multiplies back (ohe * shap summed).
    assert np.allclose((ohe * shap).sum(1)[0], rows["chr2:1000-1400"]["attr"])


def test_modisco_export_refuses_unequal_regions_in_one_line(tmp_path):
    from enformer_batch.export import export_modisco

    _write_output(tmp_path / "run", [("chr1", 0, 300), ("chr1", 1_000, 1_400)])
    with pytest.raises(ValueError, match=r"^TF-MoDISco needs regions of one length; chr1:0-300 is 300 bp and "
                                         r"chr1:1000-1400 is 400 bp") as e:
        export_modisco(str(tmp_path / "run"), str(tmp_path / "m"))
    assert "\n" not in str(e.value)


def test_bigwig_export_and_logo(tmp_path):
    pybigwig = pytest.importorskip("pyBigWig")
    pytest.importorskip("matplotlib")
    from enformer_batch.export import export_attribution_bigwig, plot_attribution

    regions = [("chr2", 1_000, 1_300), ("chr1", 30_000, 30_050), ("chr1", 100, 400)]
    rows = _write_output(tmp_path / "run", regions)
    path = export_attribution_bigwig(str(tmp_path / "run"), str(tmp_path / "bw"))
    bw = pybigwig.open(path)
    try:
        assert bw.chroms() == {"chr1": 50_000, "chr2": 20_000}
        for chrom, s, e in regions:
            got = np.array(bw.values(chrom, s, e), np.float32)
            assert np.array_equal(got, rows[f"{chrom}:{s}-{e}"]["attr"])
        assert np.isnan(bw.values("chr1", 400, 401)[0])  # outside every region: no value
    finally:
        bw.close()
    out = tmp_path / "logo.png"
    assert plot_attribution(str(tmp_path / "run"), "chr1:30,000-30,050", str(out)) == (1400, 360)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no region 'chr1:0-5'"):
        plot_attribution(str(tmp_path / "run"), "chr1:0-5", str(out))

    _write_output(tmp_path / "overlap", [("chr1", 0, 300), ("chr1", 200, 500)])
    with pytest.raises(ValueError, match="regions chr1:0-300 and chr1:200-500 overlap"):
        export_attribution_bigwig(str(tmp_path / "overlap"), str(tmp_path / "bw2"))
