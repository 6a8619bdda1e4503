"""``predict-genes``: per-gene TSS and exon sums against enformer-pytorch on independently built windows and
hand-built gene records; end to end on Ray with Borzoi's stranded tracks (the strand rule), validate --genes,
resume and the command line."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
import torch

from enformer_batch import validate
from enformer_batch.annotation import read_annotation
from enformer_batch.cli import main
from enformer_batch.genome import FastaSource
from enformer_batch.inference import InferenceSettings, Predictor
from enformer_batch.kinds.genes import GeneMode, GenesConfig, gene_parts, predict_genes
from enformer_batch.windows import ENFORMER

from .reference import onehot, parse_fasta, variant_sequences
from .test_gene_variants import GENES
from .test_genes import gtf_text, oracle_bins


@pytest.fixture(scope="module")
def gtf(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("genes") / "genes.gtf.gz"
    import gzip

    with gzip.open(path, "wt") as f:
        f.write(gtf_text(GENES))
    return str(path)


def own_bins(gid: str, centre: int, geometry, flank: int = 1):
    _, _, _, strand, transcripts = GENES[gid]
    exons = [(s - 1, e) for ex in transcripts.values() for s, e in ex]
    tss = [min(s for s, _ in ex) - 1 if strand == "+" else max(e for _, e in ex) - 1 for ex in transcripts.values()]
    origin = centre - geometry.input_length // 2 + geometry.context
    b_g, t_g = oracle_bins(exons, tss, origin, geometry, flank)
    lo, hi = origin, origin + geometry.output_span
    bases = {p for a, b in exons for p in range(a, b)}
    return sorted(b_g), sorted(t_g), sum(lo <= p < hi for p in bases) / len(bases)


def test_gene_sums_equal_a_direct_computation(test_fasta, gtf):
    ep = pytest.importorskip("enformer_pytorch")
    from enformer_batch.loader import load_model

    loaded = load_model("demo")
    oracle = ep.Enformer.from_hparams(**{k: v for k, v in loaded.config.to_dict().items()
                                         if k not in ("architectures", "model_type")}).eval()
    oracle.load_state_dict(loaded.model.state_dict())
    genome = parse_fasta(test_fasta)
    lengths = FastaSource(test_fasta).lengths()
    annotation = read_annotation(gtf, lengths)
    predictor = Predictor(InferenceSettings(batch_size=2, dtype="float32"))
    mode = GeneMode(FastaSource(test_fasta), ENFORMER, 1)
    seen = []
    for part in gene_parts(annotation, lengths, 3):
        rows = mode.table(part, mode.infer(predictor, part, mode.read(part)), predictor.info).to_pylist()
        for row in rows:
            gid = row["gene_id"]
            _, _, chrom, strand, transcripts = GENES[gid]
            starts = [min(s for s, _ in ex) - 1 for ex in transcripts.values()]
            ends = [max(e for _, e in ex) - 1 for ex in transcripts.values()]
            centre = min(starts) if strand == "+" else max(ends)
            assert row["tss"] == centre and row["gene_strand"] == strand and part.chrom == chrom
            reference, _ = variant_sequences(genome[chrom], centre + 1, "", "")
            with torch.no_grad():
                R = oracle(torch.from_numpy(onehot(reference))[None], head="human").double().numpy()[0]
            b_g, t_g, fraction = own_bins(gid, centre, ENFORMER)
            assert row["exon_fraction"] == pytest.approx(fraction, rel=1e-6)
            for t, name in enumerate(predictor.info.track_names):
                for prefix, bins in (("tss", t_g), ("exon", b_g)):
                    want = R[bins, t].sum()
                    assert row[f"{prefix}:{name}"] == pytest.approx(want, rel=1e-4, abs=1e-5 * np.abs(R[:, t]).sum())
            seen.append(gid)
    assert sorted(seen) == ["G1", "G2", "G3", "G4", "G5"]  # G9's chromosome is not in the FASTA


def test_predict_genes_end_to_end_with_stranded_tracks(ray_cluster, test_fasta, gtf, tmp_path):
    """Borzoi's demo head pairs + and - CAGE/RNA tracks: a + gene's - tracks are null and the reverse."""
    out = tmp_path / "genes"
    config = GenesConfig(fasta=test_fasta, genes=gtf, out=str(out), model="demo-borzoi", rc=True, genes_per_part=2,
                         threads_per_worker=1, progress=False)
    summary = predict_genes(config)
    assert summary.units == 5 and summary.parts == 3  # chrA: 4 genes in 2 parts, chrB: 1
    assert any("chrZ (1)" in n for n in summary.notes)
    rows = duckdb.sql(f"select * from read_parquet('{out}/*/*.parquet', hive_partitioning=true) "
                      "order by chrom, tss").df().to_dict("records")
    assert [r["gene_id"] for r in rows] == ["G1", "G2", "G3", "G4", "G5"]
    for r in rows:
        plus, minus = r["exon:DEMOB01+"], r["exon:DEMOB01-"]
        if r["gene_strand"] == "+":
            assert not np.isnan(plus) and np.isnan(minus)
        else:
            assert np.isnan(plus) and not np.isnan(minus)
        assert not np.isnan(r["tss:DEMOB05"]) and r["tss:DEMOB05"] > 0  # unstranded: always
        assert 0 < r["exon_fraction"] <= 1
    assert [c for c in rows[0] if ":" in c][:2] == ["tss:DEMOB01+", "tss:DEMOB01-"]
    report = validate(str(out), fasta=test_fasta, inputs={"genes": gtf})
    assert report.ok, report.table()
    again = predict_genes(config)
    assert again.units_computed == 0 and again.resumed_parts == 3
    fewer = tmp_path / "fewer.gtf"
    fewer.write_text(gtf_text({k: v for k, v in GENES.items() if k != "G4"}))
    report = validate(str(out), inputs={"genes": str(fewer)})
    assert not report.ok and any("G4" in p for p in report.problems)


def test_predict_genes_command_line(ray_cluster, test_fasta, gtf, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["predict-genes", test_fasta, gtf, "--out", str(out), "--gene-types", "lncRNA", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "done: 1 genes" in capsys.readouterr().out
    assert main(["validate", str(out), "--genes", gtf]) == 0
    bad = main(["predict-genes", test_fasta, gtf, "--out", str(tmp_path / "x"), "--gene-types", "nothing"])
    assert bad != 0 and "no gene" in capsys.readouterr().err
