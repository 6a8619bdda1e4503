"""Genome access: open a genome (local path or any fsspec URL), read intervals, encode them.

Owns everything that touches sequence: the four forms genomes are shipped in (plain FASTA, bgzip FASTA,
plain-gzip FASTA, UCSC ``.2bit``, told apart by their first bytes, not their names), the ``.fai``/``.gzi``
indexes (built beside the file when missing and the place is writable, and checked against the file: a
repeated sequence name or an index left from another version is one line of error), the local cache copies that a
plain-gzip FASTA or a remote ``.2bit`` needs, chromosome names and lengths exactly as in the file,
reading an interval with padding outside ``[0, length)``, and the compact uint8 base codes (A=0, C=1, G=2,
T=3, anything else = 4) that travel between stages. One-hot rows are made from codes on the model's
device (see ``onehot``). Case is ignored, so soft-masked lowercase is the same base.
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import os
import shutil
import struct
import sys
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .units import human_bytes

N_CODE = 4
_CODE_OF_BYTE = np.full(256, N_CODE, dtype=np.uint8)
for _i, _base in enumerate("ACGT"):
    _CODE_OF_BYTE[ord(_base)] = _i
    _CODE_OF_BYTE[ord(_base.lower())] = _i


class GenomeError(ValueError):
    """A FASTA that cannot be opened or indexed; the message says what to do."""


def encode(seq: str | bytes) -> np.ndarray:
    """Base codes (uint8, A=0 C=1 G=2 T=3, N/IUPAC/other=4) of a sequence, case-insensitive."""
    raw = seq.encode("ascii", "replace") if isinstance(seq, str) else seq
    return _CODE_OF_BYTE[np.frombuffer(raw, dtype=np.uint8)]


def onehot_table(n_encoding: str) -> np.ndarray:
    """5×4 float32 rows indexed by base code: A, C, G, T, then the row used for N/padding/IUPAC."""
    if n_encoding not in ("zeros", "uniform"):
        raise ValueError(f"n_encoding must be 'zeros' or 'uniform', got {n_encoding!r}")
    table = np.zeros((5, 4), dtype=np.float32)
    table[:4] = np.eye(4, dtype=np.float32)
    if n_encoding == "uniform":
        table[4] = 0.25
    return table


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


# Genomes whose index was found older than the file but still right: the note about it is printed once.
_NOTED_STALE: set[str] = set()

# Name endings that say how a genome file is stored, not which genome it is (see FastaSource.name).
_FORM_SUFFIXES = (".gz", ".bgz", ".bgzf", ".2bit", ".fa", ".fasta", ".fna", ".fas", ".fsa")
# First bytes of a 2bit file: its signature 0x1A412743, written in either byte order.
_TWOBIT_MAGIC = (b"\x43\x27\x41\x1a", b"\x1a\x41\x27\x43")


def sniff_form(head: bytes) -> str:
    """The form of a genome file from its first 16 bytes: ``fasta``, ``bgzip``, ``gzip`` or ``2bit``.

    BGZF is gzip whose header carries the extra subfield ``BC`` (SAM specification, section 4.1): that,
    not the file name, separates a bgzip FASTA (random access) from a plain-gzip one (none).
    """
    if head[:4] in _TWOBIT_MAGIC:
        return "2bit"
    if head[:2] == b"\x1f\x8b":
        if len(head) >= 14 and head[3] & 0x04 and head[12:14] == b"BC":
            return "bgzip"
        return "gzip"
    return "fasta"


def genome_cache_dir() -> str:
    """Where plain-gzip FASTAs are decompressed and remote .2bit files copied: ``$ENFORMER_BATCH_CACHE/genomes``."""
    root = os.environ.get("ENFORMER_BATCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "enformer-batch")
    return os.path.join(root, "genomes")


def genome_name(file_name: str) -> str:
    """A genome file's name less the endings that only say how it is stored (``hg38.fa.gz`` → ``hg38``)."""
    name = file_name
    while True:
        stem, ext = os.path.splitext(name)
        if not stem or ext.lower() not in _FORM_SUFFIXES:
            return name
        name = stem



def url_file_name(url: str) -> str:
    """The file a URL names. In an fsspec chain the file is the first link that has a path: ``genome.fa`` in
    ``zip://genome.fa::s3://bucket/archive.zip`` and in ``simplecache::s3://bucket/genome.fa``, whose first
    link is only a protocol."""
    import fsspec

    for link in url.split("::"):
        if "://" not in link and link in fsspec.available_protocols():
            continue
        return os.path.basename(link.split("://", 1)[-1].rstrip("/"))
    return os.path.basename(url.rstrip("/"))

@dataclass(frozen=True)
class FastaSource:
    """Where a genome lives (FASTA, bgzip FASTA, plain-gzip FASTA or .2bit; a path or fsspec URL).

    Picklable, so tasks open it themselves (an open handle is never shipped).
    """

    url: str
    storage_options: Mapping[str, str] = field(default_factory=dict)
    # Resolved where the source is made (the driver) and shipped with it, so every task of a run uses the
    # cache that the command's environment names, not whatever a Ray worker process inherited.
    cache_dir: str = field(default_factory=lambda: genome_cache_dir())

    @property
    def file_name(self) -> str:
        return url_file_name(self.url)

    @property
    def name(self) -> str:
        """The genome's name for the run identity: the file name less the endings that only say how it is
        stored (``hg38.fa.gz``, ``hg38.fa`` and ``hg38.2bit`` are all ``hg38``), so converting a genome
        between FASTA, bgzip and 2bit does not make its atlas another run."""
        return genome_name(self.file_name)

    @cached_property
    def form(self) -> str:
        """``fasta``, ``bgzip``, ``gzip`` or ``2bit``, from the file's first bytes (see ``sniff_form``)."""
        try:
            if is_local(self.url):
                path = local_path(self.url)
                if not os.path.exists(path):
                    raise GenomeError(f"FASTA not found: {path}")
                if not os.path.isfile(path) or not os.access(path, os.R_OK):
                    raise GenomeError(f"FASTA is not a readable file: {path}")
                if os.path.getsize(path) == 0:
                    raise GenomeError(f"FASTA {path} is empty")
                with open(path, "rb") as f:
                    return sniff_form(f.read(16))
            fs, path = self._fs()
            if not fs.exists(path):
                raise GenomeError(f"FASTA not found: {self.url}")
            with fs.open(path, "rb") as f:
                head = f.read(16)
        except OSError as e:
            raise GenomeError(f"cannot read FASTA {self.url}: {e}") from e
        if not head:
            raise GenomeError(f"FASTA {self.url} is empty")
        return sniff_form(head)

    def _fs(self):
        import fsspec

        return fsspec.core.url_to_fs(self.url, **dict(self.storage_options))

    def open(self):  # -> pyfaidx.Fasta or TwoBitGenome
        """Open the genome for random access, building indexes or cache copies where they are missing."""
        form = self.form
        if form == "2bit":
            return TwoBitGenome(self._local_copy(), self.url)
        if form == "gzip":
            return _open_fasta(self._local_copy(), {}, self.url, bgzip=False)
        name = self.file_name.lower()
        if form == "bgzip" and not name.endswith((".gz", ".bgz")):
            raise GenomeError(f"{self.url} is bgzip-compressed but its name does not end in .gz or .bgz; "
                              "rename it so that its index (.gzi) is found and written under the usual name")
        if form == "fasta" and name.endswith((".gz", ".bgz")):
            raise GenomeError(f"{self.url} is named like a compressed file but is not compressed; rename it "
                              "without the .gz/.bgz ending")
        return _open_fasta(self.url, self.storage_options, self.url, bgzip=form == "bgzip")

    def lengths(self) -> dict[str, int]:
        """Chromosome names (as in the file, in file order) and lengths, from the index, once it is checked
        against the file (``_check_index``: a header line per sequence, not the bases)."""
        genome = self.open()
        try:
            if isinstance(genome, TwoBitGenome):
                lengths = genome.lengths()
            else:
                lengths = {name: int(rec.rlen) for name, rec in genome.faidx.index.items()}
                self._check_index(genome)
        finally:
            genome.close()
        if not lengths:
            raise GenomeError(f"FASTA {self.url} holds no sequences")
        empty = [name for name, n in lengths.items() if n == 0]
        if empty:
            raise GenomeError(f"FASTA {self.url} has empty sequences: {', '.join(empty[:5])}")
        return lengths

    def _check_index(self, fasta) -> None:
        """Check the ``.fai`` (and the ``.gzi`` of a bgzip FASTA) against the file; one clear error if they disagree.

        ``_index_problem`` walks the header lines that sit between the records the index lists, so a FASTA
        whose index leaves out a record is caught whoever wrote the index: a duplicated name (``samtools
        faidx`` indexes only the first record of a name and pyfaidx then reads that one silently), a FASTA
        edited after its index was written, an index from another file. It reads one header line per
        sequence (plus any record the index left out), never the bases, for plain and bgzip FASTA, local
        or remote alike; run where a command starts (``lengths``), not by every task that opens the genome.
        """
        bgzip = self.form == "bgzip"
        # Times only say "edited after indexing" for local files: a remote one's is when it was uploaded, and a
        # FASTA uploaded after its .fai is not stale. Remote indexes are judged by content alone.
        stale = is_local(self.url) and _index_older_than_fasta(fasta)
        try:
            if is_local(self.url) or self.form == "gzip":
                problem = _index_problem(fasta, bgzip)
            else:  # small blocks: a header line a sequence, not fsspec's default 5 MB each (a 104 MB genome of
                # 125 sequences, measured: 3.3 MB fetched instead of 69 MB)
                fs, path = self._fs()
                with fs.open(path, "rb", block_size=_REMOTE_BLOCK) as raw:
                    problem = _index_problem(fasta, bgzip, raw)
        except (OSError, EOFError, ValueError, zlib.error, struct.error) as e:
            raise GenomeError(f"cannot read {'bgzip ' if bgzip else ''}FASTA {self.url} (truncated or corrupt?): "
                              f"{e}") from e
        # A plain-gzip genome is read from its decompressed copy, indexed there.
        index = f"{self.url}.fai" if self.form != "gzip" else f"{fasta.faidx.indexname} (of the decompressed copy)"
        if isinstance(problem, _Duplicates):
            raise GenomeError(f"FASTA {self.url} has duplicate sequence names: {problem}; names must be unique")
        if problem:
            when = " was written before the FASTA was last changed and" if stale else ""
            raise GenomeError(
                f"the index {index}{when} does not match the FASTA: {problem}; delete the .fai"
                f"{' and .gzi' if bgzip else ''} so it is rebuilt, or run `samtools faidx` again"
            )
        if stale and self.url not in _NOTED_STALE:  # once per command, however often it reads the lengths
            _NOTED_STALE.add(self.url)
            print(f"enformer-batch: note: {self.url} changed after its index {index} was written; the index "
                  "still matches every sequence, so it is used", file=sys.stderr, flush=True)

    # --- cache copies: plain gzip (decompressed) and remote .2bit (downloaded) ---------------------

    def _stamp(self) -> tuple[int, str]:
        """(size, version) of the source: a changed file gets a new cache entry."""
        if is_local(self.url):
            st = os.stat(local_path(self.url))
            return st.st_size, f"{os.path.realpath(local_path(self.url))}:{st.st_mtime_ns}"
        fs, path = self._fs()
        info = fs.info(path)
        version = next((str(info[k]) for k in ("ETag", "etag", "md5Hash", "mtime", "LastModified",
                                                "last_modified", "updated", "created") if info.get(k)), "")
        return int(info.get("size") or 0), f"{self.url}:{version}"

    def _local_copy(self) -> str:
        """A local, uncompressed file for this source: the file itself (a local .2bit) or a cache copy.

        Built once per machine under ``cache_dir``, keyed by the source's location, size and
        modification time (or ETag), written to a temporary name and renamed, under a lock, so concurrent
        readers on one node neither duplicate the work nor see half a file.
        """
        form = self.form
        if form == "2bit" and is_local(self.url):
            return local_path(self.url)
        size, version = self._stamp()
        key = hashlib.sha256(version.encode()).hexdigest()[:16]
        folder = os.path.join(self.cache_dir, key)
        target = os.path.join(folder, self.name + (".2bit" if form == "2bit" else ".fa"))
        if os.path.exists(target):
            return target
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise GenomeError(f"cannot create the genome cache {folder} ({e.strerror}); set "
                              "ENFORMER_BATCH_CACHE to a writable directory") from e
        import fcntl

        with open(os.path.join(folder, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if os.path.exists(target):  # another reader on this node made it while we waited
                return target
            need = self._gunzipped_size(size) if form == "gzip" else size
            free = shutil.disk_usage(folder).free
            if free < need * 1.05 + (64 << 20):
                raise GenomeError(
                    f"{self.file_name} needs about {human_bytes(need)} in the genome cache {folder} and only "
                    f"{human_bytes(free)} is free there; set ENFORMER_BATCH_CACHE to a larger disk"
                    + (" or convert it to bgzip: `zcat FILE.fa.gz | bgzip > FILE.fa.bgz` (random access, no copy)"
                       if form == "gzip" else "")
                )
            if form == "gzip":
                notice = (f"{self.file_name} is plain gzip (no random access): decompressing it once into "
                          f"{folder} (about {human_bytes(need)}; a bgzip FASTA would be read in place)")
            else:
                notice = f"copying {self.file_name} once into {folder} ({human_bytes(need)}; py2bit reads local files)"
            print(f"enformer-batch: {notice}", file=sys.stderr, flush=True)
            partial = f"{target}.partial-{os.getpid()}"
            try:
                self._write_copy(partial, form)
                os.replace(partial, target)
            finally:
                if os.path.exists(partial):
                    os.remove(partial)
        return target

    def _gunzipped_size(self, compressed: int) -> int:
        """Decompressed size from the gzip trailer (ISIZE: the size modulo 2**32, of the last member)."""
        with self._open_raw() as f:
            f.seek(max(compressed - 4, 0))
            isize = struct.unpack("<I", f.read(4).rjust(4, b"\0"))[0]
        # ISIZE wraps at 4 GiB; a FASTA decompresses to more than its compressed size, so add 4 GiB until it
        # does. (A multi-member file's ISIZE covers its last member only: the write below still fails cleanly.)
        while isize < compressed:
            isize += 1 << 32
        # Deflate cannot exceed ~1032:1, so a larger figure is not a trailer (a truncated or damaged file):
        # fall back to a typical FASTA ratio for the space check; decompressing then reports the damage.
        return isize if isize <= 1032 * compressed else 4 * compressed

    def _open_raw(self):
        if is_local(self.url):
            return open(local_path(self.url), "rb")
        fs, path = self._fs()
        return fs.open(path, "rb")

    def _write_copy(self, partial: str, form: str) -> None:
        chunk = 8 << 20
        try:
            with self._open_raw() as src, open(partial, "wb") as dst:
                if form == "gzip":
                    with gzip.GzipFile(fileobj=src, mode="rb") as z:
                        while block := z.read(chunk):
                            dst.write(block)
                else:
                    shutil.copyfileobj(src, dst, chunk)
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise GenomeError(f"{self.url} is truncated or corrupt ({e}); download it again") from e
        except OSError as e:
            raise GenomeError(f"cannot copy {self.url} into the genome cache: {e}") from e


def _open_fasta(url: str, storage_options: Mapping[str, str], shown: str, bgzip: bool):  # -> pyfaidx.Fasta
    """Open a plain or bgzip FASTA through its index (.fai, and .gzi for bgzip), building what is missing."""
    import pyfaidx

    _quiet_pyfaidx()
    self_url = shown  # what error messages name: the user's URL, not a cache path
    kwargs = dict(as_raw=True, sequence_always_upper=False, rebuild=False, build_index=True)
    try:
        if is_local(url):
            path = local_path(url)
            if not os.path.exists(path):  # gone since the form was read (tasks reuse the driver's form)
                raise GenomeError(f"FASTA not found: {path}")
            fai = path + ".fai"
            missing = [p for p in ((fai, path + ".gzi") if bgzip else (fai,)) if not os.path.exists(p)]
            if missing and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
                raise GenomeError(
                    f"{path} has no index ({', '.join(missing)}) and its directory is not writable; "
                    f"create it with `samtools faidx {path}` or copy the FASTA somewhere writable"
                )
            return pyfaidx.Fasta(path, **kwargs)
        import fsspec

        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options))
        if not fs.exists(path):
            raise GenomeError(f"FASTA not found: {self_url}")
        fasta_file = fsspec.core.OpenFile(fs, path, "rb")
        index_file = fsspec.core.OpenFile(fs, path + ".fai", "rb")
        if bgzip:
            kwargs["gzi_indexname"] = fsspec.core.OpenFile(fs, path + ".gzi", "rb")
        if fs.exists(path + ".fai") and (not bgzip or fs.exists(path + ".gzi")):
            return pyfaidx.Fasta(fasta_file, indexname=index_file, **kwargs)
        try:  # pyfaidx writes the indexes beside the FASTA through the same file system
            return pyfaidx.Fasta(fasta_file, indexname=index_file, **kwargs)
        except Exception as e:
            raise GenomeError(
                f"{self_url} has no index ({'.fai/.gzi' if bgzip else '.fai'}) and one cannot be written there "
                f"({type(e).__name__}); create it with `samtools faidx` and put it beside the FASTA"
            ) from e
    except GenomeError:
        raise
    except pyfaidx.FastaIndexingError as e:
        raise GenomeError(f"cannot index FASTA {self_url}: {e}") from e
    except ValueError as e:
        if "Duplicate key" in str(e):  # pyfaidx stops at the first; the .fai it just wrote lists them all
            names = _repeated_names(local_path(url) + ".fai") if is_local(url) else []
            names = names or [str(e).split('"')[1] if str(e).count('"') >= 2 else str(e)]
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            raise GenomeError(
                f"FASTA {self_url} has duplicate sequence names: {', '.join(names[:5])}{more}; names must be unique"
            ) from e
        raise GenomeError(f"cannot read FASTA {self_url}: {e}") from e
    except (OSError, EOFError, zlib.error, struct.error) as e:  # how a truncated or damaged bgzip file surfaces
        if bgzip:
            raise GenomeError(f"cannot read bgzip FASTA {self_url} (truncated or corrupt?): {e}") from e
        raise GenomeError(f"cannot read FASTA {self_url}: {e}") from e


def _repeated_names(fai: str) -> list[str]:
    """The names listed more than once in a ``.fai`` (in order of their second listing); [] if unreadable."""
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    try:
        with open(fai, encoding="utf-8", errors="replace") as f:
            for line in f:
                name = line.split("\t", 1)[0]
                if name in seen:
                    repeated[name] = None
                seen.add(name)
    except OSError:
        return []
    return list(repeated)


class TwoBitGenome:
    """A UCSC .2bit genome read through py2bit (lib2bit), with the slice access ``read_codes`` uses.

    Soft-masking is not loaded (py2bit's ``storeMasked=False``): bases come back upper case, as case is
    ignored for FASTA too. 2bit holds only ACGT and N, so IUPAC codes of the source FASTA read as N,
    which is what they encode to anyway.
    """

    def __init__(self, path: str, shown: str):
        import py2bit

        self.path, self.shown = path, shown
        problem = _twobit_problem(path)
        if problem:
            raise GenomeError(f"cannot read 2bit genome {shown}: {problem}")
        try:
            self._tb = py2bit.open(path)
        except RuntimeError as e:
            raise GenomeError(f"cannot read 2bit genome {shown}: {e}") from e

    def lengths(self) -> dict[str, int]:
        return {name: int(n) for name, n in self._tb.chroms().items()}

    def __getitem__(self, chrom: str) -> _TwoBitChrom:
        return _TwoBitChrom(self, chrom)

    def sequence(self, chrom: str, start: int, end: int) -> str:
        try:
            return self._tb.sequence(chrom, start, end)
        except RuntimeError as e:
            raise GenomeError(f"cannot read {chrom}:{start}-{end} from 2bit genome {self.shown}: {e}") from e

    def close(self) -> None:
        self._tb.close()


@dataclass(frozen=True)
class _TwoBitChrom:
    genome: TwoBitGenome
    chrom: str

    def __getitem__(self, where: slice) -> str:
        return self.genome.sequence(self.chrom, where.start, where.stop)


def _twobit_problem(path: str) -> str | None:
    """What is wrong with a 2bit file's layout (header, index, record headers within the file), or None.

    lib2bit reads records lazily, so a truncated file would otherwise open fine and fail mid-run: walking
    the record headers and checking that each record's packed bases end inside the file catches it up front.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(16)
        if len(head) < 16 or head[:4] not in _TWOBIT_MAGIC:
            return "not a 2bit file (bad signature)"
        order = "<" if head[:4] == _TWOBIT_MAGIC[0] else ">"
        version, count, _ = struct.unpack(order + "III", head[4:16])
        if version not in (0, 1):
            return f"unknown 2bit version {version}"
        wide = version == 1  # 64-bit offsets
        offsets = []
        for _ in range(count):
            n = f.read(1)
            if not n:
                return "the sequence index ends early (truncated file)"
            name = f.read(n[0])
            raw = f.read(8 if wide else 4)
            if len(name) < n[0] or len(raw) < (8 if wide else 4):
                return "the sequence index ends early (truncated file)"
            offsets.append((name.decode("ascii", "replace"), struct.unpack(order + ("Q" if wide else "I"), raw)[0]))
        for name, offset in offsets:
            f.seek(offset)
            raw = f.read(8)
            if len(raw) < 8:
                return f"sequence {name!r} starts past the end of the file (truncated file)"
            dna_size, n_blocks = struct.unpack(order + "II", raw)
            f.seek(8 * n_blocks, os.SEEK_CUR)
            raw = f.read(4)
            if len(raw) < 4:
                return f"sequence {name!r} is cut short (truncated file)"
            (mask_blocks,) = struct.unpack(order + "I", raw)
            end = offset + 8 + 8 * n_blocks + 4 + 8 * mask_blocks + 4 + (dna_size + 3) // 4
            if end > size:
                return f"sequence {name!r} ({dna_size:,} bp) ends past the end of the file (truncated file)"
    return None


class _Duplicates(str):
    """An index problem that is the FASTA's own: names that head more than one record."""


# Bytes read at a time between two indexed records: one header line in a sound file, more only where the
# index leaves records out.
_CHUNK = 1 << 20
# What one ranged read of a remote genome fetches during the check: a BGZF block is at most 64 KiB.
_REMOTE_BLOCK = 1 << 16


def _reader(fasta, bgzip: bool, raw=None):
    """``read(pos, n)``: up to ``n`` bytes of the (decompressed) FASTA from ``pos``; fewer, or none, at its end.

    Reads through ``raw`` (the file as stored) where given, else through pyfaidx's own handle.
    """
    handle = fasta.faidx.file
    if raw is not None:
        from Bio import bgzf

        handle = bgzf.BgzfReader(fileobj=raw, mode="rb") if bgzip else raw
    if not bgzip:
        def read(pos: int, n: int) -> bytes:
            handle.seek(pos)
            return handle.read(n)

        return read
    from Bio.bgzf import make_virtual_offset

    blocks = fasta.faidx.gzi_index  # (cstart, clen, ustart, ulen) per BGZF block, by uncompressed start
    starts = [block.ustart for block in blocks]

    def read_bgzip(pos: int, n: int) -> bytes:
        block = blocks[max(bisect.bisect_right(starts, pos) - 1, 0)]
        try:  # offsets are into the decompressed stream: the .gzi says which block holds one
            handle.seek(make_virtual_offset(block.cstart, pos - block.ustart))
        except ValueError:  # past the end of the data (Biopython refuses the seek)
            return b""
        return handle.read(n)

    return read_bgzip


def _headers_between(read, start: int, end: int | None, comments: bool) -> tuple[list[str], bool, bool]:
    """The names on the header lines in ``[start, end)`` (``end=None``: to the end of the file), in order.

    Also says whether a line other than a header, a blank line (or, with ``comments``, a ';' comment)
    comes before the first header (a record's bases running on past where the index ends it), and whether
    the stretch was read in full and ends at a line end (where the index says a record's bases begin).
    """
    names: list[str] = []
    stray = skipping = False
    carry = b""
    pos = start

    def take(line: bytes) -> None:
        nonlocal stray
        if line.startswith(b">"):
            names.append((line[1:].split() or [b""])[0].decode("utf-8", "replace"))
        elif not names and line.strip() and not (comments and line.startswith(b";")):
            stray = True

    while end is None or pos < end:
        data = read(pos, _CHUNK if end is None else min(_CHUNK, end - pos))
        if not data:
            break
        pos += len(data)
        if skipping:  # the rest of an over-long sequence line of a record the index left out
            cut = data.find(b"\n")
            if cut < 0:
                continue
            data, skipping = data[cut + 1 :], False
        lines = (carry + data).split(b"\n")
        carry = lines.pop()
        for line in lines:
            take(line)
        if len(carry) > _CHUNK:  # one line over a megabyte: a sequence line, or a header that long
            take(carry)
            carry, skipping = b"", True
    if carry:
        take(carry)
    complete = (end is None or pos >= end) and not carry and not skipping
    return names, stray, complete


def _index_problem(fasta, bgzip: bool, raw=None) -> str | None:
    """What is wrong between a FASTA and its index, or None; a ``_Duplicates`` when names repeat.

    Walks the records by offset and reads only what lies between one record's last base and the next
    one's first: in a FASTA that its index describes, exactly the next record's header line. A record the
    index leaves out shows up there as extra header lines. That is how a duplicated name is found whatever
    wrote the index: ``samtools faidx`` keeps the first record of a name and skips the rest, so those sit
    between indexed records; pyfaidx, building an index, refuses duplicates itself. A stale or foreign
    index shows up as a header missing, misnamed or misplaced, or as bases where a header should be.

    Cost: one read of a header line per sequence, through the .gzi for bgzip, plus the records the index
    leaves out; never the bases. Measured: 0.1 ms for GRCh37 chr20 as bgzip (one record), about 5 us a
    record for a plain FASTA and 8 us for bgzip (1-1.6 s for 200,000 contigs). A remote genome costs one
    small ranged read per sequence (``raw``: a handle with small blocks), not a download. The alternative,
    a pass over the whole file listing its headers, costs a full read every time (1.2 s for chr20 as bgzip,
    about a minute for a 3 GB genome, a download when remote) and a cache of its result to be bearable.

    A stale index whose records all still start and end where it says reads right, as the .fai holds only
    the layout: that is no problem.
    """
    read = _reader(fasta, bgzip, raw)
    records = sorted(fasta.faidx.index.items(), key=lambda item: item[1].offset)
    problem: str | None = None
    placed: set[str] = set()  # names whose own header sits right before their bases
    extra: list[str] = []  # names on header lines of records the index left out
    pos = 0
    for i, (name, rec) in enumerate(records):
        if rec.offset < pos:
            problem = problem or f"sequences {records[i - 1][0]!r} and {name!r} overlap in the index"
            pos = max(pos, rec.bend)  # never read a stretch twice: a header counted twice would be a false repeat
            continue
        names, stray, complete = _headers_between(read, pos, rec.offset, comments=i == 0)
        if stray:
            what = (f"sequence {records[i - 1][0]!r} (length {records[i - 1][1].rlen}) does not end" if i
                    else f"sequence {name!r} (length {rec.rlen}) does not start")
            problem = problem or f"{what} where the index says"
        key = (name.split() or [""])[0]  # a hand-made .fai may keep a whole header line as the name
        if names and names[-1] == key and complete:
            placed.add(key)
            extra += names[:-1]
        else:
            problem = problem or f"sequence {name!r} (length {rec.rlen}) does not start where the index says"
            extra += names
        pos = rec.bend
    names, stray, _ = _headers_between(read, pos, None, comments=False)
    if records and stray:
        problem = problem or f"sequence {records[-1][0]!r} (length {records[-1][1].rlen}) does not end where " \
                             "the index says"
    extra += names
    repeated = list(dict.fromkeys(n for n in extra if n in placed))
    if repeated:
        more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        return _Duplicates(", ".join(repeat for repeat in repeated[:5]) + more)
    if problem:
        return problem
    if extra:
        unlisted = list(dict.fromkeys(extra))
        shown = ", ".join(repr(n) for n in unlisted[:5]) + (" ..." if len(unlisted) > 5 else "")
        return f"it leaves out the FASTA's {shown}"
    return None


def _index_older_than_fasta(fasta) -> bool:
    """Whether the ``.fai`` (or ``.gzi``) is older than the FASTA, as pyfaidx judges it (modification times)."""
    import pyfaidx

    faidx = fasta.faidx
    try:
        when = pyfaidx.getmtime_fsspec(faidx.filename, getattr(faidx, "_fs", None))
        if when is None:
            return False
        indexes = [(faidx.indexname, getattr(faidx, "_fai_fs", None))]
        if getattr(faidx, "_bgzf", False):
            indexes.append((faidx.gzi_indexname, getattr(faidx, "_gzi_fs", None)))
        return any((t := pyfaidx.getmtime_fsspec(path, fs)) is not None and t < when for path, fs in indexes)
    except (OSError, ValueError, TypeError, KeyError):  # a store without usable times: judged by content alone
        return False


def _quiet_pyfaidx() -> None:
    """Keep pyfaidx's index warnings off the terminal: ``FastaSource._check_index`` checks the index against
    the file itself and says what it finds in one line of its own (a raw warning names a library source line).
    Filters, not ``catch_warnings``: tasks may open genomes from several threads at once."""
    for message, category in ((r"(BGZF )?Index file .* is older than FASTA file", RuntimeWarning),
                              (r"for fsspec: .* assuming index is current", UserWarning)):
        warnings.filterwarnings("ignore", message=message, category=category, module="pyfaidx")


def read_codes(fasta, chrom: str, length: int, start: int, end: int) -> np.ndarray:
    """Base codes of ``[start, end)`` on ``chrom``; positions outside ``[0, length)`` are padding (N)."""
    out = np.full(end - start, N_CODE, dtype=np.uint8)
    lo, hi = max(start, 0), min(end, length)
    if hi > lo:
        seq = fasta[chrom][lo:hi]
        codes = encode(seq)
        if len(codes) != hi - lo:
            raise GenomeError(
                f"{chrom}:{lo}-{hi} returned {len(codes)} bases instead of {hi - lo}; "
                "the FASTA index (.fai) may not match the FASTA"
            )
        out[lo - start : hi - start] = codes
    return out
