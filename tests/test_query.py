"""Atlas access: ``open_atlas``/``query`` against DuckDB, part pruning, bigWig, plots, the CLI, the recipes."""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enformer_batch import PredictConfig, open_atlas, predict
from enformer_batch.atlas import Atlas, parse_region
from enformer_batch.cli import main
from enformer_batch.store import SUCCESS, OutputStore

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs", "atlas-recipes.md")
ATLAS_PLACEHOLDER = '"path/to/atlas"'


@pytest.fixture(scope="module")
def atlas_dir(ray_cluster, test_fasta, tmp_path_factory) -> str:
    # One window per part, so chrA (3 windows) and chrB (2) have several parts for pruning to skip.
    out = str(tmp_path_factory.mktemp("query") / "atlas")
    predict(PredictConfig(fasta=test_fasta, out=out, progress=False, windows_per_part=1))
    return out


@pytest.fixture(scope="module")
def atlas(atlas_dir) -> Atlas:
    return open_atlas(atlas_dir)


def duckdb_rows(atlas_dir: str, chrom: str, start: int, end: int, tracks: list[str]) -> pa.Table:
    cols = ", ".join(f'"{t}"' for t in tracks)
    sql = (
        f"select chrom, start, \"end\", {cols} from read_parquet('{atlas_dir}/*/*.parquet', hive_partitioning=true) "
        f"where chrom = '{chrom}' and \"end\" > {start} and start < {end} order by start"
    )
    result = duckdb.sql(sql).arrow()  # a Table before DuckDB 1.4, a RecordBatchReader since
    return result.read_all() if isinstance(result, pa.RecordBatchReader) else result


def as_float32(table: pa.Table) -> pa.Table:
    """Same values, comparable across readers (DuckDB returns float16 columns as float32)."""
    fields = [f.with_type(pa.float32()) if pa.types.is_floating(f.type) else f for f in table.schema]
    fields = [f.with_type(pa.string()) if f.name == "chrom" else f for f in fields]
    return table.cast(pa.schema([f.with_nullable(True) for f in fields]))


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("enformer-batch: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- the query API -----------------------------------------------------------------------------------


def test_atlas_describes_itself(atlas, atlas_dir):
    assert atlas.chroms == {"chrA": 300_007, "chrB": 130_000, "contig_s": 1_000}
    manifest = json.load(open(os.path.join(atlas_dir, "_manifest.json")))
    assert atlas.tracks.to_pylist() == manifest["identity"]["tracks"]
    assert atlas.tracks.column_names == ["index", "name", "description"]


def test_query_equals_duckdb_on_random_regions(atlas, atlas_dir):
    rng = np.random.default_rng(11)
    names = atlas.track_names
    regions = [("chrA", 0, 300_007), ("chrB", 129_900, 130_000), ("contig_s", 0, 1_000), ("chrA", 59_000, 120_000)]
    for _ in range(20):
        chrom = str(rng.choice(list(atlas.chroms)))
        length = atlas.chroms[chrom]
        start = int(rng.integers(0, length - 1))
        end = int(rng.integers(start + 1, min(length, start + 150_000) + 1))
        regions.append((chrom, start, end))
    for chrom, start, end in regions:
        tracks = sorted(rng.choice(names, size=int(rng.integers(1, 4)), replace=False).tolist())
        got = atlas.query(chrom, start, end, tracks=tracks)
        want = duckdb_rows(atlas_dir, chrom, start, end, tracks)
        assert got.num_rows > 0
        assert got.column_names == ["chrom", "start", "end", *tracks]
        assert as_float32(got).equals(as_float32(want)), (chrom, start, end)
        # Rows are exactly the bins overlapping [start, end): the first contains start, the last end - 1.
        assert got["start"][0].as_py() <= start < got["end"][0].as_py()
        assert got["start"][-1].as_py() < end <= got["end"][-1].as_py()


def test_skipped_windows_and_short_last_bin(atlas):
    rows = atlas.query("chrA", 200_000, 300_007, tracks="0").to_pylist()
    assert all(r["DEMO0000001"] is None for r in rows)  # windows 1-2 of chrA are all N
    assert rows[-1]["start"] == 299_904 and rows[-1]["end"] == 300_007
    last = atlas.query("chrB", 129_999, 130_000)
    assert last.num_rows == 1 and last["end"][0].as_py() == 130_000
    whole = atlas.query("chrB")
    assert whole.num_rows == 1016 and whole.column_names[3:] == atlas.track_names


def test_query_to_pandas(atlas):
    pytest.importorskip("pandas")
    frame = atlas.query("chrB", 0, 1_000, tracks="0").to_pandas()
    assert list(frame.columns) == ["chrom", "start", "end", "DEMO0000001"] and len(frame) == 8


def _copy_to_memory(atlas_dir: str):
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/atlas-{uuid.uuid4().hex}"
    for dirpath, _, files in os.walk(atlas_dir):
        for name in files:
            local = os.path.join(dirpath, name)
            fs.pipe_file(f"{root}/{os.path.relpath(local, atlas_dir)}", open(local, "rb").read())
    return fs, root


def test_query_reads_only_the_parts_it_needs(atlas_dir, monkeypatch):
    """Through an fsspec file system, count the files opened: the manifest to open, then covering parts."""
    fs, root = _copy_to_memory(atlas_dir)
    opened: list[str] = []
    real_open = fs.open

    def counting_open(path, *args, **kwargs):
        opened.append(path.rsplit(root, 1)[-1].lstrip("/"))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(fs, "open", counting_open)
    monkeypatch.setattr(fs, "cat_file", lambda path, *a, **k: counting_open(path).read())
    mem_atlas = open_atlas(f"memory://{root}")
    assert opened == ["_manifest.json"]

    # What each part holds, from the files themselves (not from the planner the query uses).
    spans = {}
    for rel in OutputStore(atlas_dir).list_part_files():
        t = pq.read_table(os.path.join(atlas_dir, rel), columns=["start", "end"])
        spans[rel] = (rel.split("/")[0], t["start"][0].as_py(), t["end"][-1].as_py())
    assert len(spans) == 6
    for chrom, start, end in [
        ("chrA", 150_000, 160_000),  # inside window 1
        ("chrA", 114_000, 115_000),  # across windows 0 and 1
        ("chrB", 0, 10),
        ("chrB", 120_000, 130_000),
        ("contig_s", 0, 1_000),
    ]:
        opened.clear()
        got = mem_atlas.query(chrom, start, end, tracks="DEMO0000002")
        needed = {
            rel for rel, (d, lo, hi) in spans.items() if d == f"chrom={chrom}" and lo < end and hi > start
        }
        assert set(opened) == needed, (chrom, start, end, opened)
        assert len(opened) == len(needed)  # each needed part opened once
        want = open_atlas(atlas_dir).query(chrom, start, end, tracks="DEMO0000002")
        assert got.equals(want)


def test_track_selection(atlas):
    assert atlas.select_tracks(None) == atlas.track_names
    assert atlas.select_tracks("1,0-1") == ["DEMO0000001", "DEMO0000002"]
    assert atlas.select_tracks(["DEMO0000003", "DEMO0000001"]) == ["DEMO0000003", "DEMO0000001"]
    assert atlas.select_tracks([2]) == ["DEMO0000003"]
    cage = atlas.select_tracks("^CAGE:")
    assert cage and all(t["description"].startswith("CAGE:") for t in atlas.tracks.to_pylist() if t["name"] in cage)
    for spec, needle in [("nope", "matches no track"), ("99", "not in this atlas"), (["NOPE"], "unknown track")]:
        with pytest.raises(ValueError, match=needle):
            atlas.select_tracks(spec)


def test_indices_are_head_indices_in_a_track_subset_atlas(atlas):
    """An atlas of tracks 4 and 9 of the head: '4' is a head index, not the fifth stored column."""
    manifest = json.loads(json.dumps(atlas.manifest))
    manifest["identity"]["tracks"] = [t for t in manifest["identity"]["tracks"] if t["index"] in (4, 9)]
    subset = Atlas(atlas.store, manifest)
    assert subset.select_tracks("4") == ["DEMO0000005"]
    assert subset.select_tracks("9,4") == ["DEMO0000005", "DEMO0000010"]
    with pytest.raises(ValueError, match="track index 0 is not in this atlas"):
        subset.select_tracks("0")
    with pytest.raises(ValueError, match="track index 5 is not in this atlas"):
        subset.select_tracks("4-9")


@pytest.mark.parametrize(
    "args, needle",
    [
        (("chrZ", 0, 10), "chromosome 'chrZ' is not in this atlas"),
        (("chrB", 0, 130_001), "outside chrB"),
        (("chrB", -1, 10), "outside chrB"),
        (("chrB", 10, 10), "empty"),
    ],
)
def test_bad_ranges(atlas, args, needle):
    with pytest.raises(ValueError, match=needle):
        atlas.query(*args)


def test_incomplete_atlas_needs_the_flag(atlas_dir, tmp_path):
    copy = str(tmp_path / "running")
    shutil.copytree(atlas_dir, copy)
    manifest = json.load(open(os.path.join(copy, "_manifest.json")))
    manifest["status"] = "running"
    manifest["parts"] = [p for p in manifest["parts"] if p["chrom"] != "chrB"]  # chrB not committed yet
    json.dump(manifest, open(os.path.join(copy, "_manifest.json"), "w"))
    os.remove(os.path.join(copy, SUCCESS))
    with pytest.raises(ValueError, match="not complete.*allow_incomplete"):
        open_atlas(copy)
    partial = open_atlas(copy, allow_incomplete=True)
    assert partial.query("chrA", 0, 1_000).num_rows == 8
    assert partial.query("chrB", 0, 1_000).num_rows == 0  # listed parts only, though the file exists
    with pytest.raises(ValueError, match="no _manifest.json"):
        open_atlas(str(tmp_path / "nothing"))


@pytest.mark.parametrize(
    "text, want",
    [
        ("chr1:1,000-2,000", ("chr1", 1000, 2000)),
        ("chr1:0-5", ("chr1", 0, 5)),
        ("HLA-A*01:01:10-20", ("HLA-A*01:01", 10, 20)),
        ("chrX", ("chrX", None, None)),
    ],
)
def test_parse_region(text, want):
    assert parse_region(text) == want


@pytest.mark.parametrize("text", ["chr1:20-10", "chr1:5-5", "chr1:1-", ":1-2", ""])
def test_parse_region_rejects(text):
    with pytest.raises(ValueError):
        parse_region(text)


# --- bigWig and plots ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bigwigs(atlas, tmp_path_factory) -> dict[str, str]:
    pytest.importorskip("pyBigWig")
    from enformer_batch.export import export_bigwig

    out = tmp_path_factory.mktemp("bw")
    paths = export_bigwig(atlas, str(out), tracks="0,CAGE:demo cell 1")
    return {os.path.basename(p)[: -len(".bw")]: p for p in paths}


def test_bigwig_matches_parquet(atlas, bigwigs):
    """Written with pyBigWig, read back with pybigtools (an independent implementation)."""
    pybigtools = pytest.importorskip("pybigtools")
    assert sorted(bigwigs) == ["DEMO0000001", "DEMO0000009"]
    rng = np.random.default_rng(5)
    for name, path in bigwigs.items():
        bw = pybigtools.open(path)
        assert bw.chroms() == {"chrA": 300_007, "chrB": 130_000, "contig_s": 1_000}
        regions = [(c, 0, n) for c, n in atlas.chroms.items()]
        for _ in range(10):
            chrom = str(rng.choice(list(atlas.chroms)))
            start = int(rng.integers(0, atlas.chroms[chrom] - 1))
            regions.append((chrom, start, int(rng.integers(start + 1, atlas.chroms[chrom] + 1))))
        for chrom, start, end in regions:
            table = atlas.query(chrom, start, end, tracks=[name])
            keep = table[name].is_valid().to_numpy(zero_copy_only=False)
            want = [  # pybigtools clips intervals to the query range
                (max(s, start), min(e, end), np.float32(v))
                for s, e, v, k in zip(
                    table["start"].to_pylist(), table["end"].to_pylist(), table[name].to_pylist(), keep, strict=True
                )
                if k
            ]
            got = [(s, e, np.float32(v)) for s, e, v in bw.records(chrom, start, end)]
            assert got == want, (name, chrom, start, end)
        bw.close()


def test_bigwig_gaps_and_last_bin(bigwigs):
    pybigtools = pytest.importorskip("pybigtools")
    bw = pybigtools.open(bigwigs["DEMO0000001"])
    assert list(bw.records("chrA", 120_000, 300_007)) == []  # skipped windows: no intervals at all
    values = bw.values("chrA", 114_600, 114_700, fillna=np.nan)  # per bp; the gap starts at 114,688
    assert not np.isnan(values[:88]).any() and np.isnan(values[88:]).all()
    assert list(bw.records("chrB"))[-1][:2] == (129_920, 130_000)
    assert list(bw.records("contig_s"))[-1][:2] == (896, 1_000)
    bw.close()


def test_plot_png(atlas, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    from enformer_batch.export import plot_region

    out = str(tmp_path / "region.png")
    width, height = plot_region(atlas, "chrA", 0, 300_007, "0,1,^CAGE:demo cell 1$", out, width_px=800)
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(out)
    assert pixels.shape[:2] == (height, width) and width == 800 and height == 3 * 120 + 90
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 10  # not blank


# --- the command line ----------------------------------------------------------------------------------


def test_cli_query(atlas, atlas_dir, capsys, tmp_path):
    assert main(["query", atlas_dir, "chrA:114,500-114,900", "--tracks", "0,1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "chrom\tstart\tend\tDEMO0000001\tDEMO0000002"
    want = atlas.query("chrA", 114_500, 114_900, tracks="0,1")
    assert len(lines) == 1 + want.num_rows
    first = lines[1].split("\t")
    assert first[:3] == ["chrA", "114432", "114560"]
    assert float(first[3]) == pytest.approx(want["DEMO0000001"][0].as_py())
    assert lines[-1].split("\t")[3:] == ["", ""]  # no value: an empty field

    assert main(["query", atlas_dir, "chrB:0-300", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("chrom,start,end,DEMO0000001,")

    out = str(tmp_path / "rows.parquet")
    assert main(["query", atlas_dir, "chrB:0-1,000", "--tracks", "CAGE", "--format", "parquet", "--output", out]) == 0
    assert pq.read_table(out).equals(atlas.query("chrB", 0, 1_000, tracks="CAGE"))


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["chrA:500-100"], ["start 500 >= end 100"]),
        (["chrA:1-x00"], ["chrA:1-x00"]),  # read as a chromosome name, which the atlas lacks
        (["chrA:abc-"], ["not in this atlas"]),
        (["chrA:0-400,000"], ["outside chrA", "300007"]),
        (["chrA:0-10", "--tracks", "NOPE"], ["NOPE"]),
        (["chrA:0-10", "--format", "parquet"], ["--output"]),
    ],
)
def test_cli_query_errors(atlas_dir, capsys, argv, needles):
    code = main(["query", atlas_dir, *argv])
    assert_one_line_error(code, capsys.readouterr().err, *needles)


def test_cli_export_and_plot(atlas_dir, capsys, tmp_path):
    pytest.importorskip("pyBigWig")
    pytest.importorskip("matplotlib")
    assert main(["export-bigwig", atlas_dir, "--tracks", "2", "--out", str(tmp_path / "bw")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "bw" / "DEMO0000003.bw")
    png = str(tmp_path / "p.png")
    assert main(["plot", atlas_dir, "chrB:0-130,000", "--tracks", "0,2", "--out", png, "--width", "640"]) == 0
    assert "640x330 px" in capsys.readouterr().out
    assert open(png, "rb").read(4) == b"\x89PNG"
    code = main(["plot", atlas_dir, "chrB:0-130,001", "--tracks", "0", "--out", png])
    assert_one_line_error(code, capsys.readouterr().err, "outside chrB")
    code = main(["export-bigwig", str(tmp_path / "none"), "--out", str(tmp_path / "bw2")])
    assert_one_line_error(code, capsys.readouterr().err, "no _manifest.json")


# --- docs/atlas-recipes.md ------------------------------------------------------------------------------


def test_recipes_run(atlas_dir, tmp_path, monkeypatch, capsys):
    """Every ```python block of docs/atlas-recipes.md, in order, in one namespace, on the test atlas."""
    text = open(DOCS, encoding="utf-8").read()
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    assert len(blocks) >= 5
    assert ATLAS_PLACEHOLDER in blocks[0]
    monkeypatch.chdir(tmp_path)  # recipes write bigwig-out/ and region.png into the working directory
    namespace: dict = {}
    for i, block in enumerate(blocks):
        code = compile(block.replace(ATLAS_PLACEHOLDER, repr(atlas_dir)), f"atlas-recipes.md block {i + 1}", "exec")
        exec(code, namespace)
    assert (tmp_path / "region.png").exists()
