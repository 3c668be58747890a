"""FER-2013 loading in both forms users hold: the original CSV and the Kaggle folder layout.

Everything ends up as in-memory uint8 arrays (35,887 x 48 x 48 is 83 MB), which lets training
augment whole batches on the device instead of decoding JPEGs per step.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from fer_core.labels import EMOTIONS, FER_SIZE, SPLITS, TEST_SPLIT, TRAIN_SPLIT, VAL_SPLIT

log = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.xz", ".csv.zip", ".gz", ".xz", ".zip")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm"}
_USAGE_PREFIX = re.compile(r"^(Training|PublicTest|PrivateTest)_", re.IGNORECASE)


class FerDataError(ValueError):
    """A FER-2013 source is malformed; the message names the row or file and the problem."""


@dataclass(frozen=True)
class FerSplit:
    """One split: images (N, 48, 48) uint8, labels (N,) int64 and where each sample came from."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(EMOTIONS))
        return {name: int(n) for name, n in zip(EMOTIONS, counts, strict=True)}

    def subset(self, indices: Iterable[int] | np.ndarray) -> FerSplit:
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
        return FerSplit(self.name, self.images[idx], self.labels[idx], tuple(self.sources[i] for i in idx))


@dataclass(frozen=True)
class FerDataset:
    """The three FER-2013 splits plus a note of rows or files skipped on request."""

    splits: dict[str, FerSplit]
    skipped: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> FerSplit:
        if name not in self.splits:
            raise KeyError(f"split {name!r} not present; have {sorted(self.splits)}")
        return self.splits[name]

    def fingerprint(self) -> str:
        """sha256 over pixels and labels of every split: identifies the exact training data."""
        digest = hashlib.sha256()
        for name in SPLITS:
            if name in self.splits:
                split = self.splits[name]
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(split.images).tobytes())
                digest.update(np.ascontiguousarray(split.labels).astype(np.int64).tobytes())
        return digest.hexdigest()


def load_fer2013(
    path: str | Path,
    *,
    skip_bad: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> FerDataset:
    """Load FER-2013 from a CSV file (plain/.gz/.xz/.zip) or a Kaggle-layout folder.

    A malformed row or unreadable image raises `FerDataError` naming it; with `skip_bad` it is
    skipped, counted and logged instead. When the source has no PublicTest rows (no Usage column,
    or folder files without the `PublicTest_` prefix), a seeded stratified `val_fraction` of
    Training becomes PublicTest so model selection never touches the test split.
    """
    source = Path(path)
    if not source.exists():
        raise FerDataError(f"{source}: no such file or folder")
    if source.is_dir():
        images, labels, usages, sources, skipped = _read_folder(source, skip_bad)
    elif source.name.lower().endswith(CSV_SUFFIXES):
        images, labels, usages, sources, skipped = _read_csv(source, skip_bad)
    else:
        raise FerDataError(f"{source}: not a FER-2013 source (expected a folder or a .csv/.csv.gz/.xz/.zip file)")
    if skipped:
        log.warning("skipped %d bad rows/files in %s (first: %s)", len(skipped), source, skipped[0])
    if not labels:
        raise FerDataError(f"{source}: no usable samples found")
    usages_arr = np.asarray(usages)
    if not np.any(usages_arr == VAL_SPLIT):
        usages_arr = _carve_validation(usages_arr, np.asarray(labels), val_fraction, seed)
    image_arr = np.stack(images).astype(np.uint8)
    label_arr = np.asarray(labels, dtype=np.int64)
    splits = {}
    for name in SPLITS:
        idx = np.flatnonzero(usages_arr == name)
        if len(idx):
            splits[name] = FerSplit(name, image_arr[idx], label_arr[idx], tuple(sources[i] for i in idx))
    return FerDataset(splits, tuple(skipped))


def _carve_validation(usages: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Move a seeded, per-class `fraction` of Training into PublicTest."""
    usages = usages.copy()
    rng = np.random.default_rng(seed)
    for cls in range(len(EMOTIONS)):
        idx = np.flatnonzero((usages == TRAIN_SPLIT) & (labels == cls))
        n_val = round(len(idx) * fraction)
        if len(idx) > 1 and n_val == 0:
            n_val = 1
        usages[rng.permutation(idx)[:n_val]] = VAL_SPLIT
    log.info("no PublicTest samples in the source: carved a seeded %.0f%% validation split", 100 * fraction)
    return usages


def parse_pixels(text: str, where: str) -> np.ndarray:
    """One CSV `pixels` cell to a 48x48 uint8 array, or a `FerDataError` saying what is wrong."""
    parts = str(text).split()
    if len(parts) != FER_SIZE * FER_SIZE:
        raise FerDataError(f"{where}: expected {FER_SIZE * FER_SIZE} pixel values, got {len(parts)}")
    try:
        values = np.array(parts, dtype=np.int64)
    except ValueError:
        bad = next(p for p in parts if not p.lstrip("-").isdigit())
        raise FerDataError(f"{where}: pixel value {bad!r} is not an integer") from None
    if values.min() < 0 or values.max() > 255:
        raise FerDataError(f"{where}: pixel values must lie in 0..255, got {values.min()}..{values.max()}")
    return values.astype(np.uint8).reshape(FER_SIZE, FER_SIZE)


def parse_emotion(text: str, where: str) -> int:
    """An `emotion` cell (id 0..6 or class name) to its label id."""
    value = str(text).strip().lower()
    if value in EMOTIONS:
        return EMOTIONS.index(value)
    if value.isdigit() and int(value) < len(EMOTIONS):
        return int(value)
    raise FerDataError(f"{where}: emotion {text!r} is not one of 0..6 or {', '.join(EMOTIONS)}")


def read_csv_table(path: Path, skipped: list[str], skip_bad: bool) -> pd.DataFrame:
    """Read a FER-style CSV as strings; rows with the wrong number of fields are errors too."""

    def bad_line(fields: list[str]) -> None:
        message = f"{path}: a row has {len(fields)} fields, expected the header's"
        if not skip_bad:
            raise FerDataError(message)
        skipped.append(message)
        return None

    try:
        return pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            on_bad_lines=bad_line,
            engine="python",
            compression="infer",
        )
    except FerDataError:
        raise
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, ValueError) as err:
        raise FerDataError(f"{path}: cannot read as CSV ({err})") from err


def _read_csv(path: Path, skip_bad: bool):
    skipped: list[str] = []
    table = read_csv_table(path, skipped, skip_bad)
    table.columns = [c.strip() for c in table.columns]
    missing = {"emotion", "pixels"} - set(table.columns)
    if missing:
        raise FerDataError(f"{path}: missing column(s) {sorted(missing)}; have {list(table.columns)}")
    has_usage = "Usage" in table.columns
    images, labels, usages, sources = [], [], [], []
    for row_number, row in enumerate(table.itertuples(index=False), start=2):
        where = f"{path.name} line {row_number}"
        try:
            label = parse_emotion(row.emotion, where)
            pixels = parse_pixels(row.pixels, where)
            usage = str(row.Usage).strip() if has_usage else TRAIN_SPLIT
            if usage not in SPLITS:
                raise FerDataError(f"{where}: Usage {usage!r} is not one of {', '.join(SPLITS)}")
        except FerDataError as err:
            if not skip_bad:
                raise
            skipped.append(str(err))
            continue
        images.append(pixels)
        labels.append(label)
        usages.append(usage)
        sources.append(where)
    return images, labels, usages, sources, skipped


def read_gray_face(path: Path) -> np.ndarray:
    """Decode one face crop as 48x48 uint8 grayscale (resizing other sizes)."""
    try:
        with Image.open(path) as img:
            gray = img.convert("L")
            if gray.size != (FER_SIZE, FER_SIZE):
                gray = gray.resize((FER_SIZE, FER_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(gray, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise FerDataError(f"{path}: unreadable image ({err})") from err


def _read_folder(root: Path, skip_bad: bool):
    """Kaggle layout: `<split dir>/<class>/<file>`; Usage from the file-name prefix."""
    split_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if not split_dirs:
        raise FerDataError(f"{root}: expected train/ and test/ folders with one folder per class")
    images, labels, usages, sources, skipped = [], [], [], [], []
    for split_dir in split_dirs:
        default_usage = TRAIN_SPLIT if split_dir.name.lower().startswith("train") else TEST_SPLIT
        for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            name = class_dir.name.lower()
            if name not in EMOTIONS:
                message = f"{class_dir}: folder name is not one of {', '.join(EMOTIONS)}"
                if not skip_bad:
                    raise FerDataError(message)
                skipped.append(message)
                continue
            for file in sorted(class_dir.iterdir()):
                if not file.is_file() or file.name.startswith("."):
                    continue
                try:
                    if file.suffix.lower() not in IMAGE_SUFFIXES:
                        raise FerDataError(f"{file}: not an image file type")
                    pixels = read_gray_face(file)
                except FerDataError as err:
                    if not skip_bad:
                        raise
                    skipped.append(str(err))
                    continue
                match = _USAGE_PREFIX.match(file.name)
                usage = _canonical_usage(match.group(1)) if match else default_usage
                images.append(pixels)
                labels.append(EMOTIONS.index(name))
                usages.append(usage)
                sources.append(str(file))
    return images, labels, usages, sources, skipped


def _canonical_usage(text: str) -> str:
    return next(s for s in SPLITS if s.lower() == text.lower())


def class_weights(labels: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Loss weights ~ frequency**-power, mean 1: lifts tiny `disgust` without drowning the rest."""
    counts = np.bincount(labels, minlength=len(EMOTIONS)).astype(np.float64)
    weights = np.where(counts > 0, np.maximum(counts, 1.0) ** -power, 0.0)
    return (weights / weights[counts > 0].mean()).astype(np.float32)
