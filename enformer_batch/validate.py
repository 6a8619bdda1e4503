"""Checking a finished output of any job kind against its manifest (and, if given, the FASTA and inputs).

Owns the reader's side of the contract (docs/contract.md) that every kind shares: the manifest and its
status, ``_SUCCESS``, every part the kind's plan contains committed and present with its recorded size, row
count and schema, no stray part, checksums and version tokens, chromosome lengths against ``--fasta``, and
notes on temporary files of interrupted writes and a driver's lease (they do not make the output wrong; a
resume removes them). What each part must hold (its coverage: every bin of an atlas exactly once, every row of
a variant table, each mutant of a region...) is the kind's: ``Kind.coverage`` re-plans the parts from the
manifest's identity with the same function the run planned them with, and checks what the parts send back.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .kinds import KINDS, kind_of
from .kinds.base import ChromCoverage
from .store import SUCCESS, OutputStore, PartRecord, records_from_manifest
from .units import human_bytes

# Without a running Ray, outputs of up to this many parts are checked in this process (starting Ray costs
# seconds; checking a part's footer costs milliseconds); larger ones start a local Ray like ``predict``.
IN_PROCESS_PARTS = 64
MAX_PARTS_PER_TASK = 32  # a 10,000-part atlas is a few hundred tasks, each returning a few kB
TAIL_READ = 64 * 1024  # first read of a part's end: the whole footer of narrow tables, the footer length of wide
HASH_CHUNK = 8 * 2**20  # --checksums streams each part through sha256 in chunks this size

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


def validate(
    url: str,
    fasta: str | None = None,
    storage_options: Mapping[str, str] | None = None,
    vcf: str | None = None,
    checksums: bool = False,
    parallel: bool | None = None,
    inputs: Mapping[str, str] | None = None,
) -> ValidationReport:
    """Check an output of any job kind; the report's ``problems`` names every defect found (empty when valid).

    ``inputs``: what the output was computed from, to compare it with, by the names its kind takes
    (``Kind.validate_inputs``): ``{"vcf": path}`` for a variant table checks that every row of that VCF
    appears exactly once (``vcf`` is the same, kept as a keyword of its own).
    ``checksums``: also read every byte of every part and compare its sha256 with the manifest's (without it,
    track values are never read; see the module docstring for what is checked).
    ``parallel``: check parts in Ray tasks (True), in this process (False), or None: in Ray tasks when Ray is
    running or the output has more than ``IN_PROCESS_PARTS`` parts (starting a local Ray if needed).
    """
    inputs = {**dict(inputs or {}), **({"vcf": vcf} if vcf is not None else {})}
    report = ValidationReport(url, checksums=checksums)
    store = OutputStore(url, storage_options)
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
        kind = kind_of(manifest)
        coverage = kind.coverage(identity, store)
    except (KeyError, TypeError, ValueError) as e:
        report.problems.append(f"_manifest.json is malformed ({type(e).__name__}: {e}); re-run with --overwrite")
        return report
    report.unit = coverage.unit
    for name in sorted(set(inputs) - set(kind.validate_inputs)):
        others = [k.name for k in KINDS.values() if name in k.validate_inputs]
        report.problems.append(f"--{name} checks {' and '.join(others) or 'no'} outputs; this is {kind.name}")
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
    if fasta is not None:  # the parts as the kind's reader re-reads them (a variant table's: with --vcf's rows)
        planned = coverage.with_inputs(planned, inputs, storage_options)
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

    checker = coverage.checker(inputs, fasta, storage_options)
    for job, result in zip(jobs, _run_checks(store, checker, jobs, parallel)):
        report.bytes_read += result.bytes_read
        report.parts_hashed += job.hash_bytes
        report.problems += result.problems
        if result.summary is not None and job.planned is not None:
            coverage.merge(job.path, job.planned, result.summary)
    lines, problems = coverage.finish(report.status == "complete", inputs, storage_options)
    report.chroms += lines
    report.problems += problems
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


def _open(store: OutputStore, relative: str) -> _CountingFile:
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


def check_part(store: OutputStore, checker: Any, job: PartJob) -> PartCheck:
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


def check_parts(store: OutputStore, checker: Any, jobs: Sequence[PartJob]) -> list[PartCheck]:
    """``check_part`` over a batch of parts: what one Ray task of ``validate`` runs."""
    out = []
    for job in jobs:
        result = check_part(store, checker, job)
        if job.record.codes_sha256 and result.summary is not None and checker.fasta is not None:
            result.problems += checker.check_codes(job.path, job.planned, job.record.codes_sha256)
        out.append(result)
    return out


def _run_checks(store: OutputStore, checker: Any, jobs: list[PartJob], parallel: bool | None) -> list[PartCheck]:
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


def _note_leftovers_and_lease(store: OutputStore, report: ValidationReport) -> None:
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
