"""Carry face boxes from the frame they were found in to the frames after it, by sparse optical flow.

The models take longer than a frame: the webcam page analyses a few frames a second and the video CLI may analyse
every Nth frame, and in between the latest boxes used to be drawn where the faces *were*, so a moving face left its
box behind by the analysis's lag. `BoxFollower` moves each box with its face instead: points inside the box are
followed frame to frame by pyramidal Lucas-Kanade flow (OpenCV), kept only where the flow back lands where it
started (the forward-backward check of Kalal et al.'s Median Flow), and the box shifts by their median move and
scales by the median change of their distances to each other. When a box's points are lost at once (a face that moved
further than flow reaches, in a burst of frames from a busy machine), its face is looked for again nearby by
template matching; not found either (a cut, a turned head, a face leaving the picture), the box stays where it was
until the next analysis rather than follow whatever is under it now: never worse than not following. Points that
dwindle a few at a time are picked afresh inside the box.

Flow runs on a grey copy at most `FLOW_SIDE` px on its longer side, so a 1080p frame costs what a 320x240 one does:
in a browser on a 2-core machine, following at 640 px slowed the camera's frames from 17 to 12 a second.
`python -m fer_core.bench_motion` measures how much closer to the face the boxes stay, and what it costs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np

from fer_core.pipeline import Box
from fer_core.tracking import iou_matrix

#: Longer side of the grey copy the flow runs on (faces the webcam page finds are 32 px or more at 640: 16 here).
FLOW_SIDE = 320
#: Points followed per box, picked as corners (Shi-Tomasi) in the box's inner part, topped up from a grid.
MAX_POINTS = 40
#: Fewer surviving points than this and the box stays put this frame (and its points are picked again).
MIN_POINTS = 5
#: Fraction of the box's width and height left out on each side when picking points: the box's edges are
#: background as often as face, and background does not move with the face.
INNER_MARGIN = 0.15
#: A point is kept when the flow back lands within this many pixels (of the grey copy) of where it started.
MAX_ROUND_TRIP_PX = 1.0
#: Scale change per step accepted from the points; a larger one is noise (a few points on an edge) and is clipped.
MAX_STEP_SCALE = 1.25
#: Lucas-Kanade window (px of the grey copy) and pyramid levels (3: moves of a few dozen px per step).
LK_WINDOW = (21, 21)
LK_LEVELS = 3
#: When a box's points are lost at once, its face is looked for again (template matching of the box's inner part
#: as last seen) this many box sizes around where it was: a busy machine hands the callback frames in bursts, with
#: a face 2 widths further on after a 300 ms gap, which flow cannot bridge (it finds nothing, or a wrong match the
#: round trip then rejects). At 2.5, a face swinging across the picture was lost on 83-88 % of steps 0.4-0.9 s apart
#: (a webcam at 1-2 frames a second), at 6 on none; the wider search is no looser (more places must trail the best
#: one by MIN_MATCH_LEAD): over 2,887 cuts to WIDER FACE photos it found a wrong place 3 times against 7 at 2.5. A
#: search costs at most about 1 ms more (from 0.24 to 0.82 ms for a 40 px face at 640; the whole 320 px grey copy
#: from a 49 px face up).
SEARCH_REACH = 6.0
#: Normalised correlation the face must reach there to count as found again. At 0.7 a small face's inner part
#: matched something in 1 cut in 6 to a real crowd photo (WIDER FACE), and the box then followed that; the pasted
#: face of `bench_motion` is found again at 0.98 and more.
MIN_MATCH = 0.85
#: ... and by this much more than anywhere else in the search (further than a face's size from its best place):
#: two near-equal places (a look-alike, a crowd) are a guess, not a find.
MIN_MATCH_LEAD = 0.1
#: A place found again that overlaps another box this much (IoU) is that face, not this one.
MAX_OVERLAP_WITH_OTHERS = 0.3
K = TypeVar("K")
_LK_STOP = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)


@dataclass(frozen=True)
class FlowFrame:
    """A frame as the flow sees it: grey, at most `FLOW_SIDE` px on its longer side, and the factor it was shrunk
    by. Made once per frame, so a frame kept for catching up later is not converted again."""

    grey: np.ndarray
    scale: float

    @classmethod
    def of(cls, image: np.ndarray) -> FlowFrame:
        """From an 8-bit RGB, RGBA or grey frame; ValueError names any other (the flow needs 8-bit pixels)."""
        if image.dtype != np.uint8 or image.size == 0 or image.ndim not in (2, 3):
            raise ValueError(f"optical flow needs a non-empty 8-bit frame, got {image.dtype} {image.shape}")
        channels = 1 if image.ndim == 2 else image.shape[2]
        if channels not in (1, 3, 4):
            raise ValueError(f"optical flow needs a grey, RGB or RGBA frame, got {channels} channels")
        if channels == 1:
            grey = image.reshape(image.shape[:2]).copy()  # a copy: the caller may draw on its frame afterwards
        else:
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if channels == 3 else cv2.COLOR_RGBA2GRAY)
        height, width = image.shape[:2]
        scale = min(1.0, FLOW_SIDE / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        return cls(np.ascontiguousarray(grey), scale)


def inner_part(grey: np.ndarray, box: np.ndarray) -> tuple[int, int, int, int] | None:
    """The inner part of `box` (`INNER_MARGIN` off each side) within the frame, as left, top, right, bottom; None
    when under 2 px either way or the box is not finite (a box the models got wrong: nothing to follow)."""
    if not np.isfinite(box).all():
        return None
    left, top, right, bottom = grown_within(grey, box, -INNER_MARGIN)
    return (left, top, right, bottom) if right - left >= 2 and bottom - top >= 2 else None


def grown_within(grey: np.ndarray, box: np.ndarray, by: float) -> tuple[int, int, int, int]:
    """`box` grown on each side by `by` times its width and height (shrunk when negative), clipped to the frame,
    in whole pixels: left, top, right, bottom."""
    height, width = grey.shape[:2]
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * by, (y2 - y1) * by
    left, top = int(np.clip(x1 - dx, 0, width)), int(np.clip(y1 - dy, 0, height))
    right, bottom = int(np.clip(x2 + dx, 0, width)), int(np.clip(y2 + dy, 0, height))
    return left, top, right, bottom


def pick_points(grey: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Up to `MAX_POINTS` points (N, 2) worth following inside the inner part of `box` (grey copy's pixels):
    corners first, since flat skin gives the flow nothing to hold on to; a grid fills in when there are few."""
    part = inner_part(grey, box)
    if part is None:
        return np.empty((0, 2), np.float32)
    left, top, right, bottom = part
    spacing = max(2.0, min(right - left, bottom - top) / 8)
    # On the box's own pixels: a masked search of the whole frame cost 25 times as much (1.6 ms against 0.06)
    corners = cv2.goodFeaturesToTrack(np.ascontiguousarray(grey[top:bottom, left:right]), MAX_POINTS, 0.01, spacing)
    points = (
        np.empty((0, 2), np.float32) if corners is None else corners.reshape(-1, 2) + np.array([left, top], np.float32)
    )
    if len(points) < MAX_POINTS // 2:
        xs = np.linspace(left, right - 1, 5, dtype=np.float32)
        ys = np.linspace(top, bottom - 1, 5, dtype=np.float32)
        grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
        points = np.concatenate([points, grid])[:MAX_POINTS]
    return points.astype(np.float32)


@dataclass(frozen=True)
class Template:
    """A box's inner part as last seen, and where that part sits in its box (offset of its top-left corner)."""

    patch: np.ndarray
    offset: tuple[float, float]

    @classmethod
    def of(cls, grey: np.ndarray, box: np.ndarray) -> Template | None:
        part = inner_part(grey, box)
        if part is None:
            return None
        left, top, right, bottom = part
        patch = grey[top:bottom, left:right].copy()
        if patch.std() < 2.0:  # flat: correlation means nothing there
            return None
        return cls(patch, (left - float(box[0]), top - float(box[1])))

    def find(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """`box` moved to where its face is in `grey`, searched `SEARCH_REACH` box sizes around; None unless one
        place correlates at `MIN_MATCH` or more and `MIN_MATCH_LEAD` more than any other."""
        left, top, right, bottom = grown_within(grey, box, SEARCH_REACH)
        region = grey[top:bottom, left:right]
        if region.shape[0] < self.patch.shape[0] or region.shape[1] < self.patch.shape[1]:
            return None
        scores = cv2.matchTemplate(region, self.patch, cv2.TM_CCOEFF_NORMED)
        _, best, _, (x, y) = cv2.minMaxLoc(scores)
        if not best >= MIN_MATCH:  # NaN included
            return None
        patch_h, patch_w = self.patch.shape
        elsewhere = scores.copy()
        elsewhere[max(0, y - patch_h) : y + patch_h + 1, max(0, x - patch_w) : x + patch_w + 1] = -1.0
        if elsewhere.max() > best - MIN_MATCH_LEAD:
            return None
        new_x1, new_y1 = left + x - self.offset[0], top + y - self.offset[1]
        return np.array([new_x1, new_y1, new_x1 + box[2] - box[0], new_y1 + box[3] - box[1]])


def box_move(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, float]:
    """Median shift (2,) and median scale change of a set of points followed from `before` to `after` (N, 2)."""
    shift = np.median(after - before, axis=0)
    first, second = np.triu_indices(len(before), k=1)
    apart_before = np.linalg.norm(before[first] - before[second], axis=1)
    apart_after = np.linalg.norm(after[first] - after[second], axis=1)
    usable = apart_before > 1.0
    scale = float(np.median(apart_after[usable] / apart_before[usable])) if usable.any() else 1.0
    return shift, float(np.clip(scale, 1 / MAX_STEP_SCALE, MAX_STEP_SCALE))


def moved_box(box: np.ndarray, shift: np.ndarray, scale: float) -> np.ndarray:
    """`box` with its centre shifted by `shift` and its sides scaled by `scale` about that centre."""
    centre = (box[:2] + box[2:]) / 2 + shift
    half = (box[2:] - box[:2]) / 2 * scale
    return np.concatenate([centre - half, centre + half])


class BoxFollower:
    """Boxes found in one frame, moved with their faces through the frames after it.

    `anchor(frame, boxes)` starts from an analysed frame; `follow(frame)` moves the boxes to the next frame and
    returns them, in the order given, in that frame's pixels. Follow every frame in between: flow covers a few
    dozen pixels per step, and a lagging analysis's box followed straight to the newest frame leans on the search for
    the face's last look, which a tilting or approaching face outgrows (`python -m fer_core.bench_motion`: "jump"
    against "chain"). Not thread-safe: one caller at a time.
    """

    def __init__(self) -> None:
        self._grey: np.ndarray | None = None
        self._scale = 1.0
        self._boxes: list[np.ndarray] = []  # in the grey copy's pixels
        self._points: list[np.ndarray] = []
        self._lost: list[bool] = []  # its points failed and its face was not found again: it waits for the next anchor
        self._templates: list[Template | None] = []

    @property
    def boxes(self) -> list[Box]:
        """The boxes where they were last followed to, in the last frame's pixels."""
        return [self._to_frame(box) for box in self._boxes]

    def followed_by(self, keys: Sequence[K]) -> dict[K, Box]:
        """The boxes still moving with their faces, keyed by `keys` (one per box, in the order anchored); lost ones
        (waiting where they were for the next anchor) are left out. With track ids: `FaceTracker.update`'s `moved`."""
        boxes = zip(keys, self._boxes, self._lost, strict=True)
        return {key: self._to_frame(box) for key, box, lost in boxes if not lost}

    def reset(self) -> None:
        """Forget the boxes and the last frame (a new stream, another camera, another resolution)."""
        self._grey, self._boxes, self._points, self._lost, self._templates = None, [], [], [], []

    def anchor(self, frame: FlowFrame, boxes: Sequence[Box]) -> None:
        """Start following `boxes`, found in `frame`, from that frame."""
        self._grey, self._scale = frame.grey, frame.scale
        self._boxes = [np.asarray(box, dtype=np.float64) * self._scale for box in boxes]
        self._points = [pick_points(self._grey, box) for box in self._boxes]
        self._lost = [len(points) < MIN_POINTS for points in self._points]  # flat or tiny: nothing to hold on to
        self._templates = [Template.of(self._grey, box) for box in self._boxes]

    def follow(self, frame: FlowFrame) -> list[Box]:
        """The boxes moved to `frame`, the next frame of the same stream ([] before any `anchor`). A frame of
        another size is taken as the same view rescaled (WebRTC adapting to bandwidth): the boxes are scaled."""
        grey, scale = frame.grey, frame.scale
        if self._grey is None:
            return []
        if grey.shape != self._grey.shape:  # the same view at another resolution: the last frame is brought to it
            self._rescale(grey.shape[1] / self._grey.shape[1], grey.shape[0] / self._grey.shape[0], grey.shape)
        counts = [len(points) for points in self._points]
        if sum(counts):
            start = np.concatenate(self._points).reshape(-1, 1, 2)
            end, kept = self._round_trip(self._grey, grey, start)
            offset = 0
            for index, count in enumerate(counts):
                span = slice(offset, offset + count)
                offset += count
                if not self._lost[index]:  # a lost box waits for the next anchor, searched for once only
                    self._step(index, grey, start[span, 0], end[span, 0], kept[span])
        self._grey, self._scale = grey, scale  # the same grey size may come from another frame size
        self._refill(index for index, points in enumerate(self._points) if len(points) < MAX_POINTS // 2)
        return self.boxes

    def _rescale(self, sx: float, sy: float, shape: tuple[int, ...]) -> None:
        """The last frame, the boxes, their points and their faces' last looks in the pixels of a frame `sx` times
        as wide and `sy` times as high, so that the flow to it measures the motion as on any other frame."""
        assert self._grey is not None
        self._grey = cv2.resize(self._grey, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        self._boxes = [box * np.array([sx, sy, sx, sy]) for box in self._boxes]
        self._points = [(points * np.array([sx, sy])).astype(np.float32) for points in self._points]
        self._templates = [Template.of(self._grey, box) for box in self._boxes]

    def _refill(self, indices: Iterable[int]) -> None:
        """Points picked afresh inside these boxes on the current frame, except in boxes that are lost."""
        assert self._grey is not None
        for index in indices:
            if not self._lost[index]:
                self._points[index] = pick_points(self._grey, self._boxes[index])

    def _step(self, index: int, grey: np.ndarray, before: np.ndarray, after: np.ndarray, kept: np.ndarray) -> None:
        """Move box `index` by its surviving points to `grey`; when too few survive, look for its face again, and
        when it is not found the box is lost where it is."""
        if kept.sum() >= MIN_POINTS:
            shift, scale = box_move(before[kept].astype(np.float64), after[kept].astype(np.float64))
            self._boxes[index] = moved_box(self._boxes[index], shift, scale)
            self._points[index] = after[kept].astype(np.float32)
            return
        template = self._templates[index]
        found = None if template is None else template.find(grey, self._boxes[index])
        others = [box for other, box in enumerate(self._boxes) if other != index]
        if found is not None and others and iou_matrix(found, np.stack(others)).max() > MAX_OVERLAP_WITH_OTHERS:
            found = None  # another face's place: two boxes on one face, one with the wrong label and number
        self._points[index] = np.empty((0, 2), np.float32)  # picked afresh where it was found
        if found is None:
            self._lost[index] = True
        else:
            self._boxes[index] = found
            self._templates[index] = Template.of(grey, found) or template

    @staticmethod
    def _round_trip(previous: np.ndarray, current: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each point went, and whether its flow is trustworthy (found both ways, back where it began)."""
        end, found, _ = cv2.calcOpticalFlowPyrLK(
            previous, current, start, np.empty_like(start), winSize=LK_WINDOW, maxLevel=LK_LEVELS, criteria=_LK_STOP
        )
        back, found_back, _ = cv2.calcOpticalFlowPyrLK(
            current, previous, end, np.empty_like(start), winSize=LK_WINDOW, maxLevel=LK_LEVELS, criteria=_LK_STOP
        )
        round_trip = np.linalg.norm((back - start).reshape(-1, 2), axis=1)
        kept = (found.ravel() == 1) & (found_back.ravel() == 1) & (round_trip <= MAX_ROUND_TRIP_PX)
        return end, kept

    def _to_frame(self, box: np.ndarray) -> Box:
        x1, y1, x2, y2 = (box / self._scale).tolist()
        return (x1, y1, x2, y2)


__all__ = ["BoxFollower", "FlowFrame", "box_move", "moved_box", "pick_points"]
