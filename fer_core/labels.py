"""The label space shared by every model, file format and page: FER-2013's seven emotions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

#: FER-2013 label ids are the positions in this tuple (angry 0 ... neutral 6).
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: FER-2013 "Usage" values: fit on Training, choose on PublicTest, report on PrivateTest.
TRAIN_SPLIT = "Training"
VAL_SPLIT = "PublicTest"
TEST_SPLIT = "PrivateTest"
SPLITS: tuple[str, ...] = (TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT)

#: Side of a FER-2013 face crop in pixels.
FER_SIZE = 48


def probs_vector(probs: Mapping[str, float]) -> np.ndarray:
    """A probability dict (as results and JSON carry them) in `EMOTIONS` order; missing classes count as 0."""
    return np.array([float(probs.get(name, 0.0)) for name in EMOTIONS], dtype=np.float64)


def probs_dict(vector: Iterable[float]) -> dict[str, float]:
    """A probability vector in `EMOTIONS` order as a dict keyed by emotion, with plain floats (JSON-ready)."""
    return {name: float(p) for name, p in zip(EMOTIONS, vector, strict=True)}
