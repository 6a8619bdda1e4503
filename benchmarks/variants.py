"""Variant scoring throughput: a naive user loop vs score-variants, side by side on the same VCF and model.

    python benchmarks/variants.py              # 48 variants on the demo genome, demo model
    python benchmarks/variants.py --variants 16   # smoke test

The VCF is what fine-mapping and GWAS follow-ups look like: credible sets of nearby variants (clusters of 8
positions within 2 kb), some multi-allelic. Rows:

* naive loop: pyfaidx slice → build the ref and alt strings as the contract says → one-hot in numpy →
  enformer-pytorch forward at batch 1 for each (2 forwards per variant) → SAD in numpy.
* score-variants: ``enformer_batch.score_variants`` on a local Ray cluster started beforehand (actor start-up
  and model load included), exact centring: alleles at one position share their reference.
* score-variants --group-bp 2000: each cluster shares one reference window.
* score-variants --genes: exact centring with gene scores (``sad`` and ``logsed``) against a synthetic GTF of
  two-transcript genes every 15 kb (a window then holds about eight genes, as a gene-dense stretch of a human
  chromosome does); the cost of the gene rows is its time against the plain score-variants row, and, less at
  the mercy of the machine's load, the median ratio of ``--pairs`` interleaved runs of the two.

Also printed: model inputs per variant, and how far --group-bp's SAD moves from exact centring on this model
(median |Δ| relative to the median |SAD|; the demo model's weights are random, so this is an upper-bound
illustration, not a property of trained models).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from _gtf import write_gtf  # noqa: E402  (benchmarks/, the script's own directory)

INPUT = 196_608
ONEHOT = np.zeros((256, 4), np.float32)
for _i, _b in enumerate("ACGT"):
    ONEHOT[ord(_b), _i] = ONEHOT[ord(_b.lower()), _i] = 1.0


def write_vcf(path: str, fasta: str, n: int, seed: int = 0) -> None:
    import pyfaidx

    rng = np.random.default_rng(seed)
    genome = pyfaidx.Fasta(fasta, as_raw=True)
    seq = str(genome["chr1"][:])
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    written = 0
    while written < n:
        start = int(rng.integers(100_000, len(seq) - 100_000))
        for pos in sorted(rng.choice(np.arange(start, start + 2_000), 8, replace=False)):
            ref = seq[pos - 1].upper()
            if ref not in "ACGT" or written >= n:
                continue
            others = [b for b in "ACGT" if b != ref]
            alts = others[:2] if rng.random() < 0.25 else others[:1]
            alts = alts[: n - written]
            lines.append(f"chr1\t{pos}\t.\t{ref}\t{','.join(alts)}\t.\t.\t.")
            written += len(alts)
    Path(path).write_text("\n".join(lines) + "\n")


def naive_loop(fasta: str, vcf: str, reference_model) -> tuple[float, np.ndarray]:
    import pyfaidx
    import torch

    genome = pyfaidx.Fasta(fasta, as_raw=True)
    length = len(genome["chr1"])
    sads = []
    t = time.perf_counter()
    for line in open(vcf):
        if line.startswith("#"):
            continue
        chrom, pos, _, ref, alts = line.split("\t")[:5]
        p = int(pos) - 1
        lo, hi = p - INPUT // 2, p + INPUT // 2 + 64
        window = "N" * max(0, -lo) + str(genome[chrom][max(lo, 0) : min(hi, length)]) + "N" * max(0, hi - length)
        ref_seq = window[:INPUT]
        for alt in alts.split(","):
            left = window[: INPUT // 2]
            alt_seq = (left + alt + window[INPUT // 2 + len(ref) :])[:INPUT]
            preds = []
            for s in (ref_seq, alt_seq):
                x = torch.from_numpy(ONEHOT[np.frombuffer(s.encode(), np.uint8)])[None]
                with torch.no_grad():
                    preds.append(reference_model(x, head="human")[0].double().numpy())
            sads.append((preds[1] - preds[0]).sum(0))
    return time.perf_counter() - t, np.asarray(sads)


def gene_parts(fasta: str, vcf: str, gtf: str, repeats: int = 5) -> list[tuple[str, float]]:
    """What --genes adds per window and per allele, each timed in this process against a demo forward pass,
    interleaved ``repeats`` times (medians): the host's masks of a window (``window_genes``) and the device's
    reduction of one allele (``gene_scores``, sad/logsed's logsed and sed) at the demo's tracks and at
    Enformer's 5,313."""
    import torch

    from enformer_batch.annotation import read_annotation
    from enformer_batch.gene_scores import gene_scores, window_genes, window_origin
    from enformer_batch.genome import FastaSource, read_codes
    from enformer_batch.inference import InferenceSettings, Predictor
    from enformer_batch.vcf import read_rows
    from enformer_batch.windows import ENFORMER

    source = FastaSource(fasta)
    annotation = read_annotation(gtf, source.lengths())
    positions = sorted({row.pos for row in read_rows(vcf)})
    predictor = Predictor(InferenceSettings(model="demo", batch_size=1, dtype="float32"))
    codes = read_codes(source.open(), "chr1", source.lengths()["chr1"], 100_000, 100_000 + ENFORMER.input_length)[None]
    tracks = len(predictor.info.track_names)
    timings: dict[str, list[float]] = {}

    def timed(label: str, fn, per: int = 1) -> None:
        t = time.perf_counter()
        fn()
        timings.setdefault(label, []).append((time.perf_counter() - t) / per * 1e3)

    windows = []
    for _ in range(repeats):
        timed("forward pass, demo model, one window (batch 1)", lambda: predictor.predict(codes))
        timed("host: gene masks of one window (window_genes)", lambda: windows.extend(
            window_genes(annotation.on("chr1"), window_origin(p - 1, ENFORMER), ENFORMER) for p in positions),
            per=len(positions))
        window = max(windows, key=len)
        for t in (tracks, 5313):
            ref, alt = torch.rand(ENFORMER.output_bins, t), torch.rand(1, ENFORMER.output_bins, t)
            exon, tss = torch.tensor(window.exon_mask), torch.tensor(window.tss_mask)
            timed(f"device: gene scores of one allele, {len(window)} genes x {t:,} tracks",
                  lambda r=ref, a=alt, e=exon, m=tss: gene_scores(r, a, e, m, ("logsed", "sed")))
    return [(label, float(np.median(v))) for label, v in timings.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=int, default=48)
    parser.add_argument("--pairs", type=int, default=3, help="interleaved (score-variants, --genes) pairs after "
                        "the table, for the cost of --genes as a median of paired ratios (0: none)")
    args = parser.parse_args()

    # Imported here, not at the top, so that --help answers without loading torch.
    import duckdb
    import enformer_pytorch
    import ray
    import torch

    from enformer_batch import VariantConfig, score_variants
    from enformer_batch.demo import DemoChrom, write_demo_genome
    from enformer_batch.loader import load_model

    work = tempfile.mkdtemp(prefix="bench-variants-")
    fasta = write_demo_genome(os.path.join(work, "g.fa"), (DemoChrom("chr1", 1_000_000),))
    vcf = os.path.join(work, "calls.vcf")
    write_vcf(vcf, fasta, args.variants)
    torch.set_num_threads(os.cpu_count() or 1)
    loaded = load_model("demo")
    reference = enformer_pytorch.Enformer.from_hparams(
        **{k: v for k, v in loaded.config.to_dict().items() if k not in ("architectures", "model_type")}).eval()
    reference.load_state_dict(loaded.model.state_dict())
    naive_s, naive_sad = naive_loop(fasta, vcf, reference)

    ray.init(num_cpus=os.cpu_count(), object_store_memory=200 * 2**20, include_dashboard=False,
             logging_level="ERROR")
    rows = {}
    for group_bp in (0, 2_000):
        out = os.path.join(work, f"scores-{group_bp}")
        t = time.perf_counter()
        summary = score_variants(VariantConfig(vcf=vcf, fasta=fasta, out=out, group_bp=group_bp, batch_size=4,
                                               progress=False))
        seconds = time.perf_counter() - t
        sad = duckdb.sql(f"select * exclude (chrom, pos, id, ref, alt, status) from "
                         f"read_parquet('{out}/*/*.parquet', hive_partitioning=true) order by pos, alt").fetchnumpy()
        rows[group_bp] = (seconds, summary, np.stack([np.asarray(v, float) for v in sad.values()], axis=1))
    gtf = os.path.join(work, "genes.gtf")
    write_gtf(gtf, 1_000_000)
    t = time.perf_counter()
    genes_summary = score_variants(VariantConfig(vcf=vcf, fasta=fasta, out=os.path.join(work, "scores-genes"),
                                                 genes=gtf, scores=("sad", "logsed"), batch_size=4, progress=False))
    genes_seconds = time.perf_counter() - t
    # One run of each is at the mercy of the machine's load between them: pairs run back to back, alternating
    # which goes first, and the median of their ratios is the cost of --genes.
    ratios = []
    for k in range(args.pairs):
        timed = {}
        for genes in ((None, gtf) if k % 2 == 0 else (gtf, None)):
            t = time.perf_counter()
            score_variants(VariantConfig(vcf=vcf, fasta=fasta, out=os.path.join(work, f"pair-{k}-{genes is not None}"),
                                         genes=genes, scores=("sad", "logsed") if genes else ("sad",), batch_size=4,
                                         progress=False))
            timed[genes is not None] = time.perf_counter() - t
        ratios.append(timed[True] / timed[False])
    ray.shutdown()

    n = len(naive_sad)
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n{n} variants ({args.variants} requested), demo model, {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__}, load average at the end {load}\n")
    print("| run | seconds | variants/s | model inputs per variant | vs naive |")
    print("|---|---|---|---|---|")
    print(f"| naive loop (enformer-pytorch, batch 1) | {naive_s:.1f} | {n / naive_s:.2f} | 2.00 | 1.00x |")
    for group_bp, (seconds, summary, _) in rows.items():
        label = "score-variants" + (f" --group-bp {group_bp}" if group_bp else "")
        print(f"| {label} | {seconds:.1f} | {n / seconds:.2f} | {summary.sequences / n:.2f} | "
              f"{naive_s / seconds:.2f}x |")
    gene_rows = genes_summary.rows
    print(f"| score-variants --genes (sad,logsed; {gene_rows} rows) | {genes_seconds:.1f} | {n / genes_seconds:.2f} | "
          f"{genes_summary.sequences / n:.2f} | {naive_s / genes_seconds:.2f}x |")
    print(f"\n--genes costs {100 * (genes_seconds / rows[0][0] - 1):+.0f} % of score-variants' time on these variants"
          " (the two rows above, run minutes apart)")
    if ratios:
        print(f"--genes / plain over {len(ratios)} interleaved pairs: median {np.median(ratios):.3f} "
              f"(each: {', '.join(f'{r:.3f}' for r in ratios)})")
    print("\nWhat --genes adds, timed in one process against a forward pass (median of 5, interleaved):\n")
    print("| step | ms |\n|---|---|")
    for label, ms in gene_parts(fasta, vcf, gtf):
        print(f"| {label} | {ms:.2f} |")
    exact, grouped = rows[0][2], rows[2_000][2]  # both in (pos, alt) order
    moved = np.median(np.abs(grouped - exact)) / np.median(np.abs(exact))
    corr = np.corrcoef(exact.ravel(), grouped.ravel())[0, 1]
    print(f"\n--group-bp 2000 vs exact centring (demo model, random weights): median |ΔSAD| / median |SAD| = "
          f"{moved:.2f}, Pearson r = {corr:.3f}")


if __name__ == "__main__":
    main()
