"""Our exported YOLO face model on onnxruntime: ultralytics' own pre- and post-processing, redone in numpy and cv2.

The CPU path must not pay for ultralytics' predictor (torch tensors, Results objects, per-call setup), yet it must
find the same boxes, so every step copies what `YOLO.predict` does for a `.pt` model: a minimal-rectangle letterbox
(`rect=True`: pad only to a multiple of the stride, which is why the graph is exported with dynamic height/width),
RGB scaled to 0..1, best-class scores with a strict `> conf`, class-aware NMS with the same class offset, `max_det`
after NMS, and boxes mapped back through the same rounding. `tests/test_detector_onnx.py` holds both paths to it.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from fer_core.onnx_session import cpu_session

#: Grey that ultralytics pads letterboxed images with.
PAD_VALUE = 114
#: Per-class coordinate offset that keeps classes apart in one NMS call (ultralytics' `max_wh`).
CLASS_OFFSET = 7680.0
#: Candidates kept for NMS, best first (ultralytics' `max_nms`).
MAX_NMS = 30000


class Letterbox(NamedTuple):
    """How an image was placed into the network input, to map boxes back."""

    gain_x: float
    gain_y: float
    left: int
    top: int


def input_side(imgsz: int, stride: int) -> int:
    """The requested size rounded up to a multiple of the stride, as ultralytics' `check_imgsz` does."""
    return max(math.ceil(imgsz / stride) * stride, stride)


def letterbox(rgb: np.ndarray, imgsz: int, stride: int = 32) -> tuple[np.ndarray, Letterbox]:
    """HxWx3 uint8 to a (1, 3, H', W') float32 blob in 0..1: aspect kept, padded only up to a multiple of `stride`."""
    side = input_side(imgsz, stride)
    h, w = rgb.shape[:2]
    r = min(side / h, side / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = ((side - new_w) % stride) / 2, ((side - new_h) % stride) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    resized = rgb if (new_w, new_h) == (w, h) else cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if top or bottom or left or right:
        resized = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    blob = cv2.dnn.blobFromImage(resized, scalefactor=1 / 255.0)  # HWC uint8 -> NCHW float32 in one pass
    return blob, Letterbox(new_w / w, new_h / h, left, top)


def decode(
    raw: np.ndarray, conf: float, iou: float, max_det: int, face_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One image's raw head output (4 + nc, N) of cx, cy, w, h, class scores to NMS-ed xyxy boxes and scores.

    Boxes stay in network-input pixels; with `face_class` set, anchors whose best class is another one are dropped,
    which is what ultralytics' `classes=[...]` filter does.
    """
    pred = np.asarray(raw, dtype=np.float32)
    if pred.ndim == 3:
        pred = pred[0]
    cls = pred[4:]
    best = cls.argmax(0)
    score = cls[best, np.arange(cls.shape[1])]
    keep = score > conf
    if face_class is not None:
        keep &= best == face_class
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return np.zeros((0, 4)), np.zeros(0)
    if idx.size > MAX_NMS:
        idx = idx[np.argsort(-score[idx], kind="stable")[:MAX_NMS]]
    cx, cy, bw, bh = (pred[i, idx].astype(np.float64) for i in range(4))
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    scores = score[idx].astype(np.float64)
    offset = best[idx, None] * CLASS_OFFSET
    shifted = boxes + offset
    xywh = np.c_[shifted[:, :2], shifted[:, 2:] - shifted[:, :2]]
    kept = np.asarray(cv2.dnn.NMSBoxes(xywh, scores.astype(np.float32), 0.0, iou), dtype=np.int64).reshape(-1)
    kept = kept[:max_det]
    return boxes[kept], scores[kept]


def to_image(boxes: np.ndarray, placement: Letterbox) -> np.ndarray:
    """Network-input xyxy boxes back to the original image's pixels (clipping is the caller's job)."""
    out = boxes.astype(np.float64, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - placement.left) / placement.gain_x
    out[:, [1, 3]] = (out[:, [1, 3]] - placement.top) / placement.gain_y
    return out


class OnnxYolo:
    """An ultralytics-exported detection graph in an onnxruntime CPU session, with the names and stride it carries."""

    def __init__(self, onnx_path: str | Path, threads: int = 0) -> None:
        self.path = Path(onnx_path)
        self.session = cpu_session(self.path, threads)
        self.input_name = self.session.get_inputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map
        self.stride = int(meta.get("stride", 32))
        self.names: dict[int, str] = {int(k): str(v) for k, v in ast.literal_eval(meta.get("names", "{}")).items()}
        if meta.get("end2end") == "True":
            raise ValueError(f"{self.path}: NMS-free (end2end) heads are not supported by this decoder")
        channels = self.session.get_outputs()[0].shape[1]
        if isinstance(channels, int) and self.names and channels != 4 + len(self.names):
            raise ValueError(f"{self.path}: expected {4 + len(self.names)} output channels, got {channels}")

    def raw(self, blob: np.ndarray) -> np.ndarray:
        """The graph's raw (1, 4 + nc, N) output for a preprocessed blob."""
        return self.session.run(None, {self.input_name: blob})[0]

    def detect(
        self, rgb: np.ndarray, imgsz: int, conf: float, iou: float, max_det: int, face_class: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """xyxy boxes in `rgb`'s pixels (unclipped) and their scores, best first."""
        blob, placement = letterbox(rgb, imgsz, self.stride)
        boxes, scores = decode(self.raw(blob), conf, iou, max_det, face_class)
        return to_image(boxes, placement), scores
