"""Cost of one training step of each adversarial objective over a clean training step.

A fakeproof ``mobilenet_v3_small`` detector (torchvision, one logit, normalisation inside; random
weights: the cost of a pass does not depend on them) at 128 px, batch 32, channels-last, in train mode with an
AdamW step. The clean step is forward + class-weighted BCE + backward + optimiser step; each
objective step is ``fakeproof.objectives.OBJECTIVES[name](...)`` + backward + optimiser step, with
``steps`` = k (default 5, ``adv.steps``) and ``clean_share`` 0 (the papers' all-adversarial
batches: the most expensive case). Goals (issue 9): fgsm_rs <= 2.5x, pgd/trades/mart with k
steps <= (k + 1.5)x. Crafting passes compute input gradients only, so one costs less than a
training forward+backward.

Run: ``.venv/bin/python benchmarks/bench_objectives.py [--size 128 --batch 32 --threads 2 --steps 5]``
(``--device cuda`` on a GPU; ``--clock cpu --threads 1`` is steadier on a shared CPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch

from fakeproof.models import create_model
from fakeproof.objectives import OBJECTIVES


def _median_time(fn: Callable[[], object], repeats: int, clock: Callable[[], float],
                 sync: Callable[[], None]) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        sync()
        times.append(clock() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mobilenet_v3_small")
    ap.add_argument("--size", type=int, default=128, help="image side in pixels")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="k: PGD steps of pgd, trades and mart")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per row (median)")
    ap.add_argument("--eps", type=float, default=4 / 255)
    ap.add_argument("--clean-share", type=float, default=0.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time (steadier on a machine "
                         "shared with other jobs, meaningful with --threads 1)")
    args = ap.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = create_model(args.model).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=gen).to(device).contiguous(
        memory_format=torch.channels_last)  # as the stages train (fakeproof/runtime.py)
    y = (torch.arange(args.batch) % 2).to(device)
    weights = torch.tensor([1.0, 1.5], device=device)
    k, eps = args.steps, args.eps

    def clean_step() -> None:
        z = model(x).reshape(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y.float(), reduction="none")
        w = weights[y]
        loss = (loss * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def objective_step(name: str) -> Callable[[], None]:
        def run() -> None:
            loss, _ = OBJECTIVES[name](model, x, y, eps=eps, alpha=2.5 * eps / k, steps=k,
                                       weights=weights, generator=gen,
                                       clean_share=args.clean_share, beta=6.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    goals = {"pgd": k + 1.5, "fgsm_rs": 2.5, "trades": k + 1.5, "mart": k + 1.5}
    t_clean = _median_time(clean_step, args.repeats, clock, sync)
    rows = [("clean", t_clean, 1.0, None)]
    for name in OBJECTIVES:
        t = _median_time(objective_step(name), args.repeats, clock, sync)
        rows.append((name if name == "fgsm_rs" else f"{name} (k={k})", t, t / t_clean, goals[name]))

    print(f"{args.model} at {args.size} px, batch {args.batch}, {args.threads} threads, "
          f"{device}, eps {eps * 255:g}/255, clean_share {args.clean_share:g}, {args.clock} clock, "
          f"median of {args.repeats}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    head = f"{'objective':16s} {'s/step':>8s} {'x clean':>8s} {'goal':>7s} {'meets':>6s}"
    print(head)
    print("-" * len(head))
    for name, t, ratio, goal in rows:
        g = f"<={goal:g}" if goal else ""
        ok = "" if goal is None else ("yes" if ratio <= goal else "NO")
        print(f"{name:16s} {t:8.3f} {ratio:8.2f} {g:>7s} {ok:>6s}")


if __name__ == "__main__":
    main()
