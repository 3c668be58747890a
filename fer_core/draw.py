"""Draw face boxes with emotion labels on RGB images: one look for the app's photos, webcam and videos.

Line width and text size follow the image size, so a label is readable on a 320x240 webcam frame and on
a 4K photo alike. Labels are ASCII (OpenCV's Hershey fonts have nothing else).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import cv2
import numpy as np

RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]
#: (box, label, confidence, track id or None): what `draw_faces` needs to know about one face.
Annotation = tuple[Box, str, float, int | None]

#: One colour per emotion (RGB), distinct for common colour-vision deficiencies as far as seven colours allow.
EMOTION_COLORS: dict[str, RGB] = {
    "angry": (214, 39, 40),
    "disgust": (44, 160, 44),
    "fear": (148, 103, 189),
    "happy": (255, 187, 0),
    "sad": (31, 119, 180),
    "surprise": (255, 127, 14),
    "neutral": (160, 160, 160),
}
#: Colour of a label outside `EMOTIONS` (e.g. "face" before classification).
DEFAULT_COLOR: RGB = (0, 200, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def text_color(background: RGB) -> RGB:
    """Black or white, whichever reads better on `background` (relative luminance, sRGB weights)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def label_text(label: str, confidence: float | None = None, track_id: int | None = None) -> str:
    """'#2 happy 87%': the caption drawn above a box."""
    parts = [f"#{track_id}"] if track_id is not None else []
    parts.append(label)
    if confidence is not None:
        parts.append(f"{100 * confidence:.0f}%")
    return " ".join(parts)


def style_for(width: int, height: int) -> tuple[int, float]:
    """Line thickness and font scale for an image of this size (tuned so 640x480 gives 2 and 0.6).

    They follow the longer side, because pages and players shrink an image to fit by its longer side: a
    4096x1143 panorama is shown as small as a 4096x3072 photo and needs captions as large to stay readable.
    """
    side = max(width, height, 1)
    thickness = max(1, round(side / 320))
    font_scale = max(0.35, side / 1067)
    return thickness, font_scale


def to_annotations(faces: Iterable[Any]) -> list[Annotation]:
    """`FaceResult`s or `TrackedFace`s (anything with box, label, confidence, optional track_id) to annotations."""
    return [(tuple(face.box), face.label, face.confidence, getattr(face, "track_id", None)) for face in faces]


def scale_annotations(annotations: Iterable[Annotation], sx: float, sy: float) -> list[Annotation]:
    """The same annotations with boxes in the pixels of a frame `sx` times as wide and `sy` times as high: a
    stream that changed resolution still shows the last boxes on the right faces until the next analysis."""
    return [
        ((x1 * sx, y1 * sy, x2 * sx, y2 * sy), label, conf, track_id)
        for (x1, y1, x2, y2), label, conf, track_id in annotations
    ]


def draw_faces(
    image_rgb: np.ndarray,
    boxes_labels: Sequence[Annotation],
    *,
    colors: dict[str, RGB] | None = None,
    thickness: int | None = None,
    font_scale: float | None = None,
) -> np.ndarray:
    """An annotated copy of `image_rgb` (HxWx3 or HxW uint8): a box per face and a filled caption above it.

    The caption goes inside the box when there is no room above it and is shifted to stay in the image.
    """
    image = np.asarray(image_rgb)
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else np.ascontiguousarray(image[..., :3]).copy()
    height, width = canvas.shape[:2]
    auto_thickness, auto_scale = style_for(width, height)
    thickness = thickness or auto_thickness
    font_scale = font_scale or auto_scale
    text_thickness = max(1, thickness - 1)
    palette = colors or EMOTION_COLORS
    for box, label, confidence, track_id in boxes_labels:
        color = palette.get(label, DEFAULT_COLOR)
        x1, y1, x2, y2 = (round(v) for v in box)
        x1, x2 = sorted((min(max(x1, 0), width - 1), min(max(x2, 0), width - 1)))
        y1, y2 = sorted((min(max(y1, 0), height - 1), min(max(y2, 0), height - 1)))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)  # axis-aligned: crisp without AA
        _draw_caption(canvas, label_text(label, confidence, track_id), (x1, y1), color, font_scale, text_thickness)
    return canvas


def _draw_caption(
    canvas: np.ndarray, text: str, anchor: tuple[int, int], color: RGB, font_scale: float, thickness: int
) -> None:
    height, width = canvas.shape[:2]
    x1, y1 = anchor
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, font_scale, thickness)
    pad = max(2, round(text_h * 0.3))
    if text_w + 2 * pad > width:  # a small image: shrink the caption to fit rather than cut its end (the %) off
        font_scale *= (width - 2 * pad) / text_w
        (text_w, text_h), baseline = cv2.getTextSize(text, FONT, font_scale, thickness)
    box_h = text_h + baseline + 2 * pad
    top = y1 - box_h if y1 - box_h >= 0 else min(y1, max(height - box_h, 0))
    left = min(max(x1, 0), max(width - text_w - 2 * pad, 0))
    cv2.rectangle(canvas, (left, top), (left + text_w + 2 * pad, top + box_h), color, cv2.FILLED)
    origin = (left + pad, top + pad + text_h)
    cv2.putText(canvas, text, origin, FONT, font_scale, text_color(color), thickness, cv2.LINE_AA)


__all__ = [
    "DEFAULT_COLOR",
    "EMOTION_COLORS",
    "Annotation",
    "draw_faces",
    "label_text",
    "style_for",
    "text_color",
    "to_annotations",
]
