"""What each model says about a face, and whether the models agree: the verdicts the app's pages show when the user
picks a model, and what the comparison page sorts faces by. Plain probability dicts in, no model needed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fer_core.labels import EMOTIONS, probs_vector


@dataclass(frozen=True)
class ModelView:
    """One model's verdict on a face: what the app shows when the user picks that model."""

    label: str
    confidence: float
    probs: dict[str, float]


def model_view(probs: Mapping[str, float]) -> ModelView:
    """Top class and its probability from a probability dict (ties go to the earlier emotion)."""
    label = max(EMOTIONS, key=lambda name: (probs.get(name, 0.0), -EMOTIONS.index(name)))
    return ModelView(label, float(probs.get(label, 0.0)), {name: float(probs.get(name, 0.0)) for name in EMOTIONS})


@dataclass(frozen=True)
class Disagreement:
    """How two models differ on one face: different top classes, and the total-variation distance."""

    labels: dict[str, str]
    distance: float

    @property
    def disagree(self) -> bool:
        return len(set(self.labels.values())) > 1


def disagreement(model_probs: Mapping[str, Mapping[str, float]]) -> Disagreement:
    """Compare the models' top classes and distributions (max pairwise total variation, 0 = identical, 1 = disjoint)."""
    names = list(model_probs)
    vectors = {name: probs_vector(model_probs[name]) for name in names}
    distance = max(
        (0.5 * float(np.abs(vectors[a] - vectors[b]).sum()) for i, a in enumerate(names) for b in names[i + 1 :]),
        default=0.0,
    )
    return Disagreement({name: model_view(model_probs[name]).label for name in names}, distance)


__all__ = ["Disagreement", "ModelView", "disagreement", "model_view"]
