"""The robust checkpoint: a selection rule under which collapse cannot win, and a known answer.

Known answer: a tiny image task where a robust detector exists by construction at the test's eps:
32 px crops of uniform noise whose red channel is raised by 24/255 in fakes. The mean red of a
crop separates the classes by 24/255 with a noise of about 2.3/255, so a detector on it keeps a
margin of 4/255 under any L-inf attack at 8/255; the noise offers a clean model non-robust
shortcuts, which a clean training takes. Adversarial fine-tuning plus
the selection rule must reach a high robust balanced accuracy under a strong PGD (50 steps, 3
restarts) at the deployed boundary on held-out test videos, where the clean model's is near 0.
"""

from __future__ import annotations

import numpy as np
import pytest

from _tinydata import build_store, tiny_params
from fakeproof.attacks import Budget
from fakeproof.boundary import Boundary, Deployed
from fakeproof.data import FaceDataset
from fakeproof.models import load_checkpoint
from fakeproof.recipe import deployed_boundary
from fakeproof.selection import Candidate, qualifies, selection_score
from fakeproof.train import run_adv_finetune, run_pretrain
from fakeproof.under_attack import dataset_batches, score_under_attack

EPS = 8 / 255
STRONG = Budget(pgd_steps=50, pgd_restarts=3, apgd_steps=1, apgd_restarts=1, square_queries=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------
# the rule
# --------------------------------------------------------------------------------------------
def _pick(cands: list[Candidate], clean_auc: float = 0.95, keep: float = 0.8) -> int:
    scores = [selection_score(c, clean_auc, keep)[0] for c in cands]
    return int(np.argmax(scores))


def test_a_planted_one_class_epoch_is_never_selected() -> None:
    """The old rule (mean of clean and attacked bacc at 0.5) picked the one-class epoch: it
    scores 0.5 on both and beats a ranking model that flips under attack."""
    one_class = Candidate(val_auc=0.97, clean_tpr=1.0, clean_tnr=0.0, robust_tpr=1.0,
                          robust_tnr=0.0)
    flips = Candidate(val_auc=0.95, clean_tpr=0.85, clean_tnr=0.85, robust_tpr=0.1,
                      robust_tnr=0.1)
    robust = Candidate(val_auc=0.90, clean_tpr=0.8, clean_tnr=0.8, robust_tpr=0.5,
                       robust_tnr=0.4)
    old = [(c.clean_tpr + c.clean_tnr) / 4 + c.robust_bacc / 2 for c in (one_class, flips)]
    assert old[0] > old[1]  # the failure this rule replaces
    for order in ([one_class, flips, robust], [robust, one_class, flips], [flips, one_class]):
        assert order[_pick(order)] is not one_class
    assert [flips, robust][_pick([flips, robust])] is robust  # worst-class robust recall decides
    # even when every other epoch is under the AUC floor, a one-class epoch ranks last
    weak = Candidate(val_auc=0.6, clean_tpr=0.6, clean_tnr=0.6, robust_tpr=0.0, robust_tnr=0.3)
    assert [one_class, weak][_pick([one_class, weak])] is weak
    assert not qualifies(one_class, 0.95, 0.8) and qualifies(robust, 0.95, 0.8)


def test_the_auc_floor_is_relative_to_the_clean_model_above_chance() -> None:
    c = Candidate(val_auc=0.86, clean_tpr=0.8, clean_tnr=0.8, robust_tpr=0.7, robust_tnr=0.7)
    assert qualifies(c, clean_val_auc=0.95, keep=0.8)  # 0.36 >= 0.8 * 0.45
    assert not qualifies(c, clean_val_auc=0.99, keep=0.8)  # 0.36 < 0.392
    better_but_forgetful = Candidate(val_auc=0.7, clean_tpr=0.7, clean_tnr=0.7, robust_tpr=0.7,
                                     robust_tnr=0.7)
    assert [c, better_but_forgetful][_pick([c, better_but_forgetful], 0.95)] is c
    nan = Candidate(val_auc=float("nan"), clean_tpr=0.5, clean_tnr=0.5, robust_tpr=0.5,
                    robust_tnr=0.5)
    assert not qualifies(nan, 0.95, 0.8)


# --------------------------------------------------------------------------------------------
# the known answer
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("known")
    paths = build_store(root / "data", {"train": 16, "val": 8, "test": 8}, frames=4, size=32,
                        shift=24 / 255)
    adv = {"eps": EPS, "alpha": None, "steps": 5, "epochs": 8, "clean_share": 0.0,
           "warmup_epochs": 0, "select_steps": 10}
    params = tiny_params(train={"epochs": 3}, adv=adv)
    run_pretrain(params, paths, root / "clean.pt", root / "pre.json", root / "pre.csv", root / "tb")
    fine = run_adv_finetune(params, paths, root / "clean.pt", root / "robust.pt", root / "ft.json",
                            root / "ft.csv", root / "tb2")
    return {"root": root, "paths": paths, "fine": fine}


def _robust_bacc(path, paths) -> tuple[float, float]:
    """(clean bacc, robust bacc) on the test videos at the checkpoint's deployed boundary, under
    PGD-50 with 3 restarts at EPS."""
    model, meta = load_checkpoint(path)
    deployed = Deployed(model.eval(), deployed_boundary(meta)).eval()
    ds = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "test")
    idx = np.arange(len(ds))
    res = score_under_attack(deployed, dataset_batches(ds, idx, 32, ds.frames["key"].tolist()),
                             ["pgd"], EPS, STRONG, seed=5)
    y = res.labels == 1

    def bacc(z: np.ndarray) -> float:
        return float(((z[y] > 0).mean() + (z[~y] <= 0).mean()) / 2)

    return bacc(res.clean), bacc(res.worst)


def test_adversarial_finetuning_and_selection_reach_the_known_robust_answer(trained) -> None:
    clean_bacc, clean_rob = _robust_bacc(trained["root"] / "clean.pt", trained["paths"])
    robust_clean, robust_rob = _robust_bacc(trained["root"] / "robust.pt", trained["paths"])
    assert clean_bacc >= 0.9 and clean_rob <= 0.1  # accurate, and not robust
    assert robust_clean >= 0.9 and robust_rob >= 0.85  # robust by construction, and found
    fine = trained["fine"]
    assert fine["selection"]["qualified"] is True and fine["val_pgd_min_recall"] >= 0.5
