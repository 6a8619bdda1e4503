"""Job kinds: the registry, the kind a manifest records (or, in older manifests, implies), one plan shared by
the run and validate, the part records' unit keys, and the command line built from the kinds."""

from __future__ import annotations

import json

import pytest

from enformer_batch import PredictConfig, predict, validate
from enformer_batch.cli import build_parser
from enformer_batch.kinds import KINDS, kind_of
from enformer_batch.store import MANIFEST, PartRecord, manifest_parts, records_from_manifest


def test_every_kind_is_registered_under_its_name_with_its_own_command():
    assert list(KINDS) == ["atlas", "variants", "mutagenesis", "edits", "attribution", "genes"]
    assert all(kind.name == name for name, kind in KINDS.items())
    assert len({kind.command for kind in KINDS.values()}) == len(KINDS)


@pytest.mark.parametrize("manifest, name", [
    ({"kind": "edits", "identity": {"mode": "edits"}}, "edits"),
    ({"kind": "atlas", "identity": {}}, "atlas"),
    ({"identity": {"stride": 114_688}}, "atlas"),  # atlases before kinds were recorded: no mode at all
    ({"identity": {"mode": "variants"}}, "variants"),
    ({"identity": {"mode": "mutagenesis"}}, "mutagenesis"),
    ({"kind": "genes", "identity": {"mode": "genes"}}, "genes"),
])
def test_the_kind_of_a_manifest_is_recorded_or_implied_by_its_identity(manifest, name):
    assert kind_of(manifest) is KINDS[name]


def test_an_unknown_kind_is_a_one_line_error():
    with pytest.raises(ValueError, match="kind 'spliced' is not one this enformer-batch knows"):
        kind_of({"kind": "spliced", "identity": {}})


def test_part_records_keep_the_manifests_unit_keys_and_read_either():
    record = PartRecord(path="chrom=c/p.parquet", chrom="c", first=3, end=7, rows=10, bytes=99, sha256="x")
    (entry,) = manifest_parts({record.path: record})
    assert (entry["first_window"], entry["end_window"]) == (3, 7) and "first" not in entry  # format unchanged
    assert records_from_manifest({"parts": [entry]}) == {record.path: record}
    assert PartRecord.from_dict({**record.to_dict()}) == record
    assert PartRecord.from_dict({k: v for k, v in entry.items()} | {"first": 3, "end": 7}) == record


def test_the_command_line_has_each_kinds_command_and_its_docstring_lists_every_command():
    import enformer_batch.cli as cli

    commands = build_parser()._subparsers._group_actions[0].choices
    assert {kind.command for kind in KINDS.values()} <= set(commands)
    missing = [c for c in commands if f"``{c}``" not in cli.__doc__]
    assert not missing, missing
    for kind in KINDS.values():  # --help stays documentation: the kind's own description
        assert commands[kind.command].description == kind.description


def test_an_atlas_records_its_kind_and_one_without_it_still_resumes_and_validates(ray_cluster, test_fasta,
                                                                                    tmp_path):
    """Manifests written before kinds were recorded (no "kind") resume without recomputing and validate."""
    out = tmp_path / "atlas"
    config = PredictConfig(fasta=test_fasta, out=str(out), chroms=("contig_s",), progress=False)
    first = predict(config)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["kind"] == "atlas" and "mode" not in manifest["identity"]
    planned = {f"chrom={p.chrom}/{p.name}" for p in KINDS["atlas"].parts(manifest["identity"])}
    assert planned == {p["path"] for p in manifest["parts"]}  # what the run planned is what validate plans
    del manifest["kind"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert validate(str(out), fasta=test_fasta).ok
    again = predict(config)
    assert (again.resumed_parts, again.units_computed) == (first.parts, 0)
    report = validate(str(out), fasta=test_fasta, vcf="unused.vcf")
    assert report.problems == ["--vcf checks variants outputs; this is atlas"]
