"""Genome access: open a FASTA (local path or any fsspec URL) through its index, read intervals, encode them.

Owns everything that touches sequence: the ``.fai`` index (built beside the FASTA when missing and the
place is writable), chromosome names and lengths exactly as in the FASTA, reading an interval with
padding outside ``[0, length)``, and the compact uint8 base codes (A=0, C=1, G=2, T=3, anything else =
4) that travel between stages. One-hot rows are made from codes on the model's device (see
``onehot``). Case is ignored, so soft-masked lowercase is the same base.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

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


@dataclass(frozen=True)
class FastaSource:
    """Where a FASTA lives; picklable, so tasks open it themselves (an open handle is never shipped)."""

    url: str
    storage_options: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return os.path.basename(self.url.rstrip("/"))

    def open(self):  # -> pyfaidx.Fasta
        """Open the FASTA through its index, building the index where it is missing and writable."""
        import pyfaidx

        kwargs = dict(as_raw=True, sequence_always_upper=False, rebuild=False, build_index=True)
        try:
            if is_local(self.url):
                path = local_path(self.url)
                if not os.path.exists(path):
                    raise GenomeError(f"FASTA not found: {path}")
                if not os.path.isfile(path) or not os.access(path, os.R_OK):
                    raise GenomeError(f"FASTA is not a readable file: {path}")
                if os.path.getsize(path) == 0:
                    raise GenomeError(f"FASTA {path} is empty")
                fai = path + ".fai"
                if not os.path.exists(fai) and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
                    raise GenomeError(
                        f"{path} has no index ({fai}) and its directory is not writable; "
                        f"create one with `samtools faidx {path}` or copy the FASTA somewhere writable"
                    )
                return pyfaidx.Fasta(path, **kwargs)
            import fsspec

            fs, path = fsspec.core.url_to_fs(self.url, **dict(self.storage_options))
            if not fs.exists(path):
                raise GenomeError(f"FASTA not found: {self.url}")
            fasta_file = fsspec.core.OpenFile(fs, path, "rb")
            index_file = fsspec.core.OpenFile(fs, path + ".fai", "rb")
            if fs.exists(path + ".fai"):
                return pyfaidx.Fasta(fasta_file, indexname=index_file, **kwargs)
            try:  # pyfaidx writes the index beside the FASTA through the same file system
                return pyfaidx.Fasta(fasta_file, indexname=index_file, **kwargs)
            except Exception as e:
                raise GenomeError(
                    f"{self.url} has no index (.fai) and one cannot be written there ({type(e).__name__}); "
                    "create it with `samtools faidx` and put it beside the FASTA"
                ) from e
        except GenomeError:
            raise
        except pyfaidx.FastaIndexingError as e:
            raise GenomeError(f"cannot index FASTA {self.url}: {e}") from e
        except ValueError as e:
            if "Duplicate key" in str(e):
                raise GenomeError(
                    f"FASTA {self.url} has duplicate sequence names ({e}); names must be unique"
                ) from e
            raise GenomeError(f"cannot read FASTA {self.url}: {e}") from e
        except OSError as e:
            raise GenomeError(f"cannot read FASTA {self.url}: {e}") from e

    def _check_index(self, fasta) -> None:
        if self.url.endswith((".gz", ".bgz")):  # offsets are into the decompressed stream
            return
        problem = _index_mismatch(fasta)
        if problem:
            raise GenomeError(
                f"the index {self.url}.fai does not match the FASTA: {problem}; delete the .fai so it is "
                "rebuilt, or run `samtools faidx` again"
            )

    def lengths(self) -> dict[str, int]:
        """Chromosome names (as in the FASTA, in file order) and lengths, from the index alone."""
        fasta = self.open()
        try:
            lengths = {name: int(rec.rlen) for name, rec in fasta.faidx.index.items()}
            self._check_index(fasta)
        finally:
            fasta.close()
        if not lengths:
            raise GenomeError(f"FASTA {self.url} holds no sequences")
        empty = [name for name, n in lengths.items() if n == 0]
        if empty:
            raise GenomeError(f"FASTA {self.url} has empty sequences: {', '.join(empty[:5])}")
        return lengths


def _index_mismatch(fasta) -> str | None:
    """Where an uncompressed FASTA's ``.fai`` disagrees with the file, or None.

    Each record must end (offset + bases + newlines) right where the next header's '>' starts, or at the end
    of the file: two one-byte reads per sequence catch an index left over from another version of the FASTA.
    """
    handle = fasta.faidx.file
    records = list(fasta.faidx.index.items())
    for i, (name, rec) in enumerate(records):
        handle.seek(rec.offset - 1)
        before = handle.read(1)
        handle.seek(rec.bend)
        after = handle.read(1)
        allowed_after = (b">",) if i + 1 < len(records) else (b"", b"\n", b"\r")
        if before not in (b"\n", b"\r") or after not in allowed_after:
            return f"sequence {name!r} (length {rec.rlen}) does not end where the index says"
    return None


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
