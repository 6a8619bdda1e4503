"""Reading a finished atlas back: validation against its manifest and the FASTA index.

Owns the reader's side of the contract. ``validate`` re-derives what a run should have written from the
manifest's recorded configuration (geometry, stride, chromosomes, regions) and checks the files against
it: every listed part present with its size, row count and schema; every expected bin written exactly once;
no stray part; the chromosome lengths equal to the FASTA index when one is given, and for atlases with
``--fasta`` the bases under every part equal to those it was predicted from (the part's codes digest).
Variant, mutagenesis and edit tables are checked the same way against their own plans (``COVERAGE``).
Temporary files of interrupted writes and a lease left by a driver are reported as notes: they do not make
the output wrong, and a resume removes them.

Track values are never read by default: one listing gives every part's size and version token, then each
part's Parquet footer (row count, schema) and its key columns (``start``/``end`` of an atlas) are read by
range requests, in Ray tasks that each take a batch of parts (``check_parts``, plain Python, also run
in-process for small outputs). A part whose version token is not the one its commit recorded is hashed
whole; ``checksums=True`` (``--checksums``) hashes every part and compares the manifest's sha256.
"""

from __future__ import annotations

import hashlib
import math
import struct
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .store import SUCCESS, AtlasStore, PartRecord, records_from_manifest, track_schema
from .units import human_bytes
from .windows import BinRanges, Geometry, n_bins, plan_selection

# Without a running Ray, outputs of up to this many parts are checked in this process (starting Ray costs
# seconds; checking a part's footer costs milliseconds); larger ones start a local Ray like ``predict``.
IN_PROCESS_PARTS = 64
MAX_PARTS_PER_TASK = 32  # a 10,000-part atlas is a few hundred tasks, each returning a few kB
TAIL_READ = 64 * 1024  # first read of a part's end: the whole footer of narrow tables, the footer length of wide
HASH_CHUNK = 8 * 2**20  # --checksums streams each part through sha256 in chunks this size

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
    checksums: bool = False  # whether every part's sha256 was verified (``checksums=True``)
    part_bytes: int = 0  # bytes of the committed parts, as the manifest lists them
    bytes_read: int = 0  # bytes of part files read to check them (footers, key columns, hashed parts)
    parts_hashed: int = 0

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
        share = f" ({100 * self.bytes_read / self.part_bytes:.2f} %)" if self.part_bytes else ""
        hashed = ("sha256 of every part verified" if self.checksums else
                  f"{self.parts_hashed} part(s) hashed, the rest checked by size and version token "
                  "(--checksums hashes every byte)")
        lines.append(f"read {human_bytes(self.bytes_read)} of {human_bytes(self.part_bytes)} of parts{share}; {hashed}")
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
    checksums: bool = False,
    parallel: bool | None = None,
) -> ValidationReport:
    """Check an atlas or a variant table; the report's ``problems`` names every defect found (empty when valid).

    ``vcf`` (variant tables): also check that every row of that VCF appears exactly once.
    ``checksums``: also read every byte of every part and compare its sha256 with the manifest's (without it,
    track values are never read; see the module docstring for what each mode checks).
    ``parallel``: check parts in Ray tasks (True), in this process (False), or None: in Ray tasks when Ray is
    running or the output has more than ``IN_PROCESS_PARTS`` parts (starting a local Ray if needed).
    """
    report = ValidationReport(url, checksums=checksums)
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
    present = store.part_tokens()  # one listing: every part file's size and version token
    for path in sorted(set(planned) - set(records)):
        report.problems.append(f"missing part {path} (not committed)")
    for path in sorted(set(records) - set(planned)):
        report.problems.append(f"manifest lists {path}, which this run's plan does not contain")
    for path in sorted(set(present) - set(records)):
        report.problems.append(f"stray part {path}: present but not in the manifest")
    _note_leftovers_and_lease(store, report)

    jobs: list[PartJob] = []
    retokened = 0
    for path, record in sorted(records.items()):
        report.part_bytes += record.bytes
        if path not in present:
            report.problems.append(f"part {path} is listed in the manifest but missing")
            continue
        size, token = present[path]
        if size != record.bytes:
            report.problems.append(f"part {path}: {size} bytes, manifest says {record.bytes} (truncated?)")
            continue
        # Another token than the commit's: the file was written again (a late write of a replica the driver
        # gave up on) or copied. Its size says nothing then; its bytes decide, as on resume.
        changed = record.token is not None and token != record.token
        retokened += changed and not checksums
        jobs.append(PartJob(path, record, planned.get(path), checksums or changed))
    if retokened:
        report.notes.append(f"{retokened} part(s) carry another version token than their commit recorded "
                            "(rewritten, or the atlas was copied): their bytes were hashed")

    checker = coverage.checker(vcf, fasta, storage_options)
    for job, result in zip(jobs, _run_checks(store, checker, jobs, parallel)):
        report.bytes_read += result.bytes_read
        report.parts_hashed += job.hash_bytes
        report.problems += result.problems
        if result.summary is not None and job.planned is not None:
            coverage.merge(job.path, job.planned, result.summary)
    report.problems += coverage.finish(report, vcf, storage_options)
    return report


@dataclass(frozen=True)
class PartJob:
    """One committed part to check: its manifest record, what the plan says it holds, whether to hash it."""

    path: str
    record: PartRecord
    planned: Any  # the mode's planned part (None: the plan does not contain it, reported already)
    hash_bytes: bool


@dataclass
class PartCheck:
    """What checking one part sends back to the driver: small, whatever the part's size."""

    problems: list[str]
    summary: Any = None  # the mode's coverage summary; None when the part could not be checked
    bytes_read: int = 0


class _CountingFile:
    """A read-only file object that counts the bytes read through it (what ``validate`` reports)."""

    def __init__(self, f):
        self._f = f
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.count += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._f.closed

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _CountingFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open(store: AtlasStore, relative: str) -> _CountingFile:
    path = store.path(relative)
    if store.local:
        return _CountingFile(open(path, "rb"))  # noqa: SIM115 (closed by the caller)
    try:
        # No read-ahead: fsspec's default cache would fetch megabytes past each small range read.
        return _CountingFile(store.fs.open(path, "rb", cache_type="none"))
    except TypeError:  # a file system without cache options
        return _CountingFile(store.fs.open(path, "rb"))


def _read_footer(f: _CountingFile, size: int) -> pq.FileMetaData:
    """The Parquet footer, read in one or two range reads from the end (pyarrow alone reads it twice)."""
    f.seek(max(0, size - TAIL_READ))
    tail = f.read(min(size, TAIL_READ))
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise ValueError("no Parquet footer at the end of the file")
    length = struct.unpack("<I", tail[-8:-4])[0]
    if length + 12 > size:
        raise ValueError(f"footer length {length} does not fit the file's {size} bytes")
    if length + 8 > len(tail):
        f.seek(size - length - 8)
        tail = f.read(length + 8 - len(tail)) + tail
    return pq.read_metadata(pa.BufferReader(tail[-(length + 8):]))


def _sha256(f: _CountingFile) -> str:
    h = hashlib.sha256()
    while chunk := f.read(HASH_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def check_part(store: AtlasStore, checker: Any, job: PartJob) -> PartCheck:
    """Check one part against its manifest record and plan: hash (if asked), footer, key columns. No Ray."""
    path, record = job.path, job.record
    try:
        f = _open(store, path)
    except FileNotFoundError:  # removed since the listing
        return PartCheck([f"part {path} is listed in the manifest but missing"])
    with f:
        try:
            if job.hash_bytes and _sha256(f) != record.sha256:
                return PartCheck([f"part {path}: checksum does not match the manifest"], bytes_read=f.count)
        except OSError as e:  # the store failed mid-read (after its client's own retries): a finding, not a crash
            return PartCheck([f"part {path}: unreadable ({e})"], bytes_read=f.count)
        try:
            metadata = _read_footer(f, record.bytes)
            parquet = pq.ParquetFile(f, metadata=metadata)
            schema = parquet.schema_arrow
        except Exception as e:
            return PartCheck([f"part {path}: unreadable Parquet ({e})"], bytes_read=f.count)
        problems = []
        if metadata.num_rows != record.rows:
            problems.append(f"part {path}: {metadata.num_rows} rows, manifest says {record.rows}")
        if not schema.equals(checker.schema):
            problems.append(f"part {path}: schema differs from the manifest's tracks and dtype")
            return PartCheck(problems, bytes_read=f.count)
        if job.planned is None:
            return PartCheck(problems, bytes_read=f.count)
        try:
            table = parquet.read(columns=list(checker.columns), use_threads=False)
        except Exception as e:
            return PartCheck(problems + [f"part {path}: unreadable Parquet ({e})"], bytes_read=f.count)
        more, summary = checker.summarise(path, job.planned, table)
        return PartCheck(problems + more, summary, f.count)


def check_parts(store: AtlasStore, checker: Any, jobs: Sequence[PartJob]) -> list[PartCheck]:
    """``check_part`` over a batch of parts: what one Ray task of ``validate`` runs."""
    out = []
    for job in jobs:
        result = check_part(store, checker, job)
        if job.record.codes_sha256 and result.summary is not None and checker.fasta is not None:
            result.problems += checker.check_codes(job.path, job.planned, job.record.codes_sha256)
        out.append(result)
    return out


def _run_checks(store: AtlasStore, checker: Any, jobs: list[PartJob], parallel: bool | None) -> list[PartCheck]:
    """Every job's check, in job order: in Ray tasks of a batch of parts each, or in this process."""
    if not jobs:
        return []
    if parallel is None:
        running = "ray" in sys.modules and sys.modules["ray"].is_initialized()
        parallel = running or len(jobs) > IN_PROCESS_PARTS
    if not parallel:
        return check_parts(store, checker, jobs)
    import ray

    from .engine import _ray_init

    _ray_init()
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    per_task = min(MAX_PARTS_PER_TASK, max(1, math.ceil(len(jobs) / (4 * cpus))))
    task = ray.remote(check_parts).options(num_cpus=1, max_retries=3)
    shared_store, shared_checker = ray.put(store), ray.put(checker)  # once, not once per task
    refs = [task.remote(shared_store, shared_checker, jobs[i : i + per_task]) for i in range(0, len(jobs), per_task)]
    return [result for batch in ray.get(refs) for result in batch]


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


@lru_cache(maxsize=4)
def _atlas_reader(fasta: str, options: tuple, input_length: int):
    """The atlas reader stage on ``fasta``, once per task process (reused across the parts of a batch)."""
    from .genome import FastaSource
    from .predict import AtlasMode

    return AtlasMode(FastaSource(fasta, dict(options)), input_length)


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
        self.runs: dict[str, list[np.ndarray]] = {c: [] for c in identity["chromosomes"]}
        self.coverage = {c: ChromCoverage(c, self.lengths[c], 0) for c in identity["chromosomes"]}

    def fasta_chromosomes(self) -> list[str]:
        return list(self.identity["chromosomes"])

    def planned_paths(self) -> dict:
        return {self.store.part_relpath(part.chrom, part.name): part for part in self.plan}

    def checker(self, vcf: str | None, fasta: str | None, storage_options) -> BinChecker:
        lengths = {c: self.lengths[c] for c in self.identity["chromosomes"]}
        return BinChecker(self.schema, self.geometry.bin_size, lengths, fasta,
                          tuple(sorted(dict(storage_options or {}).items())), self.geometry.input_length)

    def merge(self, path: str, part, runs: np.ndarray) -> None:
        self.runs[part.chrom].append(runs)
        self.coverage[part.chrom].parts += 1

    def finish(self, report: ValidationReport, vcf: str | None, storage_options) -> list[str]:
        problems = []
        selection = selection_of(self.identity)
        for chrom in self.identity["chromosomes"]:
            cov = self.coverage[chrom]
            total = n_bins(self.lengths[chrom], self.geometry.bin_size)
            ranges = ((0, total),) if selection[chrom] is None else selection[chrom]
            want = np.array([(min(lo, total), min(hi, total)) for lo, hi in ranges] or np.empty((0, 2)), np.int64)
            found = np.concatenate(self.runs[chrom] or [np.empty((0, 2), np.int64)])
            tally = _tally(found, want.reshape(-1, 2))
            cov.bins_expected = tally.wanted
            cov.bins_found = tally.found
            cov.duplicates = tally.duplicates
            if cov.duplicates:
                problems.append(f"{chrom}: {cov.duplicates} bins written more than once")
            if tally.missing and report.status == "complete":
                first = tally.first_missing * self.geometry.bin_size
                problems.append(f"{chrom}: {tally.missing} bins missing (first at {first})")
            if tally.extra:
                problems.append(f"{chrom}: {tally.extra} bins outside the selection")
            report.chroms.append(cov)
        return problems


@dataclass(frozen=True)
class BinChecker:
    """What a task needs to check an atlas part: the schema, the bins, and the genome for ``--fasta``."""

    schema: pa.Schema
    bin_size: int
    lengths: Mapping[str, int]
    fasta: str | None = None
    storage_options: tuple = ()
    input_length: int = 0
    columns: tuple[str, ...] = ("start", "end")

    def summarise(self, path: str, part, table: pa.Table) -> tuple[list[str], np.ndarray]:
        """The start/end check, and the part's bins as runs ``[[lo, hi), ...]`` (one run for a normal part)."""
        start = table.column("start").to_numpy()
        end = table.column("end").to_numpy()
        problems = []
        if np.any(start % self.bin_size) or np.any(end != np.minimum(start + self.bin_size, self.lengths[part.chrom])):
            problems.append(f"part {path}: start/end are not the bins [i*{self.bin_size}, (i+1)*...)")
        return problems, bin_runs(start // self.bin_size)

    def check_codes(self, path: str, part, recorded: str) -> list[str]:
        from .integrity import part_codes_digest

        try:
            digest = part_codes_digest(_atlas_reader(self.fasta, self.storage_options, self.input_length), part)
        except Exception as e:  # e.g. a chromosome the FASTA lacks: reported by the driver
            digest = f"unreadable ({e})"
        if digest == recorded:
            return []
        return [f"part {path}: the bases of {part.chrom} windows {part.first_window}-{part.end_window - 1} in "
                f"{self.fasta} differ from those it was predicted from (another masking or build of the genome?)"]


def bin_runs(bins: np.ndarray) -> np.ndarray:
    """Bins in row order as runs of consecutive bins, ``[k, 2]`` of ``[lo, hi)``: the same multiset, kB not MB.

    A repeated or out-of-order bin starts a run of its own, so duplicates within a part stay countable.
    """
    bins = np.asarray(bins, dtype=np.int64)
    if not len(bins):
        return np.empty((0, 2), np.int64)
    breaks = np.flatnonzero(np.diff(bins) != 1) + 1
    first = np.concatenate([[0], breaks])
    last = np.concatenate([breaks - 1, [len(bins) - 1]])
    return np.stack([bins[first], bins[last] + 1], axis=1)


@dataclass(frozen=True)
class Tally:
    wanted: int  # distinct bins wanted
    found: int  # distinct bins found
    duplicates: int  # bins found more than once
    missing: int  # wanted, not found
    extra: int  # found, not wanted
    first_missing: int  # the first missing bin (-1: none)


def _tally(found: np.ndarray, want: np.ndarray) -> Tally:
    """Compare runs of found bins (a multiset) with runs of wanted ones (a set), in O(runs log runs)."""
    points = np.unique(np.concatenate([found.ravel(), want.ravel()]))
    if len(points) < 2:
        return Tally(0, 0, 0, 0, 0, -1)
    seg, length = points[:-1], np.diff(points)

    def depth(runs: np.ndarray) -> np.ndarray:  # how many runs cover each segment [points[i], points[i+1])
        runs = runs[runs[:, 1] > runs[:, 0]]
        return (np.searchsorted(np.sort(runs[:, 0]), seg, "right")
                - np.searchsorted(np.sort(runs[:, 1]), seg, "right"))

    have, need = depth(found), depth(want) > 0
    gaps = need & (have == 0)
    return Tally(
        wanted=int(length[need].sum()),
        found=int(length[have > 0].sum()),
        duplicates=int(length[have > 1].sum()),
        missing=int(length[gaps].sum()),
        extra=int(length[(have > 0) & ~need].sum()),
        first_missing=int(seg[gaps][0]) if gaps.any() else -1,
    )


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
        self.rows: Counter = Counter()
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

    def wants_keys(self, vcf: str | None) -> bool:
        return vcf is not None  # without an input to compare with, row counts suffice

    def checker(self, vcf: str | None, fasta: str | None, storage_options) -> RowChecker:
        from .variants import STATUSES

        keys = self.keys if self.wants_keys(vcf) else ()
        return RowChecker(self.schema, ("status", *keys) if "status" in self.schema.names else keys, keys,
                          frozenset(STATUSES))

    def merge(self, path: str, planned: tuple[str, int, int], summary: tuple[int, list | None]) -> None:
        chrom = planned[0]
        rows, keys = summary
        if keys is not None:
            self.found.update((chrom, *row) for row in keys)
        self.rows[chrom] += rows
        self.parts[chrom] += 1

    def finish(self, report: ValidationReport, vcf: str | None, storage_options) -> list[str]:
        for chrom, rows in self.rows_by_chrom.items():
            report.chroms.append(ChromCoverage(chrom, self.identity["fasta"]["chromosomes"].get(chrom, 0), rows,
                                               self.rows[chrom], 0, self.parts[chrom]))
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


@dataclass(frozen=True)
class RowChecker:
    """What a task needs to check a variant or edit part: its row count and statuses, and the rows' keys."""

    schema: pa.Schema
    columns: tuple[str, ...]  # read from the part: the status and the keys, never the scores
    keys: tuple[str, ...]  # identify an input row; empty when nothing is compared with the input
    statuses: frozenset = frozenset()
    fasta: None = None

    def summarise(self, path: str, planned: tuple[str, int, int], table: pa.Table) -> tuple[list[str], tuple]:
        _, first, end = planned
        problems = []
        if table.num_rows != end - first:
            problems.append(f"part {path}: {table.num_rows} rows, the plan has {end - first}")
        if "status" in table.column_names:
            statuses = set(table.column("status").to_pylist())
            if statuses - self.statuses:
                problems.append(f"part {path}: unknown status {sorted(statuses - self.statuses)}")
        keys = list(zip(*(table.column(c).to_pylist() for c in self.keys))) if self.keys else None
        return problems, (table.num_rows, keys)


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
        self.rows = Counter()
        self.parts = Counter()
        self.input_problems = []

    def planned_paths(self) -> dict:
        from .experiments import EditPart
        from .variants import part_bounds

        return {
            self.store.part_relpath(chrom, EditPart(chrom, first, end, 0, ()).name): (chrom, first, end)
            for chrom, first, end in part_bounds(self.rows_by_chrom, self.per_part)
        }

    def wants_keys(self, vcf: str | None) -> bool:
        return True  # the manifest lists every edit

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

    def checker(self, vcf: str | None, fasta: str | None, storage_options) -> MutagenesisChecker:
        return MutagenesisChecker(self.schema)

    def merge(self, path: str, part, rows: int) -> None:
        cov = self.coverage[part.chrom]
        cov.bins_found += rows
        cov.parts += 1

    def finish(self, report: ValidationReport, vcf: str | None, storage_options) -> list[str]:
        report.chroms += list(self.coverage.values())
        return []


@dataclass(frozen=True)
class MutagenesisChecker:
    """Checks a mutagenesis part whole in its task (every position, each other base once); sends back its rows."""

    schema: pa.Schema
    columns: tuple[str, ...] = ("region", "pos", "ref", "alt")
    fasta: None = None

    def summarise(self, path: str, part, table: pa.Table) -> tuple[list[str], int]:
        rows = list(zip(*(table.column(c).to_pylist() for c in self.columns)))
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
        return problems, len(rows)


COVERAGE = {"atlas": BinCoverage, "variants": VariantCoverage, "edits": EditCoverage,
            "mutagenesis": MutagenesisCoverage}
