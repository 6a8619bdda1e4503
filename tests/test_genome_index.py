"""A genome's index against the file: duplicated names and edited FASTAs, whatever wrote the index.

The indexes here are written as ``samtools faidx`` writes them (htslib's fai_build keeps the first record
of a repeated name and skips the others), so no samtools is needed to reproduce what users bring.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import fsspec
import pytest

from enformer_batch.demo import compress_fasta
from enformer_batch.genome import FastaSource, GenomeError

# 'a' twice, apart: an index that keeps the first 'a' leaves the second between 'b' and 'c'.
APART = b">a first\nACGTACGT\nACG\n>b\nGG\n>a second\nTTTT\n>c\nCC\n"
# 'a' twice in a row, the repeat not last: each indexed record still ends where a '>' starts, which is
# all the earlier check looked at, so this one was read silently.
ADJACENT = b">a\nACGT\n>a\nTTTT\n>b\nGG\n"


def samtools_fai(data: bytes) -> str:
    """The .fai ``samtools faidx`` writes for ``data``: name, length, offset, bases and bytes per line;
    a repeated name keeps its first record only."""
    lines, pos, records = data.split(b"\n"), 0, {}
    current = None
    for line in lines:
        if line.startswith(b">"):
            name = line[1:].split()[0].decode()
            current = None if name in records else name
            if current:
                records[name] = [0, pos + len(line) + 1, 0, 0]
        elif current and line:
            rec = records[current]
            if not rec[2]:
                rec[2], rec[3] = len(line), len(line) + 1
            rec[0] += len(line)
        pos += len(line) + 1
    return "".join(f"{name}\t{n}\t{offset}\t{bases}\t{width}\n" for name, (n, offset, bases, width) in records.items())


def write_genome(folder, data: bytes, form: str) -> str:
    """``data`` as a plain or bgzip FASTA under ``folder`` with the index samtools would write beside it."""
    plain = os.path.join(folder, "dup.fa")
    with open(plain, "wb") as f:
        f.write(data)
    path = plain if form == "fasta" else compress_fasta(plain, plain + ".gz", "bgzip")
    with open(path + ".fai", "w") as f:
        f.write(samtools_fai(data))
    if form == "bgzip":  # the .gzi: each BGZF block's compressed and decompressed start, less the first block's
        from Bio import bgzf

        with open(path, "rb") as f:
            blocks = list(bgzf.BgzfBlocks(f))[:-1]  # less the empty end-of-file block
        with open(path + ".gzi", "wb") as f:
            f.write(struct.pack("<Q", len(blocks) - 1))
            f.writelines(struct.pack("<QQ", start, data_start) for start, _, data_start, _ in blocks[1:])
    return path


@pytest.mark.parametrize("where", ["local", "url"])
@pytest.mark.parametrize("form", ["fasta", "bgzip"])
@pytest.mark.parametrize("data", [APART, ADJACENT], ids=["apart", "adjacent"])
def test_duplicate_names_are_found_whatever_wrote_the_index(tmp_path, form, where, data):
    path = write_genome(str(tmp_path), data, form)
    url = path
    if where == "url":  # a remote genome with its indexes beside it
        url = f"memory://dup-{form}-{tmp_path.name}/{os.path.basename(path)}"
        for suffix in ("", ".fai", ".gzi") if form == "bgzip" else ("", ".fai"):
            fsspec.filesystem("memory").pipe(url + suffix, open(path + suffix, "rb").read())
    with pytest.raises(GenomeError) as caught:
        FastaSource(url).lengths()
    message = str(caught.value)
    assert message == f"FASTA {url} has duplicate sequence names: a; names must be unique", message


@pytest.mark.parametrize("index", ["samtools", "none"])
def test_every_repeated_name_is_named(tmp_path, index):
    data = b">x\nA\n>y\nC\n>x\nG\n>z\nT\n>y\nA\n>y\nC\n"
    path = write_genome(str(tmp_path), data, "fasta")
    if index == "none":  # pyfaidx builds the index and stops at the first repeat
        os.remove(path + ".fai")
    for _ in range(2):  # and again, with the index that the first open left behind
        with pytest.raises(GenomeError) as caught:
            FastaSource(path).lengths()
        assert str(caught.value) == f"FASTA {path} has duplicate sequence names: x, y; names must be unique"


def test_an_index_that_leaves_out_a_record_is_refused(tmp_path):
    path = write_genome(str(tmp_path), b">a\nACGT\n>b\nGG\n", "fasta")
    with open(path, "ab") as f:  # a record appended after indexing, the index's time set back
        f.write(b">c\nTTTT\n")
    with pytest.raises(GenomeError, match=r"does not match the FASTA: it leaves out the FASTA's 'c'"):
        FastaSource(path).lengths()


def test_sound_indexes_still_read(tmp_path):
    """Comments and blank lines before the first record, blank lines between records, no final newline."""
    for i, data in enumerate([b";comment\n\n>a x\nACGTA\nCG\n\n>b\nGG\n>e\n>c\nT", b">only\nACGT\n"]):
        folder = tmp_path / str(i)
        folder.mkdir()
        for form in ("fasta", "bgzip"):
            expected = {name: int(n) for name, n, *_ in (line.split("\t") for line in samtools_fai(data).splitlines())}
            source = FastaSource(write_genome(str(folder), data, form))
            if 0 in expected.values():
                with pytest.raises(GenomeError, match="empty sequences: e"):
                    source.lengths()
            else:
                assert source.lengths() == expected


def _cli(*args: str) -> subprocess.CompletedProcess:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's enformer_batch first
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, "-m", "enformer_batch.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def _edit_after_indexing(path: str, old: bytes, new: bytes) -> None:
    """Edit ``path`` and leave its indexes an hour older than it, as after editing an indexed FASTA."""
    data = open(path, "rb").read()
    assert old in data
    with open(path, "wb") as f:
        f.write(data.replace(old, new))
    now = os.stat(path).st_mtime
    for index in (path + ".fai", path + ".gzi"):
        if os.path.exists(index):
            os.utime(index, (now - 3600, now - 3600))


@pytest.mark.parametrize("form", ["fasta", "bgzip"])
def test_an_edited_fasta_is_reported_in_the_tools_own_words(tmp_path, form):
    data = b">a\nACGTACGTAC\nACGTACGTAC\nACG\n>b\nGGGGGGGGGG\nGG\n"
    fasta = write_genome(str(tmp_path), data, "fasta")
    path = fasta if form == "fasta" else compress_fasta(fasta, fasta + ".gz", "bgzip")
    FastaSource(path).lengths()  # indexed as it was
    if form == "bgzip":
        _edit_after_indexing(fasta, b"ACG\n>b", b"ACGTT\n>b")
        compress_fasta(fasta, str(tmp_path / "new.fa.gz"), "bgzip")
        os.replace(tmp_path / "new.fa.gz", path)
        now = os.stat(path).st_mtime
        for index in (path + ".fai", path + ".gzi"):
            os.utime(index, (now - 3600, now - 3600))
    else:
        _edit_after_indexing(path, b"ACG\n>b", b"ACGTT\n>b")  # two more bases on 'a': 'b' moved
    run = _cli("plan", path, "--model", "demo")
    lines = run.stderr.splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr  # no RuntimeWarning, no source path
    assert lines[0] == (f"enformer-batch: error: the index {path}.fai was written before the FASTA was last changed "
                        "and does not match the FASTA: sequence 'a' (length 23) does not end where the index says; "
                        f"delete the .fai{' and .gzi' if form == 'bgzip' else ''} so it is rebuilt, or run "
                        "`samtools faidx` again"), lines[0]


def test_an_index_older_than_an_edit_that_kept_the_layout_is_used_with_a_note(tmp_path):
    path = write_genome(str(tmp_path), b">a\nACGTACGTAC\nACG\n>b\nGG\n", "fasta")
    _edit_after_indexing(path, b"ACG\n>b", b"TTT\n>b")  # bases changed in place: the index is still right
    run = _cli("plan", path, "--model", "demo")
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == [f"enformer-batch: note: {path} changed after its index {path}.fai was "
                                       "written; the index still matches every sequence, so it is used"]
