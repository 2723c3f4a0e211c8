"""Cost of each attack in units of the model's forward and forward+backward passes.

For a mobilenet_v3_small detector (torchvision, ``num_classes=1``, normalisation inside; random
weights: the cost of a pass does not depend on them) at 128 px, batch 32, 2 threads, this times
one forward pass, one forward+backward pass (input gradient only, as the attacks compute it; the
training-style pass with parameter gradients is shown for reference) and each attack, per image.
A forward hook counts the model calls and the images passed through, to compare with the
expected count (PGD-k: k forward+backward; APGD-k: k + 1; FGSM: 1; Square: at most ``queries``
forwards, fewer once images are fooled).

Labels are the model's own clean predictions, so every image starts correctly classified.

Run: ``.venv/bin/python benchmarks/bench_attacks.py [--size 128 --batch 32 --threads 2]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch
import torchvision
from torch import nn

from fakeproof.attacks import apgd, fgsm, pgd, square


class Detector(nn.Module):
    """[0, 1] images -> normalise -> backbone -> one fake logit (N, 1)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)


def _median_time(fn: Callable[[], object], repeats: int, clock: Callable[[], float]) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128, help="image side in pixels")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per row (median)")
    ap.add_argument("--eps", type=float, default=4 / 255)
    ap.add_argument("--queries", type=int, default=100, help="Square's budget per image")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time (steadier on a machine "
                         "shared with other jobs, meaningful with --threads 1)")
    args = ap.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = Detector(torchvision.models.mobilenet_v3_small(num_classes=1)).eval()
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=gen)
    with torch.no_grad():
        y = (model(x).reshape(-1) > 0).long()

    counts = {"calls": 0, "images": 0}

    def hook(_m: nn.Module, inputs: tuple, _out: torch.Tensor) -> None:
        counts["calls"] += 1
        counts["images"] += inputs[0].shape[0]

    handle = model.register_forward_hook(hook)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def forward_backward_input() -> None:
        for p in model.parameters():
            p.requires_grad_(False)
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xi).sum(), xi)
        for p in model.parameters():
            p.requires_grad_(True)

    def forward_backward_params() -> None:
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
        model.zero_grad(set_to_none=True)

    eps, n = args.eps, args.batch
    q = args.queries
    rows: list[tuple[str, Callable[[], torch.Tensor | None], str, float]] = [
        # name, run, unit of the expected count, expected passes per image
        ("forward", forward, "fwd", 1),
        ("forward+backward (input grad)", forward_backward_input, "fwd+bwd", 1),
        ("forward+backward (param grads)", forward_backward_params, "fwd+bwd", 1),
        ("fgsm", lambda: fgsm(model, x, y, eps=eps), "fwd+bwd", 1),
        ("pgd-5", lambda: pgd(model, x, y, eps=eps, steps=5, seed=args.seed), "fwd+bwd", 5),
        ("pgd-10", lambda: pgd(model, x, y, eps=eps, steps=10, seed=args.seed), "fwd+bwd", 10),
        ("apgd-20", lambda: apgd(model, x, y, eps=eps, steps=20, seed=args.seed), "fwd+bwd", 21),
        (f"square-{q}", lambda: square(model, x, y, eps=eps, queries=q, seed=args.seed), "fwd",
         q),
    ]

    results = []
    for name, run, unit, expected in rows:
        seconds = _median_time(run, args.repeats, clock)
        counts.update(calls=0, images=0)
        out = run()
        calls, images = counts["calls"], counts["images"]
        fooled = ""
        if isinstance(out, torch.Tensor) and out.shape == x.shape:
            with torch.no_grad():
                fooled = f"{float(((model(out).reshape(-1) > 0).long() != y).float().mean()):.2f}"
        results.append((name, seconds / n, unit, expected, calls, images / n, fooled))
    handle.remove()

    t_fwd = results[0][1]
    t_fb = results[1][1]
    print(f"mobilenet_v3_small(num_classes=1) at {args.size} px, batch {n}, "
          f"{args.threads} threads, eps {eps * 255:g}/255, {args.clock} clock, median of "
          f"{args.repeats}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    head = (f"{'row':32s} {'ms/img':>8s} {'x fwd':>7s} {'x fwd+bwd':>9s} {'calls':>6s} "
            f"{'passes/img':>10s} {'expected':>12s} {'per pass':>8s} {'fooled':>6s}")
    print(head)
    print("-" * len(head))
    for name, per_img, unit, expected, calls, per_img_passes, fooled in results:
        exp = f"{'<=' if name.startswith('square') else ''}{expected:g} {unit}"
        # time of one pass of this row, in units of a plain forward or forward+backward
        per_pass = per_img / max(per_img_passes, 1e-9) / (t_fwd if unit == "fwd" else t_fb)
        print(f"{name:32s} {per_img * 1e3:8.2f} {per_img / t_fwd:7.1f} {per_img / t_fb:9.2f} "
              f"{calls:6d} {per_img_passes:10.1f} {exp:>12s} {per_pass:8.2f} {fooled:>6s}")


if __name__ == "__main__":
    main()
