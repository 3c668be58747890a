"""Face detector: Haar on a real face photo, YOLO loading and fallback, offline guarantee, and the batch CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata

from fer_core import cli, detect_faces
from fer_core.detection import FaceBox, FaceDetector, fuse_views, haar_scores, import_ultralytics, reading_order
from fer_core.wider_eval import read_wider_results

REPO = Path(__file__).resolve().parents[1]
#: The astronaut's face in skimage.data.astronaut(), checked by eye: forehead/hairline to chin, ear to ear.
ASTRONAUT_FACE = (175.0, 62.0, 272.0, 165.0)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def untrained_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ultralytics checkpoint, built from yolo11n.yaml (no download) and saved by us."""
    path = tmp_path_factory.mktemp("weights") / "untrained.pt"
    import_ultralytics().YOLO("yolo11n.yaml").save(str(path))
    return path


def test_facebox_properties() -> None:
    box = FaceBox(10.2, 20.7, 30.5, 60.0, 0.9)
    assert box.width == pytest.approx(20.3) and box.height == pytest.approx(39.3)
    assert box.area == pytest.approx(20.3 * 39.3)
    assert box.as_int() == (10, 20, 31, 60)


def test_haar_finds_the_astronaut_face(astronaut: np.ndarray) -> None:
    detector = FaceDetector(backend="haar")
    assert detector.backend == "haar" and detector.warning is None
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert iou(face[:4], ASTRONAUT_FACE) > 0.6
    assert 0.5 < face.score <= 1.0
    assert all(isinstance(v, float) for v in face)


@pytest.mark.parametrize("corner", [(256, 176), (400, 60), (20, 20)])
def test_haar_finds_a_webcam_sized_face_on_a_flat_background(astronaut: np.ndarray, corner: tuple[int, int]) -> None:
    """A head cut from the astronaut, its face about 70 px, on a plain grey 640x480 frame (a webcam against a wall):
    with the grey image histogram-equalised first, the cascade found nothing at the first two places."""
    head = cv2.resize(astronaut[27:200, 137:310], (127, 127), interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 128, np.uint8)
    x, y = corner
    frame[y : y + 127, x : x + 127] = head
    face = tuple((np.asarray(ASTRONAUT_FACE) - [137, 27, 137, 27]) * 127 / 173 + [x, y, x, y])
    found = FaceDetector(backend="haar", min_face=32).detect(frame)  # the Webcam page's default size
    assert [iou(f[:4], face) >= 0.5 for f in found] == [True], found


def test_detect_contract(astronaut: np.ndarray) -> None:
    detector = FaceDetector(backend="haar", conf=0.0, min_face=16, max_faces=2)
    faces = detector.detect(astronaut)
    assert 1 <= len(faces) <= 2
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    h, w = astronaut.shape[:2]
    assert all(0 <= f.x1 < f.x2 <= w and 0 <= f.y1 < f.y2 <= h for f in faces)
    assert FaceDetector(backend="haar", min_face=200).detect(astronaut) == []
    assert FaceDetector(backend="haar").detect(np.zeros((64, 64, 3), np.uint8)) == []
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    assert len(detector.detect(gray)) >= 1  # gray and RGBA are accepted too
    assert len(detector.detect(np.dstack([astronaut, np.full(gray.shape, 255, np.uint8)]))) >= 1
    with pytest.raises(TypeError):
        detector.detect(astronaut.astype(np.float32))
    with pytest.raises(ValueError):
        FaceDetector(backend="mtcnn")


def test_detections_are_clipped_filtered_sorted_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract both backends share, on raw detections whose fate is known: Haar finds only one face on the
    astronaut, which leaves sorting and the cap untested there."""
    raw_boxes = np.array(
        [
            [10, 10, 50, 50],  # kept, 3rd best: cut by max_faces=2
            [-8, 20, 40, 70],  # kept, best; clipped to the image
            [60, 5, 70, 15],  # 10 px: under min_face
            [5, 40, 45, 80],  # kept, 2nd best
            [20, 20, 60, 60],  # under conf
        ],
        dtype=np.float64,
    )
    raw_scores = np.array([0.6, 0.95, 0.99, 0.8, 0.2])
    detector = FaceDetector(backend="haar", conf=0.3, min_face=16, max_faces=2)
    monkeypatch.setattr(detector, "_detect_haar", lambda rgb, min_face: (raw_boxes, raw_scores))
    faces = detector.detect(np.zeros((64, 96, 3), np.uint8))
    assert [tuple(f) for f in faces] == [(0.0, 20.0, 40.0, 64.0, 0.95), (5.0, 40.0, 45.0, 64.0, 0.8)]
    detector.max_faces = 10
    assert [f.score for f in detector.detect(np.zeros((64, 96, 3), np.uint8))] == [0.95, 0.8, 0.6]


def test_haar_scores_are_a_monotone_map_into_unit_interval() -> None:
    scores = haar_scores(np.array([-50.0, -2.0, 0.0, 2.5, 6.0, 50.0]))
    assert np.all(np.diff(scores) > 0) and scores[0] >= 0 and scores[-1] <= 1
    assert scores[3] == pytest.approx(0.5)


def test_missing_weights_fall_back_to_haar_with_a_warning(tmp_path: Path, astronaut: np.ndarray) -> None:
    with pytest.warns(RuntimeWarning, match="Haar"):
        detector = FaceDetector(backend="auto", weights=tmp_path / "nope.pt")
    assert detector.backend == "haar"
    assert detector.warning is not None and "nope.pt" in detector.warning
    assert len(detector.detect(astronaut)) == 1
    with pytest.warns(RuntimeWarning):
        assert FaceDetector(backend="yolo", weights=tmp_path / "nope.pt").backend == "haar"


def test_corrupt_weights_fall_back_to_haar_with_a_warning(tmp_path: Path) -> None:
    corrupt = tmp_path / "face_yolo.pt"
    corrupt.write_bytes(os.urandom(4096))
    with pytest.warns(RuntimeWarning, match="falling back"):
        detector = FaceDetector(backend="auto", weights=corrupt)
    assert detector.backend == "haar" and "face_yolo.pt" in (detector.warning or "")


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_truncated_weights_are_called_damaged_on_one_line(
    untrained_weights: Path, tmp_path: Path, runtime: str
) -> None:
    """A .pt cut short (a copy that stopped part-way) was refused in ultralytics' two lines, which end by advising
    an official model (a download); now in the words the classifier checkpoints use."""
    truncated = tmp_path / "face_yolo.pt"
    truncated.write_bytes(untrained_weights.read_bytes()[:100_000])
    with pytest.warns(RuntimeWarning, match="falling back"):
        detector = FaceDetector(backend="auto", weights=truncated, runtime=runtime)
    problem = detector.yolo_problem or ""
    assert detector.backend == "haar" and "\n" not in problem
    assert "looks like a torch.save archive but cannot be read (damaged or truncated?: PytorchStreamReader" in problem


class _RunsCodeWhenUnpickled:
    """What a hostile .pt holds: unpickling it calls a function of the attacker's choice (here: create a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_a_planted_detector_file_is_never_unpickled_in_full(tmp_path: Path, runtime: str) -> None:
    marker = tmp_path / "code_ran"
    planted = tmp_path / "face_yolo.pt"
    torch.save({"model": _RunsCodeWhenUnpickled(marker)}, planted)
    with pytest.warns(RuntimeWarning, match="falling back"):
        detector = FaceDetector(backend="auto", weights=planted, runtime=runtime)
    assert detector.backend == "haar"
    assert not marker.exists()


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_multi_scale_detection_keeps_faces_every_pass_finds(runtime: str) -> None:
    """The threshold applies once, to the fused score: applied inside each pass too, a face just under it in one
    view counted as missing there, and five faces that every view found (at 0.59-0.83) all vanished at 0.7."""
    from fer_core.bench import synthetic_frame

    frame, _ = synthetic_frame(5)
    small = cv2.resize(frame, None, fx=0.33, fy=0.33, interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    plain = FaceDetector(backend="yolo", weights=SHIPPED_DETECTOR, runtime=runtime, conf=0.7).detect(canvas)
    fused = FaceDetector(backend="yolo", weights=SHIPPED_DETECTOR, runtime=runtime, conf=0.7, tta=True).detect(canvas)
    assert len(plain) == 5 and len(fused) == 5


def test_gray_images_with_a_channel_axis_are_accepted(astronaut: np.ndarray) -> None:
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    detector = FaceDetector(backend="haar")
    assert detector.detect(gray[:, :, None]) == detector.detect(gray) != []
    for empty in ((0, 0), (0, 7), (5, 0, 1), (0, 0, 3)):  # no faces, as an empty colour image always gave
        assert detector.detect(np.zeros(empty, np.uint8)) == []


def test_the_pipeline_classifies_faces_of_a_gray_image_with_a_channel_axis(
    astronaut: np.ndarray, fake_weights: Path
) -> None:
    """The detector took HxWx1, then the crop's grey conversion raised (OpenCV wants 3 or 4 channels)."""
    from fer_core.pipeline import Pipeline

    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    pipe = Pipeline.load(fake_weights, runtime="torch", detector_backend="haar")
    flat, with_axis = pipe.analyse(gray), pipe.analyse(gray[:, :, None])
    assert len(with_axis.faces) == len(flat.faces) >= 1
    assert with_axis.faces[0].probs == pytest.approx(flat.faces[0].probs)


def box_at(cx: float, cy: float, size: float, score: float = 0.9) -> FaceBox:
    return FaceBox(cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2, score)


def test_reading_order_numbers_rows_from_the_top_each_left_to_right() -> None:
    """A 4x4 group whose heads sit up to a quarter of a face off their row's line, given in a scrambled order; a
    sloped row, and one of heads alternately a fifth of a face up and down (the first rule, level with the row's
    highest face, split both: a review's finding); then a near face three times as tall beside two far ones, and a
    face well below them."""
    rng = np.random.default_rng(0)
    grid = [box_at(100 + 80 * col, 100 + 90 * row + rng.uniform(-15, 15), 60) for row in range(4) for col in range(4)]
    scrambled = [grid[i] for i in rng.permutation(len(grid))]
    assert reading_order(scrambled) == grid

    sloped = [box_at(100 + 70 * i, 300 - 5 * i, 60) for i in range(8)]  # a row rising 5 px a face, about 4 degrees
    assert reading_order(sloped[::-1]) == sloped  # the highest face (the rightmost) came first, numbered #1
    uneven = [box_at(100 + 70 * i, 300 + (12 if i % 2 else -12), 60) for i in range(8)]  # 2/5 of a face apart
    assert reading_order(uneven) == uneven

    far_left, near, far_right = box_at(100, 100, 40), box_at(200, 150, 120), box_at(300, 95, 40)
    below = box_at(150, 260, 40)
    assert reading_order([below, near, far_right, far_left]) == [far_left, near, far_right, below]
    assert reading_order([]) == []


class ScoreOrderDetector:
    """The detector's contract: best first; here the right-hand face is the surer one."""

    max_faces = 10

    def __init__(self, boxes: list[FaceBox]) -> None:
        self.boxes = boxes

    def detect(self, image_rgb: np.ndarray, file_size: tuple[int, int] | None = None) -> list[FaceBox]:
        return self.boxes


def test_the_pipeline_numbers_detected_faces_in_reading_order(astronaut: np.ndarray, fake_weights: Path) -> None:
    """Face #1 in the app and the CSV is the left one, not the one the detector was surer of; boxes handed in (as
    the trackers do) keep their order."""
    from fer_core.ensemble import Ensemble
    from fer_core.pipeline import Pipeline

    right, left = box_at(350, 150, 100, 0.95), box_at(150, 150, 100, 0.6)
    pipe = Pipeline(ScoreOrderDetector([right, left]), Ensemble.load(fake_weights))  # type: ignore[arg-type]
    assert [f.score for f in pipe(astronaut).faces] == [0.6, 0.95]
    assert [f.score for f in pipe.analyse(astronaut, [right, left]).faces] == [0.95, 0.6]


def test_haar_backend_never_warns(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FaceDetector(backend="haar", weights=tmp_path / "nope.pt")


def test_yolo_backend_with_real_untrained_weights(
    untrained_weights: Path, astronaut: np.ndarray, no_network: list[str]
) -> None:
    detector = FaceDetector(backend="auto", weights=untrained_weights, conf=0.0, min_face=0, imgsz=160)
    assert detector.backend == "yolo" and detector.warning is None
    faces = detector.detect(astronaut)
    assert isinstance(faces, list)
    assert all(type(f) is FaceBox and all(type(v) is float for v in f) for f in faces)  # no ultralytics types
    h, w = astronaut.shape[:2]
    assert all(0 <= f.x1 <= f.x2 <= w and 0 <= f.y1 <= f.y2 <= h for f in faces)
    assert no_network == []


def test_no_network_from_import_to_detection(untrained_weights: Path, tmp_path: Path) -> None:
    """A fresh interpreter, so ultralytics' import-time probes run under the guard too."""
    script = textwrap.dedent(
        f"""
        import socket
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(repr(args[:2]))
            raise OSError("network disabled")
        socket.socket.connect = socket.socket.connect_ex = refuse
        socket.getaddrinfo = socket.create_connection = refuse
        import numpy as np
        from fer_core.detection import FaceDetector
        img = np.zeros((96, 128, 3), np.uint8)
        for backend in ("auto", "haar"):
            FaceDetector(backend=backend, weights={str(untrained_weights)!r}, imgsz=64).detect(img)
        assert FaceDetector(weights={str(untrained_weights)!r}).backend == "yolo"
        print("ATTEMPTS", attempts)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "YOLO_CONFIG_DIR": str(tmp_path / "cfg"), "OMP_NUM_THREADS": "1"}
    env.pop("YOLO_OFFLINE", None)
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ATTEMPTS []" in run.stdout, run.stdout


def test_the_tools_print_a_fallback_once_as_one_warning_line(tmp_path: Path, astronaut: np.ndarray) -> None:
    """`detect_faces` printed the Haar fallback twice (Python's warning, then its own line), and `predict` only as
    Python's `.../pipeline.py:140: RuntimeWarning: ...` followed by a line of our source."""
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    argv = [str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--weights", str(tmp_path / "missing.pt")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "fer_core.detect_faces", *argv, "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: YOLO face weights unusable ("), run.stderr


def test_detect_faces_cli_writes_wider_results(
    tmp_path: Path, astronaut: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "images"
    (root / "0--Event").mkdir(parents=True)
    cv2.imwrite(str(root / "0--Event" / "astro.jpg"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "blank.png"), np.zeros((40, 50, 3), np.uint8))
    (root / "0--Event" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert detect_faces.main([str(root), "--out", str(out), "--backend", "haar", "--no-progress"]) == 1  # broken.jpg
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "images/s" in captured.out
    lines = (out / "0--Event" / "astro.txt").read_text().splitlines()
    assert lines[0] == "astro" and int(lines[1]) == len(lines) - 2 >= 1
    results = read_wider_results(out)
    assert set(results) == {"0--Event/astro", "blank"}
    x, y, w, h, score = results["0--Event/astro"][0]
    assert iou((x, y, x + w, y + h), ASTRONAUT_FACE) > 0.6 and 0 < score <= 1
    assert results["blank"].shape == (0, 5)
    assert not (out / "0--Event" / "broken.txt").exists()


def test_detect_faces_writes_a_name_that_is_not_utf8_as_escapes(tmp_path: Path, astronaut: np.ndarray) -> None:
    """The result file's first line (the image's name) raised UnicodeEncodeError and ended the run there."""
    root = tmp_path / "images"
    root.mkdir()
    name = os.fsdecode(b"astro_caf\xe9")  # a Latin-1 name on a UTF-8 system
    try:
        (root / f"{name}.jpg").write_bytes(cv2.imencode(".jpg", astronaut[:, :, ::-1])[1].tobytes())
    except OSError:
        pytest.skip("this file system keeps only UTF-8 names")
    out = tmp_path / "out"
    assert detect_faces.main([str(root), "--out", str(out), "--backend", "haar", "--no-progress"]) == 0
    assert (out / f"{name}.txt").read_text(encoding="utf-8").splitlines()[0] == "astro_caf\\xe9"


def test_detect_faces_counts_a_folder_it_cannot_list_and_forgets_its_old_results(
    tmp_path: Path, astronaut: np.ndarray, deny_listing: Callable[[Path], None]
) -> None:
    """Only a warning said the folder was left out: exit 0, and an earlier run's results for it stayed to be
    scored as this run's."""
    root, out = tmp_path / "images", tmp_path / "out"
    (root / "locked").mkdir(parents=True)
    cv2.imwrite(str(root / "astro.jpg"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "locked" / "astro.jpg"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    assert detect_faces.main([str(root), "--out", str(out), "--backend", "haar", "--no-progress"]) == 0
    assert (out / "locked" / "astro.txt").is_file()
    deny_listing(root / "locked")
    assert detect_faces.main([str(root), "--out", str(out), "--backend", "haar", "--no-progress"]) == 1
    assert (out / "astro.txt").is_file() and not (out / "locked" / "astro.txt").exists()


def test_detect_faces_reads_images_as_the_app_does(
    tmp_path: Path, astronaut: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    """OpenCV's imread filled a cut JPEG in and scored it as whole, a list of its own passed over `.jfif` and read
    hidden files, an earlier run's result stayed for an image now unreadable, and a huge photo had no pixel limit."""
    root, out = tmp_path / "images", tmp_path / "out"
    root.mkdir()
    bgr = cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(root / "astro.jfif.jpg"), bgr)
    (root / "astro.jfif.jpg").rename(root / "astro.jfif")
    whole = cv2.imencode(".jpg", bgr)[1].tobytes()
    (root / "cut.jpg").write_bytes(whole[: len(whole) // 3])
    (root / ".hidden.jpg").write_bytes(b"macOS resource fork")
    wide = np.zeros((1000, 8400, 3), np.uint8)  # over 4096 px: analysed shrunk, reported in the file's pixels
    wide[200:712, 6000:6512] = bgr
    cv2.imwrite(str(root / "wide.png"), wide)
    out.mkdir()
    (out / "cut.txt").write_text("cut\n1\n1 1 50 50 0.9\n")  # from a run when cut.jpg was whole
    assert detect_faces.main([str(root), "--out", str(out), "--backend", "haar", "--no-progress"]) == 1
    assert "cut.jpg: the image is truncated" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["astro.txt", "wide.txt"]
    results = read_wider_results(out)
    assert len(results["astro"]) >= 1
    x, y, w, h, _ = max(results["wide"], key=lambda row: row[4])
    shifted = (ASTRONAUT_FACE[0] + 6000, ASTRONAUT_FACE[1] + 200, ASTRONAUT_FACE[2] + 6000, ASTRONAUT_FACE[3] + 200)
    assert iou((x, y, x + w, y + h), shifted) > 0.5


def test_the_smallest_face_side_is_meant_in_the_files_pixels(
    tmp_path: Path, astronaut: np.ndarray, fake_weights: Path
) -> None:
    """A photo over 4096 px is analysed shrunk, and the minimum face size applied to the shrunk copy: a 200 px face
    in an 8400 px photo is about 97 px there, so a 150 px limit dropped it in the app, `predict` and
    `detect_faces`."""
    from fer_core.ensemble import Ensemble
    from fer_core.imageio import load_image_sized
    from fer_core.pipeline import Pipeline

    wide = np.zeros((1200, 8400, 3), np.uint8)
    wide[50:1074, 6000:7024] = cv2.resize(astronaut, (1024, 1024))  # the face: about 200 px
    path = tmp_path / "images" / "wide.png"
    path.parent.mkdir()
    cv2.imwrite(str(path), cv2.cvtColor(wide, cv2.COLOR_RGB2BGR))
    image, file_size = load_image_sized(path)
    assert image.shape[1] == 4096 and file_size == (8400, 1200)
    ensemble = Ensemble.load(fake_weights)
    for limit, found in ((150, 1), (300, 0)):  # a 300 px limit still drops the 200 px face
        pipe = Pipeline(FaceDetector(backend="haar", min_face=limit, max_faces=1), ensemble)
        assert len(pipe(image, file_size).faces) == found, limit
        out = tmp_path / f"out{limit}"
        argv = [str(path.parent), "--out", str(out), "--backend", "haar", "--no-progress", "--min-face", str(limit)]
        assert detect_faces.main([*argv, "--max-faces", "1"]) == 0
        assert len(read_wider_results(out)["wide"]) == found, limit
    assert len(Pipeline(FaceDetector(backend="haar", min_face=150, max_faces=1), ensemble)(image).faces) == 0


def test_detect_faces_refuses_an_unknown_device_and_says_when_a_gpu_is_not_used(
    tmp_path: Path, astronaut: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--device foo` and `--device 0` without a GPU ran on the CPU without a word."""
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    argv = [str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--backend", "haar", "--no-progress"]
    with pytest.raises(SystemExit) as done:
        detect_faces.main([*argv, "--device", "foo"])
    assert done.value.code == 2 and "'foo': expected cpu, cuda, cuda:N, or GPU numbers" in capsys.readouterr().err
    assert detect_faces.main([*argv, "--device", "0"]) == 0  # the Haar cascade never runs on a GPU
    assert "warning: --device 0: the Haar cascade runs on the CPU" in capsys.readouterr().err
    assert detect_faces.main([*argv, "--device", "CPU"]) == 0  # as ultralytics takes it
    assert "warning" not in capsys.readouterr().err


def test_detect_faces_refuses_a_result_path_it_cannot_write_before_any_image(
    tmp_path: Path, astronaut: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder where a result file goes, or a file where its folder goes, stopped the run at that image with the
    ones before it written and the rest not ("could not write the results (File exists)")."""
    for name in ("ev/a.jpg", "ev/b.jpg"):
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "images" / name), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    argv = [str(tmp_path / "images"), "--out", str(out), "--backend", "haar", "--no-progress"]
    (out / "ev" / "b.txt").mkdir(parents=True)
    with pytest.raises(SystemExit) as done:
        detect_faces.main(argv)
    assert done.value.code == 2 and "ev/b.txt is a folder, where a result file goes" in capsys.readouterr().err
    assert not (out / "ev" / "a.txt").exists()  # refused before the first image
    shutil.rmtree(out / "ev")
    (out / "ev").write_text("not a folder")
    with pytest.raises(SystemExit) as done:
        detect_faces.main(argv)
    assert done.value.code == 2 and "ev is a file, where a folder of results goes" in capsys.readouterr().err


def test_a_result_folder_that_cannot_be_searched_is_named_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """is_dir() raises PermissionError for a folder a user may not search (root may search any, hence the stand-in):
    the up-front checks of the result paths and of --out's names ended in a traceback there (a review's finding)."""
    from fer_core import cli

    def refused(self: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_dir", refused)
    problem = detect_faces.blocked_result(tmp_path, [tmp_path / "ev" / "a.txt"])
    assert problem == f"cannot check where the results go (Permission denied: {tmp_path / 'ev' / 'a.txt'})"
    with pytest.raises(cli.UserInputError, match=r"--out .*: cannot look inside \(Permission denied\)"):
        cli.prepare_out_folder(tmp_path / "out", ["metrics.json"])


def test_detect_faces_cli_refuses_no_images_bad_settings_and_haar_boxes_when_yolo_was_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "images").mkdir()
    argv = [str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--no-progress"]
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: detect_faces.main(argv))
    err = capsys.readouterr().err
    assert done.value.code == 2 and "no images under" in err and "usage:" not in err  # one line, as for any input
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: detect_faces.main([str(tmp_path / "absent"), *argv[1:]]))
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.endswith(f"error: {tmp_path / 'absent'}: not a folder\n"), err
    assert "usage:" not in err
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(SystemExit) as done:
        detect_faces.main([*argv, "--backend", "haar", "--conf", "2"])
    assert done.value.code == 2 and "conf" in capsys.readouterr().err
    for iou_value in ("-0.1", "1.5"):  # OpenCV's NMS asserted on the first image; above 1 kept every duplicate
        with pytest.raises(SystemExit) as done:
            detect_faces.main([*argv, "--backend", "haar", f"--iou={iou_value}"])
        assert done.value.code == 2 and f"iou must be in [0, 1], got {iou_value}" in capsys.readouterr().err
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((40, 50, 3), np.uint8))  # a.png's result file too
    with pytest.raises(SystemExit) as done:
        detect_faces.main([*argv, "--backend", "haar"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "1 result file(s) would be written twice, for a." in err and "a.jpg" in err
    (tmp_path / "images" / "a.jpg").unlink()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "YOLO face weights unusable")  # it said "falling back to Haar", then refused
        with pytest.raises(SystemExit) as done:
            detect_faces.main([*argv, "--backend", "yolo", "--weights", str(tmp_path / "missing.pt")])
    assert done.value.code == 2 and "--backend yolo: its weights are unusable" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_detector_input_size_is_bounded_above_as_below(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--imgsz 99999 passed, and OpenCV's letterbox asked for 22 GB (an "Insufficient memory" traceback, or the
    run was killed); any imgsz over the 4096 px photos are analysed at is refused where the 32 px floor is."""
    for imgsz in (31, 4097, 99999):
        with pytest.raises(ValueError, match=f"imgsz must be from 32 to 4096 px, got {imgsz}"):
            FaceDetector(backend="haar", imgsz=imgsz)
    assert FaceDetector(backend="haar", imgsz=4096).imgsz == 4096
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(SystemExit) as done:
        detect_faces.main([str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--imgsz", "99999"])
    assert done.value.code == 2 and "argument --imgsz: 99999: must be from 32 to 4096 px" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


SHIPPED_DETECTOR = REPO / "weights" / "face_yolo.pt"


@pytest.mark.skipif(not SHIPPED_DETECTOR.is_file(), reason="no shipped weights/face_yolo.pt")
@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_shipped_yolo_finds_the_astronaut_face(
    runtime: str, tta: bool, astronaut: np.ndarray, no_network: list[str]
) -> None:
    detector = FaceDetector(backend="yolo", weights=SHIPPED_DETECTOR, runtime=runtime, tta=tta)
    assert detector.backend == "yolo" and detector.warning is None
    faces = detector.detect(astronaut)
    assert len(faces) == 1, faces
    assert iou(tuple(faces[0])[:4], ASTRONAUT_FACE) > 0.5 and faces[0].score > 0.5
    assert no_network == []


def test_fuse_views_merges_agreeing_boxes_and_discounts_lonely_ones() -> None:
    face, other = np.array([[10.0, 10.0, 50.0, 60.0]]), np.array([[70.0, 5.0, 90.0, 30.0]])
    views = [(face, np.array([0.9])), (face + 2.0, np.array([0.7])), (other, np.array([0.8])), (np.zeros((0, 4)), [])]
    boxes, scores = fuse_views(views, width=100, height=80, iou=0.55)  # type: ignore[arg-type]
    assert len(boxes) == 2
    np.testing.assert_allclose(scores, [(0.9 + 0.7) / 4, 0.8 / 4])  # mean score x share of the 4 views
    np.testing.assert_allclose(boxes[0], (0.9 * face[0] + 0.7 * (face[0] + 2.0)) / 1.6)  # score-weighted mean
    np.testing.assert_allclose(boxes[1], other[0])
    clipped, _ = fuse_views([(np.array([[-5.0, 0.0, 40.0, 90.0]]), np.array([0.5]))], width=100, height=80, iou=0.55)
    np.testing.assert_allclose(clipped, [[0.0, 0.0, 40.0, 80.0]])
    empty, no_scores = fuse_views([(np.array([[5.0, 5.0, 5.0, 9.0]]), np.array([0.9]))], width=100, height=80, iou=0.5)
    assert empty.shape == (0, 4) and no_scores.shape == (0,)


def test_ultralytics_leaves_pillow_errors_alone() -> None:
    """ultralytics patches PIL.Image.open to chase a HEIF plugin on unknown files: Pillow's own error must remain."""
    import io

    from PIL import Image, UnidentifiedImageError

    import_ultralytics()
    import ultralytics.utils.patches  # noqa: F401  (the module that installs the patch)

    import_ultralytics()
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(b"hello world"))


def test_the_pipeline_takes_any_pixel_type_with_given_boxes(astronaut: np.ndarray, fake_weights: Path) -> None:
    """analyse(boxes=...) converted to gray before scaling, so a float64 or int64 image met an OpenCV assertion."""
    from fer_core.pipeline import Pipeline

    pipe = Pipeline.load(fake_weights, runtime="torch", detector_backend="haar")
    boxes = pipe.detect(astronaut)
    expected = pipe.analyse(astronaut, boxes)
    for image in (astronaut / 255.0, astronaut.astype(np.int64), astronaut.astype(np.float16) / 255):
        got = pipe.analyse(image, boxes)
        assert [f.label for f in got.faces] == [f.label for f in expected.faces]
        assert got.faces[0].probs == pytest.approx(expected.faces[0].probs, abs=1e-3)


def test_detect_faces_makes_its_out_folder_before_the_first_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An --out mkdir cannot make (under /proc or /sys, where os.access lets root past) was a traceback, or one
    error line, only at the first image's result."""
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here for a folder mkdir cannot make")
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((40, 50, 3), np.uint8))
    monkeypatch.setattr(detect_faces.cli.os, "access", lambda path, mode: True)  # as for root
    monkeypatch.setattr(detect_faces, "run", lambda *args, **kwargs: pytest.fail("ran before checking --out"))
    with pytest.raises(detect_faces.cli.UserInputError, match="--out /proc/fer_core_out: cannot create the output"):
        detect_faces.main([str(tmp_path / "images"), "--out", "/proc/fer_core_out", "--backend", "haar"])


class RowsEnsemble:
    """A stand-in ensemble with fixed probabilities: row i of each model's array is crop i's."""

    def __init__(self, probs: dict[str, list[list[float]]]) -> None:
        self.members = [types.SimpleNamespace(config=types.SimpleNamespace(input_size=48))]
        self.probs = {name: np.asarray(rows, np.float32) for name, rows in probs.items()}

    def predict_batch(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {name: rows[: len(batch)] for name, rows in self.probs.items()}


def test_each_face_gets_the_ensemble_s_top_label_and_its_own_crop_s_box() -> None:
    """Face i is labelled by the ensemble's most likely class for crop i (not a member's, not the least likely), its
    confidence is that class's probability, and a crop handed in is reported by its own width and height."""
    from fer_core.pipeline import Pipeline

    happy = [0.05, 0.05, 0.05, 0.6, 0.1, 0.1, 0.05]  # angry disgust fear happy sad surprise neutral
    sad = [0.1, 0.02, 0.08, 0.1, 0.5, 0.1, 0.1]
    angry = [0.9, 0.0, 0.0, 0.05, 0.05, 0.0, 0.0]
    pipe = Pipeline(None, RowsEnsemble({"A": [angry, angry], "ensemble": [happy, sad]}))  # type: ignore[arg-type]
    faces = pipe.classify_crops([np.zeros((20, 30), np.uint8), np.zeros((40, 10, 3), np.uint8)])
    assert [f.box for f in faces] == [(0.0, 0.0, 30.0, 20.0), (0.0, 0.0, 10.0, 40.0)]  # x2 = width, y2 = height
    assert [(f.label, round(f.confidence, 4)) for f in faces] == [("happy", 0.6), ("sad", 0.5)]
    assert faces[0].probs == faces[0].model_probs["ensemble"] and faces[0].model_probs["A"]["angry"] > 0.89


def test_the_face_limit_is_reached_at_max_faces_not_past_it() -> None:
    """The "may hold more faces" warning is due once detection returned `max_faces` faces: it can find no more."""
    from fer_core.pipeline import Pipeline

    ensemble = RowsEnsemble({})
    pipe = Pipeline(FaceDetector(backend="haar", max_faces=3), ensemble)  # type: ignore[arg-type]
    assert pipe.at_face_limit(3) and not pipe.at_face_limit(2)
    assert not Pipeline(None, ensemble).at_face_limit(100)  # type: ignore[arg-type]


def test_a_result_is_rescaled_to_the_file_s_pixels_per_axis() -> None:
    """A photo analysed shrunk reports its boxes in the file's pixels; x scales with the width, y with the height."""
    from fer_core.pipeline import FaceResult, ImageResult

    face = FaceResult((10.0, 20.0, 30.0, 40.0), 0.9, "happy", 0.6, {}, {})
    result = ImageResult([face], 100, 50)
    scaled = result.in_pixels_of(200, 150)
    assert (scaled.width, scaled.height) == (200, 150)
    assert scaled.faces[0].box == (20.0, 60.0, 60.0, 120.0)
    assert result.in_pixels_of(100, 50) is result


def raw_detections(monkeypatch: pytest.MonkeyPatch, detector: FaceDetector, boxes: list[list[float]]) -> list[FaceBox]:
    """`detector.detect` on a blank 64x96 image whose raw detections are `boxes`, all scored 0.9."""
    raw = (np.asarray(boxes, np.float64), np.full(len(boxes), 0.9))
    monkeypatch.setattr(detector, "_detect_haar", lambda rgb, min_face: raw)
    return detector.detect(np.zeros((64, 96, 3), np.uint8))


def test_the_smallest_face_is_kept_and_a_thin_box_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """`min_face` is the smallest side kept (a 16 px face with `min_face=16` stays), and both sides must reach it: a
    box 40 px wide but 10 px tall is no face."""
    detector = FaceDetector(backend="haar", min_face=16)
    assert [f[:4] for f in raw_detections(monkeypatch, detector, [[0, 0, 16, 16]])] == [(0.0, 0.0, 16.0, 16.0)]
    assert raw_detections(monkeypatch, detector, [[0, 0, 40, 10], [0, 0, 10, 40]]) == []


def test_a_face_limit_under_one_is_refused() -> None:
    """`max_faces=0` would silently label nothing on every image."""
    with pytest.raises(ValueError, match="max_faces=0"):
        FaceDetector(backend="haar", max_faces=0)


def test_reading_order_within_a_row_goes_by_face_centres() -> None:
    """A near face whose box starts left of a far face's but whose centre is right of it comes second in the row."""
    far, near = box_at(100, 200, 40), box_at(130, 200, 120)
    assert far.x1 > near.x1 and reading_order([near, far]) == [far, near]


def test_a_small_face_just_under_a_big_one_joins_the_big_one_s_row() -> None:
    """How far a face may sit from its row scales with the row's faces too: a small far face beside a near one, its
    centre a third of the near face's height lower, is in the near face's row (left of it), not a row of its own."""
    near, far = box_at(200, 150, 120), box_at(100, 190, 40)
    assert reading_order([near, far]) == [far, near]


def test_yolo_asked_for_by_name_and_loaded_is_not_refused() -> None:
    """`--backend yolo` (or `--detector yolo`) with working weights runs; only the Haar cascade loaded in YOLO's place
    is refused, and `auto` accepts that fallback."""
    from fer_core.detection import refusal_of_fallback

    yolo = types.SimpleNamespace(backend="yolo", yolo_problem=None)
    haar = types.SimpleNamespace(backend="haar", yolo_problem="w.pt: bad")
    assert refusal_of_fallback("yolo", yolo) is None  # type: ignore[arg-type]
    assert refusal_of_fallback("auto", haar) is None  # type: ignore[arg-type]
    assert "its weights are unusable (w.pt: bad)" in (refusal_of_fallback("yolo", haar) or "")  # type: ignore[arg-type]
