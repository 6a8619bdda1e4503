"""The ``enformer-batch`` command: a thin layer over the Python API (``predict``, ``validate``, ``tracks``).

Errors a user can fix (bad input, an ``--out`` holding another run, a failed part) print one line naming
the problem and exit non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .predict import PredictConfig
    from .variants import VariantConfig

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _storage_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every mode shares: the model, how it is run, the replicas, the output (``RunOptions``)."""
    parser.add_argument("--out", required=True, help="output directory or object-store prefix")
    parser.add_argument("--model", default="demo", help="'demo' / 'demo-borzoi' (embedded tiny Enformer / Borzoi), an "
                        "Enformer or Borzoi checkpoint directory or URL (config.json + model.safetensors or "
                        "pytorch_model.bin), e.g. hf://johahi/borzoi-replicate-0; A,B,C,D averages replicates; "
                        "sim:rate=R,tracks=T is a simulated accelerator (real-shaped outputs at R windows/s, for "
                        "benchmarking the pipeline)")
    parser.add_argument("--head", default="human", help="output head")
    parser.add_argument("--tracks", default=None, help="track selection: indices '0,5', ranges '0-9' (inclusive), "
                        "identifiers, or a regex over descriptions such as '^CAGE:'; default all")
    parser.add_argument("--batch-size", type=_batch_size, default="auto", metavar="N|auto",
                        help="model inputs per model call; auto (default): from the GPU's free memory once the model "
                        "is loaded, 4 on CPUs; the manifest records the value used")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="compute precision; auto (default): bf16 on GPUs that compute it natively (Ampere and "
                        "later), fp32 elsewhere; the run identity records the resolved precision")
    parser.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                        help="torch.compile the model; auto (default): on CUDA GPUs (about 1.5x eager for Enformer "
                        "at bf16 on an H200, after ~20 s of compilation per replica), off on CPUs; auto falls back "
                        "to eager if compiling fails")
    parser.add_argument("--rc", action="store_true", help="average with the reverse-complement prediction")
    parser.add_argument("--shifts", type=_int_list, default=(0,),
                        help="average over these input shifts (bp); write negative lists as --shifts=-1,0,1")
    parser.add_argument("--n-encoding", default="zeros", choices=["zeros", "uniform"],
                        help="one-hot row for N, IUPAC codes and padding")
    parser.add_argument("--unsquash", action="store_true", help="undo Borzoi's squashed target scale per track "
                        "(from the table's scale, clip_soft, sum_stat) to coverage; atlases need --dtype float32")
    parser.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"],
                        help="auto: GPUs if the cluster has them now; gpu: ask for GPUs even before any node has "
                        "them (autoscaling clusters; give --workers); cpu: never")
    parser.add_argument("--workers", type=int, default=None, help="model replicas (default: one per GPU share, else 1)")
    parser.add_argument("--gpus-per-worker", type=float, default=1.0, help="GPUs per replica (fractions share a GPU)")
    parser.add_argument("--threads-per-worker", type=int, default=None,
                        help="torch threads per replica (default: 2 on GPUs; on CPUs the cores divided among replicas)")
    parser.add_argument("--writers-per-worker", type=int, default=None,
                        help="threads per replica that write finished parts while the device computes (default: 1 "
                        "on CPUs; on GPUs the node's CPUs per replica less one, at most 16, reserved from Ray)")
    parser.add_argument("--overwrite", action="store_true", help="replace an --out holding another run")
    parser.add_argument("--storage-option", type=_storage_option, action="append", default=[], metavar="KEY=VALUE",
                        help="fsspec storage option for input, model and --out URLs (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _batch_size(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def run_options(args: argparse.Namespace) -> dict:
    """The ``RunOptions`` fields that parsed ``add_model_arguments`` options give."""
    return dict(
        out=args.out, model=args.model, head=args.head, tracks=args.tracks, batch_size=args.batch_size,
        precision=args.precision, compile=args.compile, rc=args.rc, shifts=args.shifts,
        n_encoding=args.n_encoding, device=args.device,
        workers=args.workers, gpus_per_worker=args.gpus_per_worker, threads_per_worker=args.threads_per_worker,
        writers_per_worker=args.writers_per_worker, unsquash=args.unsquash, overwrite=args.overwrite,
        storage_options=dict(args.storage_option), progress=not args.no_progress,
    )


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``enformer-batch predict`` (also used by the ``jobs/`` entrypoints)."""
    parser.add_argument("fasta", help="genome path or fsspec URL (s3://, gs://, https://...): FASTA (.fai), bgzip "
                        "FASTA (.fai/.gzi), plain-gzip FASTA (decompressed once into $ENFORMER_BATCH_CACHE) or .2bit")
    add_model_arguments(parser)
    parser.add_argument("--stride", type=int, default=None, help="bp between windows; multiple of the bin size, "
                        "at most the output span (default: the output span, 114,688 for Enformer); Parquet parts hold "
                        "~14,336 bins (rows) at any stride")
    parser.add_argument("--regions", default=None, help="BED file: predict only bins overlapping these intervals")
    parser.add_argument("--chroms", type=_str_list, default=None, help="comma-separated chromosomes (default: all)")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored value type")


def predict_config(args: argparse.Namespace) -> PredictConfig:
    """The run that parsed ``predict`` arguments describe."""
    from .predict import PredictConfig

    return PredictConfig(
        fasta=args.fasta, stride=args.stride, regions=args.regions, chroms=args.chroms, dtype=args.dtype,
        **run_options(args),
    )


def add_variant_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``enformer-batch score-variants`` (also used by ``jobs/variants.py``)."""
    from .variants import SCORES

    parser.add_argument("vcf", help="VCF, VCF.gz (bgzip or gzip); path or fsspec URL")
    parser.add_argument("--fasta", required=True, help="reference FASTA the VCF's REF alleles refer to")
    add_model_arguments(parser)
    parser.add_argument("--scores", type=_str_list, default=("sad",),
                        help=f"comma-separated scores, from {','.join(SCORES)} (see the README)")
    parser.add_argument("--strict", action="store_true",
                        help="fail (before computing anything) on a REF that does not match the FASTA, instead of "
                        "writing it with status ref_mismatch")
    parser.add_argument("--group-bp", type=int, default=0,
                        help="variants within this many bp share one reference window (fewer model inputs; "
                        "not exactly centred, see the README); 0 = off")


def variant_config(args: argparse.Namespace) -> VariantConfig:
    """The run that parsed ``score-variants`` arguments describe."""
    from .variants import VariantConfig

    return VariantConfig(vcf=args.vcf, fasta=args.fasta, scores=args.scores, strict=args.strict,
                         group_bp=args.group_bp, **run_options(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enformer-batch",
        description="Genome-wide batch prediction with Enformer-style models on Ray, into a Parquet atlas.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "predict",
        help="predict every bin of a genome (or of BED regions) into a Parquet atlas",
        description=(
            "Tile FASTA into model windows (Enformer: 196,608 bp in, 896 bins of 128 bp out; Borzoi: 524,288 bp "
            "in, 6,144 bins of 32 bp out), predict them on "
            "Ray actors (one per GPU, or one CPU worker), and write <out>/chrom=<name>/part-*.parquet with "
            "columns start, end and one per track, plus _manifest.json and _SUCCESS. Re-running the same "
            "command on the same --out resumes; an --out holding another configuration (or other weights, or a "
            "FASTA with other bases under committed parts) is refused unless --overwrite. One predict at a "
            "time per --out: a second one is refused while the first holds the lease (<out>/_lease.json)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_predict_arguments(p)

    sv = sub.add_parser(
        "score-variants",
        help="score every ALT allele of a VCF: reference vs alternate predictions, per track",
        description=(
            "Centre the model's input on each variant (its first base at input position input_length/2), predict "
            "the reference and the alternate sequence (indels shift the right flank; bins are not re-aligned), and "
            "write one row per ALT allele to <out>/chrom=<name>/part-*.parquet: pos (1-based), id, ref, alt, status "
            "(ok, n_at_variant, ref_mismatch, symbolic, unknown_chrom), then float32 columns <score>:<track>. "
            "Scores: sad = sum over bins of (alt - ref); logsad = log2(sum alt + 1) - log2(sum ref + 1); "
            "l2 = sqrt(sum (alt - ref)^2); center = alt - ref at the middle output bin (the variant's). Alleles at "
            "one position share one reference prediction. Re-running the same command resumes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_variant_arguments(sv)

    scores_help = "comma-separated scores, from sad,logsad,l2,center (as for score-variants)"
    mg = sub.add_parser(
        "mutagenesis",
        help="saturation mutagenesis: every position x the three other bases of regions, scored",
        description=(
            "For each region [s, e) (at most 10,000 bp), one model input centred on m = (s + e) // 2 is the shared "
            "reference; every position and each base other than the reference is an SNV scored against it (not "
            "re-centred). Rows: region, pos (1-based), ref, alt, status, then <score>:<track>. A position whose "
            "reference is N gets all four bases (status n_at_variant). Re-running resumes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mg.add_argument("fasta", help="FASTA path or URL")
    mg.add_argument("regions", help="chr:start-end (0-based half-open, commas allowed) or a BED file/URL")
    add_model_arguments(mg)
    mg.add_argument("--scores", type=_str_list, default=("sad",), help=scores_help)

    ed = sub.add_parser(
        "edits",
        help="score sequence edits (deletions, insertions, replacements) from an EDITS.tsv",
        description=(
            "EDITS.tsv: no header, '#' comments, tab-separated name chrom start end sequence (0-based half-open; "
            "empty sequence = deletion of [start, end); start == end = insertion before start). Each edit is "
            "scored like a variant centred on start: the reference input, and the input with [start, end) "
            "replaced. Rows: name, start, end, sequence, status, then <score>:<track>. Re-running resumes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ed.add_argument("fasta", help="FASTA path or URL")
    ed.add_argument("edits", help="EDITS.tsv path or URL")
    add_model_arguments(ed)
    ed.add_argument("--scores", type=_str_list, default=("sad",), help=scores_help)

    pm = sub.add_parser("plot-mutagenesis", help="heat map of a mutagenesis region (needs the 'atlas' extra)",
                        description="Positions x bases, coloured by one score of one track, the reference "
                        "sequence along the axis and the mean |score| per position above.")
    pm.add_argument("url", help="mutagenesis output directory or URL")
    pm.add_argument("--region", required=True, help="the region as written in the table, e.g. chr1:1000-1200")
    pm.add_argument("--track", required=True, help="track name (a column suffix, e.g. ENCFF833POA)")
    pm.add_argument("--score", default="sad", help="which score")
    pm.add_argument("--out", required=True, help="PNG file to write")
    pm.add_argument("--width", type=int, default=1200, help="image width in pixels")
    pm.add_argument("--storage-option", type=_storage_option, action="append", default=[], metavar="KEY=VALUE")

    pe = sub.add_parser("plot-edit", help="reference vs edited predictions of one edit (needs the 'atlas' extra)",
                        description="Computes the two predictions here (no Ray) and draws the selected tracks "
                        "over the reference input's output bins, the edited interval shaded.")
    pe.add_argument("fasta", help="FASTA path or URL")
    pe.add_argument("edits", help="EDITS.tsv path or URL")
    pe.add_argument("--name", required=True, help="which edit (its name column)")
    pe.add_argument("--model", default="demo", help="as for predict")
    pe.add_argument("--head", default="human", help="output head")
    pe.add_argument("--tracks", required=True, help="track selection (as for predict)")
    pe.add_argument("--out", required=True, help="PNG file to write")
    pe.add_argument("--width", type=int, default=1200, help="image width in pixels")
    pe.add_argument("--storage-option", type=_storage_option, action="append", default=[], metavar="KEY=VALUE")

    v = sub.add_parser("validate", help="check an atlas or variant table: manifest, parts, exactly once",
                       description="Exit 0 when the output is complete and sound; otherwise list each defect "
                       "and exit 1.")
    v.add_argument("url", help="atlas or scored-table directory or URL")
    v.add_argument("--fasta", default=None, help="check chromosome lengths against this genome (any form predict "
                   "takes), and (atlases) the bases under every part")
    v.add_argument("--vcf", default=None, help="variant tables: check that every row of this VCF (one per ALT) "
                   "appears exactly once")
    v.add_argument("--checksums", action="store_true", help="also read every byte of every part and compare its "
                   "sha256 with the manifest's (default: footers, row counts, start/end and version tokens only; "
                   "track values are not read)")
    v.add_argument("--storage-option", type=_storage_option, action="append", default=[], metavar="KEY=VALUE")

    t = sub.add_parser("tracks", help="list a model's tracks")
    t.add_argument("model", nargs="?", default="demo", help="'demo', 'demo-borzoi', a checkpoint directory or URL")
    t.add_argument("--storage-option", type=_storage_option, action="append", default=[], metavar="KEY=VALUE",
                   help="fsspec storage option for the model URL (repeatable)")

    # --- atlas access (enformer_batch.atlas / enformer_batch.export) ---
    region_help = ("CHROM:START-END, 0-based half-open like the atlas (bins overlapping [START, END) are "
                   "returned; commas allowed: chr1:1,000,000-2,000,000); a bare CHROM means all of it")
    q = sub.add_parser("query", help="print or save the atlas rows overlapping a region",
                       description="Rows (chrom, start, end, tracks) of the bins overlapping a region, read "
                       "from only the parts and columns needed. Coordinates are 0-based half-open.")
    q.add_argument("url", help="atlas directory or URL")
    q.add_argument("region", help=region_help)
    q.add_argument("--tracks", default=None, help="track selection: head indices '0,5', ranges '0-9', "
                   "identifiers or a description regex (as for predict); default all")
    q.add_argument("--format", default="tsv", choices=["tsv", "csv", "parquet"], help="output format; "
                   "parquet needs --output")
    q.add_argument("--output", default=None, help="write to this file instead of standard output")
    e = sub.add_parser("export-bigwig", help="write one bigWig per track (needs the 'atlas' extra)",
                       description="One <track>.bw per selected track, with the FASTA's chromosome sizes; "
                       "bins without a value (skipped all-N windows) are left as gaps.")
    e.add_argument("url", help="atlas directory or URL")
    e.add_argument("--tracks", default=None, help="track selection (as for query); default all")
    e.add_argument("--out", required=True, help="local directory for the .bw files")
    g = sub.add_parser("plot", help="draw tracks over a region into a PNG (needs the 'atlas' extra)",
                       description="One labelled row per track over the region, x axis in bp (0-based); "
                       "bins without a value are drawn as gaps.")
    g.add_argument("url", help="atlas directory or URL")
    g.add_argument("region", help=region_help)
    g.add_argument("--tracks", required=True, help="track selection (as for query)")
    g.add_argument("--out", required=True, help="PNG file to write")
    g.add_argument("--width", type=int, default=1200, help="image width in pixels")
    for a in (q, e, g):
        a.add_argument("--allow-incomplete", action="store_true",
                       help="read an atlas whose run has not finished (only its committed parts)")
        a.add_argument("--storage-option", type=_storage_option, action="append", default=[],
                       metavar="KEY=VALUE", help="fsspec storage option for the atlas URL (repeatable)")

    # --- dry-run planning (enformer_batch.estimate) ---
    pl = sub.add_parser("plan", help="dry run: windows, bins, output size, GPU-hours and cost of a run",
                        description="Tile FASTA exactly as predict would (no model weights loaded, no Ray) "
                        "and estimate the atlas size and the GPU time and cost on a named GPU type. "
                        "Throughput and prices are labelled estimates; override them with measured or quoted "
                        "figures.",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pl.add_argument("fasta", help="genome path or URL in any form predict takes, or a .fai / chrom.sizes file")
    pl.add_argument("--model", default=None, help="'enformer' (the default: the full-size official heads, human "
                    "5,313, mouse 1,643 tracks) / 'borzoi' (human 7,611, mouse 2,608; nothing read), 'demo', "
                    "'demo-borzoi', a checkpoint directory/URL (reads config.json), or A,B,... replicates")
    pl.add_argument("--head", default="human", help="output head")
    pl.add_argument("--tracks", default=None, help="track selection, as for predict; default all")
    pl.add_argument("--n-tracks", type=int, default=None, help="plan for this many tracks, not --tracks")
    pl.add_argument("--stride", type=int, default=None, help="bp between windows (default: the output span)")
    pl.add_argument("--regions", default=None, help="BED file: only bins overlapping these intervals")
    pl.add_argument("--chroms", type=_str_list, default=None, help="comma-separated chromosomes (all)")
    pl.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored value type")
    pl.add_argument("--rc", action="store_true", help="reverse-complement averaging (2 passes per window)")
    pl.add_argument("--shifts", type=_int_list, default=(0,), help="input shifts (one pass each)")
    pl.add_argument("--gpu", default="A100", help="GPU type for the default throughput/price figures "
                    "(see --list-gpus)")
    pl.add_argument("--windows-per-second", type=float, default=None, help="measured throughput per GPU")
    pl.add_argument("--price-per-hour", type=float, default=None, help="USD per GPU-hour")
    pl.add_argument("--list-gpus", action="store_true", help="print the default per-GPU figures and exit")
    pl.add_argument("--storage-option", type=_storage_option, action="append", default=[],
                    metavar="KEY=VALUE", help="fsspec storage option for FASTA, BED and model URLs")

    # --debug is accepted after the command too (`enformer-batch predict ... --debug`); SUPPRESS keeps a
    # --debug given before the command from being reset by the subcommand's default.
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show full tracebacks on errors")
    return parser


def _predict(args: argparse.Namespace) -> int:
    from .predict import predict

    print(predict(predict_config(args)))
    return 0


def _score_variants(args: argparse.Namespace) -> int:
    from .variants import score_variants

    print(score_variants(variant_config(args)))
    return 0


def _mutagenesis(args: argparse.Namespace) -> int:
    from .experiments import MutagenesisConfig, mutagenesis

    print(mutagenesis(MutagenesisConfig(fasta=args.fasta, regions=args.regions, scores=args.scores,
                                        **run_options(args))))
    return 0


def _edits(args: argparse.Namespace) -> int:
    from .experiments import EditsConfig, edits

    print(edits(EditsConfig(fasta=args.fasta, edits=args.edits, scores=args.scores, **run_options(args))))
    return 0


def _plot_mutagenesis(args: argparse.Namespace) -> int:
    from .export import plot_mutagenesis

    width, height = plot_mutagenesis(args.url, args.region, args.track, args.out, score=args.score,
                                     width_px=args.width, storage_options=dict(args.storage_option))
    print(f"{args.out}: {width}x{height} px")
    return 0


def _plot_edit(args: argparse.Namespace) -> int:
    from .experiments import edit_predictions
    from .export import plot_edit
    from .settings import InferenceSettings

    settings = InferenceSettings(model=args.model, head=args.head, tracks=args.tracks, dtype="float32",
                                 storage_options=dict(args.storage_option))
    edit, ref, alt, first_bp, info = edit_predictions(args.fasta, args.edits, args.name, settings,
                                                      dict(args.storage_option))
    width, height = plot_edit(edit, ref, alt, first_bp, info.geometry.bin_size, info.track_names, args.out,
                              width_px=args.width)
    print(f"{args.out}: {width}x{height} px")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .validate import validate

    report = validate(args.url, fasta=args.fasta, vcf=args.vcf, storage_options=dict(args.storage_option),
                      checksums=args.checksums)
    print(report.table())
    return 0 if report.ok else EXIT_FAILED


def _tracks(args: argparse.Namespace) -> int:
    from .loader import load_model
    from .tracks import render_track_table

    loaded = load_model(args.model, storage_options=dict(args.storage_option))
    print(render_track_table(loaded.tracks, dict(loaded.config.output_heads)), end="")
    return 0


def _open_atlas(args: argparse.Namespace):
    from .atlas import open_atlas

    atlas = open_atlas(args.url, dict(args.storage_option), allow_incomplete=args.allow_incomplete)
    if not atlas.complete:  # issue 15: say so whenever what is read is not the whole atlas
        print(f"enformer-batch: warning: {atlas.completeness()}", file=sys.stderr)
    return atlas


def _query(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from .atlas import parse_region

    if args.format == "parquet" and not args.output:
        raise ValueError("--format parquet writes binary data: give --output FILE")
    chrom, start, end = parse_region(args.region)
    table = _open_atlas(args).query(chrom, start, end, tracks=args.tracks)
    if args.format == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, args.output, compression="zstd")
        return 0
    import pyarrow.csv as pacsv

    # float16 has no text form in Arrow's CSV writer; float32 prints every float16 value exactly.
    text = table.cast(pa.schema([f.with_type(pa.float32()) if pa.types.is_float16(f.type) else f
                                 for f in table.schema]))
    # TSV unquoted for cut/awk (chromosome and track names hold no tabs); empty field = no value.
    tsv = args.format == "tsv"
    delimiter = "\t" if tsv else ","
    options = pacsv.WriteOptions(
        delimiter=delimiter, quoting_style="none" if tsv else "needed", include_header=False
    )
    sink = pa.BufferOutputStream()
    pacsv.write_csv(text, sink, write_options=options)
    # Arrow quotes header names even with quoting_style="none"; a plain header reads better in a shell.
    body = delimiter.join(text.column_names) + "\n" + sink.getvalue().to_pybytes().decode()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(body)
    else:
        sys.stdout.write(body)
    return 0


def _export_bigwig(args: argparse.Namespace) -> int:
    from .export import export_bigwig

    for path in export_bigwig(_open_atlas(args), args.out, tracks=args.tracks):
        print(path)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .atlas import parse_region
    from .export import plot_region

    chrom, start, end = parse_region(args.region)
    atlas = _open_atlas(args)
    start, end = atlas.check_range(chrom, start, end)
    width, height = plot_region(atlas, chrom, start, end, args.tracks, args.out, width_px=args.width)
    print(f"{args.out}: {width}x{height} px")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from .estimate import gpu_table, plan_run

    if args.list_gpus:
        print(gpu_table())
        return 0
    plan = plan_run(
        args.fasta, stride=args.stride, chroms=args.chroms, regions=args.regions, model=args.model or "enformer",
        head=args.head, tracks=args.tracks, n_tracks=args.n_tracks, dtype=args.dtype, rc=args.rc,
        shifts=args.shifts, gpu=args.gpu, windows_per_second=args.windows_per_second,
        price_per_hour=args.price_per_hour, storage_options=dict(args.storage_option),
    )
    print(plan)
    if args.model is None:
        print("(no --model: planned for the full-size Enformer; --model demo|PATH plans for another checkpoint)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"predict": _predict, "validate": _validate, "tracks": _tracks}
    handlers.update({"query": _query, "export-bigwig": _export_bigwig, "plot": _plot})
    handlers["plan"] = _plan
    handlers["score-variants"] = _score_variants
    handlers.update({"mutagenesis": _mutagenesis, "edits": _edits, "plot-mutagenesis": _plot_mutagenesis,
                     "plot-edit": _plot_edit})
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("enformer-batch: interrupted; committed parts are kept, re-run to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure becomes one line unless --debug
        if args.debug:
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"enformer-batch: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(e, (ValueError, FileNotFoundError, PermissionError)) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
