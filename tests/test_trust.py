"""Trust at cluster scale (issue 15): no mixed weights or genomes, one driver per atlas, late writes, retries,
upgrades, leftovers, and readers that see only committed parts. Real processes and real files throughout;
the object-store side of the same guarantees is in tests/test_s3.py."""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from enformer_batch import PredictConfig, predict, validate
from enformer_batch.cli import main as cli_main
from enformer_batch.engine import RunError
from enformer_batch.genome import FastaSource, GenomeError
from enformer_batch.inference import InferenceSettings, NonFiniteOutput, Predictor
from enformer_batch.integrity import GenomeMismatch, WeightsMismatch
from enformer_batch.kinds.atlas import read_part
from enformer_batch.kinds.attribution import AttributionConfig, attribute
from enformer_batch.kinds.edits import EditsConfig, edits
from enformer_batch.kinds.mutagenesis import MutagenesisConfig, mutagenesis
from enformer_batch.kinds.variants import VariantConfig, score_variants
from enformer_batch.lease import LEASE, Lease, LeaseHeld, LeaseLost, LeaseState
from enformer_batch.retry import RetriesExhausted, RetryPolicy, is_transient, with_retries
from enformer_batch.store import MANIFEST, OutputStore, serialise_table
from enformer_batch.windows import ENFORMER, plan_selection

from .conftest import TEST_GENOME, read_atlas, run_and_validate
from .reference import parse_fasta
from .test_faults import part_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VCF_HEADER = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
REFERENCE = dict(dtype="float32", batch_size=2, threads_per_worker=1)  # the settings of `reference_atlas`


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": REPO}


def copy_atlas(reference_atlas, tmp_path, name="atlas"):
    out = tmp_path / name
    shutil.copytree(reference_atlas, out)
    return out


class Interrupted(Exception):
    pass


def interrupt_after(n: int):
    seen = []

    def hook(record) -> None:
        seen.append(record.path)
        if len(seen) == n:
            raise Interrupted

    return hook


# --- upgrades ---------------------------------------------------------------------------------------


def test_a_patch_release_resumes_and_a_numerics_change_refuses(ray_cluster, test_fasta, reference_atlas, tmp_path,
                                                               monkeypatch, capsys):
    engine = importlib.import_module("enformer_batch.engine")

    out = copy_atlas(reference_atlas, tmp_path)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["identity"]["numerics_version"] == 1 and "engine_version" not in manifest["identity"]
    # An atlas written before the identity carried numerics_version: it recorded the package version instead.
    old = dict(manifest["identity"], engine_version="0.0.9")
    del old["numerics_version"]
    # ... the genome's file name with its ending, and a model entry from before Borzoi (one Enformer checkpoint).
    old["fasta"] = {**old["fasta"], "name": old["fasta"]["name"] + ".fa"}
    old["model"] = {k: v for k, v in old["model"].items() if k not in ("family", "replicates", "unsquash")}
    # ... and whose parts had neither version tokens nor codes digests: trusted on their size, as then.
    parts = [{k: v for k, v in p.items() if k not in ("token", "codes_sha256")} for p in manifest["parts"]]
    (out / MANIFEST).write_text(json.dumps({**manifest, "identity": old, "parts": parts}))

    monkeypatch.setattr(engine, "__version__", "0.1.1")  # a patch release
    summary = run_and_validate(test_fasta, out, **REFERENCE)
    assert summary.resumed_parts == 3 and summary.units_computed == 0
    resumed = json.loads((out / MANIFEST).read_text())
    assert resumed["engine_version"] == "0.1.1" and resumed["identity"]["numerics_version"] == 1
    assert all(p["token"].startswith("stat:") for p in resumed["parts"])  # tracked from now on

    monkeypatch.setattr(engine, "NUMERICS_VERSION", 2)  # a release whose outputs differ
    capsys.readouterr()
    code = cli_main(["predict", test_fasta, "--out", str(out), "--dtype", "float32", "--batch-size", "2",
                     "--threads-per-worker", "1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "was computed with numerics version 1 and this enformer-batch computes version 2" in err[0]
    assert "--overwrite" in err[0]
    assert validate(str(out)).ok  # refused before touching anything


# Per-track sums over chrB's stitched rows (stride 57,344: two windows, nearest-centre stitching, N run and
# padding) from the demo model, fp32, for each NUMERICS_VERSION. A change that moves them is a numerics change:
# bump NUMERICS_VERSION (enformer_batch/integrity.py) and add its row, so that resumes refuse to mix. (A new demo
# checkpoint moves them too; then update the row without a bump: the weights hash already tells runs apart.)
GOLDEN = {
    1: {
        "zeros": [841.59, 987.19, 627.69, 686.05, 663.85, 598.88, 621.62, 689.25, 635.17, 804.36, 559.84, 1004.51],
        "uniform": [846.65, 971.04, 634.1, 682.0, 662.61, 600.12, 616.35, 704.14, 631.47, 809.25, 572.24, 1005.8],
    },
}


@pytest.mark.parametrize("n_encoding", ["zeros", "uniform"])
def test_outputs_match_the_numerics_version(test_fasta, n_encoding):
    from enformer_batch.integrity import NUMERICS_VERSION
    from enformer_batch.store import part_table

    assert NUMERICS_VERSION in GOLDEN, "a new NUMERICS_VERSION needs its golden values here"
    source = FastaSource(test_fasta)
    (part,) = plan_selection({"chrB": None}, source.lengths(), ENFORMER, 57_344, 16)
    predictor = Predictor(InferenceSettings(dtype="float32", n_encoding=n_encoding), device="cpu")
    values, ran = predictor.predict(read_part(source, part, ENFORMER.input_length))
    table = part_table(part, values, ran, predictor.info.track_names, "float32", ENFORMER.bin_size)
    sums = [np.asarray(table.column(c), dtype=np.float64).sum() for c in table.column_names[2:]]
    np.testing.assert_allclose(sums, GOLDEN[NUMERICS_VERSION][n_encoding], rtol=1e-4, atol=0.01,
                               err_msg="outputs changed: bump NUMERICS_VERSION and record the new values")


# --- weights ----------------------------------------------------------------------------------------


def perturbed_model(src: str, dst) -> str:
    """A copy of a checkpoint whose weights differ (as a re-uploaded checkpoint at the same URL would)."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(str(dst / "model.safetensors"))
    name = next(k for k in weights if k.endswith("bias"))
    weights[name] = weights[name] + torch.full_like(weights[name], 1e-3)
    save_file(weights, str(dst / "model.safetensors"))
    return str(dst)


def test_weights_changed_between_a_killed_run_and_its_resume_are_refused(ray_cluster, test_fasta, tmp_path,
                                                                         capsys):
    demo = os.path.join(REPO, "enformer_batch", "demo_model")
    model = tmp_path / "model"
    shutil.copytree(demo, model)
    out = tmp_path / "atlas"
    with pytest.raises(Interrupted):
        predict(PredictConfig(fasta=test_fasta, out=str(out), model=str(model), progress=False),
                on_part=interrupt_after(1))
    shutil.rmtree(model)
    perturbed_model(demo, model)  # same path, other bytes
    capsys.readouterr()
    code = cli_main(["predict", test_fasta, "--out", str(out), "--model", str(model), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"the weights at {model} changed since this atlas was started (sha256 " in err[0]
    assert "use the original weights" in err[0]


def test_a_replica_that_loads_other_weights_refuses_to_predict(ray_cluster, tmp_path):
    """A node whose copy of the checkpoint (or cache) holds other bytes than the run recorded."""
    from dataclasses import replace

    from enformer_batch.engine import WorkerLayout, _WorkerPool
    from enformer_batch.loader import load_model

    other = perturbed_model(os.path.join(REPO, "enformer_batch", "demo_model"), tmp_path / "other")
    recorded = load_model(other).weights_sha256  # what the manifest says; the replica loads the demo weights
    settings = InferenceSettings(weights_sha256=recorded)
    with pytest.raises(WeightsMismatch, match=r"replica loaded from demo .* not the ones the run records"):
        Predictor(settings, device="cpu")
    Predictor(replace(settings, weights_sha256=load_model("demo").weights_sha256), device="cpu")  # same: fine

    pool = _WorkerPool(settings, OutputStore(str(tmp_path / "atlas")), WorkerLayout(1, 0.0, 1, 1, 1))
    try:
        with pytest.raises(WeightsMismatch, match=r"replica loaded from demo .* not the ones the run records"):
            pool.describe(patience_s=120)
    finally:
        pool.shutdown()


def test_a_replica_refuses_parts_of_a_run_that_records_another_model_or_precision(ray_cluster, tmp_path):
    """A new run's replicas start before the manifest exists; each part carries what the run records, and a
    replica that loaded other weights (or resolved --precision auto otherwise) refuses it."""
    from dataclasses import replace

    from enformer_batch.engine import ReplicaWorker, check_replica
    from enformer_batch.loader import load_model

    other = perturbed_model(os.path.join(REPO, "enformer_batch", "demo_model"), tmp_path / "other")
    replica = ReplicaWorker(InferenceSettings(), OutputStore(str(tmp_path / "atlas")), 1)
    info = replica.describe()
    assert info.precision == "fp32" and info.batch_size == 4 and info.device == "cpu"  # auto on a CPU
    check_replica(info, info)
    with pytest.raises(WeightsMismatch, match="not the ones the run records"):
        replica.run_part(None, None, None, replace(info, weights_sha256=load_model(other).weights_sha256))
    with pytest.raises(RunError, match=r"resolved --precision to fp32, the run records bf16: give --precision bf16"):
        replica.run_part(None, None, None, replace(info, precision="bf16"))


# --- genome -----------------------------------------------------------------------------------------


def masked_copy(fasta: str, dst_dir, chrom: str, start: int, end: int, how: str) -> str:
    """The same FASTA (same name, names, lengths and line layout) with ``[start, end)`` of ``chrom`` masked."""
    os.makedirs(dst_dir, exist_ok=True)
    lines = open(fasta).read().split("\n")
    out, pos, current = [], 0, None
    for line in lines:
        if line.startswith(">"):
            current, pos = line[1:].split()[0], 0
            out.append(line)
            continue
        if current == chrom and line:
            chars = list(line)
            for i in range(max(start - pos, 0), min(end - pos, len(chars))):
                chars[i] = "N" if how == "hard" else chars[i].lower()
            line = "".join(chars)
        pos += len(line)
        out.append(line)
    path = os.path.join(dst_dir, os.path.basename(fasta))
    open(path, "w").write("\n".join(out))
    return path


def test_a_hard_masked_genome_is_detected_by_resume_and_validate(ray_cluster, test_fasta, reference_atlas,
                                                                  tmp_path):
    # chrB:20,000-30,000 hard-masked: same names, lengths and file size; a soft-masked copy reads the same.
    hard = masked_copy(test_fasta, tmp_path / "hard", "chrB", 20_000, 30_000, "hard")
    soft = masked_copy(test_fasta, tmp_path / "soft", "chrB", 20_000, 30_000, "soft")
    assert FastaSource(hard).lengths() == FastaSource(test_fasta).lengths()
    assert os.path.getsize(hard) == os.path.getsize(test_fasta)

    report = validate(str(reference_atlas), fasta=hard)
    assert report.problems == [
        "part chrom=chrB/part-000000-000002.parquet: the bases of chrB windows 0-1 in "
        f"{hard} differ from those it was predicted from (another masking or build of the genome?)"
    ]
    assert validate(str(reference_atlas), fasta=soft).ok  # case is not part of the codes: same predictions

    out = copy_atlas(reference_atlas, tmp_path)
    with pytest.raises(GenomeMismatch, match=r"computed from another genome: the bases under 1 committed part\(s\) "
                                             r"differ .* \(first: chrB windows 0-1\)"):
        predict(PredictConfig(fasta=hard, out=str(out), progress=False, **REFERENCE))
    assert validate(str(out)).ok  # refused before anything was written
    summary = run_and_validate(soft, out, **REFERENCE)
    assert summary.resumed_parts == 3
    summary = run_and_validate(hard, out, overwrite=True, **REFERENCE)  # --overwrite starts over on it
    assert summary.resumed_parts == 0 and summary.units_computed == 6
    assert validate(str(out), fasta=hard).ok and not validate(str(out), fasta=test_fasta).ok


def alt(base: str) -> str:
    return "C" if base.upper() == "A" else "A"


def test_a_variant_table_resumed_on_a_hard_masked_genome_is_refused_naming_the_part(ray_cluster, test_fasta,
                                                                                      tmp_path):
    # A streamed plan (the VCF is read twice, never held): resume still re-reads the committed parts' windows.
    genome = parse_fasta(test_fasta)
    a, b = genome["chrA"], genome["chrB"]
    vcf = tmp_path / "small.vcf"
    vcf.write_text(VCF_HEADER + "".join(f"{c}\t{p}\t.\t{s[p - 1]}\t{alt(s[p - 1])}\t.\t.\t.\n"
                                        for c, s, p in (("chrA", a, 1000), ("chrA", a, 1010),
                                                        ("chrB", b, 20_000), ("chrB", b, 20_001))))
    hard = masked_copy(test_fasta, tmp_path / "hard", "chrB", 50_000, 50_010, "hard")  # under chrB's windows only
    config = dict(vcf=str(vcf), out=str(tmp_path / "scores"), variants_per_part=2, threads_per_worker=1,
                  progress=False)
    first = score_variants(VariantConfig(fasta=test_fasta, **config))
    assert first.parts == 2 and first.counts == {"ok": 4}
    with pytest.raises(GenomeMismatch, match=r"computed from another genome: the bases under 1 committed part\(s\) "
                                             r"differ .* \(first: chrB variants 0-1\)"):
        score_variants(VariantConfig(fasta=hard, **config))
    assert validate(config["out"], fasta=test_fasta, vcf=str(vcf)).ok  # refused before anything was written
    again = score_variants(VariantConfig(fasta=test_fasta, **config))  # the original genome resumes
    assert again.resumed_parts == 2 and again.units_computed == 0
    over = score_variants(VariantConfig(fasta=hard, overwrite=True, **config))  # --overwrite starts over on it
    assert over.resumed_parts == 0 and over.units_computed == 4


EDITS_TSV = "swapA\tchrA\t1000\t1001\tG\nswapB\tchrB\t20000\t20002\tGG\n"


@pytest.mark.parametrize("kind", ["variants", "mutagenesis", "edits", "attribution"])
def test_validate_fasta_names_the_parts_of_every_kind_whose_bases_differ(ray_cluster, test_fasta, tmp_path, kind):
    genome = parse_fasta(test_fasta)
    hard = masked_copy(test_fasta, tmp_path / "hard", "chrB", 50_000, 50_010, "hard")
    out = str(tmp_path / kind)
    common = dict(out=out, threads_per_worker=1, progress=False)
    inputs: dict = {}
    if kind == "variants":
        a, b = genome["chrA"], genome["chrB"]
        vcf = tmp_path / "small.vcf"
        vcf.write_text(VCF_HEADER + f"chrA\t1000\t.\t{a[999]}\t{alt(a[999])}\t.\t.\t.\n"
                       f"chrB\t20000\t.\t{b[19999]}\t{alt(b[19999])}\t.\t.\t.\n")
        score_variants(VariantConfig(vcf=str(vcf), fasta=test_fasta, variants_per_part=1, **common))
        inputs, part, what = {"vcf": str(vcf)}, "chrom=chrB/part-000000000-000000001.parquet", "chrB variants 0-0"
    elif kind == "mutagenesis":
        bed = tmp_path / "regions.bed"
        bed.write_text("chrA\t1000\t1001\nchrB\t20000\t20001\n")
        mutagenesis(MutagenesisConfig(fasta=test_fasta, regions=str(bed), **common))
        part, what = "chrom=chrB/part-r000001-00000.parquet", "region chrB:20000-20001"
    elif kind == "attribution":
        bed = tmp_path / "regions.bed"
        bed.write_text("chrA\t1000\t1004\nchrB\t20000\t20004\n")
        attribute(AttributionConfig(fasta=test_fasta, regions=str(bed), **common))
        part, what = "chrom=chrB/part-r000001-000002.parquet", "regions chrB:20000-20004"
    else:
        tsv = tmp_path / "edits.tsv"
        tsv.write_text(EDITS_TSV)
        edits(EditsConfig(fasta=test_fasta, edits=str(tsv), edits_per_part=1, **common))
        part, what = "chrom=chrB/part-000000000-000000001.parquet", "chrB edits 0-0"
    assert validate(out, fasta=test_fasta, inputs=inputs).ok  # the unchanged genome validates clean
    report = validate(out, fasta=hard, inputs=inputs)
    assert report.problems == [f"part {part}: the bases of {what} in {hard} differ from those it was predicted "
                               "from (another masking or build of the genome?)"]
    if kind == "variants":  # the windows are the VCF's: without it, one line says what is not checked
        assert validate(out, fasta=hard).problems == [
            "--fasta compares the bases under a variant table's parts only with --vcf too (the windows are "
            "centred on its rows); pass the VCF it was scored from"]


# --- one driver per atlas ---------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from enformer_batch.lease import Lease
    from enformer_batch.store import OutputStore
    lease = Lease(OutputStore(sys.argv[1]), timeout_s=float(sys.argv[2])).acquire()
    print("held", flush=True)
    time.sleep(600)
    """
)


def test_a_second_driver_is_refused_while_the_first_holds_the_lease(ray_cluster, test_fasta, tmp_path, capsys):
    out = tmp_path / "atlas"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), "1.0"], env=child_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        first = json.loads((out / LEASE).read_text())
        time.sleep(0.6)  # a heartbeat every timeout/6 s
        assert json.loads((out / LEASE).read_text())["heartbeat"] > first["heartbeat"]
        time.sleep(1.0)  # past the holder's timeout: it keeps beating, so its lease holds however long it runs
        capsys.readouterr()
        code = cli_main(["predict", test_fasta, "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert f"--out {out} is in use by another predict (pid {holder.pid} on host " in err[0]
        assert not (out / MANIFEST).exists()
    finally:
        holder.kill()  # SIGKILL: the lease stays behind, its process gone
        holder.wait()
    assert json.loads((out / LEASE).read_text())["pid"] == holder.pid
    summary = run_and_validate(test_fasta, out, windows_per_part=6)
    assert summary.parts == 3
    assert f"took over the lease on {out} from pid {holder.pid}" in capsys.readouterr().err
    assert not (out / LEASE).exists()  # released at the end


def foreign_lease(store: OutputStore, heartbeat_age_s: float, timeout_s: float = 60.0) -> None:
    """A lease as a driver on another node writes it."""
    now = time.time()
    state = LeaseState(owner="other", host="node-b.internal", pid=4242, pid_start=None, acquired=now - 3600,
                       heartbeat=now - heartbeat_age_s, timeout_s=timeout_s)
    os.makedirs(store.root, exist_ok=True)
    with open(store.path(LEASE), "wb") as f:
        f.write(state.to_bytes())


def test_a_lease_from_another_node_is_taken_over_only_when_stale(tmp_path):
    store = OutputStore(str(tmp_path / "atlas"))
    foreign_lease(store, heartbeat_age_s=5)
    with pytest.raises(LeaseHeld, match=r"pid 4242 on host node-b.internal.*last heartbeat [5-9] s ago"):
        Lease(store, timeout_s=60).acquire()
    foreign_lease(store, heartbeat_age_s=61)
    messages = []
    lease = Lease(store, timeout_s=60, log=messages.append).acquire()
    try:
        (message,) = messages
        assert message.startswith(f"enformer-batch: took over the lease on {store.url} from pid 4242 on host "
                                  "node-b.internal, started ")
        assert re.search(r"last heartbeat 6\d s ago: no heartbeat for 6\d s \(timeout 60 s\)$", message), message
        assert json.loads(open(store.path(LEASE)).read())["pid"] == os.getpid()
    finally:
        lease.release()


def test_a_driver_whose_lease_was_taken_over_stops_writing_the_manifest(tmp_path):
    first_store, second_store = OutputStore(str(tmp_path / "atlas")), OutputStore(str(tmp_path / "atlas"))
    # The first driver stops renewing (a long pause, a partitioned node) and its lease goes stale.
    first = Lease(first_store, timeout_s=0.3, heartbeat_s=3600, log=lambda m: None).acquire()
    time.sleep(0.4)
    second = Lease(second_store, timeout_s=0.3, log=lambda m: None).acquire()
    try:
        first.renew()
        with pytest.raises(LeaseLost, match="was taken over; it is now held by pid"):
            first_store.write_manifest({"status": "running"})
        second_store.write_manifest({"status": "running"})
    finally:
        second.release()
        first.release()


def test_a_store_without_conditional_writes_gets_the_best_effort_lease(tmp_path):
    url = f"memory://lease-{tmp_path.name}/atlas"  # fsspec's in-memory store: neither link() nor If-Match
    first = Lease(OutputStore(url), timeout_s=60, settle_s=0.05).acquire()
    try:
        with pytest.raises(LeaseHeld, match=f"--out {url} is in use by another predict"):
            Lease(OutputStore(url), timeout_s=60, settle_s=0.05).acquire()
        first.renew()
        assert first._lost is None
    finally:
        first.release()
    assert not OutputStore(url).exists(LEASE)


# --- late writes ------------------------------------------------------------------------------------

LATE_WRITER = textwrap.dedent(
    """
    import sys
    from enformer_batch.store import OutputStore
    store, path, data = OutputStore(sys.argv[1]), sys.argv[2], open(sys.argv[3], "rb").read()
    print("ready", flush=True)
    sys.stdin.readline()  # frozen here, like a replica on a partitioned node, until the test lets it go
    store.publish(path, data)
    print("written", flush=True)
    """
)


def test_a_late_write_after_commit_is_detected_and_repaired_by_resume(ray_cluster, test_fasta, reference_atlas,
                                                                      tmp_path, capsys):
    out = copy_atlas(reference_atlas, tmp_path)
    summary = run_and_validate(test_fasta, out, **REFERENCE)  # the copy's parts are checked once, then trusted
    assert summary.resumed_parts == 3 and summary.units_computed == 0
    original = part_files(out)
    manifest = json.loads((out / MANIFEST).read_text())
    victim = next(p["path"] for p in manifest["parts"] if p["chrom"] == "chrA")

    # What a replica the driver gave up on had computed for that part: other values (another GPU's kernels),
    # same size, delivered after the part was recomputed and committed elsewhere.
    # Here: two tracks' values trade places, which keeps the file's size, so only the version token can tell.
    table = pq.read_table(out / victim)
    a, b = table.schema.get_field_index(table.column_names[2]), table.schema.get_field_index(table.column_names[3])
    swapped = table.set_column(a, table.schema.field(a), table.column(b))
    swapped = swapped.set_column(b, table.schema.field(b), table.column(a))
    late = tmp_path / "late.parquet"
    late.write_bytes(serialise_table(swapped))
    assert late.stat().st_size == (out / victim).stat().st_size
    writer = subprocess.Popen([sys.executable, "-c", LATE_WRITER, str(out), victim, str(late)], env=child_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    writer.stdin.write("go\n")
    writer.stdin.flush()
    assert writer.stdout.readline().strip() == "written" and writer.wait(30) == 0
    assert part_files(out)[victim] != original[victim]

    assert f"part {victim}: " in "\n".join(validate(str(out)).problems)
    capsys.readouterr()
    summary = run_and_validate(test_fasta, out, **REFERENCE)
    assert summary.resumed_parts == 2 and summary.units_computed == 3  # chrA's part only
    assert f"were rewritten after their commit (first: {victim}); recomputing them" in capsys.readouterr().err
    assert part_files(out) == original


def test_a_late_write_during_the_run_keeps_it_from_completing(ray_cluster, test_fasta, reference_atlas, tmp_path):
    victim = "chrom=chrA/part-000000-000003.parquet"
    table = pq.read_table(reference_atlas / victim)
    late = tmp_path / "late.parquet"
    late.write_bytes(serialise_table(table.set_column(2, table.schema.field(2), table.column(3))))
    out = tmp_path / "atlas"
    writer = subprocess.Popen([sys.executable, "-c", LATE_WRITER, str(out), victim, str(late)], env=child_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"

    def release_the_late_writer(record) -> None:
        if record.path == victim:  # committed: now the given-up replica's upload lands
            writer.stdin.write("go\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "written"

    with pytest.raises(RunError, match=rf"1 committed part\(s\) changed after their commit \({victim}: "):
        predict(PredictConfig(fasta=test_fasta, out=str(out), progress=False, **REFERENCE),
                on_part=release_the_late_writer)
    assert writer.wait(30) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["status"] == "running" and victim not in {p["path"] for p in manifest["parts"]}
    summary = run_and_validate(test_fasta, out, **REFERENCE)
    assert summary.units_computed == 3 and part_files(out) == part_files(reference_atlas)


# --- leftovers --------------------------------------------------------------------------------------

CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from enformer_batch.store import OutputStore
    os.replace = lambda *a: time.sleep(600)   # killed between writing the temporary file and renaming it
    OutputStore(sys.argv[1]).publish(sys.argv[2], b"x" * 100_000)
    """
)


def test_temporary_files_of_a_killed_writer_are_reported_and_removed_on_resume(ray_cluster, test_fasta,
                                                                                reference_atlas, tmp_path, capsys):
    out = copy_atlas(reference_atlas, tmp_path)
    victim = json.loads((out / MANIFEST).read_text())["parts"][0]["path"]
    writer = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(out), victim], env=child_env())
    directory = out / victim.split("/")[0]
    deadline = time.monotonic() + 60
    while not any(n.startswith("_tmp-") for n in os.listdir(directory)) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    (leftover,) = [n for n in os.listdir(directory) if n.startswith("_tmp-")]

    report = validate(str(out))
    assert report.ok  # invisible to readers: a note, not a defect
    # (A copied atlas also gets a note that its parts' version tokens changed, so their bytes were hashed.)
    assert (f"1 temporary file(s) of interrupted writes (first: {victim.split('/')[0]}/{leftover}); "
            "invisible to readers, removed by the next predict on this --out") in report.notes
    assert "note: 1 temporary file(s)" in report.table()
    assert read_atlas(out)["start"].size == sum(-(-c.length // 128) for c in TEST_GENOME)  # globs skip it

    capsys.readouterr()
    run_and_validate(test_fasta, out, **REFERENCE)
    assert "removed 1 temporary file(s) left by an interrupted run" in capsys.readouterr().err
    assert not any(n.startswith("_tmp-") for d in os.listdir(out) if d.startswith("chrom=")
                   for n in os.listdir(out / d))
    assert validate(str(out)).notes == []


# --- transient errors -------------------------------------------------------------------------------


class FakeClientError(Exception):
    """Shaped like botocore's ClientError, which s3fs wraps in OSError(EIO) when it gives up."""

    def __init__(self, code: str, status: int):
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


def wrapped(error: Exception, outer: Exception) -> Exception:
    outer.__cause__ = error
    return outer


@pytest.mark.parametrize("error, transient", [
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), True),
    (TimeoutError("read timed out"), True),
    (wrapped(FakeClientError("SlowDown", 503), OSError(errno.EBUSY, "SlowDown")), True),
    (wrapped(FakeClientError("InternalError", 500), OSError(errno.EIO, "We encountered an internal error")), True),
    (OSError(errno.ESTALE, "Stale file handle"), True),
    (FileNotFoundError(errno.ENOENT, "no such file"), False),
    (PermissionError(errno.EACCES, "denied"), False),
    (wrapped(FakeClientError("AccessDenied", 403), PermissionError("denied")), False),
    (GenomeError("chrA:0-10 returned 9 bases instead of 10"), False),
    (NonFiniteOutput([0]), False),
    (wrapped(ConnectionResetError(), RetriesExhausted("writing x failed 5 times")), False),
])
def test_which_errors_are_transient(error, transient):
    assert is_transient(error) is transient


def test_retries_are_bounded_and_permanent_errors_are_not_retried():
    calls, pauses, logged = [], [], []

    def flaky(fail: int, error: Exception):
        def fn():
            calls.append(1)
            if len(calls) <= fail:
                raise error
            return "ok"
        return fn

    policy = RetryPolicy(attempts=4, base_s=1.0, cap_s=3.0)
    assert with_retries(flaky(3, ConnectionResetError()), "part x", policy, pauses.append, logged.append) == "ok"
    assert len(calls) == 4 and len(pauses) == 3 and all(0.5 * c <= p <= c for p, c in zip(pauses, (1, 2, 3)))
    assert logged[0].startswith("enformer-batch: part x: ConnectionResetError") and "attempt 2 of 4" in logged[0]
    calls.clear()
    with pytest.raises(RetriesExhausted, match="part x failed 4 times with transient errors; last: TimeoutError"):
        with_retries(flaky(10, TimeoutError("slow")), "part x", policy, pauses.append, logged.append)
    assert len(calls) == 4
    calls.clear()
    with pytest.raises(FileNotFoundError):
        with_retries(flaky(10, FileNotFoundError("gone")), "part x", policy, pauses.append, logged.append)
    assert len(calls) == 1


class FlakyFasta(FastaSource):
    """A FASTA whose first opens fail the way a network file system does under load."""

    failures: list = []

    def open(self):
        if self.failures:
            raise self.failures.pop(0)
        return super().open()


def test_read_tasks_retry_transient_errors_only(test_fasta, capsys):
    """The engine's read stage (any mode's ``read``) retries transient errors and nothing else."""
    from enformer_batch.engine import read_inputs
    from enformer_batch.kinds.atlas import AtlasMode

    part = plan_selection({"chrB": None}, FastaSource(test_fasta).lengths(), ENFORMER, ENFORMER.output_span, 2)[0]
    expected = read_part(FastaSource(test_fasta), part, ENFORMER.input_length)
    FlakyFasta.failures = [ConnectionResetError(errno.ECONNRESET, "reset"), TimeoutError("read timed out")]
    codes = read_inputs(AtlasMode(FlakyFasta(test_fasta), ENFORMER.input_length), part)
    assert np.array_equal(codes.stack(), expected) and FlakyFasta.failures == []
    assert capsys.readouterr().err.count("retrying in") == 2
    FlakyFasta.failures = [GenomeError("bad bytes"), ConnectionResetError()]
    with pytest.raises(RunError, match="reading chrB window 0: bad bytes"):
        read_inputs(AtlasMode(FlakyFasta(test_fasta), ENFORMER.input_length), part)
    assert len(FlakyFasta.failures) == 1  # not retried


# --- readers see committed parts ----------------------------------------------------------------------


def test_readers_see_only_committed_parts_and_say_when_incomplete(ray_cluster, test_fasta, tmp_path, capsys):
    from enformer_batch import open_atlas

    out = tmp_path / "atlas"
    with pytest.raises(Interrupted):
        predict(PredictConfig(fasta=test_fasta, out=str(out), windows_per_part=1, workers=1, progress=False),
                on_part=interrupt_after(2))
    manifest = json.loads((out / MANIFEST).read_text())
    committed = {p["path"] for p in manifest["parts"]}
    on_disk = set(part_files(out))
    # A part written after the last commit (a crash between publish and commit, or a late write) is on disk
    # but in no manifest; make sure there is one.
    if not on_disk - committed:
        extra = next(p for p in on_disk if p in committed)
        manifest["parts"] = [p for p in manifest["parts"] if p["path"] != extra]
        (out / MANIFEST).write_text(json.dumps(manifest))
        committed.discard(extra)
    uncommitted = sorted(on_disk - committed)
    assert uncommitted

    atlas = open_atlas(str(out), allow_incomplete=True)
    assert not atlas.complete
    assert sorted(os.path.relpath(p, out) for p in atlas.part_urls()) == sorted(committed)
    assert atlas.completeness() == (f"atlas {out} is incomplete (manifest status 'running'): {len(committed)} of 6 "
                                    "parts committed; bins of the other parts are absent from what is read")
    glob = duckdb.sql(f"select count(*) from read_parquet('{out}/*/*.parquet', hive_partitioning=true)").fetchall()
    listed = duckdb.sql(f"select count(*) from read_parquet({atlas.part_urls()!r}, hive_partitioning=true)").fetchall()
    committed_rows = sum(p["rows"] for p in manifest["parts"])
    assert listed[0][0] == committed_rows < glob[0][0]  # the glob shows uncommitted rows; the part list does not
    queried = sum(atlas.query(c).num_rows for c in atlas.chroms)
    assert queried == committed_rows

    capsys.readouterr()
    assert cli_main(["query", str(out), "chrA:0-1000", "--allow-incomplete"]) == 0
    err = capsys.readouterr().err
    assert f"enformer-batch: warning: atlas {out} is incomplete" in err
