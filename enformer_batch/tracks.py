r"""Output-track tables and track selection.

This module owns the description of a model head's output tracks: parsing the Basenji/Enformer
``targets_<head>.txt`` table, turning a user's ``--tracks`` specification into head indices, and naming
tracks for output columns.

Track-selection grammar (``select_tracks``)
-------------------------------------------
``None``, ``""`` or ``"all"`` selects every track. Otherwise the spec is a comma-separated list of items
(whitespace around items is ignored); the result is the union of what the items select, in ascending
head-index order without duplicates. Each item is, tried in this order:

* ``N`` (all digits): the track with head index ``N``.
* ``A-B`` (digits-digits): the head indices ``A`` to ``B`` **inclusive** (``0-3`` is 0, 1, 2, 3).
* an exact track identifier from the table (e.g. ``ENCFF833POA``).
* ``re:PATTERN``: a regular expression searched (``re.search``) in the description column.
* anything else: a regular expression searched in the description column (so ``^CAGE:`` works).

Because items are split on commas, a regex cannot contain a literal comma: write ``\x2c`` instead
(e.g. ``re:aorta\x2c adult``). Identifiers and regexes need a table; without one only indices and
ranges are accepted. An index out of range, a bad range, an invalid regex or an item that selects
nothing raises ``ValueError`` with a one-line message.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["TrackTable", "read_track_table", "select_tracks", "track_names", "render_track_table"]

_COLUMNS = ("index", "identifier", "file", "clip", "scale", "sum_stat", "description")
_INDEX_RE = re.compile(r"^\d+$")
_RANGE_RE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


@dataclass(frozen=True)
class TrackTable:
    """A head's track table; row ``i`` describes output channel ``i`` of the head."""

    identifiers: tuple[str, ...]
    descriptions: tuple[str, ...]
    # The remaining Basenji columns, kept verbatim (strings) for display and provenance.
    extra: tuple[dict[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.identifiers)

    def column(self, name: str) -> tuple[str, ...] | None:
        """A Basenji/Borzoi column (``clip_soft``, ``scale``, ``sum_stat``…) as strings, or None if absent."""
        if not self.extra or any(name not in row for row in self.extra):
            return None
        return tuple(row[name] for row in self.extra)

    def strand_pairs(self) -> tuple[int, ...] | None:
        """Borzoi's ``strand_pair``: for each track, the head index of its other-strand track (itself when
        unstranded); None when the table has no such column."""
        col = self.column("strand_pair")
        if col is None:
            return None
        pairs = tuple(int(v) for v in col)
        bad = [i for i, j in enumerate(pairs) if not 0 <= j < len(pairs) or pairs[j] != i]
        if bad:
            raise ValueError(f"track table strand_pair is not a pairing: row {bad[0]} -> {pairs[bad[0]]}")
        return pairs

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[str, str]]) -> TrackTable:
        """Build a table from ``(identifier, description)`` pairs (head index = position)."""
        return cls(tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple({} for _ in rows))


def read_track_table(source: str | os.PathLike[str] | io.TextIOBase) -> TrackTable:
    """Parse a Basenji/Enformer ``targets_*.txt`` table (tab-separated, with a header line).

    The ``index`` column gives the head channel; rows are ordered by it and must cover ``0..n-1``. A header
    whose first field is empty (as written by pandas ``to_csv`` with an index) is accepted.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, encoding="utf-8", newline="") as fh:
            return read_track_table(fh)
    reader = csv.reader(source, delimiter="\t")
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ValueError("track table is empty") from None
    if "identifier" not in header or "description" not in header:
        raise ValueError(f"track table header must contain 'identifier' and 'description', got {header}")
    col = {name: i for i, name in enumerate(header)}
    rows: dict[int, tuple[str, str, dict[str, str]]] = {}
    for line_no, fields in enumerate(reader, start=2):
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) < len(header):
            fields = fields + [""] * (len(header) - len(fields))
        idx_field = fields[col["index"]] if "index" in col else (fields[0] if header[0] == "" else "")
        try:
            idx = int(idx_field) if idx_field.strip() else len(rows)
        except ValueError:
            raise ValueError(f"track table line {line_no}: index {idx_field!r} is not an integer") from None
        if idx in rows:
            raise ValueError(f"track table line {line_no}: duplicate index {idx}")
        extra = {h: fields[i] for h, i in col.items() if h not in ("index", "identifier", "description", "")}
        rows[idx] = (fields[col["identifier"]].strip(), fields[col["description"]].strip(), extra)
    # Indices may start past 0 (Basenji's targets_mouse.txt numbers on after the human head's 5,313 tracks).
    first = min(rows, default=0)
    if sorted(rows) != list(range(first, first + len(rows))):
        raise ValueError(f"track table indices must be {first}..{first + len(rows) - 1} without gaps")
    ordered = [rows[i] for i in range(first, first + len(rows))]
    if first:
        for _, _, extra in ordered:
            if extra.get("strand_pair", "").strip().lstrip("-").isdigit():
                extra["strand_pair"] = str(int(extra["strand_pair"]) - first)
    return TrackTable(
        tuple(r[0] for r in ordered), tuple(r[1] for r in ordered), tuple(r[2] for r in ordered)
    )


def write_track_table(table: TrackTable, path: str | os.PathLike[str]) -> None:
    """Write ``table`` in the Basenji ``targets_*.txt`` layout (used by the demo-model generators); a table
    with Borzoi's ``clip_soft`` / ``strand_pair`` columns keeps them (before the description)."""
    borzoi = table.column("strand_pair") is not None
    if borzoi:
        columns = ("index", "identifier", "file", "clip", "clip_soft", "scale", "sum_stat", "strand_pair")
        with open(path, "w", encoding="utf-8", newline="") as fh:
            fh.write("\t".join(columns + ("description",)) + "\n")
            for i, (ident, desc) in enumerate(zip(table.identifiers, table.descriptions, strict=True)):
                row = {"index": str(i), "identifier": ident, **table.extra[i]}
                fh.write("\t".join([row.get(c, "") for c in columns] + [desc]) + "\n")
        return
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("\t".join(_COLUMNS) + "\n")
        for i, (ident, desc) in enumerate(zip(table.identifiers, table.descriptions, strict=True)):
            extra = table.extra[i] if i < len(table.extra) else {}
            vals = [
                str(i),
                ident,
                extra.get("file", f"{ident}.w5"),
                extra.get("clip", "32"),
                extra.get("scale", "2"),
                extra.get("sum_stat", "sum"),
                desc,
            ]
            fh.write("\t".join(vals) + "\n")


def _parse_item(item: str, n_tracks: int, table: TrackTable | None) -> list[int]:
    if _INDEX_RE.match(item):
        idx = int(item)
        if idx >= n_tracks:
            raise ValueError(
                f"track index {idx} out of range: the head has {n_tracks} tracks (0-{n_tracks - 1})"
            )
        return [idx]
    m = _RANGE_RE.match(item)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if lo > hi:
            raise ValueError(f"track range {item!r} is empty: start {lo} > end {hi} (ranges are inclusive)")
        if hi >= n_tracks:
            raise ValueError(
                f"track range {item!r} out of range: the head has {n_tracks} tracks (0-{n_tracks - 1})"
            )
        return list(range(lo, hi + 1))
    if table is None:
        raise ValueError(
            f"track selector {item!r} needs a track table (this model has none); use indices or ranges (0-9)"
        )
    if item in table.identifiers:
        return [i for i, ident in enumerate(table.identifiers) if ident == item]
    pattern = item[3:] if item.startswith("re:") else item
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ValueError(
            f"track selector {item!r} is neither an index, range, identifier nor valid regex: {exc}"
        ) from None
    hits = [i for i, desc in enumerate(table.descriptions) if rx.search(desc)]
    if not hits:
        raise ValueError(f"track selector {item!r} matches no track identifier or description")
    return hits


def select_tracks(
    spec: str | Iterable[int] | None, n_tracks: int, table: TrackTable | None = None
) -> list[int]:
    """Resolve a track specification (see the module docstring) to sorted, unique head indices."""
    if table is not None and len(table) != n_tracks:
        raise ValueError(f"track table has {len(table)} rows but the head has {n_tracks} tracks")
    if spec is None:
        return list(range(n_tracks))
    if not isinstance(spec, str):
        out = sorted({int(i) for i in spec})
        bad = [i for i in out if not 0 <= i < n_tracks]
        if bad:
            raise ValueError(
                f"track index {bad[0]} out of range: the head has {n_tracks} tracks (0-{n_tracks - 1})"
            )
        if not out:
            raise ValueError("track selection is empty")
        return out
    spec = spec.strip()
    if spec in ("", "all"):
        return list(range(n_tracks))
    selected: set[int] = set()
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            raise ValueError(f"track specification {spec!r} has an empty item")
        selected.update(_parse_item(item, n_tracks, table))
    return sorted(selected)


def track_names(indices: Sequence[int], table: TrackTable | None = None) -> list[str]:
    """Column names for the given head indices: table identifiers, else ``track_0000``-style names."""
    if table is None:
        return [f"track_{i:04d}" for i in indices]
    return [table.identifiers[i] for i in indices]


def render_track_table(
    tables: dict[str, TrackTable | None], n_tracks: dict[str, int], max_description: int = 60
) -> str:
    """Human-readable listing of every head's tracks (for ``enformer-batch tracks MODEL``)."""
    lines: list[str] = []
    for head, n in n_tracks.items():
        table = tables.get(head)
        lines.append(f"head {head}: {n} tracks" + ("" if table is not None else " (no track table)"))
        if table is None:
            lines.append(f"  indices 0-{n - 1}, named track_0000..track_{n - 1:04d}")
            continue
        width = max(len(ident) for ident in table.identifiers) if len(table) else 10
        lines.append(f"  {'index':>6}  {'identifier':<{width}}  description")
        for i, (ident, desc) in enumerate(zip(table.identifiers, table.descriptions, strict=True)):
            if len(desc) > max_description:
                desc = desc[: max_description - 1] + "…"
            lines.append(f"  {i:>6}  {ident:<{width}}  {desc}")
    return "\n".join(lines) + "\n"
