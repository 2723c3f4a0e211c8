"""The augmentation presets' effect on the clean model: clean, PGD and mean-corruption test AUC.

    python benchmarks/bench_augment.py [--data data] [--params params.yaml]
        [--presets none light standard strong] [--severities 1 3 5] [--out DIR]

For each ``train.augment`` preset, everything else as ``--params`` has it (default: the code's
defaults): the pretrain stage's own training (``fakeproof.train.run_pretrain``, val selection)
on the face store under ``--data`` (``make demo`` builds it), then the evaluate stage's own scoring
(``fakeproof.evaluate.run_evaluate``) of that model on the test split, restricted to what the
table needs: clean AUC, AUC under PGD at ``eval.headline_eps`` (the ``eval.preset`` budget), and
mean AUC over ``eval.corruptions`` at ``--severities``. AUC columns carry video-resampled 95 %
intervals. Only the clean model is trained: the presets act on pretraining, and the adversarial
fine-tuning that follows would multiply the cost by five without isolating the preset's effect.
Prints one Markdown table; ``--out`` keeps each preset's checkpoint and eval files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from fakeproof.config import default_params, load_params, params_from_dict
from fakeproof.data import DataPaths
from fakeproof.evaluate import run_evaluate
from fakeproof.under_attack import eps_label
from fakeproof.train import run_pretrain


def one_preset(params, paths: DataPaths, preset: str, severities: list[int], out: Path) -> dict:
    p = dataclasses.replace(params, train=dataclasses.replace(params.train, augment=preset))
    ep = p.eval
    p = dataclasses.replace(p, eval=dataclasses.replace(
        ep, attacks=["pgd"], eps=[0.0, ep.headline_eps], corruption_severities=list(severities)))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run_pretrain(p, paths, out / "clean.pt", out / "pretrain.json", out / "curve.csv", out / "tb")
    t_train = time.perf_counter() - t0
    run_evaluate(p, paths, {"clean": out / "clean.pt"}, out / "headline.json", out / "eval.json",
                 out / "plots", out_corruptions=out / "corruptions.json")
    e = json.loads((out / "eval.json").read_text())["models"]["clean"]
    eps = eps_label(ep.headline_eps)
    clean, pgd = e["test_clean"]["frame"], e["attacks"]["pgd"][eps]["frame"]  # deployed boundary
    val = json.loads((out / "pretrain.json").read_text())
    return {"preset": preset, "val_auc": val["val_auc"], "clean": clean, "pgd": pgd,
            "corr": tuple(e["corruptions"]["mean_corruption_auc"][k] for k in ("auc", "auc_lo", "auc_hi")),
            "seconds": (t_train, time.perf_counter() - t0 - t_train), "eps": eps}


def ci(m: dict, key: str = "auc") -> str:
    lo, hi = m.get(key + "_lo"), m.get(key + "_hi")
    if lo is None or hi is None:
        return f"{m[key]:.3f} [not estimable]"
    return f"{m[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data", help="folder with faces.lmdb, faces.csv, splits.csv")
    ap.add_argument("--params", default=None, help="params file (default: the code's defaults)")
    ap.add_argument("--presets", nargs="+", default=["none", "light", "standard", "strong"])
    ap.add_argument("--severities", nargs="+", type=int, default=[1, 3, 5])
    ap.add_argument("--out", default=None, help="keep each preset's outputs under this folder")
    args = ap.parse_args()
    params = load_params(args.params) if args.params else params_from_dict(default_params())
    paths = DataPaths.under(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        rows = [one_preset(params, paths, preset, args.severities, root / preset)
                for preset in args.presets]
    eps = rows[0]["eps"]
    print(f"\n{params.model.name}, {params.train.epochs} epochs, PGD at {eps} "
          f"({params.eval.preset} budget), corruptions {', '.join(params.eval.corruptions)} at "
          f"severities {args.severities}; test split, 95 % intervals resample videos")
    print(f"| train.augment | val AUC | test AUC | PGD AUC @{eps} | PGD bacc @{eps} | mean corruption "
          "AUC | train s | eval s |")
    print("| --- | ---: | --- | --- | --- | --- | ---: | ---: |")
    for r in rows:
        c = r["corr"]
        print(f"| {r['preset']} | {r['val_auc']:.3f} | {ci(r['clean'])} | {ci(r['pgd'])} | "
              f"{ci(r['pgd'], 'bacc')} | {c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}] | "
              f"{r['seconds'][0]:.0f} | {r['seconds'][1]:.0f} |")


if __name__ == "__main__":
    main()
