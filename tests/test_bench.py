"""The benchmark: its frames hold real faces, its arithmetic is right, and the CLI writes the documented JSON."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from fer_core import bench, bench_train, cli, export, onnx_session
from fer_core.bench import FRAME_HEIGHT, FRAME_WIDTH, STAGES, synthetic_frame, time_frame
from fer_core.detection import FaceDetector
from fer_core.models import ModelConfig
from fer_core.pipeline import Box, crop_faces, square_crop_box


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("n_faces", [1, 5])
def test_synthetic_frames_hold_real_faces_where_they_say(n_faces: int) -> None:
    frame, boxes = synthetic_frame(n_faces)
    again, _ = synthetic_frame(n_faces)
    assert frame.shape == (FRAME_HEIGHT, FRAME_WIDTH, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame, again)  # deterministic: every machine times the same pixels
    assert len(boxes) == n_faces
    assert all(0 <= x1 < x2 <= FRAME_WIDTH and 0 <= y1 < y2 <= FRAME_HEIGHT for x1, y1, x2, y2 in boxes)
    assert all(iou(a, b) == 0 for a, b in itertools.combinations(boxes, 2))
    found = FaceDetector(backend="haar").detect(frame)  # an independent detector agrees on every face
    assert len(found) == n_faces
    assert all(max(iou(box, f[:4]) for f in found) > 0.7 for box in boxes)
    with pytest.raises(ValueError):
        synthetic_frame(3)


def reference_crops(image: np.ndarray, boxes: list[Box], margin: float) -> list[np.ndarray]:
    """The original crop: pad the whole image, then cut (slow for big photos, but obviously right)."""
    height, width = image.shape[:2]
    crops = []
    for box in boxes:
        left, top, right, bottom = square_crop_box(box, margin)
        pad = max(0, -left, -top, right - width, bottom - height)
        source = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else image
        crops.append(source[top + pad : bottom + pad, left + pad : right + pad])
    return crops


def test_the_crop_is_the_square_around_the_face_grown_by_the_margin() -> None:
    """Worked by hand: a 20x40 box centred at (20, 40) with 10 % margin is a 48 px square centred there."""
    assert square_crop_box((10, 20, 30, 60), 0.1) == (-4, 16, 44, 64)
    image = np.arange(90 * 120, dtype=np.int32).reshape(90, 120)
    (crop,) = crop_faces(image, [(40.0, 30.0, 70.0, 60.0)], 0.0)
    np.testing.assert_array_equal(crop, image[30:60, 40:70])  # a square box, no margin: exactly its pixels
    (tall,) = crop_faces(image, [(40.0, 30.0, 50.0, 60.0)], 0.0)
    np.testing.assert_array_equal(tall, image[30:60, 30:60])  # a tall box widened about its centre


@pytest.mark.parametrize("channels", [1, 3])
def test_crop_faces_pads_only_the_crop_with_the_same_result(channels: int) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, channels) if channels == 3 else (90, 120), dtype=np.uint8)
    boxes = [
        (40.0, 30.0, 70.0, 60.0),  # inside
        (0.0, 0.0, 30.0, 40.0),  # top-left corner
        (100.0, 70.0, 120.0, 90.0),  # bottom-right corner
        (-5.0, 20.0, 125.0, 80.0),  # wider than the image
        (10.5, 80.2, 30.7, 89.9),  # bottom edge, fractional
        (200.0, 200.0, 230.0, 230.0),  # entirely outside
    ]
    for margin in (0.0, 0.1, 0.4):
        ours, expected = crop_faces(image, boxes, margin), reference_crops(image, boxes, margin)
        for got, want in zip(ours, expected, strict=True):
            assert got.shape == want.shape and np.array_equal(got, want)


class _Detector:
    def detect(self, frame: np.ndarray) -> list[object]:
        return ["face"]


class _Ensemble:
    def __init__(self) -> None:
        self.members = [SimpleNamespace(config=SimpleNamespace(input_size=48))]
        self.batches: list[tuple[int, ...]] = []

    def predict_batch(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.batches.append(batch.shape)
        return {}


def test_time_frame_arithmetic_with_a_fake_clock() -> None:
    frame, boxes = synthetic_frame(5)
    ticks = itertools.count(step=0.002)  # every stage takes exactly 2 ms
    ensemble = _Ensemble()
    row = time_frame(_Detector(), ensemble, frame, boxes, repeats=4, warmup=2, clock=lambda: next(ticks))  # type: ignore[arg-type]
    assert ensemble.batches == [(5, 1, 48, 48)] * 6  # one batched call per run, warm-up included
    assert row["stages_ms"]["detect"] == {"median": 2.0, "p90": 2.0}
    assert row["stages_ms"]["total"] == {"median": 6.0, "p90": 6.0}
    assert row["total_ms"] == 6.0 and row["fps"] == pytest.approx(1000 / 6, abs=0.01)
    assert row["faces_classified"] == 5 and row["faces_detected"] == 1


def scripted_clock(stage_ms: list[tuple[float, float, float]]) -> Callable[[], float]:
    """A clock read four times a run (before detect, after detect, preprocess and classify), so each run takes
    the given stage times."""
    readings, now = [], 0.0
    for durations in stage_ms:
        readings.append(now)
        for ms in durations:
            now += ms / 1000
            readings.append(now)
    return iter(readings).__next__


def test_warm_up_runs_are_left_out_and_percentiles_come_from_the_timed_runs() -> None:
    frame, boxes = synthetic_frame(5)
    warm_up = [(100.0, 50.0, 80.0)] * 2  # a first run's one-off costs: excluded
    timed = [(1.0, 0.5, 2.0), (2.0, 0.5, 2.0), (3.0, 0.5, 2.0), (4.0, 0.5, 2.0)]
    clock = scripted_clock(warm_up + timed)
    row = time_frame(_Detector(), _Ensemble(), frame, boxes, repeats=4, warmup=2, clock=clock)  # type: ignore[arg-type]
    assert row["stages_ms"]["detect"] == {"median": 2.5, "p90": 3.7}  # numpy's linear percentiles of 1, 2, 3, 4
    assert row["stages_ms"]["preprocess"] == {"median": 0.5, "p90": 0.5}
    assert row["stages_ms"]["classify"] == {"median": 2.0, "p90": 2.0}
    assert row["stages_ms"]["total"] == {"median": 5.0, "p90": 6.2}
    assert row["total_ms"] == 5.0 and row["fps"] == 200.0


@pytest.fixture
def restored_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`--threads` sets process-wide thread counts: put them back for the other tests."""
    monkeypatch.delenv(onnx_session.THREADS_ENV, raising=False)  # restored (or removed again) afterwards
    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(torch_threads)
    cv2.setNumThreads(cv2_threads)


def test_bench_cli_writes_the_documented_json(
    fake_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], restored_threads: None
) -> None:
    out = tmp_path / "bench.json"
    args = ["--json", str(out), "--weights", str(fake_weights), "--repeats", "2", "--warmup", "0", "--imgsz", "160"]
    assert bench.main([*args, "--backends", "onnxruntime", "torch", "haar", "--threads", "2"]) == 0
    printed = capsys.readouterr().out
    assert "untrained YOLO11n" in printed and "UNTRAINED" in printed and "onnxruntime" in printed
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"onnxruntime", "torch", "haar"}
    for by_faces in report["results"].values():
        assert set(by_faces) == {"faces_1", "faces_5"}
        for faces, row in by_faces.items():
            assert set(row["stages_ms"]) == set(STAGES)
            assert all(set(v) == {"median", "p90"} and 0 < v["median"] <= v["p90"] for v in row["stages_ms"].values())
            assert row["total_ms"] == row["stages_ms"]["total"]["median"] and row["fps"] > 0
            assert row["faces_classified"] == int(faces.removeprefix("faces_"))
    backends = report["backends"]
    assert backends["onnxruntime"]["detector_runtime"] == "onnxruntime"
    assert backends["torch"]["detector_runtime"] == "torch" and backends["torch"]["classifier_runtime"] == ["torch"]
    assert backends["haar"]["detector"] == "haar"
    detector = report["detector"]
    assert detector["trained"] is False and "untrained" in detector["note"] and detector["imgsz"] == 160
    assert detector["network_input_hw"] == [128, 160]  # 4:3 frame, padded only to the stride
    machine = report["machine"]
    assert {"cpu", "logical_cpus", "torch_threads", "onnxruntime_threads", "versions"} <= set(machine)
    assert {"torch", "onnxruntime", "opencv", "ultralytics"} <= set(machine["versions"])
    # --threads holds for every runtime to the end, although ultralytics resets torch's threads when it predicts.
    assert machine["torch_threads"] == machine["onnxruntime_threads"] == machine["opencv_threads"] == 2
    assert report["settings"]["repeats"] == 2 and report["settings"]["classifiers"] == ["A_crp", "B_mixcut"]
    assert report["settings"]["tta"] == "none"  # the live-video path, whatever ensemble.json says


def test_bench_never_times_a_fallback_under_the_row_it_asked_for(
    fake_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A detector file that does not load (Haar steps in) or an ONNX export that fails (PyTorch steps in) used to be
    timed and printed as the YOLO onnxruntime row."""
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_text("not a checkpoint")
    out = tmp_path / "bench.json"
    args = ["--json", str(out), "--weights", str(fake_weights), "--repeats", "1", "--warmup", "0", "--imgsz", "160"]
    with pytest.warns(RuntimeWarning, match="YOLO face weights unusable"):  # the fallback is announced
        assert bench.main([*args, "--detector", str(corrupt), "--backends", "onnxruntime", "haar"]) == 0
    printed = capsys.readouterr().out
    assert "onnxruntime  not timed: the yolo detector did not load" in printed
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"haar"} and "skipped" in report["backends"]["onnxruntime"]

    def no_export(*_: object) -> Path:
        raise RuntimeError("export failed")

    monkeypatch.setattr("fer_core.export.detector_onnx_path", no_export)
    with (
        pytest.raises(cli.UserInputError, match="no backend could be timed"),
        pytest.warns(RuntimeWarning, match="onnxruntime face detection unavailable"),
    ):
        bench.main([*args, "--backends", "onnxruntime"])
    assert "not timed: the detector runs on torch, not onnxruntime" in capsys.readouterr().out


def test_bench_cli_rejects_bad_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--json", str(tmp_path / "x.json"), "--repeats", "0"])
    with pytest.raises(SystemExit):  # it printed rows of 0.0 images/s
        bench_train.main(["--batch-size", "0"])
    monkeypatch.setenv(onnx_session.THREADS_ENV, "two")
    with pytest.raises(cli.UserInputError, match="FER_ORT_THREADS='two': give a whole number"):
        onnx_session.threads()
    monkeypatch.setenv(onnx_session.THREADS_ENV, "3")
    assert onnx_session.threads() == 3 and onnx_session.threads(1) == 1
    (a_file := tmp_path / "cache").write_text("")
    monkeypatch.setenv("FER_CACHE_DIR", str(a_file))
    with pytest.raises(cli.UserInputError, match="cache folder \\(FER_CACHE_DIR\\) lies at or under a file"):
        export.cache_dir()
    missing = tmp_path / "missing.pt"
    with pytest.raises(cli.UserInputError, match=f"^{missing}: no such detector checkpoint$"):  # as export says it
        bench.main(["--json", str(tmp_path / "x.json"), "--detector", str(missing)])


def test_bench_train_times_every_setting_against_the_first(tmp_path: Path) -> None:
    out = tmp_path / "train_steps.json"
    argv = ["--batch-size", "2", "--steps", "2", "--warmup", "0", "--stem-stride", "2", "--threads", "1"]
    bench_train.main([*argv, "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["warmup"] == 0
    rows = {row["setting"]: row for row in report["rows"]}
    assert list(rows) == [label for label, *_ in bench_train.SETTINGS]
    assert rows["NCHW fp32"]["speedup"] == 1.0
    for row in rows.values():
        assert row["seconds_per_step"] > 0
        assert row["images_per_second"] == pytest.approx(2 / row["seconds_per_step"])
        assert row["speedup"] == pytest.approx(rows["NCHW fp32"]["seconds_per_step"] / row["seconds_per_step"])


def test_bench_train_warm_up_steps_run_untimed(monkeypatch: pytest.MonkeyPatch) -> None:
    steps_taken = []
    original_step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: steps_taken.append(1) or original_step(self))  # type: ignore[func-returns-value]
    config = ModelConfig(stem_stride=2)
    seconds = bench_train.time_steps(config, batch_size=2, steps=2, channels_last=True, bf16=False, warmup=3)
    assert len(seconds) == 2 and len(steps_taken) == 5
    with pytest.raises(SystemExit):
        bench_train.main(["--steps", "0"])


def test_bench_refuses_a_detector_size_over_4096(
    fake_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--imgsz 99999 passed the 32 px floor and reached a detector that asked OpenCV for 22 GB."""
    args = ["--json", str(tmp_path / "bench.json"), "--weights", str(fake_weights), "--imgsz", "99999"]
    with pytest.raises(SystemExit) as stop:
        bench.main([*args, "--backends", "haar"])
    assert stop.value.code == 2 and "argument --imgsz: 99999: must be from 32 to 4096 px" in capsys.readouterr().err
