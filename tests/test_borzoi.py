"""Borzoi / Flashzoi: our model against borzoi-pytorch (test-only oracle) on the same random weights.

Every forward runs at Borzoi's full 524,288-bp input. borzoi-pytorch fixes its conv tower, final block and
head widths (~30-60 s per window on 2 cores even at a narrow transformer); to keep the suite fast the oracle
is borzoi-pytorch's own model whose fixed-width blocks are swapped for narrower instances of *its* block
classes, so its forward code is what runs. ``ENFORMER_BATCH_SLOW_ORACLE=1`` also runs the comparison at
borzoi-pytorch's fixed widths.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from enformer_batch.borzoi import SEQUENCE_LENGTH, Borzoi, BorzoiConfig, calibrate_batchnorm, rotary
from enformer_batch.families import CheckpointError
from enformer_batch.loader import load_model

NARROW = dict(stem_channels=16, tower_channels=(16, 20, 24, 28, 32), final_channels=32)
# attn_dim_key 64 > 32 position features, as in the published model: the factorised position logits run.
SMALL = dict(dim=32, depth=1, heads=2, attn_dim_key=64, attn_dim_value=16, enable_mouse_head=True)


def _onehot(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.one_hot(torch.randint(0, 4, (batch, SEQUENCE_LENGTH), generator=g), 4).float()


def _randomise(model: nn.Module, seed: int) -> None:
    """Every parameter random at unit gain (biases, norm affines, attention output included); BatchNorm
    statistics from one pass over random sequence. Default inits give outputs flat to ~1e-6 of their mean."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "rel_" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    calibrate_batchnorm(model, [_onehot(1, seed + 100)])
    model.eval()


def _reference(kw: dict, narrow: dict | None, human_tracks: int = 7611, mouse_tracks: int = 2608, annotated=None):
    """borzoi-pytorch with ``kw``; with ``narrow`` its fixed-width blocks swapped for narrower instances of its own
    block classes (stem, tower and final widths, as our narrow configs have them). ``annotated``: a track table,
    for its ``AnnotatedBorzoi`` (which undoes the squashed scale)."""
    bp = pytest.importorskip("borzoi_pytorch")
    from borzoi_pytorch.config_borzoi import BorzoiConfig as RefConfig
    from borzoi_pytorch.pytorch_borzoi_model import ConvBlock

    ref = bp.Borzoi(RefConfig(**kw)) if annotated is None else bp.AnnotatedBorzoi(RefConfig(**kw), annotated)
    if narrow:
        stem, tower, final = narrow["stem_channels"], narrow["tower_channels"], narrow["final_channels"]
        ref.conv_dna.conv_layer = nn.Conv1d(4, stem, 15, padding="same")
        for i, (a, b) in enumerate(zip((stem, *tower[:-1]), tower)):
            ref.res_tower[2 * i] = ConvBlock(a, b, 5)
        ref.unet1[1] = ConvBlock(tower[-1], kw["dim"], 5)
        ref.horizontal_conv0 = ConvBlock(tower[-1], kw["dim"], 1)
        ref.final_joined_convs[0] = ConvBlock(kw["dim"], final, 1)
        ref.human_head = nn.Conv1d(final, human_tracks, 1)
        ref.mouse_head = nn.Conv1d(final, mouse_tracks, 1)
    return ref.eval()


def demo_borzoi_pytorch(annotated: bool = False):
    """borzoi-pytorch on the demo Borzoi's weights (narrowed as the demo is); ``annotated``: its
    ``AnnotatedBorzoi`` with the demo's track table."""
    from enformer_batch.families import demo_checkpoint

    root = demo_checkpoint("demo-borzoi")
    raw = json.loads((root / "config.json").read_text())
    widths = ("stem_channels", "tower_channels", "final_channels", "architectures", "model_type")
    table = None
    if annotated:
        import pandas as pd

        table = pd.read_table(root / "targets_human.txt")
    ref = _reference({k: v for k, v in raw.items() if k not in widths}, raw, raw["human_tracks"],
                     raw["mouse_tracks"], table)
    ref.load_state_dict(load_model("demo-borzoi").model.state_dict())
    return ref.eval()


def _rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def pair():
    ours = Borzoi(BorzoiConfig.from_dict({**SMALL, **NARROW}))
    _randomise(ours, 0)
    ref = _reference(SMALL, NARROW)
    ref.load_state_dict(ours.state_dict())  # strict: same names and shapes
    return ours, ref


@pytest.fixture(scope="module")
def outputs(pair):
    ours, ref = pair
    x = _onehot(1, 1)
    with torch.no_grad():
        out = ours(x)
        expected = {"human": ref(x.transpose(1, 2)), "mouse": ref(x.transpose(1, 2), is_human=False)}
        shifted = ours(torch.roll(x, 1, dims=1), head="human")
    return x, out, {h: v.transpose(1, 2) for h, v in expected.items()}, shifted


def test_full_size_parameter_names_and_shapes_equal_reference():
    bp = pytest.importorskip("borzoi_pytorch")
    from borzoi_pytorch.config_borzoi import BorzoiConfig as RefConfig

    with torch.device("meta"):
        ours = Borzoi(BorzoiConfig(enable_mouse_head=True))
        ref = bp.Borzoi(RefConfig(enable_mouse_head=True))
    a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert a == b
    assert len(a) > 100


def test_flashzoi_parameter_layout():
    # flash-attn's MHA (what Flashzoi uses) cannot be built without flash-attn: check its documented layout,
    # q for 8 heads then k and v for 4 heads of 192, under transformer.<i>.0.fn.1.mha.
    with torch.device("meta"):
        ours = Borzoi(BorzoiConfig(flashed=True))
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items() if ".mha." in k}
    assert shapes["transformer.0.0.fn.1.mha.Wqkv.weight"] == (1536 + 2 * 4 * 192, 1536)
    assert shapes["transformer.0.0.fn.1.mha.Wqkv.bias"] == (3072,)
    assert shapes["transformer.7.0.fn.1.mha.out_proj.weight"] == (1536, 1536)
    assert not any("to_rel_k" in k for k in ours.state_dict())


def test_forward_matches_reference(outputs):
    _, out, expected, shifted = outputs
    for head, n in (("human", 7611), ("mouse", 2608)):
        assert out[head].shape == (1, 6144, n)
        ref = expected[head]
        # Not a degenerate model: outputs vary along the sequence by a sizeable fraction of their mean.
        assert float(ref.std(dim=1).mean() / ref.mean()) > 0.1
        assert _rel_err(out[head], ref) <= 1e-4
    # The tolerance is tight enough to see a 1-bp shift of the input.
    assert _rel_err(shifted, expected["human"]) > 1e-2


@pytest.mark.skipif(not os.environ.get("ENFORMER_BATCH_SLOW_ORACLE"), reason="set ENFORMER_BATCH_SLOW_ORACLE=1")
def test_forward_matches_reference_at_fixed_widths():
    ours = Borzoi(BorzoiConfig.from_dict(SMALL))
    _randomise(ours, 3)
    ref = _reference(SMALL, None)
    ref.load_state_dict(ours.state_dict())
    x = _onehot(1, 4)
    with torch.no_grad():
        out, expected = ours(x, head="human"), ref(x.transpose(1, 2)).transpose(1, 2)
    assert float(expected.std(dim=1).mean() / expected.mean()) > 0.1
    assert _rel_err(out, expected) <= 1e-4


def test_checkpoint_saved_by_reference_loads(pair, outputs, tmp_path):
    ours, ref = pair
    x, out, _, _ = outputs
    # Our width fields ride along in borzoi-pytorch's config (it keeps unknown fields), as a real
    # checkpoint's config.json would carry borzoi-pytorch's fields only.
    for k, v in NARROW.items():
        setattr(ref.config, k, list(v) if isinstance(v, tuple) else v)
    ref.save_pretrained(tmp_path / "hf")
    raw = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert raw["model_type"] == "borzoi" and (tmp_path / "hf" / "model.safetensors").is_file()
    loaded = load_model(str(tmp_path / "hf"))
    assert loaded.family == "borzoi"
    assert loaded.geometry.input_length == 524_288 and loaded.geometry.bin_size == 32
    assert loaded.geometry.output_bins == 6144
    # No table in the checkpoint: the bundled Borzoi human table (7,611 rows); none for mouse.
    assert loaded.tracks["human"] is not None and loaded.tracks["human"].identifiers[0] == "CNhs10608+"
    assert loaded.tracks["mouse"] is None
    with torch.no_grad():
        again = loaded.model(x, head="human")
    torch.testing.assert_close(again, out["human"], rtol=0, atol=0)


def test_unsquash_matches_reference():
    bp = pytest.importorskip("borzoi_pytorch")
    import pandas as pd
    from borzoi_pytorch.config_borzoi import BorzoiConfig as RefConfig

    from enformer_batch.borzoi import unsquash_tensor
    from enformer_batch.families import DATA_DIR
    from enformer_batch.tracks import read_track_table

    table = read_track_table(DATA_DIR / "borzoi_targets_human.txt")
    df = pd.read_table(DATA_DIR / "borzoi_targets_human.txt").rename(columns={"Unnamed: 0": "index"})
    with torch.device("cpu"):
        annotated = bp.AnnotatedBorzoi(RefConfig(dim=32, depth=1, heads=2, attn_dim_key=8, attn_dim_value=16), df)
    g = torch.Generator().manual_seed(5)
    # Predictions spanning both sides of every clip_soft (squashed values reach ~10 on scale-0.01 tracks).
    pred = torch.rand(2, 7611, 16, generator=g) * torch.tensor([1.0, 20.0, 500.0, 3000.0]).repeat(4)
    keep = annotated.sense_tracks  # borzoi-pytorch unsquashes its sense + unstranded tracks
    expected = annotated._undo_squashed_scale(pred[:, keep, :])
    ours = unsquash_tensor(pred.transpose(1, 2), table).transpose(1, 2)[:, keep, :]
    assert float((pred[:, keep] / torch.tensor(df.scale.values[keep])[None, :, None] > 384).float().mean()) > 0.1
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=0)


def _naive_rotary_attention(x: torch.Tensor, attn) -> torch.Tensor:
    """Flashzoi's attention written out: complex rotations, one loop per head, query head i -> K/V i // 2."""
    b, n, dim = x.shape
    h, hkv, d, rd = attn.heads, attn.kv_heads, attn.head_dim, attn.rotary_dim
    w, bias = attn.mha["Wqkv"].weight.double(), attn.mha["Wqkv"].bias.double()
    qkv = x.double() @ w.T + bias
    q = qkv[..., :dim].reshape(b, n, h, d)
    k = qkv[..., dim : dim + hkv * d].reshape(b, n, hkv, d)
    v = qkv[..., dim + hkv * d :].reshape(b, n, hkv, d)
    theta = attn.base ** (-torch.arange(0, rd, 2, dtype=torch.float64) / rd)
    turn = torch.polar(torch.ones(n, rd // 2, dtype=torch.float64), torch.arange(n)[:, None] * theta[None, :])

    def rot(t):
        z = torch.complex(t[..., : rd // 2], t[..., rd // 2 : rd]) * turn[None, :, None, :]
        return torch.cat((z.real, z.imag, t[..., rd:]), dim=-1)

    q, k = rot(q), rot(k)
    heads = []
    for i in range(h):
        j = i // (h // hkv)
        p = torch.softmax(q[:, :, i] @ k[:, :, j].transpose(1, 2) / d**0.5, dim=-1)
        heads.append(p @ v[:, :, j])
    out = torch.cat(heads, dim=-1)
    return (out @ attn.mha["out_proj"].weight.double().T + attn.mha["out_proj"].bias.double()).float()


def test_rotary_attention_matches_direct_computation():
    from enformer_batch.borzoi import RotaryAttention

    torch.manual_seed(0)
    attn = RotaryAttention(dim=64, heads=4, rotary_dim=8, base=20_000.0).eval()
    x = torch.randn(2, 50, 64)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _naive_rotary_attention(x, attn), rtol=1e-4, atol=1e-5)
        # Positions matter: rotating the sequence order changes the output beyond the permutation.
        perm = attn(x.flip(1)).flip(1)
        assert float((perm - attn(x)).abs().max()) > 1e-3
    # rotary() leaves the features past rotary_dim alone.
    t = torch.randn(1, 2, 5, 12)
    assert torch.equal(rotary(t, 8, 10_000.0)[..., 8:], t[..., 8:])


def test_flashzoi_config_runs_at_full_geometry(tmp_path):
    cfg = BorzoiConfig.from_dict({**SMALL, **NARROW, "flashed": True, "heads": 4, "rotary_dim": 8})
    model = Borzoi(cfg)
    _randomise(model, 7)
    from safetensors.torch import save_file

    (tmp_path / "fz").mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "fz" / "model.safetensors"))
    (tmp_path / "fz" / "config.json").write_text(json.dumps({**cfg.to_dict(), "model_type": "borzoi"}))
    loaded = load_model(str(tmp_path / "fz"))
    assert loaded.config.flashed
    with torch.no_grad():
        y = loaded.model(_onehot(1, 8), head="human")
    assert y.shape == (1, 6144, 7611) and bool(torch.isfinite(y).all())


def test_checkpoint_of_neither_kind_is_one_clear_error(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "model.safetensors").write_bytes(b"")
    (tmp_path / "c" / "config.json").write_text(json.dumps({"model_type": "prime", "architectures": ["Prime"]}))
    with pytest.raises(CheckpointError, match=r"neither an Enformer nor a Borzoi checkpoint: .*model_type 'prime'"):
        load_model(str(tmp_path / "c"))
    (tmp_path / "c" / "config.json").write_text(json.dumps({"hidden_size": 4}))
    with pytest.raises(CheckpointError, match=r"neither an Enformer nor a Borzoi checkpoint: .*no model_type"):
        load_model(str(tmp_path / "c"))


def test_demo_borzoi_and_replicate_ensemble():
    demo = load_model("demo-borzoi")
    assert demo.family == "borzoi" and demo.output_heads == {"human": 12, "mouse": 4}
    assert demo.tracks["human"].strand_pairs() == (1, 0, 3, 2, 5, 4, 7, 6, 8, 9, 10, 11)
    pair = load_model("demo-borzoi, demo-borzoi")
    assert pair.model_id == "demo-borzoi,demo-borzoi"
    assert [sha for _, sha in pair.replicates] == [demo.weights_sha256] * 2
    assert pair.weights_sha256 != demo.weights_sha256
    # Two replicates: the mean of their predictions (here the same weights twice, and one perturbed copy).
    other = load_model("demo-borzoi")
    with torch.no_grad():
        other.model.human_head.bias.add_(0.5)
    from enformer_batch.loader import Ensemble

    assert isinstance(pair.model, Ensemble) and len(pair.model.members) == 2
    assert pair.geometry == demo.geometry and pair.tracks["human"] == demo.tracks["human"]
    ens = Ensemble([demo.model, other.model]).eval()
    x = _onehot(1, 9)
    with torch.no_grad():
        a, b, mean = demo.model(x, head="human"), other.model(x, head="human"), ens(x, head="human")
    torch.testing.assert_close(mean, (a + b) / 2)
    assert float((a - b).abs().min()) > 0
    with pytest.raises(CheckpointError, match="replicates differ"):
        load_model("demo,demo-borzoi")


def test_official_enformer_tables_for_headless_checkpoints(tmp_path):
    from safetensors.torch import save_file

    from enformer_batch.model import Enformer, EnformerConfig, canonical_state_dict
    from enformer_batch.tracks import select_tracks

    cfg = EnformerConfig(dim=48, depth=1, heads=2, attn_dim_key=16, dim_divisible_by=16,
                         output_heads={"human": 5313, "mouse": 1643})
    model = Enformer(cfg)
    (tmp_path / "e").mkdir()
    save_file({k: v.contiguous() for k, v in canonical_state_dict(model).items()},
              str(tmp_path / "e" / "model.safetensors"))
    (tmp_path / "e" / "config.json").write_text(json.dumps({**cfg.to_dict(), "model_type": "enformer"}))
    loaded = load_model(str(tmp_path / "e"))
    human, mouse = loaded.tracks["human"], loaded.tracks["mouse"]
    assert len(human) == 5313 and human.identifiers[0] == "ENCFF833POA"
    assert len(mouse) == 1643 and mouse.identifiers[0] == "ENCFF866ZTV"
    cage = select_tracks("^CAGE:", 5313, human)
    assert len(cage) == 638 and all(human.descriptions[i].startswith("CAGE:") for i in cage)
    assert not loaded.config.use_tf_gamma  # explicit in its config.json
    # Heads of other sizes get no table (they are not the official model's tracks).
    assert load_model("demo").tracks["human"].identifiers[0] == "DEMO0000001"


def test_enformer_tf_gamma_comes_from_the_checkpoint_not_its_url(tmp_path):
    from enformer_batch.model import _enformer_config

    official = {"dim": 1536, "heads": 8, "depth": 11, "model_type": "enformer"}
    assert _enformer_config(official, None).use_tf_gamma  # TF port: no field, 192 features per head
    assert not _enformer_config({**official, "use_tf_gamma": False}, None).use_tf_gamma
    assert not _enformer_config({"dim": 48, "heads": 2}, None).use_tf_gamma
    assert _enformer_config({"dim": 48, "heads": 2}, True).use_tf_gamma


def test_bins_and_tracks_layout_of_predictions():
    demo = load_model("demo-borzoi")
    x = _onehot(1, 10)
    with torch.no_grad():
        y = demo.model(x, head="human").numpy()
        y_mouse = demo.model(x, head="mouse").numpy()
    assert y.shape == (1, 6144, 12) and y_mouse.shape == (1, 6144, 4)
    assert np.all(y > 0)  # softplus


# ----------------------------------------------------------------------------------------------------
# End to end: a Borzoi atlas on a real local Ray cluster (geometry from the model, strand-paired --rc,
# --unsquash recorded), read back by DuckDB, every value checked against direct model calls.

B_INPUT, B_BIN, B_BINS = 524_288, 32, 6144
B_SPAN, B_CONTEXT = B_BIN * B_BINS, (524_288 - 32 * 6144) // 2


@pytest.fixture(scope="module")
def borzoi_genome(tmp_path_factory) -> str:
    from enformer_batch.demo import DemoChrom, write_demo_genome

    # chrA: two windows and a short last bin (250,007 = 7812 * 32 + 23); chrB: one window, with an N run.
    genome = (DemoChrom("chrA", 250_007), DemoChrom("chrB", 40_000, ((10_000, 12_000),)))
    return write_demo_genome(str(tmp_path_factory.mktemp("bgenome") / "b.fa"), genome)


def _window(seq: str, k: int) -> str:
    """The contract's input of window k: the chromosome from k * span - context on, N outside it."""
    start = k * B_SPAN - B_CONTEXT
    return "".join(seq[p] if 0 <= p < len(seq) else "N" for p in range(start, start + B_INPUT))


def _direct(model, seq: str, k: int, pairs: list[int]) -> np.ndarray:
    """The contract's window k, forward and reverse complement (bins reversed, strand pairs swapped)."""
    from .reference import onehot

    x = torch.from_numpy(onehot(_window(seq, k)))[None]
    with torch.no_grad():
        fwd = model(x, head="human")[0].numpy()
        rev = model(torch.from_numpy(np.ascontiguousarray(x.numpy()[:, ::-1, ::-1])), head="human")[0].numpy()
    return (fwd + rev[::-1][:, pairs]) / 2


def test_borzoi_atlas_end_to_end(ray_cluster, borzoi_genome, tmp_path):
    import duckdb

    from enformer_batch import PredictConfig, predict, validate
    from enformer_batch.borzoi import unsquash_tensor

    from .reference import parse_fasta

    common = dict(fasta=borzoi_genome, model="demo-borzoi", rc=True, dtype="float32", progress=False,
                  threads_per_worker=1)
    out = tmp_path / "atlas"
    predict(PredictConfig(out=str(out), **common))
    report = validate(str(out), fasta=borzoi_genome)
    assert report.ok, report.table()
    manifest = json.loads((out / "_manifest.json").read_text())["identity"]
    assert manifest["geometry"] == {"input_length": B_INPUT, "bin_size": B_BIN, "output_bins": B_BINS}
    assert manifest["stride"] == B_SPAN
    demo = load_model("demo-borzoi")
    assert manifest["model"]["family"] == "borzoi"
    assert manifest["model"]["replicates"] == [{"id": "demo-borzoi", "weights_sha256": demo.weights_sha256}]
    rows = duckdb.sql(f"select * from read_parquet('{out}/*/*.parquet', hive_partitioning=true) "
                      "order by chrom, start").fetchnumpy()
    table = demo.tracks["human"]
    names = list(table.identifiers)
    pairs = list(table.strand_pairs())
    seqs = parse_fasta(borzoi_genome)
    for chrom, length in (("chrA", 250_007), ("chrB", 40_000)):
        mine = rows["chrom"] == chrom
        n = -(-length // B_BIN)
        assert np.array_equal(rows["start"][mine], np.arange(n) * B_BIN)
        assert rows["end"][mine][-1] == length
        block = np.stack([np.asarray(rows[c][mine], dtype=np.float64) for c in names], axis=1)
        for k in range(-(-length // B_SPAN)):
            lo, hi = k * B_BINS, min((k + 1) * B_BINS, n)
            expected = _direct(demo.model, seqs[chrom], k, pairs)[: hi - lo]
            np.testing.assert_allclose(block[lo:hi], expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())

    # --unsquash on chrB: the same predictions through Borzoi's inverse transform, recorded in the manifest.
    out2 = tmp_path / "unsquashed"
    predict(PredictConfig(out=str(out2), chroms=("chrB",), unsquash=True, **common))
    assert json.loads((out2 / "_manifest.json").read_text())["identity"]["model"]["unsquash"] is True
    rows2 = duckdb.sql(f"select * from read_parquet('{out2}/*/*.parquet', hive_partitioning=true) "
                       "order by start").fetchnumpy()
    squashed = torch.tensor(np.stack([np.asarray(rows[c][rows["chrom"] == "chrB"]) for c in names], axis=1))
    np.testing.assert_allclose(np.stack([np.asarray(rows2[c]) for c in names], axis=1),
                               unsquash_tensor(squashed, table).numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="--dtype float32"):
        predict(PredictConfig(out=str(tmp_path / "x"), **{**common, "dtype": "float16"}, unsquash=True))


@pytest.mark.parametrize("demo", ["demo", "demo-borzoi"])
def test_each_family_declares_what_its_built_model_has(demo):
    """The family protocol without weights (geometry, heads: what dry runs use) agrees with the built network;
    a family is recognised from its config with or without model_type, and from the config a replica reports."""
    from enformer_batch.families import FAMILIES, Family, demo_checkpoint, family_for_config, family_of

    raw = json.loads((demo_checkpoint(demo) / "config.json").read_text())
    family = family_of(raw, demo)
    assert isinstance(family, Family) and FAMILIES[family.name] is family
    config, model = family.build(raw)
    assert family.geometry(raw) == model.geometry
    assert family.heads(raw) == dict(config.output_heads)
    untyped = {k: v for k, v in raw.items() if k not in ("model_type", "architectures")}
    assert family_of(untyped, demo) is family
    assert family_for_config(config.to_dict()) is family
    loaded = load_model(demo)
    assert loaded.family == family.name
    with pytest.raises(CheckpointError, match="does not fit the model config"):  # the other demo's weights
        other = "demo-borzoi" if demo == "demo" else "demo"
        family.load_weights(model, load_model(other).model.state_dict(), "test")


def test_planner_knows_borzoi(tmp_path):
    from enformer_batch.estimate import GPU_PROFILES, plan_run
    from enformer_batch.families import FAMILIES

    sizes = tmp_path / "g.chrom.sizes"
    sizes.write_text("chr1\t1000000\nchr2\t196608\n")
    plan = plan_run(str(sizes), model="borzoi", gpu="H100")
    assert (plan.geometry.input_length, plan.geometry.bin_size, plan.geometry.output_bins) == (524_288, 32, 6144)
    assert plan.tracks == 7611 and plan.family == "borzoi"
    assert plan.windows == -(-1_000_000 // 196_608) + 1
    assert plan.bins == -(-1_000_000 // 32) + 196_608 // 32
    # Borzoi's measured share of the peak (H200, compiled), not Enformer's: 989 × 0.20 / 4.91.
    assert plan.windows_per_second == pytest.approx(GPU_PROFILES["H100"].windows_per_second_at(4.91, 0.20))
    assert FAMILIES["borzoi"].tflop_per_window > FAMILIES["enformer"].tflop_per_window
    # Named selections use the bundled Borzoi table; the demo's own table and geometry come from its files.
    cage = plan_run(str(sizes), model="borzoi", tracks="^CAGE:").tracks
    assert 0 < cage < 7611
    assert plan_run(str(sizes), model="demo-borzoi", tracks="^RNA:").tracks == 4
    demo = plan_run(str(sizes), model="demo-borzoi")
    assert demo.geometry == plan.geometry and demo.tracks == 12
    # Replicates multiply the forward passes.
    ens = plan_run(str(sizes), model="demo-borzoi,demo-borzoi", rc=True, windows_per_second=1, price_per_hour=1)
    assert ens.passes_per_window == 4 and ens.replicates == 2
    assert plan_run(str(sizes), model="enformer").geometry.bin_size == 128


def test_cli_names_what_a_foreign_checkpoint_holds(tmp_path, capsys):
    from enformer_batch.cli import main

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "pytorch_model.bin").write_bytes(b"")
    (tmp_path / "c" / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    assert main(["tracks", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"enformer-batch: error: checkpoint {tmp_path / 'c'} is neither an Enformer nor a Borzoi "
                   "checkpoint: its config.json has model_type 'bert', architectures ['BertModel']"]


def test_borzoi_variant_scores_end_to_end(ray_cluster, borzoi_genome, tmp_path):
    """score-variants with the demo Borzoi: centred on its own 524,288-bp input; SAD over its 6,144 bins."""
    from enformer_batch import VariantConfig, score_variants, validate

    from .reference import onehot, parse_fasta, variant_sequences

    seq = parse_fasta(borzoi_genome)["chrA"]
    records = [(120_000, seq[119_999], "A" if seq[119_999] != "A" else "C"),
               (200_000, seq[199_999:200_003], seq[199_999])]  # an SNV and a 3-bp deletion
    vcf = tmp_path / "v.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n"
                   + "".join(f"chrA\t{p}\t.\t{r}\t{a}\n" for p, r, a in records))
    out = tmp_path / "scores"
    summary = score_variants(VariantConfig(vcf=str(vcf), fasta=borzoi_genome, out=str(out), model="demo-borzoi",
                                           threads_per_worker=1, progress=False))
    assert summary.counts == {"ok": 2} and validate(str(out), vcf=str(vcf)).ok
    import duckdb

    demo = load_model("demo-borzoi")
    names = list(demo.tracks["human"].identifiers)
    rows = duckdb.sql(f"select * from read_parquet('{out}/*/*.parquet') order by pos").fetchnumpy()
    for i, (pos, ref, alt) in enumerate(records):
        ref_seq, alt_seq = variant_sequences(seq, pos, ref, alt, length=B_INPUT)
        with torch.no_grad():
            r, a = (demo.model(torch.from_numpy(onehot(s))[None], head="human")[0].double().numpy()
                    for s in (ref_seq, alt_seq))
        want = (a - r).sum(axis=0)
        got = np.array([rows[f"sad:{n}"][i] for n in names], dtype=np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def _replicate_pair(tmp_path) -> tuple[str, str]:
    """Two replicate checkpoints of the demo Borzoi: its own weights, and a copy with every bias moved."""
    import shutil
    from importlib import resources

    from safetensors.torch import load_file, save_file

    first, second = tmp_path / "rep0", tmp_path / "rep1"
    shutil.copytree(str(resources.files("enformer_batch") / "demo_borzoi"), first)
    shutil.copytree(first, second)
    weights = load_file(str(second / "model.safetensors"))
    for name in weights:
        if name.endswith("bias"):
            weights[name] = weights[name] + 0.05
    save_file(weights, str(second / "model.safetensors"))
    return str(first), str(second)


def test_replicate_ensemble_atlas_is_the_mean_and_its_manifest_lists_every_replicate(ray_cluster, borzoi_genome,
                                                                                     tmp_path):
    """--model A,B through the engine: one replica holds both, writes their mean, and records each hash."""
    import duckdb

    from enformer_batch import PredictConfig, predict

    from .reference import parse_fasta

    first, second = _replicate_pair(tmp_path)
    out = tmp_path / "ensemble"
    predict(PredictConfig(fasta=borzoi_genome, out=str(out), model=f"{first},{second}", chroms=("chrB",),
                          dtype="float32", progress=False, threads_per_worker=1))
    identity = json.loads((out / "_manifest.json").read_text())["identity"]["model"]
    singles = [load_model(first), load_model(second)]
    assert singles[0].weights_sha256 != singles[1].weights_sha256
    assert identity["replicates"] == [{"id": s.model_id, "weights_sha256": s.weights_sha256} for s in singles]
    assert identity["weights_sha256"] == load_model(f"{first},{second}").weights_sha256
    names = list(singles[0].tracks["human"].identifiers)
    rows = duckdb.sql(f"select * from read_parquet('{out}/*/*.parquet') order by start").fetchnumpy()
    got = np.stack([np.asarray(rows[c], dtype=np.float64) for c in names], axis=1)
    seq = parse_fasta(borzoi_genome)["chrB"]
    from .reference import onehot

    x = torch.from_numpy(onehot(_window(seq, 0)))[None]
    with torch.no_grad():
        each = [s.model(x, head="human")[0].double().numpy()[: got.shape[0]] for s in singles]
    assert np.abs(each[0] - each[1]).max() > 1e-3 * np.abs(each[0]).max()  # the replicates do differ
    want = (each[0] + each[1]) / 2
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_borzoi_mutagenesis_end_to_end(ray_cluster, borzoi_genome, tmp_path):
    """mutagenesis --model demo-borzoi: every mutant of a 2-bp region, SAD over Borzoi's 6,144 bins."""
    import duckdb

    from enformer_batch import MutagenesisConfig, mutagenesis

    from .reference import onehot, parse_fasta, variant_sequences

    out = tmp_path / "mutagenesis"
    summary = mutagenesis(MutagenesisConfig(fasta=borzoi_genome, regions="chrA:150000-150002", out=str(out),
                                            model="demo-borzoi", progress=False, threads_per_worker=1))
    assert summary.counts == {"ok": 6}
    demo = load_model("demo-borzoi")
    names = list(demo.tracks["human"].identifiers)
    rows = duckdb.sql(f"select * from read_parquet('{out}/*/*.parquet') order by pos, alt").fetchnumpy()
    assert list(rows["pos"]) == [150_001] * 3 + [150_002] * 3  # pos = q + 1
    seq = parse_fasta(borzoi_genome)["chrA"]
    # One shared reference window for the region [150000, 150002): its midpoint 150001 at input index L // 2.
    reference, _ = variant_sequences(seq, 150_001 + 1, "", "", length=B_INPUT)
    start = 150_001 - B_INPUT // 2
    with torch.no_grad():
        r = demo.model(torch.from_numpy(onehot(reference))[None], head="human")[0].double().numpy()
    for i in (0, 4):  # one mutant at each position, against the shared reference
        q, ref, alt = int(rows["pos"][i]) - 1, str(rows["ref"][i]), str(rows["alt"][i])
        assert ref == seq[q] == reference[q - start]
        mutant = reference[: q - start] + alt + reference[q - start + 1 :]
        with torch.no_grad():
            a = demo.model(torch.from_numpy(onehot(mutant))[None], head="human")[0].double().numpy()
        want = (a - r).sum(axis=0)
        got = np.array([rows[f"sad:{n}"][i] for n in names], dtype=np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
