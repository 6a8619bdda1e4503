#!/usr/bin/env bash
# Real genome and real VCFs for the tests and examples, from Debian's package registry (extracted, not installed):
#   vt-examples         GRCh37 chromosome 20 (bgzip FASTA, 63,025,520 bp, named "20") with .fai and .gzi
#   python-pysam-tests  1000 Genomes / Platypus chr20 VCFs whose REF alleles match it (4: 300 SNVs; 5: 977
#                       indels, 43 multi-allelic; 24: REF and ALT often swapped, a real source of mismatches)
# Both packages are MIT-licensed. Usage: tools/fetch_real_data.sh [DEST] (default .real-data); idempotent.
set -euo pipefail
dest=$(mkdir -p "${1:-.real-data}" && cd "${1:-.real-data}" && pwd)
files=(20.fa.gz 20.fa.gz.fai 20.fa.gz.gzi 4.vcf.gz 5.vcf.gz 24.vcf.gz)
missing=0
for f in "${files[@]}"; do [ -s "$dest/$f" ] || missing=1; done
[ "$missing" = 0 ] && exit 0
command -v apt-get >/dev/null || { echo "fetch_real_data: no apt-get here; real-data tests will be skipped" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
packages=(vt-examples python-pysam-tests)
if ! apt-get download "${packages[@]}" >/dev/null 2>&1; then
    # A fresh machine has no package lists yet; only root can fetch them.
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi
    apt-get download "${packages[@]}" >/dev/null 2>&1 \
        || { echo "fetch_real_data: apt-get download ${packages[*]} failed; real-data tests will be skipped" >&2; exit 1; }
fi
for deb in *.deb; do dpkg-deb -x "$deb" x; done
ref=x/usr/share/doc/vt/examples/ref
vcf=x/usr/share/doc/python-pysam/tests/tabix_data/vcf
cp "$ref/20.fa.gz" "$ref/20.fa.gz.fai" "$dest/"
gzip -dc "$ref/20.fa.gz.gzi.gz" > "$dest/20.fa.gz.gzi"  # Debian compresses documentation files
cp "$vcf/4.vcf.gz" "$vcf/5.vcf.gz" "$vcf/24.vcf.gz" "$dest/"
echo "fetch_real_data: GRCh37 chr20 and chr20 VCFs in $dest"
