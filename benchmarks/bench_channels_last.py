"""Channels-last (NHWC) against the default NCHW memory format on the CPU, per registered model.

For each model at its own input size: one training step (forward, backward, SGD step; train mode)
and one inference pass (eval mode, no gradients), batch 16, random weights and images (the cost of
a pass does not depend on them), median of ``--repeats`` after one warm-up; milliseconds per
image. fakeproof trains, scores and attacks channels-last on every device
(``fakeproof/runtime.py``); this is the measurement behind that choice.

Run: ``.venv/bin/python benchmarks/bench_channels_last.py [--threads 2] [--repeats 3]
[--models smallcnn meso4 ...]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fakeproof.models import create_model, model_config

DEFAULT = ["smallcnn", "meso4", "mobilenet_v3_small", "efficientnet_lite0", "resnet18", "xception"]


def per_image_ms(name: str, channels_last: bool, batch: int, repeats: int) -> tuple[float, float]:
    """(train step, inference) in ms per image for one memory format."""
    size = model_config(name).input_size
    torch.manual_seed(0)
    model = create_model(name).train()
    x = torch.rand(batch, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).sum().backward()
        opt.step()

    def infer() -> None:
        with torch.no_grad():
            model(x)

    out = []
    for fn, mode in ((step, True), (infer, False)):
        model.train(mode)
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out.append(1000 * statistics.median(times) / batch)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} threads, batch {args.batch}; ms per image, NCHW / channels-last\n")
    print("| model | px | train step (fwd + bwd + SGD) | inference |")
    print("| --- | ---: | --- | --- |")
    for name in args.models:
        a, b = per_image_ms(name, False, args.batch, args.repeats), per_image_ms(name, True, args.batch,
                                                                                 args.repeats)
        print(f"| {name} | {model_config(name).input_size} | {a[0]:.1f} / {b[0]:.1f} | "
              f"{a[1]:.1f} / {b[1]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
