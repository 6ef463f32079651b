"""The pure-torch chunked selective scan against the per-token Python loop, on CPU, side by side in one run.

Shapes are the scans real mixers run: SS2D's four directions stacked (VMamba-T, d_state 1) at each stage's
sequence length, and Mamba/Vim widths with d_state 16. Forward only (inference mode) and forward+backward.
Medians of --repeats runs after one warm-up; both implementations alternate within each repeat so machine
load hits both alike.

Run: python benchmarks/selective_scan.py [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from blocks.scan import reference_scan, selective_scan

# (label, channels, tokens, d_state, also time forward+backward). The loop's backward at 56x56 with
# d_state 16 runs for minutes (autograd through 3136 steps), so that case is timed forward only.
CASES = [
    ("VMamba-T stage 1: 4 x 96, 56x56", 384, 3136, 1, True),
    ("VMamba-T stage 2: 4 x 192, 28x28", 768, 784, 1, True),
    ("VMamba-T stage 3: 4 x 384, 14x14", 1536, 196, 1, True),
    ("Mamba/Vim, width 384, 14x14", 384, 196, 16, True),
    ("Mamba/Vim, width 384, 32x32", 384, 1024, 16, True),
    ("Mamba/Vim, width 384, 56x56", 384, 3136, 16, False),
]


def scan_inputs(channels: int, tokens: int, state: int, grad: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(1, channels, tokens, generator=g), torch.randn(1, channels, tokens, generator=g) - 2,
               -torch.rand(channels, state, generator=g), torch.randn(1, 1, state, tokens, generator=g),
               torch.randn(1, 1, state, tokens, generator=g), torch.randn(channels, generator=g),
               torch.randn(channels, generator=g)]
    return [t.requires_grad_(grad) for t in tensors]


def run(fn, inputs: list[torch.Tensor], backward: bool) -> float:
    start = time.perf_counter()
    if backward:
        fn(*inputs).sum().backward()
    else:
        with torch.inference_mode():
            fn(*inputs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} thread(s), float32, batch 1, median of {args.repeats}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print("| scan | channels | tokens | d_state | pass | loop ms | chunked ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for label, channels, tokens, state, with_backward in CASES:
        for backward in (False, True)[:1 + with_backward]:
            inputs = scan_inputs(channels, tokens, state, backward)
            times: dict[str, list[float]] = {"loop": [], "chunked": []}
            for repeat in range(args.repeats + 1):
                for name, fn in (("loop", reference_scan), ("chunked", selective_scan)):
                    elapsed = run(fn, inputs, backward)
                    if repeat:  # the first round warms up
                        times[name].append(elapsed)
            loop, chunked = (1e3 * statistics.median(times[k]) for k in ("loop", "chunked"))
            print(f"| {label} | {channels} | {tokens} | {state} | {'fwd+bwd' if backward else 'fwd'} | "
                  f"{loop:.1f} | {chunked:.1f} | {loop / chunked:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
