"""Loading checkpoints of any family: local directories, the packaged demos, remote stores (cached), ensembles.

A checkpoint is a directory (or fsspec URL) holding ``config.json``, ``model.safetensors`` or
``pytorch_model.bin`` and optionally ``targets_<head>.txt`` track tables, in the layout of the Hugging Face
checkpoints (``EleutherAI/enformer-official-rough``, ``johahi/borzoi-replicate-*``). The family comes from
``config.json`` (``families.family_of``), which builds the network and loads the weights; this module only
finds, downloads, checks and reads the files.

Remote checkpoints are cached under ``$ENFORMER_BATCH_CACHE`` (default ``~/.cache/enformer-batch/models``),
keyed by the remote bytes' identity. Every download is checked against what the store reports for the file
(size, an ETag or md5 that is an MD5 of the content, Hugging Face's LFS sha256), and the weights' sha256 a
model reports is that of the very bytes it was built from: the file is read once, hashed and parsed from memory,
so a file replaced or truncated between checking and loading cannot pass for the checked one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor, nn

from .families import DATA_DIR, DEMO_CHECKPOINTS, CheckpointError, Family, demo_checkpoint, family_of
from .tracks import TrackTable, read_track_table
from .windows import Geometry

__all__ = ["CheckpointError", "Ensemble", "LoadedModel", "default_cache_dir", "load_model"]

CONFIG_NAME = "config.json"
WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class LoadedModel:
    """A model ready to run: ``model(onehot [B, L, 4], head=...) -> [B, bins, tracks]`` and what describes it.

    For a replicate ensemble ``model`` averages its members, ``model_id`` is the comma-joined sources,
    ``replicates`` lists each member's source and weights sha256, and ``weights_sha256`` is the sha256 of
    those digests joined by commas (one identity for the whole ensemble).
    """

    model: nn.Module
    config: Any  # the family's config: EnformerConfig, BorzoiConfig
    model_id: str
    weights_sha256: str
    tracks: dict[str, TrackTable | None]
    family: str = "enformer"  # a key of families.FAMILIES
    replicates: tuple[tuple[str, str], ...] = ()

    @property
    def geometry(self) -> Geometry:
        return self.model.geometry

    @property
    def output_heads(self) -> dict[str, int]:
        return dict(self.config.output_heads)


class Ensemble(nn.Module):
    """Replicates of one architecture on one device; the forward pass is the mean of theirs."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    @property
    def geometry(self) -> Geometry:
        return self.members[0].geometry

    @property
    def config(self) -> Any:
        return self.members[0].config

    def forward(self, x: Tensor, head: str | None = None) -> Tensor | dict[str, Tensor]:
        outs = [m(x, head=head) for m in self.members]
        if head is not None:
            return torch.stack([o.float() for o in outs]).mean(0)
        return {h: torch.stack([o[h].float() for o in outs]).mean(0) for h in outs[0]}

    @property
    def focusable(self) -> bool:
        """Whether every member has ``forward_focused`` (Enformers; see ``model.Enformer.forward_focused``)."""
        return all(hasattr(m, "forward_focused") for m in self.members)

    def forward_focused(self, x: Tensor, lo: int, hi: int, head: str) -> Tensor:
        """The mean of the members' ``forward_focused`` (attribution): ``forward(x, head)``'s values, its graph
        reaching the input only around ``[lo, hi)``."""
        return torch.stack([m.forward_focused(x, lo, hi, head).float() for m in self.members]).mean(0)


# ----------------------------------------------------------------------------------------------------
# Files


def _parse_weights(data: bytes, name: str, origin: str) -> dict[str, Tensor]:
    """The tensors of a weights file's bytes (``name`` tells the format)."""
    try:
        if name.endswith(".safetensors"):
            from safetensors.torch import load

            return load(data)
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt/truncated files surface as many exception types
        raise CheckpointError(f"cannot read weights file {origin}: {type(exc).__name__}: {exc}") from exc


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    env = os.environ.get("ENFORMER_BATCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "enformer-batch" / "models"


# What identifies a remote file's bytes, by file system: ETags (S3, HTTP), LFS sha256 / blob ids (Hugging
# Face), generations and hashes (GCS), modification times and sizes (local, memory).
_IDENTITY_FIELDS = (
    "size", "ETag", "etag", "lfs", "blob_id", "sha256", "md5Hash", "crc32c", "generation", "VersionId",
    "mtime", "LastModified", "last_modified", "created",
)


def _file_identity(info: dict[str, Any]) -> dict[str, str]:
    return {k: str(info[k]) for k in _IDENTITY_FIELDS if info.get(k) is not None}


def _declared(info: dict[str, Any]) -> dict[str, str | int]:
    """What a store declares about a file's bytes and can be checked: ``size``, ``sha256`` (Hugging Face LFS),
    ``md5`` (GCS's md5Hash) and ``etag_md5`` (an S3/HTTP ETag shaped like an MD5, i.e. not a multipart
    ``<hex>-<parts>`` one; S3 objects encrypted with KMS or customer keys have such ETags that are not one)."""
    out: dict[str, str | int] = {}
    size = info.get("size")
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        out["size"] = size
    lfs = info.get("lfs")
    if isinstance(lfs, dict) and isinstance(lfs.get("sha256"), str):
        out["sha256"] = lfs["sha256"].lower()
        if isinstance(lfs.get("size"), int):
            out["size"] = lfs["size"]  # hf:// lists the pointer's size next to the LFS object's
    for key in ("ETag", "etag"):
        etag = str(info.get(key) or "").strip().strip('"').lower()
        if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag):
            out["etag_md5"] = etag
    md5_b64 = info.get("md5Hash")
    if isinstance(md5_b64, str):
        try:
            out["md5"] = base64.b64decode(md5_b64).hex()
        except ValueError:
            pass
    return out


def _etag_is_md5(fs: Any, path: str) -> bool:
    """Whether an MD5-shaped ETag is the content's MD5: not for S3 objects under KMS or customer keys, which the
    object's metadata (a HEAD, asked only when an ETag disagrees) names."""
    try:
        info = fs.info(path)
    except Exception:  # no metadata to tell: trust the ETag's shape, as the listing showed it
        return True
    return info.get("ServerSideEncryption") not in ("aws:kms", "aws:kms:dsse") and not info.get("SSECustomerAlgorithm")


def _copy_hashed(src: BinaryIO, dst: BinaryIO) -> tuple[int, str, str]:
    """Copy ``src`` to ``dst``; the bytes' count, sha256 and md5, hashed as they pass (not re-read from disk)."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    for chunk in iter(lambda: src.read(1 << 22), b""):
        dst.write(chunk)
        sha.update(chunk)
        md5.update(chunk)
        size += len(chunk)
    return size, sha.hexdigest(), md5.hexdigest()


def _verify_entry(entry: Path) -> dict[str, Any] | None:
    """The record of a complete cache entry whose files still hold the bytes that were downloaded, else None."""
    try:
        record = json.loads((entry / ".complete").read_text())
    except (OSError, ValueError):
        return None
    for name, digest in record.get("sha256", {}).items():
        if not (entry / name).is_file() or _sha256(entry / name) != digest:
            return None
    return record


def _fetch_remote(url: str, storage_options: dict[str, Any] | None, cache_dir: str | None) -> Path:
    """Download ``config.json``, the weights file and any ``targets_*.txt`` of ``url`` into the cache.

    The cache is keyed by the URL *and* the identity of the remote bytes (ETag, LFS sha256, generation,
    size, mtime…, as the store reports them), so new weights at the same URL are downloaded again. Each
    download must have the size, MD5 (ETag, md5Hash) and sha256 (LFS) the store reports where it reports
    them. Every file's sha256 is recorded at download; a cache entry whose files no longer hash to it (edited,
    truncated, replaced) is detected and downloaded again. When the source cannot be reached, the newest
    intact entry for the URL is used.
    """
    import fsspec

    if url.startswith("hf://"):
        try:
            import huggingface_hub  # noqa: F401  (registers fsspec's hf:// protocol implementation)
        except ImportError:
            raise CheckpointError(
                f"loading {url} needs huggingface_hub: pip install 'enformer-batch[hf]'"
            ) from None
    root = (Path(cache_dir) if cache_dir else default_cache_dir()) / hashlib.sha256(url.encode()).hexdigest()[:32]
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    path = path.rstrip("/")
    try:
        listing = {Path(d["name"]).name: d for d in fs.ls(path, detail=True)}
    except FileNotFoundError:
        markers = list(root.glob("*/.complete")) if root.is_dir() else []
        for marker in sorted(markers, key=lambda m: m.stat().st_mtime, reverse=True):
            if _verify_entry(marker.parent) is not None:
                return marker.parent
        raise CheckpointError(f"checkpoint location {url} does not exist") from None
    if CONFIG_NAME not in listing:
        raise CheckpointError(f"checkpoint {url} has no {CONFIG_NAME}")
    weights = next((w for w in WEIGHTS_NAMES if w in listing), None)
    if weights is None:
        raise CheckpointError(f"checkpoint {url} has no weights file ({' or '.join(WEIGHTS_NAMES)})")
    wanted = [CONFIG_NAME, weights] + sorted(n for n in listing if n.startswith("targets_") and n.endswith(".txt"))
    identity = {name: _file_identity(listing[name]) for name in wanted}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    local = root / key
    if (local / ".complete").exists():
        if _verify_entry(local) is not None:
            return local
        # Other bytes than were downloaded: never trust the entry, fetch it again.
        shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name in wanted:
        # Write to a temp file then rename, so an interrupted download never looks complete.
        fd, tmp = tempfile.mkstemp(dir=local, prefix=f".{name}.")
        os.close(fd)
        with fs.open(f"{path}/{name}", "rb") as src, open(tmp, "wb") as dst:
            size, sha, md5 = _copy_hashed(src, dst)
        got = {"size": size, "sha256": sha, "md5": md5, "etag_md5": md5}
        declared = _declared(listing[name])
        if declared.get("etag_md5", md5) != md5 and not _etag_is_md5(fs, f"{path}/{name}"):
            del declared["etag_md5"]
        wrong = [f"{k.replace('etag_', 'ETag ')} {got[k]} where the store declares {v}" for k, v in declared.items()
                 if got[k] != v]
        if wrong:
            os.unlink(tmp)
            raise CheckpointError(f"{url}/{name}: the downloaded bytes have " + "; ".join(wrong))
        os.replace(tmp, local / name)
        digests[name] = sha
    record = {"url": url, "identity": identity, "sha256": digests}
    (local / ".complete").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return local


# ----------------------------------------------------------------------------------------------------
# Loading any supported model


def _resolve_source(
    source: str, storage_options: dict[str, Any] | None, cache_dir: str | None
) -> tuple[Path, dict[str, str]]:
    """The local directory of ``source`` and, for a cache entry, the sha256 of each file as downloaded."""
    demo = demo_checkpoint(source)
    if demo is not None:
        return demo, {}
    if "://" in source:
        local = _fetch_remote(source, storage_options, cache_dir)
        try:
            return local, json.loads((local / ".complete").read_text()).get("sha256", {})
        except (OSError, ValueError):
            raise CheckpointError(f"the cache entry {local} of {source} went away while loading; load again") from None
    path = Path(source).expanduser()
    if not path.is_dir():
        demos = " or ".join(repr(name) for name in DEMO_CHECKPOINTS)
        raise CheckpointError(f"checkpoint directory {source} does not exist (or use a URL, {demos})")
    return path, {}


def _track_tables(directory: Path, family: Family, heads: dict[str, int]) -> dict[str, TrackTable | None]:
    tracks: dict[str, TrackTable | None] = {}
    for head, n in heads.items():
        table_path = directory / f"targets_{head}.txt"
        if table_path.is_file():
            table = read_track_table(table_path)
            if len(table) != n:
                raise CheckpointError(f"{table_path.name} has {len(table)} rows but head {head} has {n} tracks")
        else:
            bundled = family.bundled_tables.get(head)
            table = read_track_table(DATA_DIR / bundled) if bundled else None
            if table is not None and len(table) != n:
                table = None  # a head of another size: not the official model's tracks
        tracks[head] = table
    return tracks


def _load_one(
    source: str,
    storage_options: dict[str, Any] | None,
    cache_dir: str | None,
    use_tf_gamma: bool | None,
) -> LoadedModel:
    directory, downloaded = _resolve_source(source, storage_options, cache_dir)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint {source} has no {CONFIG_NAME}")
    weights_path = next((directory / w for w in WEIGHTS_NAMES if (directory / w).is_file()), None)
    if weights_path is None:
        raise CheckpointError(f"checkpoint {source} has no weights file ({' or '.join(WEIGHTS_NAMES)})")
    try:
        raw = json.loads(config_path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"invalid {CONFIG_NAME} in {source}: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"invalid {CONFIG_NAME} in {source}: not a JSON object")
    family = family_of(raw, source)
    try:
        config, model = family.build(raw, use_tf_gamma)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"invalid {CONFIG_NAME} in {source}: {exc}") from exc
    # One read: the digest is that of the bytes the weights come from, whatever happens to the file meanwhile.
    data = weights_path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    expected = downloaded.get(weights_path.name)
    if expected is not None and sha != expected:
        raise CheckpointError(
            f"the cached {weights_path} of {source} changed after it was checked (sha256 {sha[:12]}..., "
            f"downloaded {expected[:12]}...); load again to download it afresh"
        )
    family.load_weights(model, _parse_weights(data, weights_path.name, str(weights_path)), f"checkpoint {source}")
    del data
    tracks = _track_tables(directory, family, dict(config.output_heads))
    return LoadedModel(model.eval(), config, source, sha, tracks, family.name, ((source, sha),))


def load_model(
    source: str = "demo",
    storage_options: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    device: str | torch.device = "cpu",
    use_tf_gamma: bool | None = None,
) -> LoadedModel:
    """Load a checkpoint of any family in ``families.FAMILIES``, or a comma-separated list of replicates.

    ``source`` is ``"demo"`` / ``"demo-borzoi"`` (the packaged demo models), a local directory or any fsspec
    URL, including ``hf://EleutherAI/enformer-official-rough`` or ``hf://johahi/borzoi-replicate-0``; the
    family comes from ``config.json``. Remote checkpoints are cached under ``$ENFORMER_BATCH_CACHE`` (default
    ``~/.cache/enformer-batch/models``), keyed by the remote bytes' identity. ``"A,B,C"`` loads each
    replicate and returns an ``Ensemble`` averaging them (same family, geometry and heads required).
    A checkpoint without a track table gets the bundled official one where its head size matches.
    ``use_tf_gamma`` overrides an Enformer config's positional features. The model is in eval mode.
    """
    sources = [s.strip() for s in source.split(",") if s.strip()]
    if not sources:
        raise CheckpointError("--model is empty")
    loaded = [_load_one(s, storage_options, cache_dir, use_tf_gamma) for s in sources]
    if len(loaded) == 1:
        one = loaded[0]
        one.model.to(device)
        return one
    first = loaded[0]
    for other in loaded[1:]:
        if (other.family, other.geometry, other.output_heads) != (first.family, first.geometry, first.output_heads):
            raise CheckpointError(
                f"replicates differ: {first.model_id} is {first.family} {first.output_heads} "
                f"and {other.model_id} is {other.family} {other.output_heads}"
            )
    replicates = tuple(r for m in loaded for r in m.replicates)
    digest = hashlib.sha256(",".join(sha for _, sha in replicates).encode()).hexdigest()
    ensemble = Ensemble([m.model for m in loaded]).to(device).eval()
    return LoadedModel(ensemble, first.config, ",".join(sources), digest, first.tracks, first.family, replicates)
