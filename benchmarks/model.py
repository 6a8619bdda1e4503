"""Benchmark our Enformer against enformer-pytorch on the same weights and batch.

Times one forward per (implementation, precision) side by side, reports the max relative difference to
enformer-pytorch fp32 and the achieved GFLOP/s against a bf16 / fp32 GEMM timed in the same run. One full
Enformer window (196,608 bp, dim 1536) is 3.29 TFLOP.

    python benchmarks/model.py            # full-size config, 1 window (slow on CPU: ~20 s per forward)
    python benchmarks/model.py --quick    # small config, smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enformer_batch.augment import autocast_context  # noqa: E402
from enformer_batch.model import SEQUENCE_LENGTH, Enformer, EnformerConfig  # noqa: E402

FULL_WINDOW_TFLOP = 3.29


def _gemm_gflops(dtype: torch.dtype, n: int, repeats: int = 3) -> float:
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        with torch.inference_mode():
            out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small config (dim 96, depth 2) for a smoke test")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        from enformer_pytorch import Enformer as Reference
    except ImportError:
        Reference = None
        print("enformer-pytorch not installed: timing ours only")

    if args.quick:
        cfg = EnformerConfig(
            dim=96,
            depth=2,
            heads=2,
            attn_dim_key=16,
            dim_divisible_by=16,
            output_heads={"human": 64, "mouse": 16},
        )
    else:
        cfg = EnformerConfig()
    # FLOPs scale ~quadratically in width for the convolutions and attention projections.
    tflop = FULL_WINDOW_TFLOP * (cfg.dim / 1536) ** 2 * (1 if not args.quick else 0.5)
    torch.manual_seed(0)
    ours = Enformer(cfg).eval()
    ref = None
    if Reference is not None:
        ref = Reference.from_hparams(**cfg.to_dict()).eval()
        ref.load_state_dict(ours.state_dict())
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (args.batch, SEQUENCE_LENGTH)), 4).float()
    if args.quick:  # warm up allocator / oneDNN primitives; too expensive at full size
        with torch.inference_mode():
            ours(x[:1])
            if ref is not None:
                ref(x[:1])

    # CPUs without native bf16 (e.g. AVX2-only) emulate it very slowly: keep that GEMM small.
    gemm = {"bf16": _gemm_gflops(torch.bfloat16, 512, 1), "fp32": _gemm_gflops(torch.float32, 2048)}
    print(
        f"config dim={cfg.dim} depth={cfg.depth} batch={args.batch} threads={torch.get_num_threads()} "
        f"~{tflop * args.batch:.3g} TFLOP/forward; GEMM: bf16 {gemm['bf16']:.1f} GFLOP/s, "
        f"fp32 {gemm['fp32']:.0f} GFLOP/s"
    )

    rows, baseline = [], None
    impls = (
        [("enformer-pytorch", ref), ("enformer_batch", ours)]
        if ref is not None
        else [("enformer_batch", ours)]
    )
    for precision in args.precisions.split(","):
        for name, model in impls:

            def run(model=model, precision=precision):
                with autocast_context(precision, "cpu"):
                    return model(x, head="human").float()

            secs, out = _time(run, args.repeats)
            if baseline is None:
                baseline = out
            err = float((out - baseline).abs().max() / baseline.abs().max())
            gflops = tflop * args.batch * 1e3 / secs
            rows.append(
                (name, precision, secs / args.batch, gflops, gflops / gemm.get(precision, gemm["fp32"]), err)
            )
            print(f"  done {name} {precision}: {secs:.2f} s", flush=True)

    print(
        f"\n{'implementation':<18}{'precision':<10}{'s/window':>10}{'GFLOP/s':>10}{'of GEMM':>9}"
        f"{'max rel err vs ref fp32':>25}"
    )
    for name, precision, s, gf, frac, err in rows:
        print(f"{name:<18}{precision:<10}{s:>10.2f}{gf:>10.0f}{frac:>9.0%}{err:>25.2e}")
    if ref is not None:
        for precision in args.precisions.split(","):
            t = {n: s for n, p, s, *_ in rows if p == precision}
            print(
                f"speed-up ours vs enformer-pytorch ({precision}): "
                f"{t['enformer-pytorch'] / t['enformer_batch']:.2f}x"
            )


if __name__ == "__main__":
    main()
