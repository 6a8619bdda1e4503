"""The atlas on storage: Parquet parts, the manifest, and the commit protocol that makes runs resumable.

Owns the layout ``<out>/chrom=<name>/part-<first>-<end>.parquet`` plus ``<out>/_manifest.json`` and
``<out>/_SUCCESS``, on a local file system or any fsspec URL. A part is serialised in memory, checksummed,
then published under its deterministic name in one step (a rename of a hidden temporary file locally, a
single upload on object stores, whose object appears only when complete), so readers never see a partial
part and a retry replaces rather than adds.
The manifest, written only by the driver, is the commit point: a part counts once the manifest lists it,
and the run is complete only when the manifest says so and ``_SUCCESS`` exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .windows import PartPlan

if TYPE_CHECKING:
    from .engine import Part

MANIFEST = "_manifest.json"  # "_" so pyarrow.dataset(<out>) skips it, as it skips _SUCCESS
SUCCESS = "_SUCCESS"
MANIFEST_FORMAT = 1
# One row group per part at the default 16 windows (14,336 rows): at 5,313 tracks, 4,096-row groups cost
# ~1.4x the writer's CPU time (per-column-chunk overhead x 4) for a 2 % larger file; the price is that a
# region query reads a whole part's rows of each selected column (benchmarks/writer.py).
ROW_GROUP_ROWS = 16_384


class StoreError(ValueError):
    """The output location cannot be used as asked; the message says why and what to do."""


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
    # The part's unit range [first, end): windows in an atlas, input rows in a variant table (the names
    # predate variant tables; kept so that earlier manifests still resume).
    first_window: int
    end_window: int
    rows: int
    bytes: int
    sha256: str

    @classmethod
    def from_dict(cls, d: Mapping) -> PartRecord:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


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
    start = np.concatenate(starts)
    end = np.minimum(start + bin_size, part.length)
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
        row_group_size=ROW_GROUP_ROWS,
    )
    return sink.getvalue().to_pybytes()


class AtlasStore:
    """An atlas location (local directory or fsspec URL) and the operations the commit protocol needs."""

    def __init__(self, url: str, storage_options: Mapping[str, str] | None = None):
        import fsspec

        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        if self.local:
            self.root = os.path.abspath(self.root)

    def __reduce__(self):
        return (AtlasStore, (self.url, self.storage_options))

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    # --- parts -------------------------------------------------------------------------------------
    def part_relpath(self, chrom: str, name: str) -> str:
        return f"{chrom_dir(chrom)}/{name}"

    def publish(self, relative: str, data: bytes) -> None:
        """Make ``data`` visible under ``relative`` all at once (never half-written)."""
        target = self.path(relative)
        if self.local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            # '_'-prefixed and not '*.parquet': invisible to pyarrow.dataset and to '*/*.parquet' globs.
            tmp = os.path.join(os.path.dirname(target), f"_tmp-{uuid.uuid4().hex}.{os.path.basename(target)}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        else:
            self.fs.pipe_file(target, data)

    def write_part(self, part: Part, table: pa.Table) -> PartRecord:
        data = serialise_table(table)
        relative = self.part_relpath(part.chrom, part.name)
        self.publish(relative, data)
        return PartRecord(
            path=relative,
            chrom=part.chrom,
            first_window=part.first,
            end_window=part.end,
            rows=table.num_rows,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )

    def read_bytes(self, relative: str) -> bytes:
        return self.fs.cat_file(self.path(relative))

    def _forget_listings(self) -> None:
        # Parts are written by worker processes, so listings this process cached (s3fs, gcsfs) go stale
        # without fsspec knowing: a later exists() or glob would miss them. Ask the store every time.
        if not self.local:
            self.fs.invalidate_cache()

    def exists(self, relative: str) -> bool:
        self._forget_listings()
        return self.fs.exists(self.path(relative))

    def size(self, relative: str) -> int:
        self._forget_listings()
        return int(self.fs.size(self.path(relative)))

    def list_part_files(self) -> list[str]:
        """Every ``*.parquet`` under a ``chrom=`` directory, relative to the root."""
        self._forget_listings()
        found = []
        for path in self.fs.glob(f"{self.root}/chrom=*/*.parquet"):
            found.append(os.path.relpath(path, self.root) if self.local else path[len(self.root) + 1 :])
        return sorted(found)

    # --- manifest ----------------------------------------------------------------------------------
    def read_manifest(self) -> dict | None:
        if not self.exists(MANIFEST):
            return None
        try:
            return json.loads(self.read_bytes(MANIFEST))
        except json.JSONDecodeError as e:
            raise StoreError(f"{self.url}/{MANIFEST} is not valid JSON ({e}); use --overwrite to start over") from e

    def write_manifest(self, manifest: Mapping) -> None:
        self.publish(MANIFEST, json.dumps(manifest, indent=1, sort_keys=False).encode())

    def mark_success(self) -> None:
        self.publish(SUCCESS, b"")

    def clear_success(self) -> None:
        if self.exists(SUCCESS):
            self.fs.rm(self.path(SUCCESS))

    def is_empty(self) -> bool:
        return not self.fs.exists(self.root) or not self.fs.ls(self.root)

    def remove_all(self) -> None:
        """Delete an earlier run's files (``--overwrite``): parts, manifest and marker only."""
        self.clear_success()
        for relative in self.list_part_files():
            self.fs.rm(self.path(relative))
        if self.exists(MANIFEST):
            self.fs.rm(self.path(MANIFEST))

    def check_writable(self) -> None:
        probe = f"_write_probe-{uuid.uuid4().hex}"
        try:
            if self.local:
                os.makedirs(self.root, exist_ok=True)
            self.fs.pipe_file(self.path(probe), b"")
            self.fs.rm(self.path(probe))
        except OSError as e:
            raise StoreError(f"--out {self.url} is not writable: {e}") from e


def records_from_manifest(manifest: Mapping) -> dict[str, PartRecord]:
    return {p["path"]: PartRecord.from_dict(p) for p in manifest.get("parts", [])}


def manifest_parts(records: Mapping[str, PartRecord]) -> list[dict]:
    return [asdict(records[k]) for k in sorted(records)]
