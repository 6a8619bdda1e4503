"""Reading a finished atlas back: validation against its manifest and the FASTA index.

Owns the reader's side of the contract. ``validate`` re-derives what a run should have written from the
manifest's recorded configuration (geometry, stride, chromosomes, regions) and checks the files against
it: every listed part present with its size, checksum, row count and schema; every expected bin written
exactly once; no stray part; the chromosome lengths equal to the FASTA index when one is given, and for
atlases with ``--fasta`` the bases under every part equal to those it was predicted from (the part's codes
digest). Variant, mutagenesis and edit tables are checked the same way against their own plans (``COVERAGE``).
Temporary files of interrupted writes and a lease left by a driver are reported as notes: they do not make
the output wrong, and a resume removes them.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

from .store import SUCCESS, AtlasStore, records_from_manifest, track_schema
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
    unit: str = "bins"  # what coverage counts: bins of an atlas, rows of a variant table
    notes: list[str] = field(default_factory=list)  # worth knowing, not defects: leftovers, a lease

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        rows = [("chrom", "length", f"{self.unit} expected", f"{self.unit} found", "duplicates", "parts")]
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


def validate(
    url: str,
    fasta: str | None = None,
    storage_options: Mapping[str, str] | None = None,
    vcf: str | None = None,
) -> ValidationReport:
    """Check an atlas or a variant table; the report's ``problems`` names every defect found (empty when valid).

    ``vcf`` (variant tables): also check that every row of that VCF appears exactly once.
    """
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
        coverage = COVERAGE[identity.get("mode", "atlas")](identity, store)
    except (KeyError, TypeError, ValueError) as e:
        report.problems.append(f"_manifest.json is malformed ({type(e).__name__}: {e}); re-run with --overwrite")
        return report
    report.unit = coverage.unit
    if vcf is not None and type(coverage) is not VariantCoverage:
        report.problems.append("--vcf checks variant tables; this is not one")
    lengths: dict[str, int] = identity["fasta"]["chromosomes"]
    if report.status != "complete":
        report.problems.append(f"run is not complete (status {report.status!r}); re-run the same command to resume")
    if report.status == "complete" and not store.exists(SUCCESS):
        report.problems.append("manifest says complete but _SUCCESS is missing")
    if report.status != "complete" and store.exists(SUCCESS):
        report.problems.append("_SUCCESS exists but the manifest is not complete")

    if fasta is not None:
        from .genome import FastaSource

        actual = FastaSource(fasta, dict(storage_options or {})).lengths()
        for chrom in coverage.fasta_chromosomes():
            if chrom not in actual:
                report.problems.append(f"{chrom} is in the atlas but not in {fasta}")
            elif actual[chrom] != lengths[chrom]:
                report.problems.append(
                    f"{chrom}: length {lengths[chrom]} in the manifest, {actual[chrom]} in {fasta}"
                )

    records = records_from_manifest(manifest)
    planned = coverage.planned_paths()
    for path in sorted(set(planned) - set(records)):
        report.problems.append(f"missing part {path} (not committed)")
    for path in sorted(set(records) - set(planned)):
        report.problems.append(f"manifest lists {path}, which this run's plan does not contain")
    for path in sorted(set(store.list_part_files()) - set(records)):
        report.problems.append(f"stray part {path}: present but not in the manifest")
    _note_leftovers_and_lease(store, report)
    codes_of = None
    if fasta is not None and isinstance(coverage, BinCoverage):
        codes_of = _codes_digester(fasta, storage_options, coverage.geometry)

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
        if not table.schema.equals(coverage.schema):
            report.problems.append(f"part {path}: schema differs from the manifest's tracks and dtype")
            continue
        if path not in planned:
            continue
        if codes_of is not None and record.codes_sha256:
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
        report.problems += coverage.add(path, planned[path], table)
    report.problems += coverage.finish(report, vcf, storage_options)
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
    from .predict import AtlasMode

    mode = AtlasMode(FastaSource(fasta, dict(storage_options or {})), geometry.input_length)

    def digest(part) -> str:
        return part_codes_digest(mode, part)

    return digest


class BinCoverage:
    """Atlas coverage: every expected bin of every selected chromosome written exactly once."""

    unit = "bins"

    def __init__(self, identity: Mapping, store: AtlasStore):
        self.identity = identity
        self.lengths: dict[str, int] = identity["fasta"]["chromosomes"]
        self.geometry = Geometry(**identity["geometry"])
        self.store = store
        self.schema = track_schema([t["name"] for t in identity["tracks"]], identity["dtype"])
        self.plan = plan_selection(
            selection_of(identity), self.lengths, self.geometry, identity["stride"], identity["windows_per_part"]
        )
        self.starts: dict[str, list[np.ndarray]] = {c: [] for c in identity["chromosomes"]}
        self.coverage = {c: ChromCoverage(c, self.lengths[c], 0) for c in identity["chromosomes"]}

    def fasta_chromosomes(self) -> list[str]:
        return list(self.identity["chromosomes"])

    def planned_paths(self) -> dict:
        return {self.store.part_relpath(part.chrom, part.name): part for part in self.plan}

    def add(self, path: str, part, table) -> list[str]:
        chrom, bin_size = part.chrom, self.geometry.bin_size
        start = table.column("start").to_numpy()
        end = table.column("end").to_numpy()
        problems = []
        if np.any(start % bin_size) or np.any(end != np.minimum(start + bin_size, self.lengths[chrom])):
            problems.append(f"part {path}: start/end are not the bins [i*{bin_size}, (i+1)*...)")
        self.starts[chrom].append(start)
        self.coverage[chrom].parts += 1
        return problems

    def finish(self, report: ValidationReport, vcf: str | None, storage_options) -> list[str]:
        problems = []
        for chrom, want in expected_bins(self.identity).items():
            cov = self.coverage[chrom]
            cov.bins_expected = len(want)
            found = np.concatenate(self.starts[chrom] or [np.arange(0)]) // self.geometry.bin_size
            unique, counts = np.unique(found, return_counts=True)
            cov.bins_found = len(unique)
            cov.duplicates = int((counts > 1).sum())
            if cov.duplicates:
                problems.append(f"{chrom}: {cov.duplicates} bins written more than once")
            missing = np.setdiff1d(want, unique)
            extra = np.setdiff1d(unique, want)
            if len(missing) and report.status == "complete":
                first = missing[0] * self.geometry.bin_size
                problems.append(f"{chrom}: {len(missing)} bins missing (first at {first})")
            if len(extra):
                problems.append(f"{chrom}: {len(extra)} bins outside the selection")
            report.chroms.append(cov)
        return problems


class VariantCoverage:
    """Variant-table coverage: each part holds its planned rows; with a VCF, every input row exactly once."""

    unit = "rows"
    keys = ("pos", "id", "ref", "alt")  # with the chromosome: what identifies an input row

    def __init__(self, identity: Mapping, store: AtlasStore):
        from .variants import variant_schema

        self.identity = identity
        self.store = store
        self.rows_by_chrom: dict[str, int] = identity["vcf"]["rows_by_chrom"]
        self.per_part: int = identity["variants_per_part"]
        self.schema = variant_schema(identity["scores"], [t["name"] for t in identity["tracks"]])
        self.found: Counter = Counter()
        self.parts: Counter = Counter()
        self.input_problems: list[str] = []

    def fasta_chromosomes(self) -> list[str]:
        return [c for c in self.rows_by_chrom if c in self.identity["fasta"]["chromosomes"]]

    def planned_paths(self) -> dict:
        from .variants import VariantPart, part_bounds

        return {
            self.store.part_relpath(chrom, VariantPart(chrom, first, end, 0).name): (chrom, first, end)
            for chrom, first, end in part_bounds(self.rows_by_chrom, self.per_part)
        }

    def add(self, path: str, planned: tuple[str, int, int], table) -> list[str]:
        from .variants import STATUSES

        chrom, first, end = planned
        problems = []
        if table.num_rows != end - first:
            problems.append(f"part {path}: {table.num_rows} rows, the plan has {end - first}")
        statuses = set(table.column("status").to_pylist())
        if statuses - set(STATUSES):
            problems.append(f"part {path}: unknown status {sorted(statuses - set(STATUSES))}")
        columns = [table.column(c).to_pylist() for c in self.keys]
        self.found.update((chrom, *row) for row in zip(*columns))
        self.parts[chrom] += 1
        return problems

    def finish(self, report: ValidationReport, vcf: str | None, storage_options) -> list[str]:
        for chrom, rows in self.rows_by_chrom.items():
            found = sum(n for key, n in self.found.items() if key[0] == chrom)
            report.chroms.append(ChromCoverage(chrom, self.identity["fasta"]["chromosomes"].get(chrom, 0), rows,
                                               found, 0, self.parts[chrom]))
        want = self.expected(vcf, storage_options)
        return [] if want is None else self.compare(want)

    def expected(self, vcf: str | None, storage_options) -> Counter | None:
        """Every input row, from the VCF (None without one); a different VCF is a problem of its own."""
        if vcf is None:
            return None
        from .vcf import ChromMatcher, VcfDigest, read_rows

        digest = VcfDigest()
        match = ChromMatcher(self.identity["fasta"]["chromosomes"])
        want = Counter(
            (match(r.chrom) or r.chrom, r.pos, r.id, r.ref, r.alt) for r in read_rows(vcf, storage_options, digest)
        )
        if digest.sha256 != self.identity["vcf"]["sha256"]:
            self.input_problems = [f"{vcf} is not the VCF this table was scored from (its content hash differs)"]
        return want

    def compare(self, want: Counter) -> list[str]:
        problems = list(self.input_problems)
        missing, extra = want - self.found, self.found - want
        for what, rows in (("missing", missing), ("not in the input, or more often than in it", extra)):
            if rows:
                key, _ = next(iter(rows.items()))
                problems.append(f"{sum(rows.values())} row(s) {what} (e.g. {' '.join(map(str, key))})")
        return problems


class EditCoverage(VariantCoverage):
    """Edit tables: the manifest lists every edit, so each is checked to appear exactly once."""

    keys = ("name", "start", "end", "sequence")

    def __init__(self, identity: Mapping, store: AtlasStore):
        from .experiments import EDIT_FIELDS
        from .variants import scores_schema

        self.identity = identity
        self.store = store
        self.rows_by_chrom = identity["rows_by_chrom"]
        self.per_part = identity["edits_per_part"]
        self.schema = scores_schema(EDIT_FIELDS, identity["scores"], [t["name"] for t in identity["tracks"]])
        self.found = Counter()
        self.parts = Counter()
        self.input_problems = []

    def planned_paths(self) -> dict:
        from .experiments import EditPart
        from .variants import part_bounds

        return {
            self.store.part_relpath(chrom, EditPart(chrom, first, end, 0, ()).name): (chrom, first, end)
            for chrom, first, end in part_bounds(self.rows_by_chrom, self.per_part)
        }

    def expected(self, vcf: str | None, storage_options) -> Counter:
        return Counter((chrom, name, start, end, seq) for name, chrom, start, end, seq in self.identity["edits"])


class MutagenesisCoverage:
    """Mutagenesis tables: each part holds every position of its range, with each base but the reference."""

    unit = "rows"

    def __init__(self, identity: Mapping, store: AtlasStore):
        from .experiments import MUTAGENESIS_FIELDS, planned_mutagenesis_parts
        from .variants import scores_schema

        self.identity = identity
        self.store = store
        self.plan = planned_mutagenesis_parts(identity)
        self.schema = scores_schema(MUTAGENESIS_FIELDS, identity["scores"], [t["name"] for t in identity["tracks"]])
        self.coverage: dict[str, ChromCoverage] = {}
        for part in self.plan:
            cov = self.coverage.setdefault(part.chrom, ChromCoverage(part.chrom, part.length, 0))
            cov.bins_expected += 3 * (part.end - part.first)

    def fasta_chromosomes(self) -> list[str]:
        return list(self.coverage)

    def planned_paths(self) -> dict:
        return {self.store.part_relpath(p.chrom, p.name): p for p in self.plan}

    def add(self, path: str, part, table) -> list[str]:
        rows = list(zip(*(table.column(c).to_pylist() for c in ("region", "pos", "ref", "alt"))))
        problems = []
        if {r[0] for r in rows} != {part.region.label}:
            problems.append(f"part {path}: rows of another region than {part.region.label}")
        per_position: Counter = Counter()
        for _, pos, ref, alt in rows:
            per_position[pos] += 1
            if ref == alt or alt not in "ACGT":
                problems.append(f"part {path}: position {pos} has the mutant {ref}>{alt}")
                break
        expected = set(range(part.first + 1, part.end + 1))
        if set(per_position) != expected or any(
            n != (4 if r == "N" else 3) for (_, pos, r, _), n in ((row, per_position[row[1]]) for row in rows)
        ):
            problems.append(f"part {path}: not every position of {part.first + 1}-{part.end} with each other base "
                            "exactly once")
        cov = self.coverage[part.chrom]
        cov.bins_found += len(rows)
        cov.parts += 1
        return problems

    def finish(self, report: ValidationReport, vcf: str | None, storage_options) -> list[str]:
        report.chroms += list(self.coverage.values())
        return []


COVERAGE = {"atlas": BinCoverage, "variants": VariantCoverage, "edits": EditCoverage,
            "mutagenesis": MutagenesisCoverage}
