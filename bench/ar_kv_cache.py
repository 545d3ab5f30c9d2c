"""Tokens/s of ar.Sample's generator with and without the key/value cache.

Generates grids of N tokens with the same prior, seed and settings both ways and prints
tokens/s, total seconds and seconds per token against N. With the cache each new token
costs the same work plus attention over what came before, so total time grows about
linearly in N; without it every token re-runs the whole sequence, so total time grows
about quadratically. Also checks that both ways pick the same tokens (greedy).

Usage: python bench/ar_kv_cache.py [--sizes 4 8 16 24 32] [--dim 128] [--layers 4]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nodeflow.nodes.ar.prior import TokenPrior, generate


def timed(prior: TokenPrior, batch: int, use_cache: bool, repeats: int, **kw) -> tuple[float, torch.Tensor]:
    ids = torch.zeros(batch, prior.length, dtype=torch.long)
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = generate(prior, ids, 0, None, seed=0, use_cache=use_cache, **kw)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 24, 32],
                    help="grid sides: N = side × side tokens")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    print(f"prior: dim {args.dim}, {args.layers} layers, {args.heads} heads, codebook {args.vocab}; "
          f"batch {args.batch}; torch threads {args.threads}; median of {args.repeats}")
    print(f"{'N':>6} {'cached tok/s':>12} {'s':>8} {'uncached tok/s':>14} {'s':>8} {'speed-up':>8} "
          f"{'same tokens':>11}")
    rows = []
    for side in args.sizes:
        torch.manual_seed(0)
        prior = TokenPrior({"vocab_size": args.vocab, "height": side, "width": side, "dim": args.dim,
                            "layers": args.layers, "heads": args.heads}).eval()
        n = side * side
        cached, a = timed(prior, args.batch, True, args.repeats, top_k=1)
        uncached, b = timed(prior, args.batch, False, args.repeats, top_k=1)
        rows.append((n, cached, uncached))
        print(f"{n:6d} {n * args.batch / cached:12.1f} {cached:8.3f} {n * args.batch / uncached:14.1f} "
              f"{uncached:8.3f} {uncached / cached:8.1f} {str(bool((a == b).all())):>11}")

    # Growth: total time ~ c * N^k, between the smallest and the largest N and over the last step.
    import math

    def exponent(a: tuple[int, float, float], b: tuple[int, float, float], i: int) -> float:
        return math.log(b[i] / a[i]) / math.log(b[0] / a[0])

    print(f"\ntotal time grows as N^{exponent(rows[0], rows[-1], 1):.2f} with the cache and "
          f"N^{exponent(rows[0], rows[-1], 2):.2f} without (N={rows[0][0]} to {rows[-1][0]}); "
          f"N^{exponent(rows[-2], rows[-1], 1):.2f} and N^{exponent(rows[-2], rows[-1], 2):.2f} "
          f"from N={rows[-2][0]} to {rows[-1][0]}")
    print("seconds per token, cached:   " + "  ".join(f"N={n}: {c / n * 1e3:.2f} ms" for n, c, _ in rows))
    print("seconds per token, uncached: " + "  ".join(f"N={n}: {u / n * 1e3:.2f} ms" for n, _, u in rows))


if __name__ == "__main__":
    main()
