"""The onnxruntime face detector finds what the ultralytics (PyTorch) path finds, and runtimes are chosen right.

The model is an untrained one-class YOLO11n from `build_untrained_yolo`: batch-norm statistics set on a real photo
make its outputs depend on the image, so a wrong letterbox, colour order or box mapping shows up as other boxes.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from skimage import data as skdata

from fer_core import detection
from fer_core.bench import synthetic_frame
from fer_core.detection import (
    PHOTO_IMGSZ,
    VIDEO_IMGSZ,
    FaceBox,
    FaceDetector,
    import_ultralytics,
    resolve_runtime,
)
from fer_core.untrained_yolo import build_untrained_yolo
from fer_core.yolo_onnx import decode, letterbox, to_image

#: Same boxes: both runtimes' raw outputs agree to ~1e-5, so matched boxes overlap almost perfectly.
MIN_IOU = 0.99
MAX_SCORE_GAP = 1e-3
TOP_K = 10


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def unmatched(reference: list[FaceBox], candidate: list[FaceBox]) -> list[FaceBox]:
    """Reference boxes with no candidate at IoU >= MIN_IOU and a score within MAX_SCORE_GAP (order-free)."""
    return [
        r
        for r in reference
        if not any(iou(r[:4], c[:4]) >= MIN_IOU and abs(r.score - c.score) <= MAX_SCORE_GAP for c in candidate)
    ]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    return build_untrained_yolo(tmp_path_factory.mktemp("yolo") / "face_yolo.pt", images=[astronaut])


@pytest.mark.parametrize("shape", [(512, 512), (400, 512), (480, 640), (333, 500), (60, 700)])
@pytest.mark.parametrize("imgsz", [320, 300, 640])
def test_letterbox_and_box_mapping_match_ultralytics(shape: tuple[int, int], imgsz: int) -> None:
    import_ultralytics()
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import ops
    from ultralytics.utils.checks import check_imgsz

    rgb = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    blob, placement = letterbox(rgb, imgsz)
    expected = cast(np.ndarray, LetterBox(check_imgsz(imgsz, stride=32), auto=True, stride=32)(image=rgb[:, :, ::-1]))
    expected = expected[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
    assert blob.shape == expected.shape and blob.dtype == np.float32
    np.testing.assert_allclose(blob, expected, atol=1e-7)
    boxes = np.array([[10.0, 20.0, 100.0, 90.0], [0.0, 0.0, blob.shape[3], blob.shape[2]]])
    mapped = ops.scale_boxes(blob.shape[2:], boxes.copy(), shape, padding=True)
    ours = to_image(boxes, placement)
    ours[:, [0, 2]] = ours[:, [0, 2]].clip(0, shape[1])
    ours[:, [1, 3]] = ours[:, [1, 3]].clip(0, shape[0])
    np.testing.assert_allclose(ours, mapped, atol=1e-4)


@pytest.mark.parametrize(("nc", "face_class"), [(1, None), (3, None), (3, 1)])
def test_decode_matches_ultralytics_nms(nc: int, face_class: int | None) -> None:
    import_ultralytics()
    from ultralytics.utils.nms import non_max_suppression

    rng = np.random.default_rng(nc)
    n = 2000
    centres = rng.uniform(0, 320, (2, n))
    sizes = rng.uniform(8, 120, (2, n))
    raw = np.concatenate([centres, sizes, rng.random((nc, n)) ** 3]).astype(np.float32)[None]
    classes = None if face_class is None else [face_class]
    (expected,) = non_max_suppression(torch.from_numpy(raw), 0.2, 0.5, classes=classes, max_det=300)
    boxes, scores = decode(raw, 0.2, 0.5, 300, face_class)
    assert len(boxes) == len(expected) > 10
    np.testing.assert_allclose(boxes, expected[:, :4].numpy(), atol=1e-3)
    np.testing.assert_allclose(scores, expected[:, 4].numpy(), atol=1e-6)
    assert decode(raw, 0.999999, 0.5, 300)[0].shape == (0, 4)


def test_onnx_path_finds_the_boxes_ultralytics_finds(stand_in: Path, astronaut: np.ndarray) -> None:
    options: dict[str, Any] = {"weights": stand_in, "imgsz": 320, "conf": 0.25, "min_face": 0, "max_faces": 300}
    fast = FaceDetector(runtime="onnxruntime", **options)
    eager = FaceDetector(runtime="torch", **options)
    assert (fast.backend, fast.runtime, eager.backend, eager.runtime) == ("yolo", "onnxruntime", "yolo", "torch")
    images = {
        "square": astronaut,
        "landscape crop": np.ascontiguousarray(astronaut[40:440]),  # letterbox pads: mapping back is exercised
        "bench frame": synthetic_frame(5)[0],
    }
    for name, image in images.items():
        ours, theirs = fast.detect(image), eager.detect(image)
        assert len(theirs) >= TOP_K, f"{name}: too few boxes to compare; lower conf"
        assert abs(len(ours) - len(theirs)) <= 1, name
        assert unmatched(theirs[:TOP_K], ours) == [], name
        assert all(type(f) is FaceBox and all(type(v) is float for v in f) for f in ours)
    # ultralytics sets torch's process-wide CPU threads to cpu_count - 1 when it predicts; the detector undoes that.
    from ultralytics.utils import NUM_THREADS

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(NUM_THREADS + 1)
        eager._yolo.predictor = None  # a fresh predictor selects its device (and sets threads) again
        eager.detect(astronaut)
        assert torch.get_num_threads() == NUM_THREADS + 1
    finally:
        torch.set_num_threads(before)
    # The comparison can fail: the same model fed BGR instead of RGB gives other boxes or scores.
    swapped = fast.detect(np.ascontiguousarray(astronaut[:, :, ::-1]))
    assert unmatched(eager.detect(astronaut)[:TOP_K], swapped) != []


def test_onnx_path_obeys_the_detector_contract(stand_in: Path, astronaut: np.ndarray) -> None:
    detector = FaceDetector(weights=stand_in, imgsz=VIDEO_IMGSZ, conf=0.25, min_face=40, max_faces=3, device="cpu")
    assert detector.runtime == "onnxruntime" and detector.warning is None and detector.runtime_warning is None
    faces = detector.detect(astronaut)
    assert 1 <= len(faces) <= 3
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    assert all(f.width >= 40 and f.height >= 40 and f.score >= 0.25 for f in faces)
    assert all(0 <= f.x1 < f.x2 <= 512 and 0 <= f.y1 < f.y2 <= 512 for f in faces)
    assert detector.detect(np.zeros((0, 10, 3), np.uint8)) == []
    assert len(detector.detect(astronaut[:, :, 0])) >= 1  # gray works too
    assert "onnxruntime" in repr(detector)


def test_auto_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_runtime("auto", "cpu") == "onnxruntime"
    assert resolve_runtime("torch", "cpu") == "torch" and resolve_runtime("onnxruntime", "cuda") == "onnxruntime"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_runtime("auto", None) == "torch"
    assert resolve_runtime("auto", "cuda:0") == "torch" and resolve_runtime("auto", "0") == "torch"
    assert resolve_runtime("auto", "cpu") == "onnxruntime"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_runtime("auto", None) == "onnxruntime"
    with pytest.raises(ValueError, match="runtime"):
        FaceDetector(backend="haar", runtime="tensorrt")


def test_haar_runtime_and_input_size_defaults() -> None:
    detector = FaceDetector(backend="haar")
    assert detector.runtime == "opencv" and detector.imgsz == PHOTO_IMGSZ
    assert PHOTO_IMGSZ % 32 == 0 and VIDEO_IMGSZ % 32 == 0 and VIDEO_IMGSZ < PHOTO_IMGSZ


def test_failed_onnx_export_falls_back_to_torch_not_haar(
    stand_in: Path, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> Path:
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr("fer_core.export.detector_onnx_path", broken)
    with pytest.warns(RuntimeWarning, match="exporter exploded"):
        detector = FaceDetector(weights=stand_in, imgsz=160, runtime="onnxruntime", conf=0.0)
    assert (detector.backend, detector.runtime) == ("yolo", "torch")
    assert detector.warning is None and "PyTorch" in (detector.runtime_warning or "")
    assert isinstance(detector.detect(astronaut), list)


def test_cached_export_loads_without_ultralytics_model(stand_in: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FaceDetector(weights=stand_in, imgsz=160, runtime="onnxruntime")  # builds the cache entry
    monkeypatch.setattr(detection, "import_ultralytics", lambda: pytest.fail("ultralytics loaded despite the cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detector = FaceDetector(weights=stand_in, imgsz=160, runtime="onnxruntime")
    assert detector.runtime == "onnxruntime" and detector._yolo is None


def test_a_damaged_cached_export_is_exported_again(
    stand_in: Path, astronaut: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    """A cut-short cached detector export ran detection on PyTorch, with a warning, on every start until deleted."""
    from fer_core.export import detector_onnx_path

    FaceDetector(weights=stand_in, imgsz=160, runtime="onnxruntime")  # builds the cache entry
    cached = detector_onnx_path(stand_in, 160)
    os.truncate(cached, cached.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="fer_core.export"), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to PyTorch, which warns so
        detector = FaceDetector(weights=stand_in, imgsz=160, runtime="onnxruntime", conf=0.0)
    assert "onnxruntime cannot load this ONNX file" in caplog.text and "exporting" in caplog.text
    assert detector.runtime == "onnxruntime" and isinstance(detector.detect(astronaut), list)
