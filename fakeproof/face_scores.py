"""The per-face score files the evaluate stage leaves for later readers, and how far an attack
crafted on one model carries to others.

``scores.csv`` (:func:`attacked_scores`): each attacked face's decision logit clean and under the
per-face worst case at the headline eps, per model; ``fakeproof leaderboard`` pairs these across
experiments on the same faces.

Transfer (Tramèr et al., "Ensemble Adversarial Training", ICLR 2018): PGD examples crafted on a
*source* model at one eps are scored by every other model at its own deployed boundary. The
evaluate stage crafts PGD at ``eval.headline_eps`` on each checkpoint anyway (its sweep); it has
every other checkpoint score those examples on the way (one forward pass each) and writes, per
face, every model's decision logit clean (whole test split) and on each source's PGD examples
(the attacked sample) to ``logits.csv`` in its plots folder (:func:`logits_frame`).

The ensemble stage fuses the same checkpoints: each member's calibrated logit is its decision
logit plus its boundary's offset, and the ensemble's logit is the weighted sum of those
(:mod:`fakeproof.models.fusion`), so the ensemble's score of a member's PGD examples follows from
the members' scores without a forward pass, let alone a new attack (:func:`fused_decision`).
:func:`read_logits` accepts the file only when every member's checkpoint bytes (sha256), the
test faces, the attacked sample and the eps are the ones the ensemble stage would use; otherwise
the stage crafts the members' examples itself and says why.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from fakeproof.under_attack import eps_label

log = logging.getLogger(__name__)

#: one row per (scorer, what it scored, face): ``crafted_on`` is empty and ``attack`` "clean" for
#: clean faces; ``logit`` is the scorer's decision logit (> 0: fake at its deployed boundary)
LOGIT_COLUMNS = ("scorer", "scorer_sha256", "crafted_on", "attack", "eps", "key", "label", "logit")
TRANSFER_ATTACK = "pgd"


@dataclass(frozen=True)
class Crafted:
    """The PGD examples of one source model at one eps, as scores: the source's own decision
    logits (white box) and every other model's on the same images (``scored``)."""

    own: np.ndarray
    scored: dict[str, np.ndarray] = field(default_factory=dict)

    def by(self, source: str, scorer: str) -> np.ndarray:
        return self.own if scorer == source else self.scored[scorer]


SCORE_COLUMNS = ("model", "key", "video_id", "label", "method", "clean", "attacked")


def attacked_scores(results: Mapping[str, Any], eps: float) -> pd.DataFrame:
    """Per face of the attacked sample and per model: the decision logit clean and under the
    per-face worst case at ``eps`` (``eval.headline_eps``) (``> 0``: fake at the model's deployed
    boundary). ``fakeproof leaderboard`` pairs these across experiments on the same faces."""
    lab = eps_label(eps)
    parts = []
    for name, r in results.items():
        if lab not in r.worst:
            continue
        part = r.sample.frames.reset_index(drop=True)
        part = part.assign(model=name, method=part.get("method", ""),
                           clean=r.clean_logits[r.sample.index], attacked=r.worst[lab])
        parts.append(part[list(SCORE_COLUMNS)])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=SCORE_COLUMNS)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a checkpoint's bytes (what identifies a scorer across stages)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def transfer_table(crafted: Mapping[str, Crafted], clean: Mapping[str, np.ndarray],
                   labels: np.ndarray) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """``(transfer, clean_acc)``: ``transfer[src][dst]`` the frame accuracy of ``dst`` on the
    examples crafted on ``src``; ``clean_acc[dst]`` its accuracy on the clean sample."""
    y = np.asarray(labels) == 1
    names = list(clean)
    transfer = {s: {d: float(np.mean((c.by(s, d) > 0) == y)) for d in names}
                for s, c in crafted.items()}
    return transfer, {d: float(np.mean((clean[d] > 0) == y)) for d in names}


def fused_decision(member_decisions: Mapping[str, np.ndarray], offsets: Mapping[str, float],
                   weights: Mapping[str, float], boundary) -> np.ndarray:
    """The ensemble's decision logit from its members' decision logits on the same images:
    ``boundary.decision(sum_i w_i (d_i + offset_i))`` (a member's calibrated logit is its
    decision logit plus its threshold's offset)."""
    fused = sum(weights[n] * (np.asarray(member_decisions[n], dtype=np.float64) + offsets[n])
                for n in weights)
    return boundary.decision(fused)


def logits_frame(frames: pd.DataFrame, sample_frames: pd.DataFrame, results: Mapping[str, Any],
                 eps_lab: str, checkpoints: Mapping[str, Path]) -> pd.DataFrame:
    """The rows of ``logits.csv`` (:data:`LOGIT_COLUMNS`): every model's clean decision logit on
    every test face, and on every source's PGD examples of the sample. ``results``: evaluate's
    per-model results (``clean_logits`` on ``frames``, ``crafted`` on ``sample_frames``);
    ``checkpoints``: the file of each model (its sha256 names the scorer)."""
    clean = {n: r.clean_logits for n, r in results.items()}
    crafted: dict[str, Crafted] = {n: r.crafted for n, r in results.items()}
    sha256 = {n: file_sha256(p) for n, p in checkpoints.items()}
    parts = []
    for scorer, z in clean.items():
        parts.append(pd.DataFrame({"scorer": scorer, "scorer_sha256": sha256[scorer],
                                   "crafted_on": "", "attack": "clean", "eps": "0",
                                   "key": frames["key"].to_numpy(),
                                   "label": frames["label"].to_numpy(), "logit": z}))
    for src, c in crafted.items():
        for scorer in clean:
            parts.append(pd.DataFrame({"scorer": scorer, "scorer_sha256": sha256[scorer],
                                       "crafted_on": src, "attack": TRANSFER_ATTACK,
                                       "eps": eps_lab, "key": sample_frames["key"].to_numpy(),
                                       "label": sample_frames["label"].to_numpy(),
                                       "logit": c.by(src, scorer)}))
    return pd.concat(parts, ignore_index=True)[list(LOGIT_COLUMNS)]


@dataclass(frozen=True)
class Evaluated:
    """What evaluate measured for the ensemble's members, by member name: clean decision
    logits on the whole test split and the members' PGD examples as :class:`Crafted`."""

    clean: dict[str, np.ndarray]
    crafted: dict[str, Crafted]


def read_logits(path: Optional[Path], members: Mapping[str, str], test_keys: Sequence[str],
                sample_keys: Sequence[str], eps_lab: str) -> Optional[Evaluated]:
    """The members' rows of evaluate's ``logits.csv`` (``members``: name -> checkpoint sha256),
    or None (logged: why) when the file is absent or was not measured on these checkpoints,
    these faces and this eps."""
    if path is None:
        return None
    if not Path(path).is_file():
        log.info("ensemble: %s absent; crafting the members' PGD examples here", path)
        return None
    df = pd.read_csv(path, dtype={"scorer": str, "scorer_sha256": str, "crafted_on": str,
                                  "attack": str, "eps": str, "key": str}, keep_default_na=False)
    missing = [c for c in LOGIT_COLUMNS if c not in df.columns]
    if missing:
        log.info("ensemble: %s lacks columns %s; crafting the members' PGD examples here", path,
                 missing)
        return None
    by_sha = dict(zip(df["scorer_sha256"], df["scorer"]))
    scorer = {n: by_sha.get(h) for n, h in members.items()}
    absent = [n for n, s in scorer.items() if s is None]
    if absent:
        log.info("ensemble: %s holds no scores of member(s) %s (other checkpoint bytes); "
                 "crafting the members' PGD examples here", path, ", ".join(absent))
        return None

    def pick(who: str, crafted_on: str, attack: str, eps: str, keys: Sequence[str]
             ) -> Optional[np.ndarray]:
        rows = df[(df["scorer"] == who) & (df["crafted_on"] == crafted_on)
                  & (df["attack"] == attack) & (df["eps"] == eps)]
        if rows["key"].tolist() != list(keys):
            return None
        return rows["logit"].to_numpy(dtype=np.float64)

    clean = {n: pick(s, "", "clean", "0", test_keys) for n, s in scorer.items()}
    crafted = {}
    for src, s in scorer.items():
        scored = {d: pick(t, s, TRANSFER_ATTACK, eps_lab, sample_keys)
                  for d, t in scorer.items()}
        crafted[src] = Crafted(scored.pop(src), scored)
    arrays = [*clean.values(), *(a for c in crafted.values() for a in (c.own, *c.scored.values()))]
    if any(a is None for a in arrays):
        log.info("ensemble: %s was measured on other test faces, another attacked sample or "
                 "another eps than %s; crafting the members' PGD examples here", path, eps_lab)
        return None
    return Evaluated(clean, crafted)


__all__ = ["Crafted", "Evaluated", "LOGIT_COLUMNS", "SCORE_COLUMNS", "attacked_scores", "file_sha256", "fused_decision",
           "logits_frame", "read_logits", "transfer_table"]
