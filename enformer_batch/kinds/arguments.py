"""Command-line options every job kind shares: the model, how it is run, the replicas, the output.

Each kind adds its own arguments beside these (``Kind.add_arguments``) and builds its config with
``run_options``; ``enformer_batch.cli`` and the ``jobs/`` entrypoints parse with them.
"""

from __future__ import annotations

import argparse


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def str_list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def storage_option(text: str) -> tuple[str, str]:
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
    parser.add_argument("--batch-size", type=batch_size, default="auto", metavar="N|auto",
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
    parser.add_argument("--shifts", type=int_list, default=(0,),
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
    parser.add_argument("--storage-option", type=storage_option, action="append", default=[], metavar="KEY=VALUE",
                        help="fsspec storage option for input, model and --out URLs (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def batch_size(text: str) -> int | None:
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


def add_gene_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--tss-flank`` and ``--gene-types`` (``score-variants --genes``, ``predict-genes``)."""
    from ..gene_scores import DEFAULT_TSS_FLANK

    parser.add_argument("--tss-flank", type=int, default=DEFAULT_TSS_FLANK, metavar="BINS",
                        help=f"{prefix}output bins each side of a TSS's bin that count as TSS bins "
                        f"(default {DEFAULT_TSS_FLANK}: three bins per TSS)")
    parser.add_argument("--gene-types", type=str_list, default=None, metavar="LIST",
                        help=f"{prefix}keep only genes of these gene_type/gene_biotype values, e.g. "
                        "protein_coding,lncRNA")
