"""How closely the drawn boxes stay on a moving face while the analysis lags behind, and what following costs.

    python -m fer_core.bench_motion [--frames 180] [--lags 2 5 10] [--json motion.json]

A synthetic clip of a real face: the astronaut's face from `skimage.data` moved over a still photo
(`skimage.data.coffee`) along fixed paths, with camera-like noise, so the true face box of every frame is known.
The analysis is simulated as perfect but late: the frame analysed at t is ready `lag` frames later, and then the
newest frame is analysed (as the webcam's analysis thread does). Each strategy draws a box on every frame:

* ``hold``: the latest analysed box where it was found (the app before `fer_core.motion`);
* ``jump``: that box followed by flow from its own frame straight to the frame drawn, then frame to frame;
* ``chain``: followed through every frame in between, then frame to frame.

Reported per path and lag: mean IoU of drawn and true box, the share of frames with IoU >= 0.5, the mean centre
error in face widths, how often the one face's track id changed from one result to the next (0 is right: the number
drawn flickers, and a new id restarts the smoothed label; `FaceTracker` matches each result against the box drawn on
the frame it analysed), and the follower's median and 90th-percentile milliseconds per frame. A pasted face moves
rigidly, so flow does better here than on a turning head: the figures bound what following can do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from fer_core import cli
from fer_core.bench import face_patch, summarise
from fer_core.labels import EMOTIONS
from fer_core.motion import BoxFollower, FlowFrame
from fer_core.pipeline import Box, FaceResult
from fer_core.tracking import FaceTracker, iou_matrix

FRAME_SIZE = (640, 480)
#: Side of the pasted face patch (face plus context) at scale 1.
PATCH_SIDE = 150
#: Camera-like noise added to every frame (standard deviation, 8-bit levels).
NOISE = 3.0
STRATEGIES = ("hold", "jump", "chain")


@dataclass(frozen=True)
class Path2D:
    """Where the face is at frame t (30 frames a second): centre x, centre y, scale of the patch and its tilt in
    degrees (about the patch's centre)."""

    name: str
    about: str
    place: Callable[[int], tuple[float, float, float, float]]


def _wave(amplitude: float, period: float, t: int) -> float:
    return amplitude * float(np.sin(2 * np.pi * t / period))


PATHS = (
    Path2D("still", "no motion", lambda t: (320.0, 240.0, 1.0, 0.0)),
    Path2D(
        "sway", "head sway, up to 6 px a frame", lambda t: (320 + _wave(80, 90, t), 240 + _wave(20, 60, t), 1.0, 0.0)
    ),
    Path2D("fast", "across the picture, up to 28 px a frame", lambda t: (320 + _wave(200, 45, t), 240.0, 1.0, 0.0)),
    Path2D(
        "fast_10fps",
        "the same, seen 10 times a second (a busy machine passes on frames in bursts): up to 84 px a frame",
        lambda t: (320 + _wave(200, 15, t), 240.0, 1.0, 0.0),
    ),
    Path2D("approach", "towards and away, 0.6x to 1.4x", lambda t: (320.0, 240.0, 1.0 + _wave(0.4, 90, t), 0.0)),
    Path2D(
        "tilt",
        "sway with the head tilting +-20 degrees",
        lambda t: (320 + _wave(80, 90, t), 240.0, 1.0, _wave(20, 60, t)),
    ),
)


def clip(path: Path2D, frames: int, seed: int = 0) -> Iterator[tuple[np.ndarray, Box]]:
    """The clip's frames (RGB) with the true face box of each."""
    from skimage import data as skdata

    width, height = FRAME_SIZE
    background = cv2.resize(skdata.coffee(), (width, height), interpolation=cv2.INTER_AREA)
    patch, (bx1, by1, bx2, by2) = face_patch(PATCH_SIDE)
    rng = np.random.default_rng(seed)
    for t in range(frames):
        cx, cy, scale, tilt = path.place(t)
        warp = cv2.getRotationMatrix2D((PATCH_SIDE / 2, PATCH_SIDE / 2), tilt, scale)
        warp[:, 2] += np.array([cx - PATCH_SIDE / 2, cy - PATCH_SIDE / 2])  # the patch's centre lands on (cx, cy)
        frame = cv2.warpAffine(
            patch,
            warp,
            (width, height),
            dst=background.copy(),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_TRANSPARENT,
        )
        noisy = np.clip(frame + rng.normal(0, NOISE, frame.shape), 0, 255).astype(np.uint8)
        centre_x, centre_y = warp @ np.array([(bx1 + bx2) / 2, (by1 + by2) / 2, 1.0])
        half_w, half_h = (bx2 - bx1) * scale / 2, (by2 - by1) * scale / 2  # a tilted face keeps its size
        yield noisy, (centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h)


class Drawn(NamedTuple):
    boxes: list[Box]  # on frames `lag` onwards
    ms: list[float]  # per drawn frame
    id_switches: int  # times the one face's track id changed from one result to the next


def drawn_boxes(pictures: list[np.ndarray], truth: list[Box], lag: int, strategy: str) -> Drawn:
    """The box each strategy draws on frames `lag` onwards, the milliseconds each drawn frame cost (its grey copy
    for the flow, made as each frame arrives and kept, as the webcam page keeps them, plus the following), and how
    often the face's id changed in a `FaceTracker` fed each result as it arrives, with the box the strategy drew on
    the analysed frame as where the face's track is now (`moved`; "hold": none, the box it was found in)."""
    follower = BoxFollower()
    tracker = FaceTracker()
    drawn: list[Box] = []
    followed: list[dict[int, Box]] = []  # per drawn box: {0: box} while it moves with the face, {} once lost
    costs: list[float] = []
    ids: list[int] = []
    frames = [FlowFrame.of(picture) for picture in pictures[:lag]]
    analysed = 0
    for t in range(lag, len(pictures)):
        if t - analysed >= 2 * lag:  # the next result is in: the frame analysed when the last one came
            analysed += lag
        arrived = t - analysed == lag  # this frame's result just arrived
        if arrived:  # tracked on the analysis's time, not the drawing's: not in `costs`
            on_analysed = analysed - lag  # the box drawn on the analysed frame, if one was
            moved = {}
            if ids and on_analysed >= 0 and followed[on_analysed]:  # "hold" follows nothing
                moved = {ids[-1]: followed[on_analysed][0]}
            ids.append(tracker.update([_found(truth[analysed])], moved)[0].track_id)
        started = time.perf_counter()
        if strategy != "hold":
            frames.append(FlowFrame.of(pictures[t]))
        if arrived:
            if strategy == "hold":
                box = truth[analysed]
            else:
                follower.anchor(frames[analysed], [truth[analysed]])
                if strategy == "chain":
                    for between in range(analysed + 1, t):
                        follower.follow(frames[between])
                box = follower.follow(frames[t])[0]
        else:
            box = truth[analysed] if strategy == "hold" else follower.follow(frames[t])[0]
        costs.append((time.perf_counter() - started) * 1000)
        drawn.append(box)
        followed.append({} if strategy == "hold" else follower.followed_by([0]))
    return Drawn(drawn, costs, sum(before != after for before, after in pairwise(ids)))


def _found(box: Box) -> FaceResult:
    """A perfect analysis's face (the emotion does not matter here)."""
    return FaceResult(box, 1.0, EMOTIONS[0], 1.0, {EMOTIONS[0]: 1.0}, {})


def score(drawn: list[Box], truth: list[Box]) -> dict[str, float]:
    """Mean IoU, share of frames at IoU >= 0.5 and mean centre error in face widths."""
    ious = np.array([iou_matrix(np.array(d), np.array(g))[0, 0] for d, g in zip(drawn, truth, strict=True)])
    d, g = np.array(drawn), np.array(truth)
    error = np.linalg.norm((d[:, :2] + d[:, 2:]) / 2 - (g[:, :2] + g[:, 2:]) / 2, axis=1) / (g[:, 2] - g[:, 0])
    return {
        "mean_iou": round(float(ious.mean()), 3),
        "iou_at_least_0.5": round(float((ious >= 0.5).mean()), 3),
        "centre_error_widths": round(float(error.mean()), 3),
    }


def run(frames: int, lags: list[int]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for path in PATHS:
        pictures, truth = map(list, zip(*clip(path, frames), strict=True))
        for lag in lags:
            for strategy in STRATEGIES:
                drawn = drawn_boxes(pictures, truth, lag, strategy)
                row: dict[str, Any] = dict(score(drawn.boxes, truth[lag:]))
                row["id_switches"] = drawn.id_switches
                row["ms_per_frame"] = summarise(drawn.ms)
                results[f"{path.name}/lag{lag}/{strategy}"] = row
    return {
        "frames": frames,
        "frame_size": list(FRAME_SIZE),
        "paths": {p.name: p.about for p in PATHS},
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = cli.argument_parser("bench_motion", __doc__)
    parser.add_argument("--frames", type=int, default=180, help="frames per clip (30 a second)")
    parser.add_argument("--lags", type=int, nargs="+", default=[2, 5, 10], help="analysis lags to try, in frames")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.frames < 2 or min(args.lags) < 1 or max(args.lags) >= args.frames:
        parser.error("--frames must be at least 2 and every lag between 1 and frames - 1")
    report = run(args.frames, args.lags)
    header = f"{'path/lag/strategy':<24} {'IoU':>6} {'IoU>=.5':>8} {'centre err':>10} {'id sw':>5}"
    print(f"{header} {'ms med':>7} {'ms p90':>7}")
    for name, row in report["results"].items():
        ms = row["ms_per_frame"]
        print(
            f"{name:<24} {row['mean_iou']:>6.3f} {row['iou_at_least_0.5']:>8.3f} "
            f"{row['centre_error_widths']:>10.3f} {row['id_switches']:>5} {ms['median']:>7.2f} {ms['p90']:>7.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
