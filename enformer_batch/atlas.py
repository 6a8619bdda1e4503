"""Looking values up in a finished atlas: ``open_atlas`` and ``Atlas.query``.

Owns the reader's fast path. An ``Atlas`` is opened from the manifest alone (tracks, chromosome lengths,
geometry, part list); a query then touches only the parts whose windows can hold bins of the requested
range, reads only the requested track columns, and filters on ``start``/``end`` so that Parquet row-group
statistics skip the rest of each part. Coordinates are 0-based half-open throughout, like the atlas
itself: ``query("chr1", 1000, 2000)`` returns every bin overlapping bp 1000..1999.

Also owns track selection against an atlas (head indices, identifiers, description regexes; see
``enformer_batch.tracks``); the region syntax (``parse_region``) is ``enformer_batch.regions``'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from .regions import parse_region
from .store import SUCCESS, OutputStore, PartRecord, records_from_manifest, track_schema
from .tracks import _INDEX_RE, _RANGE_RE, TrackTable, select_tracks
from .windows import Geometry, Tiling

__all__ = ["Atlas", "AtlasTrack", "open_atlas", "parse_region"]

TrackSpec = str | Sequence[str | int] | None

@dataclass(frozen=True)
class AtlasTrack:
    """One stored track: ``index`` is the model head's channel, ``name`` the Parquet column."""

    index: int
    name: str
    description: str


class Atlas:
    """A read-only view of an atlas; build it with ``open_atlas``."""

    def __init__(self, store: OutputStore, manifest: Mapping):
        self.store = store
        self.url = store.url
        self.manifest = manifest
        identity = manifest["identity"]
        self.status: str = manifest.get("status", "?")
        self.geometry = Geometry(**identity["geometry"])
        self.stride: int | None = identity.get("stride")
        self.dtype: str = identity.get("dtype", "float16")
        lengths = identity["fasta"]["chromosomes"]
        self.genome_chroms: dict[str, int] = {c: int(n) for c, n in lengths.items()}
        self.track_list: tuple[AtlasTrack, ...] = tuple(
            AtlasTrack(int(t["index"]), str(t["name"]), str(t.get("description", ""))) for t in identity["tracks"]
        )
        self._chroms = {c: int(lengths[c]) for c in identity["chromosomes"]}
        self._parts: dict[str, list[PartRecord]] = {c: [] for c in self._chroms}
        for record in records_from_manifest(manifest).values():
            self._parts.setdefault(record.chrom, []).append(record)
        for records in self._parts.values():
            records.sort(key=lambda r: r.first)
        self._filesystem = None

    def __repr__(self) -> str:
        return (
            f"Atlas({self.url!r}, status={self.status!r}, chroms={len(self._chroms)}, "
            f"tracks={len(self.track_list)}, parts={sum(map(len, self._parts.values()))})"
        )

    # --- what is in it -----------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """True when the run finished: every planned part is committed."""
        return self.status == "complete"

    def completeness(self) -> str:
        """One line for users: complete, or how many parts are committed and what that means for reads."""
        committed = sum(map(len, self._parts.values()))
        if self.complete:
            return f"atlas {self.url} is complete ({committed} parts)"
        total = (self.manifest.get("totals") or {}).get("parts", "?")
        return (f"atlas {self.url} is incomplete (manifest status {self.status!r}): {committed} of {total} parts "
                "committed; bins of the other parts are absent from what is read")

    def part_urls(self) -> list[str]:
        """Where the committed parts are, in chromosome and window order: hand these, not a glob, to other readers.

        A glob (``<atlas>/*/*.parquet``) also matches files no manifest lists: parts of a running or crashed
        run written after its last commit, or a late write. Local atlases give paths; others give URLs.
        """
        prefix = self.store.root if self.store.local else self.url
        return [f"{prefix}/{r.path}" for c in self._parts.values() for r in c]

    @property
    def tracks(self) -> pa.Table:
        """The stored tracks: columns ``index`` (head channel), ``name`` (column) and ``description``."""
        return pa.table(
            {
                "index": pa.array([t.index for t in self.track_list], pa.int64()),
                "name": pa.array([t.name for t in self.track_list], pa.string()),
                "description": pa.array([t.description for t in self.track_list], pa.string()),
            }
        )

    @property
    def chroms(self) -> dict[str, int]:
        """The atlas' chromosomes and their lengths in bp, in the order the run selected them."""
        return dict(self._chroms)

    @property
    def schema(self) -> pa.Schema:
        """The schema of every part: ``start``, ``end`` and one column per stored track."""
        return track_schema(self.track_names, self.dtype)

    @property
    def track_names(self) -> list[str]:
        return [t.name for t in self.track_list]

    def select_tracks(self, tracks: TrackSpec = None) -> list[str]:
        """Column names for a track selection.

        ``None``/``"all"``: every stored track. A string uses the ``--tracks`` grammar of
        ``enformer_batch.tracks.select_tracks`` (numbers and ranges are *head* indices, as stored in the
        manifest) and returns columns in head-index order. A list of identifiers (or head indices) returns
        them in the order given.
        """
        by_name = {t.name: t for t in self.track_list}
        by_index = {t.index: t for t in self.track_list}
        if tracks is None or isinstance(tracks, str) and tracks.strip() in ("", "all"):
            return self.track_names
        if not isinstance(tracks, str):
            names = []
            for item in tracks:
                if isinstance(item, int) and not isinstance(item, bool):
                    if item not in by_index:
                        raise ValueError(f"track index {item} is not in this atlas ({self._index_summary()})")
                    names.append(by_index[item].name)
                elif str(item) in by_name:
                    names.append(str(item))
                else:
                    raise ValueError(f"unknown track {item!r}: not a track of this atlas ({self._name_summary()})")
            if not names:
                raise ValueError("track selection is empty")
            return list(dict.fromkeys(names))
        # Numbers and ranges name head indices, which an atlas of a track subset does not number 0..n-1:
        # resolve those here and hand identifiers/regexes to the shared grammar over the stored tracks.
        table = TrackTable.from_rows([(t.name, t.description) for t in self.track_list])
        chosen: set[int] = set()
        for item in (s.strip() for s in tracks.split(",")):
            if not item:
                raise ValueError(f"track specification {tracks!r} has an empty item")
            m = _RANGE_RE.match(item)
            if _INDEX_RE.match(item) or m:
                lo, hi = (int(item), int(item)) if not m else (int(m.group(1)), int(m.group(2)))
                if lo > hi:
                    raise ValueError(f"track range {item!r} is empty: start {lo} > end {hi} (ranges are inclusive)")
                missing = [i for i in range(lo, hi + 1) if i not in by_index]
                if missing:
                    raise ValueError(
                        f"track index {missing[0]} is not in this atlas ({self._index_summary()})"
                    )
                chosen.update(by_index[i].index for i in range(lo, hi + 1))
            else:
                chosen.update(self.track_list[p].index for p in select_tracks(item, len(table), table))
        return [by_index[i].name for i in sorted(chosen)]

    def _index_summary(self) -> str:
        indices = sorted(t.index for t in self.track_list)
        shown = ", ".join(map(str, indices[:8])) + (", ..." if len(indices) > 8 else "")
        return f"its {len(indices)} tracks have head indices {shown}"

    def _name_summary(self) -> str:
        names = self.track_names
        return f"it has {len(names)}: " + ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")

    # --- where things are --------------------------------------------------------------------------
    def check_range(self, chrom: str, start: int | None = None, end: int | None = None) -> tuple[int, int]:
        """Validate a range (``None`` = chromosome start/end) and return it as integers."""
        if chrom not in self._chroms:
            shown = ", ".join(list(self._chroms)[:10]) + (", ..." if len(self._chroms) > 10 else "")
            where = " (it is in the FASTA, but the run did not select it)" if chrom in self.genome_chroms else ""
            raise ValueError(f"chromosome {chrom!r} is not in this atlas{where}; it has {shown}")
        length = self._chroms[chrom]
        start = 0 if start is None else int(start)
        end = length if end is None else int(end)
        if start < 0 or end > length or start >= end:
            raise ValueError(
                f"range {chrom}:{start}-{end} is outside {chrom} or empty: need 0 <= start < end <= {length} "
                "(0-based half-open)"
            )
        return start, end

    def parts(self, chrom: str, start: int | None = None, end: int | None = None) -> list[PartRecord]:
        """The committed parts that can hold bins overlapping ``[start, end)`` of ``chrom``."""
        start, end = self.check_range(chrom, start, end)
        records = self._parts.get(chrom, [])
        if self.stride is None:  # an older manifest without the tiling: every part of the chromosome
            return list(records)
        tiling = Tiling(self.geometry, self._chroms[chrom], self.stride)
        bin_size = self.geometry.bin_size
        first_bin, end_bin = start // bin_size, -(-end // bin_size)
        out = []
        for r in records:
            # A part writes at most the bins its window range owns; a region run writes a subset of them.
            lo = tiling.owned_bins(r.first)[0]
            hi = tiling.owned_bins(min(r.end, tiling.n_windows) - 1)[1]
            if lo < end_bin and hi > first_bin:
                out.append(r)
        return out

    def _arrow_filesystem(self):
        if self._filesystem is None:
            if self.store.local:
                import pyarrow.fs

                self._filesystem = pyarrow.fs.LocalFileSystem()
            else:
                from pyarrow.fs import FSSpecHandler, PyFileSystem

                self._filesystem = PyFileSystem(FSSpecHandler(self.store.fs))
        return self._filesystem

    # --- reading -----------------------------------------------------------------------------------
    def query(
        self, chrom: str, start: int | None = None, end: int | None = None, tracks: TrackSpec = None
    ) -> pa.Table:
        """Bins of ``chrom`` overlapping ``[start, end)`` (0-based half-open; ``None`` = whole chromosome).

        Returns a pyarrow Table with columns ``chrom``, ``start``, ``end`` and one per selected track,
        sorted by ``start``; null values mark windows the run skipped (all-N input). Bins a region run or
        an incomplete run did not write are absent. ``.to_pandas()`` on the result needs pandas.
        """
        import pyarrow.dataset as ds

        start, end = self.check_range(chrom, start, end)
        names = self.select_tracks(tracks)
        columns = ["start", "end", *names]
        parts = self.parts(chrom, start, end)
        if parts:
            # The schema comes from the manifest: without it pyarrow opens a part just to infer it, which on
            # an object store is an extra round of requests per query.
            dataset = ds.dataset(
                [self.store.path(p.path) for p in parts],
                schema=self.schema,
                format="parquet",
                filesystem=self._arrow_filesystem(),
            )
            # Both bounds, so row-group statistics on start and end prune within each part.
            table = dataset.to_table(
                columns=columns, filter=(ds.field("end") > start) & (ds.field("start") < end)
            )
            table = table.sort_by("start") if len(parts) > 1 else table
        else:
            table = self.schema.empty_table().select(columns)
        chrom_column = pa.repeat(pa.scalar(chrom, pa.string()), table.num_rows)
        return table.add_column(0, pa.field("chrom", pa.string(), nullable=False), chrom_column)


def open_atlas(
    url: str, storage_options: Mapping[str, str] | None = None, *, allow_incomplete: bool = False
) -> Atlas:
    """Open the atlas at ``url`` (a directory or any fsspec URL) for queries.

    Reads ``_manifest.json`` and checks ``_SUCCESS``. An atlas whose run has not finished, or that is being
    rewritten or deleted (a complete manifest without ``_SUCCESS``), is refused unless
    ``allow_incomplete=True``, in which case queries see the parts committed so far.
    """
    store = OutputStore(url, storage_options)
    manifest = store.read_manifest()
    if manifest is None:
        raise ValueError(f"no _manifest.json at {url}: not an atlas (or its run never started)")
    status = manifest.get("status", "?")
    if status != "complete" and not allow_incomplete:
        raise ValueError(
            f"atlas {url} is not complete (manifest status {status!r}); finish the run, or open it with "
            "allow_incomplete=True (--allow-incomplete) to read the parts committed so far"
        )
    if status == "complete" and not allow_incomplete and not store.exists(SUCCESS):
        # The marker is written after the complete manifest and deleted before anything else (a resume,
        # --overwrite): a complete manifest without it is an output being rewritten or deleted.
        raise ValueError(
            f"atlas {url} has a complete manifest but no {SUCCESS}: it is being overwritten or deleted (or was "
            "copied without it); wait for the run on it to finish, or open it with allow_incomplete=True"
        )
    return Atlas(store, manifest)
