"""Which adversarial fine-tuning epoch becomes the robust checkpoint: a rule collapse cannot win.

Rice, Wong & Kolter, "Overfitting in adversarially robust deep learning" (ICML 2020) showed that
the robust checkpoint must be chosen by early stopping on *validation robust error*; made binary
and honest about imbalance, that is the **worst-class robust recall**

    min(TPR, TNR) under the selection attack, at the epoch's own deployed boundary

(Platt calibration and threshold fitted on val for that epoch, as the checkpoint would ship; a
face counts as robust when it is right clean and under the attack). Why this and not a mean of
clean and attacked balanced accuracy at P(fake) = 0.5: a model that calls every face fake scores
0.5 on both and beats a detector that ranks well but flips under attack, and adversarial
fine-tuning moves the logit bias so 0.5 is not where the model decides. A one-class model has a
worst-class recall of 0 at any threshold; it can never win against an epoch that gets any face
of both classes right under attack.

An epoch **qualifies** only if it keeps a share ``adv.select_auc_keep`` of the clean model's val
AUC above chance, ``AUC - 0.5 >= keep * (AUC_clean - 0.5)``: robustness bought by forgetting the
task is not selectable, and neither is a **one-class** epoch (a clean recall under
``ONE_CLASS_RECALL`` = 5 %, the threshold of evaluate's ``one_class`` flag, for either class at
its boundary), which ranks below every other epoch whatever its numbers. Among qualifying epochs the highest worst-class robust recall wins (ties:
higher robust balanced accuracy, then higher clean val AUC). If no epoch qualifies, the best
non-qualifying one is kept, the stage says so (one log line, ``selection.qualified: false`` in
``metrics/finetune.json`` and the checkpoint) and evaluate's ``selection_failed`` flag fires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fakeproof.sanity import ONE_CLASS_RECALL

SELECTION_RULE = ("max worst-class robust recall min(TPR, TNR) at the epoch's val boundary, "
                  "subject to a val AUC floor (Rice et al. 2020)")
#: added to the score of a qualifying epoch: every qualifying epoch ranks above every other
QUALIFY_BONUS = 10.0


@dataclass(frozen=True)
class Candidate:
    """One epoch's val numbers at its own boundary."""

    val_auc: float
    clean_tpr: float
    clean_tnr: float
    robust_tpr: float
    robust_tnr: float

    @property
    def min_recall(self) -> float:
        return _finite(min(self.robust_tpr, self.robust_tnr))

    @property
    def one_class(self) -> bool:
        return min(_finite(self.clean_tpr), _finite(self.clean_tnr)) < ONE_CLASS_RECALL

    @property
    def robust_bacc(self) -> float:
        return _finite((self.robust_tpr + self.robust_tnr) / 2)


def _finite(v: float) -> float:
    return float(v) if math.isfinite(float(v)) else 0.0


def qualifies(c: Candidate, clean_val_auc: float, keep: float) -> bool:
    """Not one-class, and the val AUC floor ``AUC - 0.5 >= keep * (clean AUC - 0.5)``; a
    non-finite AUC fails."""
    if c.one_class or not math.isfinite(c.val_auc):
        return False
    return c.val_auc - 0.5 >= keep * (float(clean_val_auc) - 0.5) - 1e-12


def selection_score(c: Candidate, clean_val_auc: float, keep: float) -> tuple[float, bool]:
    """``(score, qualified)``: higher is better; every qualifying epoch outranks every other and
    a one-class epoch ranks below all; then worst-class robust recall, robust balanced accuracy,
    clean val AUC (each tie-break scaled below the resolution of the one before it)."""
    q = qualifies(c, clean_val_auc, keep)
    tier = QUALIFY_BONUS if q else (-QUALIFY_BONUS if c.one_class else 0.0)
    score = (tier + c.min_recall + 1e-3 * c.robust_bacc
             + 1e-6 * _finite(c.val_auc))
    return float(score), q


__all__ = ["Candidate", "ONE_CLASS_RECALL", "QUALIFY_BONUS", "SELECTION_RULE", "qualifies",
           "selection_score"]
