#!/usr/bin/env bash
# Real genome, real VCFs and real gene models for the tests and examples, from package registries (downloaded
# and extracted, never installed):
#   vt-examples         (Debian) GRCh37 chromosome 20 (bgzip FASTA, 63,025,520 bp, named "20") with .fai and .gzi
#   python-pysam-tests  (Debian) 1000 Genomes / Platypus chr20 VCFs whose REF alleles match it (4: 300 SNVs;
#                       5: 977 indels, 43 multi-allelic; 24: REF and ALT often swapped, a real source of mismatches)
#   spliceai 1.3.1      (PyPI) GRCh37 gene models: GENCODE V24lift37 canonical transcripts, one per gene, as a
#                       table (name, chrom, strand, tx start/end, exon starts/ends; 0-based starts). Its 544
#                       chromosome-20 genes are kept as that table (20.genes.spliceai.txt) and written out as a
#                       GTF (Ensembl-style, 1-based inclusive) and a GFF3 of the same genes.
# vt-examples and python-pysam-tests are MIT-licensed, spliceai GPL-3.0; nothing of them is committed here.
# Usage: [PYTHON=python3] tools/fetch_real_data.sh [DEST] (default .real-data); idempotent, each source apart.
set -euo pipefail
dest=$(mkdir -p "${1:-.real-data}" && cd "${1:-.real-data}" && pwd)
py=${PYTHON:-python3}
# The steps below cd into a scratch folder: a relative interpreter path (make passes .venv/bin/python) must not
# break them.
case "$py" in */*) py=$(cd "$(dirname "$py")" && pwd)/$(basename "$py") ;; esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
have() { for f in "$@"; do [ -s "$dest/$f" ] || return 1; done; }
status=0

debian=(20.fa.gz 20.fa.gz.fai 20.fa.gz.gzi 4.vcf.gz 5.vcf.gz 24.vcf.gz)
if ! have "${debian[@]}"; then
    if ! command -v apt-get >/dev/null; then
        echo "fetch_real_data: no apt-get here; real genome tests will be skipped" >&2; status=1
    else
        packages=(vt-examples python-pysam-tests)
        mkdir -p "$work/deb" && cd "$work/deb"
        if ! apt-get download "${packages[@]}" >/dev/null 2>&1; then
            # A fresh machine has no package lists yet; only root can fetch them.
            if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi
            apt-get download "${packages[@]}" >/dev/null 2>&1 || true
        fi
        if ls ./*.deb >/dev/null 2>&1; then
            for deb in *.deb; do dpkg-deb -x "$deb" x; done
            ref=x/usr/share/doc/vt/examples/ref
            vcf=x/usr/share/doc/python-pysam/tests/tabix_data/vcf
            cp "$ref/20.fa.gz" "$ref/20.fa.gz.fai" "$dest/"
            gzip -dc "$ref/20.fa.gz.gzi.gz" > "$dest/20.fa.gz.gzi"  # Debian compresses documentation files
            cp "$vcf/4.vcf.gz" "$vcf/5.vcf.gz" "$vcf/24.vcf.gz" "$dest/"
            echo "fetch_real_data: GRCh37 chr20 and chr20 VCFs in $dest"
        else
            echo "fetch_real_data: apt-get download ${packages[*]} failed; real genome tests will be skipped" >&2
            status=1
        fi
    fi
fi

genes=(20.genes.spliceai.txt 20.genes.gtf.gz 20.genes.gff3.gz)
if ! have "${genes[@]}"; then
    mkdir -p "$work/pypi" && cd "$work/pypi"
    if "$py" -m pip download --no-deps --quiet --disable-pip-version-check spliceai==1.3.1 -d . >/dev/null 2>&1; then
        "$py" - "$dest" <<'PY'
import glob, gzip, sys, zipfile
dest = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob("spliceai-*.whl")[0])
rows = [line for line in wheel.read("spliceai/annotations/grch37.txt").decode().splitlines()[1:]
        if line.split("\t")[1] == "20"]
with open(f"{dest}/20.genes.spliceai.txt", "w") as f:
    f.write("#NAME\tCHROM\tSTRAND\tTX_START\tTX_END\tEXON_START\tEXON_END\n" + "\n".join(rows) + "\n")
source = "spliceai_grch37"
with gzip.open(f"{dest}/20.genes.gtf.gz", "wt") as gtf, gzip.open(f"{dest}/20.genes.gff3.gz", "wt") as gff:
    gtf.write("#!genome-build GRCh37 (GENCODE V24lift37 canonical transcripts, from spliceai 1.3.1)\n")
    gff.write("##gff-version 3\n##sequence-region 20 1 63025520\n")
    for row in rows:
        name, chrom, strand, tx_start, tx_end, starts, ends = row.split("\t")
        exons = list(zip(map(int, starts.strip(",").split(",")), map(int, ends.strip(",").split(","))))
        ids = f'gene_id "{name}"; gene_name "{name}"'
        gtf.write(f"{chrom}\t{source}\tgene\t{int(tx_start) + 1}\t{tx_end}\t.\t{strand}\t.\t{ids};\n")
        gtf.write(f"{chrom}\t{source}\ttranscript\t{int(tx_start) + 1}\t{tx_end}\t.\t{strand}\t.\t{ids}; "
                  f'transcript_id "{name}";\n')
        gff.write(f"{chrom}\t{source}\tgene\t{int(tx_start) + 1}\t{tx_end}\t.\t{strand}\t.\t"
                  f"ID=gene:{name};Name={name};gene_id={name}\n")
        gff.write(f"{chrom}\t{source}\tmRNA\t{int(tx_start) + 1}\t{tx_end}\t.\t{strand}\t.\t"
                  f"ID=transcript:{name};Parent=gene:{name};transcript_id={name}\n")
        for n, (start, end) in enumerate(exons, 1):
            gtf.write(f"{chrom}\t{source}\texon\t{start + 1}\t{end}\t.\t{strand}\t.\t{ids}; "
                      f'transcript_id "{name}"; exon_number "{n}";\n')
            gff.write(f"{chrom}\t{source}\texon\t{start + 1}\t{end}\t.\t{strand}\t.\t"
                      f"Parent=transcript:{name};exon_number={n}\n")
print(f"fetch_real_data: {len(rows)} GRCh37 chr20 gene models (GTF, GFF3) in {dest}")
PY
    else
        echo "fetch_real_data: pip download spliceai==1.3.1 failed; real gene-model tests will be skipped" >&2
        status=1
    fi
fi
exit $status
