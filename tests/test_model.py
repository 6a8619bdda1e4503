"""Enformer architecture and checkpoint loading, checked against enformer-pytorch as an oracle.

All forwards use the full 196,608-bp input at small widths; the full-size config is only constructed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from enformer_batch.families import CheckpointError
from enformer_batch.loader import load_model
from enformer_batch.model import (
    SEQUENCE_LENGTH,
    Enformer,
    EnformerConfig,
    calibrate_batchnorm,
    canonical_state_dict,
)

SMALL = dict(
    dim=48, depth=1, heads=2, attn_dim_key=16, dim_divisible_by=16, output_heads={"human": 8, "mouse": 4}
)
# use_tf_gamma needs TF's table shape (32 gamma features = dim // heads = 192).
SMALL_TF = dict(SMALL, dim=192, heads=1, use_tf_gamma=True)


def _onehot(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.one_hot(torch.randint(0, 4, (batch, SEQUENCE_LENGTH), generator=g), 4).float()


def _random_model(kw: dict, seed: int = 0) -> Enformer:
    """Our model with every parameter random (incl. attention output, zero at init) and calibrated BN."""
    torch.manual_seed(seed)
    model = Enformer(EnformerConfig.from_dict(kw))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in canonical_state_dict(model).items():
            if name.endswith(("to_out.weight", "bias")) and p.is_floating_point():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    calibrate_batchnorm(model, [_onehot(1, seed + 100)])
    return model.eval()


def _reference(kw: dict):
    ep = pytest.importorskip("enformer_pytorch")
    return ep.Enformer.from_hparams(**kw).eval()


def _max_rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def small_pair():
    ours = _random_model(SMALL)
    ref = _reference(SMALL)
    ref.load_state_dict(ours.state_dict())  # strict: our state_dict (with _trunk aliases) fits theirs
    return ours, ref


def test_full_size_parameter_names_and_shapes_equal_reference():
    ep = pytest.importorskip("enformer_pytorch")
    with torch.device("meta"):
        ours = Enformer(EnformerConfig())
        ref = ep.Enformer.from_hparams()
    a = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert a == b
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize("kw", [SMALL, SMALL_TF], ids=["pytorch_gamma", "tf_gamma"])
def test_forward_matches_reference(kw):
    ours = _random_model(kw)
    ref = _reference(kw)
    ref.load_state_dict(ours.state_dict())
    x = _onehot(1, 1)
    with torch.no_grad():
        out, expected = ours(x), ref(x)
    assert set(out) == {"human", "mouse"}
    for head in out:
        assert out[head].shape == (1, 896, kw["output_heads"][head])
        assert float(expected[head].std(dim=1).mean()) > 1e-3, "degenerate test model"
        assert _max_rel_err(out[head], expected[head]) <= 1e-4
    with torch.no_grad():
        single = ours(x, head="mouse")
    torch.testing.assert_close(single, out["mouse"], rtol=0, atol=0)


def test_checkpoint_saved_by_reference_loads(small_pair, tmp_path):
    ours, ref = small_pair
    x = _onehot(2, 2)
    with torch.no_grad():
        expected = ref(x)
    from safetensors.torch import save_model

    # save_pretrained (transformers refuses safetensors for the aliased trunk) writes pytorch_model.bin with
    # both the named modules and the _trunk.* aliases, plus an HF config.json.
    ref.save_pretrained(tmp_path / "hf", safe_serialization=False)
    # safetensors' save_model keeps one name per shared tensor (often the _trunk.* alias).
    (tmp_path / "st").mkdir()
    save_model(ref, str(tmp_path / "st" / "model.safetensors"))
    ref.config.to_json_file(str(tmp_path / "st" / "config.json"))
    # torch.save of the raw state_dict + a hand-written config with unknown fields.
    (tmp_path / "bin").mkdir()
    torch.save(ref.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "bin" / "config.json").write_text(json.dumps(dict(SMALL, architectures=["Enformer"], foo=1)))
    for sub in ("hf", "st", "bin"):
        loaded = load_model(str(tmp_path / sub))
        assert not loaded.model.training
        assert loaded.config.output_heads == SMALL["output_heads"]
        assert len(loaded.weights_sha256) == 64
        assert loaded.tracks == {"human": None, "mouse": None}
        with torch.no_grad():
            out = loaded.model(x)
        for head in expected:
            assert _max_rel_err(out[head], expected[head]) <= 1e-4


def _save_ours(model: Enformer, directory, fmt: str = "safetensors") -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(model.config.to_dict()))
    state = {k: v.contiguous() for k, v in canonical_state_dict(model).items()}
    if fmt == "safetensors":
        save_file(state, str(directory / "model.safetensors"))
    else:
        torch.save(state, directory / "pytorch_model.bin")


def test_load_from_file_and_memory_urls(small_pair, tmp_path, monkeypatch):
    fsspec = pytest.importorskip("fsspec")
    ours, _ = small_pair
    _save_ours(ours, tmp_path / "ckpt", fmt="bin")
    (tmp_path / "ckpt" / "targets_mouse.txt").write_text(
        "index\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription\n"
        + "".join(f"{i}\tID{i}\tf\t32\t2\tsum\tCAGE:x{i}\n" for i in range(4))
    )
    monkeypatch.setenv("ENFORMER_BATCH_CACHE", str(tmp_path / "cache"))
    mem = fsspec.filesystem("memory")
    for f in (tmp_path / "ckpt").iterdir():
        mem.pipe(f"/enf-test/{f.name}", f.read_bytes())
    x = _onehot(1, 3)
    with torch.no_grad():
        expected = ours(x)["human"]
    sha = None
    for url in (f"file://{tmp_path / 'ckpt'}", "memory://enf-test"):
        loaded = load_model(url)
        assert loaded.model_id == url
        assert loaded.tracks["mouse"] is not None and loaded.tracks["mouse"].identifiers[3] == "ID3"
        assert loaded.tracks["human"] is None
        sha = sha or loaded.weights_sha256
        assert loaded.weights_sha256 == sha
        with torch.no_grad():
            torch.testing.assert_close(loaded.model(x)["human"], expected, rtol=0, atol=0)
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one cache entry per URL
    # Second load comes from the cache even when the source is gone.
    mem.rm("/enf-test", recursive=True)
    assert load_model("memory://enf-test").weights_sha256 == sha


def test_wrong_shape_checkpoint_is_one_clear_error(small_pair, tmp_path):
    ours, _ = small_pair
    _save_ours(ours, tmp_path / "ckpt")
    bigger = dict(SMALL, output_heads={"human": 9, "mouse": 4})
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(bigger))
    with pytest.raises(
        CheckpointError, match=r"mis-shaped 2: _heads\.human\.0\.weight .*\(checkpoint \(8, 96\)"
    ):
        load_model(str(tmp_path / "ckpt"))
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(dict(SMALL, depth=2)))
    with pytest.raises(CheckpointError, match=r"missing \d+: transformer\.1\."):
        load_model(str(tmp_path / "ckpt"))
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(dict(SMALL, output_heads={"human": 8})))
    with pytest.raises(CheckpointError, match=r"unexpected 2: _heads\.mouse"):
        load_model(str(tmp_path / "ckpt"))


def test_missing_files_are_checkpoint_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(str(tmp_path / "empty"))
    (tmp_path / "empty" / "config.json").write_text(json.dumps(SMALL))
    with pytest.raises(CheckpointError, match="no weights file"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(f"file://{tmp_path / 'nothing-here'}", cache_dir=str(tmp_path / "c"))


def test_config_roundtrip_ignores_unknown_fields():
    cfg = EnformerConfig.from_dict(dict(SMALL, transformers_version="4.0", model_type="enformer"))
    assert EnformerConfig.from_dict(cfg.to_dict()) == cfg
    assert EnformerConfig().filter_list() == [768, 768, 896, 1024, 1152, 1280, 1536]


def _pearson_per_track(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_close_to_fp32(small_pair, precision):
    from enformer_batch.augment import autocast_context

    ours, _ = small_pair
    x = _onehot(1, 4)
    with torch.no_grad():
        ref = ours(x, head="human")[0].numpy()
        with autocast_context(precision, "cpu"):
            low = ours(x, head="human")[0].float().numpy()
    max_err = float(np.abs(low - ref).max())
    rel = max_err / float(np.abs(ref).max())
    r = _pearson_per_track(low, ref)
    print(
        f"\n{precision}: max abs err {max_err:.3e} (rel {rel:.3e}), per-track Pearson min {r.min():.5f} "
        f"mean {r.mean():.5f}"
    )
    assert r.min() > 0.99
    assert rel < (0.1 if precision == "bf16" else 0.02)


def _publish(mem, prefix: str, directory) -> None:
    for f in directory.iterdir():
        mem.pipe(f"{prefix}/{f.name}", f.read_bytes())


def test_cache_is_keyed_by_content_and_checked(small_pair, tmp_path):
    """New bytes at the same URL are fetched again; a cache entry holding other bytes than were downloaded
    is detected and replaced (or refused when the source is gone)."""
    fsspec = pytest.importorskip("fsspec")
    ours, _ = small_pair
    _save_ours(ours, tmp_path / "v1")
    changed = _random_model(SMALL, seed=1)
    _save_ours(changed, tmp_path / "v2")
    mem = fsspec.filesystem("memory")
    cache = str(tmp_path / "cache")
    _publish(mem, "/cache-test", tmp_path / "v1")
    first = load_model("memory://cache-test", cache_dir=cache)
    _publish(mem, "/cache-test", tmp_path / "v2")  # same URL, other weights
    second = load_model("memory://cache-test", cache_dir=cache)
    assert second.weights_sha256 != first.weights_sha256
    x = _onehot(1, 5)
    with torch.no_grad():
        torch.testing.assert_close(second.model(x)["human"], changed(x)["human"], rtol=0, atol=0)
    entries = [p for p in (tmp_path / "cache").glob("*/*") if p.is_dir()]
    assert len(entries) == 2

    # Tamper with the cached weights of the current entry: detected, downloaded again.
    current = max(entries, key=lambda p: (p / ".complete").stat().st_mtime)
    weights = current / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    again = load_model("memory://cache-test", cache_dir=cache)
    assert again.weights_sha256 == second.weights_sha256
    # Source gone: the intact entry still serves; a tampered one is not trusted.
    mem.rm("/cache-test", recursive=True)
    assert load_model("memory://cache-test", cache_dir=cache).weights_sha256 == second.weights_sha256
    for entry in entries:
        w = entry / "model.safetensors"
        w.write_bytes(w.read_bytes()[:-8] + b"\1" * 8)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model("memory://cache-test", cache_dir=cache)


def test_download_checked_against_the_store_declared_sha256(small_pair, tmp_path):
    """Stores that declare a file's sha256 (Hugging Face LFS) have the downloaded bytes checked against it."""
    fsspec = pytest.importorskip("fsspec")
    from fsspec.implementations.memory import MemoryFileSystem

    class DeclaringFS(MemoryFileSystem):
        protocol = "declaring"
        declared: dict = {}

        @classmethod
        def _strip_protocol(cls, path):
            return MemoryFileSystem._strip_protocol(path.replace("declaring://", "memory://", 1))

        def ls(self, path, detail=True, **kwargs):
            out = super().ls(path, detail=detail, **kwargs)
            if detail:
                for d in out:
                    name = d["name"].rsplit("/", 1)[-1]
                    if name in self.declared:
                        d["lfs"] = {"sha256": self.declared[name]}
            return out

    fsspec.register_implementation("declaring", DeclaringFS, clobber=True)
    ours, _ = small_pair
    _save_ours(ours, tmp_path / "ckpt")
    fs = DeclaringFS()
    _publish(fs, "/decl", tmp_path / "ckpt")
    import hashlib

    good = hashlib.sha256((tmp_path / "ckpt" / "model.safetensors").read_bytes()).hexdigest()
    DeclaringFS.declared = {"model.safetensors": "0" * 64}
    with pytest.raises(CheckpointError, match="the store declares 0000"):
        load_model("declaring://decl", cache_dir=str(tmp_path / "c"))
    DeclaringFS.declared = {"model.safetensors": good}
    assert load_model("declaring://decl", cache_dir=str(tmp_path / "c")).weights_sha256 == good


class _ReportingFS:
    """A memory file system under its own protocol whose listing reports what ``reported`` says per file name
    (a store's size, ETag...), and whose ``info`` adds ``metadata`` (S3's encryption headers)."""

    @staticmethod
    def register(protocol: str):
        from fsspec import register_implementation
        from fsspec.implementations.memory import MemoryFileSystem

        class ReportingFS(MemoryFileSystem):
            reported: dict = {}
            metadata: dict = {}

            @classmethod
            def _strip_protocol(cls, path):
                return MemoryFileSystem._strip_protocol(path.replace(f"{protocol}://", "memory://", 1))

            def ls(self, path, detail=True, **kwargs):
                out = super().ls(path, detail=detail, **kwargs)
                for d in out if detail else ():
                    d.update(self.reported.get(d["name"].rsplit("/", 1)[-1], {}))
                return out

            def info(self, path, **kwargs):
                return {**super().info(path, **kwargs), **self.metadata}

        ReportingFS.protocol = protocol
        register_implementation(protocol, ReportingFS, clobber=True)
        return ReportingFS


def test_download_checked_against_the_store_reported_size_and_etag(tmp_path):
    """A download whose size or MD5 differs from what the store's listing reports (a truncated transfer, a
    proxy serving other bytes) is refused; ETags that are not an MD5 (multipart, S3 KMS) are not compared."""
    import hashlib

    pytest.importorskip("fsspec")
    fs_class = _ReportingFS.register("reporting")
    _save_ours(_random_model(SMALL), tmp_path / "ckpt")
    data = (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    md5, sha = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    fs = fs_class()
    _publish(fs, "/rep", tmp_path / "ckpt")

    def load(reported: dict, metadata: dict | None = None):
        fs_class.reported, fs_class.metadata = {"model.safetensors": reported}, metadata or {}
        # The cache is keyed by what the listing reports: every case downloads afresh.
        return load_model("reporting://rep", cache_dir=str(tmp_path / "cache"))

    with pytest.raises(CheckpointError, match=rf"model.safetensors: the downloaded bytes have size {len(data)} "
                                              rf"where the store declares {len(data) + 1}"):
        load({"size": len(data) + 1})
    with pytest.raises(CheckpointError, match=rf"ETag md5 {md5} where the store declares 0{{32}}"):
        load({"ETag": '"' + "0" * 32 + '"'})
    assert load({"ETag": f'"{md5}"'}).weights_sha256 == sha
    assert load({"ETag": '"' + "0" * 32 + '-3"'}).weights_sha256 == sha  # multipart: not an MD5
    assert load({"ETag": '"' + "0" * 32 + '"'}, {"ServerSideEncryption": "aws:kms"}).weights_sha256 == sha
    import base64

    with pytest.raises(CheckpointError, match="md5"):
        load({"md5Hash": base64.b64encode(b"\0" * 16).decode()})


def test_the_weights_digest_is_that_of_the_bytes_loaded(tmp_path, monkeypatch):
    """A weights file replaced while a replica loads it: the model keeps the bytes it read, and the digest it
    reports (what the run records and replicas are checked against) is theirs, not the new file's."""
    import hashlib

    first, second = _random_model(SMALL, seed=0), _random_model(SMALL, seed=1)
    _save_ours(first, tmp_path / "ckpt")
    _save_ours(second, tmp_path / "other")
    weights = tmp_path / "ckpt" / "model.safetensors"
    original = hashlib.sha256(weights.read_bytes()).hexdigest()
    load_into = Enformer.load_state_dict

    def load_then_replace(model, state, *args, **kwargs):
        result = load_into(model, state, *args, **kwargs)
        weights.write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
        return result

    monkeypatch.setattr(Enformer, "load_state_dict", load_then_replace)
    loaded = load_model(str(tmp_path / "ckpt"))
    assert loaded.weights_sha256 == original != hashlib.sha256(weights.read_bytes()).hexdigest()
    x = _onehot(1, 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x)["human"], first(x)["human"], rtol=0, atol=0)


def test_cached_weights_replaced_after_their_check_are_refused(tmp_path, monkeypatch):
    """A cache entry checked intact and then changed on disk before the weights are read is not loaded as if
    it held the downloaded bytes; the next load downloads it afresh."""
    import hashlib

    fsspec = pytest.importorskip("fsspec")
    import enformer_batch.loader as loader

    _save_ours(_random_model(SMALL, seed=0), tmp_path / "v1")
    _save_ours(_random_model(SMALL, seed=1), tmp_path / "other")
    good = hashlib.sha256((tmp_path / "v1" / "model.safetensors").read_bytes()).hexdigest()
    mem = fsspec.filesystem("memory")
    _publish(mem, "/swap-test", tmp_path / "v1")
    cache = str(tmp_path / "cache")
    assert load_model("memory://swap-test", cache_dir=cache).weights_sha256 == good
    verify = loader._verify_entry

    def verify_then_swap(entry):
        record = verify(entry)
        if record is not None:  # checked intact; now someone replaces the weights
            (entry / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
        return record

    monkeypatch.setattr(loader, "_verify_entry", verify_then_swap)
    with pytest.raises(CheckpointError, match="changed after it was checked"):
        load_model("memory://swap-test", cache_dir=cache)
    monkeypatch.setattr(loader, "_verify_entry", verify)
    assert load_model("memory://swap-test", cache_dir=cache).weights_sha256 == good


def _mutants(reference: torch.Tensor, sites: list[int]) -> torch.Tensor:
    """One-hot copies of ``reference`` ``[1, L, 4]``, each with the base at one site changed."""
    x = reference.repeat(len(sites), 1, 1).clone()
    for k, p in enumerate(sites):
        x[k, p] = torch.roll(x[k, p], 1)
    return x


def test_forward_near_equals_the_full_forward_wherever_the_change_is() -> None:
    """Mutants recompute the conv tower only around the change; the result is the full forward's."""
    model = load_model("demo").model.eval()
    length = model.geometry.input_length
    g = torch.Generator().manual_seed(7)
    reference = torch.nn.functional.one_hot(torch.randint(0, 4, (1, length), generator=g), 4).float()
    with torch.inference_mode():
        tower = model.tower(reference)
        full_reference = model(reference, head="human")
        for sites in ([98_304, 98_340, 98_500], [0, 3, 200], [length - 1, length - 130], [70_000]):
            x = _mutants(reference, sites)
            near, full = model.forward_near(x, reference, tower, "human"), model(x, head="human")
            assert (full - full_reference).abs().max() > 0  # the change reaches the output
            torch.testing.assert_close(near, full, rtol=1e-5, atol=1e-6 * float(full.abs().max()))
        # Nothing changed: the reference's own prediction; changes far apart: the full forward (not local).
        torch.testing.assert_close(model.forward_near(reference, reference, tower, "human"), full_reference)
        apart = _mutants(reference, [1_000])
        apart[0, 150_000] = torch.roll(apart[0, 150_000], 1)
        torch.testing.assert_close(model.forward_near(apart, reference, tower, "human"), model(apart, head="human"))
    assert model.tower_radius == 7 + 2 * (2 + 4 + 8 + 16 + 32 + 64)  # stem width 15; width 5 at each halving


def test_predict_near_gives_predict_on_device_values_with_augmentation_and_track_selection() -> None:
    from enformer_batch.inference import InferenceSettings, Predictor

    settings = InferenceSettings(batch_size=4, dtype="float32", rc=True, shifts=(-1, 0, 1), tracks="0,3,5")
    predictor = Predictor(settings, device="cpu")
    assert predictor.predicts_near
    length = predictor.info.geometry.input_length
    rng = np.random.default_rng(8)
    reference = torch.from_numpy(rng.integers(0, 4, size=length, dtype=np.uint8))
    reference[:5000] = 4  # an N run near the start, as at a chromosome end
    x = reference.repeat(3, 1)
    for k, p in enumerate((98_000, 98_001, 98_255)):
        x[k, p] = (x[k, p] + 1) % 4
    x = torch.cat([reference[None], x])  # the reference itself rides in the batch, as in score_part
    want = predictor.predict_on_device(x)
    got = predictor.predict_near_on_device(reference, x, b"ref")
    assert got.shape == want.shape == (4, 896, 3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))
    # The reference's towers are cached: a second batch of the same part reuses them.
    assert len(predictor._near_cache) == 1 and len(predictor._near_cache[0][1]) == 6  # 3 shifts x 2 strands
    predictor.predict_near_on_device(reference, x[1:], b"ref")
    assert len(predictor._near_cache) == 1
    # An insertion shifts everything after it: not near, so the plain forward, and no reference tower computed.
    shifted = torch.cat([reference[None, :1], reference[None, :-1]], dim=1)
    torch.testing.assert_close(predictor.predict_near_on_device(reference, shifted, b"other"),
                               predictor.predict_on_device(shifted))
    assert [key for key, _ in predictor._near_cache] == [b"ref"]
