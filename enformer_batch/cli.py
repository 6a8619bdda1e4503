"""The ``enformer-batch`` command: a thin layer over the Python API (``predict``, ``validate``, ``tracks``).

Errors a user can fix (bad input, an ``--out`` holding another run, a failed part) print one line naming
the problem and exit non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
            "Tile FASTA into model windows (Enformer: 196,608 bp in, 896 bins of 128 bp out), predict them on "
            "Ray actors (one per GPU, or one CPU worker), and write <out>/chrom=<name>/part-*.parquet with "
            "columns start, end and one per track, plus _manifest.json and _SUCCESS. Re-running the same "
            "command on the same --out resumes; an --out holding another configuration is refused unless "
            "--overwrite."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("fasta", help="FASTA path or fsspec URL (s3://, gs://, https://...); indexed via its .fai")
    p.add_argument("--out", required=True, help="atlas directory or object-store prefix")
    p.add_argument("--model", default="demo", help="'demo' (embedded tiny model), a checkpoint directory or URL "
                   "(config.json + model.safetensors or pytorch_model.bin), or hf://ORG/NAME")
    p.add_argument("--head", default="human", help="output head")
    p.add_argument("--tracks", default=None, help="track selection: indices '0,5', ranges '0-9' (inclusive), "
                   "identifiers, or a regex over descriptions such as '^CAGE:'; default all")
    p.add_argument("--stride", type=int, default=None, help="bp between windows; multiple of the bin size, "
                   "at most the output span (default: the output span, 114,688 for Enformer)")
    p.add_argument("--regions", default=None, help="BED file: predict only bins overlapping these intervals")
    p.add_argument("--chroms", type=_str_list, default=None, help="comma-separated chromosomes (default: all)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per model call")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="compute precision")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored value type")
    p.add_argument("--rc", action="store_true", help="average with the reverse-complement prediction")
    p.add_argument("--shifts", type=_int_list, default=(0,), help="average over these input shifts, e.g. -1,0,1")
    p.add_argument("--n-encoding", default="zeros", choices=["zeros", "uniform"],
                   help="one-hot row for N, IUPAC codes and padding")
    p.add_argument("--workers", type=int, default=None, help="model replicas (default: one per GPU share, else 1)")
    p.add_argument("--gpus-per-worker", type=float, default=1.0, help="GPUs per replica (fractions share a GPU)")
    p.add_argument("--overwrite", action="store_true", help="replace an --out holding another run")
    p.add_argument("--storage-option", type=_storage_option, action="append", default=[], metavar="KEY=VALUE",
                   help="fsspec storage option for FASTA, BED, model and --out URLs (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    v = sub.add_parser("validate", help="check an atlas: manifest, parts, checksums, exactly-once coverage",
                       description="Exit 0 when the atlas is complete and sound; otherwise list each defect "
                       "and exit 1.")
    v.add_argument("url", help="atlas directory or URL")
    v.add_argument("--fasta", default=None, help="check chromosome lengths against this FASTA's index")
    v.add_argument("--storage-option", type=_storage_option, action="append", default=[], metavar="KEY=VALUE")

    t = sub.add_parser("tracks", help="list a model's tracks")
    t.add_argument("model", nargs="?", default="demo", help="'demo', a checkpoint directory or URL")
    return parser


def _predict(args: argparse.Namespace) -> int:
    from .predict import PredictConfig, predict

    config = PredictConfig(
        fasta=args.fasta,
        out=args.out,
        model=args.model,
        head=args.head,
        tracks=args.tracks,
        stride=args.stride,
        regions=args.regions,
        chroms=args.chroms,
        batch_size=args.batch_size,
        precision=args.precision,
        dtype=args.dtype,
        rc=args.rc,
        shifts=args.shifts,
        n_encoding=args.n_encoding,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        overwrite=args.overwrite,
        storage_options=dict(args.storage_option),
        progress=not args.no_progress,
    )
    summary = predict(config)
    print(summary)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .atlas import validate

    report = validate(args.url, fasta=args.fasta, storage_options=dict(args.storage_option))
    print(report.table())
    return 0 if report.ok else EXIT_FAILED


def _tracks(args: argparse.Namespace) -> int:
    from .model import load_model
    from .tracks import render_track_table

    loaded = load_model(args.model)
    print(render_track_table(loaded.tracks, dict(loaded.config.output_heads)), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"predict": _predict, "validate": _validate, "tracks": _tracks}
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
