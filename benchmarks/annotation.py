"""Peak memory and time of reading a GENCODE-sized GTF (``annotation.read_annotation``), on a synthetic file.

    python benchmarks/annotation.py            # GENCODE-sized: 62,700 genes, ~250,000 transcripts, ~1.6 M exons
    python benchmarks/annotation.py --quick    # 2,000 genes

The file mimics GENCODE's human GTF (v44: 62,700 genes, 252,835 transcripts, 1,649,711 exon lines, 1.5 GB):
gene, transcript, exon, CDS, UTR and codon lines with GENCODE's twenty-odd attributes, about as many bytes per
line. It is written under TMPDIR (plain text, or gzip with --gzip) and read in a fresh child process, whose
peak resident memory (``ru_maxrss``) is printed beside its resident memory after the imports, before reading:
the difference is what reading the annotation costs. The file is removed afterwards.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
from enformer_batch.annotation import read_annotation
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
a = read_annotation(sys.argv[1], {f"chr{c}": 250_000_000 for c in list(range(1, 23)) + ["X", "Y"]})
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"genes": a.genes, "exon_lines": a.exon_lines, "lines": a.lines, "seconds": seconds,
                  "base_kib": base, "peak_kib": peak}))
"""


def write_gtf(path: str, genes: int, seed: int = 0, compress: bool = False) -> None:
    """GENCODE-like lines: ~4 transcripts per gene, ~6.5 exons per transcript, CDS/UTR/codon lines beside them."""
    rng = random.Random(seed)
    opener = gzip.open if compress else open
    with opener(path, "wt") as f:
        f.write("##description: synthetic GENCODE-like annotation\n##provider: benchmark\n")
        chroms = [f"chr{c}" for c in list(range(1, 23)) + ["X", "Y"]]
        for g in range(genes):
            chrom = chroms[g * len(chroms) // genes]
            strand = rng.choice("+-")
            start = 10_000 + (g % (genes // len(chroms) + 1)) * 3_000
            gid = f"ENSG{g:011d}.{rng.randint(1, 20)}"
            gene_attrs = (f'gene_id "{gid}"; gene_type "protein_coding"; gene_name "GENE{g}"; level 2; '
                          f'hgnc_id "HGNC:{g}"; havana_gene "OTTHUMG{g:011d}.1";')
            out = [f"{chrom}\tHAVANA\tgene\t{start}\t{start + 2_500}\t.\t{strand}\t.\t{gene_attrs}\n"]
            for t in range(rng.choice((1, 2, 3, 4, 4, 5, 6, 7))):
                tid = f"ENST{g:09d}{t:02d}.{rng.randint(1, 9)}"
                attrs = (f'gene_id "{gid}"; transcript_id "{tid}"; gene_type "protein_coding"; gene_name '
                         f'"GENE{g}"; transcript_type "protein_coding"; transcript_name "GENE{g}-{t:03d}"; '
                         f'level 2; protein_id "ENSP{g:09d}{t:02d}.1"; transcript_support_level "1"; '
                         f'hgnc_id "HGNC:{g}"; tag "basic"; tag "Ensembl_canonical"; tag "MANE_Select"; '
                         f'tag "CCDS"; ccdsid "CCDS{g}.1"; havana_gene "OTTHUMG{g:011d}.1"; '
                         f'havana_transcript "OTTHUMT{g:011d}.1";')
                out.append(f"{chrom}\tHAVANA\ttranscript\t{start}\t{start + 2_500}\t.\t{strand}\t.\t{attrs}\n")
                pos = start + rng.randint(0, 200)
                for e in range(rng.randint(2, 11)):
                    end = pos + rng.randint(50, 250)
                    exon = f'{attrs} exon_number {e + 1}; exon_id "ENSE{g:09d}{t:02d}{e:02d}.1";'
                    out.append(f"{chrom}\tHAVANA\texon\t{pos}\t{end}\t.\t{strand}\t.\t{exon}\n")
                    out.append(f"{chrom}\tHAVANA\tCDS\t{pos}\t{end}\t.\t{strand}\t0\t{exon}\n")
                    pos = end + rng.randint(20, 100)
                out.append(f"{chrom}\tHAVANA\tUTR\t{start}\t{start + 40}\t.\t{strand}\t.\t{attrs}\n")
                out.append(f"{chrom}\tHAVANA\tstart_codon\t{start + 41}\t{start + 43}\t.\t{strand}\t0\t{attrs}\n")
            f.write("".join(out))


def main() -> None:
    parser = argparse.ArgumentParser(prog="annotation.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genes", type=int, default=62_700, help="genes in the synthetic GTF (default: GENCODE's)")
    parser.add_argument("--quick", action="store_true", help="2,000 genes")
    parser.add_argument("--gzip", action="store_true", help="write and read the GTF gzip-compressed")
    args = parser.parse_args()
    genes = 2_000 if args.quick else args.genes
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "synthetic.gtf" + (".gz" if args.gzip else ""))
        t = time.perf_counter()
        write_gtf(path, genes, compress=args.gzip)
        written = time.perf_counter() - t
        size = os.path.getsize(path)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        done = subprocess.run([sys.executable, "-c", CHILD, path], env=env, capture_output=True, text=True,
                              check=True)
        import json

        r = json.loads(done.stdout.strip().splitlines()[-1])
    mib = 1024
    print("| file | lines | exon lines | genes | read s | RSS after imports | peak RSS | reading costs |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {size / 2**20:,.0f} MiB{' gzip' if args.gzip else ''} (written in {written:.0f} s) | {r['lines']:,} | "
          f"{r['exon_lines']:,} | {r['genes']:,} | {r['seconds']:.1f} | {r['base_kib'] / mib:,.0f} MiB | "
          f"{r['peak_kib'] / mib:,.0f} MiB | {(r['peak_kib'] - r['base_kib']) / mib:,.0f} MiB |")


if __name__ == "__main__":
    main()
