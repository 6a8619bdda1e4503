"""``enformer-batch serve``: the JSON API against the batch commands (gene effects against ``score-variants
--genes``), its bounds and access rules, and the page in a real (headless) browser."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from enformer_batch.gene_scores import GENE_SCORES
from enformer_batch.kinds.edits import Edit, EditsConfig, edits
from enformer_batch.kinds.mutagenesis import MutagenesisConfig, mutagenesis
from enformer_batch.kinds.scoring import SCORES
from enformer_batch.kinds.variants import VariantConfig, score_variants
from enformer_batch.serve.server import MAX_BODY_BYTES, ServeOptions, Server

from .reference import parse_fasta
from .test_genes import gtf_text

# One of each kind an EDITS.tsv row can be: SNV, deletion, insertion, replacement (chrA is sequence up to 60 kb).
EDITS = [
    ("snv", "chrA", 1000, 1001, "G"),
    ("del", "chrA", 3000, 3040, ""),
    ("ins", "chrA", 5000, 5000, "ACGTACGTAC"),
    ("swap", "chrB", 100, 110, "GGGGGGGGGG"),
]
MUTAGENESIS_REGION = ("chrA", 1200, 1202)
# Gene models the test server is started with (gene_id: name, type, chrom, strand, transcripts of 1-based exons).
GENES = {
    "G1": ("ONE", "protein_coding", "chrA", "+", {"t1a": [(19_001, 19_500), (25_001, 25_300)],
                                                  "t1b": [(19_401, 19_600), (25_101, 25_400)]}),
    "G2.3": ("TWO", "lncRNA", "chrA", "-", {"t2": [(33_001, 34_000), (36_001, 36_200)]}),
    "G3": ("NEAR", "protein_coding", "chrA", "-", {"t3": [(401, 900), (1_001, 1_500)]}),  # on the SNV
    "G4": ("FAR", "protein_coding", "chrA", "+", {"t4": [(250_001, 250_400)]}),  # out of every edit's range
    "G5": ("FIVE", "protein_coding", "chrB", "+", {"t5": [(2_001, 2_300)]}),
    "G6": ("FIVE", "protein_coding", "chrA", "+", {"t6": [(120_001, 120_300)]}),  # the name again, elsewhere
}


def call(server: Server, path: str, body=None, *, headers: dict | None = None, raw: bytes | None = None,
         timeout: float = 300) -> tuple[int, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}" if server.app.options.host == "127.0.0.1"
                                     else f"http://{server.app.options.host}:{server.port}{path}",
                                     data=data, headers=all_headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def genes_gtf(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("serve-genes") / "genes.gtf"
    path.write_text(gtf_text(GENES))
    return str(path)


@pytest.fixture(scope="module")
def server(test_fasta, genes_gtf):
    """A demo-model server with gene models on a free loopback port; one torch thread, as the batch runs compared
    with it use."""
    import torch

    threads = torch.get_num_threads()
    with Server(ServeOptions(fasta=test_fasta, port=0, threads=1, genes=genes_gtf)) as s:
        yield s
    torch.set_num_threads(threads)


def edit_body(row, **extra) -> dict:
    name, chrom, start, end, sequence = row
    return {"name": name, "chrom": chrom, "start": start, "end": end, "sequence": sequence, **extra}


def test_edit_and_mutagenesis_scores_equal_the_batch_commands(ray_cluster, server, test_fasta, tmp_path):
    import duckdb

    tsv = tmp_path / "edits.tsv"
    tsv.write_text("".join("\t".join(map(str, row)) + "\n" for row in EDITS))
    out = tmp_path / "edits"
    edits(EditsConfig(fasta=test_fasta, edits=str(tsv), out=str(out), scores=SCORES, threads_per_worker=1,
                      progress=False))
    batch = duckdb.sql(f"select * from read_parquet('{out}/*/*.parquet', hive_partitioning=true)").df()
    names = server.app.track_names
    columns = [f"{s}:{t}" for s in SCORES for t in names]
    assert set(columns) <= set(batch.columns)
    for row in EDITS:
        status, answer = call(server, "/api/edit", edit_body(row, scores=list(SCORES)))
        assert status == 200, answer
        want = batch[batch["name"] == row[0]].iloc[0]
        assert answer["status"] == want["status"] == "ok"
        assert list(answer["scores"]) == columns
        got = np.array([answer["scores"][c] for c in columns], np.float32)
        assert np.array_equal(got, want[columns].to_numpy(np.float32)), row[0]  # the same float32 bits
        # The plotted tracks: the window centred on start, as plot-edit draws it, and what the scores came from.
        bins, ref, alt = answer["bins"], np.array(answer["ref"][names[0]]), np.array(answer["alt"][names[0]])
        assert len(bins) == len(ref) == len(alt) == 896 and bins[1] - bins[0] == 128
        assert bins[0] == row[2] - 196_608 // 2 + (196_608 - 896 * 128) // 2
        assert np.isclose((alt - ref).astype(np.float64).sum(), answer["scores"][f"sad:{names[0]}"], rtol=1e-4)

    chrom, start, end = MUTAGENESIS_REGION
    out = tmp_path / "mutagenesis"
    mutagenesis(MutagenesisConfig(fasta=test_fasta, regions=f"{chrom}:{start}-{end}", out=str(out), scores=SCORES,
                                  threads_per_worker=1, progress=False))
    batch = duckdb.sql(f"select * from read_parquet('{out}/*/*.parquet') order by pos, alt").df()
    status, answer = call(server, "/api/mutagenesis", {"chrom": chrom, "start": start, "end": end,
                                                         "scores": list(SCORES), "tracks": names[:3]})
    assert status == 200, answer
    assert answer["pos"] == batch["pos"].tolist() and answer["alt"] == batch["alt"].tolist()
    assert answer["ref"] == batch["ref"].tolist() and len(answer["pos"]) == 3 * (end - start)
    for column, values in answer["scores"].items():
        assert np.array_equal(np.array(values, np.float32), batch[column].to_numpy(np.float32)), column


def test_gene_effects_equal_score_variants_genes(ray_cluster, server, test_fasta, genes_gtf, tmp_path):
    """An edit's gene effects are the rows ``score-variants --genes`` writes for the same allele (an SNV and a
    10-base replacement, each the VCF row of the EDITS.tsv row: ``pos = start + 1``, REF the FASTA's bases)."""
    import duckdb

    genome = parse_fasta(test_fasta)
    rows = [EDITS[0], EDITS[3]]
    vcf = tmp_path / "edits.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "".join(
        f"{chrom}\t{start + 1}\t{name}\t{genome[chrom][start:end]}\t{seq}\t.\t.\t.\n"
        for name, chrom, start, end, seq in rows))
    out = tmp_path / "variants"
    score_variants(VariantConfig(vcf=str(vcf), fasta=test_fasta, genes=genes_gtf, scores=GENE_SCORES, out=str(out),
                                 threads_per_worker=1, progress=False))
    batch = duckdb.sql(f"select * from read_parquet('{out}/*/*.parquet', hive_partitioning=true)").df()
    names = server.app.track_names
    columns = [f"{s}:{t}" for s in GENE_SCORES for t in names]
    for row in rows:
        status, answer = call(server, "/api/edit", edit_body(row, predictions=False))
        assert status == 200 and answer["status"] == "ok", answer
        want = batch[batch["id"] == row[0]]
        assert len(answer["genes"]) == len(want) > 0 and (want["status"] == "ok").all()
        assert [(g["gene_id"], g["gene_name"], g["strand"], g["tss_distance"]) for g in answer["genes"]] == \
            list(zip(want["gene_id"], want["gene_name"], want["gene_strand"], want["tss_distance"]))
        for gene, (_, expected) in zip(answer["genes"], want.iterrows()):
            assert list(gene["scores"]) == columns
            got = np.array([np.nan if v is None else v for v in gene["scores"].values()], np.float64)
            np.testing.assert_allclose(got, expected[columns].to_numpy(np.float64), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{row[0]} {gene['gene_id']}")
    snv = {g["gene_id"]: g for g in call(server, "/api/edit", edit_body(EDITS[0], predictions=False))[1]["genes"]}
    assert sorted(snv) == ["G1", "G2.3", "G3"]  # FAR is out of range, FIVE on chrB
    assert snv["G3"]["scores"][f"logsed:{names[0]}"] is not None  # the SNV's own bin is one of NEAR's exon bins
    # A subset of gene scores and tracks, as for the edit's own scores.
    status, answer = call(server, "/api/edit", edit_body(EDITS[0], predictions=False, tracks=names[:2],
                                                         gene_scores=["logsed"]))
    assert status == 200 and list(answer["genes"][0]["scores"]) == [f"logsed:{n}" for n in names[:2]]


def test_gene_lookup_and_bad_gene_requests(server):
    status, answer = call(server, "/api/gene?name=one")  # case-insensitive, by name
    assert status == 200 and answer["matches"] == 1, answer
    assert answer["genes"] == [{"gene_id": "G1", "gene_name": "ONE", "gene_type": "protein_coding", "chrom": "chrA",
                                "start": 19_000, "end": 25_400, "strand": "+", "tss": 19_000,
                                "tss_all": [19_000, 19_400]}]
    status, answer = call(server, "/api/gene?name=G2")  # a versioned gene_id, also without its version
    assert status == 200 and answer["genes"][0]["gene_name"] == "TWO" and answer["genes"][0]["tss"] == 36_199
    status, answer = call(server, "/api/gene?name=FIVE")  # one name, two genes: the FASTA's chromosome order
    assert status == 200 and [(g["gene_id"], g["chrom"]) for g in answer["genes"]] == [("G6", "chrA"), ("G5", "chrB")]
    status, tracks = call(server, "/api/tracks")
    assert tracks["genes"] == {"annotation": "genes.gtf", "genes": 6, "tss_flank": 1, "scores": list(GENE_SCORES)}
    for path, body, code, message in [
        ("/api/gene?name=NOPE", None, 404, "no gene named 'NOPE'"),
        ("/api/gene", None, 400, "give name="),
        ("/api/gene?name=" + "x" * 201, None, 400, "give name="),
        ("/api/gene?name=ONE", {}, 405, "not allowed"),
        ("/api/edit", edit_body(EDITS[0], gene_scores=["sad"]), 400, "'gene_scores' takes"),
    ]:
        status, answer = call(server, path, body)
        assert status == code and message in answer["error"], (path, status, answer)
    status, answer = call(server, "/api/gene?name=TWO")  # still serving
    assert status == 200 and answer["genes"][0]["gene_id"] == "G2.3"


def test_without_genes_there_are_no_gene_effects(test_fasta):
    with Server(ServeOptions(fasta=test_fasta, model="sim:rate=1000,tracks=2", port=0)) as s:
        status, answer = call(s, "/api/edit", edit_body(EDITS[0]))
        assert status == 200 and "genes" not in answer
        assert call(s, "/api/tracks")[1]["genes"] is None
        status, answer = call(s, "/api/gene?name=ONE")
        assert status == 400 and "--genes" in answer["error"]
        status, answer = call(s, "/api/edit", edit_body(EDITS[0], gene_scores=["logsed"]))
        assert status == 400 and "--genes" in answer["error"]


def test_the_model_options_of_the_batch_commands_reach_the_replicas(test_fasta):
    """--unsquash and --n-encoding, as score-variants and edits take them: without them a Borzoi server's gene
    effects would be on another scale than the batch table's."""
    import argparse

    from enformer_batch.serve import add_arguments, options_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = options_from_args(parser.parse_args([test_fasta, "--unsquash", "--n-encoding", "uniform", "--rc"]))
    settings = options.settings()
    assert (settings.unsquash, settings.n_encoding, settings.rc) == (True, "uniform", True)
    assert options_from_args(parser.parse_args([test_fasta])).settings().unsquash is False
    options = dataclasses.replace(options, model="sim:rate=1000,tracks=2", unsquash=False, port=0)
    with Server(options) as s:
        assert s.app.replicas.predictors[0].settings.n_encoding == "uniform"
        assert call(s, "/api/tracks")[1]["options"] == {"rc": True, "shifts": [0], "unsquash": False,
                                                        "n_encoding": "uniform"}


def test_gene_options_are_checked_before_the_model_loads(test_fasta, tmp_path, capsys):
    from enformer_batch.cli import EXIT_BAD_INPUT, main

    assert main(["serve", test_fasta, "--tss-flank", "2"]) == EXIT_BAD_INPUT
    assert "--tss-flank and --gene-types need --genes GTF" in capsys.readouterr().err
    bad = tmp_path / "bad.gtf"
    bad.write_text('chrA\tt\texon\t10\t5\t.\t+\t.\tgene_id "G"; transcript_id "T";\n')
    assert main(["serve", test_fasta, "--genes", str(bad)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{bad} line 1: exon start..end must satisfy" in err and len(err.strip().splitlines()) == 1


def test_edits_waiting_at_one_position_go_together_with_the_same_scores(server):
    replicas = server.app.replicas
    edits_at = [Edit(0, base, "chrA", 1500, 1501, base) for base in "ACG"]
    alone = [replicas.submit_edit(e).result(timeout=300) for e in edits_at]
    before = replicas.load()
    busy = replicas.submit_window("chrA", 30_000)  # holds the replica while the three edits arrive
    together = [replicas.submit_edit(e) for e in edits_at]
    busy.result(timeout=300)
    together = [f.result(timeout=300) for f in together]
    after = replicas.load()
    assert (after["edits"] - before["edits"], after["edit_calls"] - before["edit_calls"]) == (3, 1)
    for a, t in zip(alone, together):  # one reference, one device batch: the same bits on this CPU
        assert np.array_equal(a.scores, t.scores) and np.array_equal(a.alt, t.alt)


def test_the_other_endpoints(server):
    status, health = call(server, "/api/health")
    assert status == 200 and health["status"] == "ok" and health["replicas"] == 1
    status, tracks = call(server, "/api/tracks")
    assert status == 200 and [t["name"] for t in tracks["tracks"]] == server.app.track_names
    assert tracks["scores"] == list(SCORES) and tracks["chromosomes"]["chrB"] == 130_000
    status, seq = call(server, "/api/sequence?region=chrB:4995-5005")
    assert status == 200 and seq["sequence"][5:] == "NNNNN" and set(seq["sequence"][:5]) <= set("ACGT")
    # No atlas: the region's bins, predicted now from the window centred on it.
    status, view = call(server, "/api/atlas?region=chrA:1000-2000&tracks=" + ",".join(server.app.track_names[:2]))
    assert status == 200 and view["source"] == "predicted" and list(view["values"]) == server.app.track_names[:2]
    assert view["bins"][0] <= 1000 < view["bins"][0] + 128 and view["bins"][-1] < 2000 <= view["bins"][-1] + 128
    assert all(v is not None and v > 0 for v in view["values"][server.app.track_names[0]])


def test_the_atlas_view_reads_an_atlas(reference_atlas, test_fasta):
    from enformer_batch.atlas import open_atlas

    with Server(ServeOptions(fasta=test_fasta, port=0, atlas=str(reference_atlas))) as s:
        status, view = call(s, "/api/atlas?region=chrB:1000-1500&tracks=DEMO0000002")
        assert status == 200 and view["source"] == "atlas", view
    want = open_atlas(str(reference_atlas)).query("chrB", 1000, 1500, tracks=["DEMO0000002"])
    assert view["bins"] == want.column("start").to_pylist()
    assert np.array_equal(np.array(view["values"]["DEMO0000002"], np.float32),
                          want.column("DEMO0000002").to_numpy().astype(np.float32))


BAD_REQUESTS = [
    ("/api/edit", {"chrom": "chrZ", "start": 1, "end": 2, "sequence": "A"}, 400, "not in the FASTA"),
    ("/api/edit", {"chrom": "chrA", "start": 10, "end": 5, "sequence": "A"}, 400, "needs 0 <= start <= end"),
    ("/api/edit", {"chrom": "chrA", "start": 10, "end": 300_008, "sequence": ""}, 400, "needs 0 <= start"),
    ("/api/edit", {"chrom": "chrA", "start": 10, "end": 11, "sequence": "AXA"}, 400, "must be bases"),
    ("/api/edit", {"chrom": "chrA", "start": 10, "end": 10, "sequence": ""}, 400, "changes nothing"),
    ("/api/edit", {"chrom": "chrA", "start": "10", "end": 11, "sequence": "A"}, 400, "must be an integer"),
    ("/api/edit", {"chrom": "chrA", "start": 10, "end": 20_011, "sequence": ""}, 400, "at most 10,000 bp"),
    ("/api/edit", {"chrom": "chrA", "start": 10, "end": 11, "sequence": "A", "tracks": ["nope"]}, 400,
     "unknown track"),
    ("/api/edit", {"chrom": "chrA", "start": 10, "end": 11, "sequence": "A", "scores": ["max"]}, 400,
     "subset of sad"),
    ("/api/edit", {"chrom": "chrA", "start": 10, "end": 11, "sequence": "A", "name": "a\tb"}, 400, "without tabs"),
    ("/api/edit", [1, 2], 400, "a JSON object"),
    ("/api/edit", b"{not json", 400, "not JSON"),
    ("/api/edit", b"x" * (MAX_BODY_BYTES + 1), 413, "at most"),
    ("/api/mutagenesis", {"chrom": "chrA", "start": 1000, "end": 1201}, 400, "at most 200 bp"),
    ("/api/sequence?region=chrA:0-2001", None, 400, "at most 2,000 bp"),
    ("/api/sequence?region=chrA", None, 400, "needs a range"),
    ("/api/sequence?region=chrA:9-x", None, 400, ""),
    ("/api/atlas?region=chrA:0-200000", None, 400, "at most 114,688 bp"),
    ("/api/atlas", None, 400, "give region="),
    ("/api/nothing", None, 404, "no such endpoint"),
    ("/api/health", {}, 405, "not allowed"),
    ("/../../etc/passwd", None, 404, "no such page"),
    ("/static/../server.py", None, 404, "no such page"),
    ("/server.py", None, 404, "no such page"),
]


def test_bad_requests_get_an_error_and_the_server_keeps_serving(server):
    for path, body, code, message in BAD_REQUESTS:
        raw = body if isinstance(body, bytes) else None
        status, answer = call(server, path, None if raw else body, raw=raw)
        assert status == code and message in answer["error"], (path, body, status, answer)
    status, answer = call(server, "/api/edit", {"chrom": "chrA", "start": 10, "end": 11, "sequence": "A"},
                          headers={"Content-Type": "text/plain"})
    assert status == 415  # a cross-site form cannot send JSON without a CORS preflight, which nothing answers
    status, answer = call(server, "/api/health", headers={"Host": "attacker.example:8765"})
    assert status == 403 and "not this loopback server" in answer["error"]  # DNS rebinding
    status, answer = call(server, "/api/edit", edit_body(EDITS[0], tracks=["DEMO0000001"]))
    assert status == 200 and answer["status"] == "ok" and list(answer["scores"]) == ["sad:DEMO0000001"]


def test_a_full_queue_answers_429_at_once(test_fasta):
    # A simulated accelerator at 1 window/s: an edit (reference + alternate) holds the replica for 2 s.
    options = ServeOptions(fasta=test_fasta, model="sim:rate=1,tracks=3", port=0, queue_length=1)
    with Server(options) as s:
        results: list = []

        def post() -> None:
            results.append(call(s, "/api/edit", edit_body(EDITS[0])))

        def wait_for(running: int, queued: int) -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                load = call(s, "/api/health")[1]
                if (load["running"], load["queued"]) == (running, queued):
                    return
                time.sleep(0.02)
            raise AssertionError(f"the server never had {running} running and {queued} queued: {load}")

        first = threading.Thread(target=post)
        first.start()
        wait_for(1, 0)
        second = threading.Thread(target=post)
        second.start()
        wait_for(1, 1)
        started = time.monotonic()
        status, answer = call(s, "/api/edit", edit_body(EDITS[1]))
        assert status == 429 and "already waiting" in answer["error"]
        assert time.monotonic() - started < 1.0  # refused at once, not after a wait
        first.join()
        second.join()
        assert [r[0] for r in results] == [200, 200]
        assert call(s, "/api/edit", edit_body(EDITS[1]))[0] == 200  # room again


def test_off_the_default_loopback_the_token_is_required(test_fasta):
    options = ServeOptions(fasta=test_fasta, model="sim:rate=1000,tracks=2", host="127.0.0.2", port=0)
    try:
        s = Server(options)
    except OSError as e:  # pragma: no cover - a system whose loopback is only 127.0.0.1
        pytest.skip(f"cannot bind 127.0.0.2: {e}")
    with s.start():
        token = s.app.options.token
        assert token and len(token) >= 20  # made up at start, as nobody gave one
        assert call(s, "/api/health")[0] == 401
        assert call(s, "/api/health", headers={"Authorization": "Bearer nope"})[0] == 403
        assert call(s, "/api/edit", edit_body(EDITS[0]))[0] == 401
        status, answer = call(s, "/api/health", headers={"Authorization": f"Bearer {token}"})
        assert status == 200 and answer["status"] == "ok"
        assert call(s, f"/api/health?token={token}")[0] == 200  # the page's link carries it


def test_the_command_prints_its_token_and_serves(test_fasta, genes_gtf):
    """``enformer-batch serve --host`` off the default loopback, no --token: one is made up, printed, required; the
    gene models of --genes are counted at start."""
    import re
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    process = subprocess.Popen([sys.executable, "-m", "enformer_batch.cli", "serve", test_fasta, "--model",
                                "sim:rate=1000,tracks=2", "--host", "127.0.0.2", "--port", "0", "--genes", genes_gtf],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "open http" in line:
                break
        text = "".join(lines)
        if "Cannot assign requested address" in text:  # pragma: no cover - a loopback of 127.0.0.1 only
            pytest.skip("cannot bind 127.0.0.2")
        assert "serve: annotation genes.gtf: 6 genes on 2 chromosome(s) from 11 exon lines" in text, text
        token = re.search(r"token (\S+) \(send", text).group(1)
        url = re.search(r"open (http://127\.0\.0\.2:\d+/)\?token=(\S+)", text)
        assert url and url.group(2) == token, text
        health = url.group(1) + "api/health"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(health, timeout=30)
        assert refused.value.code == 401
        request = urllib.request.Request(health, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["status"] == "ok"
        with urllib.request.urlopen(url.group(1), timeout=30) as response:  # the page: no data, no token needed
            page = response.read().decode()
        assert "vendor/uPlot.iife.min.js" in page and response.headers["Content-Type"].startswith("text/html")
    finally:
        process.terminate()
        process.wait(timeout=30)


# --- the page in a real browser ------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def browser_or_skip(user_data_dir):
    """A headless Chromium driven by selenium; skipped only off CI where it cannot be installed (not root)."""
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if not CHROMIUM or not CHROMEDRIVER:
        missing.append("Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    if missing:
        message = "the browser test needs " + " and ".join(missing) + "; `make browser` installs them as root"
        if os.environ.get("CI") == "true" or os.geteuid() == 0:
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1500,1300", "--force-device-scale-factor=1",
                 f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def test_the_page_in_a_real_browser(server, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    user_data = tmp_path / "chromium-profile"
    user_data.mkdir()
    driver = browser_or_skip(user_data)
    try:
        wait = WebDriverWait(driver, 240)
        driver.get(f"http://127.0.0.1:{server.port}/?region=chrA:0-12000")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(By.ID, "error").text
        # The region view: the bins of chrA:0-12000 (0, 128, ..., 11904), predicted now, drawn by uPlot.
        assert driver.execute_script("return window.serveState.regionPlot.data[0]") == list(range(0, 12000, 128))

        # Type a deletion into the form.
        for field, value in (("edit-name", "del40"), ("edit-chrom", "chrA"), ("edit-start", "1200"),
                             ("edit-end", "1240"), ("edit-sequence", "")):
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        driver.find_element(By.ID, "edit-submit").click()
        wait.until(lambda d: d.find_element(By.ID, "scores").get_attribute("data-edit") == "del40")
        assert driver.find_element(By.ID, "edit-plot").get_attribute("data-edit") == "del40"
        assert driver.execute_script("return window.serveState.editPlot.data[0].length") == 896
        shown = {td.get_attribute("data-key"): float(td.get_attribute("data-value"))
                 for td in driver.find_elements(By.CSS_SELECTOR, "#scores td[data-key]")}
        status, answer = call(server, "/api/edit", {"chrom": "chrA", "start": 1200, "end": 1240, "sequence": "",
                                                    "scores": list(SCORES), "tracks": server.app.track_names[:3]})
        assert status == 200 and shown == answer["scores"]  # every cell the API's value, to the bit

        # Click a base: an SNV of it, scored at once.
        base = driver.find_element(By.CSS_SELECTOR, '#sequence span[data-pos="1210"]')
        base.click()
        wait.until(lambda d: (d.find_element(By.ID, "scores").get_attribute("data-edit") or "").startswith(
            "snv_chrA_1211_"))
        assert "edited" in driver.find_element(By.CSS_SELECTOR, '#sequence span[data-pos="1210"]').get_attribute(
            "class")
        # Another track: the region and the last edit are drawn again for it, and the page's edits stay as they were.
        driver.find_element(By.CSS_SELECTOR, '#track-picker input[value="DEMO0000004"]').click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#scores td[data-key="sad:DEMO0000004"]'))
        wait.until(lambda d: len(d.execute_script("return window.serveState.regionPlot.series")) == 5)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#edits-list tr")) == 2
        # A small mutagenesis heat map of a shift-clicked selection.
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        for pos in (1200, 1203):
            ActionChains(driver).key_down(Keys.SHIFT).click(driver.find_element(
                By.CSS_SELECTOR, f'#sequence span[data-pos="{pos}"]')).key_up(Keys.SHIFT).perform()
        assert driver.find_element(By.ID, "mut-start").get_attribute("value") == "1200"
        assert driver.find_element(By.ID, "mut-end").get_attribute("value") == "1204"
        driver.find_element(By.ID, "mut-submit").click()
        wait.until(lambda d: d.find_element(By.ID, "heat").get_attribute("data-cells") == "12")

        # The page's edits as an EDITS.tsv for the batch command.
        tsv = driver.execute_script("return window.serveEditsTsv()")
        rows = [line.split("\t") for line in tsv.splitlines() if not line.startswith("#")]
        assert rows[0] == ["del40", "chrA", "1200", "1240", ""] and rows[1][0].startswith("snv_chrA_1211_")

        # A gene by name: the region around it, the strip on its TSS; a base clicked there, and the gene-effects
        # table holds the API's values for the genes in range, largest |logSED| first.
        driver.find_element(By.ID, "gene-name").send_keys("one")
        driver.find_element(By.ID, "gene-submit").click()
        wait.until(lambda d: d.find_element(By.ID, "gene-form").get_attribute("data-gene") == "G1")
        assert driver.find_element(By.ID, "region").get_attribute("value") == "chrA:16952-27448"
        assert driver.execute_script("return window.serveState.regionPlot.data[0][0]") == 16_896
        driver.find_element(By.CSS_SELECTOR, '#sequence span[data-pos="19005"]').click()
        wait.until(lambda d: (d.find_element(By.ID, "gene-effects").get_attribute("data-edit") or "").startswith(
            "snv_chrA_19006_"))
        edit = driver.execute_script("const e = window.serveState.lastEdit; return [e.chrom, e.start, e.end, "
                                     "e.sequence, Object.keys(e.scores)]")
        tracks = sorted({key.split(":", 1)[1] for key in edit[4]})
        status, answer = call(server, "/api/edit", {"chrom": edit[0], "start": edit[1], "end": edit[2],
                                                    "sequence": edit[3], "tracks": tracks, "predictions": False})
        assert status == 200 and edit[:3] == ["chrA", 19_005, 19_006]
        assert {g["gene_id"] for g in answer["genes"]} == {"G1", "G2.3", "G3"}

        def gene_table(track: str) -> None:
            """The table shows logSED on ``track``: the API's value for every gene in range, largest |value| first."""
            wait.until(lambda d: d.find_element(By.ID, "gene-effects").get_attribute("data-key") == f"logsed:{track}")
            rows = driver.find_elements(By.CSS_SELECTOR, "#gene-effects tbody tr")
            shown = [(tr.get_attribute("data-gene"), tr.find_element(By.CSS_SELECTOR, "td[data-key]")) for tr in rows]
            want = {g["gene_id"]: g["scores"][f"logsed:{track}"] for g in answer["genes"]}
            got = {gene: float(td.get_attribute("data-value")) for gene, td in shown}
            assert got == want, track  # the API's float64 to the bit
            assert [abs(want[gene]) for gene, _ in shown] == sorted((abs(v) for v in want.values()), reverse=True)

        gene_table("DEMO0000001")  # the first of the edit's tracks
        Select(driver.find_element(By.ID, "gene-track")).select_by_value("DEMO0000003")
        gene_table("DEMO0000003")
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    assert image.shape[0] >= 900 and image.shape[1] >= 1400
    assert image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 200  # drawn, not blank
    target = os.environ.get("ENFORMER_BATCH_SCREENSHOT")  # e.g. docs/serve.png for the README
    if target:
        with open(target, "wb") as f:
            f.write(png)
