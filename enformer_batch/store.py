"""The atlas on storage: Parquet parts, the manifest, and the commit protocol that makes runs resumable.

Owns the layout ``<out>/chrom=<name>/part-<first>-<end>.parquet`` plus ``<out>/_manifest.json`` and
``<out>/_SUCCESS``, on a local file system or any fsspec URL. A part is serialised in memory, checksummed,
then published under its deterministic name in one step (a rename of a hidden temporary file locally, a
single upload on object stores, whose object appears only when complete), so readers never see a partial
part and a retry replaces rather than adds.
The manifest, written only by the driver and only while it holds the lease (conditionally: ``lease.py``), is
the commit point: a part counts once the manifest lists it, and the run is complete only when the manifest
says so and ``_SUCCESS`` exists. The atlas is listed directly, never globbed, and files are deleted one by
one, so nothing outside ``--out`` is touched whatever characters it holds.

Also owns what makes a committed part trustworthy later: each part's *version token* (what the store says
about that exact write: inode and mtime locally, the ETag an S3 PUT returned), so that a resume notices a
part rewritten after its commit (a late write by a replica the driver gave up on) with one listing instead
of re-reading the atlas; the digest of the base codes a part was predicted from; the lease fence a part was
written under; retries of transient errors on every storage call; and the temporary files an interrupted run
leaves behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, TypeVar
from urllib.parse import quote, unquote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .retry import DEFAULT_POLICY, RetryPolicy, with_retries
from .windows import PartPlan

T = TypeVar("T")

LEASE = "_lease.json"  # owned by lease.py; named here so that replicas can check it before they publish
MANIFEST = "_manifest.json"  # "_" so pyarrow.dataset(<out>) skips it, as it skips _SUCCESS
SUCCESS = "_SUCCESS"
TMP_PREFIX = "_tmp-"  # temporary files of a publish in progress; any left over belong to a crashed writer
PROBE_PREFIX = "_write_probe-"
MANIFEST_FORMAT = 1
# One row group per part at the default 16 windows (14,336 rows): at 5,313 tracks, 4,096-row groups cost
# ~1.4x the writer's CPU time (per-column-chunk overhead x 4) for a 2 % larger file; the price is that a
# region query reads a whole part's rows of each selected column (benchmarks/writer.py).
ROW_GROUP_ROWS = 16_384
# The footer holds one entry per row group per column (~160 B each: 0.8 MiB per row group at 5,313 tracks),
# and a reader parses it whole before reading any row. A part made larger than the default (an explicit
# windows_per_part) gets larger row groups rather than more of them.
MAX_ROW_GROUPS = 4


class StoreError(ValueError):
    """The output location cannot be used as asked; the message says why and what to do."""


class LeaseLost(RuntimeError):
    """This driver's lease was taken over (or could not be renewed in time); the run must stop writing.

    Defined here, not in ``lease``, because replicas raise it too: a part is not published under a lease that
    is no longer the one it was started under (``OutputStore.fence``).
    """


class PartKey(Protocol):
    """What the store needs of a part to name and record it (``engine.Part`` has it)."""

    chrom: str
    name: str
    first: int
    end: int


def chrom_dir(chrom: str) -> str:
    """Hive directory of a chromosome; URI-escaped so names with '/', '=' or ':' survive (readers unescape)."""
    return "chrom=" + quote(chrom, safe="")


def chrom_of_dir(dirname: str) -> str:
    if not dirname.startswith("chrom="):
        raise ValueError(f"not a chromosome directory: {dirname}")
    return unquote(dirname[len("chrom=") :])


@dataclass(frozen=True)
class PartRecord:
    """A published part, as the manifest lists it."""

    path: str  # relative to the atlas root
    chrom: str
    # The part's unit range [first, end): windows in an atlas, input rows in a variant or edit table,
    # positions in a mutagenesis table. The manifest keeps its older keys for them (``MANIFEST_UNIT_KEYS``).
    first: int
    end: int
    rows: int
    bytes: int
    sha256: str
    # The store's identity of this very write (see ``OutputStore.publish``); None where the store gives none.
    token: str | None = None
    # sha256 of the uint8 base codes the part was predicted from (``codes_digest``); None in older manifests.
    codes_sha256: str | None = None
    # ``<epoch>:<owner>`` of the lease the part was written under (``OutputStore.fence``); None in older manifests.
    fence: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping) -> PartRecord:
        """A record from its manifest entry, under the manifest's unit keys or the attribute names."""
        d = {**d, **{attr: d[key] for attr, key in MANIFEST_UNIT_KEYS.items() if key in d}}
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_dict(self) -> dict:
        """The manifest entry: the unit range under the keys every manifest has used (``MANIFEST_UNIT_KEYS``)."""
        return {MANIFEST_UNIT_KEYS.get(k, k): v for k, v in asdict(self).items()}


# The manifest's keys for a part's unit range: they predate variant tables, and readers and resumes of every
# earlier version look them up, so they stay (the format is unchanged; docs/contract.md).
MANIFEST_UNIT_KEYS = {"first": "first_window", "end": "end_window"}


def codes_digest(codes: np.ndarray) -> str:
    """sha256 of a part's base codes ``[n_windows, input_length]`` (uint8, as ``genome.read_codes`` makes them).

    Codes fold case and every non-ACGT letter, so this is the genome as the model saw it: a soft-masked copy
    digests like the unmasked one (same predictions), a hard-masked copy does not.
    """
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    h = hashlib.sha256(f"{codes.shape}".encode())
    if codes.size:  # a part with nothing to read (no scored variant) still gets a digest
        h.update(memoryview(codes).cast("B"))
    return h.hexdigest()


def track_schema(track_names: Sequence[str], dtype: str) -> pa.Schema:
    value_type = {"float16": pa.float16(), "float32": pa.float32()}[dtype]
    return pa.schema(
        [pa.field("start", pa.int64(), nullable=False), pa.field("end", pa.int64(), nullable=False)]
        + [pa.field(name, value_type) for name in track_names]
    )


def part_table(
    part: PartPlan,
    predictions: np.ndarray,
    ran: np.ndarray,
    track_names: Sequence[str],
    dtype: str,
    bin_size: int,
) -> pa.Table:
    """Stitch a part's rows: for each window, the bins it writes, taken from its 896-bin prediction.

    ``predictions`` is ``[n_windows_in_part, output_bins, n_tracks]`` in the part's window order;
    ``ran[i]`` is False for a window that was skipped (all padding/N), whose rows get null values.
    """
    np_dtype = np.dtype(dtype)
    emits = [(i, task.first_bin, lo, hi) for i, task in enumerate(part.windows) for lo, hi in task.emit]
    n_rows = sum(hi - lo for _, _, lo, hi in emits)
    # Track-major from the start: each track column is then a contiguous row that Arrow takes without a
    # copy; converting 5,313 strided columns one by one cost more than serialising them.
    by_track = np.empty((predictions.shape[-1], n_rows), dtype=np_dtype)
    nulls = np.empty(n_rows, dtype=bool)
    starts = []
    row = 0
    for i, first_bin, lo, hi in emits:
        starts.append(np.arange(lo, hi, dtype=np.int64) * bin_size)
        by_track[:, row : row + hi - lo] = predictions[i, lo - first_bin : hi - first_bin].T
        nulls[row : row + hi - lo] = not ran[i]
        row += hi - lo
    return bins_table(np.concatenate(starts), part.length, by_track, nulls, track_names, dtype, bin_size)


def bins_table(
    start: np.ndarray,
    length: int,
    by_track: np.ndarray,
    nulls: np.ndarray,
    track_names: Sequence[str],
    dtype: str,
    bin_size: int,
) -> pa.Table:
    """A part's Arrow table from its bins' starts (bp), track-major values ``[n_tracks, n_rows]`` and null rows."""
    n_rows = len(start)
    end = np.minimum(start + bin_size, length)
    schema = track_schema(track_names, dtype)
    value_type = schema.field(2).type if len(by_track) else None
    null_count = int(nulls.sum())
    validity = pa.array(~nulls).buffers()[1] if null_count else None  # a boolean array's data is a bitmap
    columns = [pa.array(start), pa.array(end)] + [
        pa.Array.from_buffers(value_type, n_rows, [validity, pa.py_buffer(by_track[j])], null_count=null_count)
        for j in range(len(by_track))
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def serialise_table(table: pa.Table) -> bytes:
    """Parquet bytes with settings chosen for wide float tables (see the README's storage notes)."""
    # BYTE_STREAM_SPLIT helps zstd on float32; DuckDB cannot read it on float16 (FIXED_LEN_BYTE_ARRAY).
    split = [f.name for f in table.schema if pa.types.is_float32(f.type)]
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        use_dictionary=False,
        use_byte_stream_split=split or False,
        write_statistics=["start", "end"],
        row_group_size=max(ROW_GROUP_ROWS, -(-table.num_rows // MAX_ROW_GROUPS)),
    )
    return sink.getvalue().to_pybytes()


class OutputStore:
    """An output location (``--out``: a local directory or fsspec URL) and what the commit protocol does there."""

    def __init__(
        self, url: str, storage_options: Mapping[str, str] | None = None, retry: RetryPolicy = DEFAULT_POLICY
    ):
        import fsspec

        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.retry = retry
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.local = "file" in protocols
        self.s3 = "s3" in protocols or "s3a" in protocols
        if self.local:
            self.root = os.path.abspath(self.root)
        # Set by lease.Lease.acquire in the driver: manifest writes then go through the lease (conditional on
        # it). Never pickled: replicas do not write the manifest.
        self.lease = None
        # ``<epoch>:<owner>`` of the lease the driver holds, also set by acquire, and pickled: a replica checks
        # it against the lease file before each part it publishes and records it in the part.
        self.fence: str | None = None

    def __reduce__(self):
        return (_restore_store, (self.url, self.storage_options, self.retry, self.fence))

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def retrying(self, fn: Callable[[], T], what: str) -> T:
        """``fn()`` under this store's retry policy; ``what`` names the operation in errors and retry notes."""
        return with_retries(fn, what, self.retry)

    def read_optional(self, relative: str) -> bytes | None:
        """The bytes of ``relative``, or None if it does not exist (one attempt; callers retry)."""
        if self.local:
            try:
                with open(self.path(relative), "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None
        self._forget_listings()
        try:
            return self.fs.cat_file(self.path(relative))
        except FileNotFoundError:
            return None

    def _entries(self, relative_dir: str) -> list[tuple[str, bool]]:
        """``(name, is directory)`` of what ``relative_dir`` ('' for the root) holds; [] if it does not exist.

        Listed directly, never globbed: an ``--out`` holding ``[``, ``?`` or ``*`` would match other
        directories as a glob pattern (``atlas[v2]`` matches ``atlasv``).
        """
        directory = f"{self.root}/{relative_dir}" if relative_dir else self.root
        if self.local:
            try:
                with os.scandir(directory) as entries:
                    return [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
            except (FileNotFoundError, NotADirectoryError):
                return []
        self._forget_listings()
        try:
            listing = self.fs.ls(directory, detail=True)
        except FileNotFoundError:
            return []
        out = []
        for entry in listing:
            name = entry["name"].rstrip("/")
            if name.rstrip("/") == directory.rstrip("/"):
                continue  # some stores list a directory's own marker
            out.append((name.rsplit("/", 1)[-1], entry.get("type") == "directory"))
        return out

    def _remove(self, relative: str) -> None:
        """Delete one file of this atlas; refuses any path that could leave ``--out``."""
        parts = relative.split("/")
        if not relative or relative.startswith("/") or ".." in parts or "" in parts:
            raise StoreError(f"refusing to delete {relative!r}: not a file inside --out {self.url}")
        self.fs.rm_file(self.path(relative))  # never fs.rm: it expands glob patterns ('[', '?', '*') in the path

    # --- parts -------------------------------------------------------------------------------------
    def part_relpath(self, chrom: str, name: str) -> str:
        return f"{chrom_dir(chrom)}/{name}"

    def publish(self, relative: str, data: bytes) -> str | None:
        """Make ``data`` visible under ``relative`` all at once (never half-written); return its version token.

        The token identifies this very write, taken from the write itself so that no other writer can slip
        in between: locally the inode, mtime and size of the temporary file that is renamed into place (a
        rename keeps them; any later write brings another inode); on S3 the ETag the PUT answered. Other
        stores get a best-effort token from a listing right after the write (see ``token_of``).
        Transient errors (a 503, a reset connection) are retried with backoff, ``self.retry.attempts`` tries
        in all; ``RetriesExhausted`` names the file when they keep happening.
        """
        return with_retries(lambda: self._publish_once(relative, data), f"writing {self.url}/{relative}",
                            self.retry)

    def _publish_once(self, relative: str, data: bytes) -> str | None:
        target = self.path(relative)
        if self.local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            # '_'-prefixed and not '*.parquet': invisible to pyarrow.dataset and to '*/*.parquet' globs.
            name = f"{TMP_PREFIX}{uuid.uuid4().hex}.{os.path.basename(target)}.tmp"
            tmp = os.path.join(os.path.dirname(target), name)
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                    ours = os.fstat(f.fileno())
                os.replace(tmp, target)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
            # The file as the directory now shows it, if it is still ours (same inode): on NFS the attributes
            # a later listing sees can differ from those the writer's fstat had cached.
            try:
                now = os.stat(target)
            except FileNotFoundError:
                now = ours
            return _stat_token(now if now.st_ino == ours.st_ino and now.st_dev == ours.st_dev else ours)
        if self.s3:
            # One PUT up to 5 GiB (s3fs would switch to a multipart upload above 100 MB, whose answer carries
            # no ETag); a part is a few hundred MB at most.
            answer = self.fs.pipe_file(target, data, chunksize=5 * 2**30 // 2)
            etag = (answer or {}).get("ETag") if isinstance(answer, dict) else None
            if etag:
                return "etag:" + etag.strip('"')
        else:
            self.fs.pipe_file(target, data)
        self._forget_listings()
        return token_of(self.fs.info(target))

    def check_fence(self, relative: str) -> None:
        """Raise ``LeaseLost`` if the lease is no longer the one ``self.fence`` names (no-op without a fence).

        One read of the lease file: a replica of a driver that lost its lease (paused, partitioned, taken
        over) stops publishing instead of overwriting the parts of the driver that took over.
        """
        if self.fence is None:
            return
        data = self.retrying(lambda: self.read_optional(LEASE), f"reading the lease of {self.url}")
        current = fence_of_lease(data)
        if current != self.fence:
            now = f"held under epoch {current.split(':', 1)[0]}" if current else "gone or unreadable"
            raise LeaseLost(f"the lease on {self.url} this writer started under (epoch "
                            f"{self.fence.split(':', 1)[0]}) is {now}; not writing {relative}")

    def write_part(self, part: PartKey, table: pa.Table, codes_sha256: str | None = None) -> PartRecord:
        data = serialise_table(table)
        relative = self.part_relpath(part.chrom, part.name)
        self.check_fence(relative)
        token = self.publish(relative, data)
        return PartRecord(
            path=relative,
            chrom=part.chrom,
            first=part.first,
            end=part.end,
            rows=table.num_rows,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            token=token,
            codes_sha256=codes_sha256,
            fence=self.fence,
        )

    def read_bytes(self, relative: str) -> bytes:
        return self.retrying(lambda: self.fs.cat_file(self.path(relative)), f"reading {self.url}/{relative}")

    def _forget_listings(self) -> None:
        # Parts are written by worker processes, so listings this process cached (s3fs, gcsfs) go stale
        # without fsspec knowing: a later exists() or glob would miss them. Ask the store every time.
        if not self.local:
            self.fs.invalidate_cache()

    def exists(self, relative: str) -> bool:
        def once() -> bool:
            self._forget_listings()
            return self.fs.exists(self.path(relative))

        return self.retrying(once, f"looking for {self.url}/{relative}")

    def size(self, relative: str) -> int:
        def once() -> int:
            self._forget_listings()
            return int(self.fs.size(self.path(relative)))

        return self.retrying(once, f"reading the size of {self.url}/{relative}")

    def part_tokens(self) -> dict[str, tuple[int, str | None]]:
        """``{relative path: (size, version token)}`` of every part file, from one listing of the atlas.

        One ``stat`` per file locally; on object stores a recursive listing (S3: one request per 1,000
        objects), so checking an hg38 atlas' ~1,700 parts costs two requests, not 1,700.
        """
        return self.retrying(self._part_tokens_once, f"listing {self.url}")

    def _part_tokens_once(self) -> dict[str, tuple[int, str | None]]:
        out: dict[str, tuple[int, str | None]] = {}
        if self.local:
            if not os.path.isdir(self.root):
                return out
            for entry in os.scandir(self.root):
                if not (entry.name.startswith("chrom=") and entry.is_dir()):
                    continue
                for item in os.scandir(entry.path):
                    if item.name.endswith(".parquet") and item.is_file(follow_symlinks=False):
                        st = item.stat(follow_symlinks=False)
                        out[f"{entry.name}/{item.name}"] = (st.st_size, _stat_token(st))
            return out
        self._forget_listings()
        if not self.fs.exists(self.root):
            return out
        for path, info in self.fs.find(self.root, detail=True).items():
            relative = path[len(self.root) + 1 :]
            head, _, name = relative.partition("/")
            if head.startswith("chrom=") and name.endswith(".parquet") and "/" not in name:
                out[relative] = (int(info.get("size") or 0), token_of(info))
        return out

    def intact_parts(
        self, records: Mapping[str, PartRecord]
    ) -> tuple[dict[str, PartRecord], dict[str, str]]:
        """Split committed ``records`` into those whose files are as committed and those that are not.

        A file is as committed when its size and version token equal the record's. When only the token
        differs (the atlas was copied, or a late write of a replica the driver gave up on replaced it) the
        file is read and its sha256 decides: equal bytes are kept (with the new token), other bytes are not.
        A record without a token (a manifest older than tokens) is kept on its size and given the current one.
        Returns ``(kept, {path: why not})``; the cost is one listing plus a read of each changed file.
        """
        present = self.part_tokens()
        kept: dict[str, PartRecord] = {}
        dropped: dict[str, str] = {}
        for path, record in records.items():
            if path not in present:
                dropped[path] = "missing"
                continue
            size, token = present[path]
            if size != record.bytes:
                dropped[path] = f"{size} bytes, {record.bytes} committed"
                continue
            if token == record.token:
                kept[path] = record
                continue
            if record.token is None:
                # Written before parts carried tokens: trusted on its size, as then, and tracked from now on,
                # so that resuming an older atlas does not read it whole.
                kept[path] = PartRecord(**{**asdict(record), "token": token})
                continue
            if hashlib.sha256(self.read_bytes(path)).hexdigest() != record.sha256:
                dropped[path] = "rewritten after its commit (checksum differs)"
                continue
            kept[path] = PartRecord(**{**asdict(record), "token": token})
        return kept, dropped

    # --- leftovers ---------------------------------------------------------------------------------
    def _listing(self) -> tuple[list[str], list[str]]:
        """``(leftovers, part files)`` relative to the root, from a direct listing of the root and its
        ``chrom=`` directories (never a glob: see ``_entries``)."""
        leftovers, parts, dirs = [], [], []
        for name, is_dir in self._entries(""):
            if is_dir and name.startswith("chrom="):
                dirs.append(name)
            elif not is_dir and name.startswith((TMP_PREFIX, PROBE_PREFIX)):
                leftovers.append(name)
        for directory in dirs:
            for name, is_dir in self._entries(directory):
                if is_dir:
                    continue
                if name.startswith(TMP_PREFIX):
                    leftovers.append(f"{directory}/{name}")
                elif name.endswith(".parquet"):
                    parts.append(f"{directory}/{name}")
        return sorted(leftovers), sorted(parts)

    def list_leftovers(self) -> list[str]:
        """Temporary files of interrupted writes (``_tmp-*``, ``_write_probe-*``), relative to the root."""
        return self.retrying(lambda: self._listing()[0], f"listing {self.url}")

    def remove_leftovers(self) -> list[str]:
        """Delete what ``list_leftovers`` finds; only call it while holding the lease (no live writer)."""
        removed = []
        for relative in self.list_leftovers():
            try:
                self.retrying(lambda relative=relative: self._remove(relative), f"deleting {self.url}/{relative}")
                removed.append(relative)
            except FileNotFoundError:  # its writer finished (renamed it) or another cleaner got it first
                pass
        return removed

    def list_part_files(self) -> list[str]:
        """Every ``*.parquet`` under a ``chrom=`` directory, relative to the root."""
        return self.retrying(lambda: self._listing()[1], f"listing {self.url}")

    # --- manifest ----------------------------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        data = self.retrying(lambda: self.read_optional(MANIFEST), f"reading {self.url}/{MANIFEST}")
        if data is None:
            return None
        try:
            return json.loads(data)
        except json.JSONDecodeError as e:
            raise StoreError(f"{self.url}/{MANIFEST} is not valid JSON ({e}); use --overwrite to start over") from e

    def write_manifest(self, manifest: Mapping) -> None:
        """Write the manifest; under a lease, only if this driver still holds it (``Lease.write_manifest``)."""
        if self.lease is not None:
            self.lease.write_manifest(manifest)
            return
        self.publish(MANIFEST, json.dumps(manifest, indent=1, sort_keys=False).encode())

    def mark_success(self) -> None:
        if self.lease is not None:
            self.lease.guarded(lambda: self.publish(SUCCESS, b""), f"writing {self.url}/{SUCCESS}")
            return
        self.publish(SUCCESS, b"")

    def clear_success(self) -> None:
        if self.exists(SUCCESS):
            self._delete(SUCCESS)

    def _delete(self, relative: str, read_back: bool = True) -> None:
        """Delete ``relative`` if present; under a lease only while this driver holds it: read back from the
        store (``read_back``, for the marker and the manifest), or as this driver last knew it (for each of
        an ``--overwrite``'s parts, which would otherwise cost a read of the lease per part)."""
        def once() -> None:
            try:
                self._remove(relative)
            except FileNotFoundError:
                pass

        what = f"deleting {self.url}/{relative}"
        if self.lease is not None and read_back:  # an old driver must not delete the new owner's commit
            self.lease.guarded(lambda: self.retrying(once, what), what)
            return
        if self.lease is not None:
            self.lease.check()
        self.retrying(once, what)

    def remove_all(self) -> None:
        """Delete an earlier run's files (``--overwrite``): marker, manifest, then parts, in that order.

        Readers (``open_atlas``) need both a complete manifest and ``_SUCCESS``, and the manifest goes before
        any part: at no point of the deletion does anything look complete while parts are missing. A
        deletion interrupted after the manifest leaves parts without a manifest, which the next run refuses
        unless ``--overwrite`` (it then finishes the deletion).
        """
        self.clear_success()
        self._delete(MANIFEST)
        for relative in self.list_part_files():
            self._delete(relative, read_back=False)

    def check_writable(self) -> None:
        probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"

        def once() -> None:
            if self.local:
                os.makedirs(self.root, exist_ok=True)
            self.fs.pipe_file(self.path(probe), b"")
            with contextlib.suppress(FileNotFoundError):  # a retried delete whose first try went through
                self.fs.rm_file(self.path(probe))

        try:
            self.retrying(once, f"writing a probe file to {self.url}")
        except OSError as e:
            raise StoreError(f"--out {self.url} is not writable: {e}") from e


def _restore_store(url: str, storage_options: Mapping[str, str], retry: RetryPolicy, fence: str | None) -> OutputStore:
    store = OutputStore(url, storage_options, retry)
    store.fence = fence
    return store


def fence_of_lease(data: bytes | None) -> str | None:
    """``<epoch>:<owner>`` of a lease file's bytes; None when absent or unparseable."""
    if data is None:
        return None
    try:
        d = json.loads(data)
        return f"{int(d.get('epoch', 0))}:{d['owner']}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def fence_epoch(manifest: Mapping | None) -> int:
    """The lease epoch a manifest was written under (0: none, or a manifest older than fencing)."""
    lease = (manifest or {}).get("lease") if isinstance(manifest, Mapping) else None
    try:
        return int((lease or {}).get("epoch", 0))
    except (TypeError, ValueError):
        return 0


def records_from_manifest(manifest: Mapping) -> dict[str, PartRecord]:
    return {p["path"]: PartRecord.from_dict(p) for p in manifest.get("parts", [])}


def manifest_parts(records: Mapping[str, PartRecord]) -> list[dict]:
    return [records[k].to_dict() for k in sorted(records)]


def _stat_token(st: os.stat_result) -> str:
    return f"stat:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}" if stat.S_ISREG(st.st_mode) else "stat:?"


def token_of(info: Mapping) -> str | None:
    """A version token from an fsspec ``info``/listing entry: what changes whenever the object is rewritten.

    S3's ETag (the PUT's answer is the same string), GCS's generation, Azure's etag; else modification time and
    size, which a rewrite within the store's time resolution could leave unchanged (best effort).
    """
    for key in ("ETag", "etag", "generation"):
        value = info.get(key)
        if value:
            return f"{key.lower()}:{str(value).strip(chr(34))}"
    if "ino" in info and "mtime" in info:  # fsspec's local file system
        return None  # local tokens come from os.stat (nanoseconds), never from fsspec's float mtime
    for key in ("mtime", "LastModified", "last_modified", "updated"):
        if info.get(key):
            return f"mtime:{info[key]}:{info.get('size')}"
    return None
