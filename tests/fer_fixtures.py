"""Generators of tiny FER-2013 sources (CSV and Kaggle folders) for tests: no real data needed."""

from __future__ import annotations

import gzip
import lzma
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from fer_core.labels import EMOTIONS


def synthetic_faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n 48x48 uint8 images whose class is learnable (a bright bar at a class-specific row)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(EMOTIONS)
    images = rng.integers(0, 60, size=(n, 48, 48)).astype(np.uint8)
    for i, label in enumerate(labels):
        row = 4 + 6 * label
        images[i, row : row + 4, 8:40] = 230
    return images, labels.astype(np.int64)


def csv_text(images: np.ndarray, labels: np.ndarray, usages: list[str]) -> str:
    lines = ["emotion,pixels,Usage"]
    for image, label, usage in zip(images, labels, usages, strict=True):
        lines.append(f"{label},{' '.join(map(str, image.ravel()))},{usage}")
    return "\n".join(lines) + "\n"


def write_fer_csv(path: Path, n_train: int = 42, n_public: int = 14, n_private: int = 14, seed: int = 0) -> Path:
    """A FER-style CSV; compressed according to the suffix (.gz, .xz, .zip)."""
    total = n_train + n_public + n_private
    images, labels = synthetic_faces(total, seed)
    usages = ["Training"] * n_train + ["PublicTest"] * n_public + ["PrivateTest"] * n_private
    text = csv_text(images, labels, usages)
    name = path.name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    elif name.endswith(".xz"):
        with lzma.open(path, "wt") as handle:
            handle.write(text)
    elif name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(name.removesuffix(".zip"), text)
    else:
        path.write_text(text)
    return path


def write_fer_folder(root: Path, per_class: int = 4, prefixes: bool = True, seed: int = 0) -> Path:
    """Kaggle layout: train/<class>/Training_i.jpg and test/<class>/{Public,Private}Test_i.png."""
    images, labels = synthetic_faces(per_class * len(EMOTIONS) * 2, seed)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        in_train = i < len(images) // 2
        split_dir = "train" if in_train else "test"
        if prefixes:
            prefix = "Training" if in_train else ("PublicTest" if i % 2 else "PrivateTest")
            name = f"{prefix}_{i}.png"
        else:
            name = f"img_{i}.png"
        folder = root / split_dir / EMOTIONS[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / name)
    return root
