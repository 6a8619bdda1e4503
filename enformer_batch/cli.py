"""The ``enformer-batch`` command: a thin layer over the Python API.

Commands:

* job kinds, one per ``enformer_batch.kinds.KINDS`` entry, their arguments from the kind: ``predict`` (a genome
  atlas), ``score-variants`` (a VCF's alleles; with ``--genes``, per gene in range), ``mutagenesis`` (every SNV
  of regions), ``edits`` (an EDITS.tsv), ``attribute`` (input × gradient over regions), ``predict-genes`` (each
  gene's expression from the reference);
* checking and reading outputs: ``validate`` (any kind), ``query``, ``export-bigwig``, ``plot`` (atlases),
  ``plot-mutagenesis`` (a mutagenesis table), ``plot-edit`` (one edit, computed here), ``export-attributions``
  (TF-MoDISco arrays, a bigWig) and ``plot-attribution`` (a sequence logo) of an attribution output;
* ``tracks`` (a model's tracks) and ``plan`` (a dry run: size, GPU-hours and cost of an atlas, a
  ``predict-genes`` run or a ``score-variants`` run).
* ``serve`` (a web page and JSON API over warm model replicas: edits, mutagenesis, atlas lookups).

Errors a user can fix (bad input, an ``--out`` holding another run, a failed part) print one line naming
the problem and exit non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .kinds import KINDS, Kind
from .kinds.arguments import int_list, storage_option, str_list

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enformer-batch",
        description="Genome-wide batch prediction with Enformer-style models on Ray, into a Parquet atlas.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_job_commands(sub)
    _add_experiment_plots(sub)
    _add_attribution_access(sub)
    _add_validate(sub)
    _add_tracks(sub)
    _add_atlas_access(sub)
    _add_plan(sub)
    _add_serve(sub)

    # --debug is accepted after the command too (`enformer-batch predict ... --debug`); SUPPRESS keeps a
    # --debug given before the command from being reset by the subcommand's default.
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show full tracebacks on errors")
    return parser


def _add_job_commands(sub: argparse._SubParsersAction) -> None:
    """One command per job kind, its arguments and ``--help`` text from the kind."""
    for kind in KINDS.values():
        kind.add_arguments(sub.add_parser(kind.command, help=kind.help, description=kind.description,
                                          formatter_class=argparse.ArgumentDefaultsHelpFormatter))


def _add_experiment_plots(sub: argparse._SubParsersAction) -> None:
    """``plot-mutagenesis`` and ``plot-edit``."""
    pm = sub.add_parser("plot-mutagenesis", help="heat map of a mutagenesis region (needs the 'atlas' extra)",
                        description="Positions x bases, coloured by one score of one track, the reference "
                        "sequence along the axis and the mean |score| per position above.")
    pm.add_argument("url", help="mutagenesis output directory or URL")
    pm.add_argument("--region", required=True, help="the region as written in the table, e.g. chr1:1000-1200")
    pm.add_argument("--track", required=True, help="track name (a column suffix, e.g. ENCFF833POA)")
    pm.add_argument("--score", default="sad", help="which score")
    pm.add_argument("--out", required=True, help="PNG file to write")
    pm.add_argument("--width", type=int, default=1200, help="image width in pixels")
    pm.add_argument("--storage-option", type=storage_option, action="append", default=[], metavar="KEY=VALUE")

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
    pe.add_argument("--storage-option", type=storage_option, action="append", default=[], metavar="KEY=VALUE")


def _add_attribution_access(sub: argparse._SubParsersAction) -> None:
    """``export-attributions`` and ``plot-attribution``: an ``attribute`` output out to other tools."""
    ea = sub.add_parser("export-attributions", help="an attribution output to TF-MoDISco (ohe.npz, shap.npz) or a "
                        "bigWig of attr (bigwig needs the 'atlas' extra)",
                        description="modisco: DIR/ohe.npz and DIR/shap.npz, arrays (regions, 4, length) in the run's "
                        "region order (regions of one length), for `modisco motifs -s ohe.npz -a shap.npz -w W` with "
                        "W at most the length; bigwig: DIR/attr.bw, attr per base (regions must not overlap).")
    ea.add_argument("url", help="attribution output directory or URL")
    ea.add_argument("--format", required=True, choices=["modisco", "bigwig"], help="what to write")
    ea.add_argument("--out", required=True, help="local directory to write into")
    ea.add_argument("--storage-option", type=storage_option, action="append", default=[], metavar="KEY=VALUE")

    pt = sub.add_parser("plot-attribution", help="sequence logo of attr over one region (needs the 'atlas' extra)",
                        description="Each position's reference base as a letter as tall as its attribution (below "
                        "the axis when it lowers the target); the title names the target.")
    pt.add_argument("url", help="attribution output directory or URL")
    pt.add_argument("--region", required=True, help="the region as the run was given it, e.g. chr1:1000-1200")
    pt.add_argument("--out", required=True, help="PNG file to write")
    pt.add_argument("--width", type=int, default=1400, help="image width in pixels")
    pt.add_argument("--storage-option", type=storage_option, action="append", default=[], metavar="KEY=VALUE")


def _add_validate(sub: argparse._SubParsersAction) -> None:
    """``validate``: any kind's output; ``--<input>`` for each input a kind can be compared with."""
    v = sub.add_parser("validate", help="check an output of any kind (atlas, scored table): manifest, parts, "
                       "exactly once",
                       description="Exit 0 when the output is complete and sound; otherwise list each defect "
                       "and exit 1.")
    v.add_argument("url", help="atlas or scored-table directory or URL")
    v.add_argument("--fasta", default=None, help="check chromosome lengths against this genome (any form predict "
                   "takes), and the bases under every part: each atlas, mutagenesis, edits and attribution "
                   "part's windows are re-read; a variant table's with --vcf, a predict-genes table's with --genes")
    takes: dict[str, list[str]] = {}
    for kind in KINDS.values():
        for name, text in kind.validate_inputs.items():
            takes.setdefault(name, []).append(text)
    for name, texts in takes.items():  # e.g. --vcf: what each kind's output is compared with
        v.add_argument(f"--{name}", default=None, metavar={"genes": "GTF"}.get(name, name.upper()),
                       help="; ".join(texts))
    v.add_argument("--checksums", action="store_true", help="also read every byte of every part and compare its "
                   "sha256 with the manifest's (default: footers, row counts, start/end and version tokens only; "
                   "track values are not read)")
    v.add_argument("--storage-option", type=storage_option, action="append", default=[], metavar="KEY=VALUE")


def _add_tracks(sub: argparse._SubParsersAction) -> None:
    """``tracks``: a model's tracks."""
    t = sub.add_parser("tracks", help="list a model's tracks")
    t.add_argument("model", nargs="?", default="demo", help="'demo', 'demo-borzoi', a checkpoint directory or URL")
    t.add_argument("--storage-option", type=storage_option, action="append", default=[], metavar="KEY=VALUE",
                   help="fsspec storage option for the model URL (repeatable)")


def _add_atlas_access(sub: argparse._SubParsersAction) -> None:
    """``query``, ``export-bigwig`` and ``plot``: reading an atlas (``enformer_batch.atlas`` / ``export``)."""
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
        a.add_argument("--storage-option", type=storage_option, action="append", default=[],
                       metavar="KEY=VALUE", help="fsspec storage option for the atlas URL (repeatable)")



def _add_plan(sub: argparse._SubParsersAction) -> None:
    """``plan``: the dry-run cost of an atlas, a predict-genes run or a score-variants run
    (``enformer_batch.estimate``)."""
    pl = sub.add_parser("plan", help="dry run: windows, bins, output size, GPU-hours and cost of a run",
                        description="Tile FASTA exactly as predict would (no model weights loaded, no Ray) "
                        "and estimate the atlas size and the GPU time and cost on a named GPU type. "
                        "With --genes GTF: the predict-genes run instead (the annotation streamed once; one "
                        "window per gene after --gene-types). With --vcf VCF: the score-variants run (the VCF "
                        "streamed once; per part one reference per distinct position plus one alternate per "
                        "allele), with --genes too the score-variants --genes run, whose windows are the same "
                        "(gene sums are taken on the device; its rows, one per allele and gene in range, are "
                        "not counted). Throughput and prices are labelled estimates; override them with "
                        "measured or quoted figures.",
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
    pl.add_argument("--chroms", type=str_list, default=None, help="comma-separated chromosomes (all)")
    pl.add_argument("--dtype", default=None, choices=["float16", "float32"],
                    help="stored value type of an atlas (float16 if not given; gene and variant tables hold "
                    "float32)")
    pl.add_argument("--genes", default=None, metavar="GTF", help="GTF/GFF3 (path or URL, gzip or not): plan "
                    "predict-genes FASTA GTF, or with --vcf score-variants --genes GTF")
    pl.add_argument("--gene-types", type=str_list, default=None, metavar="LIST",
                    help="with --genes: keep only genes of these gene_type/gene_biotype values")
    pl.add_argument("--tss-flank", type=int, default=None, metavar="BINS",
                    help="with --vcf and --genes: the run's --tss-flank, for the rows counted (default 1)")
    pl.add_argument("--vcf", default=None, help="VCF (path or URL, gzip or not): plan score-variants VCF "
                    "--fasta FASTA")
    pl.add_argument("--scores", type=str_list, default=None, help="with --vcf: the scores asked for (the "
                    "value columns per row; default sad, or logsed with --genes)")
    pl.add_argument("--rc", action="store_true", help="reverse-complement averaging (2 passes per window)")
    pl.add_argument("--shifts", type=int_list, default=(0,), help="input shifts (one pass each)")
    pl.add_argument("--gpu", default="A100", help="GPU type for the default throughput/price figures "
                    "(see --list-gpus)")
    pl.add_argument("--windows-per-second", type=float, default=None, help="measured throughput per GPU")
    pl.add_argument("--price-per-hour", type=float, default=None, help="USD per GPU-hour")
    pl.add_argument("--list-gpus", action="store_true", help="print the default per-GPU figures and exit")
    pl.add_argument("--storage-option", type=storage_option, action="append", default=[],
                    metavar="KEY=VALUE", help="fsspec storage option for FASTA, BED and model URLs")


def _run_kind(kind: Kind) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(kind.run(kind.config_from_args(args)))
        return 0

    return run


def _plot_mutagenesis(args: argparse.Namespace) -> int:
    from .export import plot_mutagenesis

    width, height = plot_mutagenesis(args.url, args.region, args.track, args.out, score=args.score,
                                     width_px=args.width, storage_options=dict(args.storage_option))
    print(f"{args.out}: {width}x{height} px")
    return 0


def _export_attributions(args: argparse.Namespace) -> int:
    from .export import export_attribution_bigwig, export_modisco

    options = dict(args.storage_option)
    if args.format == "modisco":
        paths = export_modisco(args.url, args.out, options)
    else:
        paths = (export_attribution_bigwig(args.url, args.out, options),)
    for path in paths:
        print(path)
    return 0


def _plot_attribution(args: argparse.Namespace) -> int:
    from .export import plot_attribution

    width, height = plot_attribution(args.url, args.region, args.out, width_px=args.width,
                                     storage_options=dict(args.storage_option))
    print(f"{args.out}: {width}x{height} px")
    return 0


def _plot_edit(args: argparse.Namespace) -> int:
    from .export import plot_edit
    from .kinds.edits import edit_predictions
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

    inputs = {name: getattr(args, name) for kind in KINDS.values() for name in kind.validate_inputs
              if getattr(args, name, None) is not None}
    report = validate(args.url, fasta=args.fasta, inputs=inputs, storage_options=dict(args.storage_option),
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

    from .regions import parse_region

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
    from .export import plot_region
    from .regions import parse_region

    chrom, start, end = parse_region(args.region)
    atlas = _open_atlas(args)
    start, end = atlas.check_range(chrom, start, end)
    width, height = plot_region(atlas, chrom, start, end, args.tracks, args.out, width_px=args.width)
    print(f"{args.out}: {width}x{height} px")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from .estimate import gpu_table, plan_genes, plan_run, plan_variants

    if args.list_gpus:
        print(gpu_table())
        return 0
    common = dict(model=args.model or "enformer", head=args.head, tracks=args.tracks, n_tracks=args.n_tracks,
                  rc=args.rc, shifts=args.shifts, gpu=args.gpu, windows_per_second=args.windows_per_second,
                  price_per_hour=args.price_per_hour, storage_options=dict(args.storage_option))
    if args.genes is None and args.vcf is None:
        given = [flag for flag, value in (("--gene-types", args.gene_types), ("--scores", args.scores),
                                          ("--tss-flank", args.tss_flank is not None)) if value]
        if given:
            raise ValueError(f"plan: {', '.join(given)} need --genes or --vcf")
        plan = plan_run(args.fasta, stride=args.stride, chroms=args.chroms, regions=args.regions,
                        dtype=args.dtype or "float16", **common)
    else:
        given = [flag for flag, value in (("--stride", args.stride), ("--regions", args.regions),
                                          ("--chroms", args.chroms), ("--dtype", args.dtype)) if value]
        if given:
            raise ValueError(f"plan: {', '.join(given)}: atlas options, not for a "
                             f"{'score-variants' if args.vcf else 'predict-genes'} plan")
        if args.vcf is None:
            if args.scores or args.tss_flank is not None:
                raise ValueError("plan: --scores and --tss-flank need --vcf (predict-genes writes TSS and exon "
                                 "sums; its rows are its genes)")
            plan = plan_genes(args.fasta, args.genes, gene_types=args.gene_types, **common)
        else:
            if (args.gene_types or args.tss_flank is not None) and args.genes is None:
                raise ValueError("plan: --gene-types and --tss-flank need --genes")
            plan = plan_variants(args.fasta, args.vcf, genes=args.genes, gene_types=args.gene_types,
                                 tss_flank=args.tss_flank, scores=args.scores, **common)
    print(plan)
    if args.model is None:
        print("(no --model: planned for the full-size Enformer; --model demo|PATH plans for another checkpoint)")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    """``serve``: interactive experiments (enformer_batch.serve), its arguments from the module."""
    from .serve import add_arguments

    add_arguments(sub.add_parser("serve", help="web page and JSON API: edits, mutagenesis and gene effects on warm "
                                 "model replicas",
                                 description="Serve a page and a JSON API (see the README, 'Interactive experiments: "
                                 "serve') on 127.0.0.1 unless --host says otherwise."))


def _serve(args: argparse.Namespace) -> int:
    from .serve import run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {k.command: _run_kind(k) for k in KINDS.values()}
    handlers.update({"validate": _validate, "tracks": _tracks, "query": _query, "export-bigwig": _export_bigwig,
                     "plot": _plot, "plan": _plan, "plot-mutagenesis": _plot_mutagenesis, "plot-edit": _plot_edit,
                     "export-attributions": _export_attributions, "plot-attribution": _plot_attribution})
    handlers["serve"] = _serve
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
