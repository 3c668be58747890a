"""WIDER FACE / Face Mask annotations in, an ultralytics single-class `face` dataset and a WIDER dev-val out.

Why this split: the data bundle holds only 690 official WIDER train images, so most of the official val images
are needed for training. They are split *by event* (whole scene categories), so the dev-val we report AP on
shares no event with anything the detector saw: events that also occur among the 690 official train images stay
on the train side. The 690 train images and all Face Mask images always train.

Box policy (`ConversionConfig`):

* WIDER boxes flagged ``invalid`` and any box with w or h <= 0 are dropped;
* boxes are clipped to the image;
* tiny faces: a box whose shorter side, measured at 640-px scale (image rescaled so its longest side is 640,
  which is the training resolution), is below ``min_face_px`` (default 5) is dropped. Such faces are a few
  pixels wide at stride 8, carry almost no signal, and WIDER's hard set is the only one that contains them;
  set ``min_face_px=0`` to keep everything. Images left without boxes stay in as background images.

Images are symlinked (or copied) into an output directory that must lie outside the repository: the data may
never be committed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import yaml
from PIL import Image

from fer_core.cli import UserInputError

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Columns of the arrays `parse_wider_gt` returns, in the order of the official `*_bbx_gt.txt` lines.
WIDER_COLUMNS: tuple[str, ...] = (
    "x",
    "y",
    "w",
    "h",
    "blur",
    "expression",
    "illumination",
    "invalid",
    "occlusion",
    "pose",
)
COL_INVALID = WIDER_COLUMNS.index("invalid")
WIDER_SETS: tuple[str, ...] = ("easy", "medium", "hard")
FACE_CLASS = "face"
DEVVAL_GT_NAME = "wider_face_devval_bbx_gt.txt"
DEVVAL_SETS_NAME = "wider_eval_sets.json"
DEVVAL_LIST_NAME = "devval_images.txt"
_MARKER = ".fer_core_yolo_dataset"
#: What a sets file holds and where it comes from, for the messages of a missing or empty one: without it the
#: easy/medium/hard APs are nothing but nulls.
SETS_ABOUT = (
    f"{DEVVAL_SETS_NAME} maps each WIDER val image (<event>/<name>.jpg) to "
    '{"easy": [...], "medium": [...], "hard": [...]}, the 0-based indices of its faces in the *_bbx_gt.txt that '
    "count in each official set (from the official wider_{easy,medium,hard}_val.mat, which fer_core does not "
    "read); the data bundle holds it as widerface/val/wider_eval_sets.json (see ../shared/data/README.md)"
)


class AnnotationError(UserInputError):
    """An annotation file is malformed; the message names the file and line."""


def read_annotation_text(path: str | Path) -> str:
    """A WIDER text file (ground truth, sets, results, image list); a folder or a binary file, such as the
    official `.mat` files, is named instead of ending in a traceback."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except IsADirectoryError as exc:
        raise AnnotationError(f"{path}: is a folder; give the file") from exc
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start}); the official .mat files are not "
            "read: use the text versions (e.g. wider_face_val_bbx_gt.txt)"
        ) from exc


class ForeignFolderError(UserInputError, FileExistsError):
    """The output folder holds images/labels fer_core did not write: never deleted, the user picks another."""


# --------------------------------------------------------------------------- WIDER FACE


def parse_wider_gt(path: str | Path) -> dict[str, np.ndarray]:
    """Parse an official `*_bbx_gt.txt`: {"event/name.jpg": float64 array (N, 10) with `WIDER_COLUMNS`}.

    Images with no faces map to a (0, 10) array (the file then carries one placeholder line of zeros).
    """
    path = Path(path)
    lines = read_annotation_text(path).splitlines()
    out: dict[str, np.ndarray] = {}
    i, n_lines = 0, len(lines)
    while i < n_lines:
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        if i + 1 >= n_lines:
            raise AnnotationError(f"{path}:{i + 1}: image {name!r} has no face-count line")
        try:
            count = int(lines[i + 1].strip())
        except ValueError as exc:
            raise AnnotationError(f"{path}:{i + 2}: expected a face count, got {lines[i + 1]!r}") from exc
        if count < 0:
            raise AnnotationError(f"{path}:{i + 2}: negative face count {count}")
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts or "\\" in name:
            raise AnnotationError(f"{path}:{i + 1}: image name {name!r} must be relative to the images folder")
        rows = lines[i + 2 : i + 2 + max(count, 1)]
        if len(rows) < max(count, 1):
            raise AnnotationError(f"{path}: image {name!r} announces {count} faces but the file ends early")
        boxes = np.zeros((count, len(WIDER_COLUMNS)), dtype=np.float64)
        for j, row in enumerate(rows[:count]):
            values = row.split()
            if len(values) < 4:
                raise AnnotationError(f"{path}:{i + 3 + j}: expected x y w h and attributes, got {row!r}")
            try:
                parsed = [float(v) for v in values[: len(WIDER_COLUMNS)]]
            except ValueError as exc:
                raise AnnotationError(f"{path}:{i + 3 + j}: non-numeric value in {row!r}") from exc
            if not np.isfinite(parsed).all():  # float() takes nan/inf, and no size test below rejects a NaN
                raise AnnotationError(f"{path}:{i + 3 + j}: nan or inf in {row!r}")
            # A negative side was a face no detection can overlap, lowering recall without a word. The official
            # val ground truth has none (its few degenerate faces are 0 wide or high: kept, as the benchmark does).
            if parsed[2] < 0 or parsed[3] < 0:
                raise AnnotationError(f"{path}:{i + 3 + j}: negative width or height in {row!r} (expected x y w h)")
            boxes[j, : len(parsed)] = parsed
        if name in out:
            raise AnnotationError(f"{path}:{i + 1}: image {name!r} listed twice")
        out[name] = boxes
        i += 2 + max(count, 1)
    return out


def _fmt(value: float) -> str:
    return np.format_float_positional(float(value), trim="-")


def write_wider_gt(path: str | Path, gt: Mapping[str, np.ndarray]) -> Path:
    """Write boxes back in the official `*_bbx_gt.txt` layout (round-trips `parse_wider_gt`)."""
    path = Path(path)
    parts: list[str] = []
    for name, boxes in gt.items():
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, len(WIDER_COLUMNS))
        parts += [name, str(len(boxes))]
        if len(boxes) == 0:
            parts.append(" ".join(["0"] * len(WIDER_COLUMNS)))
        parts += [" ".join(_fmt(v) for v in row) for row in boxes]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def load_wider_sets(path: str | Path, *, allow_empty: bool = False) -> dict[str, dict[str, list[int]]]:
    """Read `wider_eval_sets.json`: image -> {"easy"|"medium"|"hard": 0-based face indices in that set}.

    A missing file, or one without images unless `allow_empty` (a caller that goes on without the split and says
    so), is an error saying what it should hold: evaluated with it, every AP was null and the run "succeeded"."""
    if not Path(path).exists():
        raise AnnotationError(f"{path}: no such file; {SETS_ABOUT}")
    try:
        data = json.loads(read_annotation_text(path))
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object of image -> sets")
    if not data and not allow_empty:
        raise AnnotationError(f"{path}: holds no image; {SETS_ABOUT}")
    sets: dict[str, dict[str, list[int]]] = {}
    for key, value in data.items():
        lists = [value.get(name, []) for name in WIDER_SETS] if isinstance(value, dict) else None
        if lists is None or not all(isinstance(v, list) and all(type(i) is int for i in v) for v in lists):
            raise AnnotationError(f"{path}: {key!r} must map easy/medium/hard to lists of whole face indices")
        for name, indices in zip(WIDER_SETS, lists, strict=True):
            if (repeated := repeated_index(indices)) is not None:  # counted twice as a face to find, found once
                raise AnnotationError(f"{path}: {key!r}: the {name} set lists face {repeated} more than once")
        sets[str(key)] = dict(zip(WIDER_SETS, lists, strict=True))
    return sets


def repeated_index(indices: Iterable[int]) -> int | None:
    """The first face index that `indices` lists a second time; None where each is listed once."""
    seen: set[int] = set()
    for index in map(int, indices):
        if index in seen:
            return index
        seen.add(index)
    return None


def wider_event(image_key: str) -> str:
    """The event folder of a WIDER image key, e.g. "0--Parade" for "0--Parade/0_Parade_x.jpg"."""
    return image_key.split("/", 1)[0]


def split_events(
    events: Iterable[str], train_fraction: float = 0.6, seed: int = 0, force_train: Iterable[str] = ()
) -> tuple[list[str], list[str]]:
    """Seeded split of event names into (train, dev-val), about `train_fraction` of the events on the train side.

    Events in `force_train` (those of the official train images, which always train) count towards the train
    share and never reach dev-val, so dev-val scenes stay unseen. Both sides stay non-empty when possible.
    """
    if not 0.0 <= train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in [0, 1], got {train_fraction}")
    unique = sorted(set(events))
    forced = sorted(set(force_train) & set(unique))
    free = [e for e in unique if e not in forced]
    order = np.random.default_rng(seed).permutation(len(free))
    n_free = round(train_fraction * len(unique)) - len(forced)
    low, high = (0 if forced else 1), len(free) - 1  # keep the train side and the dev-val side non-empty
    n_free = min(max(n_free, low), high) if high >= low else min(max(n_free, 0), len(free))
    train = sorted(forced + [free[i] for i in order[:n_free]])
    dev = sorted(free[i] for i in order[n_free:])
    return train, dev


def write_devval_ground_truth(
    gt: Mapping[str, np.ndarray],
    sets: Mapping[str, Mapping[str, Sequence[int]]],
    images: Iterable[str],
    out_dir: str | Path,
) -> dict[str, Path]:
    """Write the dev-val subset for `fer_core.wider_eval`: gt file, sets JSON and image list, all official layout.

    Face indices in the sets stay valid because every face (invalid ones included) is written unchanged. No sets
    file is written (and no "sets" path returned) when `sets` covers none of the images: an empty one made
    `wider_eval` print null APs; a missing one is an error naming the file.
    """
    out_dir = Path(out_dir)
    keys = sorted(images)
    missing = [k for k in keys if k not in gt]
    if missing:
        raise KeyError(f"{len(missing)} dev-val images are not in the ground truth, e.g. {missing[0]!r}")
    paths = {
        "gt": write_wider_gt(out_dir / DEVVAL_GT_NAME, {k: gt[k] for k in keys}),
        "images": out_dir / DEVVAL_LIST_NAME,
    }
    subset = {k: {s: list(sets[k].get(s, [])) for s in WIDER_SETS} for k in keys if k in sets}
    if subset:
        paths["sets"] = out_dir / DEVVAL_SETS_NAME
        paths["sets"].write_text(json.dumps(subset), encoding="utf-8")
    paths["images"].write_text("".join(f"{k}\n" for k in keys), encoding="utf-8")
    return paths


# --------------------------------------------------------------------------- Face Mask (Pascal VOC)


@dataclass(frozen=True)
class VocAnnotation:
    """One Pascal VOC file: boxes are (N, 4) float64 x1, y1, x2, y2 in pixels; labels one per box."""

    filename: str
    width: int
    height: int
    boxes: np.ndarray
    labels: tuple[str, ...]


def parse_voc_xml(path: str | Path) -> VocAnnotation:
    """Parse a Pascal VOC annotation (our own trusted data set files; no external entities are resolved)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise AnnotationError(f"{path}: not valid XML ({exc})") from exc

    def number(node: ET.Element | None, tag: str, default: float | None = None) -> float:
        text = node.findtext(tag) if node is not None else None
        if text is None or not text.strip():
            if default is None:
                raise AnnotationError(f"{path}: missing <{tag}>")
            return default
        try:
            value = float(text)
        except ValueError as exc:
            raise AnnotationError(f"{path}: <{tag}> is not a number: {text!r}") from exc
        if not math.isfinite(value):  # a NaN box passes every size filter (each comparison is False)
            raise AnnotationError(f"{path}: <{tag}> is {text.strip()!r}, not a finite number")
        return value

    size = root.find("size")
    boxes, labels = [], []
    for obj in root.iter("object"):
        bnd = obj.find("bndbox")
        if bnd is None:
            raise AnnotationError(f"{path}: <object> without <bndbox>")
        boxes.append([number(bnd, t) for t in ("xmin", "ymin", "xmax", "ymax")])
        labels.append((obj.findtext("name") or "").strip())
    return VocAnnotation(
        filename=(root.findtext("filename") or path.with_suffix(".jpg").name).strip(),
        width=int(number(size, "width", 0)),
        height=int(number(size, "height", 0)),
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        labels=tuple(labels),
    )


# --------------------------------------------------------------------------- YOLO conversion


@dataclass(frozen=True)
class ConversionConfig:
    """Knobs of the conversion; see the module docstring for the box policy."""

    min_face_px: float = 5.0
    train_event_fraction: float = 0.6
    seed: int = 0
    copy_images: bool = False
    include_facemask: bool = True


@dataclass
class ConversionResult:
    """What was written, with counts for the log and the model card."""

    data_yaml: Path
    devval: dict[str, Path]
    train_events: list[str]
    devval_events: list[str]
    images: dict[str, int] = field(default_factory=dict)
    boxes: dict[str, int] = field(default_factory=dict)
    #: Boxes or images left out, by split ("train", "val") and reason: the model card quotes the training ones.
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    #: The sets file the dev-val's easy/medium/hard split came from, or "unknown: <why>" when there is none (then
    #: no dev-val sets file is written, and `wider_eval` refuses the dev-val until one is given with --sets).
    eval_sets: str = ""

    def drop(self, split: str, reason: str, count: int = 1) -> None:
        counts = self.dropped.setdefault(split, {})
        counts[reason] = counts.get(reason, 0) + count


def filter_boxes(
    xywh: np.ndarray, width: int, height: int, min_face_px: float, invalid: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, int]]:
    """Apply the box policy to (N, 4) x, y, w, h boxes; return the kept boxes clipped to the image, and drop counts."""
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    bad_flag = np.zeros(len(xywh), bool) if invalid is None else np.asarray(invalid, dtype=bool)
    nonpositive = (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)
    x1 = xywh[:, 0].clip(0, width)
    y1 = xywh[:, 1].clip(0, height)
    x2 = (xywh[:, 0] + xywh[:, 2]).clip(0, width)
    y2 = (xywh[:, 1] + xywh[:, 3]).clip(0, height)
    scale = 640.0 / max(width, height, 1)
    short_side = np.minimum(x2 - x1, y2 - y1) * scale
    empty = ~nonpositive & (short_side <= 0)  # entirely outside the image
    tiny = ~nonpositive & ~empty & (short_side < min_face_px)
    keep = ~bad_flag & ~nonpositive & ~empty & ~tiny
    counts = {
        "invalid": int((bad_flag).sum()),
        "nonpositive": int((~bad_flag & nonpositive).sum()),
        "outside": int((~bad_flag & empty).sum()),
        "tiny": int((~bad_flag & tiny).sum()),
    }
    return np.c_[x1, y1, x2, y2][keep], counts


def yolo_label_lines(xyxy: np.ndarray, width: int, height: int) -> list[str]:
    """Ultralytics label lines `0 cx cy w h`, normalised to 0..1."""
    lines = []
    for x1, y1, x2, y2 in np.asarray(xyxy, dtype=np.float64).reshape(-1, 4):
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(f"0 {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return lines


def _check_outside_repo(out_dir: Path) -> None:
    resolved = out_dir.resolve()
    if resolved == REPO_ROOT or REPO_ROOT in resolved.parents:
        raise ValueError(f"refusing to write a dataset inside the repository ({resolved}); data may never be committed")


def _prepare_out_dir(out_dir: Path) -> None:
    """Start from a clean images/labels tree, but only in a directory we created (marker), never a user's folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / _MARKER
    owned = [out_dir / "images", out_dir / "labels", out_dir / "devval"]
    if any(p.exists() for p in owned) and not marker.exists():
        raise ForeignFolderError(f"{out_dir} holds images/labels not written by fer_core; choose another folder")
    for p in owned:
        if p.exists():
            shutil.rmtree(p)
    for stale in [*out_dir.glob("*.cache"), out_dir / "data.yaml", out_dir / "conversion.json"]:
        stale.unlink(missing_ok=True)  # data.yaml is written last: a conversion that fails midway is never reused
    marker.write_text("written by fer_core.widerface.convert_to_yolo\n", encoding="utf-8")


def _place_image(src: Path, dst: Path, copy: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copy2(src, dst)
    else:
        os.symlink(src.resolve(), dst)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except (OSError, Image.DecompressionBombError) as exc:
        raise AnnotationError(f"{path}: cannot read this image ({exc})") from exc


class _Writer:
    """Accumulates images and labels of one split, with counts."""

    def __init__(self, out_dir: Path, split: str, copy: bool, result: ConversionResult) -> None:
        self.out_dir, self.split, self.copy, self.result = out_dir, split, copy, result

    def add(self, src: Path, rel: str, xyxy: np.ndarray, width: int, height: int, drops: dict[str, int]) -> None:
        img = self.out_dir / "images" / self.split / rel
        label = (self.out_dir / "labels" / self.split / rel).with_suffix(".txt")
        _place_image(src, img, self.copy)
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(f"{line}\n" for line in yolo_label_lines(xyxy, width, height)), encoding="utf-8")
        r = self.result
        r.images[self.split] = r.images.get(self.split, 0) + 1
        r.boxes[self.split] = r.boxes.get(self.split, 0) + len(xyxy)
        for reason, count in drops.items():
            r.drop(self.split, reason, count)


def _add_wider(
    writer: _Writer, root: Path, gt: Mapping[str, np.ndarray], keys: Iterable[str], prefix: str, cfg: ConversionConfig
) -> list[str]:
    """Place the images of `keys` that are on disk (a missing one is counted) and return the keys placed."""
    placed = []
    for key in keys:
        src = root / "images" / key
        if not src.is_file():
            writer.result.drop(writer.split, "missing_image")
            continue
        width, height = _image_size(src)
        boxes = gt[key]
        kept, drops = filter_boxes(boxes[:, :4], width, height, cfg.min_face_px, boxes[:, COL_INVALID] > 0)
        writer.add(src, f"{prefix}/{key}", kept, width, height, drops)
        placed.append(key)
    return placed


def _eval_sets_note(sets_file: Path, sets: Mapping[str, object], dev_keys: Sequence[str]) -> str:
    """`ConversionResult.eval_sets`, with a warning on stderr when the dev-val's easy/medium/hard split is unknown
    or partial: the conversion wrote `{}` without a word, and `wider_eval` then printed null APs with exit 0."""
    uncovered = [key for key in dev_keys if key not in sets]
    if not uncovered:
        return str(sets_file)
    if len(uncovered) < len(dev_keys):
        print(
            f"warning: {len(uncovered)} of {len(dev_keys)} dev-val images have no entry in {sets_file}, e.g. "
            f"{uncovered[0]}; wider_eval leaves them out",
            file=sys.stderr,
        )
        return str(sets_file)
    if not sets_file.exists():
        why = f"{sets_file} not found"
    else:
        why = f"{sets_file} {'holds no image' if not sets else 'names none of the dev-val images'}"
    print(
        f"warning: {why}: the dev-val's easy/medium/hard split is unknown, so no {DEVVAL_SETS_NAME} is written "
        f"beside its ground truth and wider_eval cannot score it until you pass --sets; {SETS_ABOUT}",
        file=sys.stderr,
    )
    return f"unknown: {why}"


def convert_to_yolo(
    data_root: str | Path, out_dir: str | Path, config: ConversionConfig | None = None
) -> ConversionResult:
    """Build `out_dir/data.yaml` (+ images/labels train/val and the dev-val ground truth) from the data bundle.

    Expects `data_root/widerface/{train,val}` and optionally `data_root/facemask` as in the data README.
    """
    cfg = config or ConversionConfig()
    data_root, out_dir = Path(data_root), Path(out_dir)
    _check_outside_repo(out_dir)
    wider_train, wider_val = data_root / "widerface" / "train", data_root / "widerface" / "val"
    val_gt_file = wider_val / "wider_face_val_bbx_gt.txt"
    if not val_gt_file.is_file():
        raise FileNotFoundError(f"WIDER FACE val ground truth not found: {val_gt_file}")
    val_gt = parse_wider_gt(val_gt_file)
    sets_file = wider_val / DEVVAL_SETS_NAME
    # training goes on without the split: a missing or empty sets file is a warning (`_eval_sets_note`)
    sets = load_wider_sets(sets_file, allow_empty=True) if sets_file.exists() else {}
    train_gt_file = wider_train / "wider_face_train_bbx_gt.txt"
    train_gt = parse_wider_gt(train_gt_file) if train_gt_file.is_file() else {}
    train_events, dev_events = split_events(
        (wider_event(k) for k in val_gt),
        cfg.train_event_fraction,
        cfg.seed,
        force_train={wider_event(k) for k in train_gt},
    )
    dev_set = set(dev_events)
    dev_keys = [k for k in val_gt if wider_event(k) in dev_set]
    val_train_keys = [k for k in val_gt if wider_event(k) not in dev_set]

    _prepare_out_dir(out_dir)
    result = ConversionResult(out_dir / "data.yaml", {}, train_events, dev_events)
    train = _Writer(out_dir, "train", cfg.copy_images, result)
    val = _Writer(out_dir, "val", cfg.copy_images, result)

    _add_wider(train, wider_train, train_gt, train_gt, "wider_train", cfg)
    _add_wider(train, wider_val, val_gt, val_train_keys, "wider_val", cfg)
    dev_placed = _add_wider(val, wider_val, val_gt, dev_keys, "wider_val", cfg)

    facemask = data_root / "facemask"
    placed_masks: set[str] = set()
    if cfg.include_facemask and (facemask / "annotations").is_dir():
        for xml_path in sorted((facemask / "annotations").glob("*.xml")):
            ann = parse_voc_xml(xml_path)
            src = facemask / "images" / Path(ann.filename).name  # never follow paths out of the folder
            if not src.is_file():
                src = facemask / "images" / xml_path.with_suffix(".jpg").name
            if not src.is_file():
                result.drop(train.split, "missing_image")
                continue
            if src.name in placed_masks:  # a second annotation file for one image: keep the first, count it
                result.drop(train.split, "duplicate_annotation")
                continue
            placed_masks.add(src.name)
            width, height = _image_size(src)
            xywh = np.c_[ann.boxes[:, :2], ann.boxes[:, 2:] - ann.boxes[:, :2]]
            kept, drops = filter_boxes(xywh, width, height, cfg.min_face_px)
            train.add(src, f"facemask/{src.name}", kept, width, height, drops)

    for split in ("train", "val"):  # ultralytics would stop with a traceback about a missing folder
        if not result.images.get(split):
            missing = result.dropped.get(split, {}).get("missing_image", 0)
            raise AnnotationError(
                f"{data_root}: no {split} image could be placed ({missing} listed images are not on disk); check "
                "the folder layout the data README describes (widerface/{train,val}/images/<event>/<file>.jpg)"
            )
    # Only the images placed: a missing one in the dev-val ground truth would count its faces as misses in AP.
    result.devval = write_devval_ground_truth(val_gt, sets, dev_placed, out_dir / "devval")
    result.eval_sets = _eval_sets_note(sets_file, sets, dev_placed)
    data = {
        "path": str(out_dir.resolve()),
        "train": "images/train",
        "val": "images/val",
        "nc": 1,
        "names": {0: FACE_CLASS},
    }
    result.data_yaml.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    summary = {k: v for k, v in asdict(result).items() if k not in ("data_yaml", "devval")}
    summary["config"] = asdict(cfg)
    (out_dir / "conversion.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return result
