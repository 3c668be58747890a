"""The Streamlit pages driven by `streamlit.testing.v1.AppTest`: real uploads, untrained models, no browser.

Models run with the torch runtime here (no ONNX export per test session); the browser test covers the default.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import types
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePath
from typing import Any, cast

import av
import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.data import astronaut
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Element

from app.charts import emotion_timeline
from fer_core import video as fer_video
from fer_core.checkpoint import read_checkpoint, save_checkpoint
from fer_core.detection import FaceDetector
from fer_core.ensemble import weights_used, write_spec
from fer_core.imageio import AVIF_SUPPORTED, HEIF_SUPPORTED
from fer_core.labels import EMOTIONS
from fer_core.pipeline import RESULT_COLUMNS, FaceResult, ImageResult, Pipeline
from fer_core.tracking import TrackedFace
from tests.test_video import AlternatingPipeline, noise_mp4

REPO = Path(__file__).resolve().parents[1]
MAIN = str(REPO / "app" / "main.py")
TIMEOUT = 300


@pytest.fixture(scope="module")
def app_weights(fake_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake weights plus measured metrics, so the comparison page has numbers to show."""
    folder = tmp_path_factory.mktemp("app_weights")
    for path in fake_weights.iterdir():
        shutil.copy(path, folder / path.name)
    spec = json.loads((folder / "ensemble.json").read_text())
    spec["models"][0]["weight"], spec["models"][1]["weight"] = 0.3, 0.7  # as shipped: not the 0.5 a default gives
    spec["public_test"] = {
        "ensemble_accuracy": 0.7,
        "singles": {"A_crp": {"accuracy": 0.68, "macro_f1": 0.66}, "B_mixcut": {"accuracy": 0.67, "macro_f1": 0.65}},
        "weight_curve": [{"weight": w / 4, "accuracy": 0.67 + 0.01 * (w % 3), "nll": 1.0} for w in range(5)],
    }
    write_spec(folder / "ensemble.json", spec)
    models = {  # each model its own figures, so the page cannot show one model's under another's name
        name: {
            "accuracy": accuracy,
            "macro_f1": accuracy - 0.01 * (k + 1),
            "confusion": (np.eye(7, dtype=int) * 40 + k).tolist(),
            "per_class": {e: {"precision": accuracy, "recall": 0.7, "f1": 0.7, "support": 43} for e in EMOTIONS},
        }
        for k, (name, accuracy) in enumerate([("ensemble", 0.72), ("A_crp", 0.70), ("B_mixcut", 0.69)])
    }
    measured = {"split": "PrivateTest", "n": 301, "models": models, "weights": weights_used(spec, folder, "none")}
    (folder / "metrics_PrivateTest.json").write_text(json.dumps(measured))
    return folder


@pytest.fixture(autouse=True, scope="module")
def _live_analysis_ends_before_exit() -> Iterator[None]:
    """A webcam test leaves its analysis thread running for up to `IDLE_EXIT_S` after its last frame; an interpreter
    that exits while that thread is inside the models aborts ("terminate called without an active exception", exit
    134: a webcam test run alone did). Wait for those threads once, after this file's last test."""
    yield
    from app.live import IDLE_EXIT_S

    for thread in threading.enumerate():
        if thread.name == "fer-live-analysis":
            thread.join(timeout=3 * IDLE_EXIT_S)


@pytest.fixture
def app(app_weights: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("FER_WEIGHTS_DIR", str(app_weights))
    monkeypatch.setenv("FER_RUNTIME", "torch")
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def encode(image: np.ndarray | Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, fmt, **options)
    return buffer.getvalue()


def huge_png(side: int = 20000) -> bytes:
    """A valid 1-bit 20000x20000 PNG (tiny on disk, 400 megapixels when decoded)."""
    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def face_grid(rows: int = 6, cols: int = 10) -> np.ndarray:
    face = cv2.resize(astronaut()[27:200, 137:310], (96, 96))
    return np.vstack([np.hstack([face] * cols)] * rows)


def plotly_array(value: Any) -> np.ndarray:
    """An array from a figure's JSON: plotly writes numpy arrays as base64 bytes with their dtype and shape."""
    if isinstance(value, dict):
        shape = [int(n) for n in str(value.get("shape", "-1")).split(",")]
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).reshape(shape)
    return np.asarray(value)


def blocks_of(node: Any) -> Iterator[Any]:
    """Every block (container, column, ...) under an AppTest node, depth first."""
    for child in getattr(node, "children", {}).values():
        if hasattr(child, "children"):
            yield child
            yield from blocks_of(child)


def chart_titles(at: AppTest) -> list[str]:
    layouts = [json.loads(chart.proto.spec)["layout"] for chart in at.get("plotly_chart")]
    return [layout.get("title", {}).get("text", "") for layout in layouts]


def test_streamlit_reads_the_projects_limits_and_privacy_settings() -> None:
    """What `streamlit run app/main.py` from the repository root applies: upload cap, no telemetry, no tracebacks."""
    shown = subprocess.run(
        [sys.executable, "-m", "streamlit", "config", "show"], cwd=REPO, capture_output=True, text=True, timeout=120
    ).stdout
    for setting in (
        "maxUploadSize = 200",
        "gatherUsageStats = false",
        'showErrorDetails = "type"',
        "headless = true",
        'address = "localhost"',  # not every interface: uploads are personal data
        'fileWatcherType = "none"',
        'textColor = "#111111"',  # captions are drawn at 60 % of it: see the next test
        'base = "light"',  # the colours are chosen for a white page
    ):
        assert f"\n{setting}\n" in shown, setting


def test_captions_in_the_theme_s_text_colour_meet_wcag_aa_contrast() -> None:
    """Captions and help text are the text colour at 60 % opacity: Streamlit's default gave about 3.9:1 on white."""

    def luminance(rgb: tuple[float, ...]) -> float:
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (v / 255 for v in rgb)]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    def caption_contrast(text_hex: str) -> float:
        text = [int(text_hex[i : i + 2], 16) for i in (1, 3, 5)]
        caption = tuple(0.6 * c + 0.4 * 255 for c in text)  # over the white page
        return 1.05 / (luminance(caption) + 0.05)

    configured = re.search(r'^textColor = "(#[0-9a-fA-F]{6})"', (REPO / ".streamlit/config.toml").read_text(), re.M)
    assert configured is not None
    assert caption_contrast("#2f2d2b") < 4.5 <= caption_contrast(configured.group(1))  # Streamlit's default; ours


def test_missing_weights_gives_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_WEIGHTS_DIR", str(tmp_path))
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "No trained models found" in at.error[0].value


def test_photos_labels_faces_and_explains_each_bad_file(app: AppTest) -> None:
    astro = astronaut()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned left; viewers rotate it upright
    gray16 = (cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257).astype(np.uint16)
    gif_frames = [Image.fromarray(astro), Image.fromarray(255 - astro)]
    good = {
        "astronaut.jpg": encode(astro, "JPEG"),
        "rotated.jpg": encode(np.rot90(astro), "JPEG", exif=exif),
        "cmyk.jpg": encode(Image.fromarray(astro).convert("CMYK"), "JPEG"),
        "gray16.png": encode(Image.fromarray(gray16), "PNG"),
        "rgba.png": encode(np.dstack([astro, np.full(astro.shape[:2], 255, np.uint8)]), "PNG"),
        "animated.gif": encode(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:], duration=100),
    }
    if HEIF_SUPPORTED:
        good["phone.heic"] = encode(astro, "HEIF")
    if AVIF_SUPPORTED:
        good["web.avif"] = encode(astro, "AVIF")
    bad = {
        "corrupt.png": encode(astro, "PNG")[:200],
        "notes.jpg": b"this is not an image",
        "empty.png": b"",
        "huge.png": huge_png(),
    }
    files = {
        **good,
        "blank.png": encode(np.full((240, 320, 3), 128, np.uint8), "PNG"),
        "crowd.png": encode(face_grid(), "PNG"),
        "strip.png": encode(np.zeros((2, 3000, 3), np.uint8), "PNG"),  # shown 1460 wide it would be 0 px high
        **bad,
    }
    app.file_uploader(key="photos_upload").set_value([(name, data, "image/png") for name, data in files.items()])
    app.run()

    assert not app.exception, app.exception
    errors = [e.value for e in app.error]
    assert len(errors) == len(bad)
    for name, message in zip(bad, errors, strict=True):
        assert message.startswith(f"{name}:")
    assert "empty" in errors[2] and "pixels" in errors[3]
    captions = {sub.value: cap.value for sub, cap in zip(app.subheader, app.caption, strict=False)}
    for name in good:
        assert captions[name].startswith("1 face(s)"), (name, captions[name])
    assert captions["blank.png"].startswith("0 face(s)") and captions["strip.png"].startswith("0 face(s)")
    assert captions["crowd.png"].startswith("60 face(s)")
    assert any("blank.png: no face found" in i.value for i in app.info)
    frame_notes = [i.value for i in app.info if "only the first is analysed" in i.value]
    assert frame_notes == [
        "animated.gif: an animation or multi-page file of 2 frames; only the first is analysed. "
        "Save the frame you want as a picture of its own to analyse it."
    ]
    table = app.dataframe[0].value
    assert len(table) == len(good) + 60 and set(table["ensemble_label"]) <= set(EMOTIONS)
    formats = json.loads(app.dataframe[0].proto.columns)  # three places in every probability column: 0.045 stood
    for column in ["detector_score", "ensemble_confidence", *EMOTIONS]:  # beside 0.0452
        assert formats[column]["type_config"]["format"] == "%.3f", formats
    confidences = table["ensemble_confidence"].to_numpy()  # rounded once, as its label's column: 0.720 beside 0.721
    assert (confidences == [row[row["ensemble_label"]] for _, row in table.iterrows()]).all()
    assert any(c.value.startswith("No face found in blank.png, strip.png: no rows here") for c in app.caption)
    assert any("probability columns are the ensemble's" in c.value for c in app.caption)  # whatever model is picked
    assert table.groupby("image")["face"].min().eq(1).all()  # face 1 is the box captioned "#1"
    assert table.loc[table["image"] == "crowd.png", "face"].tolist() == list(range(1, 61))
    assert set(table["image"]) == {*good, "crowd.png"}
    assert {b.label for b in cast(Sequence[Element], app.get("download_button"))} >= {
        "Results as CSV",
        "Results as JSON",
    }


def test_displayable_pads_extreme_strips_and_shrinks_to_what_streamlit_sends() -> None:
    from app import ui

    small = np.zeros((300, 400, 3), np.uint8)
    assert ui.displayable(small) is small
    photo = cv2.resize(astronaut(), (4000, 3000))
    shown = ui.displayable(photo)
    assert shown.shape == (1095, 1460, 3)
    assert abs(float(shown.mean()) - float(photo.mean())) < 1.0  # the same picture, smaller
    gray = np.full((3000, 4000), 7, np.uint8)
    assert ui.displayable(gray).shape == (1095, 1460) and ui.displayable(gray).max() == 7
    strip = ui.displayable(np.zeros((2, 3000, 3), np.uint8))  # shrunk to 1 row, then padded to 1460 / 700
    assert strip.shape == (3, 1460, 3)
    assert int(strip.shape[0] * 720 / strip.shape[1]) >= 1  # shrunk again to a 720 px column, it keeps a row
    tall = ui.displayable(np.zeros((3000, 2, 3), np.uint8))  # at a 720 px column it was 1,080,000 px tall
    assert tall.shape == (3000, 1000, 3) and tall[:, 2:].min() == 255
    screenshot = np.zeros((2400, 1080, 3), np.uint8)  # a phone screenshot is left as it is
    assert ui.displayable(screenshot) is screenshot


def test_the_comparison_photo_fits_a_phone_screen(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    """It was drawn 720 px wide whatever the screen: on a 390 px phone faces #2 and #4 and its caption's end were
    off to the right. Its width is now a container's, which Streamlit narrows to the column, the image stretched in it.
    """
    import streamlit

    from app.views import compare

    widths: list[Any] = []
    real_container, real_image = streamlit.container, streamlit.image

    def container(*args: Any, **kwargs: Any) -> Any:
        if isinstance(kwargs.get("width"), int):
            widths.append(kwargs["width"])
        return real_container(*args, **kwargs)

    def image(*args: Any, **kwargs: Any) -> Any:
        widths.append(kwargs.get("width"))
        return real_image(*args, **kwargs)

    monkeypatch.setattr(streamlit, "container", container)
    monkeypatch.setattr(streamlit, "image", image)
    app.switch_page("views/compare.py").run()
    for photo, width in ((face_grid(2, 8), compare.MAX_PHOTO_WIDTH), (face_grid(2, 2), 192)):  # 768 px wide; 192
        widths.clear()
        app.file_uploader(key="compare_upload").set_value(("p.png", encode(photo, "PNG"), "image/png")).run()
        assert not app.exception, app.exception
        assert widths[:2] == [width, "stretch"], widths  # the photo first, then the face crops, as thumbnails
        assert widths[2:4] == [compare.FACE_THUMBNAIL_PX, "stretch"], widths  # stacked, one filled a phone's width


def test_comparison_page_shows_a_very_wide_strip(app: AppTest) -> None:
    """Its image column is 720 px: after the shrink to 1460 px a 2-row strip became 0 rows there, and PIL raised."""
    app.switch_page("views/compare.py").run()
    strip = ("strip.png", encode(np.zeros((2, 3000, 3), np.uint8), "PNG"), "image/png")
    app.file_uploader(key="compare_upload").set_value(strip).run()
    assert not app.exception, app.exception
    assert "0 face(s)" in app.main.get("image")[0].proto.imgs[0].caption


class RecordingMediaStorage(MemoryMediaFileStorage):
    """AppTest's in-memory media store, kept reachable so a test can read what a download button would give."""

    latest: RecordingMediaStorage | None = None

    def __init__(self, media_endpoint: str) -> None:
        super().__init__(media_endpoint)
        RecordingMediaStorage.latest = self


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> Callable[[AppTest, str], bytes]:
    """`downloads(app, label)`: the bytes behind the download button with that label, after the last run."""
    monkeypatch.setattr("streamlit.testing.v1.app_test.MemoryMediaFileStorage", RecordingMediaStorage)

    def read(app: AppTest, label: str) -> bytes:
        (button,) = [b for b in app.get("download_button") if b.proto.label == label]
        assert RecordingMediaStorage.latest is not None
        return RecordingMediaStorage.latest.get_file(button.proto.url.rsplit("/", 1)[1]).content

    return read


def test_the_table_puts_the_picked_model_s_label_beside_the_face(app: AppTest) -> None:
    """With one model picked the box read "happy" and the row "sad": the row's first label was the ensemble's, and the
    model's own was far right, past the box corners."""
    app.file_uploader(key="photos_upload").set_value(("astronaut.png", encode(astronaut(), "PNG"), "image/png"))
    app.run()
    order = list(app.dataframe[0].proto.column_order)
    assert order[:3] == ["image", "face", "ensemble_label"] and order[-4:] == ["x1", "y1", "x2", "y2"]
    app.selectbox(key="photos_model").set_value("B_mixcut").run()
    order = list(app.dataframe[0].proto.column_order)
    assert order[:4] == ["image", "face", "B_mixcut_label", "ensemble_label"]
    assert sorted(order) == sorted(app.dataframe[0].value.columns)  # every column still shown
    pinned = {name for name, config in json.loads(app.dataframe[0].proto.columns).items() if config.get("pinned")}
    assert pinned == {"image", "face", "B_mixcut_label"}
    assert any(c.value.startswith("Face numbers match the boxes. The boxes show B_mixcut's") for c in app.caption)


def test_result_rows_give_each_model_s_own_label_beside_the_ensemble_s() -> None:
    """The per-model label columns were added by the Photos page itself: a notebook's rows had none."""
    from fer_core.pipeline import result_columns, result_rows

    happy, sad = {**dict.fromkeys(EMOTIONS, 0.05), "happy": 0.7}, {**dict.fromkeys(EMOTIONS, 0.05), "sad": 0.7}
    face = FaceResult((1.0, 2.0, 30.0, 40.0), 0.9, "happy", 0.6, happy, {"ensemble": happy, "A": sad, "B": happy})
    photo = ImageResult([face], 64, 64)
    (row,) = result_rows("p.png", photo, ["A", "B"])
    assert (row["ensemble_label"], row["A_label"], row["B_label"]) == ("happy", "sad", "happy")
    assert list(row) == result_columns(["A", "B"]) and "A_label" not in result_rows("p.png", photo)[0]
    held = r"the faces hold \['A', 'B', 'ensemble'\]"
    with pytest.raises(ValueError, match=rf"p\.png: no probabilities of \['C'\]; {held}"):
        result_rows("p.png", photo, ["A", "C"])


def test_the_faces_csv_has_its_header_even_without_a_face(app: AppTest, downloads) -> None:
    """The Photos CSV download of photos without any face was a bare newline."""
    blank = encode(np.full((240, 320, 3), 128, np.uint8), "PNG")
    app.file_uploader(key="photos_upload").set_value(("blank.png", blank, "image/png"))
    app.run()
    assert app.info[-1].value == "No face found in any photo."
    # its "annotated" image would be the photo itself: no button offers it
    assert not [b for b in app.get("download_button") if b.proto.label == "Download annotated image"]
    header = downloads(app, "Results as CSV").decode().splitlines()
    assert header == [",".join([*RESULT_COLUMNS, "A_crp_label", "B_mixcut_label"])]


@pytest.mark.parametrize(
    ("faces", "charts_shown", "charts_by_column"), [(2, 2, [0, 2]), (3, 3, [1, 1, 1]), (4, 1, [0, 0, 1, 0])]
)
def test_photos_chart_each_of_a_few_faces_and_let_the_user_pick_among_more(
    app: AppTest, faces: int, charts_shown: int, charts_by_column: list[int]
) -> None:
    """A row of 2 faces is 2:1, beside its charts; 3 or 4 are wide photos (3:1, 4:1), shown the page's width with
    their charts in a row below (the picker in half of one): beside them their captions were unreadably small. The
    one chart of a picked face takes half the row too: in a third of it, it was squeezed beside two empty thirds."""
    from app.views import photos

    app.file_uploader(key="photos_upload").set_value([("row.png", encode(face_grid(1, faces), "PNG"), "image/png")])
    app.run()
    assert not app.exception, app.exception
    assert app.caption[0].value.startswith(f"{faces} face(s)")
    assert len(chart_titles(app)) == charts_shown
    assert [len(column.get("plotly_chart")) for column in app.main.columns] == charts_by_column
    pickers = [box for box in app.selectbox if box.key and box.key.startswith("photos_chart_face_")]
    assert len(pickers) == (faces > photos.MAX_CHARTS)
    if pickers:
        pickers[0].set_value(3).run()  # face #4
        assert chart_titles(app)[0].startswith("#4 ")


def test_a_tall_photo_is_shown_no_higher_than_the_page_allows(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1:3 picture filled its column's width, some 1,590 px high, its charts and the next photo far below."""
    import streamlit

    from app.views import photos

    widths: list[Any] = []
    real_container = streamlit.container

    def container(*args: Any, **kwargs: Any) -> Any:
        if isinstance(kwargs.get("width"), int):
            widths.append(kwargs["width"])
        return real_container(*args, **kwargs)

    monkeypatch.setattr(streamlit, "container", container)
    tall, square = face_grid(2, 1), face_grid(2, 2)  # 96 x 192 px; 192 x 192
    files = [("tall.png", encode(tall, "PNG"), "image/png"), ("square.png", encode(square, "PNG"), "image/png")]
    app.file_uploader(key="photos_upload").set_value(files).run()
    assert not app.exception, app.exception
    assert widths == [photos.MAX_PHOTO_HEIGHT // 2, photos.MAX_PHOTO_HEIGHT]  # a square one: its column's width


def test_photos_warn_when_a_crowd_reaches_the_face_limit(app: AppTest) -> None:
    app.number_input(key="photos_max_faces").set_value(10)
    app.file_uploader(key="photos_upload").set_value([("crowd.png", encode(face_grid(2, 8), "PNG"), "image/png")])
    app.run()
    assert not app.exception, app.exception
    assert app.caption[0].value.startswith("10 face(s)")
    assert "crowd.png: labelled the 10 most confident faces" in app.warning[0].value
    app.number_input(key="photos_max_faces").set_value(100)
    app.run()
    assert app.caption[0].value.startswith("16 face(s)") and not app.warning


def test_photos_downloads_speak_of_the_files_own_pixels(app: AppTest, downloads) -> None:
    """A photo over 4096 px is analysed and shown shrunk; the table and downloads give boxes in the file's pixels,
    upright per EXIF (the file is stored turned, so its stored width is the upright height)."""
    canvas = np.full((1200, 4300, 3), 200, np.uint8)
    canvas[200:1020, 3500:4200] = np.asarray(Image.fromarray(astronaut()[0:260, 120:340]).resize((700, 820)))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = encode(np.rot90(canvas), "JPEG", exif=exif, quality=95)
    app.file_uploader(key="photos_upload").set_value(("panorama.jpg", stored, "image/jpeg"))
    app.run()
    assert not app.exception and not app.error, (app.exception, app.error)
    assert app.caption[0].value.startswith("1 face(s) · 4300×1200 px (analysed and shown at 4096×1143 px)")
    (row,) = app.dataframe[0].value.to_dict("records")
    assert 3720 <= (row["x1"] + row["x2"]) / 2 <= 3980  # the face's middle is x 3850; in the shrunk copy x 3667
    assert 450 <= (row["y1"] + row["y2"]) / 2 <= 770  # y 610 in the file, 581 in the copy
    (photo,) = json.loads(downloads(app, "Results as JSON"))["images"]
    assert (photo["width"], photo["height"]) == (4300, 1200)
    assert [round(v) for v in photo["faces"][0]["box"]] == [row["x1"], row["y1"], row["x2"], row["y2"]]


def test_an_annotated_photo_drawn_shrunk_says_its_size_in_its_name() -> None:
    """Over 4096 px the annotated PNG is the shrunk picture while the CSV/JSON boxes are in the file's pixels; both
    downloads were named `<name>_annotated.png`, so nothing said the boxes would not fit it."""
    from app.views.photos import Analysed, annotated_name, annotated_zip
    from fer_core.pipeline import ImageResult

    pixels = np.zeros((1143, 4096, 3), np.uint8)
    shrunk = Analysed("pano.jpg", pixels, ImageResult([], 4096, 1143), file_size=(4300, 1200))
    whole = Analysed("face.png", pixels[:100, :100], ImageResult([], 100, 100), file_size=(100, 100))
    assert annotated_name(shrunk) == "pano_annotated_4096x1143.png"
    assert annotated_name(whole) == "face_annotated.png"
    with zipfile.ZipFile(io.BytesIO(annotated_zip([shrunk, whole], "ensemble"))) as archive:
        assert archive.namelist() == ["000_pano_annotated_4096x1143.png", "001_face_annotated.png"]


def test_two_photos_sharing_a_name_are_told_apart_everywhere(app: AppTest, downloads) -> None:
    """Phones name photos IMG_0001.jpg in every folder: two such uploads gave two identical groups of rows."""
    from app.uploads import distinct_names

    assert distinct_names(["a.png", "a.png", "a (2).png", "b"]) == ["a.png", "a (3).png", "a (2).png", "b"]
    face = encode(astronaut(), "PNG")
    broken = encode(astronaut(), "PNG")[:300]
    uploads = [("a.png", face, "image/png"), ("a.png", encode(astronaut()[:, ::-1], "PNG"), "image/png")]
    app.file_uploader(key="photos_upload").set_value([*uploads, ("a.png", broken, "image/png")]).run()
    assert not app.exception, app.exception
    assert [s.value for s in app.subheader][:2] == ["a.png", "a (2).png"]
    assert app.error[0].value.startswith("a (3).png: ")
    numbered = "3 files are named a.png: shown as a.png, a (2).png, a (3).png, in the order dropped."
    assert app.caption[0].value == numbered  # the uploader above lists all three as a.png
    assert list(app.dataframe[0].value["image"]) == ["a.png", "a (2).png"]
    photos = json.loads(downloads(app, "Results as JSON"))["images"]
    assert [photo["name"] for photo in photos] == ["a.png", "a (2).png"]


def test_the_annotated_download_is_drawn_when_asked_not_kept_per_photo(
    app: AppTest, downloads, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each photo's download button held a drawn copy of the photo until the next run: about 36 MB per 12 MP photo
    for as long as the session sat idle, on top of the decoded pixels. It now draws on click from those pixels."""
    import functools

    from streamlit.runtime.media_file_manager import MediaFileManager

    managers: list[MediaFileManager] = []

    class RecordingManager(MediaFileManager):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            managers.append(self)

    monkeypatch.setattr("streamlit.testing.v1.app_test.MediaFileManager", RecordingManager)
    app.file_uploader(key="photos_upload").set_value(("astronaut.png", encode(astronaut(), "PNG"), "image/png"))
    app.run()
    (button,) = [b for b in app.get("download_button") if b.proto.label == "Download annotated image"]
    make_png = managers[-1]._deferred_callables[button.proto.deferred_file_id]["callable"]

    def arrays(obj: Any) -> list[np.ndarray]:
        if isinstance(obj, np.ndarray):
            return [obj]
        if isinstance(obj, functools.partial):
            return [a for part in (*obj.args, *obj.keywords.values()) for a in arrays(part)]
        if hasattr(obj, "__dataclass_fields__"):
            return [a for name in obj.__dataclass_fields__ for a in arrays(getattr(obj, name))]
        if isinstance(obj, list | tuple):
            return [a for part in obj for a in arrays(part)]
        cells = getattr(obj, "__closure__", None) or ()
        return [a for cell in cells for a in arrays(cell.cell_contents)]

    (decoded, _), *_ = app.session_state["_memo_decoded"].values()
    assert all(held is decoded for held in arrays(make_png))  # old code: the drawn copy, held by the button
    drawn = np.asarray(Image.open(io.BytesIO(cast(bytes, make_png()))).convert("RGB"))
    assert drawn.shape == decoded.shape and not np.array_equal(drawn, decoded)  # the boxes are drawn


SHIPPED_DETECTOR = REPO / "weights" / "face_yolo.pt"


@pytest.mark.skipif(not SHIPPED_DETECTOR.is_file(), reason="no shipped weights/face_yolo.pt")
def test_photos_multiscale_detection_with_the_shipped_detector(
    app_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "weights"
    shutil.copytree(app_weights, folder)
    shutil.copy(SHIPPED_DETECTOR, folder / SHIPPED_DETECTOR.name)
    monkeypatch.setenv("FER_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("FER_RUNTIME", "torch")
    multiscale_runs: list[tuple[int, ...]] = []
    real_tta = FaceDetector._detect_yolo_tta
    monkeypatch.setattr(
        FaceDetector,
        "_detect_yolo_tta",
        lambda self, rgb: multiscale_runs.append(rgb.shape) or real_tta(self, rgb),  # type: ignore[func-returns-value]
    )
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    switch = at.checkbox(key="photos_det_tta")
    assert switch.value is False and not switch.disabled  # offered with YOLO, off by default (6x the time)
    at.file_uploader(key="photos_upload").set_value(("astronaut.png", encode(astronaut(), "PNG"), "image/png"))
    at.run()
    assert at.caption[0].value.startswith("1 face(s)") and multiscale_runs == []
    at.checkbox(key="photos_det_tta").set_value(True).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert at.caption[0].value.startswith("1 face(s)")
    assert multiscale_runs == [(512, 512, 3)]  # the switch reached the detector
    at.radio(key="photos_backend").set_value("haar").run()
    assert at.checkbox(key="photos_det_tta").disabled  # the Haar cascade has no TTA
    assert at.caption[0].value.startswith("1 face(s)")


def test_the_page_the_app_opens_on_says_what_every_page_is_for_and_links_to_it(app: AppTest) -> None:
    """It explained Photos only: nothing said what Webcam, Ensemble comparison or Video were for. Then it named them
    "in the menu on the left", which a phone folds away behind a small arrow: they are links now."""
    from app import ui

    assert app.info[0].value.startswith("Every face is boxed")
    links = [(link.proto.page, link.proto.label) for link in app.main.get("page_link")]
    others = [page for page in ui.PAGE_TITLES_AND_ICONS if page != ui.PHOTOS_PAGE]
    assert [page for page, _ in links] == [Path(page).stem for page in others] and len(others) == 3  # URL paths
    for (_, label), other in zip(links, others, strict=True):
        title = ui.PAGE_TITLES_AND_ICONS[other][0]
        assert label.startswith(f"**{title}**: ") and len(label) > len(title) + 20, label  # what it is for


def test_a_photo_s_faces_are_also_listed_in_words_under_it(app: AppTest) -> None:
    """The emotion of a face whose caption shrank to "#3" was told by its box's colour alone, and images carry no
    text for a screen reader: the caption under the photo lists the boxes."""
    from app import ui as app_ui
    from fer_core.verdict import model_view

    app.file_uploader(key="photos_upload").set_value(("astronaut.png", encode(astronaut(), "PNG"), "image/png"))
    app.run()
    boxed = chart_titles(app)[0].split()[1:3]  # "#1 happy 57%"
    captions = [image.caption for element in app.get("image") for image in element.proto.imgs]
    assert captions == [f"#1 {boxed[0]} {boxed[1]}"]
    bars = json.loads(app.get("plotly_chart")[0].proto.spec)["data"][0]["text"]  # as the box says it: 57%, not 0.57
    assert boxed[1].endswith("%") and boxed[1] in bars and all(text.endswith("%") for text in bars)
    hover = json.loads(app.get("plotly_chart")[0].proto.spec)["data"][0]["hovertemplate"]
    assert hover == "%{y}: %{x:.1%}<extra></extra>"  # 57.3%, not 0.573 beside "57%"
    views = [model_view(dict.fromkeys(EMOTIONS, 0.0) | {"sad": 0.6, "fear": 0.4})] * (app_ui.FACES_IN_WORDS + 2)
    listed = app_ui.faces_in_words(views, " (see below)")
    assert listed.startswith("#1 sad 60%, #2 sad 60%") and listed.endswith(", #12 sad 60% and 2 more (see below)")
    assert app_ui.faces_in_words([]) == ""


def test_photos_single_model_and_gradcam(app: AppTest) -> None:
    app.file_uploader(key="photos_upload").set_value(("astronaut.png", encode(astronaut(), "PNG"), "image/png"))
    app.selectbox(key="photos_model").set_value("B_mixcut")
    app.toggle(key="photos_gradcam").set_value(True)
    app.run()
    assert not app.exception, app.exception
    assert app.caption[0].value.endswith("B_mixcut")
    layout = json.loads(app.get("plotly_chart")[0].proto.spec)["layout"]  # the model under the title, its own line
    assert layout["title"]["subtitle"]["text"] == "B_mixcut" and "B_mixcut" not in layout["title"]["text"]
    assert cam_pickers(app, "Class")[0].value == "label"
    predicted = chart_titles(app)[0].split()[1]
    other = next(e for e in EMOTIONS if e != predicted)
    cam_pickers(app, "Class")[0].set_value(other).run()
    assert not app.exception and not app.error
    captions = [image.caption for element in app.get("image") for image in element.proto.imgs]
    assert any(c.startswith(f"B_mixcut: {other} (") for c in captions), captions  # the class asked for


def test_heat_maps_start_on_the_class_the_box_shows(app: AppTest) -> None:
    """They started on each member's own top class: "A_crp: neutral" under a face the ensemble boxed "happy"."""
    app.file_uploader(key="photos_upload").set_value(("astronaut.png", encode(astronaut(), "PNG"), "image/png"))
    app.toggle(key="photos_gradcam").set_value(True)
    app.run()
    assert not app.exception and not app.error, (app.exception, app.error)
    boxed = chart_titles(app)[0].split()[1]  # "#1 happy 57%"
    assert cam_pickers(app, "Class")[0].options[0] == f"its label ({boxed})"
    captions = [image.caption for element in app.get("image") for image in element.proto.imgs]
    assert sorted(c.split(" (")[0] for c in captions if ": " in c) == [f"A_crp: {boxed}", f"B_mixcut: {boxed}"]


def test_a_click_does_not_decode_the_uploads_again(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rerun (a model picker, the weight slider) decoded every upload again: 1.5 s per 12 MP JPEG here."""
    from app import memo
    from fer_core import imageio as fer_imageio

    decoded: list[str] = []
    original = fer_imageio.load_image_sized

    def counting(data: bytes, name: str) -> Any:
        decoded.append(name)
        return original(data, name=name)

    monkeypatch.setattr(memo, "load_image_sized", counting)  # the name the session store decodes with
    monkeypatch.setattr("fer_core.imageio.load_image_sized", counting)  # as page scripts import it on every run
    photo = ("astronaut.png", encode(astronaut(), "PNG"), "image/png")
    app.file_uploader(key="photos_upload").set_value(photo).run()
    app.selectbox(key="photos_model").set_value("B_mixcut").run()
    assert not app.exception and decoded == ["astronaut.png"]
    image = app.session_state["_memo_decoded"][next(iter(app.session_state["_memo_decoded"]))][0]
    assert not image.flags.writeable  # shared between reruns: an in-place edit would show in the next run
    app.switch_page("views/compare.py").run()
    app.radio(key="compare_source").set_value("Upload a photo").run()  # not the Photos page's copy: dropped again
    app.file_uploader(key="compare_upload").set_value(photo).run()
    app.slider(key="compare_weight").set_value(0.9).run()
    assert not app.exception and decoded == ["astronaut.png"]  # the same file on another page: decoded once


def cam_pickers(app: AppTest, label: str) -> list[Any]:
    """The Grad-CAM selectboxes with this label, one per photo, in page order."""
    return [box for box in app.selectbox if box.label == label]


def test_a_removed_photo_does_not_hand_its_gradcam_choices_to_the_next(app: AppTest) -> None:
    two = ("two.png", encode(np.concatenate([astronaut(), astronaut()], axis=1), "PNG"), "image/png")
    one = ("one.png", encode(astronaut(), "PNG"), "image/png")
    app.file_uploader(key="photos_upload").set_value([two, one])
    app.toggle(key="photos_gradcam").set_value(True)
    app.run()
    per_photo = [c.value.split(" · ")[0] for c in app.main.caption if "face(s)" in c.value]
    assert per_photo == ["2 face(s)", "1 face(s)"]
    cam_pickers(app, "Face")[0].set_value(1)
    cam_pickers(app, "Class")[0].set_value("happy")
    cam_pickers(app, "Class")[1].set_value("sad").run()
    visit_another_page_and_return(app, "views/photos.py")  # the choices are kept too, not only the photos
    assert [box.value for box in cam_pickers(app, "Face")] == [1, 0]
    assert [box.value for box in cam_pickers(app, "Class")] == ["happy", "sad"]
    remove_kept(app, "two.png")  # one.png moves up to the first place
    assert not app.exception, app.exception
    assert cam_pickers(app, "Face")[0].value == 0 and cam_pickers(app, "Class")[0].value == "sad"  # its own choice
    app.file_uploader(key="photos_upload").set_value([one, one]).run()  # the same file twice: two sets of pickers
    assert not app.exception, app.exception
    assert [box.value for box in cam_pickers(app, "Class")] == ["sad", "label"]
    same_as_one = ("copy.png", one[1], "image/png")  # the same photo under another name, each with its choice
    app.file_uploader(key="photos_upload").set_value([one, same_as_one]).run()
    cam_pickers(app, "Class")[1].set_value("angry").run()
    assert [box.value for box in cam_pickers(app, "Class")] == ["sad", "angry"]
    app.file_uploader(key="photos_upload").set_value([same_as_one]).run()  # copy.png was handed one.png's "sad"
    assert [box.value for box in cam_pickers(app, "Class")] == ["angry"]


def test_detection_sliders_reach_the_detector(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[tuple[float, int]] = []
    real_detect = FaceDetector.detect

    def recording_detect(self: FaceDetector, rgb: np.ndarray, file_size: tuple[int, int] | None = None) -> list:
        used.append((self.conf, self.min_face))
        return real_detect(self, rgb, file_size)

    monkeypatch.setattr(FaceDetector, "detect", recording_detect)
    app.file_uploader(key="photos_upload").set_value(("astronaut.png", encode(astronaut(), "PNG"), "image/png"))
    app.slider(key="photos_conf").set_value(0.8)
    app.run()
    assert used[-1] == (0.8, 16)
    app.slider(key="photos_conf").set_value(0.35)
    app.slider(key="photos_min_face").set_value(200).run()  # the astronaut's face is about 90 px
    assert used[-1] == (0.35, 200) and app.caption[0].value.startswith("0 face(s)")


def test_settings_survive_a_visit_to_another_page(app: AppTest) -> None:
    """Streamlit drops the value of a widget a run does not draw: every page re-stores its settings."""
    app.slider(key="photos_conf").set_value(0.8)
    app.selectbox(key="photos_model").set_value("B_mixcut")
    app.number_input(key="photos_max_faces").set_value(250)
    app.run()
    app.switch_page("views/video.py").run()
    app.number_input(key="video_every").set_value(5).run()
    app.switch_page("views/compare.py").run()
    app.switch_page("views/photos.py").run()
    assert not app.exception, app.exception
    assert app.slider(key="photos_conf").value == 0.8 and app.selectbox(key="photos_model").value == "B_mixcut"
    assert app.number_input(key="photos_max_faces").value == 250
    app.switch_page("views/video.py").run()
    assert app.number_input(key="video_every").value == 5


def test_the_follow_switch_reaches_the_live_store_and_survives_a_visit(app: AppTest) -> None:
    app.switch_page("views/webcam.py").run()
    assert app.toggle(key="webcam_follow").value is True
    assert app.session_state["webcam_store"]._settings.follow is True
    app.toggle(key="webcam_follow").set_value(False).run()
    app.switch_page("views/compare.py").run()
    app.switch_page("views/photos.py").run()
    app.switch_page("views/webcam.py").run()
    assert not app.exception, app.exception
    assert app.toggle(key="webcam_follow").value is False
    assert app.session_state["webcam_store"]._settings.follow is False


def test_gradcam_predicted_explains_the_label_the_chart_shows(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Grad-CAM runs on one view; with test-time views its own top class can differ from the chart's."""
    from app import ui
    from fer_core.explain import Explanation

    app.file_uploader(key="photos_upload").set_value(("astronaut.png", encode(astronaut(), "PNG"), "image/png"))
    app.selectbox(key="photos_model").set_value("B_mixcut")
    app.run()
    label, probability = chart_titles(app)[0].split()[1:3]  # "#1 happy 74%", "B_mixcut" under it
    other = next(name for name in EMOTIONS if name != label)
    asked: list[str | None] = []

    class OneViewExplainer:  # its single view prefers another class than the charts show
        def explain(self, crop: np.ndarray, target: str | None = None) -> Explanation:
            asked.append(target)
            probs = {name: (0.9 if name == other else 0.1 / 6) for name in EMOTIONS}
            return Explanation(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8)), target or other, probs)

    monkeypatch.setattr(ui, "load_explainer", lambda checkpoint: OneViewExplainer())
    app.toggle(key="photos_gradcam").set_value(True).run()
    assert not app.exception, app.exception
    assert asked == [label]
    captions = [image.caption for element in app.get("image") for image in element.proto.imgs]
    assert f"B_mixcut: {label} ({probability})" in captions


def fake_streamer(playing: bool, picture: np.ndarray | None = None) -> Any:
    """Stands in for webrtc_streamer (it needs a real server): feeds frames (astronaut unless told) through the
    callback."""
    picture = astronaut() if picture is None else picture

    def streamer(**kwargs: Any) -> Any:
        assert kwargs["rtc_configuration"] == {"iceServers": []}
        deadline = time.monotonic() + 120
        while playing:  # until the analysis thread's boxes come back on the returned frames
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            out = kwargs["video_frame_callback"](frame).to_ndarray(format="rgb24")
            if not np.array_equal(out, picture) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return types.SimpleNamespace(state=types.SimpleNamespace(playing=playing))

    return streamer


def test_webcam_page_live_panel_and_snapshot(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    import streamlit_webrtc

    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", fake_streamer(playing=False))
    app.switch_page("views/webcam.py").run()
    assert not app.exception, app.exception
    assert app.info[0].value.startswith("Press START")
    assert "NotFoundError, it found no camera" in app.info[0].value  # the browser's raw error stood unexplained
    assert not [c for c in app.caption if c.value.startswith("The last stream")]  # none yet
    app.button(key="webcam_snapshot_button").click().run()
    assert "No current camera frame" in app.warning[0].value

    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", fake_streamer(playing=True))
    app.run()
    assert not app.exception, app.exception
    status = app.text[0].value
    assert status.startswith("faces: 1 (") and status.endswith(" FPS"), status
    assert chart_titles(app)[0].startswith("Face #1:")
    assert chart_titles(app)[0].endswith(" (smoothed)")  # EMA by default
    assert not app.dataframe  # one face: its chart says it all
    app.radio(key="webcam_smoothing").set_value("none").run()  # the title said "(smoothed)" with smoothing off
    assert chart_titles(app)[0].startswith("Face #1:")
    assert "smoothed" not in chart_titles(app)[0]

    from app.live import STALE_AFTER_S

    frozen = types.SimpleNamespace(state=types.SimpleNamespace(playing=True))
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", lambda **kwargs: frozen)  # still playing, no frames
    store = app.session_state["webcam_store"]
    clock = store._clock
    store._clock = lambda: clock() + 2 * STALE_AFTER_S
    app.run()
    assert app.warning[0].value.startswith("No camera frame for 1") and "Press STOP, then START" in app.warning[0].value
    store._clock = clock

    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", fake_streamer(playing=False))  # STOP pressed
    app.button(key="webcam_snapshot_button").click().run()  # the frame is a second old, but the camera is off
    assert "No current camera frame" in app.warning[0].value
    ended = [c.value for c in app.caption if c.value.startswith("The last stream ran ")]
    assert len(ended) == 1 and ended[0].endswith(
        "Press START to go on. (A stream that ended without STOP lost its connection, which a machine too busy can do.)"
    ), ended
    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", fake_streamer(playing=True))
    app.button(key="webcam_snapshot_button").click().run()  # switches to the comparison page
    assert not app.exception, app.exception
    assert app.radio(key="compare_source").value == "Webcam snapshot"
    assert len(app.get("plotly_chart")) >= 3
    assert any(c.value.startswith("The snapshot is analysed again here") for c in app.caption)  # why figures differ


def test_webcam_page_lists_every_face_when_several_are_in_view(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    import streamlit_webrtc

    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", fake_streamer(playing=True, picture=face_grid(1, 2)))
    app.switch_page("views/webcam.py").run()
    deadline = time.monotonic() + 120
    while not app.text[0].value.startswith("faces: 2") and time.monotonic() < deadline:  # the thread catches up
        time.sleep(0.2)
        app.run()
    assert not app.exception, app.exception
    assert app.text[0].value.startswith("faces: 2"), app.text[0].value
    table = app.dataframe[0].value  # a column per face, emotions down the side
    assert list(table.columns) == ["#1", "#2"] and list(table.index) == list(EMOTIONS)
    np.testing.assert_allclose(table.sum(axis=0), 1.0, atol=1e-6)
    labels = app.text[0].value  # "faces: 2 (#n label p) ...": the followed face's number and its column's top class
    assert any(labels.startswith(f"faces: 2 ({c} {table[c].idxmax()} ") for c in table.columns), labels
    charted = labels.split("(")[1].split()[0]  # "#2"
    assert any(c.value.startswith("Every face, smoothed (columns") for c in app.caption)
    assert any(c.value.endswith(f"; the chart above: {charted})") for c in app.caption)  # which column it shows
    app.radio(key="webcam_smoothing").set_value("none").run()
    assert any(c.value.startswith("Every face (columns") for c in app.caption)


@pytest.mark.parametrize("page", ["photos", "compare", "video", "webcam"])
def test_each_page_says_why_its_minimum_face_size_starts_where_it_does(app: AppTest, page: str) -> None:
    """A user met 16 px on Photos, 24 on Video and 32 on Webcam with no word of why (the live detector runs at
    320 px); the help now names every page's start, from the same table the pages use."""
    from app import ui

    app.switch_page(f"views/{page}.py").run()
    assert not app.exception, app.exception
    slider = app.slider(key=f"{page}_min_face")
    assert slider.value == ui.PAGE_DETECTION[page][0]
    assert "Photos 16 px (detector at 640 px)" in slider.help and "Webcam 32 px (detector at 320 px)" in slider.help


@pytest.mark.parametrize(
    ("settings", "smooths"),
    [
        ({}, True),
        ({"alpha": 1.0}, False),
        ({"smoothing": "window", "window": 5}, True),
        ({"smoothing": "window", "window": 1}, False),
        ({"smoothing": "none"}, False),
    ],
)
def test_live_labels_say_smoothed_only_when_earlier_frames_count(settings: dict[str, Any], smooths: bool) -> None:
    from app.live import TrackerSettings

    assert TrackerSettings(**settings).smooths is smooths


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[{"urls": 5}]', "server 1: 'urls' must be"),
        ('[{"urls": "stun:a"}, {"urls": []}]', "server 2: 'urls' must be"),
        ('[{"urls": "turn:a", "username": 7}]', "'username' must be a string"),
        ('{"urls": "stun:a"}', "expected a JSON list"),
        ("[{urls: stun}]", "Expecting property name"),
    ],
)
def test_ice_server_lists_are_checked_before_the_browser_sees_them(text: str, problem: str) -> None:
    """Only the presence of 'urls' was checked: `"urls": 5` went to the browser, which fails without a word."""
    from app.live import parse_ice_servers

    with pytest.raises(ValueError, match=problem):
        parse_ice_servers(text)
    good = '[{"urls": ["stun:a:3478", "stun:b"]}, {"urls": "turn:c", "username": "u", "credential": "p"}]'
    assert parse_ice_servers(good) == json.loads(good)


def test_live_store_counts_the_frames_the_browser_took_apart_from_those_drawn() -> None:
    from app.live import STALE_AFTER_S, LiveStore, SentNotice

    now = [100.0]
    store = LiveStore(clock=lambda: now[0])  # no models: only the rates
    assert store.status().sent_fps == 0.0  # no relay told anything: the page shows the drawn rate alone
    for number in range(20):
        drawn = store.callback(av.VideoFrame.from_ndarray(astronaut(), format="rgb24"))
        if number % 2:  # the relay dropped every other frame; the ones its sender took it tells the store of
            cast(SentNotice, drawn.opaque).frame_sent()
        now[0] += 0.1
    status = store.status()
    assert status.video_fps == pytest.approx(10.0) and status.sent_fps == pytest.approx(5.0)
    now[0] += 2 * STALE_AFTER_S  # the camera stopped: no rate is current
    assert store.status().sent_fps == 0.0
    restarted = store.callback(av.VideoFrame.from_ndarray(astronaut(), format="rgb24"))  # START again
    cast(SentNotice, restarted.opaque).frame_sent()
    now[0] += 0.1
    assert store.status().sent_fps == 0.0  # one stamp of the new stream, not 11 over the pause


def test_live_store_says_when_the_stream_stopped_and_when_a_playing_one_stalls() -> None:
    """A connection lost under load sent the page back to "Press START" (or left it playing a frozen video) without
    a word: the store keeps the newest stream's span past its end, and counts the seconds a playing one is silent."""
    from dataclasses import replace

    from app.live import STALE_AFTER_S, LiveStore, TrackerSettings

    now = [100.0]
    store = LiveStore(clock=lambda: now[0])
    store.configure(lambda image: ImageResult([], image.shape[1], image.shape[0]), TrackerSettings())  # type: ignore[arg-type]
    assert store.last_stream() is None and store.stalled_for() == 0.0
    store.playing(True)
    frame = np.zeros((48, 64, 3), np.uint8)
    for _ in range(3):  # 3 frames over 2 s, each analysed by the store's thread
        analysed_once(store, frame)
        now[0] += 1.0
    assert store.stalled_for() == pytest.approx(1.0)
    now[0] += 2 * STALE_AFTER_S  # the frames stop; streamlit-webrtc still says it plays
    assert store.stalled_for() == pytest.approx(1.0 + 2 * STALE_AFTER_S)
    store.playing(False)  # STOP, or the browser noticed the lost connection
    store.end_stream()
    assert store.stalled_for() == 0.0
    span = store.last_stream()  # kept past the end
    assert span is not None and (span.seconds, span.analysed) == (pytest.approx(2.0), 3)
    assert span.idle == pytest.approx(1.0 + 2 * STALE_AFTER_S)
    ended = time.strftime("%H:%M:%S", time.localtime(1000.0 - span.idle))
    assert (
        span.summary(wall_now=1000.0)
        == f"The last stream ran 2 s (3 frames analysed); its last frame came at {ended} (server time)."
    )
    assert replace(span, seconds=72.4).summary(1000.0).startswith("The last stream ran 1 min 12 s (")

    store.playing(True)  # START: no frame yet is not a stall, for the first seconds
    assert store.stalled_for() == 0.0
    now[0] += 1.0
    store.process(frame)  # the new stream's first frame starts a new span
    span = store.last_stream()
    assert span is not None and (span.seconds, span.analysed, span.idle) == (0.0, 0, 0.0)


def test_live_store_starts_afresh_when_the_camera_restarts(app_weights: Path) -> None:
    from app.live import STALE_AFTER_S, LiveStatus, LiveStore, TrackerSettings

    now = [100.0]
    frame = astronaut()
    counter = LiveStore(clock=lambda: now[0])  # no models: only the camera's frame rate
    for _ in range(10):
        counter.process(frame)
        now[0] += 0.1
    assert counter.status().video_fps == pytest.approx(10.0)
    now[0] += 10 * STALE_AFTER_S  # STOP, a pause, START
    for _ in range(2):
        counter.process(frame)
        now[0] += 0.1
    assert counter.status().video_fps == pytest.approx(10.0)  # not 11 frames over 51 s

    store = LiveStore(clock=lambda: now[0])
    store.configure(Pipeline.load(app_weights, runtime="torch", detector_backend="haar"), TrackerSettings())

    def one_analysed_frame(image: np.ndarray = frame) -> LiveStatus:
        return analysed_once(store, image)

    for _ in range(3):
        status = one_analysed_frame()
    assert [(f.track_id, f.age) for f in status.faces] == [(1, 3)]
    now[0] += 10 * STALE_AFTER_S
    status = one_analysed_frame()
    assert [(f.track_id, f.age) for f in status.faces] == [(1, 1)]  # a new track, not the old one continued
    status = one_analysed_frame()
    assert [(f.track_id, f.age) for f in status.faces] == [(1, 2)]
    smaller = cv2.resize(frame, (256, 256), interpolation=cv2.INTER_AREA)  # WebRTC lowers the resolution
    status = one_analysed_frame(smaller)
    (face,) = status.faces
    assert face.track_id == 1 and face.age >= 3  # the same face goes on (its smoothing too), not a new track
    assert max(face.box) <= 256  # in the new frame's pixels
    status = one_analysed_frame()
    store.end_stream()  # STOP then START at once (or another camera): the browser says the track ended
    assert store.latest_frame() is None and store.status().video_fps == 0.0
    status = one_analysed_frame()
    assert [(f.track_id, f.age) for f in status.faces] == [(1, 1)]  # not the previous stream's track at age 3


def test_live_store_drops_an_analysis_that_outlived_its_stream() -> None:
    """A frame still in the models when the camera restarts must not put the old faces into the fresh tracker."""
    from app.live import STALE_AFTER_S, LiveStore, TrackerSettings

    now = [100.0]
    store = LiveStore(clock=lambda: now[0])
    old_frame = np.zeros((48, 64, 3), np.uint8)

    def pipe_during_which_the_camera_restarts(image: np.ndarray) -> ImageResult:
        if image is not old_frame:  # the new stream's frame, analysed by the store's own thread
            return ImageResult([], image.shape[1], image.shape[0])
        now[0] += 10 * STALE_AFTER_S
        store.process(np.ones((48, 64, 3), np.uint8))  # the first frame of the new stream
        probs = {name: 1 / len(EMOTIONS) for name in EMOTIONS}
        face = FaceResult((8.0, 8.0, 40.0, 40.0), 0.9, "angry", 1 / 7, probs, {"ensemble": probs})
        return ImageResult([face], image.shape[1], image.shape[0])

    store.configure(pipe_during_which_the_camera_restarts, TrackerSettings())  # type: ignore[arg-type]
    store._received_at.append(now[0])
    assert store.analyse(old_frame) == []  # old code: the old face became track 1 of the new stream


def wait_until(condition: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def analysed_once(store: Any, image: np.ndarray, timeout: float = 60.0) -> Any:
    """Hand `image` to a `LiveStore`'s callback path and wait for its analysis thread to take one more frame."""
    before = store.status().frames
    store.process(image)
    wait_until(lambda: store.status().frames > before, timeout)
    return store.status()


def centred_face_pipeline(image: np.ndarray) -> ImageResult:
    """One sure-happy face in the middle of whatever frame it is given."""
    height, width = image.shape[:2]
    probs = {name: (1.0 if name == "happy" else 0.0) for name in EMOTIONS}
    box = (width * 0.4, height * 0.4, width * 0.6, height * 0.6)
    return ImageResult([FaceResult(box, 0.9, "happy", 1.0, probs, {"ensemble": probs})], width, height)


def test_a_frame_taken_before_a_resize_does_not_feed_the_resized_stream() -> None:
    """The analysis thread took a 640x480 frame; the callback then got a 320x240 one (the tracks move to the new
    pixels) before the analysis began. The old frame's boxes, in old pixels, must not enter the rescaled tracker."""
    from app.live import LiveStore, TrackerSettings

    store = LiveStore()
    large, small = np.zeros((480, 640, 3), np.uint8), np.zeros((240, 320, 3), np.uint8)
    results: list[list[Any]] = []
    analyse = store.analyse

    def callback_lands_in_between(image: np.ndarray, *stream: int) -> list[Any]:
        if image is large and not results:
            store.process(small)
        results.append(analyse(image, *stream))
        return results[-1]

    store.analyse = callback_lands_in_between  # type: ignore[method-assign, assignment]
    store.configure(centred_face_pipeline, TrackerSettings())  # type: ignore[arg-type]
    store.process(large)
    wait_until(lambda: len(results) >= 2)  # the large frame, then the small one
    assert results[0] == []  # old code: a 640x480 box became the track of the 320x240 stream
    assert [f.box for f in results[1]] == [(128.0, 96.0, 192.0, 144.0)]


def record_drawn_boxes(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """Every list of boxes the live callback draws from now on, in order (it still draws them)."""
    from app import live

    drawn: list[list[Any]] = []
    draw = live.draw_faces

    def recording(image: np.ndarray, faces: list[Any]) -> np.ndarray:
        drawn.append([face[0] for face in faces])
        return draw(image, faces)

    monkeypatch.setattr(live, "draw_faces", recording)
    return drawn


@pytest.mark.parametrize("follow", [True, False])
def test_the_boxes_stay_drawn_in_the_new_pixels_when_webrtc_changes_the_resolution(
    monkeypatch: pytest.MonkeyPatch, follow: bool
) -> None:
    """They vanished until the next analysis: for a few frames at each of the changes a busy browser makes."""
    from app import live

    drawn = record_drawn_boxes(monkeypatch)
    store = live.LiveStore()
    store.configure(centred_face_pipeline, live.TrackerSettings(follow=follow))  # type: ignore[arg-type]
    large = cv2.resize(astronaut(), (640, 480))
    analysed_once(store, large)
    store.analyse = lambda *args: []  # type: ignore[method-assign]  # no analysis from here on
    store.process(cv2.resize(large, (320, 240), interpolation=cv2.INTER_AREA))
    np.testing.assert_allclose(drawn[-1], [(128.0, 96.0, 192.0, 144.0)], atol=1.0)  # old code: nothing drawn
    store.process(large)  # and back up
    np.testing.assert_allclose(drawn[-1], [(256.0, 192.0, 384.0, 288.0)], atol=2.0)


def test_another_camera_starts_new_tracks_and_a_lower_resolution_does_not() -> None:
    """streamlit-webrtc swaps the device on the same track (no end of stream): a frame of another shape is another
    view, whose faces must not inherit the ids and smoothed emotions of the faces followed so far."""
    from app.live import LiveStore, TrackerSettings, same_view

    assert same_view((480, 640, 3), (240, 320, 3)) and same_view((360, 640, 3), (240, 427, 3))
    assert not same_view((480, 640, 3), (720, 1280, 3)) and not same_view((480, 640, 3), (640, 480, 3))
    store = LiveStore()
    store.configure(centred_face_pipeline, TrackerSettings())  # type: ignore[arg-type]

    def analysed(shape: tuple[int, int]) -> list[Any]:
        return [(f.track_id, f.age) for f in analysed_once(store, np.zeros((*shape, 3), np.uint8)).faces]

    assert [analysed((480, 640)) for _ in range(3)][-1] == [(1, 3)]
    assert analysed((240, 320)) == [(1, 4)]  # the same camera at a lower resolution: the face goes on
    assert analysed((720, 1280)) == [(1, 1)]  # another camera: a new track (old code: (1, 5))


def test_a_failing_video_callback_hands_the_frame_back_and_says_why() -> None:
    """An exception out of the callback ends streamlit-webrtc's video for good, with nothing on the page."""
    from app.live import LiveStore

    store = LiveStore()
    frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
    assert store.callback(frame).to_ndarray(format="rgb24").shape == (48, 64, 3)

    def broken(image: np.ndarray) -> np.ndarray:
        raise MemoryError("drawing")

    store.process = broken  # type: ignore[method-assign, assignment]
    assert store.callback(frame) is frame
    assert store.status().error == "MemoryError: drawing"


def test_a_drawing_failure_stays_on_the_page_while_frames_are_analysed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Each analysed frame cleared the callback's error at once, so it was never shown and logged every frame."""
    from app import live

    def broken_drawing(*args: Any) -> np.ndarray:
        raise RuntimeError("drawing")

    monkeypatch.setattr(live, "draw_faces", broken_drawing)
    store = live.LiveStore()
    store.configure(centred_face_pipeline, live.TrackerSettings())  # type: ignore[arg-type]
    frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
    with caplog.at_level(logging.ERROR, logger="app.live"):
        for _ in range(10):
            before = store.status().frames
            assert store.callback(frame) is frame or before == 0  # no boxes before the first analysis
            wait_until(cast(Callable[[], bool], lambda b=before: store.status().frames > b))
    assert store.status().frames >= 9 and store.status().error == "RuntimeError: drawing"
    assert len(caplog.records) == 1


@pytest.mark.parametrize(("follow", "kept", "followed"), [(True, 30, True), (False, 30, False), (True, 3, False)])
def test_live_boxes_follow_a_moving_face_while_the_models_lag(
    monkeypatch: pytest.MonkeyPatch, follow: bool, kept: int, followed: bool
) -> None:
    """The callback drew the latest result where it was found: at up to 28 px a frame, a result 7 frames old was
    drawn about 150 px behind the face. Followed through the kept frames since, it lands on the face; switched off,
    or older than the frames kept, it is drawn where it was found. The next result (frame 6, 1.7 face widths on)
    keeps the face's track id where it was followed there, and takes a new one (MAX_JUMP is 1.5) where it was not."""
    from app import live
    from fer_core.bench_motion import PATHS, clip
    from fer_core.tracking import iou_matrix

    monkeypatch.setattr(live, "CATCH_UP_FRAMES", kept)
    pictures, truth = zip(*clip(next(p for p in PATHS if p.name == "fast"), 8), strict=True)
    drawn = record_drawn_boxes(monkeypatch)
    release, finish = threading.Event(), threading.Event()
    calls: list[np.ndarray] = []

    def lagging_pipeline(image: np.ndarray) -> ImageResult:
        calls.append(image)
        (release if len(calls) == 1 else finish).wait(30)
        box = truth[next(i for i, picture in enumerate(pictures) if picture is image)]
        probs = {name: (1.0 if name == "happy" else 0.0) for name in EMOTIONS}
        return ImageResult([FaceResult(box, 0.9, "happy", 1.0, probs, {"ensemble": probs})], 640, 480)

    store = live.LiveStore()
    store.configure(lagging_pipeline, live.TrackerSettings(follow=follow))  # type: ignore[arg-type]
    try:
        store.process(pictures[0])
        wait_until(lambda: len(calls) == 1)
        for picture in pictures[1:7]:
            store.process(picture)  # frame 0 is in the models for all of these
        release.set()
        wait_until(lambda: store.status().frames == 1)
        store.process(pictures[7])  # frame 6 is in the models now, and frame 7 next
    finally:
        finish.set()
    assert len(drawn) == 1  # nothing drawn before the first result
    (box,) = drawn[0]
    if followed:
        assert iou_matrix(np.array(box), np.array(truth[7]))[0, 0] > 0.95
    else:
        assert box == truth[0]
    wait_until(lambda: store.status().frames == 3)
    assert [face.track_id for face in store.status().faces] == [1 if followed else 2]
    store.process(pictures[7])  # camera frame 9: the result of frame 8 is anchored and followed one frame on
    # the followed boxes kept for the tracker are the newest result's only: those of the first result, also kept for
    # frames 2-8, would be looked up first for a frame both had followed
    assert [number for number, _ in store._moved] == ([9] if follow else [])


def test_a_moved_smoothing_slider_keeps_the_faces_followed() -> None:
    """configure() built a new tracker on any change: ids restarted at 1 and the labels went raw for a while."""
    from app.live import LiveStore, TrackerSettings

    probs = {name: 1 / len(EMOTIONS) for name in EMOTIONS}
    face = FaceResult((8.0, 8.0, 40.0, 40.0), 0.9, "angry", 1 / 7, probs, {"ensemble": probs})

    def pipe(image: np.ndarray) -> ImageResult:
        return ImageResult([face], image.shape[1], image.shape[0])

    store = LiveStore()
    store.configure(pipe, TrackerSettings())  # type: ignore[arg-type]
    frame = np.zeros((48, 64, 3), np.uint8)
    for _ in range(3):
        tracked = store.analyse(frame)
    assert [(f.track_id, f.age) for f in tracked] == [(1, 3)]
    store.configure(pipe, TrackerSettings(alpha=0.2, window=3))  # type: ignore[arg-type]
    assert [(f.track_id, f.age) for f in store.analyse(frame)] == [(1, 4)]


def test_live_store_survives_a_tracker_failure_and_offers_no_stale_snapshot() -> None:
    from app.live import STALE_AFTER_S, LiveStore, TrackerSettings

    now = [100.0]
    store = LiveStore(clock=lambda: now[0])
    store.configure(lambda image: ImageResult([], image.shape[1], image.shape[0]), TrackerSettings())  # type: ignore[arg-type]
    failures = [RuntimeError("tracker bug")]

    def update_once_broken(faces: list[Any], moved: Any = None) -> list[Any]:
        if failures:
            raise failures.pop()
        return []

    store._tracker.update = update_once_broken  # type: ignore[method-assign, assignment]
    frame = np.zeros((48, 64, 3), np.uint8)
    deadline = time.monotonic() + 30
    while store.status().frames == 0 and time.monotonic() < deadline:  # the first frame fails, later ones go on
        store.process(frame)
        time.sleep(0.02)
    assert store.status().frames >= 1 and not failures
    assert store.latest_frame() is not None
    now[0] += 10 * STALE_AFTER_S  # STOP: no frame for a while
    assert store.latest_frame() is None  # a snapshot now would show the past as the present


def test_live_callback_never_waits_for_the_models() -> None:
    """Frames arriving while the models are busy are skipped, not queued, and the callback returns at once."""
    from app.live import LiveStore, TrackerSettings

    release, calls = threading.Event(), []

    def slow_pipe(image: np.ndarray) -> ImageResult:
        calls.append(image)
        release.wait(30)
        return ImageResult([], image.shape[1], image.shape[0])

    store = LiveStore()
    store.configure(slow_pipe, TrackerSettings())  # type: ignore[arg-type]
    frames = [np.full((48, 64, 3), value, np.uint8) for value in range(5)]
    assert store.process(frames[0]) is frames[0]
    wait_until(lambda: len(calls) == 1)  # the analysis thread is now stuck in the model
    began = time.monotonic()
    for frame in frames[1:]:
        assert store.process(frame) is frame
    assert time.monotonic() - began < 1.0
    release.set()
    wait_until(lambda: store.status().frames == 2)
    time.sleep(0.3)
    assert store.status().frames == 2 and calls[1] is frames[-1]  # only the newest waiting frame was analysed


def test_the_live_chart_keeps_to_its_face_until_another_is_clearly_nearer() -> None:
    """Two people at about the same distance swapped the chart between them at almost every update."""
    from app.live import FOLLOW_SWITCH_AREA, LiveStatus, box_area, follow

    def face(track_id: int, width: float, height: float | None = None) -> TrackedFace:
        box = (0.0, 0.0, width, width if height is None else height)
        return TrackedFace(track_id, box, {}, "happy", 0.5, cast(Any, None), 1)

    assert follow([], None) is None and follow([], 2) is None
    assert follow([face(1, 100), face(2, 104)], None) == 2  # the nearest first
    assert follow([face(1, 104), face(2, 100)], 2) == 2  # a few pixels either way: kept
    side = 100 * FOLLOW_SWITCH_AREA**0.5
    assert follow([face(1, side - 1), face(2, 100)], 2) == 2
    assert follow([face(1, side + 1), face(2, 100)], 2) == 1  # clearly nearer
    assert follow([face(1, 60), face(3, 50)], 2) == 1  # the one followed left: the nearest now
    status = LiveStatus([face(1, 104), face(2, 100)], fps=9.5, charted=2)
    assert status.charted_face is not None and status.charted_face.track_id == 2
    assert status.text() == "faces: 2 (#2 happy 50%) · 9.5 FPS"  # whose label it is, as the box says it
    assert LiveStatus([face(1, 104), face(2, 100)]).text().startswith("faces: 2 (#1 ")  # no choice: the nearest
    assert LiveStatus([face(1, 100), face(2, 104)]).text().startswith("faces: 2 (#2 ")  # not the first listed
    wide, tall = face(1, 50, 20), face(2, 40, 60)  # 1000 and 2400 px: the nearest is the larger area, not width
    assert follow([wide, tall], None) == 2 and box_area(tall) == 2400.0
    assert LiveStatus([face(4, 80)]).text() == "faces: 1 (happy 50%) · 0.0 FPS"


def test_the_store_charts_one_face_while_two_swap_which_is_a_little_larger() -> None:
    """`follow` as the page gets it, through `LiveStore.status`: the chart's face is the store's, kept between calls."""
    from types import SimpleNamespace

    from app.live import LiveStore, TrackerSettings

    probs = dict.fromkeys(EMOTIONS, 1 / 7)
    widths = iter([(100, 104), (104, 100), (100, 104), (104, 100), (160, 100)])  # left face, right face

    def two_faces(image: np.ndarray) -> SimpleNamespace:
        left, right = next(widths)
        boxes = [(10.0, 10.0, 10.0 + left, 10.0 + left), (300.0, 10.0, 300.0 + right, 10.0 + right)]
        return SimpleNamespace(faces=[FaceResult(box, 0.9, "happy", 0.2, probs, {"ensemble": probs}) for box in boxes])

    store = LiveStore()
    store.configure(cast(Pipeline, two_faces), TrackerSettings("none"))
    charted = []
    for _ in range(5):
        store.analyse(np.zeros((480, 640, 3), np.uint8))
        charted.append(store.status().charted)
    assert charted == [2, 2, 2, 2, 1]  # the nearest at first; kept through the swaps; left for one clearly nearer


def test_live_store_tracks_smooths_and_survives_errors(app_weights: Path, caplog: pytest.LogCaptureFixture) -> None:
    from app.live import LiveStore, TrackerSettings

    pipe = Pipeline.load(app_weights, runtime="torch", detector_backend="haar")
    store = LiveStore()
    frame = astronaut()
    assert store.status().text() == "faces: 0 · 0.0 FPS"
    store.configure(pipe, TrackerSettings("window", window=3))
    for _ in range(3):
        store.analyse(frame)
    status = store.status()
    assert [f.track_id for f in status.faces] == [1] and status.faces[0].age == 3
    assert status.fps > 0 and status.text().startswith(f"faces: 1 ({status.faces[0].label} ")

    # The callback path returns at once; boxes come back once the session's analysis thread has caught up.
    deadline = time.monotonic() + 60
    while np.array_equal(store.process(frame), frame) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not np.array_equal(store.process(frame), frame)
    assert np.array_equal(cast(np.ndarray, store.latest_frame()), frame) and store.status().video_fps > 0

    def broken(image: np.ndarray) -> None:
        raise RuntimeError("model crashed")

    # Until its analysis thread has gone idle (and ended), it may still finish a frame with the working models: a
    # success between two failures rightly logs the second again (this test failed so under a loaded CPU).
    wait_until(lambda: store._worker is None)
    store.configure(broken, TrackerSettings("window", window=3))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="app.live"):
        for _ in range(5):
            assert store.analyse(frame) == []
    assert store.status().error == "RuntimeError: model crashed"
    assert len(caplog.records) == 1  # one traceback, not one per frame while it keeps failing


def test_live_store_smooths_as_the_sidebar_says_and_carries_the_face_over_a_change() -> None:
    """One face, sure it is happy and sad in turn: each smoothing setting gives its own, hand-worked numbers, and a
    changed setting goes on from where the face's smoothing stood (same id, same age), not from a fresh track."""
    from app.live import LiveStore, TrackerSettings

    alternating = AlternatingPipeline()  # sure it is happy, then sad, then happy...

    def happy_and_sad(settings: TrackerSettings, frames: int) -> tuple[float, float, int]:
        store.configure(alternating, settings)  # type: ignore[arg-type]
        for _ in range(frames):
            store.analyse(frame)
        (face,) = store.status().faces
        assert face.track_id == 1
        return face.probs["happy"], face.probs["sad"], face.age

    store, frame = LiveStore(), np.zeros((48, 64, 3), np.uint8)
    # frames 1-4 happy, sad, happy, sad: the window of 3 holds sad, happy, sad
    assert happy_and_sad(TrackerSettings("window", window=3), 4) == pytest.approx((1 / 3, 2 / 3, 4))
    # EMA 1/2 from (1/3, 2/3): happy -> (2/3, 1/3), sad -> (1/3, 2/3)
    assert happy_and_sad(TrackerSettings("ema", alpha=0.5), 2) == pytest.approx((1 / 3, 2 / 3, 6))
    # EMA 1/4 from (1/3, 2/3): happy -> (1/2, 1/2), sad -> (3/8, 5/8); the newest weighs 1/4
    assert happy_and_sad(TrackerSettings("ema", alpha=0.25), 2) == pytest.approx((3 / 8, 5 / 8, 8))
    assert happy_and_sad(TrackerSettings("none"), 1) == pytest.approx((1.0, 0.0, 9))  # frame 9: happy, raw


def test_compare_page_slider_disagreement_and_metrics(app: AppTest) -> None:
    app.switch_page("views/compare.py").run()
    assert not app.exception, app.exception
    assert app.info[0].value.startswith("Upload a photo")
    app.file_uploader(key="compare_upload").set_value(("astronaut.png", encode(astronaut(), "PNG"), "image/png"))
    app.run()
    assert not app.exception, app.exception
    assert app.slider(key="compare_weight").value == 0.3  # the fitted weight
    weight_label = app.slider(key="compare_weight").label  # plain text: a screen reader read "star star A_crp"
    assert weight_label == "Weight of A_crp in the ensemble (fitted: 0.3; 0 = B_mixcut alone, 1 = A_crp alone)"
    titles = chart_titles(app)
    model_a, model_b, mixed = titles[:3]
    assert model_a.startswith("A_crp: ") and model_b.startswith("B_mixcut: ") and mixed.startswith("Ensemble: ")
    verdicts = [w.value for w in app.warning if w.value.startswith("Face #1")] + [s.value for s in app.success]
    assert len(verdicts) == 1 and ("disagree" in verdicts[0]) == (model_a.split()[1] != model_b.split()[1])
    assert re.search(r"\d+% of their probability lies on the same classes", verdicts[0]), verdicts[0]  # not "26% apart"
    intro = app.caption[0].value  # one plain sentence; what the two names stand for, from each recipe, on demand
    assert intro.startswith("Each face as each of the two emotion models (A_crp, B_mixcut) labels it"), intro
    detail = app.expander[0].markdown[0].value
    assert app.expander[0].label == "What the two models are"
    assert "- **A_crp**: efficientnet_b0, CRP: random crop" in detail, detail
    assert "- **B_mixcut**: efficientnet_b0, MixUp" in detail, detail
    assert any(c.value.startswith("Measured on FER-2013's two test sets") for c in app.caption)  # the terms explained

    app.slider(key="compare_weight").set_value(1.0).run()
    assert chart_titles(app)[2].split(": ")[1] == model_a.split(": ")[1]  # all weight on A: the mix is A
    app.button(key="compare_reset").click().run()
    assert app.slider(key="compare_weight").value == 0.3

    app.file_uploader(key="compare_upload").set_value(
        ("line.png", encode(np.zeros((1, 1000, 3), np.uint8), "PNG"), "image/png")
    )
    app.run()
    assert not app.exception, app.exception  # a 1000x1 image shown 720 wide used to be 0 px high: a crash

    frame = app.dataframe[0].value  # PrivateTest from metrics_PrivateTest.json, PublicTest from ensemble.json
    expected = pd.DataFrame(
        {
            "PublicTest accuracy": [0.68, 0.67, 0.70],
            "PublicTest macro-F1": [0.66, 0.65, np.nan],
            "PrivateTest accuracy": [0.70, 0.69, 0.72],
            "PrivateTest macro-F1": [0.68, 0.66, 0.71],
        },
        index=["A_crp", "B_mixcut", "Ensemble"],
    )
    pd.testing.assert_frame_equal(frame.loc[expected.index, expected.columns], expected, check_dtype=False)
    heatmaps = {
        layout["title"]["text"]: plotly_array(data[0]["text"])
        for spec in (json.loads(chart.proto.spec) for chart in app.get("plotly_chart"))
        for layout, data in [(spec["layout"], spec["data"])]
        if "accuracy" in layout.get("title", {}).get("text", "")
    }
    assert sorted(heatmaps) == [
        "A_crp: accuracy 0.700, macro-F1 0.680",
        "B_mixcut: accuracy 0.690, macro-F1 0.660",
        "Ensemble: accuracy 0.720, macro-F1 0.710",
    ]
    assert heatmaps["B_mixcut: accuracy 0.690, macro-F1 0.660"].tolist() == (np.eye(7) * 40 + 2).tolist()  # B's own


def test_compare_page_picks_faces_per_photo_and_says_when_the_face_limit_is_reached(app: AppTest) -> None:
    app.switch_page("views/compare.py").run()
    app.file_uploader(key="compare_upload").set_value(("ten.png", encode(face_grid(2, 5), "PNG"), "image/png"))
    app.run()
    (picker,) = [m for m in app.multiselect if m.label == "Faces to compare"]
    picker.set_value([8, 9]).run()

    def mixed_charts() -> int:  # one per compared face (the metrics' confusion matrix says "accuracy")
        return sum(t.startswith("Ensemble:") and "accuracy" not in t for t in chart_titles(app))

    assert mixed_charts() == 2
    app.file_uploader(key="compare_upload").set_value(("eight.png", encode(face_grid(2, 4), "PNG"), "image/png"))
    app.run()
    assert not app.exception, app.exception

    def first_picked(faces: int) -> list[int]:
        """The faces the models disagree on (the caption's), then the rest, in order: three of them."""
        note = next(c.value for c in app.caption if c.value.startswith("The models disagree on"))
        split = [int(n) - 1 for n in re.findall(r"#(\d+)", note)]
        assert split and note.startswith(f"The models disagree on {len(split)} of {faces} faces"), note
        return [*split, *(i for i in range(faces) if i not in split)][:3]

    (picker,) = [m for m in app.multiselect if m.label == "Faces to compare"]
    assert picker.value == first_picked(8)  # not the other photo's #9 and #10, which left nothing on the page
    assert picker.value != [0, 1, 2]  # the models' disagreements first: #1 to #3 were picked whatever they showed
    assert mixed_charts() == 3
    picker.set_value([6, 7]).run()
    app.number_input(key="compare_max_faces").set_value(7).run()  # #8 is gone from the same photo
    (picker,) = [m for m in app.multiselect if m.label == "Faces to compare"]
    assert picker.value == first_picked(7) and mixed_charts() == 3
    assert "eight.png: labelled the 7 most confident faces" in app.warning[0].value


@pytest.mark.parametrize("page", ["photos", "compare"])
def test_photo_pages_use_the_shipped_test_time_views_and_let_the_user_turn_them_off(
    app_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    """Video and Webcam had the switch (off at first) and the photo pages none: a large batch could not be sped up."""
    folder = shutil.copytree(app_weights, tmp_path / "weights")
    spec = json.loads((folder / "ensemble.json").read_text())
    write_spec(folder / "ensemble.json", {**spec, "tta": "flip"})
    monkeypatch.setenv("FER_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("FER_RUNTIME", "torch")
    app = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    app.switch_page(f"views/{page}.py").run()
    app.file_uploader(key=f"{page}_upload").set_value(("face.png", encode(astronaut(), "PNG"), "image/png")).run()
    assert not app.exception, app.exception

    def state() -> tuple[str, list[str]]:
        about = app.sidebar.expander[0].markdown[0].value  # "Models & runtime": what a bug report needs
        return about, [json.dumps(json.loads(chart.proto.spec)["data"]) for chart in app.get("plotly_chart")][:2]

    assert app.checkbox(key=f"{page}_tta").value is True
    about, with_views = state()
    assert "TTA `flip`" in about
    app.checkbox(key=f"{page}_tta").uncheck().run()
    about, without = state()
    assert "TTA" not in about and without != with_views  # the mirrored view no longer averaged in


@pytest.mark.parametrize("page", ["photos", "webcam"])
def test_weights_fitted_without_test_time_views_offer_no_switch_for_them(
    app_weights: Path, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    """With ensemble.json's tta "none" the switch offered to "Classify 1 views of each face ... 1x the classifier
    time", ticked on the photo pages, and did nothing: it is now shown off and greyed out, and says why."""
    monkeypatch.setenv("FER_WEIGHTS_DIR", str(app_weights))  # the fixture's weights were fitted without views
    app = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    app.switch_page(f"views/{page}.py").run()
    assert not app.exception, app.exception
    (switch,) = [box for box in app.sidebar.checkbox if box.label == "Test-time augmentation"]
    assert switch.value is False and switch.disabled
    assert "fitted without test-time views" in switch.help and "1 views" not in switch.help


def test_compare_page_hides_metrics_of_other_weights(app_weights: Path, tmp_path: Path, monkeypatch) -> None:
    folder = shutil.copytree(app_weights, tmp_path / "weights")
    measured = json.loads((folder / "metrics_PrivateTest.json").read_text())
    measured["weights"]["mix"] = {"A_crp": 0.9, "B_mixcut": 0.1}  # measured before ensemble.json was refitted
    (folder / "metrics_PrivateTest.json").write_text(json.dumps(measured))
    monkeypatch.setenv("FER_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("FER_RUNTIME", "torch")
    app = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    app.switch_page("views/compare.py").run()
    assert not app.exception, app.exception
    (shown,) = [w.value for w in app.warning if "metrics_PrivateTest.json" in w.value]
    assert "is not shown" in shown and "A_crp 0.9" in shown
    assert "PrivateTest accuracy" not in app.dataframe[0].value.columns

    checkpoint = read_checkpoint(folder / "A_crp.pt")  # trained beside a PrivateTest of another size than measured
    checkpoint["meta"]["data_counts"] = {"PrivateTest": measured["n"] + 1}
    save_checkpoint(folder / "A_crp.pt", checkpoint)
    measured["weights"] = weights_used(
        json.loads((folder / "ensemble.json").read_text()), folder, measured["weights"]["tta"]
    )
    (folder / "metrics_PrivateTest.json").write_text(json.dumps(measured))
    app = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    app.switch_page("views/compare.py").run()
    (shown,) = [w.value for w in app.warning if "metrics_PrivateTest.json" in w.value]
    assert f"measured on {measured['n']} PrivateTest faces, but `A_crp` was trained beside" in shown


def test_compare_slider_starts_at_the_share_of_huge_weights(app_weights: Path, tmp_path: Path, monkeypatch) -> None:
    """ensemble.json's weights are mixed by their ratio however large; the slider summed them raw (inf) and started
    at 0."""
    folder = shutil.copytree(app_weights, tmp_path / "weights")
    spec = json.loads((folder / "ensemble.json").read_text())
    spec["models"][0]["weight"], spec["models"][1]["weight"] = 1.5e308, 4.5e307  # their sum overflows a float
    (folder / "ensemble.json").write_text(json.dumps(spec))
    monkeypatch.setenv("FER_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("FER_RUNTIME", "torch")
    app = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    app.switch_page("views/compare.py").run()
    app.file_uploader(key="compare_upload").set_value(("astronaut.png", encode(astronaut(), "PNG"), "image/png"))
    app.run()
    assert not app.exception, app.exception
    assert app.slider(key="compare_weight").value == 0.77  # 1.5 / 1.95


@pytest.fixture
def analysed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The shape of every image `Pipeline.analyse` is called on: how often a page really analysed a photo."""
    calls: list[tuple[int, ...]] = []
    original = Pipeline.analyse

    def counting(self: Pipeline, image_rgb: np.ndarray, *args: Any, **kwargs: Any) -> ImageResult:
        calls.append(image_rgb.shape)
        return original(self, image_rgb, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "analyse", counting)
    return calls


def test_compare_reuses_the_result_the_photos_page_computed(app: AppTest, analysed: list[tuple[int, ...]]) -> None:
    """Each page kept its results in a memo of its own under the same key: a 20-face photo took 9 s on Photos, then
    10 s again on Compare with the same settings. A setting that changes the result still analyses it again."""
    from app import memo

    photo = ("ten.png", encode(face_grid(2, 5), "PNG"), "image/png")
    app.file_uploader(key="photos_upload").set_value(photo).run()
    assert not app.exception, app.exception
    assert len(analysed) == 1
    app.switch_page("views/compare.py").run()
    app.radio(key="compare_source").set_value("Upload a photo").run()  # the same file dropped again on Compare
    app.file_uploader(key="compare_upload").set_value(photo).run()
    assert not app.exception, app.exception
    assert len(analysed) == 1  # old code: analysed again
    assert len(app.session_state[f"_memo_{memo.IMAGE_RESULTS}"]) == 1
    assert chart_titles(app)[2].startswith("Ensemble: ")
    app.slider(key="compare_conf").set_value(0.5).run()  # Compare's own detector settings: another result
    assert not app.exception, app.exception
    assert len(analysed) == 2


def test_compare_offers_the_photos_the_photos_page_holds(app: AppTest, analysed: list[tuple[int, ...]]) -> None:
    """A photo dropped on Photos had to be dropped again on Compare (a browser review); now Compare starts on it,
    under the name Photos gives it, and reuses its result. The page's own uploader is one choice away."""
    from app.views import compare

    photos = [("face.png", encode(astronaut(), "PNG"), "image/png"), ("face.png", encode(face_grid(1, 2), "PNG"), "")]
    app.file_uploader(key="photos_upload").set_value(photos).run()
    assert not app.exception, app.exception
    assert len(analysed) == 2
    app.switch_page("views/compare.py").run()
    assert not app.exception, app.exception
    assert app.radio(key="compare_source").value == compare.FROM_PHOTOS
    (picker,) = [box for box in app.selectbox if box.label == "Photo from the Photos page"]
    assert picker.options == ["face.png", "face (2).png"]
    assert len(analysed) == 2 and chart_titles(app)[2].startswith("Ensemble: ")  # the Photos page's result
    picker.set_value(1).run()
    assert not app.exception, app.exception
    captions = [image.caption for element in app.get("image") for image in element.proto.imgs]
    assert len(analysed) == 2 and captions[0].startswith("face (2).png: 2 face(s)"), captions
    app.radio(key="compare_source").set_value(compare.UPLOAD).run()
    assert [c.value for c in app.info] == ["Upload a photo, or take a snapshot on the Webcam page."]


def _no_face_notes() -> None:
    """A script for AppTest: the no-face note of a 6000x4000 photo and a 640 px one, for a YOLO at 640 px."""
    import types

    from app import ui

    yolo = types.SimpleNamespace(imgsz=640, backend="yolo")
    pipe = types.SimpleNamespace(detector=yolo, at_face_limit=lambda n_faces: False)
    ui.face_count_notes("big.jpg", 0, pipe, (6000, 4000))  # type: ignore[arg-type]
    ui.face_count_notes("small.jpg", 0, pipe, (640, 480))  # type: ignore[arg-type]


def test_no_face_in_a_large_photo_says_how_small_a_face_the_detector_sees_there() -> None:
    """Three clear 90 px faces in a 24 MP photo were missed (9 px at the detector's 640 px input), and the note spoke
    only of the confidence and minimum face size, which could not find them."""
    app = AppTest.from_function(_no_face_notes, default_timeout=TIMEOUT).run()
    assert not app.exception, app.exception
    big, small = (note.value for note in app.info)
    assert big == (
        "big.jpg: no face found. Try a lower detection confidence or minimum face size. The photo reaches the "
        "detector at 640 px from 6000 px, 9 times smaller, so a face under about 150 px across is hard to find in "
        "it: crop around small faces and drop the crop."
    )
    assert small == "small.jpg: no face found. Try a lower detection confidence or minimum face size."


def test_compare_starts_on_the_first_photo_of_the_photos_page_that_reads(app: AppTest) -> None:
    """A broken file dropped first on Photos was the photo Compare opened on: an error where a photo was expected."""
    photos = [("broken.jpg", b"\xff\xd8\xff truncated", "image/jpeg"), ("face.png", encode(astronaut(), "PNG"), "")]
    app.file_uploader(key="photos_upload").set_value(photos).run()
    app.switch_page("views/compare.py").run()
    assert not app.exception and not app.error, (app.exception, app.error)
    (picker,) = [box for box in app.selectbox if box.label == "Photo from the Photos page"]
    assert picker.value == 1 and chart_titles(app)[2].startswith("Ensemble: ")
    picker.set_value(0).run()  # still offered, and named when picked
    assert app.error[0].value.startswith("broken.jpg: ")


def test_the_shared_result_key_covers_what_the_pages_pipeline_adds(
    app_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Photos and Compare share results by this key: any setting that changes a result must be in it."""
    from app import memo, ui

    monkeypatch.setenv("FER_WEIGHTS_DIR", str(app_weights))

    def pipe(tta: str = "none", margin: float = 0.1) -> Any:
        return types.SimpleNamespace(ensemble=types.SimpleNamespace(tta=tta), face_margin=margin)

    settings = ui.DetectorSettings()
    key = memo.image_result_key("digest", settings, pipe())
    assert key == memo.image_result_key("digest", ui.DetectorSettings(), pipe())
    for other in (
        memo.image_result_key("other", settings, pipe()),
        memo.image_result_key("digest", settings, pipe(tta="flip")),  # the classifiers' TTA set
        memo.image_result_key("digest", settings, pipe(margin=0.2)),
        memo.image_result_key("digest", ui.DetectorSettings(tta=True), pipe()),  # multi-scale detection
        memo.image_result_key("digest", ui.DetectorSettings(backend="haar"), pipe()),
        memo.image_result_key("digest", ui.DetectorSettings(conf=0.5), pipe()),
        memo.image_result_key("digest", ui.DetectorSettings(min_face=20), pipe()),
        memo.image_result_key("digest", ui.DetectorSettings(max_faces=7), pipe()),
    ):
        assert other != key


def test_the_weight_curve_names_its_two_marks_where_no_line_crosses_them() -> None:
    """Both labels were drawn at the same spot while the slider sat at the fitted weight (every first view); then,
    beside their lines, each line struck through the other's label within a few slider steps (a browser review)."""
    from app import charts

    curve = [{"weight": w / 4, "accuracy": 0.6 + w / 100} for w in range(5)]

    def marks(current: float, fitted: float) -> tuple[str, list[float], list[Any]]:
        layout = json.loads(charts.weight_curve(curve, current, fitted, "A_crp").to_json())["layout"]
        return layout["title"]["text"], [shape["x0"] for shape in layout["shapes"]], layout.get("annotations", [])

    title, lines, labels = marks(0.3, 0.30000000000000004)  # the slider's 0.01 steps
    assert title == "fitted weight = slider: 0.30" and len(lines) == 1 and not labels
    for current, fitted in ((0.31, 0.3), (0.3, 0.31), (0.95, 0.9), (0.0, 1.0)):
        title, lines, labels = marks(current, fitted)
        assert f"fitted weight {fitted:.2f}" in title and f"slider {current:.2f}" in title
        assert lines == [fitted, current] and not labels  # nothing beside the lines for them to cross
    assert charts.weight_curve_points([{"weight": 0, "accuracy": 0.6, "nll": 1.0}]) == [
        {"weight": 0.0, "accuracy": 0.6}
    ]
    for malformed in (None, "curve", [], [1], [{"weight": 0.5}], [{"weight": "0.5", "accuracy": 0.6}]):
        assert charts.weight_curve_points(malformed) is None


def weight_curve_marks(app: AppTest) -> str:
    """The title naming the weight curve's marks (the one chart whose title speaks of the slider)."""
    layouts = [json.loads(chart.proto.spec)["layout"] for chart in app.get("plotly_chart")]
    (title,) = [layout["title"]["text"] for layout in layouts if "slider" in layout.get("title", {}).get("text", "")]
    return title


def test_compare_metrics_say_they_are_of_the_fitted_mix(app: AppTest) -> None:
    """The table's Ensemble row is of ensemble.json's weight and TTA set; it stood beside the slider unexplained."""
    mix = "Ensemble = A_crp × 0.30 + B_mixcut × 0.70, no TTA"
    note = f"{mix}: the fitted mix; the slider does not change these figures."
    app.switch_page("views/compare.py").run()
    assert note in [c.value for c in app.caption]
    app.file_uploader(key="compare_upload").set_value(("astronaut.png", encode(astronaut(), "PNG"), "image/png"))
    app.run()
    assert not app.exception, app.exception
    assert weight_curve_marks(app) == "fitted weight = slider: 0.30"
    app.slider(key="compare_weight").set_value(0.8).run()
    assert "fitted weight 0.30" in weight_curve_marks(app) and "slider 0.80" in weight_curve_marks(app)
    assert note in [c.value for c in app.caption]  # still the fitted mix


def compare_with_spec(folder: Path, monkeypatch: pytest.MonkeyPatch, **changes: Any) -> AppTest:
    """The Compare page, an upload analysed, on a copy of the app weights whose ensemble.json has `changes`."""
    spec = json.loads((folder / "ensemble.json").read_text())
    write_spec(folder / "ensemble.json", spec | changes)
    monkeypatch.setenv("FER_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("FER_RUNTIME", "torch")
    app = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    app.switch_page("views/compare.py").run()
    app.file_uploader(key="compare_upload").set_value(("astronaut.png", encode(astronaut(), "PNG"), "image/png"))
    return app.run()


def test_compare_takes_a_hand_edited_public_test(app_weights: Path, tmp_path: Path, monkeypatch) -> None:
    """`"public_test": null` raised an AttributeError on every upload; a malformed curve or figure is left out."""
    app = compare_with_spec(shutil.copytree(app_weights, tmp_path / "null"), monkeypatch, public_test=None)
    assert not app.exception, app.exception
    assert chart_titles(app)[2].startswith("Ensemble: ")
    assert "PublicTest accuracy against the weight" not in [e.label for e in app.expander]
    assert "PublicTest accuracy" not in app.dataframe[0].value.columns  # PrivateTest only, from metrics_*.json

    malformed = {"ensemble_accuracy": 0.7, "singles": [0.68], "weight_curve": [{"weight": 0.5}]}
    folder = shutil.copytree(app_weights, tmp_path / "malformed")
    app = compare_with_spec(folder, monkeypatch, public_test=malformed, tta="flip")
    assert not app.exception, app.exception
    assert any("weight_curve` is not a list" in c.value for c in app.caption)
    assert app.dataframe[0].value.loc["Ensemble", "PublicTest accuracy"] == 0.7  # the metrics file is of TTA none
    assert any(c.value.startswith("Ensemble = A_crp × 0.30 + B_mixcut × 0.70, TTA flip: ") for c in app.caption)
    app = compare_with_spec(folder, monkeypatch, public_test={"ensemble_accuracy": "high", "weight_curve": "up"})
    assert not app.exception, app.exception
    assert any("weight_curve` is not a list" in c.value for c in app.caption)


def test_compare_says_when_a_photo_was_analysed_shrunk(app: AppTest) -> None:
    """Photos said "W×H px (analysed and shown at …)" of a photo over 4096 px; Compare said nothing."""
    app.switch_page("views/compare.py").run()
    wide = ("wide.png", encode(np.zeros((60, 5000, 3), np.uint8), "PNG"), "image/png")
    app.file_uploader(key="compare_upload").set_value(wide).run()
    assert not app.exception, app.exception
    caption = app.main.get("image")[0].proto.imgs[0].caption
    assert "0 face(s) · 5000×60 px (analysed and shown at 4096×" in caption
    app.file_uploader(key="compare_upload").set_value(("small.png", encode(astronaut(), "PNG"), "image/png")).run()
    assert "· 512×512 px ·" in app.main.get("image")[0].proto.imgs[0].caption


def test_compare_hints_at_the_picker_when_no_face_is_picked(app: AppTest) -> None:
    app.switch_page("views/compare.py").run()
    app.file_uploader(key="compare_upload").set_value(("ten.png", encode(face_grid(2, 5), "PNG"), "image/png"))
    app.run()
    (picker,) = [m for m in app.multiselect if m.label == "Faces to compare"]
    assert not [i.value for i in app.info if "pick faces above" in i.value]
    picker.set_value([]).run()
    assert not app.exception, app.exception
    assert [i.value for i in app.info if "pick faces above" in i.value]
    assert not [t for t in chart_titles(app) if t.startswith("Ensemble:") and "accuracy" not in t]


def clip(frames: int = 8) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        image = cv2.resize(astronaut()[:300, 100:500], (320, 240))
        for i in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.roll(image, i, axis=1), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_the_tta_switch_of_the_video_and_webcam_pages_sets_the_views(
    app_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off: one view a face (live frames must keep up); on: the shipped set; unset: the shipped set."""
    from app import ui

    folder = shutil.copytree(app_weights, tmp_path / "weights")
    spec = json.loads((folder / "ensemble.json").read_text())
    write_spec(folder / "ensemble.json", spec | {"tta": "flip"})  # the fixture's "none" would hide a lost switch
    monkeypatch.setenv("FER_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("FER_RUNTIME", "torch")
    settings = ui.DetectorSettings(backend="haar")
    assert ui.pipeline(settings, tta=False).ensemble.tta == "none"
    assert ui.pipeline(settings, tta=True).ensemble.tta == "flip"
    assert ui.pipeline(settings).ensemble.tta == "flip"
    app = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    for page in ("webcam", "video"):
        app.switch_page(f"views/{page}.py").run()
        assert not app.exception, app.exception
        switch = app.checkbox(key=f"{page}_tta")
        assert switch.value is False and not switch.disabled  # frames are many: TTA is the user's choice, off at first


def test_a_background_job_hands_over_its_result_its_error_or_its_cancel() -> None:
    from app.jobs import BackgroundJob, Progress

    def count(report: Callable[[int, int | None], None], stop: threading.Event, fail: bool = False) -> str:
        for done in range(1, 4):
            report(done, None if done == 3 else 3)
        if fail:
            raise OSError(28, "No space left on device")
        return "done"

    finished = BackgroundJob.start("a", ("k",), count)
    assert finished.wait(10) and finished.result == "done" and finished.error is None and not finished.cancelled
    assert finished.progress == Progress(3, None) and finished.progress.fraction is None
    assert Progress(1, 4).fraction == 0.25
    failed = BackgroundJob.start("b", ("k",), lambda report, stop: count(report, stop, fail=True))
    assert failed.wait(10) and failed.result is None and isinstance(failed.error, OSError)
    gate = threading.Event()

    def held(report: Callable[[int, int | None], None], stop: threading.Event) -> str:
        gate.wait(10)
        return count(report, stop)

    stopped = BackgroundJob.start("c", ("k",), held)
    stopped.cancel()
    gate.set()
    assert stopped.wait(10) and stopped.cancelled and stopped.result is None and stopped.progress.done == 0

    def watching(report: Callable[[int, int | None], None], stop: threading.Event) -> str:
        """Work that looks at `stop` between its reports (a video, frame by frame) and ends in its own way."""
        gate.wait(10)
        if stop.is_set():
            raise RuntimeError("stopped between reports")
        return "done"

    gate.clear()
    watched = BackgroundJob.start("d", ("k",), watching)
    watched.cancel()
    gate.set()
    assert watched.wait(10) and watched.cancelled and watched.error is None and watched.result is None


def test_a_background_job_is_cancelled_once_its_session_is_abandoned(caplog: pytest.LogCaptureFixture) -> None:
    from app.jobs import AbandonWatch, BackgroundJob

    def until_stopped(report: Callable[[int, int | None], None], stop: threading.Event) -> str:
        if stop.wait(10):
            raise RuntimeError("stopped")  # as the video analysis does, in its own way
        return "ran on for nobody"

    gone = BackgroundJob.start("closed tab", ("k",), until_stopped, abandoned=lambda: True, poll_s=0.01)
    assert gone.wait(10) and gone.cancelled and gone.result is None
    kept = BackgroundJob.start("open tab", ("k",), until_stopped, abandoned=lambda: False, poll_s=0.01)
    assert not kept.wait(0.2) and not kept.cancelled
    kept.cancel()
    assert kept.wait(10)

    def unanswerable() -> bool:
        raise RuntimeError("no runtime")

    with caplog.at_level(logging.ERROR, logger="app.jobs"):
        unwatched = BackgroundJob.start("unknown", ("k",), until_stopped, abandoned=unanswerable, poll_s=0.01)
        assert not unwatched.wait(0.2) and not unwatched.cancelled
        unwatched.cancel()
        assert unwatched.wait(10)
    assert "cannot tell whether its session is open; no longer watching" in caplog.text

    now = [0.0]
    answers = iter([True, False, False, True, False, False, False])
    watch = AbandonWatch(lambda: next(answers), grace_s=5.0, clock=lambda: now[0])
    seen = []
    for t in (0, 1, 5, 7, 8, 13, 13.5):  # active, gone at 1 (4 s later still inside the grace), back at 7, gone again
        now[0] = t
        seen.append(watch())
    assert seen == [False, False, False, False, False, False, True]


def test_a_damaged_clip_is_analysed_and_the_loss_is_named_by_the_uploaded_name(tmp_path: Path) -> None:
    from app.live import TrackerSettings
    from app.views.video import VideoKey, analyse_upload
    from tests.test_video import StubPipeline, damage_packet, noise_frames, write_video

    data = damage_packet(write_video(tmp_path / "src.mp4", noise_frames(30), "libx264"), 10)
    key = VideoKey("digest", 1, TrackerSettings(), False, ())
    result = analyse_upload("holiday.mp4", data, StubPipeline(), 1, TrackerSettings(), key)  # type: ignore[arg-type]
    assert result.summary.frames == 29 and result.summary.ended_early is None
    assert str(result.summary.damaged).startswith("holiday.mp4: 1 damaged packet(s) could not be decoded")


def finish_video(app: AppTest) -> None:
    """The analysis runs beside the page: wait for it to end, then rerun so the page collects it."""
    job = app.session_state.get("video_job")
    assert job is None or job.wait(TIMEOUT), "the video analysis did not end"
    app.run()


def analyse_clip(app: AppTest, every: int) -> None:
    """On the Video page, drop `clip()`, analyse every `every`-th frame and wait for the result to be shown."""
    app.switch_page("views/video.py").run()
    app.file_uploader(key="video_upload").set_value(("clip.mp4", clip(), "video/mp4"))
    app.number_input(key="video_every").set_value(every)
    app.run()
    app.button(key="video_analyse").click().run()
    finish_video(app)


def test_the_follow_switch_matters_to_a_video_result_only_between_analysed_frames(
    app: AppTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every frame analysed nothing is followed: switching it off asked for an analysis giving the same video."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    analyse_clip(app, every=1)
    app.toggle(key="video_follow").set_value(False).run()
    assert not app.exception, app.exception
    stale = "Settings changed: press *Analyse video* to apply them."
    assert stale not in [c.value for c in app.caption]
    app.number_input(key="video_every").set_value(2).run()  # frames between: now the switch applies
    assert stale in [c.value for c in app.caption]


def start_held_video(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, Any]:
    """Start analysing a clip on the Video page, held after its first progress report until the gate is set."""
    real_analyse = fer_video.analyse_video
    gate = threading.Event()

    def held_analyse(source: Path, pipe: Any, out_dir: Path, *args: Any, **kwargs: Any) -> Any:
        report = kwargs["progress_callback"]
        report(1, 10)
        gate.wait(TIMEOUT)  # the test holds the analysis here while it touches the page
        report(2, 10)  # where a cancel lands
        return real_analyse(source, pipe, out_dir, *args, **kwargs)

    monkeypatch.setattr(fer_video, "analyse_video", held_analyse)
    app.switch_page("views/video.py").run()
    app.file_uploader(key="video_upload").set_value(("clip.mp4", clip(), "video/mp4")).run()
    app.button(key="video_analyse").click().run()
    job = app.session_state["video_job"]
    deadline = time.monotonic() + 60
    while job.progress.done < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    return gate, job


def test_video_analysis_survives_a_settings_change_and_stops_on_cancel(
    app: AppTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamlit stops a script at its next call when a widget changes: analysis in the script thread was lost
    without a word. It now runs beside the page, and only Cancel stops it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gate, job = start_held_video(app, monkeypatch)
    assert app.button(key="video_analyse").disabled  # in the run the click caused, not only the one after it
    app.number_input(key="video_every").set_value(5).run()  # a rerun mid-analysis (in a browser it ended it)
    assert not app.exception, app.exception
    assert any(bar.proto.text == "Analysing clip.mp4… 10%" for bar in app.get("progress"))
    assert app.button(key="video_analyse").disabled and not job.done
    gate.set()
    finish_video(app)
    assert [m.value for m in app.metric][:2] == ["8", "3"]  # analysed at every 3rd frame, the setting it began with
    assert app.metric[1].proto.help.startswith("Every 3rd frame went through the models (the setting)")
    assert any("Settings changed" in c.value for c in app.caption)

    gate.clear()
    app.button(key="video_analyse").click().run()
    app.button(key="video_cancel").click().run()
    gate.set()
    finish_video(app)
    assert not app.exception and not app.error, (app.exception, app.error)
    assert app.warning[0].value == "clip.mp4: analysis cancelled."
    assert [m.value for m in app.metric][:2] == ["8", "3"]  # the last finished result is still there
    assert list(tmp_path.iterdir()) == []
    app.file_uploader(key="video_upload").set_value(None).run()  # removed: nothing shown; the one last result is
    assert not app.metric  # kept for the clip, since a browser swapping files empties the uploader on the way


def visit_another_page_and_return(app: AppTest, page: str) -> None:
    """Streamlit drops an upload widget's files when a run draws another page: the page must keep them itself."""
    app.switch_page("views/photos.py" if page != "views/photos.py" else "views/compare.py").run()
    app.switch_page(page).run()
    assert not app.exception, app.exception
    upload_key = PurePath(page).stem + "_upload"
    assert not app.file_uploader(key=upload_key).value  # what Streamlit does, and why the page keeps its files
    assert any("dropped earlier" in caption.value for caption in app.main.caption)


def kept_names(app: AppTest) -> list[str]:
    """The chips of the files a visit to another page took out of the Photos uploader; empty when none."""
    return [name for box in app.multiselect if box.label == "Kept files" for name in box.options]


def remove_kept(app: AppTest, name: str) -> None:
    """Remove one file from those a visit to another page took out of the Photos uploader, with its chip's cross."""
    (picker,) = [box for box in app.multiselect if box.label == "Kept files"]
    picker.set_value([i for i, shown in enumerate(picker.options) if shown != name]).run()


def test_photos_and_compare_pages_keep_their_photos_after_a_visit_to_another_page(app: AppTest) -> None:
    photo = ("astronaut.png", encode(astronaut(), "PNG"), "image/png")
    app.file_uploader(key="photos_upload").set_value([photo]).run()
    assert app.caption[0].value.startswith("1 face(s)")
    visit_another_page_and_return(app, "views/photos.py")
    assert kept_names(app) == ["astronaut.png"] and app.caption[1].value.startswith("1 face(s)")
    app.slider(key="photos_conf").set_value(0.3).run()  # a rerun on the page itself keeps them too
    assert app.caption[1].value.startswith("1 face(s)")
    app.button(key="photos_upload_forget").click().run()
    assert not app.main.caption and app.info[0].value.startswith("Every face is boxed")

    app.switch_page("views/compare.py").run()
    app.file_uploader(key="compare_upload").set_value(photo).run()
    charts_shown = len(app.get("plotly_chart"))
    assert charts_shown >= 3
    visit_another_page_and_return(app, "views/compare.py")
    assert len(app.get("plotly_chart")) == charts_shown


def photo_titles(app: AppTest) -> list[str]:
    return [title.value for title in app.main.subheader if title.value != "All faces"]


def test_a_drop_after_a_visit_to_another_page_adds_to_the_kept_photos(app: AppTest) -> None:
    """A drop after a visit replaced the kept photos: one more photo cost the rest, and a kept file that could not be
    read could be removed only with them all."""
    one = ("one.png", encode(astronaut(), "PNG"), "image/png")
    broken = ("broken.png", b"not a picture", "image/png")
    two = ("two.png", encode(np.concatenate([astronaut(), astronaut()], axis=1), "PNG"), "image/png")
    app.file_uploader(key="photos_upload").set_value([one, broken]).run()
    visit_another_page_and_return(app, "views/photos.py")
    app.file_uploader(key="photos_upload").set_value([two]).run()
    assert not app.exception, app.exception
    assert kept_names(app) == ["one.png", "broken.png"] and photo_titles(app) == ["one.png", "two.png"]
    assert [error.value.split(":")[0] for error in app.error] == ["broken.png"]
    remove_kept(app, "broken.png")  # alone
    assert not app.error and kept_names(app) == ["one.png"] and photo_titles(app) == ["one.png", "two.png"]
    app.file_uploader(key="photos_upload").set_value([two, one]).run()  # one.png dropped again: shown once
    assert not kept_names(app) and photo_titles(app) == ["two.png", "one.png"]

    visit_another_page_and_return(app, "views/photos.py")
    assert kept_names(app) == ["two.png", "one.png"]
    app.file_uploader(key="photos_upload").set_value([broken]).run()
    app.file_uploader(key="photos_upload").set_value([]).run()  # the user empties the uploader: its file goes
    assert not app.error and photo_titles(app) == ["two.png", "one.png"]
    app.slider(key="photos_conf").set_value(0.3).run()  # and does not come back as a kept one
    assert kept_names(app) == ["two.png", "one.png"] and photo_titles(app) == ["two.png", "one.png"]
    app.button(key="photos_upload_forget").click().run()
    assert not photo_titles(app) and app.info[0].value.startswith("Every face is boxed")


def test_a_drop_whose_run_a_page_switch_cut_short_is_kept(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The uploader's new files were noted only when the run reached it: a drop followed at once by a click on another
    page (the run stopped before, e.g. while the models loaded) lost the drop and the photos before it."""
    import streamlit

    from app import ui as app_ui

    one = ("one.png", encode(astronaut(), "PNG"), "image/png")
    two = ("two.png", encode(np.concatenate([astronaut(), astronaut()], axis=1), "PNG"), "image/png")
    app.file_uploader(key="photos_upload").set_value([one]).run()
    with monkeypatch.context() as patched:
        patched.setattr(app_ui, "pipeline", lambda *args, **kwargs: streamlit.stop())  # the run ends before it
        app.file_uploader(key="photos_upload").set_value([one, two]).run()
    visit_another_page_and_return(app, "views/photos.py")
    assert kept_names(app) == ["one.png", "two.png"] and photo_titles(app) == ["one.png", "two.png"]
    with monkeypatch.context() as patched:  # a kept one dropped again, the run cut short the same way: kept once
        patched.setattr(app_ui, "pipeline", lambda *args, **kwargs: streamlit.stop())
        app.file_uploader(key="photos_upload").set_value([one]).run()
    visit_another_page_and_return(app, "views/photos.py")
    assert kept_names(app) == ["one.png", "two.png"], kept_names(app)  # not also "one (2).png"


def test_video_page_keeps_its_clip_job_and_result_after_a_visit_to_another_page(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the running analysis, its result and a failure were hidden until the file was dropped again."""
    gate, job = start_held_video(app, monkeypatch)
    visit_another_page_and_return(app, "views/video.py")
    assert any(bar.proto.text == "Analysing clip.mp4… 10%" for bar in app.get("progress"))
    assert app.button(key="video_analyse").disabled and not job.done
    gate.set()
    finish_video(app)
    assert [m.value for m in app.metric][:2] == ["8", "3"] and len(app.get("video")) == 1
    visit_another_page_and_return(app, "views/video.py")
    assert [m.value for m in app.metric][:2] == ["8", "3"]
    app.number_input(key="video_every").set_value(4).run()
    app.button(key="video_analyse").click().run()  # the kept clip can be analysed again with other settings
    finish_video(app)
    assert [m.value for m in app.metric][:2] == ["8", "2"]

    app.file_uploader(key="video_upload").set_value(("broken.mp4", b"not a video", "video/mp4")).run()
    visit_another_page_and_return(app, "views/video.py")
    assert app.error[0].value.startswith("broken.mp4: ") and not app.metric  # clip.mp4's result is not broken.mp4's

    gate.clear()
    app.file_uploader(key="video_upload").set_value(("clip.mp4", clip(), "video/mp4")).run()
    app.button(key="video_analyse").click().run()
    job = app.session_state["video_job"]
    app.file_uploader(key="video_upload").set_value(None).run()  # the user removed the file: its analysis stops
    gate.set()
    assert job.wait(TIMEOUT) and job.cancelled
    assert app.info[0].value.startswith("Faces are tracked")

    gate.clear()
    app.file_uploader(key="video_upload").set_value(("clip.mp4", clip(), "video/mp4")).run()
    app.button(key="video_analyse").click().run()
    job = app.session_state["video_job"]
    app.file_uploader(key="video_upload").set_value(("other.mp4", b"other bytes", "video/mp4")).run()
    app.file_uploader(key="video_upload").set_value(("clip.mp4", clip(), "video/mp4")).run()  # back before it stops
    assert not app.button(key="video_analyse").disabled and not app.get("progress")  # not shown as running again
    gate.set()
    assert job.wait(TIMEOUT) and job.cancelled
    app.run()
    assert not app.warning and not app.error, (app.warning, app.error)  # nor as cancelled by the user

    app.number_input(key="video_every").set_value(3).run()
    app.button(key="video_analyse").click().run()
    assert app.session_state["video_job"].wait(TIMEOUT)  # ended, not yet collected by a rerun
    app.file_uploader(key="video_upload").set_value(("other.mp4", b"other bytes", "video/mp4")).run()
    app.file_uploader(key="video_upload").set_value(("clip.mp4", clip(), "video/mp4")).run()
    assert [m.value for m in app.metric][:2] == ["8", "3"]  # an ended job's result is kept for its clip
    app.file_uploader(key="video_upload").set_value(None).run()  # a browser swaps files by way of an empty uploader
    app.file_uploader(key="video_upload").set_value(("clip.mp4", clip(), "video/mp4")).run()
    assert [m.value for m in app.metric][:2] == ["8", "3"]  # a finished analysis is not lost to a mis-drop


def test_the_video_page_says_when_the_annotated_video_will_not_play_in_a_browser(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without libx264 the writer falls back to MPEG-4 Part 2, which no browser plays: the player stayed blank."""
    monkeypatch.setattr(fer_video, "h264_available", lambda: False)
    app.switch_page("views/video.py").run()
    app.file_uploader(key="video_upload").set_value(("clip.mp4", clip(), "video/mp4")).run()
    app.button(key="video_analyse").click().run()
    finish_video(app)
    assert not app.exception and not app.error, (app.exception, app.error)
    assert any("MPEG-4 Part 2, which browsers do not play" in w.value for w in app.warning)
    assert "Annotated video (mp4)" in {b.label for b in cast(Sequence[Element], app.get("download_button"))}


def test_video_page_analyses_and_cleans_up(app: AppTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    written: list[tuple[Path, Path]] = []
    real_analyse = fer_video.analyse_video

    def recording_analyse(source: Path, pipe: Any, out_dir: Path, *args: Any, **kwargs: Any) -> Any:
        written.append((Path(source), Path(out_dir)))
        return real_analyse(source, pipe, out_dir, *args, **kwargs)

    monkeypatch.setattr(fer_video, "analyse_video", recording_analyse)
    outside = {folder: sorted(folder.iterdir()) for folder in (REPO, Path.cwd())}
    analyse_clip(app, every=2)
    assert [c.value for c in app.caption if c.value.startswith("clip.mp4: ")] == [
        "clip.mp4: 320x240 px · 10.0 FPS · 0.8 s · 8 frames"
    ]  # what was dropped, before it is analysed
    assert not app.exception and not app.error, (app.exception, app.error)
    assert [m.value for m in app.metric][:2] == ["8", "4"]
    assert len(app.get("video")) == 1
    # its own width at most, not stretched into a blur: on a container, which Streamlit narrows to a phone's column
    (holder,) = [block for block in blocks_of(app.main) if [c.type for c in block.children.values()] == ["video"]]
    assert holder.proto.width_config.pixel_width == 320 and app.get("video")[0].proto.width_config.use_stretch
    assert {b.label for b in cast(Sequence[Element], app.get("download_button"))} == {
        "Faces over time (CSV)",
        "Annotated video (mp4)",
    }
    assert len(app.get("plotly_chart")) == 2  # timeline + one face's probabilities
    assert list(tmp_path.iterdir()) == []  # the upload and outputs were deleted
    (source, out_dir), *_ = written  # and they were only ever in a private temp folder
    assert source.parent.parent == tmp_path and source.parent.name.startswith("fer_video_")
    assert out_dir.parent == source.parent
    assert {folder: sorted(folder.iterdir()) for folder in outside} == outside

    app.slider(key="video_conf").set_value(0.6).run()
    assert any("Settings changed" in c.value for c in app.caption) and len(app.get("video")) == 1
    app.file_uploader(key="video_upload").set_value(("holiday.mp4", clip(), "video/mp4")).run()
    assert app.session_state["video_result"].name == "holiday.mp4"  # the same bytes: downloads take the new name

    noise = noise_mp4(60)
    app.file_uploader(key="video_upload").set_value(("cut.mp4", noise[: len(noise) * 2 // 3], "video/mp4")).run()
    app.button(key="video_analyse").click().run()
    finish_video(app)
    assert app.warning[0].value.startswith("cut.mp4: only ")  # the user's file name, not the temp copy's
    assert len(app.get("video")) == 1
    app.file_uploader(key="video_upload").set_value(("party.mp4", noise[: len(noise) * 2 // 3], "video/mp4")).run()
    assert app.warning[0].value.startswith("party.mp4: only ")  # the same bytes again: the warning follows the name

    app.file_uploader(key="video_upload").set_value(("broken.mp4", b"not a video", "video/mp4")).run()
    assert not app.exception  # said as it is dropped (it was only after Analyse), with nothing to analyse
    assert app.error[0].value.startswith("broken.mp4: ") and str(tmp_path) not in app.error[0].value
    assert "video_analyse" not in {button.key for button in app.button}
    app.file_uploader(key="video_upload").set_value(("second.mp4", b"not a video", "video/mp4")).run()
    assert app.error[0].value.startswith("second.mp4: not a video file")
    assert list(tmp_path.iterdir()) == []

    def disk_full(source: Path, *args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device", str(Path(source).parent / "out" / ".annotated.mp4.partial"))

    monkeypatch.setattr(fer_video, "analyse_video", disk_full)
    app.file_uploader(key="video_upload").set_value(("holiday.mp4", clip(), "video/mp4")).run()
    app.button(key="video_analyse").click().run()
    finish_video(app)
    assert not app.exception
    assert app.error[0].value == "holiday.mp4: analysis failed (OSError: No space left on device)"


def test_result_keys_see_a_member_swapped_in_place(
    app_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Photos, compare and video results are memoised by this key; the models reload on any .pt change."""
    from app import ui

    folder = tmp_path / "weights"
    shutil.copytree(app_weights, folder)
    monkeypatch.setenv("FER_WEIGHTS_DIR", str(folder))
    before = ui.DetectorSettings().key
    member = folder / "A_crp.pt"
    os.utime(member, (member.stat().st_atime, member.stat().st_mtime + 10))
    assert ui.DetectorSettings().key != before


def test_gradcam_is_computed_again_for_a_member_replaced_in_place(
    app_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The photo results and the explainer follow a replaced .pt; the memoised heat maps kept the old network's."""
    folder = shutil.copytree(app_weights, tmp_path / "weights")
    monkeypatch.setenv("FER_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("FER_RUNTIME", "torch")
    app = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    app.file_uploader(key="photos_upload").set_value(("astronaut.png", encode(astronaut(), "PNG"), "image/png"))
    app.toggle(key="photos_gradcam").set_value(True)
    app.run()
    computed = set(app.session_state["_memo_gradcam"])
    assert len(computed) == 2  # one heat map per member for the ensemble's label
    member = folder / "A_crp.pt"
    os.utime(member, (member.stat().st_atime, member.stat().st_mtime + 10))  # as a retrained file copied over it
    app.run()
    assert not app.exception, app.exception
    fresh = set(app.session_state["_memo_gradcam"]) - computed
    assert [key[3] for key in fresh] == [str(member)]  # A's heat map again, from the new file; B's is still valid


def test_a_damaged_ensemble_json_is_named(app_weights: Path, tmp_path: Path) -> None:
    from fer_core.checkpoint import CheckpointError
    from fer_core.ensemble import Ensemble

    folder = tmp_path / "weights"
    shutil.copytree(app_weights, folder)
    mix = [("A_crp", -0.5), ("B_mixcut", 1.5)]
    negative = json.dumps({"models": [{"name": n, "file": f"{n}.pt", "weight": w} for n, w in mix]})
    shipped = json.loads((app_weights / "ensemble.json").read_text())
    first, second = shipped["models"]
    for text, problem in (
        ("{models: [", "not valid JSON"),
        ('{"tta": "none"}', "non-empty 'models' list"),
        (negative, "must be non-negative"),  # combine() would give 'probabilities' of -0.3 and 1.3
        (json.dumps({**shipped, "tta": "flip_rot10"}), "unknown TTA set 'flip_rot10'"),
        (json.dumps({**shipped, "models": [first, {**second, "weight": "0.7x"}]}), "model 2 needs .* numeric 'weight'"),
        (json.dumps({**shipped, "models": [{k: v for k, v in first.items() if k != "weight"}, second]}), "model 1"),
        (json.dumps({**shipped, "models": [first, "B_mixcut.pt"]}), "model 2 needs a 'file', a 'name'"),
        (json.dumps({**shipped, "models": [first, {k: v for k, v in second.items() if k != "name"}]}), "model 2"),
        (  # the names keyed the figures and the card (evaluate failed last with a KeyError when they were missing)
            json.dumps({**shipped, "models": [{**first, "name": "B_mixcut"}, {**second, "name": "A_crp"}]}),
            "names A_crp.pt 'B_mixcut', but the checkpoint is 'A_crp'",
        ),
    ):
        (folder / "ensemble.json").write_text(text)
        with pytest.raises(CheckpointError, match=rf"ensemble\.json: .*{problem}"):
            Ensemble.load(folder)


def test_uploads_that_do_not_all_fit_the_session_stores_are_not_all_redone_on_a_click(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page reads its uploads in order on every run. A plain LRU one entry smaller than that scan evicted each
    file just before it was read again: with 65 files (or 512 MB of pixels) every click decoded and analysed every
    file. Now the entries that fit stay (the same objects), and only the files beyond them are redone."""
    from app import memo

    noise = [np.random.default_rng(seed).integers(0, 255, (32, 48, 3), np.uint8) for seed in range(5)]
    files = [(f"noise{seed}.png", encode(image, "PNG")) for seed, image in enumerate(noise)]
    monkeypatch.setattr(memo, "MEMO_SIZE", 3)
    monkeypatch.setattr(memo, "DECODED_BUDGET_BYTES", 3 * 32 * 48 * 3)  # three of the five decoded images
    app.file_uploader(key="photos_upload").set_value([(name, data, "image/png") for name, data in files])
    app.run()
    assert not app.exception, app.exception

    def stored() -> dict[str, list[int]]:
        stores = (f"_memo_{memo.IMAGE_RESULTS}", "_memo_decoded")
        return {name: [id(v) for v in app.session_state[name].values()] for name in stores}

    before = stored()
    assert [len(ids) for ids in before.values()] == [3, 3]
    models = app.selectbox(key="photos_model")
    app.selectbox(key="photos_model").set_value(models.options[-1]).run()  # a click that changes no result
    assert not app.exception, app.exception
    assert stored() == before  # old code: the same keys held, but every one computed again
    assert [s.value for s in app.subheader][: len(files)] == [name for name, _ in files]


def test_a_session_store_evicts_what_the_page_no_longer_reads_first() -> None:
    from collections import OrderedDict

    from app.memo import remember

    store = OrderedDict(a=1, b=2)
    remember(store, "c", 3, lambda: len(store) > 2, needed={"a", "c"})
    assert list(store) == ["a", "c"]  # b (a file removed from the page) went, not a, the least recently used
    remember(store, "d", 4, lambda: len(store) > 2, needed={"a", "c", "d"})
    assert list(store) == ["a", "c"]  # all needed: the newcomer is not kept, rather than evicting one read later
    remember(store, "e", 5, lambda: len(store) > 2)
    assert list(store) == ["c", "e"]  # nothing said: a plain LRU
    remember(store, "f", 6, lambda: True, needed={"f"})
    assert list(store) == ["f"]  # one entry too big on its own is still kept, as before


def test_the_uploader_takes_every_file_the_decoder_reads() -> None:
    """Browsers save web JPEGs as .jfif: the uploader refused them although the decoder reads them."""
    from streamlit.elements.lib.file_uploader_utils import enforce_filename_restriction, normalize_upload_file_type

    from app.ui import PHOTO_TYPES

    allowed = normalize_upload_file_type(PHOTO_TYPES)  # as st.file_uploader does with its `type`
    for name in ("web.jfif", "old.jpe", "scan.pgm", "photo.JPG"):
        enforce_filename_restriction(name, allowed)
    for name, supported in (("phone.heic", HEIF_SUPPORTED), ("web.avif", AVIF_SUPPORTED)):
        if supported:
            enforce_filename_restriction(name, allowed)


def test_sessions_do_not_share_state(app: AppTest, app_weights: Path) -> None:
    from app import memo

    other = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    app.file_uploader(key="photos_upload").set_value(("astronaut.png", encode(astronaut(), "PNG"), "image/png"))
    app.run()
    other.run()
    assert app.subheader[0].value == "astronaut.png"
    assert "astronaut.png" not in [s.value for s in other.subheader]
    results = f"_memo_{memo.IMAGE_RESULTS}"
    assert results in app.session_state and results not in other.session_state


def test_gradcam_overlay_and_model_disagreement(app_weights: Path) -> None:
    from fer_core.explain import FaceExplainer
    from fer_core.verdict import disagreement, model_view

    explainer = FaceExplainer.load(app_weights / "A_crp.pt")
    face = astronaut()[40:190, 150:300]
    own = explainer.explain(face)
    assert own.overlay.shape == (192, 192, 3) and own.overlay.dtype == np.uint8
    assert (
        own.target == max(own.probs, key=cast(Callable[[str], float], own.probs.get))
        and 0.0 <= own.heatmap.min() <= own.heatmap.max() <= 1.0
    )
    assert explainer.explain(face, "disgust", size=96).overlay.shape == (96, 96, 3)
    other = next(e for e in EMOTIONS if e != own.target)
    np.testing.assert_allclose(explainer.explain(face, own.target).heatmap, own.heatmap, atol=1e-6)
    assert np.abs(explainer.explain(face, other).heatmap - own.heatmap).max() > 0.05  # another class, another map
    with pytest.raises(ValueError, match="unknown class"):
        explainer.explain(face, "bored")

    a = dict.fromkeys(EMOTIONS, 0.0) | {"happy": 0.9, "sad": 0.1}
    b = dict.fromkeys(EMOTIONS, 0.0) | {"happy": 0.3, "sad": 0.7}
    assert model_view(a).label == "happy" and model_view(a).confidence == pytest.approx(0.9)
    verdict = disagreement({"A": a, "B": b})
    assert verdict.disagree and verdict.labels == {"A": "happy", "B": "sad"} and verdict.distance == pytest.approx(0.6)
    assert not disagreement({"A": a, "B": a}).disagree


def test_every_chart_s_axis_labels_are_dark_enough_to_read() -> None:
    """Streamlit's chart theme drew tick labels rgb(128, 132, 149), about 3.7:1 against white (AA asks 4.5:1)."""
    from app import charts

    probs = dict.fromkeys(EMOTIONS, 1 / 7)
    faces = pd.DataFrame({"face_id": [1], "time_s": [0.0], "label": ["happy"], "confidence": [0.5], "frame": [0],
                          **{name: [1 / 7] for name in EMOTIONS}})  # fmt: skip
    figures = [
        charts.probs_bar(probs, "t"),
        charts.confusion_heatmap(np.eye(7, dtype=int).tolist(), "t"),
        charts.weight_curve([{"weight": 0.0, "accuracy": 0.6}, {"weight": 1.0, "accuracy": 0.7}], 0.5, 0.3, "A"),
        charts.emotion_timeline(faces),
        charts.face_probability_lines(faces, 1),
    ]
    for figure in figures:
        axes = [figure.layout.xaxis, figure.layout.yaxis]
        assert all(axis.tickfont.color == axis.title.font.color == charts.AXIS_TEXT for axis in axes), figure.layout
    assert figures[0].data[0].textfont.color == charts.AXIS_TEXT  # the bars' "73%"


def test_a_chart_s_toolbar_shows_only_while_the_pointer_is_on_it() -> None:
    """Shown always, the zoom and download buttons covered "Ensemble: accuracy 0.722, macro-F1 0.710" on a phone."""
    from app import charts

    assert charts.figure_config(toolbar=True)["displayModeBar"] == "hover"
    assert charts.figure_config()["displayModeBar"] is False  # small charts: none at all
    assert all(not config["displaylogo"] for config in (charts.figure_config(), charts.figure_config(toolbar=True)))


def test_probability_bars_lie_down_one_emotion_a_row() -> None:
    """Upright, a chart in a third of a tablet's width had room to name 4 of the 7 emotions under its bars ("happy"
    left out); lying down, each emotion has its own row for its name, angry at the top as in every list."""
    from app import charts

    probs = {**dict.fromkeys(EMOTIONS, 0.02), "happy": 0.88}
    (bars,) = charts.probs_bar(probs, "t").data
    assert bars.orientation == "h" and list(bars.y) == list(EMOTIONS) and list(bars.x) == [probs[e] for e in EMOTIONS]
    assert bars.text[EMOTIONS.index("happy")] == "88%"
    layout = charts.probs_bar(probs, "t").layout
    assert layout.yaxis.autorange == "reversed" and bars.cliponaxis is False
    assert layout.xaxis.range[0] == 0 and layout.xaxis.range[1] > 1 and list(layout.xaxis.tickvals)[-1] == 1  # "100%"
    assert charts.probs_bar(probs, subtitle="B_mixcut").layout.margin.t >= 30  # a subtitle alone has its room too


def test_the_video_page_says_what_its_analysed_count_counts() -> None:
    """'Analysed 42' stood beside 'Frames 125' with nothing linking the two to the every-Nth-frame setting."""
    from app.views.video import analysed_help

    assert analysed_help(1) == "Every frame went through the models."
    wanted = {2: "2nd", 3: "3rd", 4: "4th", 11: "11th", 12: "12th", 21: "21st", 22: "22nd", 113: "113th"}
    for every, ordinal in wanted.items():
        assert str(analysed_help(every)).startswith(f"Every {ordinal} frame went through the models"), every
    assert analysed_help(None) is None and analysed_help("3") is None and analysed_help(0) is None


def test_the_video_page_s_two_charts_share_one_time_axis() -> None:
    """Each scaled itself: the dots ran 0 to 4 s and one face's lines 0 to 3.9 s, one above the other."""
    from app.charts import face_probability_lines

    probs = {name: [1 / 7] * 3 for name in EMOTIONS}
    faces = pd.DataFrame({"face_id": [1, 2, 1], "time_s": [0.0, 4.0, 3.9], "label": ["happy", "surprise", "angry"],
                          "confidence": [0.9] * 3, "frame": [0, 40, 39], **probs})  # fmt: skip
    dots, lines = emotion_timeline(faces).layout, face_probability_lines(faces, 1).layout
    assert dots.xaxis.range == lines.xaxis.range and dots.xaxis.range[0] < 0 < 4.0 < dots.xaxis.range[1] < 4.2
    shapes = {trace.name: trace.marker.symbol for trace in emotion_timeline(faces).data}
    assert len(shapes) == 3 and len(set(shapes.values())) == 3  # each emotion its own shape, not its colour alone
    for layout in (dots, lines):  # the plots' sides at the same places: margins set, legends above
        assert (layout.margin.l, layout.margin.r, layout.yaxis.automargin) == (80, 10, False), layout
        assert layout.legend.orientation == "h"
    assert lines.yaxis.title.text == "probability, face #1"


def test_the_timeline_lists_faces_by_number_whatever_their_emotions() -> None:
    """Rows came in the order of the emotion traces, so a clip with an angry face 2 listed it first."""
    for labels in (["angry", "happy", "angry"], ["happy", "angry", "happy"]):
        faces = pd.DataFrame({"face_id": [2, 1, 2], "time_s": [0.0, 0.0, 0.1], "label": labels,
                              "confidence": [0.9, 0.8, 0.9], "frame": [0, 0, 1]})  # fmt: skip
        yaxis = emotion_timeline(faces).layout.yaxis  # plotly lists a y axis's categories from the bottom up
        assert yaxis.categoryorder == "array" and list(yaxis.categoryarray)[::-1] == ["face #1", "face #2"]


def test_result_rows_number_faces_from_one_and_round_each_box_corner_as_its_own() -> None:
    """The CSV row of face #1 (the box captioned "#1") holds its own corners, the detector's score and the ensemble's
    confidence, rounded; the second face is #2."""
    from fer_core.pipeline import result_rows

    happy = {**dict.fromkeys(EMOTIONS, 0.05), "happy": 0.7}
    first = FaceResult((1.4, 2.6, 30.2, 40.7), 0.91234, "happy", 0.61234, happy, {"ensemble": happy})
    second = FaceResult((50.0, 5.0, 60.0, 15.0), 0.5, "happy", 0.7, happy, {"ensemble": happy})
    rows = result_rows("p.png", ImageResult([first, second], 64, 64))
    assert rows[0] == {
        "image": "p.png",
        "face": 1,
        **{"x1": 1, "y1": 3, "x2": 30, "y2": 41},
        "detector_score": 0.912,
        "ensemble_label": "happy",
        "ensemble_confidence": 0.6123,
        **happy,
    }
    assert (rows[1]["face"], rows[1]["x1"], rows[1]["y2"]) == (2, 50, 15)


def test_distinct_names_number_every_repeat_past_names_already_taken() -> None:
    """Three photos named a.png beside an a (2).png: each repeat takes the next free number, never one in use."""
    from app.uploads import distinct_names

    names = ["a.png", "a.png", "a (2).png", "a.png", "b"]
    assert distinct_names(names) == ["a.png", "a (3).png", "a (2).png", "a (4).png", "b"]
    assert distinct_names(["x.jpg", "x.jpg", "x.jpg"]) == ["x.jpg", "x (2).jpg", "x (3).jpg"]


def test_the_same_upload_is_told_by_its_bytes_not_only_its_name_and_size() -> None:
    """Two phone photos both IMG_0001.jpg of one size but other pixels are two uploads: neither is kept in place of the
    other."""
    from app.uploads import same_upload

    def upload(name: str, data: bytes) -> Any:
        return types.SimpleNamespace(name=name, size=len(data), getvalue=lambda: data)

    assert same_upload(upload("a.jpg", b"1234"), upload("a.jpg", b"1234"))
    assert not same_upload(upload("a.jpg", b"1234"), upload("a.jpg", b"1235"))
    assert not same_upload(upload("a.jpg", b"1234"), upload("b.jpg", b"1234"))


def test_a_session_memo_keeps_the_entry_read_last_not_the_one_stored_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """A photo looked at again is the most recently used: with room for two results, a third evicts the other one,
    and the photo looked at again is not analysed anew."""
    from app import memo

    monkeypatch.setattr(memo, "st", types.SimpleNamespace(session_state={}))
    monkeypatch.setattr(memo, "MEMO_SIZE", 2)
    computed: list[str] = []

    def result(name: str) -> str:
        def compute() -> str:
            computed.append(name)
            return name

        return memo.session_memo("test", (name,), compute)

    for name in ("a", "b", "a", "c", "a"):
        assert result(name) == name
    assert computed == ["a", "b", "c"]
    result("b")
    assert computed == ["a", "b", "c", "b"]


def test_one_entry_over_the_whole_budget_is_still_kept() -> None:
    """A single photo whose pixels exceed the session's decoded budget on their own is kept (and evicted by the next
    upload), not decoded again on every click."""
    from collections import OrderedDict

    from app.memo import remember

    store: OrderedDict[str, int] = OrderedDict()
    remember(store, "huge", 1, lambda: True)
    assert list(store) == ["huge"]
