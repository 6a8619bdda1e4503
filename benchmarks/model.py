"""Benchmark our models against the reference implementations on the same weights and batch.

Enformer (default): ours vs enformer-pytorch. Times one forward per (implementation, precision) side by side,
reports the max relative difference to enformer-pytorch fp32 and the achieved GFLOP/s against a bf16 / fp32
GEMM timed in the same run. One full Enformer window (196,608 bp, dim 1536) is 3.29 TFLOP.

Borzoi (``--model borzoi``): ours vs borzoi-pytorch, one 524,288-bp window, fp32 by default, the two
implementations interleaved ``--repeats`` times and the best time of each kept (a shared machine's noise
only ever adds time). One full Borzoi window (dim 1536, depth 8, 7,611 tracks) is 4.91 TFLOP; borzoi-pytorch
fixes the conv tower, final block and head widths, so ``--quick`` (dim 64, depth 1) keeps ~2.6 TFLOP.

    python benchmarks/model.py            # full-size Enformer, 1 window (slow on CPU: ~20 s per forward)
    python benchmarks/model.py --quick    # small config, smoke test
    python benchmarks/model.py --model borzoi [--quick] [--repeats 3]
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


def _randomise_borzoi(model: torch.nn.Module, seed: int = 0) -> None:
    """Unit-gain random weights and biases (borzoi-pytorch's init leaves outputs flat at softplus(0))."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "rel_" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)


def borzoi_main(args: argparse.Namespace) -> None:
    from enformer_batch.borzoi import SEQUENCE_LENGTH as BORZOI_LENGTH
    from enformer_batch.borzoi import Borzoi, BorzoiConfig

    try:
        from borzoi_pytorch import Borzoi as Reference
        from borzoi_pytorch.config_borzoi import BorzoiConfig as ReferenceConfig
    except ImportError:
        Reference = None
        print("borzoi-pytorch not installed: timing ours only")
    kw = dict(dim=64, depth=1, heads=2, attn_dim_key=16, attn_dim_value=32) if args.quick else {}
    cfg = BorzoiConfig.from_dict(kw)
    torch.manual_seed(0)
    ours = Borzoi(cfg).eval()
    _randomise_borzoi(ours)
    ref = None
    if Reference is not None:
        ref = Reference(ReferenceConfig(**kw)).eval()
        ref.load_state_dict(ours.state_dict())
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (args.batch, BORZOI_LENGTH)), 4).float()
    tflop = 4.91 if not args.quick else None
    impls = [("borzoi-pytorch", lambda: ref(x.transpose(1, 2)).transpose(1, 2))] if ref is not None else []
    impls.append(("enformer_batch", lambda: ours(x, head="human")))
    rows = []
    for precision in args.precisions.split(","):
        wall = {name: float("inf") for name, _ in impls}
        cpu = dict(wall)
        outs = {}
        for _ in range(args.repeats):
            for name, fn in impls:
                # CPU time is the steadier figure on a shared machine (with --threads 1 it is the work done;
                # with more threads it includes OpenMP spin-waiting); wall time is what a user waits.
                t, c = time.perf_counter(), time.process_time()
                with torch.inference_mode(), autocast_context(precision, "cpu"):
                    outs[name] = fn().float()
                wall[name] = min(wall[name], time.perf_counter() - t)
                cpu[name] = min(cpu[name], time.process_time() - c)
                print(f"  {name} {precision}: wall {wall[name]:.2f} s, cpu {cpu[name]:.2f} s", flush=True)
        baseline = outs.get("borzoi-pytorch", outs["enformer_batch"])
        for name, _ in impls:
            err = float((outs[name] - baseline).abs().max() / baseline.abs().max())
            rows.append((name, precision, wall[name] / args.batch, cpu[name] / args.batch, err))
    print(f"\nBorzoi dim={cfg.dim} depth={cfg.depth} heads={cfg.heads} batch={args.batch} "
          f"threads={torch.get_num_threads()} repeats={args.repeats} (best of)"
          + (f"; {tflop} TFLOP/window" if tflop else ""))
    print(f"{'implementation':<18}{'precision':<10}{'wall s/window':>14}{'cpu s/window':>14}"
          f"{'max rel err vs borzoi-pytorch':>31}")
    for name, precision, secs, cpu_secs, err in rows:
        print(f"{name:<18}{precision:<10}{secs:>14.2f}{cpu_secs:>14.2f}{err:>31.2e}")
    if ref is not None:
        for precision in args.precisions.split(","):
            t = {n: (s, c) for n, p, s, c, _ in rows if p == precision}
            ref_t, ours_t = t["borzoi-pytorch"], t["enformer_batch"]
            print(f"speed-up ours vs borzoi-pytorch ({precision}): wall {ref_t[0] / ours_t[0]:.2f}x, "
                  f"cpu {ref_t[1] / ours_t[1]:.2f}x")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="enformer", choices=["enformer", "borzoi"])
    ap.add_argument("--quick", action="store_true", help="small config (dim 96, depth 2) for a smoke test")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--precisions", default=None, help="default: fp32,bf16 (Enformer), fp32 (Borzoi)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "borzoi":
        args.precisions = args.precisions or "fp32"
        borzoi_main(args)
        return
    args.precisions = args.precisions or "fp32,bf16"

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
