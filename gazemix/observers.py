"""Split each image's observers into two disjoint halves: *guide* gaze and *evaluation* gaze.

A mixer that chooses its mix or its label from human gaze (GazeMix, TdAttenMix with ``gaze_weight``, saliency
mixers with ``saliency_source="gaze"``) must never be scored against the gaze that guided it: a label read from
the same observers' gaze agrees with that gaze by construction. Scoring therefore hands mixers only the
*guide* half and computes every gaze weight from the *evaluation* half, the usual held-out-observer design of
saliency benchmarks (the MIT benchmark's inter-observer baseline; Judd, Durand & Torralba, MIT-CSAIL-TR-2012-001;
Borji & Itti, CVPR 2013).

Each image is split on its own, by a seeded permutation of its observer ids (``numpy.random.default_rng((seed,
i))`` for image ``i``), so the split of an image never depends on the other images. With ``n`` observers the
evaluation half gets ``ceil(n / 2)`` and the guide half ``floor(n / 2)``. Images with fewer than two observers,
or whose fixations carry no observer id (``-1``), cannot be split; the caller decides what to do with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_adapters.base import Fixations

__all__ = ["ObserverSplit", "SPLITS", "split_observers"]

SPLITS = ("half", "none")


@dataclass
class ObserverSplit:
    """The two halves of every image's observers.

    Attributes:
        guide: per image, the fixations of the guide observers (empty where the image cannot be split).
        evaluation: per image, the fixations of the evaluation observers (all of them where it cannot).
        n_guide, n_evaluation: ``(N,)`` observers in each half.
        splittable: ``(N,)`` bool, True where the image has two or more identified observers.
    """

    guide: list[Fixations]
    evaluation: list[Fixations]
    n_guide: np.ndarray
    n_evaluation: np.ndarray
    splittable: np.ndarray


def _subset(fix: Fixations, keep: np.ndarray) -> Fixations:
    return Fixations(fix.x[keep], fix.y[keep], fix.duration_ms[keep], fix.observer[keep])


def split_observers(fixations: list[Fixations], seed: int) -> ObserverSplit:
    """Split the observers of every image into a guide half and an evaluation half (see the module docstring)."""
    guide, evaluation, n_guide, n_eval, ok = [], [], [], [], []
    for i, fix in enumerate(fixations):
        observers = np.unique(np.asarray(fix.observer))
        if observers.size < 2 or (observers < 0).any():
            guide.append(Fixations.empty())
            evaluation.append(fix)
            n_guide.append(0)
            n_eval.append(int(observers.size) if (observers >= 0).all() else 0)
            ok.append(False)
            continue
        order = np.random.default_rng((seed, i)).permutation(observers)
        held = order[: observers.size // 2]
        in_guide = np.isin(fix.observer, held)
        guide.append(_subset(fix, in_guide))
        evaluation.append(_subset(fix, ~in_guide))
        n_guide.append(held.size)
        n_eval.append(observers.size - held.size)
        ok.append(True)
    return ObserverSplit(guide, evaluation, np.asarray(n_guide, dtype=np.int64), np.asarray(n_eval, dtype=np.int64),
                         np.asarray(ok, dtype=bool))
