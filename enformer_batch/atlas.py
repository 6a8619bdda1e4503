"""Reading a finished atlas back: validation against its manifest and the FASTA index.

Owns the reader's side of the contract. ``validate`` re-derives what a run should have written from the
manifest's recorded configuration (geometry, stride, chromosomes, regions) and checks the files against
it: every listed part present with its size, checksum, row count and schema; every expected bin written
exactly once; no stray part; the chromosome lengths equal to the FASTA index when one is given, and with
``--fasta`` the bases under every part equal to those it was predicted from (the part's codes digest).
Temporary files of interrupted writes and a lease left by a driver are reported as notes: they do not make
the atlas wrong, and a resume removes them.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

from .store import SUCCESS, AtlasStore, chrom_of_dir, records_from_manifest, track_schema
from .windows import BinRanges, Geometry, n_bins, plan_selection


@dataclass
class ChromCoverage:
    chrom: str
    length: int
    bins_expected: int
    bins_found: int = 0
    duplicates: int = 0
    parts: int = 0


@dataclass
class ValidationReport:
    url: str
    status: str = "missing"
    problems: list[str] = field(default_factory=list)
    chroms: list[ChromCoverage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing, not defects: leftovers, a lease

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        rows = [("chrom", "length", "bins expected", "bins found", "duplicates", "parts")]
        rows += [
            (c.chrom, str(c.length), str(c.bins_expected), str(c.bins_found), str(c.duplicates), str(c.parts))
            for c in self.chroms
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                 for r in rows]
        verdict = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        lines.append(f"{self.url}: manifest status {self.status}; {verdict}")
        lines += [f"  - {p}" for p in self.problems[:50]]
        if len(self.problems) > 50:
            lines.append(f"  ... and {len(self.problems) - 50} more")
        lines += [f"  note: {n}" for n in self.notes[:20]]
        if len(self.notes) > 20:
            lines.append(f"  note: ... and {len(self.notes) - 20} more")
        return "\n".join(lines)


def selection_of(identity: Mapping) -> dict[str, BinRanges | None]:
    """The run's selection, as ``predict`` planned it: each chromosome's wanted bin ranges (None = all)."""
    regions = identity.get("regions")
    return {
        chrom: None if regions is None else tuple(tuple(r) for r in regions["bins"].get(chrom, []))
        for chrom in identity["chromosomes"]
    }


def expected_bins(identity: Mapping) -> dict[str, np.ndarray]:
    """Bin indices each selected chromosome must have, from the manifest's identity."""
    lengths = identity["fasta"]["chromosomes"]
    geometry = Geometry(**identity["geometry"])
    out = {}
    for chrom, ranges in selection_of(identity).items():
        total = n_bins(lengths[chrom], geometry.bin_size)
        ranges = ((0, total),) if ranges is None else ranges
        out[chrom] = np.concatenate([np.arange(lo, min(hi, total)) for lo, hi in ranges] or [np.arange(0)])
    return out


def validate(url: str, fasta: str | None = None, storage_options: Mapping[str, str] | None = None) -> ValidationReport:
    """Check an atlas; the report's ``problems`` names every defect found (empty when valid)."""
    report = ValidationReport(url)
    store = AtlasStore(url, storage_options)
    try:
        manifest = store.read_manifest()
    except Exception as e:  # a corrupt manifest is a finding, not a crash
        report.problems.append(str(e))
        return report
    if manifest is None:
        report.problems.append(f"no _manifest.json at {url}: not an atlas, or the run never started")
        return report
    report.status = manifest.get("status", "?")
    try:
        identity = manifest["identity"]
        lengths: dict[str, int] = identity["fasta"]["chromosomes"]
        geometry = Geometry(**identity["geometry"])
        identity["chromosomes"], identity["stride"], identity["windows_per_part"], identity["tracks"]
    except (KeyError, TypeError, ValueError) as e:
        report.problems.append(f"_manifest.json is malformed ({type(e).__name__}: {e}); re-run with --overwrite")
        return report
    if report.status != "complete":
        report.problems.append(f"run is not complete (status {report.status!r}); re-run the same command to resume")
    if report.status == "complete" and not store.exists(SUCCESS):
        report.problems.append("manifest says complete but _SUCCESS is missing")
    if report.status != "complete" and store.exists(SUCCESS):
        report.problems.append("_SUCCESS exists but the manifest is not complete")

    if fasta is not None:
        from .genome import FastaSource

        actual = FastaSource(fasta, dict(storage_options or {})).lengths()
        for chrom in identity["chromosomes"]:
            if chrom not in actual:
                report.problems.append(f"{chrom} is in the atlas but not in {fasta}")
            elif actual[chrom] != lengths[chrom]:
                report.problems.append(
                    f"{chrom}: length {lengths[chrom]} in the manifest, {actual[chrom]} in {fasta}"
                )

    records = records_from_manifest(manifest)
    planned = {
        store.part_relpath(part.chrom, part.name): part
        for part in plan_selection(
            selection_of(identity), lengths, geometry, identity["stride"], identity["windows_per_part"]
        )
    }
    for path in sorted(set(planned) - set(records)):
        report.problems.append(f"missing part {path} (not committed)")
    for path in sorted(set(records) - set(planned)):
        report.problems.append(f"manifest lists {path}, which this run's plan does not contain")
    for path in sorted(set(store.list_part_files()) - set(records)):
        report.problems.append(f"stray part {path}: present but not in the manifest")
    _note_leftovers_and_lease(store, report)
    codes_of = _codes_digester(fasta, storage_options, geometry) if fasta is not None else None

    schema = track_schema([t["name"] for t in identity["tracks"]], identity["dtype"])
    starts_by_chrom: dict[str, list[np.ndarray]] = {c: [] for c in identity["chromosomes"]}
    coverage = {c: ChromCoverage(c, lengths[c], 0) for c in identity["chromosomes"]}
    for path, record in sorted(records.items()):
        if not store.exists(path):
            report.problems.append(f"part {path} is listed in the manifest but missing")
            continue
        data = store.read_bytes(path)
        if len(data) != record.bytes:
            report.problems.append(f"part {path}: {len(data)} bytes, manifest says {record.bytes} (truncated?)")
            continue
        if hashlib.sha256(data).hexdigest() != record.sha256:
            report.problems.append(f"part {path}: checksum does not match the manifest")
            continue
        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as e:
            report.problems.append(f"part {path}: unreadable Parquet ({e})")
            continue
        if table.num_rows != record.rows:
            report.problems.append(f"part {path}: {table.num_rows} rows, manifest says {record.rows}")
        if not table.schema.equals(schema):
            report.problems.append(f"part {path}: schema differs from the manifest's tracks and dtype")
            continue
        chrom = chrom_of_dir(path.split("/")[0])
        if codes_of is not None and record.codes_sha256 and path in planned:
            part = planned[path]
            try:
                digest = codes_of(part)
            except Exception as e:  # e.g. a chromosome the FASTA lacks: reported above
                digest = f"unreadable ({e})"
            if digest != record.codes_sha256:
                report.problems.append(
                    f"part {path}: the bases of {part.chrom} windows {part.first_window}-{part.end_window - 1} in "
                    f"{fasta} differ from those it was predicted from (another masking or build of the genome?)"
                )
        if chrom not in coverage:
            continue
        start = table.column("start").to_numpy()
        end = table.column("end").to_numpy()
        if np.any(start % geometry.bin_size) or np.any(end != np.minimum(start + geometry.bin_size, lengths[chrom])):
            report.problems.append(f"part {path}: start/end are not the bins [i*{geometry.bin_size}, (i+1)*...)")
        starts_by_chrom[chrom].append(start)
        coverage[chrom].parts += 1

    for chrom, want in expected_bins(identity).items():
        cov = coverage[chrom]
        cov.bins_expected = len(want)
        found = np.concatenate(starts_by_chrom[chrom] or [np.arange(0)]) // geometry.bin_size
        unique, counts = np.unique(found, return_counts=True)
        cov.bins_found = len(unique)
        cov.duplicates = int((counts > 1).sum())
        if cov.duplicates:
            report.problems.append(f"{chrom}: {cov.duplicates} bins written more than once")
        missing = np.setdiff1d(want, unique)
        extra = np.setdiff1d(unique, want)
        if len(missing) and report.status == "complete":
            report.problems.append(f"{chrom}: {len(missing)} bins missing (first at {missing[0] * geometry.bin_size})")
        if len(extra):
            report.problems.append(f"{chrom}: {len(extra)} bins outside the selection")
        report.chroms.append(cov)
    return report


def _note_leftovers_and_lease(store: AtlasStore, report: ValidationReport) -> None:
    from .lease import Lease, read_lease

    leftovers = store.list_leftovers()
    if leftovers:
        report.notes.append(f"{len(leftovers)} temporary file(s) of interrupted writes (first: {leftovers[0]}); "
                            "invisible to readers, removed by the next predict on this --out")
    lease = read_lease(store)
    if lease is not None:
        stale = Lease(store).stale_reason(lease)
        state = f"stale ({stale}): the next predict takes it over" if stale else "live: a predict is running"
        report.notes.append(f"a driver's lease is present, {lease.describe(time.time())}; {state}")


def _codes_digester(fasta: str, storage_options: Mapping[str, str] | None, geometry: Geometry):
    """part -> digest of its base codes in ``fasta``, as the reader stage produces them."""
    from .genome import FastaSource
    from .integrity import part_codes_digest

    source = FastaSource(fasta, dict(storage_options or {}))

    def digest(part) -> str:
        return part_codes_digest(source, part, geometry.input_length)

    return digest
