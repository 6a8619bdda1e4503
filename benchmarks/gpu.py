"""The GPU path, measured in one call on one GPU node: ceilings, numerics, batch sweep, MFU, pipeline, hg38 time.

    python benchmarks/gpu.py --out-dir results/ [--fasta chr20.fa] [--budget-s 420]
    python benchmarks/gpu.py --small --budget-s 120        # smoke test on a CPU (reduced width, full geometry)

Runs without Ray (the device stage is the plain ``Predictor``; the pipeline row drives ``ReplicaWorker`` with
threads as the Ray actor does), so it runs on a GPU node where only PyTorch, pyarrow, fsspec and pyfaidx are
installed. Sections, each skipped when the time budget is spent (the table says so):

1. ceilings: a bf16 and an fp32 (TF32 off) 8192³ GEMM and a device-to-device copy, measured here;
2. numerics: the full-size Enformer (random weights, seeded) through ``Predictor`` at fp32 and bf16 against a
   float64 forward of the same weights on the same device, 2 windows of real sequence; the pinned,
   double-buffered ``predict_stream`` and the on-device bin selection against the plain forward;
3. the defaults (``--precision auto --batch-size auto --compile auto``) as resolved on this device: compilation
   time, a short (padded) batch, numerics against float64, peak memory;
4. batch sweeps at bf16 eager and compiled (and fp32) with 5,313 float16 tracks copied back: windows/s,
   TFLOP/s, MFU;
5. enformer-pytorch (if importable) on the same weights, fp32 and bf16 autocast, same batch;
6. the pipeline without Ray on a real chromosome, with the defaults (auto precision, batch size and compile):
   reading, the device stream, stitching, Parquet writing by writer threads — end-to-end windows/s against the
   device stage alone, with one or two parts on the device and several writer counts, and the hg38 time;
7. full-size Borzoi: ours (eager, compiled) against borzoi-pytorch on the same weights.

``--sections`` picks sections (ceilings, numerics, auto, sweep, compiled, fp32, reference, pipeline, borzoi).

Results go to ``OUT_DIR/gpu.json`` after every section and a Markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from enformer_batch.model import Enformer, EnformerConfig, canonical_state_dict  # noqa: E402
from enformer_batch.settings import InferenceSettings, auto_batch_size  # noqa: E402

DATASHEET_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM, vendor datasheets
HG38_PRIMARY_BP = 3_099_734_149  # UCSC hg38 chrom.sizes, chr1-22, X, Y, M


class Budget:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


# --- 1. ceilings -----------------------------------------------------------------------------------


def ceilings(device: torch.device, small: bool) -> dict:
    n = 1024 if small else 8192
    result = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        torch.backends.cuda.matmul.allow_tf32 = False
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        a @ b
        secs = timed(lambda a=a, b=b: a @ b, device, 3 if small else 10)
        result[f"gemm_{name}_tflops"] = 2 * n**3 / float(np.median(secs)) / 1e12
    x = torch.randn(256 * 2**20 if not small else 2**20, device=device)  # 1 GiB of fp32 on the GPU
    y = torch.empty_like(x)
    secs = timed(lambda: y.copy_(x), device, 5)
    result["copy_tb_s"] = 2 * x.numel() * 4 / float(np.median(secs)) / 1e12
    return result


# --- the model ------------------------------------------------------------------------------------


def write_checkpoint(directory: Path, config: EnformerConfig, seed: int = 0) -> Enformer:
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = Enformer(config).eval()
    with torch.no_grad():  # BatchNorm running statistics away from identity, as trained weights have
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config.to_dict()))
    state = {k: v.contiguous() for k, v in canonical_state_dict(model).items()}
    save_file(state, str(directory / "model.safetensors"))
    return model


def model_config(small: bool) -> EnformerConfig:
    if small:
        return EnformerConfig(dim=48, depth=1, heads=2, attn_dim_key=16, dim_divisible_by=8, dropout_rate=0.0)
    return EnformerConfig()


def predictor(ckpt: Path, precision: str, batch_size: int | None, dtype: str = "float16", device=None,
              compile_model: bool | None = None):
    from enformer_batch.inference import Predictor

    settings = InferenceSettings(model=str(ckpt), precision=precision, batch_size=batch_size, dtype=dtype)
    return Predictor(settings, device=device, compile_model=compile_model)


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x, head="human")
    return int(counter.get_total_flops())


def sample_codes(fasta: str | None, n: int, length: int, seed: int = 1) -> tuple[np.ndarray, str]:
    """``n`` windows of base codes: slices of a real chromosome when given (N-free stretches), else random."""
    rng = np.random.default_rng(seed)
    if fasta:
        import pyfaidx

        from enformer_batch.genome import encode

        genome = pyfaidx.Fasta(fasta)
        name = next(iter(genome.keys()))
        chrom = genome[name]
        rows = []
        while len(rows) < n:
            start = int(rng.integers(0, len(chrom) - length))
            codes = encode(str(chrom[start : start + length]))
            if (codes < 4).mean() > 0.99:
                rows.append(codes)
        return np.stack(rows), f"{Path(fasta).name}:{name}"
    return rng.integers(0, 4, size=(n, length), dtype=np.uint8), "random ACGT"


# --- 2. numerics ----------------------------------------------------------------------------------


def reference_outputs(model: Enformer, codes: np.ndarray, device: torch.device) -> torch.Tensor:
    """The human head in float64 on ``device``: the yardstick for every precision below."""
    from enformer_batch.genome import onehot_table

    table = torch.from_numpy(onehot_table("zeros")).double()
    x64 = table[torch.from_numpy(codes).long()].to(device)
    ref_model = copy.deepcopy(model).double().to(device)
    with torch.inference_mode():
        ref = ref_model(x64, head="human").cpu()
    del ref_model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return ref


def compare(got: np.ndarray, ref: torch.Tensor) -> dict:
    got64 = torch.from_numpy(np.asarray(got, dtype=np.float64))
    diff = got64 - ref
    per_track = (diff.abs().amax(dim=(0, 1)) / ref.abs().amax(dim=(0, 1))).numpy()
    return {"rel_l2": float(diff.norm() / ref.norm()), "max_track_rel": float(per_track.max()),
            "median_track_rel": float(np.median(per_track)), "finite": bool(torch.isfinite(got64).all())}


def numerics(ckpt: Path, ref: torch.Tensor, codes: np.ndarray, device: torch.device) -> dict:
    out: dict = {"windows": int(codes.shape[0]), "reference": "float64 forward, same weights, same device"}
    for precision in ("fp32", "bf16"):
        p = predictor(ckpt, precision, codes.shape[0], dtype="float32", device=device, compile_model=False)
        out[precision] = compare(p.predict_batch(codes), ref)
        if precision == "bf16":
            # The pinned, double-buffered stream and on-device bin selection against one plain batch each.
            halves = [codes[:1], codes[1:]]
            plain = [p.predict_batch(h) for h in halves]
            streamed = [s.copy() for s in p.predict_stream((h, None) for h in halves)]
            lo, hi = 224, 672
            sliced = [s.copy() for s in p.predict_stream((h, slice(lo, hi)) for h in halves)]
            which = np.zeros(10, dtype=np.int64)
            bins = np.arange(0, 896, 90, dtype=np.int64)[:10]
            gathered = p.predict_batch(codes[:1], (which, bins))
            out["stream"] = {
                "stream_vs_plain_max_abs": float(max(np.abs(a - b).max() for a, b in zip(streamed, plain))),
                "slice_vs_plain_max_abs": float(max(
                    np.abs(s - pl[0, lo:hi].T).max() for s, pl in zip(sliced, plain))),
                "gather_vs_plain_max_abs": float(np.abs(gathered - plain[0][0, bins].T).max()),
            }
        del p
    return out


# --- 3. auto --------------------------------------------------------------------------------------


def auto_settings(ckpt: Path, ref: torch.Tensor, codes: np.ndarray, device: torch.device) -> dict:
    """The defaults (``--precision auto --batch-size auto --compile auto``) as this device resolves them: the
    first batch (compilation), a short batch (padded: no second compilation), numerics, peak memory."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    p = predictor(ckpt, "auto", None, dtype="float32", device=device)
    info = {"precision": p.precision, "batch_size": p.batch_size, "device": p.info.device,
            "compiled": p.info.compiled}
    full = np.resize(codes, (p.batch_size, codes.shape[1]))
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    p.predict_batch(full)
    info["first_batch_s"] = time.perf_counter() - t
    t = time.perf_counter()
    p.predict_batch(full)
    info["full_batch_s"] = time.perf_counter() - t
    short = codes[: ref.shape[0]]
    t = time.perf_counter()
    got = p.predict_batch(short)
    info["short_batch_s"] = time.perf_counter() - t  # ~ full_batch_s when padding avoids a recompilation
    info["short_batch_windows"] = int(short.shape[0])
    info["vs_float64"] = compare(got, ref)
    info["compiled_after_run"] = p.info.compiled  # False if compilation failed and auto fell back to eager
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        _, total = torch.cuda.mem_get_info(device)
        info.update(total_gib=total / 2**30, weights_gib=base / 2**30, peak_gib=peak / 2**30)
        info["estimate_per_window_gib"] = estimate_per_window(p.info.config, p.precision) / 2**30
        info["measured_per_window_gib"] = (peak - base) / p.batch_size / 2**30
    del p
    return info


def estimate_per_window(config: dict, precision: str) -> float:
    """Invert auto_batch_size: the bytes per window it assumes (fraction 1, a large free size)."""
    free = 2**50
    b = auto_batch_size(free, config, precision, fraction=1.0, max_batch=10**9)
    return free / b


# --- 4. sweep -------------------------------------------------------------------------------------


def sweep(ckpt: Path, codes: np.ndarray, device: torch.device, precision: str, sizes: list[int],
          flops: int, peak_tflops: float, budget: Budget, min_windows: int, compiled: bool = False) -> list[dict]:
    """windows/s through ``predict_stream`` (codes in, float16 tracks out) per batch size. Eager: one predictor
    takes batches of any size; compiled: one predictor (one compilation) per size."""
    rows = []
    p = None if compiled else predictor(ckpt, precision, sizes[0], device=device, compile_model=False)
    for b in sizes:
        if budget.left() < 40:
            rows.append({"precision": precision, "batch": b, "compiled": compiled, "skipped": "time budget"})
            continue
        try:
            if compiled:
                p = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                p = predictor(ckpt, precision, b, device=device, compile_model=True)
            n_batches = max(3, math.ceil(min_windows / b))
            batches = [np.resize(np.roll(codes, k, axis=0), (b, codes.shape[1])) for k in range(n_batches)]
            for _ in p.predict_stream((x, None) for x in batches[:2]):  # warm-up: algorithms, staging buffers
                pass
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            for _ in range(2):
                sync(device)
                t = time.perf_counter()
                for _ in p.predict_stream((x, None) for x in batches):
                    pass
                times.append(time.perf_counter() - t)
            secs = min(times)
            windows = b * n_batches
            # The device alone: the same forwards on device-resident codes, no copies, no host work.
            x_dev = torch.from_numpy(batches[0]).to(device)
            dev = min(timed(lambda x=x_dev, p=p: p.predict_on_device(x), device, 3))
            rate = windows / secs
            row = {
                "precision": precision, "batch": b, "compiled": compiled, "windows": windows, "windows_per_s": rate,
                "device_only_windows_per_s": b / dev,
                "tflops": rate * flops / 1e12, "mfu_vs_gemm": rate * flops / 1e12 / peak_tflops,
                "runs_s": times,
            }
            if device.type == "cuda":
                row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            rows.append(row)
            label = f"{precision}{' compiled' if compiled else ''}"
            print(f"  sweep {label} b={b}: {rate:.1f} windows/s (device alone {b / dev:.1f}), "
                  f"{row['tflops']:.0f} TFLOP/s", flush=True)
        except torch.OutOfMemoryError as e:
            rows.append({"precision": precision, "batch": b, "compiled": compiled,
                         "error": f"out of memory: {str(e)[:120]}"})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    del p
    return rows


# --- 5. enformer-pytorch --------------------------------------------------------------------------


def reference_rows(model: Enformer, config: EnformerConfig, codes: np.ndarray, device: torch.device,
                   batch: int, flops: int, ours: dict[str, float]) -> list[dict]:
    import types

    sys.modules.setdefault("polars", types.ModuleType("polars"))  # only its dataset class uses polars
    from enformer_pytorch import Enformer as Reference

    from enformer_batch.augment import autocast_context
    from enformer_batch.genome import onehot_table

    ref = Reference.from_hparams(**config.to_dict()).eval()
    ref.load_state_dict(model.state_dict())  # enformer-pytorch keeps the _trunk aliases too
    ref = ref.to(device)
    table = torch.from_numpy(onehot_table("zeros")).to(device)
    x = table[torch.from_numpy(np.resize(codes, (batch, codes.shape[1]))).long().to(device)]
    rows = []
    for precision in ("fp32", "bf16"):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

        def run(precision=precision):
            with torch.inference_mode(), autocast_context(precision, device.type):
                return ref(x, head="human")

        run()
        secs = min(timed(run, device, 3))
        rate = batch / secs
        rows.append({"implementation": "enformer-pytorch", "precision": precision, "batch": batch,
                     "windows_per_s": rate, "tflops": rate * flops / 1e12,
                     "ours_windows_per_s": ours.get(precision), "speedup": (ours.get(precision) or 0) / rate})
        print(f"  enformer-pytorch {precision} b={batch}: {rate:.1f} windows/s", flush=True)
    return rows


# --- 6. the pipeline without Ray ------------------------------------------------------------------


def pipeline(ckpt: Path, fasta: str, device: torch.device, budget: Budget, max_parts: int, per_part: int,
             configs: list[tuple[int, int]], tracks: str | None = None) -> dict:
    """The replica as the Ray actor runs it, with the defaults (auto precision, batch and compile), for each
    (parts on the device, writer threads): the device stage alone (``infer`` only, as many threads as parts on
    the device), then end to end (reader threads feeding ``run_part`` calls: the parts on the device plus up to
    ``writers`` tabling and writing Parquet beside them)."""
    import threading

    from enformer_batch.engine import ReplicaWorker
    from enformer_batch.kinds.atlas import KIND, AtlasConfig, AtlasJob
    from enformer_batch.store import OutputStore

    out = tempfile.mkdtemp(prefix="gpu-atlas-")
    config = AtlasConfig(fasta=fasta, out=out, model=str(ckpt), progress=False, windows_per_part=per_part,
                           tracks=tracks)
    # Torch threads as the Ray actor sets them on GPU nodes (WorkerLayout: 2; they only launch kernels).
    worker = ReplicaWorker(config.inference_settings(), OutputStore(out), num_threads=2)
    info = worker.describe()
    job = AtlasJob(config, KIND)
    job.prepare()
    parts = job.plan(info).parts[: max_parts + 1]
    mode = job.mode
    t = time.perf_counter()
    worker.run_part(mode, parts[0], mode.read(parts[0]))  # warm-up (compilation), not timed
    result: dict = {"fasta": fasta, "tracks": len(info.track_indices), "batch": info.batch_size,
                    "precision": info.precision, "compiled": info.compiled, "windows_per_part": per_part,
                    "warm_up_part_s": time.perf_counter() - t, "cpu_count": os.cpu_count(), "configs": []}
    parts = parts[1:]
    windows = sum(p.units for p in parts)
    codes = mode.read(parts[0])  # the writer alone, one thread: table + serialise + hash + write of one part
    rows = mode.infer(worker.predictor, parts[0], codes)
    stages = {"table": 0.0, "serialise": 0.0, "hash": 0.0, "publish": 0.0}
    from enformer_batch.store import serialise_table

    for _ in range(3):
        t = time.perf_counter()
        table = mode.table(parts[0], rows, info)
        stages["table"] += time.perf_counter() - t
        t = time.perf_counter()
        data = serialise_table(table)
        stages["serialise"] += time.perf_counter() - t
        t = time.perf_counter()
        import hashlib

        hashlib.sha256(data).hexdigest()
        stages["hash"] += time.perf_counter() - t
        t = time.perf_counter()
        worker.store.publish(worker.store.part_relpath(parts[0].chrom, parts[0].name), data)
        stages["publish"] += time.perf_counter() - t
    result["writer_one_thread_windows_per_s"] = 3 * parts[0].units / sum(stages.values())
    result["writer_stage_ms_per_part"] = {k: 1000 * v / 3 for k, v in stages.items()}
    for on_device, writers in configs:
        if budget.left() < 30:
            result["configs"].append({"parts_on_device": on_device, "writers": writers, "skipped": "time budget"})
            continue
        worker._device_parts = threading.BoundedSemaphore(on_device)
        all_codes = [mode.read(p) for p in parts]

        def infer_only(i: int, all_codes=all_codes) -> None:
            with worker._device_parts:
                mode.infer(worker.predictor, parts[i], all_codes[i])

        sync(device)
        t = time.perf_counter()
        with cf.ThreadPoolExecutor(on_device) as pool:
            list(pool.map(infer_only, range(len(parts))))
        sync(device)
        device_s = time.perf_counter() - t
        t = time.perf_counter()
        with cf.ThreadPoolExecutor(4) as readers, cf.ThreadPoolExecutor(on_device + writers) as replica:
            reads = [readers.submit(mode.read, p) for p in parts]
            pending = [replica.submit(lambda p=p, f=f: worker.run_part(mode, p, f.result()))
                       for p, f in zip(parts, reads)]
            records = [f.result() for f in pending]
        e2e_s = time.perf_counter() - t
        rate = windows / e2e_s
        result["configs"].append({
            "parts_on_device": on_device, "writers": writers, "parts": len(parts), "windows": windows,
            "device_stage_windows_per_s": windows / device_s, "end_to_end_windows_per_s": rate,
            "efficiency": rate / (windows / device_s), "parquet_gb": sum(r.record.bytes for r in records) / 1e9,
            "hg38_minutes_one_gpu": HG38_PRIMARY_BP / info.geometry.output_span / rate / 60,
        })
        print(f"  pipeline {on_device} part(s) on the device, {writers} writers: device stage "
              f"{windows / device_s:.1f}, end to end {rate:.1f} windows/s", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return result


def writer_scaling(ckpt: Path, fasta: str, device: torch.device, threads: list[int]) -> dict:
    """One real part's table (16 windows, 5,313 float16 tracks) serialised by 1..N threads at once, per codec:
    does Parquet encoding scale with the node's cores?"""
    import pyarrow.parquet as pq

    from enformer_batch.kinds.atlas import KIND, AtlasConfig, AtlasJob
    from enformer_batch.store import serialise_table

    config = AtlasConfig(fasta=fasta, out=tempfile.mkdtemp(), model=str(ckpt), progress=False, compile="off")
    job = AtlasJob(config, KIND)
    job.prepare()
    p = predictor(ckpt, "bf16", 8, device=device, compile_model=False)
    parts = job.plan(p.info).parts
    part = parts[len(parts) // 2]
    table = job.mode.table(part, job.mode.infer(p, part, job.mode.read(part)), p.info)
    result: dict = {"rows": table.num_rows, "columns": table.num_columns, "raw_mb": table.nbytes / 1e6, "codecs": {}}
    for codec in ("zstd", "lz4", "none"):
        sink_bytes = []

        def write(codec=codec, sink_bytes=sink_bytes):
            if codec == "zstd":
                data = serialise_table(table)
            else:
                import pyarrow as pa

                buf = pa.BufferOutputStream()
                pq.write_table(table, buf, compression=codec, use_dictionary=False, write_statistics=["start", "end"])
                data = buf.getvalue()
            sink_bytes.append(len(data))

        per_threads = {}
        for n in threads:
            with cf.ThreadPoolExecutor(n) as pool:
                t = time.perf_counter()
                list(pool.map(lambda _: write(), range(2 * n)))
                per_threads[n] = 2 * n * part.units / (time.perf_counter() - t)  # windows/s
        result["codecs"][codec] = {"mb": sink_bytes[0] / 1e6, "windows_per_s_by_threads": per_threads}
        print(f"  writer {codec}: {sink_bytes[0] / 1e6:.0f} MB/part, windows/s by threads {per_threads}", flush=True)
    return result


# --- 7. Borzoi ------------------------------------------------------------------------------------


def borzoi(device: torch.device, small: bool, budget: Budget, batches: list[int]) -> dict:
    """Full-size Borzoi (random unit-gain weights): ours eager and compiled, and borzoi-pytorch when importable,
    on the same weights and inputs; windows/s and the difference to borzoi-pytorch in fp32."""
    import importlib.util

    from enformer_batch.augment import autocast_context
    from enformer_batch.borzoi import SEQUENCE_LENGTH as LENGTH
    from enformer_batch.borzoi import Borzoi, BorzoiConfig

    spec = importlib.util.spec_from_file_location("bench_model", Path(__file__).with_name("model.py"))
    bench_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_model)
    kw = dict(dim=64, depth=1, heads=2, attn_dim_key=16, attn_dim_value=32) if small else {}
    torch.manual_seed(0)
    ours = Borzoi(BorzoiConfig.from_dict(kw)).eval()
    bench_model._randomise_borzoi(ours)
    impls: dict = {"enformer_batch": lambda x: ours(x, head="human")}
    result: dict = {"tflop_per_window": None if small else 4.91, "rows": []}
    try:
        from borzoi_pytorch import Borzoi as Reference
        from borzoi_pytorch.config_borzoi import BorzoiConfig as ReferenceConfig

        ref = Reference(ReferenceConfig(**kw)).eval()
        ref.load_state_dict(ours.state_dict())
        ref.to(device)
        impls["borzoi-pytorch"] = lambda x: ref(x.transpose(1, 2)).transpose(1, 2)
    except Exception as e:  # noqa: BLE001 - the reference is optional on the GPU node
        result["reference_error"] = f"{type(e).__name__}: {e}"[:300]
    ours.to(device)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator().manual_seed(1)
    outs = {}
    for precision, b in [("fp32", 1)] + [("bf16", b) for b in batches]:
        x = torch.nn.functional.one_hot(torch.randint(0, 4, (b, LENGTH), generator=g), 4).float().to(device)
        for name, fn in impls.items():
            if budget.left() < 30:
                result["rows"].append({"implementation": name, "precision": precision, "batch": b,
                                       "skipped": "time budget"})
                continue

            def run(fn=fn, x=x, precision=precision):
                with torch.inference_mode(), autocast_context(precision, device.type):
                    return fn(x)

            y = run()
            secs = min(timed(run, device, 3))
            if precision == "fp32":
                outs[name] = y.float().cpu()
            result["rows"].append({"implementation": name, "precision": precision, "batch": b,
                                   "windows_per_s": b / secs})
            print(f"  borzoi {name} {precision} b={b}: {b / secs:.1f} windows/s", flush=True)
    if len(outs) == 2:
        a, r = outs["enformer_batch"], outs["borzoi-pytorch"]
        result["fp32_max_rel_diff_vs_borzoi_pytorch"] = float((a - r).abs().max() / r.abs().max())
    if budget.left() > 90:
        b = batches[-1]
        compiled = torch.compile(ours, dynamic=False)
        x = torch.nn.functional.one_hot(torch.randint(0, 4, (b, LENGTH), generator=g), 4).float().to(device)

        def run_compiled():
            with torch.inference_mode(), autocast_context("bf16", device.type):
                return compiled(x, head="human")

        t = time.perf_counter()
        run_compiled()
        sync(device)
        compile_s = time.perf_counter() - t
        secs = min(timed(run_compiled, device, 3))
        result["rows"].append({"implementation": "enformer_batch compiled", "precision": "bf16", "batch": b,
                               "windows_per_s": b / secs, "compile_s": compile_s})
        print(f"  borzoi compiled bf16 b={b}: {b / secs:.1f} windows/s (compiled in {compile_s:.0f} s)", flush=True)
    return result


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=os.environ.get("OUT", "."))
    ap.add_argument("--fasta", default=None, help="a real chromosome (plain FASTA) for numerics and the pipeline")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting sections after this long")
    ap.add_argument("--small", action="store_true", help="reduced width (CPU smoke test)")
    ap.add_argument("--sections",
                    default="ceilings,numerics,auto,sweep,compiled,fp32,reference,pipeline,borzoi")
    ap.add_argument("--sizes", default="1,2,4,8,16,32,64", help="eager bf16 batch sizes")
    ap.add_argument("--compiled-sizes", default="4,8,16", help="compiled bf16 batch sizes (one compilation each)")
    ap.add_argument("--fp32-sizes", default="1,8")
    ap.add_argument("--per-part", type=int, default=16, help="windows per part in the pipeline section")
    ap.add_argument("--pipeline-configs", default="1x14,2x14,2x4",
                    help="pipeline runs as PARTSxWRITERS: parts on the device at once, writer threads")
    ap.add_argument("--tracks", default=None, help="track selection in the pipeline section (default: all)")
    ap.add_argument("--borzoi-batches", default="1,4", help="Borzoi bf16 batch sizes")
    ap.add_argument("--max-parts", type=int, default=40)
    args = ap.parse_args(argv)
    budget = Budget(args.budget_s)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
                     "cpu_count": os.cpu_count(), "small": args.small}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        results["device"] = {"name": props.name, "memory_gib": props.total_memory / 2**30,
                             "sms": props.multi_processor_count, "capability": list(torch.cuda.get_device_capability())}
    else:
        results["device"] = {"name": "cpu"}
    print(json.dumps(results), flush=True)

    def save() -> None:
        (out_dir / "gpu.json").write_text(json.dumps(results, indent=1, default=str))

    def section(name: str, fn, need_s: float = 30.0):
        if budget.left() < need_s:
            results[name] = {"skipped": "time budget"}
            save()
            return None
        t = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as e:  # noqa: BLE001 - a benchmark section that fails is reported, the rest runs
            results[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
        results.setdefault("seconds", {})[name] = time.perf_counter() - t
        print(f"[{name}] {time.perf_counter() - t:.1f} s: {json.dumps(results[name], default=str)[:600]}",
              flush=True)
        save()
        return results[name]

    sections = set(args.sections.split(","))
    if "ceilings" in sections:
        section("ceilings", lambda: ceilings(device, args.small), 10)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    config = model_config(args.small)
    ckpt = workdir / "enformer"
    model = write_checkpoint(ckpt, config)
    codes, source = sample_codes(args.fasta, 4, 196_608)
    results["sequence"] = source
    x1 = torch.from_numpy(np.eye(4, dtype=np.float32)[np.minimum(codes[:1], 3)]).to(device)
    flops = count_flops(model.to(device), x1)
    model.cpu()
    results["tflop_per_window"] = flops / 1e12
    peak = (results.get("ceilings") or {}).get("gemm_bf16_tflops") or 1.0
    name = results["device"]["name"]
    datasheet = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)

    ref = reference_outputs(model, codes[:2], device)
    if "numerics" in sections:
        section("numerics", lambda: numerics(ckpt, ref, codes[:2], device), 30)
    if "auto" in sections:
        section("auto", lambda: auto_settings(ckpt, ref, codes, device), 60)
    min_windows = 8 if args.small else 96
    if "sweep" in sections:
        sizes = [int(s) for s in args.sizes.split(",")]
        results["sweep_bf16"] = sweep(ckpt, codes, device, "bf16", sizes, flops, peak, budget, min_windows)
        save()
    if "compiled" in sections:
        sizes = [int(s) for s in args.compiled_sizes.split(",")]
        results["sweep_bf16_compiled"] = sweep(ckpt, codes, device, "bf16", sizes, flops, peak, budget,
                                               min_windows, compiled=True)
        save()
    if "fp32" in sections:
        fp32_gemm = (results.get("ceilings") or {}).get("gemm_fp32_tflops") or 1.0
        results["sweep_fp32"] = sweep(ckpt, codes, device, "fp32", [int(s) for s in args.fp32_sizes.split(",")],
                                      flops, fp32_gemm, budget, min_windows // 4)
        save()
    if "reference" in sections:
        eager = {r["precision"]: r for r in results.get("sweep_bf16", []) + results.get("sweep_fp32", [])
                 if r.get("batch") == 8 and "windows_per_s" in r}
        ours = {k: v["windows_per_s"] for k, v in eager.items()}
        section("enformer_pytorch", lambda: reference_rows(model, config, codes, device, 8, flops, ours), 40)
    if args.fasta and "pipeline" in sections:
        configs = [tuple(int(v) for v in c.split("x")) for c in args.pipeline_configs.split(",")]
        section("pipeline", lambda: pipeline(ckpt, args.fasta, device, budget, args.max_parts, args.per_part,
                                             configs, args.tracks), 60)
    if args.fasta and "writer" in sections:
        section("writer", lambda: writer_scaling(ckpt, args.fasta, device, [1, 4, 8, 14]), 30)
    if "borzoi" in sections:
        section("borzoi", lambda: borzoi(device, args.small, budget, [int(b) for b in args.borzoi_batches.split(",")]),
                60)
    results["total_s"] = args.budget_s - budget.left()
    save()
    print_tables(results, datasheet)
    shutil.rmtree(workdir, ignore_errors=True)


def print_tables(r: dict, datasheet: float | None) -> None:
    d = r["device"]
    print(f"\n## benchmarks/gpu.py — {r['date']}, {d.get('name')}, torch {r['torch']}, {r['cpu_count']} CPU cores")
    c = r.get("ceilings", {})
    print(f"ceilings measured: bf16 GEMM {c.get('gemm_bf16_tflops', float('nan')):.0f} TFLOP/s, fp32 GEMM "
          f"(no TF32) {c.get('gemm_fp32_tflops', float('nan')):.1f} TFLOP/s, copy {c.get('copy_tb_s', 0):.2f} TB/s; "
          f"{r.get('tflop_per_window', 0):.3f} TFLOP per window (FlopCounterMode); sequence: {r.get('sequence')}")
    print("\n| precision | batch | windows/s | device alone | TFLOP/s | MFU vs GEMM | MFU vs datasheet | peak GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for row in r.get("sweep_bf16", []) + r.get("sweep_bf16_compiled", []) + r.get("sweep_fp32", []):
        label = row["precision"] + (" compiled" if row.get("compiled") else "")
        if "windows_per_s" not in row:
            print(f"| {label} | {row['batch']} | {row.get('skipped') or row.get('error')} | | | | | |")
            continue
        ds = f"{row['tflops'] / datasheet:.0%}" if datasheet and row["precision"] == "bf16" else "—"
        print(f"| {label} | {row['batch']} | {row['windows_per_s']:.1f} | "
              f"{row['device_only_windows_per_s']:.1f} | {row['tflops']:.0f} | {row['mfu_vs_gemm']:.0%} | {ds} | "
              f"{row.get('peak_gib', float('nan')):.1f} |")
    for key in ("numerics", "auto", "enformer_pytorch", "pipeline", "writer", "borzoi"):
        print(f"\n{key}: {json.dumps(r.get(key), default=str)[:1500]}")


if __name__ == "__main__":
    main()
