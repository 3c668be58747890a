"""WIDER FACE evaluation (easy / medium / hard AP), a numpy port of the official protocol.

    python -m fer_core.wider_eval --gt /work/shared/data/widerface/val --pred results/ [--images devval_images.txt]
    python -m fer_core.wider_eval --gt ... --pred results/ --operating-points 16    # precision/recall per threshold

Why a port and not a re-interpretation: detector AP is only comparable if it is computed the way the
benchmark computes it, quirks included. Following the official `evaluation.m` / `wider_eval.py`:

* scores are min-max normalised over all detections of the evaluated images, with the official initial values
  (max starts at 0, min at 1);
* each detection (in descending score order) is matched to the ground-truth face of highest IoU, over *all*
  faces of the image; IoU uses the official pixel convention (+1 on widths/heights, `plus_one=True`);
  IoU >= 0.5 with a face in the set recalls it (duplicates still count as proposals, lowering precision);
  IoU >= 0.5 with a face outside the set (ignored) makes the detection neither TP nor FP;
* precision/recall are accumulated at 1000 thresholds (1 - t/1000, t = 1..1000) and AP is the VOC
  all-points AP of that curve;
* images without any ground-truth face contribute no detections, as in the official code.

Degenerate cases the official code leaves as NaN are defined here: 0/0 precision counts as 0 (it only occurs at
zero recall, so AP is unchanged), and if all normalised scores coincide every detection counts at every threshold.
A set without any face has AP NaN (printed as null, with a warning); the CLI refuses to print only nulls.

AP ranks a detector over all thresholds; an app runs at one. `operating_points` gives precision, recall and F1 at
each confidence threshold the way a page applies it (boxes under its minimum face size dropped, at most 100 an image),
which is what the detection-confidence default was checked against.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_core import cli
from fer_core.widerface import (
    COL_INVALID,
    DEVVAL_SETS_NAME,
    SETS_ABOUT,
    WIDER_SETS,
    AnnotationError,
    load_wider_sets,
    parse_wider_gt,
    read_annotation_text,
    repeated_index,
)

THRESH_NUM = 1000
IOU_THRESH = 0.5
#: The confidence thresholds `operating_points` lists by default, and the most boxes a page keeps per image.
OPERATING_THRESHOLDS = tuple(round(0.1 + 0.05 * step, 2) for step in range(17))
OPERATING_MAX_FACES = 100
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".txt"}


def image_key(name: str) -> str:
    """ "event/name.jpg", "event/name.txt" and "event/name" all name the same image."""
    path = Path(name.strip().replace("\\", "/"))
    return (path.with_suffix("") if path.suffix.lower() in _IMAGE_SUFFIXES else path).as_posix()


def read_result_file(path: str | Path) -> np.ndarray:
    """One official result file (name, count, `x y w h score` lines) -> (M, 5) float64.

    The count must match the rows: a file without its count line would otherwise lose its first detection.
    """
    path = Path(path)
    lines = [line.strip() for line in read_annotation_text(path).splitlines()]
    if len(lines) < 2:
        if not any(lines):
            return np.zeros((0, 5))
        raise AnnotationError(f"{path}: expected a name line and a count line")
    try:
        count = int(lines[1])
    except ValueError as exc:
        raise AnnotationError(f"{path}:2: expected the number of detections, got {lines[1]!r}") from exc
    rows = []
    for number, line in enumerate(lines[2:], start=3):
        if not line:
            continue
        values = line.split()
        if len(values) < 5:
            raise AnnotationError(f"{path}:{number}: expected `x y w h score`, got {line!r}")
        try:
            rows.append([float(v) for v in values[:5]])
        except ValueError as exc:
            raise AnnotationError(f"{path}:{number}: non-numeric detection {line!r}") from exc
        if not np.isfinite(rows[-1]).all():
            raise AnnotationError(f"{path}:{number}: nan or inf in {line!r}")
    if count != len(rows):
        raise AnnotationError(f"{path}:2: announces {count} detections but has {len(rows)}")
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def read_wider_results(pred_dir: str | Path) -> dict[str, np.ndarray]:
    """All result files under `pred_dir`, keyed "event/name" by their path relative to it."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_dir}")
    return {image_key(p.relative_to(pred_dir).as_posix()): read_result_file(p) for p in sorted(pred_dir.rglob("*.txt"))}


def box_iou_xywh(pred: np.ndarray, gt: np.ndarray, plus_one: bool = True) -> np.ndarray:
    """IoU matrix (M, N) between x, y, w, h boxes; `plus_one` reproduces the official `boxoverlap.m`."""
    one = 1.0 if plus_one else 0.0
    p = np.asarray(pred, dtype=np.float64)[:, None, :4]
    g = np.asarray(gt, dtype=np.float64)[None, :, :4]
    iw = np.minimum(p[..., 0] + p[..., 2], g[..., 0] + g[..., 2]) - np.maximum(p[..., 0], g[..., 0]) + one
    ih = np.minimum(p[..., 1] + p[..., 3], g[..., 1] + g[..., 3]) - np.maximum(p[..., 1], g[..., 1]) + one
    inter = iw * ih
    union = (p[..., 2] + one) * (p[..., 3] + one) + (g[..., 2] + one) * (g[..., 3] + one) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.where((iw > 0) & (ih > 0), iou, 0.0)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-points VOC AP (area under the monotone precision envelope), as the official `VOCap`."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _normalisers(scores: Sequence[np.ndarray]) -> tuple[float, float]:
    max_score, min_score = 0.0, 1.0  # the official initial values
    for s in scores:
        if len(s):
            max_score, min_score = max(max_score, float(s.max())), min(min_score, float(s.min()))
    return min_score, max_score - min_score


def evaluate_wider(
    gt: Mapping[str, np.ndarray],
    preds: Mapping[str, np.ndarray],
    sets: Mapping[str, Mapping[str, Sequence[int]]],
    *,
    iou_thresh: float = IOU_THRESH,
    thresh_num: int = THRESH_NUM,
    plus_one: bool = True,
) -> dict[str, float]:
    """AP per set over the images present in both `gt` and `sets`.

    gt: image -> (N, >=4) x, y, w, h (all faces, as in the gt file); preds: image -> (M, 5) x, y, w, h, score
    (missing images have no detections); sets: image -> {"easy"|"medium"|"hard": face indices}. Keys may carry
    an image extension or not.
    """
    sets_by_key = {image_key(k): v for k, v in sets.items()}
    preds_by_key = {image_key(k): np.asarray(v, dtype=np.float64).reshape(-1, 5) for k, v in preds.items()}
    images = [(image_key(k), np.asarray(v, dtype=np.float64)) for k, v in gt.items() if image_key(k) in sets_by_key]
    empty = np.zeros((0, 5))
    image_preds = [preds_by_key.get(k, empty) for k, _ in images]
    offset, span = _normalisers([p[:, 4] for p in image_preds])
    thresholds = 1.0 - np.arange(1, thresh_num + 1, dtype=np.float64) / thresh_num

    curves = {name: np.zeros((thresh_num, 2)) for name in WIDER_SETS}
    faces = dict.fromkeys(WIDER_SETS, 0)
    for (key, boxes), pred in zip(images, image_preds, strict=True):
        keep_lists = {name: np.asarray(sets_by_key[key].get(name, []), dtype=np.int64) for name in WIDER_SETS}
        for name in WIDER_SETS:
            outside = keep_lists[name][(keep_lists[name] < 0) | (keep_lists[name] >= len(boxes))]
            if len(outside):
                raise AnnotationError(
                    f"{key}: the {name} set names face {outside[0]}, but the ground truth has {len(boxes)} "
                    "(a sets file made for another ground-truth file?)"
                )
            if (repeated := repeated_index(keep_lists[name])) is not None:  # one face counted twice, recalled once
                raise AnnotationError(f"{key}: the {name} set lists face {repeated} more than once")
            faces[name] += len(keep_lists[name])
        if len(boxes) == 0 or len(pred) == 0:
            continue
        scores = (pred[:, 4] - offset) / span if span > 0 else np.ones(len(pred))
        order = np.argsort(-scores, kind="stable")
        pred, scores = pred[order], scores[order]
        iou = box_iou_xywh(pred, boxes, plus_one)
        best = iou.argmax(axis=1)
        matched = iou[np.arange(len(pred)), best] >= iou_thresh
        # how many detections pass each threshold (scores are sorted descending)
        n_pass = np.searchsorted(-scores, -thresholds, side="right")
        last = np.maximum(n_pass - 1, 0)
        any_pass = n_pass > 0
        for name in WIDER_SETS:
            keep = np.zeros(len(boxes), dtype=bool)
            keep[keep_lists[name]] = True
            hits_kept = matched & keep[best]
            proposal = ~(matched & ~keep[best])  # a match with an ignored face is not a proposal
            first = np.zeros(len(pred), dtype=bool)
            positions = np.flatnonzero(hits_kept)
            _, first_at = np.unique(best[positions], return_index=True)
            first[positions[first_at]] = True  # a face is recalled by its first matching detection
            cum_proposals, cum_recall = np.cumsum(proposal), np.cumsum(first)
            curves[name][:, 0] += np.where(any_pass, cum_proposals[last], 0)
            curves[name][:, 1] += np.where(any_pass, cum_recall[last], 0)

    aps: dict[str, float] = {}
    for name in WIDER_SETS:
        proposals, recalled = curves[name][:, 0], curves[name][:, 1]
        if faces[name] == 0:
            aps[name] = float("nan")
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(proposals > 0, recalled / proposals, 0.0)
        aps[name] = voc_ap(recalled / faces[name], precision)
    return aps


def resolve_ground_truth(gt: str | Path) -> Path:
    """A gt file, or a folder holding exactly one `*_bbx_gt.txt` (the official val one preferred)."""
    gt = Path(gt)
    if gt.is_file():
        return gt
    if not gt.is_dir():
        raise FileNotFoundError(f"ground truth not found: {gt}")
    candidates = sorted(gt.glob("*_bbx_gt.txt"))
    official = gt / "wider_face_val_bbx_gt.txt"
    if official in candidates:
        return official
    if len(candidates) != 1:
        raise FileNotFoundError(f"expected one *_bbx_gt.txt in {gt}, found {len(candidates)}")
    return candidates[0]


def read_image_list(path: str | Path) -> list[str]:
    """Image keys, one a line; blank lines and # comments ignored."""
    lines = read_annotation_text(path).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass(frozen=True)
class OperatingPoint:
    """Counts at one confidence threshold: `targets` faces to find, `found` of them found, `false` boxes on none."""

    conf: float
    targets: int
    found: int
    false: int

    @property
    def precision(self) -> float:
        return self.found / (self.found + self.false) if self.found + self.false else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.targets if self.targets else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


def operating_points(
    gt: Mapping[str, np.ndarray],
    preds: Mapping[str, np.ndarray],
    *,
    min_face: float,
    thresholds: Sequence[float] = OPERATING_THRESHOLDS,
    max_faces: int = OPERATING_MAX_FACES,
    iou_thresh: float = IOU_THRESH,
    plus_one: bool = True,
) -> list[OperatingPoint]:
    """Precision and recall at each threshold, as a page with this minimum face size would see them.

    The targets are the valid faces at least `min_face` wide and high. At each threshold an image keeps its boxes
    scoring at least that, at least `min_face` on both sides, the `max_faces` best; each box, best first, takes the
    free target it overlaps most (IoU >= `iou_thresh`). A box on no free target counts as false, unless it overlaps a
    face that is not a target (smaller, or marked invalid): the page was not asked to find those, nor is it wrong
    to. A second box on a found face counts as false, as a second label on one face would be.
    """
    by_key = {image_key(k): v for k, v in preds.items()}
    targets, found, false = 0, np.zeros(len(thresholds), int), np.zeros(len(thresholds), int)
    for key, faces in gt.items():
        is_target = (faces[:, 2] >= min_face) & (faces[:, 3] >= min_face) & (faces[:, COL_INVALID] == 0)
        targets += int(is_target.sum())
        boxes = by_key.get(image_key(key), np.zeros((0, 5)))
        boxes = boxes[(boxes[:, 2] >= min_face) & (boxes[:, 3] >= min_face)]
        # Best first: the boxes kept at any threshold are a prefix of this list (the best `max_faces` of those
        # scoring enough), and greedy matching of a prefix is the start of greedy matching of the whole, so one
        # pass gives every threshold's counts.
        boxes = boxes[np.argsort(-boxes[:, 4], kind="stable")][:max_faces]
        ious = box_iou_xywh(boxes[:, :4], faces[:, :4], plus_one) if len(faces) else np.zeros((len(boxes), 0))
        overlaps = ious >= iou_thresh
        free = is_target.copy()
        hit, miss = np.zeros(len(boxes) + 1, int), np.zeros(len(boxes) + 1, int)  # counts over the first n boxes
        for n, (overlap, iou) in enumerate(zip(overlaps, ious, strict=True), start=1):
            candidates = np.flatnonzero(overlap & free)
            if len(candidates):
                free[candidates[np.argmax(iou[candidates])]] = False
            hit[n] = hit[n - 1] + bool(len(candidates))
            miss[n] = miss[n - 1] + (not len(candidates) and not (overlap & ~is_target).any())
        kept = np.array([int((boxes[:, 4] >= conf).sum()) for conf in thresholds], dtype=int)
        found += hit[kept]
        false += miss[kept]
    counts = zip(thresholds, found, false, strict=True)
    return [OperatingPoint(float(conf), targets, int(hits), int(misses)) for conf, hits, misses in counts]


def operating_table(points: Sequence[OperatingPoint]) -> str:
    """The points as a text table, with the threshold of the best F1 under it."""
    lines = ["conf  targets  found  false  precision  recall     F1"]
    lines += [
        f"{p.conf:4.2f}  {p.targets:7d}  {p.found:5d}  {p.false:5d}  {p.precision:9.3f}  {p.recall:6.3f}  {p.f1:5.3f}"
        for p in points
    ]
    best = max(points, key=lambda p: p.f1)
    return "\n".join([*lines, f"best F1 {best.f1:.3f} at conf {best.conf:.2f}"])


def main(argv: list[str] | None = None) -> int:
    parser = cli.argument_parser("wider_eval", __doc__)
    parser.add_argument("--gt", required=True, help="a *_bbx_gt.txt file or the folder holding it")
    parser.add_argument("--pred", required=True, help="folder of result files <event>/<name>.txt")
    parser.add_argument("--sets", help="wider_eval_sets.json (default: next to the gt file)")
    parser.add_argument("--images", help="evaluate only the images listed in this file (e.g. the dev-val list)")
    parser.add_argument("--iou", type=float, default=IOU_THRESH, help="IoU threshold (the official one)")
    parser.add_argument("--no-plus-one", action="store_true", help="continuous IoU instead of the official +1 px")
    parser.add_argument(
        "--operating-points",
        type=float,
        metavar="MIN_FACE",
        help="instead of AP, precision / recall / F1 at each confidence threshold as a page with this minimum face "
        f"size applies it (smaller boxes dropped, at most {OPERATING_MAX_FACES} an image; smaller and invalid faces "
        "count neither way); needs no sets file",
    )
    args = parser.parse_args(argv)
    if not 0.0 < args.iou <= 1.0:  # 0 or less counted every miss as a hit; over 1 or NaN, no hit at all
        parser.error(f"--iou must lie in (0, 1], got {args.iou}")
    if args.operating_points is not None and not args.operating_points >= 0:
        parser.error(f"--operating-points needs a minimum face size of 0 px or more, got {args.operating_points}")

    gt_file = resolve_ground_truth(args.gt)
    sets_file = Path(args.sets) if args.sets else gt_file.parent / DEVVAL_SETS_NAME
    if args.operating_points is None and not sets_file.exists():  # a folder or a damaged file: load_wider_sets
        raise cli.UserInputError(f"sets file not found: {sets_file} (pass --sets); {SETS_ABOUT}")  # no usage line
    gt = parse_wider_gt(gt_file)
    all_keys = {image_key(k) for k in gt}
    sets = load_wider_sets(sets_file) if args.operating_points is None else {}
    if args.images:
        wanted = {image_key(k) for k in read_image_list(args.images)}
        unknown = wanted - {image_key(k) for k in gt}
        if unknown:
            raise cli.UserInputError(f"{len(unknown)} listed images are not in {gt_file}, e.g. {min(unknown)}")
        gt = {k: v for k, v in gt.items() if image_key(k) in wanted}
    if not gt:  # AP of nothing printed as nulls with exit 0
        raise cli.UserInputError(f"{args.images or gt_file}: no images to evaluate")
    set_keys = {image_key(k) for k in sets}
    missing_sets = [] if args.operating_points is not None else [k for k in gt if image_key(k) not in set_keys]
    if len(missing_sets) == len(gt):  # every AP would be null, printed with exit 0
        raise cli.UserInputError(
            f"{sets_file} names none of the {len(gt)} evaluated images of {gt_file} (another split's?)"
        )
    if missing_sets:
        print(f"warning: {len(missing_sets)} images have no entry in {sets_file} and are skipped", file=sys.stderr)
    preds = read_wider_results(args.pred)
    evaluated, predicted = {image_key(k) for k in gt}, set(preds)
    if not evaluated & predicted:  # AP 0 from a wrong folder level is no result
        raise cli.UserInputError(
            f"no result file under {args.pred} names an evaluated image (expected <event>/<name>.txt)"
        )
    without = sorted(evaluated - predicted)
    if without:  # an image detect_faces could not read: its faces count as misses, which lowers AP
        print(
            f"warning: {len(without)} evaluated images have no result file, e.g. {without[0]}; their faces count as "
            "missed",
            file=sys.stderr,
        )
    unknown_preds = sorted(predicted - all_keys)
    if unknown_preds:
        example = unknown_preds[0]
        print(f"warning: {len(unknown_preds)} result files name no image of {gt_file}, e.g. {example}", file=sys.stderr)
    if args.operating_points is not None:
        points = operating_points(
            gt, preds, min_face=args.operating_points, iou_thresh=args.iou, plus_one=not args.no_plus_one
        )
        print(f"{len(gt)} images, minimum face {args.operating_points:g} px")
        print(operating_table(points))
        return 0
    aps = evaluate_wider(gt, preds, sets, iou_thresh=args.iou, plus_one=not args.no_plus_one)
    empty = [name for name, ap in aps.items() if math.isnan(ap)]
    if len(empty) == len(aps):
        raise cli.UserInputError(
            f"{sets_file} puts no face of the evaluated images in any set: there is no AP to report"
        )
    if empty:
        print(f"warning: no evaluated face is in the {'/'.join(empty)} set(s) of {sets_file}: AP null", file=sys.stderr)
    print(json.dumps({k: (None if math.isnan(v) else round(v, 6)) for k, v in aps.items()}))
    return 0


if __name__ == "__main__":
    cli.run(main)
