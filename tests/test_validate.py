"""validate at scale: footers and key columns only by default, every byte with checksums=True, in Ray tasks."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enformer_batch import PredictConfig, predict, validate
from enformer_batch.demo import DemoChrom, write_demo_genome
from enformer_batch.kinds.atlas import bin_runs, tally_bins
from enformer_batch.store import MANIFEST, OutputStore, serialise_table

# 256 float16 tracks, 4 windows per part: parts of ~1.8 MB whose footers are a few % of them (5,313-track
# parts of 16 windows are ~100x larger for a ~10x larger footer; benchmarks/validate.py measures those).
GENOME = (DemoChrom("chr1", 700_000), DemoChrom("chr2", 400_000), DemoChrom("chr3", 100_000))
SIM = "sim:rate=1000,tracks=256"


@pytest.fixture(scope="module")
def wide_atlas(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("wide")
    fasta = write_demo_genome(str(root / "g.fa"), GENOME)
    out = root / "atlas"
    predict(PredictConfig(fasta=fasta, out=str(out), model=SIM, windows_per_part=4, workers=1, progress=False))
    return fasta, out


def fresh_copy(atlas, dest):
    """A copy of the atlas whose manifest records the copy's version tokens, as a resume on it would."""
    shutil.copytree(atlas, dest)
    manifest = json.loads((dest / MANIFEST).read_text())
    present = OutputStore(str(dest)).part_tokens()
    for part in manifest["parts"]:
        part["token"] = present[part["path"]][1]
    (dest / MANIFEST).write_text(json.dumps(manifest))
    return manifest


def recommit(out, path, table) -> None:
    """Replace a part with ``table`` and commit it in the manifest: a writer bug, not a damaged file."""
    import hashlib

    data = serialise_table(table)
    (out / path).write_bytes(data)
    manifest = json.loads((out / MANIFEST).read_text())
    token = OutputStore(str(out)).part_tokens()[path][1]
    for part in manifest["parts"]:
        if part["path"] == path:
            part.update(rows=table.num_rows, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), token=token)
    (out / MANIFEST).write_text(json.dumps(manifest))


def bytes_read_by_this_process() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux's per-process I/O counters")
def test_fast_validate_reads_no_track_values_and_checksums_reads_every_byte(wide_atlas, tmp_path):
    fasta, atlas = wide_atlas
    out = tmp_path / "atlas"
    manifest = fresh_copy(atlas, out)
    part_bytes = sum(p["bytes"] for p in manifest["parts"])
    assert len(manifest["parts"]) == 4 and part_bytes > 3_000_000
    validate(str(out), parallel=False)  # imports and caches warm: what follows counts validate's own reads

    before = bytes_read_by_this_process()
    report = validate(str(out), parallel=False)
    read = bytes_read_by_this_process() - before  # the kernel's count: every read() of this process
    assert report.ok, report.table()
    assert report.part_bytes == part_bytes and report.parts_hashed == 0
    assert report.bytes_read <= read < report.bytes_read + len((out / MANIFEST).read_bytes()) + 64 * 1024
    # At most each part's footer (a 64 kB read from the end at least) and its start/end column chunks: not one
    # byte of the 256 track columns.
    footers, keys = 0, 0
    for part in manifest["parts"]:
        metadata = pq.ParquetFile(out / part["path"]).metadata
        footers += metadata.serialized_size + 8
        keys += sum(metadata.row_group(g).column(c).total_compressed_size
                    for g in range(metadata.num_row_groups) for c in (0, 1))
    assert footers <= report.bytes_read <= max(footers, 4 * 64 * 1024) + keys
    assert report.bytes_read < 0.1 * part_bytes

    before = bytes_read_by_this_process()
    deep = validate(str(out), parallel=False, checksums=True)
    read = bytes_read_by_this_process() - before
    assert deep.ok and deep.parts_hashed == 4 and read >= part_bytes and deep.bytes_read >= part_bytes
    assert "sha256 of every part verified" in deep.table()


def test_ray_tasks_check_the_same_as_this_process(wide_atlas, tmp_path):
    fasta, atlas = wide_atlas
    out = tmp_path / "atlas"
    fresh_copy(atlas, out)
    here = validate(str(out), fasta=fasta, parallel=False)
    in_ray = validate(str(out), fasta=fasta)  # Ray is running (the session cluster): tasks by default
    assert here.ok and in_ray.ok, in_ray.table()
    assert in_ray.chroms == here.chroms and in_ray.bytes_read == here.bytes_read
    assert [c.bins_found for c in in_ray.chroms] == [5469, 3125, 782]  # ceil(length / 128)


def test_fast_validate_names_each_defect_reading_no_track_values(wide_atlas, tmp_path):
    fasta, atlas = wide_atlas
    out = tmp_path / "atlas"
    manifest = fresh_copy(atlas, out)
    paths = sorted(p["path"] for p in manifest["parts"])
    assert paths == ["chrom=chr1/part-000000-000004.parquet", "chrom=chr1/part-000004-000007.parquet",
                     "chrom=chr2/part-000000-000004.parquet", "chrom=chr3/part-000000-000001.parquet"]
    first, second, chr2, chr3 = paths
    # chr1's second part committed with chr1's first part's rows: bins 0-3583 twice, 3584-5468 never.
    recommit(out, second, pq.read_table(out / first))
    # chr2's part committed with start/end shifted by one base.
    table = pq.read_table(out / chr2)
    shifted = table.set_column(0, table.schema.field(0), pa.array(table.column("start").to_numpy() + 1))
    recommit(out, chr2, shifted)
    # The manifest claims one row more for chr3's part than its footer has.
    edited = json.loads((out / MANIFEST).read_text())
    rows = next(p for p in edited["parts"] if p["path"] == chr3)
    rows["rows"] += 1
    (out / MANIFEST).write_text(json.dumps(edited))
    (out / "chrom=chr3" / "part-000009-000010.parquet").write_bytes(b"PAR1 not a part")

    report = validate(str(out), fasta=fasta)
    text = "\n".join(report.problems)
    assert "chr1: 3584 bins written more than once" in text
    assert "chr1: 1885 bins missing (first at 458752)" in text
    assert f"part {chr2}: start/end are not the bins [i*128, (i+1)*...)" in text
    assert f"part {chr3}: 782 rows, manifest says 783" in text
    assert "stray part chrom=chr3/part-000009-000010.parquet: present but not in the manifest" in text
    assert len(report.problems) == 5, text
    assert report.parts_hashed == 0 and report.bytes_read < 0.1 * report.part_bytes

    with open(out / chr3, "r+b") as f:
        f.truncate(1000)
    os.remove(out / chr2)
    text = "\n".join(validate(str(out), fasta=fasta).problems)
    assert f"part {chr3}: 1000 bytes, manifest says" in text and "(truncated?)" in text
    assert f"part {chr2} is listed in the manifest but missing" in text


def flip_a_track_value(path) -> None:
    """Change one byte inside a track column's data, keeping the file's size."""
    meta = pq.ParquetFile(path).metadata.row_group(0).column(100)
    with open(path, "r+b") as f:
        f.seek(meta.data_page_offset + meta.total_compressed_size - 8)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_same_size_damage_is_found_by_checksums_and_a_rewrite_by_its_token(wide_atlas, tmp_path):
    fasta, atlas = wide_atlas
    out = tmp_path / "atlas"
    manifest = fresh_copy(atlas, out)
    victim = manifest["parts"][0]["path"]
    st = os.stat(out / victim)
    flip_a_track_value(out / victim)
    os.utime(out / victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # in place, mtime restored: same token
    assert os.stat(out / victim).st_size == st.st_size

    # The fast mode trusts a part whose size and version token are its commit's (documented): it read no value.
    assert validate(str(out)).ok
    deep = validate(str(out), checksums=True)  # a damaged part counts for no bin: its bins are missing too
    assert deep.problems == [f"part {victim}: checksum does not match the manifest",
                             "chr1: 3584 bins missing (first at 0)"]

    # The same bytes written anew (a late write of a given-up replica): another token, so the fast mode hashes
    # that part, and only that one.
    data = (out / victim).read_bytes()
    os.remove(out / victim)
    (out / victim).write_bytes(data)
    report = validate(str(out))
    assert report.problems == deep.problems
    assert report.parts_hashed == 1 and any("another version token" in n for n in report.notes)


def test_bin_runs_and_tally_count_like_numpy_unique():
    rng = np.random.default_rng(3)
    for _ in range(50):
        parts = [np.arange(lo, lo + rng.integers(0, 40)) for lo in rng.integers(0, 200, size=rng.integers(0, 6))]
        parts += [rng.integers(0, 220, size=rng.integers(0, 5))]  # out of order and repeated bins
        want_ranges = [(lo, lo + rng.integers(0, 80)) for lo in rng.integers(0, 200, size=rng.integers(0, 3))]
        found = np.concatenate(parts)
        want = np.unique(np.concatenate([np.arange(lo, hi) for lo, hi in want_ranges] or [np.arange(0)]))
        unique, counts = np.unique(found, return_counts=True)
        missing = np.setdiff1d(want, unique)
        runs = np.concatenate([bin_runs(p) for p in parts])
        tally = tally_bins(runs, np.array(want_ranges, dtype=np.int64).reshape(-1, 2))
        assert (tally.found, tally.duplicates, tally.wanted) == (len(unique), int((counts > 1).sum()), len(want))
        assert (tally.missing, tally.extra) == (len(missing), len(np.setdiff1d(unique, want)))
        assert tally.first_missing == (missing[0] if len(missing) else -1)
