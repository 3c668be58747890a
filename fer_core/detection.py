"""Face detection for the app and the pipeline: a trained YOLO face model, with OpenCV's Haar cascade as fallback.

The app must work on a fresh checkout without our trained weights, so a missing or broken `weights/face_yolo.pt`
degrades to the Haar cascade shipped inside opencv-python (with a warning) instead of failing. Ultralytics is
imported lazily (it costs seconds) and is switched fully offline before import: nothing here may download
fonts, weights or update information at run time. No ultralytics type leaves this module.

The YOLO model runs on one of two runtimes, like the emotion classifiers: onnxruntime on CPU (an ONNX export built
on first use into the cache, see `fer_core.export.detector_onnx_path`) and PyTorch through ultralytics on CUDA.
`runtime="auto"` picks between them; the `runtime` attribute says which one is active.

The network input size is a speed/recall trade-off chosen per use: `PHOTO_IMGSZ` (the default) for still photos,
where small faces matter and a frame may take a while, and `VIDEO_IMGSZ` for live video and webcam frames, where
faces are usually large and latency decides.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import cv2
import numpy as np

from fer_core.cli import RUNTIMES  # "auto": onnxruntime on CPU, PyTorch (ultralytics) on CUDA
from fer_core.imageio import MAX_SIDE, over_white
from fer_core.yolo_onnx import OnnxYolo

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The face model's file name in a weights folder (beside `ensemble.ENSEMBLE_FILE` and the classifiers).
DETECTOR_FILE = "face_yolo.pt"
#: Where `train_detector` exports the face model and where the app looks for it.
DEFAULT_DETECTOR_WEIGHTS = REPO_ROOT / "weights" / DETECTOR_FILE
HAAR_CASCADE = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
BACKENDS = ("auto", "yolo", "haar")
#: Detector confidence under which a box is not a face, unless a user or page asks otherwise (every tool and page).
DEFAULT_CONF = 0.35
#: Detector input size for still photos: small faces in group shots need the resolution.
PHOTO_IMGSZ = 640
#: Detector input size for live video and webcam frames: about 4x fewer pixels than photos, for latency.
VIDEO_IMGSZ = 320
#: The detector input sizes (`imgsz`) a FaceDetector takes, so every tool and the app keep to them: YOLO's
#: coarsest stride is 32 px, and photos are analysed at most `MAX_SIDE` (4096) px on a side (`load_image` shrinks
#: larger ones), so a larger input would only upscale them; --imgsz 99999 asked OpenCV for a 22 GB letterbox.
MIN_IMGSZ = 32
MAX_IMGSZ = MAX_SIDE
#: Optional test-time augmentation (YOLO only): the image at these multiples of `imgsz`, each also mirrored, and
#: the six box sets merged by weighted box fusion. Chosen on half of the WIDER dev-val events, checked on the other
#: half; it costs about six detector passes, so it is for photos and evaluation, not live video.
TTA_SCALES = (0.75, 1.0, 1.25)
#: Boxes of different views overlapping this much (IoU) are one face.
TTA_FUSION_IOU = 0.55
#: Score floor of each multi-scale pass: the user's threshold applies once, to the fused score. Applied per pass
#: too, a face just under it in one view was counted as missing there and its fused score fell below the threshold
#: although every view had found it (all five faces of a test frame vanished at 0.7).
TTA_PASS_CONF = 0.01

#: Haar confidence = logistic((levelWeight - CENTER) / SCALE). `levelWeight` is the last-stage boosting sum that
#: OpenCV reports per detection (unbounded, roughly -2..10). On a WIDER val sample, windows matching a face had a
#: median weight of 5.7 and unmatched ones 2.4, so centring at 2.5 puts most true faces above 0.8 and most false
#: alarms below 0.5, which makes `conf` mean roughly the same for both backends.
HAAR_WEIGHT_CENTER = 2.5
HAAR_WEIGHT_SCALE = 1.5

#: Environment that keeps ultralytics from touching the network (DNS "online" probe at import, pip auto-install,
#: update checks, analytics) and quiet; it must be set before the first `import ultralytics`. ULTRALYTICS_SAFE_LOAD:
#: ultralytics otherwise unpickles a .pt in full (`weights_only=False`), so a `face_yolo.pt` planted in a
#: `--weights` folder could run code; with it, only its allow-list of model classes is rebuilt.
_ULTRALYTICS_ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "ULTRALYTICS_SAFE_LOAD": "1"}
#: Settings that would otherwise enable analytics/crash reports (`sync`) or third-party loggers during training.
_ULTRALYTICS_SETTINGS = {
    "sync": False,
    "clearml": False,
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
}
_import_lock = threading.Lock()


class FaceBox(NamedTuple):
    """One detected face in pixel coordinates of the input image (clipped to it); score in 0..1."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def as_int(self) -> tuple[int, int, int, int]:
        """Integer (x1, y1, x2, y2) for cropping/drawing; rounds outward so a crop keeps the whole face."""
        return math.floor(self.x1), math.floor(self.y1), math.ceil(self.x2), math.ceil(self.y2)


def reading_order(faces: Sequence[FaceBox]) -> list[FaceBox]:
    """The faces in rows from the top, each row left to right, so that a group photo's numbers read like text (in
    the detector's best-first order a 16-face photo's top row read #2, #13, #1, #14).

    Taken from the top by their centres, a face joins the row being built when its centre lies within half a face of
    the row's mean centre (half the larger of its own height and the row's median): heads of one row sit at uneven
    heights or along a slope, which the row's mean follows, and a near face beside far ones is much taller."""

    def centre(face: FaceBox) -> float:
        return (face.y1 + face.y2) / 2

    def level_with(row: list[FaceBox], face: FaceBox) -> bool:
        reach = max(face.height, float(np.median([f.height for f in row]))) / 2
        return centre(face) - float(np.mean([centre(f) for f in row])) <= reach

    rows: list[list[FaceBox]] = []
    for face in sorted(faces, key=centre):
        if rows and level_with(rows[-1], face):
            rows[-1].append(face)
        else:
            rows.append([face])
    return [face for row in rows for face in sorted(row, key=lambda f: (f.x1 + f.x2) / 2)]


def _config_dir() -> Path:
    """A private ultralytics config dir, so our offline settings never rewrite the user's global ones."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "fer_core"


def import_ultralytics() -> ModuleType:
    """Import ultralytics with every network path switched off; safe to call repeatedly and from threads.

    Env switches go in before the import (ultralytics reads them at import time); if someone imported it earlier,
    the module-level ONLINE flags and the analytics singleton are patched afterwards for the same effect.
    """
    with _import_lock:
        for key, value in _ULTRALYTICS_ENV.items():
            os.environ[key] = value
        os.environ.setdefault("YOLO_VERBOSE", "False")  # the app has its own logging; training turns it back on
        os.environ.setdefault("YOLO_CONFIG_DIR", str(_config_dir()))
        import ultralytics
        import ultralytics.utils as ul_utils
        import ultralytics.utils.checks as ul_checks
        import ultralytics.utils.events as ul_events
        from ultralytics.nn import tasks as ul_tasks

        ul_utils.SAFE_LOAD = ul_tasks.SAFE_LOAD = True  # read at import: an earlier import missed the variable
        ul_utils.ONLINE = False
        ul_checks.ONLINE = False
        ul_events.events.enabled = False
        _undo_pil_open_patch()
        settings = ul_utils.SETTINGS
        changes = {k: v for k, v in _ULTRALYTICS_SETTINGS.items() if k in settings and settings[k] != v}
        if changes:
            settings.update(changes)
        return ultralytics


def _undo_pil_open_patch() -> None:
    """ultralytics replaces `PIL.Image.open` process-wide with a wrapper that, on a file Pillow cannot identify, tries
    to install and import `pi_heif` (ModuleNotFoundError offline) instead of raising UnidentifiedImageError. That
    would turn every "not an image" upload after the detector loads into a crash: put Pillow's own function back
    (HEIC is handled by pillow-heif in `fer_core.imageio`)."""
    from PIL import Image

    patches = sys.modules.get("ultralytics.utils.patches")
    original = getattr(patches, "_image_open", None)
    if original is not None and Image.open is not original:
        Image.open = original


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Undo ultralytics' process-wide `torch.set_num_threads(cpu_count - 1)`, done whenever it selects a CPU device.

    Its predictor and exporter do that on first use, which would silently slow every other PyTorch model in the
    process (the classifiers on the torch runtime) and skew benchmarks that set threads on purpose.
    """
    import torch

    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def resolve_runtime(runtime: str, device: str | None) -> str:
    """Turn "auto" into a runtime: PyTorch only where it can use CUDA, onnxruntime (faster there) on CPU."""
    if runtime != "auto":
        return runtime
    if device is not None and not (str(device).startswith("cuda") or str(device)[:1].isdigit()):
        return "onnxruntime"  # "cpu", "mps": no need to import torch to decide
    import torch

    return "torch" if torch.cuda.is_available() else "onnxruntime"


def face_class(names: dict[int, str]) -> int | None:
    """The class to keep in a multi-class model that has a "face" class; None means every class is a face."""
    faces = [int(k) for k, v in names.items() if str(v).lower() == "face"]
    return faces[0] if faces and len(names) > 1 else None


def haar_scores(level_weights: np.ndarray | Sequence[float]) -> np.ndarray:
    """Map OpenCV's unbounded Haar level weights to 0..1 with the documented logistic."""
    w = np.asarray(level_weights, dtype=np.float64).reshape(-1)
    return 1.0 / (1.0 + np.exp(-(w - HAAR_WEIGHT_CENTER) / HAAR_WEIGHT_SCALE))


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """Accept the HxWx3 RGB uint8 contract, plus gray and RGBA, which callers hand us in practice."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):  # HxW or HxWx1 gray, as the classifier takes
        if image.size == 0:  # cvtColor asserts on it; an empty colour image already returns no faces
            return np.zeros((*image.shape[:2], 3), np.uint8)
        return cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])), cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return over_white(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")


def fuse_views(
    views: Sequence[tuple[np.ndarray, np.ndarray]], width: int, height: int, iou: float
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-view (xyxy boxes, scores) of one image by weighted box fusion (the `ensemble-boxes` package).

    A fused box is the score-weighted mean of the boxes it merges; its score is their mean score times the share
    of views that found it (capped at 1), so agreement across views ranks a face above one lucky view.
    """
    scale = np.array([width, height, width, height], dtype=np.float64)
    box_lists, score_lists, label_lists = [], [], []
    for boxes, scores in views:
        unit = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4) / scale, 0.0, 1.0)
        keep = (unit[:, 2] > unit[:, 0]) & (unit[:, 3] > unit[:, 1])  # the library warns about empty boxes
        box_lists.append(unit[keep])
        score_lists.append(np.asarray(scores, np.float64)[keep])
        label_lists.append(np.zeros(int(keep.sum())))
    if not any(len(s) for s in score_lists):
        return np.zeros((0, 4)), np.zeros(0)
    from ensemble_boxes import weighted_boxes_fusion

    fused, scores, _labels = weighted_boxes_fusion(box_lists, score_lists, label_lists, iou_thr=iou, conf_type="avg")
    return np.asarray(fused, np.float64) * scale, np.asarray(scores, np.float64)


class HaarFallbackWarning(RuntimeWarning):
    """The YOLO weights are unusable and the Haar cascade runs instead (`FaceDetector.warning`)."""


@contextlib.contextmanager
def fallback_unannounced_where_refused(requested: str | None) -> Iterator[None]:
    """Load a tool's detector within this: where YOLO was asked for by name, a fallback is refused
    (`refusal_of_fallback`), and the detector's "falling back to the OpenCV Haar cascade" warning printed first
    said the opposite of what the tool then did."""
    with warnings.catch_warnings():
        if requested == "yolo":
            warnings.simplefilter("ignore", HaarFallbackWarning)
        yield


def refusal_of_fallback(requested: str | None, detector: FaceDetector | None) -> str | None:
    """Why a tool must stop when YOLO was asked for by name but the Haar cascade was loaded in its place: its boxes
    would be a wrong answer to that request (`auto` accepts the fallback, with the detector's warning)."""
    if requested != "yolo" or detector is None or detector.backend == "yolo":
        return None
    return f"its weights are unusable ({detector.yolo_problem}), and the Haar cascade would not be what was asked for"


class FaceDetector:
    """Finds faces in RGB images; `backend` says which engine is in use and `warning` why it is not YOLO."""

    def __init__(
        self,
        backend: str = "auto",
        weights: str | Path | None = None,
        conf: float = DEFAULT_CONF,
        min_face: int = 16,
        max_faces: int = 100,
        imgsz: int = PHOTO_IMGSZ,
        iou: float = 0.5,
        device: str | None = None,
        runtime: str = "auto",
        tta: bool = False,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        if not 0.0 <= conf <= 1.0:
            raise ValueError(f"conf must be in [0, 1], got {conf}")
        if not 0.0 <= iou <= 1.0:  # OpenCV's NMS asserted on a negative one and kept duplicates above 1
            raise ValueError(f"iou must be in [0, 1], got {iou}")
        if min_face < 0 or max_faces < 1:
            raise ValueError(f"bad sizes: min_face={min_face}, max_faces={max_faces}")
        if not MIN_IMGSZ <= imgsz <= MAX_IMGSZ:
            raise ValueError(f"imgsz must be from {MIN_IMGSZ} to {MAX_IMGSZ} px, got {imgsz}")
        self.conf = float(conf)
        self.min_face = int(min_face)
        self.max_faces = int(max_faces)
        self.imgsz = int(imgsz)
        self.iou = float(iou)
        #: Multi-scale + mirror test-time augmentation (`TTA_SCALES`); a fused score is the mean of the six views'
        #: scores, a view that missed the face counting 0 (`fuse_views`).
        self.tta = bool(tta)
        self.device = device
        self.weights = Path(weights) if weights is not None else DEFAULT_DETECTOR_WEIGHTS
        self.warning: str | None = None
        #: Why the YOLO weights did not load (the Haar cascade runs instead).
        self.yolo_problem: str | None = None
        #: Why the YOLO model runs on PyTorch although onnxruntime was wanted (it still runs: not a Haar fallback).
        self.runtime_warning: str | None = None
        #: What executes detection: "onnxruntime" or "torch" for YOLO, "opencv" for the Haar cascade.
        self.runtime = "opencv"
        self._lock = threading.Lock()
        self._yolo: Any = None
        self._onnx: OnnxYolo | None = None
        self._face_class: int | None = None
        self._haar: cv2.CascadeClassifier | None = None

        if backend in ("auto", "yolo"):
            try:
                self._load_yolo(self.weights, resolve_runtime(runtime, device))
                self.backend = "yolo"
                return
            except Exception as exc:  # any load failure must degrade to Haar, not crash the app
                self.yolo_problem = f"{self.weights}: {type(exc).__name__}: {exc}"
                self.warning = (
                    f"YOLO face weights unusable ({self.yolo_problem}); "
                    "falling back to the OpenCV Haar cascade, which misses small, profile and occluded faces. "
                    "Train them with `python -m fer_core.train_detector`."
                )
                warnings.warn(self.warning, HaarFallbackWarning, stacklevel=2)
        self._haar = self._load_haar()
        self.backend = "haar"

    def _load_yolo(self, weights: Path, runtime: str) -> None:
        """Load our own .pt only: a missing file is an error here because ultralytics would otherwise download.

        onnxruntime failing (export or session) costs speed, not detection, so it falls back to PyTorch with a
        warning; only weights that ultralytics itself cannot load go on to the Haar fallback in `__init__`.
        """
        path = weights.expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError("file not found")
        if path.suffix != ".pt":
            raise ValueError("expected a .pt file")
        # Cut short, as the classifiers say it: ultralytics took two lines, ending in advice to run an official model.
        # A whole archive (zipfile reads only its end) is not read here in full: ultralytics reads it next.
        if not zipfile.is_zipfile(path):
            from fer_core.checkpoint import damaged_archive_problem

            if problem := damaged_archive_problem(path.read_bytes()):
                raise ValueError(problem)
        onnx_error: Exception | None = None
        if runtime == "onnxruntime":
            try:
                from fer_core.export import detector_onnx_path, export_detector, open_cached_export

                self._onnx = open_cached_export(
                    detector_onnx_path(path, self.imgsz),
                    OnnxYolo,
                    lambda onnx_path: export_detector(path, onnx_path, self.imgsz),
                    path,
                )
                self._face_class = face_class(self._onnx.names)
                self.runtime = "onnxruntime"
                return
            except Exception as exc:  # PyTorch below still serves the same weights
                onnx_error = exc
        ultralytics = import_ultralytics()
        model = ultralytics.YOLO(str(path), task="detect")
        self._face_class = face_class(dict(getattr(model, "names", None) or {}))
        self._yolo = model
        self.runtime = "torch"
        if onnx_error is not None:
            self.runtime_warning = (
                f"onnxruntime face detection unavailable ({type(onnx_error).__name__}: {onnx_error}); "
                "running the YOLO model on PyTorch instead, which is slower on CPU."
            )
            warnings.warn(self.runtime_warning, RuntimeWarning, stacklevel=3)

    @staticmethod
    def _load_haar() -> cv2.CascadeClassifier:
        cascade = cv2.CascadeClassifier(str(HAAR_CASCADE))
        if cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade {HAAR_CASCADE}")
        return cascade

    def detect(self, image_rgb: np.ndarray, file_size: tuple[int, int] | None = None) -> list[FaceBox]:
        """Faces in an HxWx3 uint8 RGB image, best first, at most `max_faces`, none smaller than `min_face` pixels of
        the file: `file_size` is the (width, height) of the file a picture over 4096 px was shrunk from, and a 284 px
        face was dropped by a 180 px limit applied to the shrunk copy."""
        rgb = _as_rgb(image_rgb)
        h, w = rgb.shape[:2]
        if h == 0 or w == 0:
            return []
        shrunk_from = file_size[0] if file_size is not None and file_size[0] > w else None  # the file's width
        smallest = self.min_face * w / shrunk_from if shrunk_from else self.min_face
        if self.backend != "yolo":
            with self._lock:
                boxes, scores = self._detect_haar(rgb, smallest)
        elif self.tta:
            boxes, scores = self._detect_yolo_tta(rgb)
        else:
            boxes, scores = self._detect_yolo(rgb, self.imgsz)
        return self._finish(boxes, scores, w, h, smallest)

    def _detect_yolo(self, rgb: np.ndarray, imgsz: int, conf: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Unclipped xyxy boxes and scores at one input size (scores over `conf`, default the detector's own), on
        whichever runtime is loaded."""
        conf = self.conf if conf is None else conf
        if self._onnx is not None:  # an onnxruntime session is thread-safe: no lock, concurrent app sessions
            return self._onnx.detect(rgb, imgsz, conf, self.iou, self._max_det, self._face_class)
        with self._lock:
            return self._detect_ultralytics(rgb, imgsz, conf)

    def _detect_yolo_tta(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Six passes (`TTA_SCALES` x mirror), mirrored boxes flipped back, then fused into one set."""
        h, w = rgb.shape[:2]
        mirrored = np.ascontiguousarray(rgb[:, ::-1])
        views = []
        for scale in TTA_SCALES:
            size = max(32, round(self.imgsz * scale))
            views.append(self._detect_yolo(rgb, size, TTA_PASS_CONF))
            boxes, scores = self._detect_yolo(mirrored, size, TTA_PASS_CONF)
            views.append((np.c_[w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], scores))
        return fuse_views(views, w, h, TTA_FUSION_IOU)

    @property
    def _max_det(self) -> int:
        return max(self.max_faces * 2, 300)  # headroom: tiny boxes are dropped afterwards

    def _detect_ultralytics(self, rgb: np.ndarray, imgsz: int, conf: float) -> tuple[np.ndarray, np.ndarray]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # ultralytics treats numpy input as OpenCV BGR
        kwargs: dict[str, Any] = {
            "conf": conf,
            "iou": self.iou,
            "imgsz": imgsz,
            "max_det": self._max_det,
            "verbose": False,
            "save": False,
        }
        if self.device is not None:
            kwargs["device"] = self.device
        if self._face_class is not None:
            kwargs["classes"] = [self._face_class]
        with torch_threads_kept():
            result = self._yolo.predict(bgr, **kwargs)[0]
        data = result.boxes
        if data is None or len(data) == 0:
            return np.zeros((0, 4)), np.zeros(0)
        return data.xyxy.cpu().numpy().astype(np.float64), data.conf.cpu().numpy().astype(np.float64)

    def _detect_haar(self, rgb: np.ndarray, min_face: float) -> tuple[np.ndarray, np.ndarray]:
        assert self._haar is not None
        # No histogram equalisation: stretched over a flat background it left a 70 px webcam face undetected, and on
        # WIDER dev-val the plain grey image scores higher (AP 0.457 / 0.351 / 0.180 against 0.423 / 0.325 / 0.167).
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        side = max(int(min_face), 1)
        rects, _levels, weights = self._haar.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=3, minSize=(side, side), outputRejectLevels=True
        )
        if len(rects) == 0:
            return np.zeros((0, 4)), np.zeros(0)
        r = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        boxes = np.c_[r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]]
        return boxes, haar_scores(weights)

    def _finish(self, boxes: np.ndarray, scores: np.ndarray, w: int, h: int, min_face: float) -> list[FaceBox]:
        """Clip, drop low/tiny, sort by score and cap: one place, so both backends obey the same contract."""
        if len(boxes) == 0:
            return []
        boxes = boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        keep = (scores >= self.conf) & (bw >= min_face) & (bh >= min_face) & (bw > 0) & (bh > 0)
        boxes, scores = boxes[keep], scores[keep]
        order = np.argsort(-scores, kind="stable")[: self.max_faces]
        faces = []
        for i in order:
            x1, y1, x2, y2 = boxes[i].tolist()  # Python floats
            faces.append(FaceBox(x1, y1, x2, y2, float(scores[i])))
        return faces

    def __repr__(self) -> str:
        return (
            f"FaceDetector(backend={self.backend!r}, runtime={self.runtime!r}, imgsz={self.imgsz}, "
            f"conf={self.conf}, min_face={self.min_face}, tta={self.tta})"
        )
