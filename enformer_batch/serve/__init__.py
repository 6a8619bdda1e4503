"""``enformer-batch serve``: a web page and a JSON API for interactive edits over warm model replicas.

Contract: docs/contract.md, "Interactive experiments". The page picks a region, shows its tracks (from
``--atlas``, or predicted on the fly), scores edits typed or clicked on the sequence, plots reference and edited
tracks, runs a small saturation mutagenesis as a heat map and downloads the page's edits as an EDITS.tsv.

Replicas: plain in-process classes, not Ray Serve. One ``inference.Predictor`` per device (every CUDA device,
else the CPU), each held by a worker thread that takes requests from one bounded queue:

* warm: weights are loaded once at start and the near-change path's reference towers stay cached between
  requests (clicking bases at one position recomputes only the conv tower around each change);
* batching: a worker takes every edit waiting when it frees up; edits at one position go through one
  ``score_part`` call, sharing one reference window and device batch as in a batch run's part (on the
  near-change path other edits gain nothing from company, so each is answered as soon as it is done; without
  it, as for Borzoi, all waiting edits fill device batches together);
* back-pressure: past ``--queue`` waiting requests the answer is HTTP 429 at once, never an unbounded backlog.

Ray Serve would add a second process tree, an HTTP proxy and a Ray cluster to start for what is one machine's
devices answering one person's clicks, and the model's answer would cross process boundaries (object store,
pickling of 896 x tracks arrays) on the path whose latency is the point. Scaling past one machine is what the
batch commands are for: the page downloads its edits as an EDITS.tsv for ``enformer-batch edits``.

Scores come from the batch commands' own code (``EditMode.read``, ``MutagenesisMode``, ``score_part``), so an
answer equals what ``edits`` (or ``mutagenesis``) writes for the same row with the same model and options.
With ``--genes GTF`` the gene models are read once at start (``annotation.read_annotation``: per chromosome, only
exons and TSSs) and an edit's answer gains the effect on each gene in range of its window, computed as
``score-variants --genes`` computes it (``gene_scores.window_genes``, ``GeneReducer``), so the numbers equal that
command's for the same allele; ``/api/gene`` finds a gene by name for the page.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..kinds.arguments import add_gene_arguments

if TYPE_CHECKING:
    from .server import ServeOptions

# The server (torch, pyarrow) is imported only when it runs: the CLI builds this parser for every command.
__all__ = ["add_arguments", "options_from_args", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``enformer-batch serve``."""
    parser.add_argument("fasta", help="reference genome (path or fsspec URL, any form predict takes)")
    parser.add_argument("--model", default="demo", help="'demo', 'demo-borzoi', or a checkpoint directory/URL (as "
                        "for predict)")
    parser.add_argument("--head", default="human", help="output head")
    parser.add_argument("--tracks", default=None, help="tracks to serve (the --tracks grammar of predict); "
                        "default all")
    parser.add_argument("--atlas", default=None, help="atlas directory or URL to browse (default: predict the "
                        "viewed region on the fly)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; anything but the loopback needs the "
                            "token (printed at start, or --token)")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    parser.add_argument("--token", default=None, help="access token for the API (default: a random one when --host "
                        "is not the loopback)")
    parser.add_argument("--batch-size", type=int, default=None, help="model inputs per model call (default: auto)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="compute precision (auto: bf16 on GPUs that have it, fp32 elsewhere)")
    parser.add_argument("--rc", action="store_true", help="average with the reverse-complement prediction")
    parser.add_argument("--shifts", default="0", help="average over these input shifts (bp), comma-separated")
    parser.add_argument("--unsquash", action="store_true", help="Borzoi: undo the squashed target scale before "
                        "scoring, as the batch commands' --unsquash does (give the same flag to compare)")
    parser.add_argument("--n-encoding", default="zeros", choices=["zeros", "uniform"],
                        help="one-hot of N (as for the batch commands)")
    parser.add_argument("--queue", type=int, default=16, help="requests that may wait for a replica; past it, 429")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="fsspec storage option for the FASTA, model and atlas URLs (repeatable)")
    parser.add_argument("--genes", default=None, metavar="GTF", help="gene models (GTF or GFF3, plain or gzip, path "
                        "or URL): edits answer their effect on each gene in range, as score-variants --genes "
                        "scores it, and the page finds genes by name")
    add_gene_arguments(parser, "with --genes: ")
    parser.add_argument("--verbose", action="store_true", help="log every request")


def options_from_args(args: argparse.Namespace) -> ServeOptions:
    from ..annotation import parse_gene_types
    from ..gene_scores import DEFAULT_TSS_FLANK, check_tss_flank
    from .server import ServeOptions

    try:
        shifts = tuple(int(x) for x in str(args.shifts).split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--shifts takes comma-separated integers, got {args.shifts!r}") from None
    if args.genes is None and (args.gene_types is not None or args.tss_flank != DEFAULT_TSS_FLANK):
        raise ValueError("--tss-flank and --gene-types need --genes GTF")
    check_tss_flank(args.tss_flank)
    pairs = [s.partition("=") for s in args.storage_option]
    if any(not sep or not key for key, sep, _ in pairs):
        raise ValueError("--storage-option takes KEY=VALUE")
    return ServeOptions(
        fasta=args.fasta, model=args.model, head=args.head, tracks=args.tracks, atlas=args.atlas, host=args.host,
        port=args.port, token=args.token, batch_size=args.batch_size, precision=args.precision, rc=args.rc,
        shifts=shifts or (0,), unsquash=args.unsquash, n_encoding=args.n_encoding, queue_length=args.queue,
        threads=args.threads,
        storage_options={k: v for k, _, v in pairs}, genes=args.genes, tss_flank=args.tss_flank,
        gene_types=parse_gene_types(args.gene_types),
    )


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted (the CLI's handler)."""
    from .server import Server

    server = Server(options_from_args(args), verbose=args.verbose)
    app = server.app
    print(f"enformer-batch serve: {app.info.model_id} on {app.info.device} x{len(app.replicas.predictors)}, "
          f"{len(app.track_names)} tracks, {'atlas ' + app.options.atlas if app.atlas else 'no atlas'}", flush=True)
    for note in app.annotation.summary() if app.annotation is not None else ():
        print(f"enformer-batch serve: {note}", flush=True)
    url = server.url
    if app.options.token:
        print(f"enformer-batch serve: token {app.options.token} (send 'Authorization: Bearer <token>')", flush=True)
        url += f"?token={app.options.token}"
    print(f"enformer-batch serve: open {url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("enformer-batch serve: stopped", file=sys.stderr)
    finally:
        server.close()
    return 0
