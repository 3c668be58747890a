"""Follow faces across video frames and smooth their emotions, so labels do not flicker frame to frame.

Per-frame predictions of a 48x48 classifier jump between neighbouring classes; the live webcam page and the
video CLI show a face's *smoothed* ensemble probabilities instead. Faces are linked between frames by box
overlap (IoU) with an optimal one-to-one assignment (Hungarian), which is cheap for the handful of faces a
frame holds and, unlike greedy matching, keeps the pairing of most total overlap when neighbours' boxes touch.
Faces and tracks left over are then paired by how far the face moved, up to `MAX_JUMP` widths of the track's box
for a box of similar size (`MAX_AREA_RATIO`): analysed at a few frames a second (a busy machine, a video read every
3rd frame), a face crossing the picture overlapped its last box too little and took a new id, and with it a
fresh, unsmoothed label, on every analysed frame. Where the caller follows the boxes between analyses
(`fer_core.motion`), `update(faces, moved=...)` matches against where each face is now rather than where it was
found: a face that moved further than `MAX_JUMP` in the meantime keeps its id (`python -m fer_core.bench_motion`
counts the ids). Without that there is no motion model: two faces that cross can swap ids (and smoothed
probabilities) for a while, and a new face that appears near where one vanished less than `max_missed` frames ago
continues that track.

Smoothing, per track, over the frames in which the face was seen:

* ``"ema"``: s_t = alpha * p_t + (1 - alpha) * s_(t-1), s_0 = p_0. alpha = 1 is no smoothing; smaller alpha is
  steadier but slower to follow a real change (a step change is followed to 1 - (1 - alpha)^k after k frames).
* ``"window"``: the mean of the last `window` probability vectors (equal weights, forgets completely after
  `window` frames).
* ``"none"``: the raw per-frame probabilities.

Either way the result is still a probability distribution, and `label`/`confidence` are its argmax and max.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from fer_core.labels import EMOTIONS, probs_dict, probs_vector
from fer_core.pipeline import Box, FaceResult

SMOOTHING = ("ema", "window", "none")
#: The tracker's defaults, for `FaceTracker`, the video tool's flags and the app's sliders alike.
DEFAULT_IOU_THRESHOLD = 0.3
DEFAULT_MAX_MISSED = 10
DEFAULT_SMOOTHING = "ema"
DEFAULT_ALPHA = 0.5
DEFAULT_WINDOW = 5
#: How far (centre to centre, in widths of the track's box) a face may move between analysed frames and keep its
#: track when its boxes no longer overlap enough; and how much larger or smaller (area) its box may be.
MAX_JUMP = 1.5
MAX_AREA_RATIO = 2.0


@dataclass(frozen=True)
class TrackedFace:
    """One face in the current frame: its stable id, current box and smoothed emotion."""

    track_id: int
    box: Box
    probs: dict[str, float]
    label: str
    confidence: float
    raw: FaceResult
    age: int


@dataclass
class _Track:
    track_id: int
    box: np.ndarray
    raw: FaceResult
    smoothed: np.ndarray
    history: deque[np.ndarray] = field(default_factory=deque)
    age: int = 1
    missed: int = 0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes (N, 4) and (M, 4) in x1, y1, x2, y2 form; degenerate boxes give 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def jump_matrix(tracks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Centre-to-centre distance from each track's box (N, 4) to each box (M, 4), in widths of the track's box;
    infinite where the areas differ more than `MAX_AREA_RATIO` times or a box is degenerate."""
    tracks = np.asarray(tracks, dtype=np.float64).reshape(-1, 4)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centres_t = (tracks[:, :2] + tracks[:, 2:]) / 2
    centres_b = (boxes[:, :2] + boxes[:, 2:]) / 2
    distance = np.linalg.norm(centres_t[:, None, :] - centres_b[None, :, :], axis=2)
    width = np.clip(tracks[:, 2] - tracks[:, 0], 0, None)[:, None]
    area_t = width[:, 0] * np.clip(tracks[:, 3] - tracks[:, 1], 0, None)
    area_b = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    low, high = np.minimum.outer(area_t, area_b), np.maximum.outer(area_t, area_b)
    alike = (low > 0) & (high <= MAX_AREA_RATIO * low)
    jumps = np.divide(distance, width, out=np.full_like(distance, np.inf), where=width > 0)
    return np.where(alike, jumps, np.inf)


def _moved_box(track: _Track, moved: Mapping[int, Box] | None) -> np.ndarray:
    """Where `moved` says the track's face is now; NaN (no overlap, no distance: no match) for a track it does not
    follow (lost, or missed at the last analysis), which is then matched by its found box only, after the followed
    tracks: its old box must not take a face that another track was followed onto (two faces crossing)."""
    box = None if moved is None else moved.get(track.track_id)
    if box is None or not np.isfinite(box).all():
        return np.full(4, np.nan)
    return np.asarray(box, dtype=np.float64).reshape(4)


def _jump_pairs(track_boxes: np.ndarray, boxes: np.ndarray) -> list[tuple[int, int]]:
    """(track, face) pairs of the shortest total move, each at most `MAX_JUMP`."""
    jumps = jump_matrix(track_boxes, boxes)
    allowed = jumps <= MAX_JUMP
    rows, cols = linear_sum_assignment(np.where(allowed, jumps, MAX_JUMP * 1e3))  # finite: always solvable
    return [(r, c) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]


class FaceTracker:
    """IoU tracker with per-track probability smoothing; call `update` once per analysed frame."""

    def __init__(
        self,
        iou_threshold: float = DEFAULT_IOU_THRESHOLD,
        max_missed: int = DEFAULT_MAX_MISSED,
        smoothing: str = DEFAULT_SMOOTHING,
        alpha: float = DEFAULT_ALPHA,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        if smoothing not in SMOOTHING:
            raise ValueError(f"smoothing must be one of {SMOOTHING}, got {smoothing!r}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.iou_threshold = float(iou_threshold)
        self.max_missed = int(max_missed)
        self.smoothing = smoothing
        self.alpha = float(alpha)
        self.window = int(window)
        self._tracks: list[_Track] = []
        self._next_id = 1

    @property
    def active_ids(self) -> list[int]:
        """Ids of every live track, including ones not seen in the latest frame (still within `max_missed`)."""
        return [t.track_id for t in self._tracks]

    def rescale(self, sx: float, sy: float) -> None:
        """Carry every track over to frames resized by (sx, sy), as WebRTC does when bandwidth or CPU run short:
        the same faces, so ids and smoothed probabilities go on, with boxes in the new frame's pixels."""
        for track in self._tracks:
            track.box = track.box * np.array([sx, sy, sx, sy])

    def reconfigure(self, *, iou_threshold: float, max_missed: int, smoothing: str, alpha: float, window: int) -> None:
        """New settings for the faces already followed: ids, ages and history go on, so moving a smoothing slider
        on the live page does not restart every face at #1 with its raw, flickering label.

        The histories are trimmed to a smaller window; a track's smoothed value is recomputed from its history for
        "window" and "none", and carried on as is for "ema" (the average so far is its memory)."""
        checked = FaceTracker(iou_threshold, max_missed, smoothing, alpha, window)  # the same validation
        self.iou_threshold, self.max_missed = checked.iou_threshold, checked.max_missed
        self.smoothing, self.alpha, self.window = checked.smoothing, checked.alpha, checked.window
        for track in self._tracks:
            track.history = deque(track.history, maxlen=self.window)
            if self.smoothing == "window":
                track.smoothed = np.mean(track.history, axis=0)
            elif self.smoothing == "none":
                track.smoothed = track.history[-1]

    def reset(self) -> None:
        """Forget every track and restart ids at 1 (a new video or a restarted camera)."""
        self._tracks = []
        self._next_id = 1

    def update(self, faces: Sequence[FaceResult], moved: Mapping[int, Box] | None = None) -> list[TrackedFace]:
        """Match this frame's faces to live tracks; returns one `TrackedFace` per input face, in input order.

        `moved` gives, by track id, where a track's face is in this frame as followed since it was last found (other
        ids are ignored). Tracks are matched by those boxes first (two faces that crossed keep their ids), and the
        ones left over by the boxes they were found in (a box followed astray into the background costs nothing; one
        followed onto another face takes that face); overlap before distance."""
        boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
        assigned: list[_Track | None] = [None] * len(faces)
        matched_tracks: set[int] = set()
        if self._tracks and len(faces):
            found = np.stack([t.box for t in self._tracks])
            now = [np.stack([_moved_box(t, moved) for t in self._tracks])] if moved else []
            self._match([*now, found], boxes, assigned, matched_tracks)

        survivors = []
        for index, track in enumerate(self._tracks):
            if index not in matched_tracks:
                track.missed += 1
                if track.missed > self.max_missed:
                    continue
            survivors.append(track)
        self._tracks = survivors

        output = []
        for face, box, known in zip(faces, boxes, assigned, strict=True):
            probs = probs_vector(face.probs)
            if known is None:
                known = self._new_track(face, box, probs)
            else:
                self._advance(known, face, box, probs)
            output.append(self._snapshot(known))
        return output

    def _match(
        self, track_boxes: list[np.ndarray], boxes: np.ndarray, assigned: list[_Track | None], matched: set[int]
    ) -> None:
        """Pair faces with tracks by overlap, then the faces and tracks left over by the shortest total move up to
        `MAX_JUMP` (see the module's docstring); each way tries the tracks' boxes in `track_boxes` (a box for every
        track in each) in turn, on what the ones before left over."""
        for pairing in (self._overlap_pairs, _jump_pairs):
            for known in track_boxes:
                faces = [index for index, track in enumerate(assigned) if track is None]
                free = [index for index in range(len(self._tracks)) if index not in matched]
                if not faces or not free:
                    return
                for r, c in pairing(known[free], boxes[faces]):
                    assigned[faces[c]] = self._tracks[free[r]]
                    matched.add(free[r])

    def _overlap_pairs(self, track_boxes: np.ndarray, boxes: np.ndarray) -> list[tuple[int, int]]:
        """(track, face) pairs of most total overlap, each at least `iou_threshold`."""
        iou = iou_matrix(track_boxes, boxes)
        # Pairs under the threshold count for nothing in the assignment: otherwise a weak pairing that is
        # rejected afterwards can still win the total and hand a face to its neighbour's track.
        usable = np.where(iou >= self.iou_threshold, iou, 0.0)
        rows, cols = linear_sum_assignment(-usable)
        return [(r, c) for r, c in zip(rows, cols, strict=True) if usable[r, c] > 0.0]

    def _new_track(self, face: FaceResult, box: np.ndarray, probs: np.ndarray) -> _Track:
        track = _Track(self._next_id, box, face, probs, deque([probs], maxlen=self.window))
        self._next_id += 1
        self._tracks.append(track)
        return track

    def _advance(self, track: _Track, face: FaceResult, box: np.ndarray, probs: np.ndarray) -> None:
        track.box, track.raw = box, face
        track.age += 1
        track.missed = 0
        track.history.append(probs)
        if self.smoothing == "ema":
            track.smoothed = self.alpha * probs + (1.0 - self.alpha) * track.smoothed
        elif self.smoothing == "window":
            track.smoothed = np.mean(track.history, axis=0)
        else:
            track.smoothed = probs

    @staticmethod
    def _snapshot(track: _Track) -> TrackedFace:
        best = int(np.argmax(track.smoothed))
        probs = probs_dict(track.smoothed)
        box = (float(track.box[0]), float(track.box[1]), float(track.box[2]), float(track.box[3]))
        return TrackedFace(
            track.track_id, box, probs, EMOTIONS[best], float(track.smoothed[best]), track.raw, track.age
        )

    def __repr__(self) -> str:
        return (
            f"FaceTracker(iou_threshold={self.iou_threshold}, max_missed={self.max_missed}, "
            f"smoothing={self.smoothing!r}, alpha={self.alpha}, window={self.window}, tracks={len(self._tracks)})"
        )


__all__ = ["SMOOTHING", "FaceTracker", "TrackedFace", "iou_matrix"]
