"""A PNG gallery of adversarial examples: test face, PGD example per model with its prediction,
and the perturbation amplified to be visible."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fakeproof.io import atomic_path
from fakeproof.under_attack import eps_label


def gallery_positions(n: int, keep: int) -> np.ndarray:
    """Positions in the attacked sample shown in the gallery: spread evenly, so several videos."""
    if keep <= 0 or n == 0:
        return np.zeros(0, dtype=int)
    return np.unique(np.linspace(0, n - 1, min(keep, n)).round().astype(int))


def save_gallery(path: Path, ds: Any, results: Mapping[str, Any], ep: Any) -> None:
    """Write the gallery of the PGD examples kept at ``eval.headline_eps`` (atomically);
    ``results``: :class:`fakeproof.evaluate.ModelResult` per model (``gallery``, ``sample``,
    ``sample_clean_probs`` and ``budget`` are read)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in results if results[n].gallery.get("pgd")]
    first = results[names[0]] if names else None
    eps = ep.headline_eps
    with atomic_path(path) as tmp:
        if first is None or ep.gallery == 0:
            fig = plt.figure(figsize=(3, 1))
            fig.text(0.5, 0.5, "gallery disabled (eval.gallery: 0 or no pgd in eval.attacks)",
                     ha="center", va="center", fontsize=6)
        else:
            pos = gallery_positions(len(first.sample.index), ep.gallery)
            idx = first.sample.index[pos]
            cols = 1 + 2 * len(names)
            fig, axes = plt.subplots(len(idx), cols, figsize=(2 * cols, 2.1 * len(idx)), squeeze=False)
            for r, i in enumerate(idx):
                x, y, _ = ds[int(i)]
                lab = "fake" if int(y) == 1 else "real"
                axes[r][0].imshow(x.permute(1, 2, 0).numpy())
                axes[r][0].set_title(f"test face ({lab})", fontsize=7)
                for j, n in enumerate(names):
                    adv, probs = results[n].gallery["pgd"]
                    p_clean = float(results[n].sample_clean_probs[pos[r]])
                    a = adv[r].detach().cpu()
                    axes[r][1 + 2 * j].imshow(a.permute(1, 2, 0).numpy())
                    axes[r][1 + 2 * j].set_title(
                        f"{n}: p(fake) {p_clean:.2f}->{float(probs[r]):.2f}", fontsize=7)
                    delta = (a - x) / (2 * max(eps, 1e-12)) + 0.5
                    axes[r][2 + 2 * j].imshow(delta.clamp(0, 1).permute(1, 2, 0).numpy())
                    axes[r][2 + 2 * j].set_title(f"{n}: perturbation x{0.5 / max(eps, 1e-12):.0f}",
                                                 fontsize=7)
            for ax in np.ravel(axes):
                ax.axis("off")
            budget = first.budget
            fig.suptitle(f"PGD-{budget['pgd_steps']} at eps {eps_label(eps)}", fontsize=9)
            fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
        plt.close(fig)
