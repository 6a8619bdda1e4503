"""The HTTP side of ``serve``: request checking, authentication, the JSON API and the page's static files.

Standard library only (``http.server``): one thread per connection, each waiting on a replica's answer.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..annotation import Annotation, read_annotation
from ..gene_scores import DEFAULT_TSS_FLANK, GENE_SCORES, gene_validity, track_strands
from ..genome import FastaSource
from ..kinds.edits import Edit
from ..kinds.mutagenesis import Region
from ..kinds.scoring import SCORES
from ..settings import InferenceSettings
from .replicas import EditAnswer, MutagenesisAnswer, QueueFull, Replicas

# Request bounds (see the README's "Interactive experiments: serve").
MAX_BODY_BYTES = 64 * 1024
MAX_EDIT_BP = 10_000  # bases an edit replaces, and bases it inserts
MAX_MUTAGENESIS_BP = 200
MAX_SEQUENCE_BP = 2_000  # /api/sequence
MAX_ATLAS_BP = 1_000_000  # /api/atlas from an atlas; predicted on the fly: the model's output span
MAX_PLOT_TRACKS = 32  # tracks whose per-bin values one answer carries
MAX_GENE_MATCHES = 20  # genes one /api/gene answer lists (a name is rarely on more than two chromosomes)
REQUEST_TIMEOUT_S = 600.0

# The page and what it loads: the only files a request can reach (name -> content type).
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "vendor/uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "vendor/uPlot.min.css": "text/css; charset=utf-8",
    "vendor/LICENSE.uPlot": "text/plain; charset=utf-8",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback (Host header checks)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def needs_token(host: str) -> bool:
    """Every bind address but the default loopback ones needs a token, even another 127.x address."""
    return host not in LOOPBACK_HOSTS


@dataclass
class ServeOptions:
    """What ``enformer-batch serve`` was given."""

    fasta: str
    model: str = "demo"
    head: str = "human"
    tracks: str | None = None
    atlas: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    batch_size: int | None = None
    precision: str = "auto"
    rc: bool = False
    shifts: tuple[int, ...] = (0,)
    unsquash: bool = False  # Borzoi: scores on the coverage scale, as score-variants/edits --unsquash give them
    n_encoding: str = "zeros"
    devices: tuple[str, ...] = ()  # empty: every CUDA device, else the CPU
    queue_length: int = 16
    threads: int | None = None  # torch threads (CPU); None: torch's default
    storage_options: Mapping[str, str] = field(default_factory=dict)
    genes: str | None = None  # GTF/GFF3: gene effects of edits and the gene look-up (docs/contract.md, "Genes")
    tss_flank: int = DEFAULT_TSS_FLANK
    gene_types: tuple[str, ...] | None = None

    def settings(self) -> InferenceSettings:
        """The inference settings a batch ``edits`` run with the same options uses (float32, as its scores)."""
        return InferenceSettings(model=self.model, head=self.head, tracks=self.tracks, precision=self.precision,
                                 rc=self.rc, shifts=tuple(self.shifts), batch_size=self.batch_size,
                                 unsquash=self.unsquash, n_encoding=self.n_encoding,
                                 dtype="float32", storage_options=dict(self.storage_options))


def default_devices() -> tuple[str | None, ...]:
    import torch

    if torch.cuda.is_available():
        return tuple(f"cuda:{i}" for i in range(torch.cuda.device_count()))
    return (None,)


class App:
    """The API over warm replicas; ``handle`` maps (method, path, query, body) to (status, JSON)."""

    def __init__(self, options: ServeOptions):
        if needs_token(options.host) and not options.token:
            options.token = secrets.token_urlsafe(18)
        self.options = options
        if options.threads:
            import torch

            torch.set_num_threads(options.threads)
        self.fasta = FastaSource(options.fasta, dict(options.storage_options))
        # The gene models before the weights: a bad annotation line stops the start at once.
        self.annotation: Annotation | None = None
        self.gene_index: dict[str, list[tuple[str, int]]] = {}
        if options.genes:
            self.annotation = read_annotation(options.genes, self.fasta.lengths(), options.gene_types,
                                              dict(options.storage_options))
            self.annotation.require_genes(self.fasta.name)
            self.gene_index = _gene_index(self.annotation)
        self.atlas = None
        if options.atlas:
            from ..atlas import open_atlas

            self.atlas = open_atlas(options.atlas, dict(options.storage_options))
        self.replicas = Replicas(options.settings(), self.fasta, options.devices or default_devices(),
                                 options.queue_length, self.annotation, options.tss_flank)
        self.info = self.replicas.info
        self.lengths = self.replicas.lengths
        self.track_names = list(self.info.track_names)
        self.track_strands = self.info.track_strands or track_strands(self.track_names)
        self._static = {name: (resources.files(__package__) / "static" / name).read_bytes() for name in STATIC_FILES}

    # --- checking requests ------------------------------------------------------------------------
    def _chrom(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self.lengths:
            raise ApiError(400, f"chromosome {value!r} is not in the FASTA")
        return value

    def _int(self, body: Mapping, key: str) -> int:
        value = body.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(400, f"{key!r} must be an integer, got {value!r}")
        return value

    def _region(self, text: str | None, max_bp: int) -> tuple[str, int, int]:
        from ..atlas import parse_region

        if not text:
            raise ApiError(400, "give region=chr:start-end (0-based half-open)")
        try:
            chrom, start, end = parse_region(text)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        if start is None or end is None:
            raise ApiError(400, f"region {text!r} needs a range: chr:start-end (0-based half-open)")
        self._chrom(chrom)
        if not 0 <= start < end <= self.lengths[chrom]:
            raise ApiError(400, f"region {text}: needs 0 <= start < end <= {self.lengths[chrom]:,} (the length of "
                           f"{chrom})")
        if end - start > max_bp:
            raise ApiError(400, f"region {text} is {end - start:,} bp; at most {max_bp:,} bp here")
        return chrom, start, end

    def _tracks(self, value: Any, limit: int | None = None) -> list[int]:
        """Indices into the served tracks: None/"all", a list of names, or comma-separated names."""
        if value is None or value == "all" or value == "":
            chosen = list(range(len(self.track_names)))
        else:
            names = value.split(",") if isinstance(value, str) else value
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ApiError(400, "'tracks' must be a list of track names or a comma-separated string")
            index = {n: i for i, n in enumerate(self.track_names)}
            unknown = [n for n in names if n.strip() not in index]
            if unknown:
                raise ApiError(400, f"unknown track {unknown[0]!r}; GET /api/tracks lists the served tracks")
            chosen = list(dict.fromkeys(index[n.strip()] for n in names))
            if not chosen:
                raise ApiError(400, "the track selection is empty")
        if limit is not None and len(chosen) > limit:
            raise ApiError(400, f"{len(chosen)} tracks selected; at most {limit} with per-bin values (select "
                           "fewer with 'tracks', or ask for scores only with \"predictions\": false)")
        return chosen

    def _gene_scores(self, value: Any) -> list[str]:
        if value is None:
            return list(GENE_SCORES)
        names = value.split(",") if isinstance(value, str) else value
        if not isinstance(names, list) or not names or any(n not in GENE_SCORES for n in names):
            raise ApiError(400, f"'gene_scores' takes a non-empty subset of {', '.join(GENE_SCORES)}; got {value!r}")
        return list(dict.fromkeys(names))

    def _scores(self, value: Any) -> list[str]:
        if value is None:
            return ["sad"]
        names = value.split(",") if isinstance(value, str) else value
        if not isinstance(names, list) or not names or any(n not in SCORES for n in names):
            raise ApiError(400, f"'scores' takes a non-empty subset of {', '.join(SCORES)}; got {value!r}")
        return list(dict.fromkeys(names))

    def parse_edit(self, body: Mapping) -> Edit:
        """One EDITS.tsv row as JSON, checked as ``read_edits`` checks a line."""
        chrom = self._chrom(body.get("chrom"))
        start, end = self._int(body, "start"), self._int(body, "end")
        sequence = body.get("sequence", "")
        if not isinstance(sequence, str):
            raise ApiError(400, "'sequence' must be a string of bases (A, C, G, T, N)")
        length = self.lengths[chrom]
        if not 0 <= start <= end <= length:
            raise ApiError(400, f"needs 0 <= start <= end <= {length:,} (the length of {chrom}); got {start}-{end}")
        if start == end and not sequence:
            raise ApiError(400, "an empty sequence at start == end changes nothing")
        if sequence.strip("ACGTNacgtn"):
            raise ApiError(400, "the sequence must be bases (A, C, G, T, N)")
        if end - start > MAX_EDIT_BP or len(sequence) > MAX_EDIT_BP:
            raise ApiError(400, f"an edit replaces and inserts at most {MAX_EDIT_BP:,} bp here")
        name = body.get("name", "edit")
        if not isinstance(name, str) or any(c in name for c in "\t\r\n") or len(name) > 200:
            raise ApiError(400, "'name' must be a short string without tabs or newlines")
        return Edit(0, name or "edit", chrom, start, end, sequence.upper())

    # --- the API ----------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: Mapping[str, str], body: Any) -> tuple[int, dict]:
        routes = {
            ("GET", "/api/health"): self.health,
            ("GET", "/api/tracks"): self.tracks,
            ("GET", "/api/sequence"): self.sequence,
            ("GET", "/api/atlas"): self.atlas_view,
            ("GET", "/api/gene"): self.gene,
            ("POST", "/api/edit"): self.edit,
            ("POST", "/api/mutagenesis"): self.mutagenesis,
        }
        route = routes.get((method, path))
        if route is None:
            if any(p == path for _, p in routes):
                raise ApiError(405, f"{method} is not allowed on {path}")
            raise ApiError(404, f"no such endpoint: {path}")
        return 200, route(query if method == "GET" else body)

    def health(self, _: Any) -> dict:
        return {"status": "ok", "model": self.info.model_id, "device": self.info.device, **self.replicas.load()}

    def tracks(self, _: Any) -> dict:
        g = self.info.geometry
        return {
            "model": self.info.model_id, "head": self.info.head, "family": self.info.family,
            "tracks": [{"name": n, "description": d} for n, d in zip(self.track_names, self.info.track_descriptions)],
            "scores": list(SCORES), "chromosomes": self.lengths, "atlas": self.atlas is not None,
            "options": {"rc": self.options.rc, "shifts": list(self.options.shifts),
                        "unsquash": self.options.unsquash, "n_encoding": self.options.n_encoding},
            "genes": None if self.annotation is None else {
                "annotation": self.annotation.name, "genes": self.annotation.genes,
                "tss_flank": self.options.tss_flank, "scores": list(GENE_SCORES)},
            "geometry": {"input_length": g.input_length, "bin_size": g.bin_size, "output_bins": g.output_bins,
                         "output_span": g.output_span},
            "limits": {"edit_bp": MAX_EDIT_BP, "mutagenesis_bp": MAX_MUTAGENESIS_BP, "sequence_bp": MAX_SEQUENCE_BP,
                       "atlas_bp": MAX_ATLAS_BP if self.atlas is not None else g.output_span,
                       "plot_tracks": MAX_PLOT_TRACKS, "queue": self.replicas.queue_length},
        }

    def sequence(self, query: Mapping[str, str]) -> dict:
        chrom, start, end = self._region(query.get("region"), MAX_SEQUENCE_BP)
        fasta = self.fasta.open()
        try:
            bases = str(fasta[chrom][start:end]).upper()
        finally:
            fasta.close()
        return {"chrom": chrom, "start": start, "end": end, "sequence": bases}

    def atlas_view(self, query: Mapping[str, str]) -> dict:
        """Bins overlapping the region: the atlas's rows (as ``query``), or predicted now from the window centred
        on the region (no atlas)."""
        span = self.info.geometry.output_span
        chrom, start, end = self._region(query.get("region"), MAX_ATLAS_BP if self.atlas is not None else span)
        chosen = self._tracks(query.get("tracks"), MAX_PLOT_TRACKS)
        names = [self.track_names[i] for i in chosen]
        if self.atlas is not None:
            try:
                table = self.atlas.query(chrom, start, end, tracks=names)
            except ValueError as e:
                raise ApiError(400, str(e)) from None
            bins = table.column("start").to_pylist()
            values = {n: [None if v is None else float(v) for v in table.column(n).cast("float32").to_pylist()]
                      for n in names}
            source = "atlas"
        else:
            # Centred on a bin boundary: the bins fall where an atlas's do (multiples of the bin size).
            size = self.info.geometry.bin_size
            predicted, first_bp = self._result(self.replicas.submit_window(chrom, (start + end) // 2 // size * size))
            keep = [b for b in range(predicted.shape[0]) if first_bp + (b + 1) * size > start
                    and first_bp + b * size < end and first_bp + b * size >= 0]
            bins = [first_bp + b * size for b in keep]
            values = {n: _floats(predicted[keep, i]) for n, i in zip(names, chosen)}
            source = "predicted"
        return {"chrom": chrom, "start": start, "end": end, "source": source,
                "bin_size": self.info.geometry.bin_size, "bins": bins, "values": values}

    def edit(self, body: Any) -> dict:
        body = _object(body)
        edit = self.parse_edit(body)
        scores = self._scores(body.get("scores"))
        want_predictions = body.get("predictions", True)
        if not isinstance(want_predictions, bool):
            raise ApiError(400, "'predictions' must be true or false")
        chosen = self._tracks(body.get("tracks"), MAX_PLOT_TRACKS if want_predictions else None)
        gene_scores = None
        if self.annotation is not None:
            gene_scores = self._gene_scores(body.get("gene_scores"))
        elif body.get("gene_scores") is not None:
            raise ApiError(400, "'gene_scores' needs gene models: start the server with --genes GTF")
        answer: EditAnswer = self._result(self.replicas.submit_edit(edit))
        out: dict[str, Any] = {"status": answer.status, "name": edit.name, "chrom": edit.chrom, "start": edit.start,
                               "end": edit.end, "sequence": edit.sequence}
        names = [self.track_names[i] for i in chosen]
        if answer.scores is None:
            out["scores"] = {f"{s}:{n}": None for s in scores for n in names}
            if gene_scores is not None:
                out["genes"] = None  # not scored
            return out
        out["scores"] = {f"{s}:{n}": float(answer.scores[SCORES.index(s), i]) for s in scores
                         for n, i in zip(names, chosen)}
        if gene_scores is not None:
            out["genes"] = self._gene_effects(edit, answer, gene_scores, names, chosen)
        if want_predictions:
            size = self.info.geometry.bin_size
            out["bins"] = [answer.first_bp + b * size for b in range(answer.ref.shape[0])]
            out["ref"] = {n: _floats(answer.ref[:, i]) for n, i in zip(names, chosen)}
            out["alt"] = {n: _floats(answer.alt[:, i]) for n, i in zip(names, chosen)}
        return out

    def _gene_effects(self, edit: Edit, answer: EditAnswer, scores: list[str], names: list[str],
                      chosen: list[int]) -> list[dict]:
        """The genes in range of the edit's window, in ``score-variants --genes`` row order, each with its scores
        (null where that command writes null: an empty bin set, or a track of the other strand)."""
        window = answer.genes
        if window is None or not len(window) or answer.gene_scores is None:
            return []  # score-variants --genes writes this allele one row with status no_gene
        valid = gene_validity(window, self.track_strands, GENE_SCORES)
        rows = []
        for g, gene in enumerate(window.genes):
            values = {}
            for s in scores:
                k = GENE_SCORES.index(s)
                for n, i in zip(names, chosen):
                    values[f"{s}:{n}"] = float(answer.gene_scores[g, k, i]) if valid[g, k, i] else None
            rows.append({"gene_id": gene.gene_id, "gene_name": gene.gene_name, "strand": gene.strand,
                         "tss_distance": gene.tss_distance(edit.start), "scores": values})
        return rows

    def gene(self, query: Mapping[str, str]) -> dict:
        """A gene by name or gene_id (case-insensitive; a versioned id also without its ``.N``): where it is, for
        the page to show the region around it."""
        if self.annotation is None:
            raise ApiError(400, "this server has no gene models: start it with --genes GTF")
        name = (query.get("name") or "").strip()
        if not name or len(name) > 200:
            raise ApiError(400, "give name=GENE (a gene_name or gene_id of the annotation)")
        found = self.gene_index.get(name.casefold())
        if not found:
            raise ApiError(404, f"no gene named {name!r} in {self.annotation.name}")
        genes = []
        for chrom, i in found[:MAX_GENE_MATCHES]:
            gene = self.annotation.on(chrom).gene(i)
            genes.append({"gene_id": gene.gene_id, "gene_name": gene.gene_name, "gene_type": gene.gene_type,
                          "chrom": chrom, "start": gene.start, "end": gene.end, "strand": gene.strand,
                          "tss": gene.first_tss, "tss_all": [int(t) for t in gene.tss]})
        return {"name": name, "genes": genes, "matches": len(found)}

    def mutagenesis(self, body: Any) -> dict:
        body = _object(body)
        chrom = self._chrom(body.get("chrom"))
        start, end = self._int(body, "start"), self._int(body, "end")
        chrom, start, end = self._region(f"{chrom}:{start}-{end}", MAX_MUTAGENESIS_BP)
        scores = self._scores(body.get("scores"))
        chosen = self._tracks(body.get("tracks"), MAX_PLOT_TRACKS)
        label = f"{chrom}:{start}-{end}"
        answer: MutagenesisAnswer = self._result(self.replicas.submit_mutagenesis(Region(chrom, start, end, label)))
        names = [self.track_names[i] for i in chosen]
        return {"region": label, "pos": answer.pos, "ref": answer.ref, "alt": answer.alt, "status": answer.status,
                "scores": {f"{s}:{n}": _floats(answer.scores[:, SCORES.index(s), i]) for s in scores
                           for n, i in zip(names, chosen)}}

    def _result(self, future_or_error):
        try:
            return future_or_error.result(timeout=REQUEST_TIMEOUT_S)
        except FutureTimeout:
            raise ApiError(503, f"no answer within {REQUEST_TIMEOUT_S:.0f} s") from None
        except CancelledError:
            raise ApiError(503, "the server is shutting down") from None
        except ValueError as e:  # bad input found while reading it (the genome, say)
            raise ApiError(400, str(e)) from None

    # --- authentication ---------------------------------------------------------------------------
    def check_access(self, headers: Mapping[str, str], query: Mapping[str, str]) -> None:
        """With a token: ``Authorization: Bearer T`` (or ``?token=T``). Without one (the loopback), the Host header
        must name the loopback too, so a web page elsewhere cannot reach the server through a rebound DNS name."""
        if not self.options.token:
            host = (headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
            if host and not is_loopback(host):
                raise ApiError(403, f"Host {host!r} is not this loopback server")
        if not self.options.token:
            return
        given = None
        auth = headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            given = auth[len("Bearer "):].strip()
        elif "token" in query:
            given = query["token"]
        if not given:
            raise ApiError(401, "this server needs its token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.encode(), self.options.token.encode()):
            raise ApiError(403, "wrong token")

    def static(self, path: str) -> tuple[bytes, str] | None:
        name = "index.html" if path in ("/", "/index.html") else path.lstrip("/")
        if name not in STATIC_FILES:
            return None
        return self._static[name], STATIC_FILES[name]

    def close(self) -> None:
        self.replicas.close()


def _object(body: Any) -> Mapping:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _gene_index(annotation: Annotation) -> dict[str, list[tuple[str, int]]]:
    """casefolded gene_name, gene_id and unversioned gene_id → (chromosome, index) of each gene so called, in the
    FASTA's chromosome order, then by start."""
    index: dict[str, list[tuple[str, int]]] = {}
    for chrom, genes in annotation.chroms.items():
        for i, (gene_id, gene_name) in enumerate(zip(genes.gene_ids, genes.gene_names)):
            keys = {gene_id.casefold(), gene_name.casefold(), gene_id.split(".")[0].casefold()}
            for key in keys:
                index.setdefault(key, []).append((chrom, i))
    return index


def _floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, np.float32)]


class Handler(BaseHTTPRequestHandler):
    server_version = "enformer-batch-serve"
    timeout = 60  # seconds a connection may sit idle mid-request (a stalled client does not hold a thread forever)
    app: App  # set on the subclass made for one server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.server.verbose:  # type: ignore[attr-defined]
            super().log_message(format, *args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        path = split.path
        try:
            query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            if not path.startswith("/api/"):
                if method != "GET":
                    raise ApiError(405, f"{method} is not allowed on {path}")
                found = self.app.static(path)
                if found is None:
                    raise ApiError(404, f"no such page: {path}")
                self._send(200, found[0], found[1])
                return
            self.app.check_access(self.headers, query)
            body = None
            if method == "POST":
                body = self._body()
            status, answer = self.app.handle(method, path, query, body)
            self._json(status, answer)
        except ApiError as e:
            self._json(e.status, {"error": str(e)}, retry=e.status == 429)
        except QueueFull as e:
            self._json(429, {"error": str(e)}, retry=True)
        except Exception as e:  # noqa: BLE001 - one failed request, the server keeps serving
            print(f"enformer-batch serve: {method} {path}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            self._json(500, {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})

    def _body(self) -> Any:
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "send the body with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
        if length > MAX_BODY_BYTES:
            raise ApiError(413, f"the body is {length:,} bytes; at most {MAX_BODY_BYTES:,}")
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        raw = self.rfile.read(length) if length > 0 else b""
        # JSON only: a cross-site form cannot send it without the browser asking first (CORS), which we never allow.
        if content_type != "application/json":
            raise ApiError(415, "send the body as Content-Type: application/json")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not JSON: {e}") from None

    def _json(self, status: int, payload: dict, retry: bool = False) -> None:
        data = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        self._send(status, data, "application/json", {"Retry-After": "1"} if retry else None)

    def _send(self, status: int, data: bytes, content_type: str, extra: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data: blob:; "
                         "style-src 'self' 'unsafe-inline'")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class Server:
    """``App`` on an HTTP server in a background thread (``serve`` runs it in the foreground)."""

    def __init__(self, options: ServeOptions, verbose: bool = False):
        self.app = App(options)
        handler = type("BoundHandler", (Handler,), {"app": self.app})
        try:
            self.httpd = ThreadingHTTPServer((options.host, options.port), handler)
        except OSError:
            self.app.close()
            raise
        self.httpd.daemon_threads = True
        self.httpd.verbose = verbose  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.app.options.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def start(self) -> Server:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="serve-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:  # serve_forever runs in our thread: stop it
            self.httpd.shutdown()
        self.httpd.server_close()
        self.app.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
