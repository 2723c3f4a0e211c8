"""``fakeproof compare A B``: two detectors on the same test videos, with tests of significance.

Each of A and B is a checkpoint file, or a ``dvc exp`` experiment (or any git revision) by name,
optionally ``NAME:PATH`` for a checkpoint other than dvc.yaml's ``path.robust``. An experiment's
checkpoint is read from the DVC cache through the experiment's own commit (``refs/exps/...``:
its ``dvc.lock`` names the file's hash, :func:`dvc.api.open` reads it), so the workspace is left
as it is: no ``dvc exp apply``.

Both models score the same test faces (the workspace's face store and split, dvc.yaml's
``path.store`` / ``path.faces`` / ``path.splits`` unless given); each with its own recipe: crops
resized to its input size (:func:`fakeproof.models.resize`), its normalisation (a layer of the
model), Platt calibration, video aggregation and decision threshold. Everything is compared at the
video level (one score per video, as ``fakeproof detect`` labels a file):

- AUC of each and ``auc_diff = AUC(B) - AUC(A)`` with a 95 % paired bootstrap interval (the
  same resampled videos for both; :func:`fakeproof.bootstrap.paired_video_bootstrap`);
- DeLong's test of the AUC difference (:mod:`fakeproof.delong`);
- McNemar's test on the decisions at each model's own threshold: the exact binomial test on
  the discordant videos (McNemar, Psychometrika 12, 1947; the exact conditional form as in
  Fagerland, Lydersen & Laake, BMC Medical Research Methodology 13:91, 2013);
- the same under white-box L-inf PGD (Madry et al., ICLR 2018) at ``--eps``, each model attacked
  through its own gradients and aimed at its own deployed boundary (the one its McNemar
  decisions use), with the evaluate stage's budget (``eval.preset``) and seeds, on its attacked
  sample (``eval.attack_videos``).
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
import yaml

from fakeproof.bootstrap import paired_video_bootstrap
from fakeproof.boundary import Boundary, Deployed
from fakeproof.config import EvalParams
from fakeproof.data import DataPaths, FaceDataset, make_loader
from fakeproof.delong import delong_test
from fakeproof.dvcfile import flatten_vars
from fakeproof.errors import FakeproofError
from fakeproof.evaluate import attack_sample, eval_budget
from fakeproof.io import tidy
from fakeproof.metrics import aggregate_videos
from fakeproof.models import load_checkpoint
from fakeproof.models.fusion import Member
from fakeproof.predict import logits_of
from fakeproof.recipe import Recipe, read_recipe
from fakeproof.sampling import Sample
from fakeproof.under_attack import dataset_batches, eps_label, score_under_attack
from fakeproof.runtime import frozen_on, resolve_device

log = logging.getLogger(__name__)

DVC_YAML = "dvc.yaml"
#: dvc.yaml ``vars`` keys: the default test data, and the checkpoint read from an experiment.
DATA_VARS = ("path.store", "path.faces", "path.splits")
EXP_CHECKPOINT_VAR = "path.robust"


class CompareError(FakeproofError, ValueError):
    """Two models cannot be compared (unreadable checkpoint, no such experiment, one class ...)."""


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------
def mcnemar_exact(correct_a: Any, correct_b: Any) -> dict[str, float]:
    """McNemar's exact two-sided test on paired decisions: ``b`` = cases only A gets right,
    ``c`` = cases only B gets right; ``p = min(1, 2 P(Bin(b + c, 1/2) <= min(b, c)))``, 1 when no
    case is discordant."""
    a = np.asarray(correct_a, dtype=bool).reshape(-1)
    bb = np.asarray(correct_b, dtype=bool).reshape(-1)
    if a.size != bb.size:
        raise ValueError(f"mcnemar: {a.size} and {bb.size} decisions; pair them")
    b, c = int(np.sum(a & ~bb)), int(np.sum(~a & bb))
    n, k = b + c, min(b, c)
    tail, term = 0, 1  # sum_{i<=k} C(n, i), exactly in integers
    for i in range(k + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    p = min(1.0, 2 * tail / 2 ** n) if n else 1.0
    return {"b": b, "c": c, "p": float(p)}


def paired_stats(labels: Any, scores_a: Any, scores_b: Any, correct_a: Any, correct_b: Any,
                 n_boot: int, seed: int) -> dict[str, Any]:
    """Every comparison of two models scored on the same samples (one row per video).

    Returns ``auc_a``, ``auc_b``, ``auc_diff`` (B - A), ``auc_diff_lo`` / ``auc_diff_hi`` (95 %
    paired bootstrap), ``delong_z``, ``delong_p``, ``acc_a``, ``acc_b``, ``mcnemar_b`` (only A
    right), ``mcnemar_c`` (only B right), ``mcnemar_p``, ``n``, ``n_fake``.
    """
    y = np.asarray(labels).reshape(-1).astype(int)
    a = np.asarray(scores_a, dtype=np.float64).reshape(-1)
    b = np.asarray(scores_b, dtype=np.float64).reshape(-1)
    dl = delong_test(y, a, b)
    ci = paired_video_bootstrap(y, a, b, np.arange(y.size), n_boot=n_boot, seed=seed)
    mc = mcnemar_exact(correct_a, correct_b)
    return {"n": int(y.size), "n_fake": int(y.sum()), "auc_a": dl["auc_a"], "auc_b": dl["auc_b"],
            "auc_diff": dl["diff"], "auc_diff_lo": ci["diff_lo"], "auc_diff_hi": ci["diff_hi"],
            "delong_z": dl["z"], "delong_p": dl["p"],
            "acc_a": float(np.mean(correct_a)), "acc_b": float(np.mean(correct_b)),
            "mcnemar_b": mc["b"], "mcnemar_c": mc["c"], "mcnemar_p": mc["p"]}


# --------------------------------------------------------------------------------------------
# checkpoints: files, experiments, revisions
# --------------------------------------------------------------------------------------------
def dvc_vars(root: Path = Path(".")) -> dict[str, Any]:
    """dvc.yaml's ``vars``, flattened as DVC interpolates them (``path.store``); {} without one."""
    path = Path(root) / DVC_YAML
    if not path.is_file():
        return {}
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise CompareError(f"{path}: not valid YAML; fix it or pass the paths explicitly") from None
    return flatten_vars(spec)


def default_data(root: Path = Path(".")) -> DataPaths:
    """The test data of the project at ``root``: dvc.yaml's ``path.store/faces/splits``."""
    v = dvc_vars(root)
    missing = [k for k in DATA_VARS if k not in v]
    if missing:
        raise CompareError(f"{Path(root) / DVC_YAML}: no vars {', '.join(missing)}; run from the "
                           "project root or pass --store, --faces and --splits")
    return DataPaths(*(Path(root) / str(v[k]) for k in DATA_VARS))


def _git(root: Path, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def experiment_commit(name: str, root: Path = Path(".")) -> Optional[str]:
    """The commit of the ``dvc exp`` experiment ``name`` (its ref ``refs/exps/../<name>``), else
    of the git revision ``name``; None when neither exists."""
    refs = _git(root, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/") or ""
    hits = sorted({line.split()[0] for line in refs.splitlines()
                   if line.split()[-1].rsplit("/", 1)[-1] == name
                   and "/exec/" not in line.split()[-1]})
    if len(hits) > 1:
        raise CompareError(f"{name}: {len(hits)} experiments have this name (on different "
                           "baselines); give the commit instead (dvc exp show --sha)")
    if hits:
        return hits[0]
    return _git(root, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")


def resolve_checkpoint(spec: str, workdir: Path, root: Path = Path(".")) -> tuple[Path, str]:
    """``(file, label)`` for a checkpoint spec: a file, ``EXPERIMENT``, ``EXPERIMENT:PATH``, or a
    git revision in place of the experiment; an experiment's file is copied into ``workdir``."""
    path = Path(spec)
    if path.is_file():
        return path, spec
    rev, sep, inner = spec.partition(":")
    if not sep:
        inner = str(dvc_vars(root).get(EXP_CHECKPOINT_VAR, ""))
    commit = experiment_commit(rev, root) if rev else None
    if commit is None or not inner:
        raise CompareError(f"{spec}: no such checkpoint file, dvc experiment or git revision; give "
                           "a .pt path or an experiment name from `dvc exp show`")
    import dvc.api  # heavy: only when an experiment is asked for

    dest = Path(workdir) / f"{len(list(Path(workdir).iterdir()))}_{Path(inner).name}"
    try:
        with dvc.api.open(inner, repo=str(root), rev=commit, mode="rb") as src:
            dest.write_bytes(src.read())
    except Exception as e:  # dvc's own errors: not in the cache, not tracked at that commit ...
        raise CompareError(f"{spec}: cannot read {inner} at {commit[:10]} "
                           f"({type(e).__name__}); is it in the DVC cache (dvc pull)?") from None
    return dest, f"{rev}:{inner}"


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------
@dataclass
class Contender:
    """One side of the comparison: the model behind its own resize and its deployed boundary
    (outputs decision logits), and its recipe."""

    label: str
    path: Path
    model: Deployed
    recipe: Recipe

    @property
    def boundary(self) -> Boundary:
        return self.model.boundary

    @property
    def threshold(self) -> float:
        return self.boundary.threshold

    @property
    def input_size(self) -> int:
        return int(self.model.model.input_size)


def load_contender(path: Path, label: str, device: torch.device = torch.device("cpu")
                   ) -> Contender:
    """Load a checkpoint (errors name the file) with its recipe; frozen, in eval mode."""
    model, meta = load_checkpoint(path)
    recipe = read_recipe(meta, str(path))
    member = frozen_on(Member(model, recipe.input_size), device)
    return Contender(label, Path(path), Deployed(member, recipe.boundary), recipe)


def video_scores(c: Contender, frames: pd.DataFrame, decision: np.ndarray) -> pd.DataFrame:
    """One row per video: ``video_id``, ``label``, ``prob`` (the calibrated P(fake) aggregated
    with the recipe's video aggregation), ``correct`` (``prob > threshold`` matches the label),
    from decision logits."""
    df = frames[["video_id", "label"]].reset_index(drop=True).copy()
    df["prob"] = c.boundary.p_from_decision(decision)
    v = aggregate_videos(df, how=c.recipe.video_agg)
    v["correct"] = (v["prob"].to_numpy() > c.threshold) == (v["label"].to_numpy() == 1)
    return v


def pgd_logits(c: Contender, ds: FaceDataset, sample: Sample, ep: EvalParams, eps: float
               ) -> np.ndarray:
    """Decision logits of ``c`` on white-box PGD examples of the sample's faces, aimed at its
    deployed boundary (the boundary its McNemar decisions use; evaluate's budget and seeds)."""
    res = score_under_attack(c.model, dataset_batches(ds, sample.index, ep.batch_size,
                                                      sample.frames["key"].tolist()),
                             ["pgd"], eps, eval_budget(ep), ep.seed)
    return res.by_attack["pgd"]


def _paired(va: pd.DataFrame, vb: pd.DataFrame, ep: EvalParams) -> dict[str, Any]:
    if not va["video_id"].equals(vb["video_id"]):  # pragma: no cover - same dataset, same order
        raise CompareError("compare: the two models were scored on different videos")
    y = va["label"].to_numpy()
    if len(np.unique(y)) < 2 or min(int(y.sum()), int((1 - y).sum())) < 2:
        raise CompareError("compare: the compared videos need at least two real and two fake "
                           "videos; add test data or raise eval.attack_videos")
    return paired_stats(y, va["prob"], vb["prob"], va["correct"], vb["correct"], ep.bootstrap,
                        ep.seed)


def run_compare(spec_a: str, spec_b: str, data: DataPaths, ep: EvalParams,
                eps: Optional[float] = None, root: Path = Path("."), device: str = "cpu"
                ) -> dict[str, Any]:
    """Compare two checkpoints (see the module docstring); ``eps`` None or 0 skips the attack;
    ``device``: ``auto | cpu | cuda[:N]`` (params ``train.device`` from the CLI)."""
    dev = resolve_device(device)
    with tempfile.TemporaryDirectory(prefix="fakeproof-compare-") as tmp:
        path_a, label_a = resolve_checkpoint(spec_a, Path(tmp), root)
        path_b, label_b = resolve_checkpoint(spec_b, Path(tmp), root)
        a, b = load_contender(path_a, label_a, dev), load_contender(path_b, label_b, dev)
    ds = FaceDataset(data.store, data.faces_csv, data.splits_csv, "test")
    if len(ds) == 0:
        raise CompareError(f"{data.splits_csv}: the test split holds no faces")
    frames = ds.frames.reset_index(drop=True)
    loader = make_loader(ds, ep.batch_size, shuffle=False)
    clean = [video_scores(c, frames, logits_of(c.model, loader, f"{c.label} test", dev)[0])
             for c in (a, b)]
    out: dict[str, Any] = {
        "a": label_a, "b": label_b,
        "threshold_a": a.threshold, "threshold_b": b.threshold,
        "input_size_a": a.input_size, "input_size_b": b.input_size,
        "test_videos": int(frames["video_id"].nunique()), "test_faces": int(len(frames)),
        **_paired(clean[0], clean[1], ep)}
    if eps:
        sample = attack_sample(frames, ep)
        adv = [video_scores(c, sample.frames, pgd_logits(c, ds, sample, ep, eps)) for c in (a, b)]
        out["pgd"] = {"eps": eps_label(eps), "videos": int(sample.frames["video_id"].nunique()),
                      **_paired(adv[0], adv[1], ep)}
    return out


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def _f(v: float, digits: int = 4) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _p(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else ("<1e-4" if v < 1e-4 else f"{v:.4f}")


def markdown(res: dict[str, Any]) -> str:
    """A Markdown table of a :func:`run_compare` result, fit for a pull request."""
    rows = [("clean", res["test_videos"], res)]
    if "pgd" in res:
        rows.append((f"PGD {res['pgd']['eps']}", res["pgd"]["videos"], res["pgd"]))
    lines = [f"A = `{res['a']}`, B = `{res['b']}`; video level, each model at its own threshold "
             f"(A {res['threshold_a']:.3f}, B {res['threshold_b']:.3f}).", "",
             "| | videos | AUC A | AUC B | AUC B - A [95% CI] | DeLong p | acc A | acc B "
             "| McNemar p (only A / only B right) |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    for name, n, r in rows:
        lines.append(
            f"| {name} | {n} | {_f(r['auc_a'])} | {_f(r['auc_b'])} | {r['auc_diff']:+.4f} "
            f"[{_f(r['auc_diff_lo'])}, {_f(r['auc_diff_hi'])}] | {_p(r['delong_p'])} "
            f"| {_f(r['acc_a'])} | {_f(r['acc_b'])} | {_p(r['mcnemar_p'])} "
            f"({r['mcnemar_b']} / {r['mcnemar_c']}) |")
    return "\n".join(lines)


def print_result(res: dict[str, Any], as_json: bool) -> None:
    print(json.dumps(tidy(res, 15), indent=2, sort_keys=True) if as_json else markdown(res))
