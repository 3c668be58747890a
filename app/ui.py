"""Shared UI plumbing for every page: where the weights are (env), cached model loaders, the sidebar's controls and
info, the settings kept across page visits, the notes and image display the pages share, and the measured metrics.

Models are loaded once per process (`st.cache_resource`) and shared read-only by all browser sessions; everything
a user uploads or chooses lives in that user's `st.session_state` only: the uploads kept across page visits in
`app.uploads`, the results remembered across reruns in `app.memo`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import streamlit as st

from app.live import TrackerSettings
from fer_core.cli import UserInputError
from fer_core.detection import DEFAULT_CONF, DETECTOR_FILE, PHOTO_IMGSZ, VIDEO_IMGSZ, FaceDetector
from fer_core.draw import label_text
from fer_core.ensemble import ENSEMBLE_FILE, ENSEMBLE_KEY, Ensemble, weights_used
from fer_core.explain import FaceExplainer
from fer_core.imageio import IMAGE_SUFFIXES
from fer_core.model_card import read_checked_metrics
from fer_core.pipeline import DEFAULT_WEIGHTS, ImageResult, Pipeline
from fer_core.tracking import SMOOTHING
from fer_core.tta import NO_TTA, tta_set
from fer_core.verdict import ModelView

#: The uploader's file types: every suffix the decoder takes (browsers save web JPEGs as .jfif, which was refused).
PHOTO_TYPES = sorted(suffix.removeprefix(".") for suffix in IMAGE_SUFFIXES)
VIDEO_TYPES = ["mp4", "mov", "webm", "avi"]
PHOTOS_PAGE = "views/photos.py"
WEBCAM_PAGE = "views/webcam.py"
COMPARE_PAGE = "views/compare.py"
VIDEO_PAGE = "views/video.py"
#: Each page's title and icon, for the navigation and for the links to the pages on the page the app opens on.
PAGE_TITLES_AND_ICONS = {
    PHOTOS_PAGE: ("Photos", ":material/photo_library:"),
    WEBCAM_PAGE: ("Webcam", ":material/videocam:"),
    COMPARE_PAGE: ("Ensemble comparison", ":material/compare:"),
    VIDEO_PAGE: ("Video", ":material/movie:"),
}
#: Session-state key of the webcam snapshot handed to the comparison page (a `Snapshot`).
SNAPSHOT_KEY = "webcam_snapshot"
SMOOTHING_LABELS = {"ema": "EMA", "window": "Window", "none": "Off"}
DETECTOR_LABELS = {"yolo": "YOLO (trained face model)", "haar": "Haar cascade (OpenCV)"}


def weights_dir() -> Path:
    """`FER_WEIGHTS_DIR` if set (tests, deployments), else the repository's `weights/`."""
    return Path(os.environ.get("FER_WEIGHTS_DIR") or DEFAULT_WEIGHTS)


def runtime() -> str:
    """`FER_RUNTIME` (auto / torch / onnxruntime): auto is onnxruntime on CPU, torch on CUDA."""
    return os.environ.get("FER_RUNTIME", "auto")


def device() -> str:
    """`FER_DEVICE`, else CUDA when present; imported lazily because torch costs seconds."""
    chosen = os.environ.get("FER_DEVICE")
    if chosen:
        return chosen
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def missing_weights_message(folder: Path) -> str | None:
    """A plain-words explanation when the models are not there (None when they are)."""
    if (folder / ENSEMBLE_FILE).is_file():
        return None
    return (
        f"No trained models found: `{folder / ENSEMBLE_FILE}` is missing. "
        "Put the shipped `weights/` folder in place (or point `FER_WEIGHTS_DIR` at one), "
        "or train and fit the ensemble first (`python -m fer_core.train`, then `python -m fer_core.fit_ensemble`)."
    )


def file_stamp(path: Path) -> float | None:
    """Modification time, part of the cache keys: replaced weights are picked up without a restart."""
    try:
        return path.stat().st_mtime
    except OSError:
        return None


@st.cache_resource(show_spinner="Loading the emotion models…", max_entries=4)
def load_ensemble(folder: str, runtime_name: str, device_name: str, stamp: tuple[float | None, ...] = ()) -> Ensemble:
    """Once per process for all sessions (`stamp` only keys the cache: ensemble.json's and the members' times)."""
    return Ensemble.load(folder, runtime=runtime_name, device=device_name)


@st.cache_resource(show_spinner="Loading the face detector…", max_entries=8)
def load_detector(
    folder: str, settings: DetectorSettings, runtime_name: str, device_name: str, stamp: float | None = None
) -> FaceDetector:
    """One detector per setting: a threshold is part of the detector, and sessions must not change a shared one."""
    return FaceDetector(
        backend=settings.backend,
        weights=Path(folder) / DETECTOR_FILE,
        conf=settings.conf,
        min_face=settings.min_face,
        max_faces=settings.max_faces,
        imgsz=settings.imgsz,
        runtime=runtime_name,
        device=device_name,
        tta=settings.tta,
    )


@st.cache_resource(show_spinner="Loading the model for the heat maps…", max_entries=4)
def _load_explainer(checkpoint: str, stamp: float | None) -> FaceExplainer:
    return FaceExplainer.load(checkpoint)


def load_explainer(checkpoint: str) -> FaceExplainer:
    """Heat maps need the PyTorch model (gradients) even when classification runs on onnxruntime."""
    return _load_explainer(checkpoint, file_stamp(Path(checkpoint)))


def weights_stamps(folder: Path) -> tuple[Any, ...]:
    """ensemble.json and every .pt in the folder: a member swapped in place is seen too."""
    return tuple(file_stamp(path) for path in [folder / ENSEMBLE_FILE, *sorted(folder.glob("*.pt"))])


def ensemble() -> Ensemble:
    folder = weights_dir()
    return load_ensemble(str(folder), runtime(), device(), weights_stamps(folder))


@dataclass
class Snapshot:
    """A webcam frame sent to the comparison page. `fresh` until that page first shows it: then it switches its
    photo picker to the snapshot once, and later runs keep the user's own choice."""

    name: str
    image: np.ndarray  # RGB
    fresh: bool = True


#: The sidebar's ceiling on faces per image: beyond it a photo is a crowd scene, not a set of expressions to read.
MAX_FACES_LIMIT = 1000


@dataclass(frozen=True)
class DetectorSettings:
    """What the detection controls chose; `imgsz` is set per page (photos favour recall, live video latency)."""

    backend: str = "yolo"
    conf: float = DEFAULT_CONF
    min_face: int = 16
    max_faces: int = 100
    imgsz: int = PHOTO_IMGSZ
    tta: bool = False

    @property
    def key(self) -> tuple[Any, ...]:
        """Identifies results in the per-session memo (`app.memo`): settings plus which weights produced them."""
        folder = weights_dir()
        stamps = weights_stamps(folder)  # every .pt: a member swapped in place must not serve its old results
        return (str(folder), *stamps, self.backend, self.conf, self.min_face, self.max_faces, self.imgsz, self.tta)


def size_note(file_size: tuple[int, int], result: ImageResult) -> str:
    """ "W×H px", and the size it was analysed and shown at when that differs (a photo over 4096 px is shrunk):
    the pages word it alike."""
    size = f"{result.width}×{result.height} px"
    if file_size != (result.width, result.height):
        size = f"{file_size[0]}×{file_size[1]} px (analysed and shown at {size})"
    return size


def pipeline(settings: DetectorSettings, tta: bool | None = None) -> Pipeline:
    """Cached detector + cached ensemble; the Pipeline object itself is a cheap per-run wrapper.

    `tta` None keeps `ensemble.json`'s TTA set; True/False switches that set on or off (the models stay shared).
    """
    folder = weights_dir()
    detector = load_detector(str(folder), settings, runtime(), device(), file_stamp(folder / DETECTOR_FILE))
    shared = ensemble()
    return Pipeline(detector, shared if tta is None else shared.with_tta(tta))


def tta_control(prefix: str, *, default: bool) -> bool:
    """TTA multiplies the classifier time: worth it for photos, off by default where frames must keep up."""
    shipped_name = ensemble().shipped_tta
    if shipped_name == NO_TTA:  # weights fitted on one view: the switch would offer "1 views", 1x the time
        st.sidebar.checkbox(
            "Test-time augmentation",
            value=False,
            key=f"{prefix}_tta_none",
            disabled=True,
            help="The weights in use were fitted without test-time views (ensemble.json's tta is none).",
        )
        return False
    shipped = tta_set(shipped_name)
    views = len(shipped.views)
    return st.sidebar.checkbox(
        "Test-time augmentation",
        value=default,
        key=f"{prefix}_tta",
        help=f"Classify {views} views of each face ({shipped.description}) and average them: more accurate "
        f"on PublicTest, {views}x the classifier time.",
    )


#: Each page's (starting minimum face size, detector input size): live frames run the detector at 320 px to keep
#: up, where small faces are unreliable, so those pages start higher. One table, so the slider's help that explains
#: the difference between pages cannot drift from what the pages do.
PAGE_DETECTION = {
    "photos": (16, PHOTO_IMGSZ),
    "compare": (16, PHOTO_IMGSZ),
    "video": (24, VIDEO_IMGSZ),
    "webcam": (32, VIDEO_IMGSZ),
}
PAGE_TITLES = {"photos": "Photos", "compare": "comparison", "video": "Video", "webcam": "Webcam"}


def page_detection_note() -> str:
    """'Photos 16 px (detector at 640 px), ...': why the same slider starts elsewhere on another page."""
    pages = PAGE_DETECTION.items()
    return ", ".join(f"{PAGE_TITLES[page]} {face} px (detector at {imgsz} px)" for page, (face, imgsz) in pages)


def detector_controls(prefix: str, *, offer_tta: bool = False) -> DetectorSettings:
    """Sidebar widgets for detection; keys are per page so each page remembers its own choices (`keep_settings`).
    The page's starting face size and detector input are its `PAGE_DETECTION` row.

    `offer_tta` adds the multi-scale switch: photo pages can afford six detector passes, live frames cannot.
    """
    min_face, imgsz = PAGE_DETECTION[prefix]
    bar = st.sidebar
    bar.subheader("Face detection")
    has_yolo = (weights_dir() / DETECTOR_FILE).is_file()
    labels = DETECTOR_LABELS if has_yolo else {**DETECTOR_LABELS, "yolo": "YOLO (not installed: uses Haar)"}
    backend = bar.radio(
        "Detector",
        list(labels),
        index=0 if has_yolo else 1,  # without our face model, say so rather than pretend YOLO is running
        format_func=labels.__getitem__,
        key=f"{prefix}_backend",
        help="YOLO finds small, turned and partly hidden faces; Haar is the classic fallback.",
    )
    conf = bar.slider(
        "Detection confidence",
        0.05,
        0.95,
        DEFAULT_CONF,
        0.05,
        key=f"{prefix}_conf",
        help="Faces the detector is less sure about are ignored.",
    )
    size = bar.slider(
        "Minimum face size (px)",
        8,
        200,
        min_face,
        4,
        key=f"{prefix}_min_face",
        help="Smaller faces are ignored (in the picture's own pixels); 48 px is what the emotion models see. "
        f"Each page starts where its detector input makes small faces reliable: {page_detection_note()}.",
    )
    tta = offer_tta and bar.checkbox(
        "Multi-scale detection",
        value=False,
        key=f"{prefix}_det_tta",
        disabled=backend != "yolo",
        help="Run YOLO at three sizes, each also mirrored, and merge the boxes (weighted box fusion): WIDER "
        "dev-val AP 0.874 -> 0.895 (easy) and 0.606 -> 0.651 (hard), about six times the detection time. A merged "
        "box's confidence is its mean score over the six passes, a pass that missed the face counting 0.",
    )
    max_faces = bar.number_input(
        "Most faces per image",
        min_value=1,
        max_value=MAX_FACES_LIMIT,
        value=DetectorSettings.max_faces,
        step=10,
        key=f"{prefix}_max_faces",
        help="The most confident faces up to this many are labelled; a crowd photo may need more.",
    )
    return DetectorSettings(backend, float(conf), int(size), int(max_faces), imgsz=imgsz, tta=bool(tta))


def tracker_controls(prefix: str) -> TrackerSettings:
    """Sidebar widgets for tracking faces over frames and smoothing their probabilities."""
    bar = st.sidebar
    bar.subheader("Tracking & smoothing")
    smoothing = bar.radio(
        "Smoothing",
        SMOOTHING,
        format_func=SMOOTHING_LABELS.__getitem__,
        horizontal=True,
        key=f"{prefix}_smoothing",
        help="Averages each tracked face's probabilities over frames so labels do not flicker.",
    )
    alpha = bar.slider(
        "EMA weight of the newest frame",
        0.05,
        1.0,
        0.5,
        0.05,
        key=f"{prefix}_alpha",
        disabled=smoothing != "ema",
        help="Lower is steadier but slower to follow.",
    )
    window = bar.slider("Window (frames)", 1, 30, 5, key=f"{prefix}_window", disabled=smoothing != "window")
    follow = bar.toggle(
        "Boxes follow the faces",
        True,
        key=f"{prefix}_follow",
        help="On the frames the models have not analysed yet, each box moves with its face (optical flow), so a "
        "moving face does not leave its box behind. The labels come from the last analysis either way.",
    )
    return TrackerSettings(smoothing, float(alpha), int(window), follow=bool(follow))


def model_names(ens: Ensemble) -> list[str]:
    return [ENSEMBLE_KEY, *ens.names]


def model_title(name: str) -> str:
    return "Ensemble" if name == ENSEMBLE_KEY else name


#: About the smallest face the YOLO detector finds at its input (the Photos page's 16 px minimum face, for a photo
#: that reaches the detector at its own size).
SMALLEST_FINDABLE_PX = 16


def face_count_notes(name: str, n_faces: int, pipe: Pipeline, file_size: tuple[int, int]) -> None:
    """What every photo result says about its face count: none found, or the face limit reached (it may hold more).
    With none found in a large photo, how small a face the detector can see there: a 24 MP photo reaches its 640 px
    input at a ninth of its size, so three clear 90 px faces were missed while the hint spoke only of settings."""
    if pipe.at_face_limit(n_faces):
        st.warning(
            f"{name}: labelled the {n_faces} most confident faces, the most allowed; it may hold more. Raise "
            "'Most faces per image' in the sidebar to label them.",
            icon=":material/groups:",
        )
    if not n_faces:
        advice = "Try a lower detection confidence or minimum face size."
        detector_input = pipe.detector.imgsz if pipe.detector is not None and pipe.detector.backend == "yolo" else 0
        shrink = max(file_size) / detector_input if detector_input else 1.0
        if shrink >= 3:
            advice += (
                f" The photo reaches the detector at {detector_input} px from {max(file_size)} px, {shrink:.0f} times "
                f"smaller, so a face under about {SMALLEST_FINDABLE_PX * shrink:.0f} px across is hard to find in it: "
                "crop around small faces and drop the crop."
            )
        st.info(f"{name}: no face found. {advice}", icon=":material/search_off:")


def first_frame_note(name: str, frames: int) -> None:
    """An animation or a multi-page file is analysed by its first frame only: said, so that no face found in a
    fade-in's blank first frame is not taken for a detector's miss."""
    if frames > 1:
        st.info(
            f"{name}: an animation or multi-page file of {frames} frames; only the first is analysed. Save the "
            "frame you want as a picture of its own to analyse it.",
            icon=":material/burst_mode:",
        )


def sidebar_info(pipe: Pipeline) -> None:
    """Device, runtimes, detector and model versions: what a bug report needs."""
    ens = pipe.ensemble
    detector = pipe.detector
    if detector is not None and detector.backend == "yolo":
        detector_name = f"YOLO ({detector.runtime}, {detector.imgsz} px)"
    else:
        detector_name = "Haar cascade"
    runtimes = ", ".join(sorted({m.runtime_name for m in ens.members}))
    st.sidebar.caption(f"{device()} · {runtimes} · {detector_name} · {' + '.join(ens.names)}")
    with st.sidebar.expander("Models & runtime", expanded=False):
        lines = [
            f"**Device:** {device()}",
            f"**Classifier runtime:** {runtimes}",
            f"**Face detector:** {detector_name}",
            f"**Weights:** `{weights_dir()}`",
            f"**Ensemble:** {', '.join(f'{n} × {w:.2f}' for n, w in ens.weights.items())}"
            + (f" · TTA `{ens.tta}`" if ens.tta != NO_TTA else ""),
        ]
        for member in ens.members:
            meta = member.meta
            version = meta.get("code_version", "unknown")
            created = str(meta.get("created", "unknown")).replace("T", " ")
            lines.append(f"**{member.name}:** code {version}, created {created}")
        st.markdown("  \n".join(lines))
    for note in [m.runtime_warning for m in ens.members] + [detector.runtime_warning if detector else ""]:
        if note:  # slower, same answers: a note, not an alarm
            st.sidebar.caption(note)
    if detector is not None and detector.warning:
        st.sidebar.warning(
            "Using the Haar cascade: the trained YOLO face model is not available.", icon=":material/warning:"
        )


#: Streamlit shrinks a displayed image to the column (1460 px at most) and rounds the other side down; a side under
#: 1/700 of the other would become 0 px, which PIL refuses with an exception that takes the rest of the page with it.
MAX_DISPLAY_RATIO = 700
#: Shown at the column's width, a picture taller than this many widths (a 2x5000 strip, a long screenshot) became an
#: element hundreds of screens tall that pushed every other result off the page: it gets white columns instead.
MAX_TALL_RATIO = 3
#: Streamlit sends no image wider than this (`image_utils.MAXIMUM_CONTENT_WIDTH`), but it first encodes the whole
#: array, then decodes and shrinks it: 0.17 s for a 12 MP photo on a 2-core CPU, on every rerun, against 0.04 s to
#: shrink it here (with area averaging, sharper than Streamlit's bilinear).
MAX_DISPLAY_WIDTH = 1460


def image_at_most(image: np.ndarray, width: int, caption: str) -> None:
    """`image` shown `width` px wide (a smaller image is enlarged to it), and narrower where its column is (a phone).
    The width is set on a container, which Streamlit caps at the column's, with the image stretched in it: set on the
    image, a 720 px photo ran off a 390 px phone screen, and Streamlit resized the image itself to that width
    (bilinear, soft on a high-density screen)."""
    with st.container(width=max(1, width)):
        st.image(image, width="stretch", caption=caption)


def displayable(image: np.ndarray) -> np.ndarray:
    """`image` as Streamlit will show it: shrunk to `MAX_DISPLAY_WIDTH`, then padded with white until its height is
    under 1/`MAX_DISPLAY_RATIO` of its width (a 3000x2 strip) and its width at least 1/`MAX_TALL_RATIO` of its height.
    In that order, so that Streamlit's own shrinking to a narrower column never rounds a side down to 0 px. For the
    screen only: downloads use the full image."""
    height, width = image.shape[:2]
    if width > MAX_DISPLAY_WIDTH:
        size = (MAX_DISPLAY_WIDTH, max(1, round(height * MAX_DISPLAY_WIDTH / width)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        height, width = image.shape[:2]
    pad_rows = max(0, -(-width // MAX_DISPLAY_RATIO) - height)
    pad_cols = max(0, -(-height // MAX_TALL_RATIO) - width)
    if not (pad_rows or pad_cols):
        return image
    return np.pad(image, ((0, pad_rows), (0, pad_cols)) + ((0, 0),) * (image.ndim - 2), constant_values=255)


#: The settings each page keeps while the user visits another: widget keys are "<page>_<setting>". Streamlit drops
#: a widget's value when a run does not draw it, so without re-storing them every slider reset on coming back.
#: Uploads cannot be restored this way (Streamlit does not allow setting a file uploader): see `app.uploads`.
_PAGES = ("photos", "webcam", "compare", "video")
_SIDEBAR_SETTINGS = (
    "backend",
    "conf",
    "min_face",
    "det_tta",
    "max_faces",
    "tta",
    "smoothing",
    "alpha",
    "window",
    "follow",
)
KEPT_SETTINGS = (
    *(f"{page}_{name}" for page in _PAGES for name in _SIDEBAR_SETTINGS),
    "photos_model",
    "photos_gradcam",
    "webcam_remote",
    "webcam_ice",
    "compare_source",
    "compare_weight",
    "compare_metrics_split",
    "video_every",
)
#: Pickers drawn with a result, keyed per photo or per face count ("photos_cam_face_<slot>"): kept the same way, so
#: coming back shows the face and class the user chose. A kept choice that is no longer an option (fewer faces
#: after a settings change) falls back to the widget's default, as Streamlit does on the page itself.
KEPT_PREFIXES = (
    "photos_chart_face_",
    "photos_cam_face_",
    "photos_cam_class_",
    "compare_faces_",
    "compare_weight_",
    "video_face",
)


def keep_settings() -> None:
    """Re-store every kept setting in this run, so leaving a page does not reset it (Streamlit's documented way)."""
    for key in list(st.session_state.keys()):
        if key in KEPT_SETTINGS or (isinstance(key, str) and key.startswith(KEPT_PREFIXES)):
            st.session_state[key] = st.session_state[key]


#: Faces listed in words under a photo: the text of its boxes, which a caption shrunk to "#3" (the emotion then
#: told by colour alone) or a screen reader (images carry no text) left out. Beyond it the rest are counted.
FACES_IN_WORDS = 12


def faces_in_words(views: Sequence[ModelView], where_the_rest_are: str = "") -> str:
    """'#1 happy 58%, #2 fear 33%' for a photo's caption (empty without faces); past `FACES_IN_WORDS`, '... and 8
    more' and `where_the_rest_are`."""
    shown = views[:FACES_IN_WORDS]
    listed = ", ".join(label_text(view.label, view.confidence, n) for n, view in enumerate(shown, 1))  # as the boxes
    rest = len(views) - FACES_IN_WORDS
    return listed + (f" and {rest} more{where_the_rest_are}" if rest > 0 else "")


METRIC_SPLITS = ("PrivateTest", "PublicTest")


def load_metrics(folder: Path, ens: Ensemble) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """`metrics_<split>.json` files found in the weights folder that were measured on these weights (members, mix
    and TTA set, as the model card checks), and a message per unreadable or foreign one: those are not shown."""
    found: dict[str, dict[str, Any]] = {}
    problems = []
    # ensemble.json's sha256s were checked when the models loaded: no hashing on every slider move
    expected = weights_used(ens.spec, folder, ens.shipped_tta, recorded_hashes=True)
    for split in METRIC_SPLITS:
        path = folder / f"metrics_{split}.json"
        if not path.is_file():
            continue
        try:
            metas = {member.name: member.meta for member in ens.members}
            data = read_checked_metrics(path, split, expected, folder / ENSEMBLE_FILE, metas)
        except UserInputError as err:
            problems.append(f"`{path.name}` is not shown: {str(err).removeprefix(f'{path}: ')}")
            continue
        except OSError as err:
            problems.append(f"`{path.name}` is unreadable ({err})")
            continue
        found[split] = data
    return found, problems
