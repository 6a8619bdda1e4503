"""Track tables and the --tracks selection grammar."""

from __future__ import annotations

import io

import pytest

from enformer_batch.families import demo_checkpoint
from enformer_batch.tracks import (
    TrackTable,
    read_track_table,
    render_track_table,
    select_tracks,
    track_names,
    write_track_table,
)

BASENJI = (
    "index\tgenome\tidentifier\tfile\tclip\tclip_soft\tscale\tsum_stat\tstrand_pair\tdescription\n"
    "0\t0\tENCFF833POA\t/home/drk/data/x.w5\t32\t16\t2\tmean\t0\tDNASE:cerebellum male adult\n"
    "1\t0\tENCFF110QGM\t/home/drk/data/y.w5\t32\t16\t2\tmean\t1\tDNASE:frontal cortex male adult\n"
    "2\t0\tCNhs11760\t/home/drk/data/z.w5\t384\t16\t1\tsum\t2\tCAGE:aorta, adult, pool1\n"
    "3\t0\tCNhs12843\t/home/drk/data/w.w5\t384\t16\t1\tsum\t3\tCAGE:heart, adult\n"
)


@pytest.fixture
def table() -> TrackTable:
    return read_track_table(io.StringIO(BASENJI))


def test_parse_basenji_table(table):
    assert len(table) == 4
    assert table.identifiers[0] == "ENCFF833POA"
    assert table.descriptions[2] == "CAGE:aorta, adult, pool1"
    assert table.extra[2]["clip"] == "384"


def test_pandas_style_header_with_unnamed_index_column():
    text = "\tidentifier\tdescription\n0\tA\tDNASE:x\n1\tB\tCAGE:y\n"
    t = read_track_table(io.StringIO(text))
    assert t.identifiers == ("A", "B")


@pytest.mark.parametrize(
    "spec,expected",
    [
        (None, [0, 1, 2, 3]),
        ("all", [0, 1, 2, 3]),
        ("3,1", [1, 3]),
        ("0-2", [0, 1, 2]),
        ("0-1,3", [0, 1, 3]),
        ("ENCFF110QGM", [1]),
        ("ENCFF110QGM, CNhs12843", [1, 3]),
        ("^CAGE:", [2, 3]),
        ("re:^DNASE", [0, 1]),
        ("re:adult$", [0, 1, 3]),
        (r"re:aorta\x2c adult", [2]),
        ("0,^CAGE:", [0, 2, 3]),
        ([2, 0, 2], [0, 2]),
    ],
)
def test_select_tracks(table, spec, expected):
    assert select_tracks(spec, 4, table) == expected


@pytest.mark.parametrize(
    "spec,message",
    [
        ("4", "out of range"),
        ("2-9", "out of range"),
        ("3-1", "empty"),
        ("^ATAC:", "matches no track"),
        ("re:(", "valid regex"),
        ("0,,1", "empty item"),
    ],
)
def test_select_tracks_errors(table, spec, message):
    with pytest.raises(ValueError, match=message) as exc:
        select_tracks(spec, 4, table)
    assert "\n" not in str(exc.value)


def test_select_without_table_accepts_indices_only():
    assert select_tracks("0-2,7", 10, None) == [0, 1, 2, 7]
    with pytest.raises(ValueError, match="needs a track table"):
        select_tracks("^CAGE:", 10, None)
    with pytest.raises(ValueError, match="out of range"):
        select_tracks([10], 10, None)


def test_table_size_must_match_head(table):
    with pytest.raises(ValueError, match="4 rows"):
        select_tracks("all", 5, table)


def test_track_names(table):
    assert track_names([0, 3], table) == ["ENCFF833POA", "CNhs12843"]
    assert track_names([0, 12], None) == ["track_0000", "track_0012"]


def test_write_read_roundtrip_and_render(tmp_path, table):
    write_track_table(table, tmp_path / "t.txt")
    back = read_track_table(tmp_path / "t.txt")
    assert back.identifiers == table.identifiers and back.descriptions == table.descriptions
    text = render_track_table({"human": back, "mouse": None}, {"human": 4, "mouse": 3})
    assert "head human: 4 tracks" in text and "CNhs12843" in text
    assert "track_0000..track_0002" in text


def test_demo_model_tables_support_regex_selection():
    human = read_track_table(demo_checkpoint("demo") / "targets_human.txt")
    mouse = read_track_table(demo_checkpoint("demo") / "targets_mouse.txt")
    assert len(select_tracks("^CAGE:", len(human), human)) == 4
    assert len(select_tracks("^DNASE:", len(human), human)) == 4
    assert select_tracks("^CAGE:", len(mouse), mouse) == [2, 3]
