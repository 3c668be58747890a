"""FER-2013 loading in both forms users hold: the original CSV and the Kaggle folder layout.

Everything ends up as in-memory uint8 arrays (35,887 x 48 x 48 is 83 MB), which lets training
augment whole batches on the device instead of decoding JPEGs per step.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import lzma
import re
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import IO, Any, NamedTuple, cast

import numpy as np
from PIL import Image, UnidentifiedImageError

from fer_core.cli import UserInputError
from fer_core.imageio import IMAGE_SUFFIXES, READ_FORMATS, tiff_as_8bit, to_rgb, upright
from fer_core.labels import EMOTIONS, FER_SIZE, SPLITS, TEST_SPLIT, TRAIN_SPLIT, VAL_SPLIT

log = logging.getLogger(__name__)

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.xz", ".csv.zip", ".gz", ".xz", ".zip")
_USAGE_PREFIX = re.compile(r"^(Training|PublicTest|PrivateTest)_", re.IGNORECASE)


class FerDataError(UserInputError):
    """A FER-2013 source is malformed; the message names the row or file and the problem."""


class MissingSplitError(FerDataError, KeyError):
    """The source has no such split: a KeyError for lookups, and one `error:` line (not a traceback) in the CLIs."""

    __str__ = Exception.__str__  # KeyError's would wrap the message in quotes


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
    """The three FER-2013 splits plus a note of rows or files skipped on request.

    `skipped` holds one message per thing left out, which may be a whole folder; `skipped_count` counts the rows
    and files it held, the figure `evaluate` reports (a folder that cannot be listed counts as at least one)."""

    splits: dict[str, FerSplit]
    skipped: tuple[str, ...] = ()
    skipped_count: int = 0
    #: When the source had no PublicTest, the share of its Training images carved into that split
    #: (`_carve_validation`): a model trained on this source has seen them, so scores on them say little.
    carved_share: float = 0.0

    def validation_warning(self, source: str | Path) -> str | None:
        """What a tool that reads PublicTest (evaluate, fit_ensemble) prints when that split was carved."""
        if not self.carved_share:
            return None
        return (
            f"{source} has no {VAL_SPLIT} images: {VAL_SPLIT} here is a seeded {self.carved_share:.0%} of its "
            "Training images, which models trained on this source have already seen"
        )

    def __getitem__(self, name: str) -> FerSplit:
        if name not in self.splits:
            raise MissingSplitError(f"this source has no {name} split; it has {', '.join(sorted(self.splits))}")
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


class _Skipped(NamedTuple):
    """One thing `skip_bad` left out and how many rows/files that was; not `exact` when a folder could not be listed
    to count its files."""

    message: str
    items: int
    exact: bool = True


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
    elif source.name.lower().endswith(CSV_SUFFIXES) or _is_tar_archive(source):  # a tar: refused by the reader
        images, labels, usages, sources, skipped = _read_csv(source, skip_bad)
    else:
        raise FerDataError(f"{source}: not a FER-2013 source (expected a folder or a .csv/.csv.gz/.xz/.zip file)")
    skipped_count = sum(skip.items for skip in skipped)
    if skipped:
        at_least = "" if all(skip.exact for skip in skipped) else "at least "  # a folder that could not be listed
        log.warning(
            "skipped %s%d bad rows/files in %s (first: %s)", at_least, skipped_count, source, skipped[0].message
        )
    if not labels:
        raise FerDataError(f"{source}: no usable samples found")
    usages_arr = np.asarray(usages)
    carved_share = 0.0 if np.any(usages_arr == VAL_SPLIT) else val_fraction
    if carved_share:
        usages_arr = _carve_validation(usages_arr, np.asarray(labels), val_fraction, seed)
    image_arr = np.stack(images).astype(np.uint8)
    label_arr = np.asarray(labels, dtype=np.int64)
    splits = {}
    for name in SPLITS:
        idx = np.flatnonzero(usages_arr == name)
        if len(idx):
            splits[name] = FerSplit(name, image_arr[idx], label_arr[idx], tuple(sources[i] for i in idx))
    return FerDataset(splits, tuple(skip.message for skip in skipped), skipped_count, carved_share)


def _is_tar_archive(path: Path) -> bool:
    """Kaggle's `fer2013.tar.gz` holds fer2013/fer2013.csv; read as a gzipped CSV its tar header made the advice
    "not UTF-8 text". `tarfile` recognises .tar/.tar.gz/.tgz/.tar.xz by content, reading only the first header."""
    try:
        return tarfile.is_tarfile(path)
    except (*_READ_ERRORS, tarfile.TarError):  # unreadable or damaged: reading it as a CSV names the problem
        return False


def _carve_validation(usages: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Move a seeded, per-class `fraction` of Training into PublicTest."""
    usages = usages.astype(f"<U{max(map(len, SPLITS))}")  # a copy wide enough for every split's name
    rng = np.random.default_rng(seed)
    for cls in range(len(EMOTIONS)):
        idx = np.flatnonzero((usages == TRAIN_SPLIT) & (labels == cls))
        n_val = round(len(idx) * fraction)
        if len(idx) > 1 and n_val == 0:
            n_val = 1
        usages[rng.permutation(idx)[:n_val]] = VAL_SPLIT
    log.info("no PublicTest samples in the source: carved a seeded %.0f%% validation split", 100 * fraction)
    return usages


_INTEGER = re.compile(r"[+-]?[0-9]+")


def parse_pixels(text: str, where: str) -> np.ndarray:
    """One CSV `pixels` cell to a 48x48 uint8 array, or a `FerDataError` saying what is wrong."""
    parts = str(text).split()
    if len(parts) != FER_SIZE * FER_SIZE:
        raise FerDataError(f"{where}: expected {FER_SIZE * FER_SIZE} pixel values, got {len(parts)}")
    not_integer = next((p for p in parts if not _INTEGER.fullmatch(p)), None)
    if not_integer is not None:
        raise FerDataError(f"{where}: pixel value {not_integer!r} is not an integer")
    try:
        values = np.array(parts, dtype=np.int64)
    except OverflowError:  # more digits than int64 holds: out of range like any other
        raise FerDataError(f"{where}: pixel values must lie in 0..255, got {max(parts, key=len)}") from None
    if values.min() < 0 or values.max() > 255:
        raise FerDataError(f"{where}: pixel values must lie in 0..255, got {values.min()}..{values.max()}")
    return values.astype(np.uint8).reshape(FER_SIZE, FER_SIZE)


def parse_emotion(text: str, where: str) -> int:
    """An `emotion` cell (id 0..6 or class name) to its label id."""
    value = str(text).strip().lower()
    if value in EMOTIONS:
        return EMOTIONS.index(value)
    if value.isascii() and value.isdigit() and int(value) < len(EMOTIONS):  # '²'.isdigit() too, and int() refuses it
        return int(value)
    raise FerDataError(f"{where}: emotion {text!r} is not one of 0..6 or {', '.join(EMOTIONS)}")


@dataclass(frozen=True)
class CsvRecord:
    """One CSV record: where it is in the file, and its fields by column name or what is wrong with it."""

    line: int
    where: str
    fields: dict[str, str]
    error: str = ""
    #: The non-blank file lines the record spans: a FER-2013 row never holds a newline, so a record over several
    #: lines is rows a stray quote merged, and skipping it loses that many rows, not one.
    rows: int = 1

    @property
    def span(self) -> str:
        """`where`, plus how many rows it holds when more than one (the figure `--skip-bad` counts)."""
        return self.where if self.rows == 1 else f"{self.where} ({self.rows} rows)"


#: What a damaged or mislabelled compressed file raises while it is being read.
#: zlib.error: damaged deflate data (zip, gz); NotImplementedError / RuntimeError: a zip member compressed with a
#: method Python lacks (Deflate64, AES) or protected by a password.
_READ_ERRORS = (
    OSError,
    EOFError,
    UnicodeDecodeError,
    zipfile.BadZipFile,
    lzma.LZMAError,
    zlib.error,
    NotImplementedError,
    RuntimeError,
    csv.Error,
)


def _open_csv_bytes(path: Path, stack: ExitStack) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return stack.enter_context(cast(IO[bytes], gzip.open(path, "rb")))
    if name.endswith(".xz"):
        return stack.enter_context(lzma.open(path, "rb"))
    if name.endswith(".zip"):
        archive = stack.enter_context(zipfile.ZipFile(path))
        members = [m for m in archive.namelist() if not m.endswith("/") and not _is_archive_clutter(m)]
        if len(members) != 1:
            raise FerDataError(f"{path}: expected one CSV inside the zip, found {len(members)} files")
        return stack.enter_context(archive.open(members[0]))
    return stack.enter_context(path.open("rb"))


def _is_archive_clutter(member: str) -> bool:
    """macOS Finder adds `__MACOSX/._name` resource forks to every zip it makes; they are not data."""
    return member.startswith("__MACOSX/") or PurePosixPath(member).name.startswith("._")


#: The columns we read, by their lower-case spelling: a header `emotion,pixels,usage` means the same as Kaggle's.
_KNOWN_COLUMNS = {name.lower(): name for name in ("emotion", "pixels", "Usage")}


def _canonical_columns(path: Path, header: list[str]) -> list[str]:
    columns = [_KNOWN_COLUMNS.get(name.strip().lower(), name.strip()) for name in header]
    for name in _KNOWN_COLUMNS.values():
        if columns.count(name) > 1:
            raise FerDataError(f"{path}: the header has {columns.count(name)} columns named {name!r} (any case)")
    return columns


def read_csv_records(path: Path) -> tuple[list[str], Iterator[CsvRecord]]:
    """The header's column names and the records after it, each with its real file line(s).

    The standard `csv` module rather than pandas, because pandas' python engine drops a record it cannot tokenise
    (a stray quote swallowing the lines after it) without calling `on_bad_lines`, and numbers rows, not file lines.
    Here such a record comes back with an `error` naming its lines; a damaged file raises `FerDataError`.
    """
    if _is_tar_archive(path):  # here, not in `load_fer2013` alone: `predict` reads CSVs with this too
        raise FerDataError(
            f"{path}: a tar archive, which is not read directly; extract it first (tar -xf {path.name}) and pass "
            "the CSV or folder it holds (FER-2013 is read as a .csv, a .gz/.xz/.zip of one CSV, or the Kaggle folder)"
        )
    stack = ExitStack()
    try:
        # errors="replace": one Latin-1 byte (an Excel export) stopped the read there and lost every later row; the
        # row holding it now fails its own checks (or keeps an unused column's U+FFFD) and the rest are read
        raw = _open_csv_bytes(path, stack)
        text = stack.enter_context(io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline=""))
        lines = _LineCounter(text)
        reader = csv.reader(lines)
        header = next(reader, None)
    except FerDataError:
        stack.close()
        raise
    except _READ_ERRORS as err:
        stack.close()
        raise FerDataError(f"{path}: cannot read as CSV ({err})") from err
    if not header:
        stack.close()
        raise FerDataError(f"{path}: empty file, expected a header row such as emotion,pixels,Usage")
    if any("\ufffd" in name or "\x00" in name for name in header):  # UTF-16 ("Unicode text"), or no text at all
        stack.close()
        raise FerDataError(f"{path}: cannot read as CSV: its first line is not UTF-8 text (save it as CSV UTF-8)")
    try:
        columns = _canonical_columns(path, header)
    except FerDataError:
        stack.close()
        raise
    return columns, _records(path, reader, lines, columns, stack)


def missing_columns_error(path: Path, columns: list[str], missing: Iterable[str]) -> FerDataError:
    """The columns a CSV lacks, with what its first line holds in a readable length: a file without a header row
    gave a line of 8,700 characters listing a face's 2,304 pixel values as column names."""
    if len(columns) >= 2 and columns[0].strip().isdigit() and len(columns[1].split()) > 100:
        return FerDataError(
            f"{path}: the first line is a data row, not a header; add the line emotion,pixels,Usage above it"
        )
    shown = [name if len(name) <= 40 else f"{name[:37]}..." for name in columns[:8]]
    more = f" and {len(columns) - 8} more" if len(columns) > 8 else ""
    return FerDataError(f"{path}: missing column(s) {sorted(missing)}; the header has {shown}{more}")


class _LineCounter:
    """The text lines `csv.reader` takes, counting those that hold anything, so a record knows how many rows it
    spans (blank lines inside a stray quote's span were never rows)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.filled = 0

    def __iter__(self) -> _LineCounter:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        if line.strip("\r\n"):
            self.filled += 1
        return line


def _records(path: Path, reader: Any, lines: _LineCounter, columns: list[str], stack: ExitStack) -> Iterator[CsvRecord]:
    with stack:
        last_line, last_filled = reader.line_num, lines.filled
        while True:
            try:
                fields = next(reader)
                error = ""
            except StopIteration:
                return
            except csv.Error as err:  # an unclosed quote ran into the size limit; the reader goes on after it
                fields, error = [], f"cannot parse this record ({err}): an unclosed quote?"
            except _READ_ERRORS as err:
                raise FerDataError(f"{path}: cannot read past line {last_line} ({err})") from err
            first_line, last_line = last_line + 1, reader.line_num
            rows, last_filled = max(lines.filled - last_filled, 1), lines.filled
            if not fields and not error:
                continue  # a blank line holds no record
            lines_named = f"line {first_line}" if first_line == last_line else f"lines {first_line}-{last_line}"
            where = f"{path.name} {lines_named}"
            if not error and len(fields) != len(columns):
                error = f"a row has {len(fields)} fields, expected {len(columns)} ({','.join(columns)})"
            record = CsvRecord(first_line, where, {} if error else dict(zip(columns, fields, strict=True)), rows=rows)
            yield replace(record, error=f"{record.span}: {error}") if error else record


def _read_csv(path: Path, skip_bad: bool):
    columns, records = read_csv_records(path)
    missing = {"emotion", "pixels"} - set(columns)
    if missing:
        raise missing_columns_error(path, columns, missing)
    has_usage = "Usage" in columns
    images, labels, usages, sources, skipped = [], [], [], [], []
    for record in records:
        try:
            if record.error:
                raise FerDataError(record.error)
            label = parse_emotion(record.fields["emotion"], record.span)
            pixels = parse_pixels(record.fields["pixels"], record.span)
            usage = record.fields["Usage"].strip() if has_usage else TRAIN_SPLIT
            if usage.lower() not in _SPLITS_LOWER:
                raise FerDataError(f"{record.span}: Usage {usage!r} is not one of {', '.join(SPLITS)}")
            usage = _canonical_usage(usage)
        except FerDataError as err:
            if not skip_bad:
                raise
            skipped.append(_Skipped(str(err), record.rows))  # a stray quote's record: every row it swallowed
            continue
        images.append(pixels)
        labels.append(label)
        usages.append(usage)
        sources.append(record.where)
    return images, labels, usages, sources, skipped


def read_gray_face(path: Path) -> np.ndarray:
    """Decode one face crop as 48x48 uint8 grayscale (resizing other sizes)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a 100 MP "face" is not one
            with Image.open(path, formats=READ_FORMATS) as opened:
                img = upright(opened)  # as the app and the CLIs see the same file
                gray = (
                    img.convert("L") if img.mode in ("L", "RGB") else to_rgb(tiff_as_8bit(img, str(path))).convert("L")
                )
                if gray.size != (FER_SIZE, FER_SIZE):
                    gray = gray.resize((FER_SIZE, FER_SIZE), Image.Resampling.BILINEAR)
                return np.asarray(gray, dtype=np.uint8)
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as err:
        raise FerDataError(f"{path}: unreadable image ({err})") from err


def _read_folder(root: Path, skip_bad: bool):
    """Kaggle layout: `<split dir>/<class>/<file>`; Usage from the file-name prefix, else from the split folder's
    name (train*, val*/dev*, test*); any other folder is an error, not silently a test split."""
    split_dirs = [d for d in _list_folder(root) if d.is_dir() and not d.name.startswith(".")]
    if not split_dirs:
        raise FerDataError(f"{root}: expected train/ and test/ folders with one folder per class")
    images, labels, usages, sources = [], [], [], []
    skipped: list[_Skipped] = []
    for split_dir in split_dirs:
        default_usage = folder_usage(split_dir.name)
        if default_usage is None:
            _refuse_or_leave_out(
                split_dir, f"{split_dir}: split folder name is not train*, val*/dev* or test*", skip_bad, skipped
            )
            continue
        class_dirs = _listed_or_skipped(split_dir, skip_bad, skipped)
        if class_dirs is None:
            continue
        for class_dir in (d for d in class_dirs if not d.name.startswith(".")):
            name = class_dir.name.lower()
            if not class_dir.is_dir() or name not in EMOTIONS:
                kind = "folder name" if class_dir.is_dir() else "a file beside the class folders: its name"
                message = f"{class_dir}: {kind} is not one of {', '.join(EMOTIONS)}"
                _refuse_or_leave_out(class_dir, message, skip_bad, skipped)
                continue
            files = _listed_or_skipped(class_dir, skip_bad, skipped)
            if files is None:
                continue
            for file in files:
                if file.name.startswith("."):
                    continue
                try:
                    if file.is_dir():
                        raise FerDataError(f"{file}: a folder inside a class folder (faces must sit directly in it)")
                    if not file.is_file():
                        raise FerDataError(f"{file}: not a readable file (a broken link?)")
                    if file.suffix.lower() not in IMAGE_SUFFIXES:
                        raise FerDataError(f"{file}: not an image file type")
                    pixels = read_gray_face(file)
                except FerDataError as err:
                    if not skip_bad:
                        raise
                    skipped.append(_Skipped(str(err), 1))
                    continue
                match = _USAGE_PREFIX.match(file.name)
                usage = _canonical_usage(match.group(1)) if match else default_usage
                images.append(pixels)
                labels.append(EMOTIONS.index(name))
                usages.append(usage)
                sources.append(str(file))
    return images, labels, usages, sources, skipped


def _list_folder(folder: Path) -> list[Path]:
    """A folder's entries, sorted. One we may not list, or list but not enter (no x bit, so every file in it fails),
    is a `FerDataError` naming the folder instead of a PermissionError traceback from somewhere inside it."""
    try:
        entries = sorted(folder.iterdir())
        if entries:
            entries[0].lstat()
    except OSError as err:
        raise FerDataError(f"{folder}: cannot list it: {(err.strerror or str(err)).lower()}") from err
    return entries


def _listed_or_skipped(folder: Path, skip_bad: bool, skipped: list[_Skipped]) -> list[Path] | None:
    """`_list_folder`, or, when it cannot be listed and `skip_bad` is on, None with the folder noted in `skipped`."""
    try:
        return _list_folder(folder)
    except FerDataError as err:
        _refuse_or_leave_out(folder, str(err), skip_bad, skipped)
        return None


def _refuse_or_leave_out(path: Path, message: str, skip_bad: bool, skipped: list[_Skipped]) -> None:
    """Raise `message` as a FerDataError, or, with `skip_bad`, note `path` with its files' count (`_left_out`)."""
    if not skip_bad:
        raise FerDataError(message)
    skipped.append(_left_out(path, message))


def _left_out(path: Path, message: str) -> _Skipped:
    """A skipped folder's message with the number of files it held (hidden ones aside), so `skipped` counts files
    as the docs say; a stray file counts as one, and so does a folder that cannot be listed (the message says so)."""
    if not path.is_dir():
        return _Skipped(message, 1)
    count, unlisted, folders = 0, [], [path]
    while folders:
        folder = folders.pop()
        try:
            entries = [entry for entry in _list_folder(folder) if not entry.name.startswith(".")]
        except FerDataError:
            unlisted.append(folder)
            continue
        folders += [entry for entry in entries if entry.is_dir() and not entry.is_symlink()]
        count += sum(1 for entry in entries if entry.is_file())
    if not unlisted:
        return _Skipped(f"{message} ({count} file(s) left out)", count)
    if unlisted[0] == path:
        return _Skipped(f"{message} (its files could not be counted)", 1, exact=False)
    note = f"at least {count} file(s) left out; {unlisted[0]} cannot be listed to count its files"
    return _Skipped(f"{message} ({note})", max(count, 1), exact=False)


def folder_usage(name: str) -> str | None:
    """The split a Kaggle-style folder holds when its files carry no Usage prefix (None: not a split folder)."""
    lowered = name.lower()
    splits = (
        (("train",), TRAIN_SPLIT),
        (("val", "dev", "publictest"), VAL_SPLIT),
        (("test", "privatetest"), TEST_SPLIT),
    )
    for prefixes, usage in splits:
        if lowered.startswith(prefixes):
            return usage
    return None


_SPLITS_LOWER = {s.lower() for s in SPLITS}


def _canonical_usage(text: str) -> str:
    return next(s for s in SPLITS if s.lower() == text.lower())


def class_weights(labels: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Loss weights ~ frequency**-power, mean 1: lifts tiny `disgust` without drowning the rest."""
    counts = np.bincount(labels, minlength=len(EMOTIONS)).astype(np.float64)
    weights = np.where(counts > 0, np.maximum(counts, 1.0) ** -power, 0.0)
    return (weights / weights[counts > 0].mean()).astype(np.float32)
