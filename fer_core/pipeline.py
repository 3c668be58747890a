"""Photo in, faces with emotions out: detection, face crops, one batched ensemble call.

    from fer_core.pipeline import Pipeline
    pipe = Pipeline.load("weights")
    result = pipe(image_rgb)
    result.faces[0].label, result.faces[0].probs

Runtimes and detector options (input size, thresholds) go through `Pipeline.load`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fer_core.classifier import prepare_batch, to_gray
from fer_core.detection import DETECTOR_FILE, FaceBox, FaceDetector, reading_order
from fer_core.ensemble import ENSEMBLE_KEY, Ensemble
from fer_core.imageio import to_8bit
from fer_core.labels import EMOTIONS, probs_dict
from fer_core.verdict import model_view

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class FaceResult:
    """One face: where it is, how sure the detector was, and what each model thinks."""

    box: Box
    score: float
    label: str
    confidence: float
    probs: dict[str, float]
    model_probs: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, 1) for v in self.box],
            "score": round(self.score, 4),
            "label": self.label,
            "confidence": round(self.confidence, 4),
            "probs": self.model_probs,
        }


@dataclass(frozen=True)
class ImageResult:
    faces: list[FaceResult]
    width: int
    height: int

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "faces": [f.to_dict() for f in self.faces]}

    def in_pixels_of(self, width: int, height: int) -> ImageResult:
        """This result with its size and boxes in another resolution of the same picture: a photo analysed
        downscaled (`load_image` shrinks one over 4096 px) is reported in the pixels of the file the user has."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        faces = [replace(f, box=(f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy)) for f in self.faces]
        return ImageResult(faces, width, height)


#: Context kept around a detected face before classifying it, as a fraction of the face size per side.
FACE_MARGIN = 0.1


def square_crop_box(box: Box, margin: float) -> tuple[int, int, int, int]:
    """The square around `box`, grown by `margin` of its size on each side (may leave the image)."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    size = max(round(side), 1)
    return left, top, left + size, top + size


def crop_faces(gray: np.ndarray, boxes: Sequence[Box], margin: float) -> list[np.ndarray]:
    """Square crops (gray or colour); parts outside the image are filled by replicating its border.

    Only the crop itself is padded, never the whole frame: a face at the edge of a large photo costs a copy of the
    face, not of the photo.
    """
    height, width = gray.shape[:2]
    crops = []
    for box in boxes:
        left, top, right, bottom = square_crop_box(box, margin)
        x1, y1, x2, y2 = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
        if x1 >= x2 or y1 >= y2:  # entirely outside: an index past an edge repeats the edge pixel (no frame copy)
            rows = np.clip(np.arange(top, bottom), 0, height - 1)
            cols = np.clip(np.arange(left, right), 0, width - 1)
            crops.append(gray[np.ix_(rows, cols)])
            continue
        inside = gray[y1:y2, x1:x2]  # a view: most faces are inside, and copying them cost 7 ms each on 12 MP
        pads = (y1 - top, bottom - y2, x1 - left, right - x2)
        crops.append(cv2.copyMakeBorder(inside, *pads, cv2.BORDER_REPLICATE) if any(pads) else inside)
    return crops


class Pipeline:
    """A face detector and an emotion ensemble, used together or the ensemble alone on crops."""

    def __init__(self, detector: FaceDetector | None, ensemble: Ensemble, face_margin: float = FACE_MARGIN) -> None:
        self.detector = detector
        self.ensemble = ensemble
        self.face_margin = face_margin

    @classmethod
    def load(
        cls,
        weights_dir: str | Path = DEFAULT_WEIGHTS,
        *,
        runtime: str = "auto",
        device: str = "cpu",
        detector_backend: str | None = "auto",
        **detector_options: Any,
    ) -> Pipeline:
        """Load the shipped models; `detector_backend=None` skips the detector (crops only).

        `runtime` and `device` apply to the face detector too unless `detector_options` say otherwise, so one
        switch moves the whole pipeline (e.g. `imgsz=VIDEO_IMGSZ` in `detector_options` for live video).
        """
        folder = Path(weights_dir)
        ensemble = Ensemble.load(folder, runtime=runtime, device=device)
        detector = None
        if detector_backend is not None:
            options = {"runtime": runtime, "device": device, **detector_options}
            detector = FaceDetector(backend=detector_backend, weights=folder / DETECTOR_FILE, **options)
        return cls(detector, ensemble)

    def __call__(self, image_rgb: np.ndarray, file_size: tuple[int, int] | None = None) -> ImageResult:
        return self.analyse(image_rgb, file_size=file_size)

    def detect(self, image_rgb: np.ndarray, file_size: tuple[int, int] | None = None) -> list[FaceBox]:
        """Faces in `image_rgb`; `file_size`: see `FaceDetector.detect`."""
        if self.detector is None:
            raise RuntimeError("this pipeline was loaded without a face detector")
        return self.detector.detect(image_rgb, file_size)

    def with_tta(self, enabled: bool | str) -> Pipeline:
        """The same detector and models with the ensemble's TTA set switched (`Ensemble.with_tta`)."""
        return Pipeline(self.detector, self.ensemble.with_tta(enabled), self.face_margin)

    def at_face_limit(self, n_faces: int) -> bool:
        """Whether detection stopped at its `max_faces`: the image may hold more faces than were labelled."""
        return self.detector is not None and n_faces >= self.detector.max_faces

    def analyse(
        self,
        image_rgb: np.ndarray,
        boxes: Sequence[FaceBox] | None = None,
        file_size: tuple[int, int] | None = None,
    ) -> ImageResult:
        """Detect (unless `boxes` are given, kept in their order) and classify every face in one batch per model
        (`file_size`: see `detect`; the result stays in the pixels of `image_rgb`). Detected faces come in reading
        order (`reading_order`), the order their numbers in the app and the rows of the CSV follow."""
        image = to_8bit(np.asarray(image_rgb))  # any pixel type classify_crops takes, scaled once for the image
        height, width = image.shape[:2]
        found = list(reading_order(self.detect(image, file_size)) if boxes is None else boxes)
        if not found:
            return ImageResult([], width, height)
        gray = to_gray(image)  # HxW, HxWx1 (as the detector accepts it), RGB or RGBA
        coords = [(b.x1, b.y1, b.x2, b.y2) for b in found]
        faces = self._classify(crop_faces(gray, coords, self.face_margin), coords, [b.score for b in found])
        return ImageResult(faces, width, height)

    def classify_crops(self, crops: Sequence[np.ndarray]) -> list[FaceResult]:
        """Already-cropped faces (any size, colour or gray) straight to the classifiers."""
        boxes = [(0.0, 0.0, float(c.shape[1]), float(c.shape[0])) for c in crops]
        return self._classify(list(crops), boxes, [1.0] * len(crops))

    def _classify(self, crops: list[np.ndarray], boxes: list[Box], scores: list[float]) -> list[FaceResult]:
        batch = prepare_batch(crops, self.ensemble.members[0].config.input_size)
        probs = self.ensemble.predict_batch(batch)
        results = []
        for i, (box, score) in enumerate(zip(boxes, scores, strict=True)):
            per_model = {name: probs_dict(p[i]) for name, p in probs.items()}
            ensemble = probs[ENSEMBLE_KEY][i]
            best = int(ensemble.argmax())
            x1, y1, x2, y2 = box
            results.append(
                FaceResult(
                    (float(x1), float(y1), float(x2), float(y2)),
                    float(score),
                    EMOTIONS[best],
                    float(ensemble[best]),
                    per_model[ENSEMBLE_KEY],
                    per_model,
                )
            )
        return results


#: Columns of `result_rows`, so a table of photos without any face still has its header.
RESULT_COLUMNS = [
    "image",
    "face",
    "x1",
    "y1",
    "x2",
    "y2",
    "detector_score",
    "ensemble_label",
    "ensemble_confidence",
    *EMOTIONS,
]


def result_columns(members: Sequence[str] = ()) -> list[str]:
    """`RESULT_COLUMNS`, then a `<member>_label` column for each of `members` (as `result_rows` adds them)."""
    return [*RESULT_COLUMNS, *(f"{name}_label" for name in members)]


def result_rows(image_name: str, result: ImageResult, members: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Flat rows (one per face) for tables and CSV downloads: face 1 is the box captioned "#1"; the label,
    confidence and class columns are the ensemble's, and each of `members` adds its own label (`<name>_label`), what
    the boxes say when that model is picked."""
    rows = []
    for number, face in enumerate(result.faces, start=1):
        missing = [name for name in members if name not in face.model_probs]
        if missing:  # a bare KeyError 'B' said nothing of where the name came from
            raise ValueError(f"{image_name}: no probabilities of {missing}; the faces hold {sorted(face.model_probs)}")
        x1, y1, x2, y2 = face.box
        rows.append(
            {
                "image": image_name,
                "face": number,
                "x1": round(x1),
                "y1": round(y1),
                "x2": round(x2),
                "y2": round(y2),
                "detector_score": round(face.score, 3),
                "ensemble_label": face.label,
                "ensemble_confidence": round(face.confidence, 4),  # as its label's column: one number, not two
                **{k: round(v, 4) for k, v in face.probs.items()},
                **{f"{name}_label": model_view(face.model_probs[name]).label for name in members},
            }
        )
    return rows


__all__ = [
    "RESULT_COLUMNS",
    "FaceResult",
    "ImageResult",
    "Pipeline",
    "crop_faces",
    "result_columns",
    "result_rows",
    "square_crop_box",
]
