"""Batch augmentation on the training device: one affine warp per batch, no per-image Python.

Recipes are named here so training, notebook and model card agree on what each one does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from fer_core.labels import EMOTIONS


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    max_rotation_deg: float = 10.0,
    max_shift_px: float = 4.0,
    scale_range: tuple[float, float] = (1.0, 1.0),
    flip: bool = True,
) -> torch.Tensor:
    """Rotate, shift (= random crop of a zero-padded image), scale and h-flip each image of a batch.

    Parameters come from `generator` (CPU) so a run is reproducible and resumable exactly.
    """
    n, _, height, width = images.shape
    rand = torch.rand(n, 5, generator=generator)
    angle = (rand[:, 0] * 2 - 1) * math.radians(max_rotation_deg)
    scale = scale_range[0] + rand[:, 1] * (scale_range[1] - scale_range[0])
    shift_x = (rand[:, 2] * 2 - 1) * max_shift_px * 2 / width
    shift_y = (rand[:, 3] * 2 - 1) * max_shift_px * 2 / height
    mirror = torch.where((rand[:, 4] < 0.5) & flip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * mirror, -sin, shift_x], dim=1),
            torch.stack([sin * mirror, cos, shift_y], dim=1),
        ],
        dim=1,
    ).to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass(frozen=True)
class Recipe:
    """A training recipe: geometric augmentation, optional label mixing, and a description."""

    name: str
    description: str
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None


def _crp(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return random_affine(images, generator, max_rotation_deg=15.0, max_shift_px=4.0, scale_range=(0.9, 1.1))


def _light(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return random_affine(images, generator, max_rotation_deg=5.0, max_shift_px=3.0)


def mixup_cutmix(num_classes: int = len(EMOTIONS)) -> v2.Transform:
    """torchvision's batch MixUp (alpha 0.2) or CutMix (alpha 1.0), chosen per batch."""
    return v2.RandomChoice(
        [v2.MixUp(alpha=0.2, num_classes=num_classes), v2.CutMix(alpha=1.0, num_classes=num_classes)]
    )


RECIPES: dict[str, Recipe] = {
    "crp": Recipe(
        "crp",
        "CRP: random crop with 4 px zero padding, rotation +-15 deg, scale 0.9-1.1, horizontal flip",
        _crp,
    ),
    "mixcut": Recipe(
        "mixcut",
        "MixUp (alpha 0.2) or CutMix (alpha 1.0) per batch, on top of 3 px crop, +-5 deg rotation, flip",
        _light,
        mixup_cutmix(),
    ),
}
