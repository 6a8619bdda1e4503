"""Genomic intervals as users write them: ``chr:start-end`` on the command line, BED files, small text inputs.

A low-layer module (no model, no store, no Ray): the job kinds parse their inputs with it and the atlas
reader parses query regions with it. Coordinates are 0-based half-open throughout (docs/contract.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NUMBER = r"\d[\d,]*"
_REGION_RE = re.compile(rf"^({_NUMBER})\s*-\s*({_NUMBER})$")


def parse_region(text: str) -> tuple[str, int | None, int | None]:
    """``chr:start-end`` (0-based half-open, commas allowed in numbers) → ``(chrom, start, end)``.

    A bare chromosome name means the whole chromosome: ``(chrom, None, None)``. The split is at the last
    colon, so names that themselves contain ':' (``HLA-A*01:01``) still work when followed by a range.
    """
    text = text.strip()
    chrom, sep, span = text.rpartition(":")
    if sep:
        m = _REGION_RE.match(span.strip())
        if m:
            start, end = (int(g.replace(",", "")) for g in m.groups())
            if not chrom:
                raise ValueError(f"region {text!r} has no chromosome; expected chr:start-end")
            if end <= start:
                raise ValueError(f"region {text!r} is empty: start {start} >= end {end} (0-based half-open)")
            return chrom, start, end
        if re.match(r"^[\d,\s-]*$", span):  # looks like a range, but malformed: say so rather than guess
            raise ValueError(f"cannot parse region {text!r}; expected chr:start-end, e.g. chr1:10,000-20,000")
    if not text:
        raise ValueError("empty region; expected chr:start-end")
    return text, None, None


def read_text_lines(url: str, what: str, storage_options: Mapping[str, str] | None = None) -> list[str]:
    """The lines of a small text input (BED, EDITS.tsv), local or any fsspec URL; ValueError naming ``what``."""
    import fsspec

    try:
        with fsspec.open(url, "rt", **dict(storage_options or {})) as f:
            return f.read().splitlines()
    except (FileNotFoundError, OSError) as e:
        raise ValueError(f"cannot read {what} {url}: {e}") from e


def read_bed_records(
    url: str, lengths: Mapping[str, int], storage_options: Mapping[str, str] | None = None, what: str = "--regions"
) -> list[tuple[int, str, int, int]]:
    """``(line, chrom, start, end)`` of every BED interval in file order, checked against the FASTA's chromosomes."""
    lines = read_text_lines(url, what, storage_options)
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        where = f"{what} {url} line {number}"
        if len(fields) < 3:
            raise ValueError(f"{where}: expected chrom, start, end; got {line!r}")
        chrom = fields[0]
        try:
            start, end = int(fields[1]), int(fields[2])
        except ValueError:
            raise ValueError(f"{where}: start and end must be integers; got {line!r}") from None
        if chrom not in lengths:
            raise ValueError(f"{where}: chromosome {chrom!r} is not in the FASTA")
        if start < 0 or end <= start:
            raise ValueError(f"{where}: needs 0 <= start < end; got {start}-{end}")
        if end > lengths[chrom]:
            raise ValueError(f"{where}: end {end} is past the end of {chrom} (length {lengths[chrom]})")
        records.append((number, chrom, start, end))
    if not records:
        raise ValueError(f"{what} {url} holds no intervals")
    return records


def read_bed(url: str, lengths: Mapping[str, int], storage_options: Mapping[str, str] | None = None,
             ) -> dict[str, list[tuple[int, int]]]:
    """BED intervals per chromosome (0-based half-open), checked against the FASTA's chromosomes."""
    intervals: dict[str, list[tuple[int, int]]] = {}
    for _, chrom, start, end in read_bed_records(url, lengths, storage_options):
        intervals.setdefault(chrom, []).append((start, end))
    return intervals
