"""The training recipes' augmentations: what each one does to a batch, and that a seed fixes it."""

from __future__ import annotations

import torch

from fer_core.augment import RECIPES, random_affine
from fer_core.labels import EMOTIONS


def batch(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Faces stand-in: random pixels, so every shift, turn or mirror changes the image."""
    return torch.rand(n, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


def spot_images(n: int, row: int, col: int) -> torch.Tensor:
    """A 2x2 bright spot whose centre is at (row + 0.5, col + 0.5)."""
    images = torch.zeros(n, 1, 48, 48)
    images[:, 0, row : row + 2, col : col + 2] = 1.0
    return images


def centroids(images: torch.Tensor) -> torch.Tensor:
    """(row, col) of each image's brightness centre."""
    weights = images[:, 0].clamp(min=0)
    grid = torch.arange(48, dtype=torch.float32)
    total = weights.sum((1, 2))
    rows = (weights.sum(2) * grid).sum(1) / total
    cols = (weights.sum(1) * grid).sum(1) / total
    return torch.stack([rows, cols], 1)


def test_without_any_range_the_warp_is_the_identity() -> None:
    images = batch()
    out = random_affine(images, torch.Generator().manual_seed(1), max_rotation_deg=0, max_shift_px=0, flip=False)
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


def test_flip_mirrors_about_half_the_batch_and_nothing_else() -> None:
    images = batch(200)
    out = random_affine(images, torch.Generator().manual_seed(2), max_rotation_deg=0, max_shift_px=0)
    same = (out - images).abs().amax((1, 2, 3)) < 1e-5
    mirrored = (out - images.flip(-1)).abs().amax((1, 2, 3)) < 1e-5
    assert bool((same ^ mirrored).all())  # each image is itself or its mirror, exactly
    assert 70 < int(mirrored.sum()) < 130


def test_shifts_move_a_spot_by_at_most_the_padding_and_in_every_direction() -> None:
    images = spot_images(300, 23, 23)
    out = random_affine(images, torch.Generator().manual_seed(3), max_rotation_deg=0, max_shift_px=4, flip=False)
    moved = centroids(out) - centroids(images)
    assert float(moved.abs().max()) <= 4.0 + 1e-3
    assert float(moved[:, 0].min()) < -3 and float(moved[:, 0].max()) > 3  # up and down
    assert float(moved[:, 1].min()) < -3 and float(moved[:, 1].max()) > 3  # left and right


def test_rotation_turns_about_the_centre_within_its_range() -> None:
    """A spot 16 px right of the centre ends on the circle of radius 16, at most 15 degrees round it."""
    images = spot_images(300, 23, 39)
    out = random_affine(images, torch.Generator().manual_seed(4), max_rotation_deg=15, max_shift_px=0, flip=False)
    offset = centroids(out) - 23.5
    radius = offset.norm(dim=1)
    angle = torch.rad2deg(torch.atan2(offset[:, 0], offset[:, 1]))
    torch.testing.assert_close(radius, torch.full_like(radius, 16.0), atol=0.3, rtol=0)
    assert float(angle.abs().max()) <= 15.2 and float(angle.min()) < -10 and float(angle.max()) > 10


def test_a_generator_seed_fixes_the_augmentation() -> None:
    images = batch()
    augment = RECIPES["crp"].augment
    first = augment(images, torch.Generator().manual_seed(5))
    again = augment(images, torch.Generator().manual_seed(5))
    other = augment(images, torch.Generator().manual_seed(6))
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    assert not torch.allclose(first, other)
    assert first.shape == images.shape and first.dtype == images.dtype
    assert not torch.allclose(first, images)  # the recipe changes the faces it trains on


def test_the_crp_recipe_has_no_label_mixing_and_mixcut_mixes_labels_into_distributions() -> None:
    assert RECIPES["crp"].mix is None
    mix = RECIPES["mixcut"].mix
    assert mix is not None
    torch.manual_seed(7)  # torchvision's MixUp/CutMix draw from the global generator
    images, labels = batch(32), torch.arange(32) % len(EMOTIONS)
    mixed_images, targets = mix(images, labels)
    assert mixed_images.shape == images.shape and targets.shape == (32, len(EMOTIONS))
    torch.testing.assert_close(targets.sum(1), torch.ones(32))
    assert float(targets.max(1).values.min()) < 1.0  # soft targets: two classes share each row
    assert not torch.allclose(mixed_images, images)
