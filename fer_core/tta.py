"""Test-time augmentation of face crops: named sets of views whose probabilities are averaged.

The views mirror what training showed the models (mirroring, small rotations, shifts and zooms of a 48 px
crop, zero-padded like `augment.random_affine`), so each view is an in-distribution sample of the same face.
`fit_ensemble` measures every set on PublicTest and ships the best one; the app can switch it off where
time matters more than the last percent (live video).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np


@dataclass(frozen=True)
class View:
    """One deterministic transform of a crop: mirror first, then rotate/scale about the centre, then shift."""

    mirror: bool = False
    angle_deg: float = 0.0
    scale: float = 1.0
    shift_px: tuple[float, float] = (0.0, 0.0)

    @property
    def warps(self) -> bool:
        """Whether anything beyond the mirror moves pixels (rotation, scale or shift)."""
        return (self.angle_deg, self.scale, self.shift_px) != (0.0, 1.0, (0.0, 0.0))

    @property
    def is_identity(self) -> bool:
        return not self.mirror and not self.warps

    def apply(self, batch_uint8: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 to the same shape, every image transformed alike."""
        out = np.ascontiguousarray(batch_uint8[..., ::-1]) if self.mirror else batch_uint8
        if not self.warps:
            return out
        n, c, h, w = out.shape
        matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), self.angle_deg, self.scale)
        matrix[:, 2] += np.asarray(self.shift_px)
        planes = out.reshape(n * c, h, w)
        warped = np.empty_like(planes)
        for i, plane in enumerate(planes):
            warped[i] = cv2.warpAffine(plane, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        return warped.reshape(n, c, h, w)


def _with_mirrors(views: Sequence[View]) -> tuple[View, ...]:
    return tuple(v for view in views for v in (view, View(True, view.angle_deg, view.scale, view.shift_px)))


class TtaSet(NamedTuple):
    """A named candidate: its views and what they are in words (for the app and the model card)."""

    views: tuple[View, ...]
    description: str


#: Candidate sets, cheapest first (fit_ensemble prefers the cheaper one on a tie).
TTA_SETS: dict[str, TtaSet] = {
    "none": TtaSet((View(),), "the crop as it is"),
    "flip": TtaSet(_with_mirrors([View()]), "the crop and its mirror image"),
    "flip_rot8": TtaSet(
        _with_mirrors([View(), View(angle_deg=8.0), View(angle_deg=-8.0)]),
        "the crop rotated by -8, 0 and +8 degrees, each also mirrored",
    ),
    "flip_zoom": TtaSet(
        _with_mirrors([View(), View(scale=1.08), View(scale=0.93)]),
        "the crop zoomed by 0.93, 1 and 1.08, each also mirrored",
    ),
    "flip_shift3": TtaSet(
        _with_mirrors([View(), *(View(shift_px=s) for s in ((-3.0, 0.0), (3.0, 0.0), (0.0, -3.0), (0.0, 3.0)))]),
        "the crop and four 3 px shifts of it, each also mirrored",
    ),
}
NO_TTA = "none"


def tta_set(name: str) -> TtaSet:
    """A named set; an unknown name is an error that lists the known ones."""
    if name not in TTA_SETS:
        raise ValueError(f"unknown TTA set {name!r}; known: {', '.join(TTA_SETS)}")
    return TTA_SETS[name]


def tta_views(name: str) -> tuple[View, ...]:
    """The views of a named set (unknown names are refused as in `tta_set`)."""
    return tta_set(name).views


def tta_from_spec(spec: dict) -> str:
    """The TTA set an ensemble.json asks for (older files said `hflip_tta: true|false`)."""
    if "tta" in spec:
        tta_views(str(spec["tta"]))
        return str(spec["tta"])
    return "flip" if spec.get("hflip_tta") else NO_TTA


def expand(batch_uint8: np.ndarray, views: Sequence[View]) -> np.ndarray:
    """All views of a batch stacked view-major: (len(views) * N, C, H, W), for one runtime call."""
    return np.concatenate([view.apply(batch_uint8) for view in views])


def average_views(probs: np.ndarray, n_views: int) -> np.ndarray:
    """Undo `expand`: (len(views) * N, K) probabilities to their (N, K) mean over views."""
    return probs.reshape(n_views, -1, probs.shape[-1]).mean(axis=0)
