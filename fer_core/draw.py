"""Draw face boxes with emotion labels on RGB images: one look for the app's photos, webcam and videos.

Line width and text size follow the image size, so a label is readable on a 320x240 webcam frame and on
a 4K photo alike. Labels are ASCII (OpenCV's Hershey fonts have nothing else).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]
#: (box, label, confidence, number or None): what `draw_faces` needs to know about one face. The number is drawn
#: as "#N": a face's place on a photo (the app's table numbers its rows alike), or a track's id in a video.
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
#: Drawn a pixel or two wide on each side of every box line: a thin "happy" yellow box (1.6:1 against white) all but
#: vanished on a bright, washed-out photo.
OUTLINE: RGB = (40, 40, 40)
#: Colour of a label outside `EMOTIONS` (e.g. "face" before classification).
DEFAULT_COLOR: RGB = (0, 200, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
#: The smallest font scale at which a Hershey caption still reads on a 320 px frame.
MIN_FONT_SCALE = 0.35


def text_color(background: RGB) -> RGB:
    """Black or white, whichever has the higher WCAG contrast ratio on `background`."""
    linear = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in background]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    on_black, on_white = (luminance + 0.05) / 0.05, 1.05 / (luminance + 0.05)
    return (0, 0, 0) if on_black >= on_white else (255, 255, 255)


def label_text(label: str, confidence: float | None = None, number: int | None = None) -> str:
    """'#2 happy 87%': the caption drawn above a box."""
    parts = [f"#{number}"] if number is not None else []
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
    font_scale = max(MIN_FONT_SCALE, side / 1067)
    return thickness, font_scale


def to_annotations(faces: Iterable[Any]) -> list[Annotation]:
    """`FaceResult`s or `TrackedFace`s (anything with box, label, confidence, optional track_id) to annotations."""
    return [(tuple(face.box), face.label, face.confidence, getattr(face, "track_id", None)) for face in faces]


def numbered(faces: Iterable[Any], verdicts: Iterable[Any]) -> list[Annotation]:
    """Faces (anything with a box) numbered from 1 in their order, each labelled by its verdict (anything with label
    and confidence): a photo's boxes labelled by the model the user picked, not by the faces' own ensemble label."""
    return [
        (tuple(face.box), verdict.label, verdict.confidence, number)
        for number, (face, verdict) in enumerate(zip(faces, verdicts, strict=True), start=1)
    ]


def scale_annotations(annotations: Iterable[Annotation], sx: float, sy: float) -> list[Annotation]:
    """The same annotations with boxes in the pixels of a frame `sx` times as wide and `sy` times as high: a
    stream that changed resolution still shows the last boxes on the right faces until the next analysis."""
    return [
        ((x1 * sx, y1 * sy, x2 * sx, y2 * sy), label, conf, number)
        for (x1, y1, x2, y2), label, conf, number in annotations
    ]


def with_boxes(annotations: Sequence[Annotation], boxes: Sequence[Box]) -> list[Annotation]:
    """The same labels on new boxes, in order: the last analysis's faces drawn where they have moved to since."""
    return [(box, label, conf, number) for (_, label, conf, number), box in zip(annotations, boxes, strict=True)]


#: A caption may be this many times as wide as its face before it is shrunk to fit ...
MAX_CAPTION_TO_BOX = 1.5
#: ... but never below this fraction of the image's style, or it would be unreadable once the page shrinks the image.
MIN_CAPTION_FRACTION = 0.4

Rect = tuple[int, int, int, int]
#: Where a face's number goes when its full caption would cover another face or caption, in order of preference;
#: the second ("inside", covering only the face's own brow) when each would.
NUMBER_PLACES = ("above", "inside", "below")


@dataclass(frozen=True)
class _Caption:
    text: str
    rect: Rect  # left, top, right, bottom of the filled box
    font_scale: float
    text_h: int
    pad: int


def draw_faces(
    image_rgb: np.ndarray,
    annotations: Sequence[Annotation],
    *,
    colors: dict[str, RGB] | None = None,
    thickness: int | None = None,
    font_scale: float | None = None,
) -> np.ndarray:
    """An annotated copy of `image_rgb` (HxWx3 or HxW uint8): a box per face and a filled caption above it.

    The caption goes inside the box when there is no room above it and is shifted to stay in the image. It is sized
    to its face (within `MAX_CAPTION_TO_BOX` and `MIN_CAPTION_FRACTION`), and where it would still cover another
    face or caption it shrinks to the face's number ("#3"), which the app's table explains. Boxes are drawn first,
    so no box line crosses a caption.
    """
    image = np.asarray(image_rgb)
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else np.ascontiguousarray(image[..., :3]).copy()
    height, width = canvas.shape[:2]
    auto_thickness, auto_scale = style_for(width, height)
    thickness = thickness or auto_thickness
    font_scale = font_scale or auto_scale
    text_thickness = max(1, thickness - 1)
    palette = colors or EMOTION_COLORS
    faces: list[tuple[Rect, RGB, list[str]]] = []  # box, colour, full caption and, where numbered, the number
    for box, label, confidence, number in annotations:
        color = palette.get(label, DEFAULT_COLOR)
        x1, y1, x2, y2 = (round(v) for v in box)
        x1, x2 = sorted((min(max(x1, 0), width - 1), min(max(x2, 0), width - 1)))
        y1, y2 = sorted((min(max(y1, 0), height - 1), min(max(y2, 0), height - 1)))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), OUTLINE, thickness + 2)  # a pixel or two each side of the colour
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)  # axis-aligned: crisp without AA
        texts = [label_text(label, confidence, number)] + ([f"#{number}"] if number is not None else [])
        faces.append(((x1, y1, x2, y2), color, texts))
    placed: list[Rect] = []
    for i, (rect, color, texts) in enumerate(faces):
        # grown by half a line: cv2 draws a box's lines centred on its edges, and a caption touching one covers it
        grow = thickness // 2 + 1
        taken = [
            (x1 - grow, y1 - grow, x2 + grow, y2 + grow)
            for x1, y1, x2, y2 in [other for j, (other, _, _) in enumerate(faces) if j != i] + placed
        ]
        caption = _fit_caption(texts[0], rect, (width, height), font_scale, text_thickness)
        if len(texts) > 1 and any(_overlap(caption.rect, other) for other in taken):  # the number, in the same size
            # above the face if that is free, else inside it or below it: a number placed above regardless covered
            # the neighbour's caption placed before it ("#8" over the "52%" of "#7 sad 52%")
            numbers = [
                _fit_caption(texts[1], rect, (width, height), caption.font_scale, text_thickness, where)
                for where in NUMBER_PLACES
            ]
            caption = next((c for c in numbers if not any(_overlap(c.rect, o) for o in taken)), numbers[1])
        placed.append(caption.rect)
        _draw_caption(canvas, caption, color, text_thickness)
    return canvas


def _overlap(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _fit_caption(
    text: str, box: Rect, image_size: tuple[int, int], font_scale: float, thickness: int, where: str = "above"
) -> _Caption:
    """Where `text` goes for this box, and how large: above the box (else inside it), inside it at its top, or below
    it (else inside, at its bottom), shifted into the image."""
    width, height = image_size
    x1, y1, x2, y2 = box
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, font_scale, thickness)
    allowed = max(MAX_CAPTION_TO_BOX * (x2 - x1), 1)
    if text_w > allowed:  # sized to the face, so a crowd's captions do not lie over each other's faces
        floor = max(font_scale * MIN_CAPTION_FRACTION, MIN_FONT_SCALE)
        font_scale = min(font_scale, max(font_scale * allowed / text_w, floor))  # never larger than asked for
        (text_w, text_h), baseline = cv2.getTextSize(text, FONT, font_scale, thickness)
    pad = max(2, round(text_h * 0.3))
    if text_w + 2 * pad > width:  # a small image: shrink the caption to fit rather than cut its end (the %) off
        font_scale *= max(width - 2 * pad, 1) / max(text_w, 1)  # an image 1 px wide: text_w may already be 0
        (text_w, text_h), baseline = cv2.getTextSize(text, FONT, font_scale, thickness)
    box_h = text_h + baseline + 2 * pad
    if where == "below":
        top = y2 if y2 + box_h <= height else max(y2 - box_h, 0)
    elif where == "inside" or y1 - box_h < 0:
        top = min(y1, max(height - box_h, 0))
    else:
        top = y1 - box_h
    left = min(max(x1, 0), max(width - text_w - 2 * pad, 0))
    return _Caption(text, (left, top, left + text_w + 2 * pad, top + box_h), font_scale, text_h, pad)


def _draw_caption(canvas: np.ndarray, caption: _Caption, color: RGB, thickness: int) -> None:
    left, top, right, bottom = caption.rect
    cv2.rectangle(canvas, (left, top), (right, bottom), color, cv2.FILLED)
    origin = (left + caption.pad, top + caption.pad + caption.text_h)
    cv2.putText(canvas, caption.text, origin, FONT, caption.font_scale, text_color(color), thickness, cv2.LINE_AA)


__all__ = [
    "DEFAULT_COLOR",
    "EMOTION_COLORS",
    "Annotation",
    "draw_faces",
    "label_text",
    "numbered",
    "style_for",
    "text_color",
    "to_annotations",
]
