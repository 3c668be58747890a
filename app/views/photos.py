"""Photos page: drop one or many pictures; every face boxed and labelled, per-face charts, a table, downloads.

Each file is decoded and analysed on its own (`analyse_upload`), so one bad file gives one message and the
others are still shown.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, memo, ui, uploads
from fer_core.draw import draw_faces, label_text, numbered
from fer_core.ensemble import ENSEMBLE_KEY
from fer_core.explain import SHOWN_CAM
from fer_core.imageio import ImageLoadError, encode_png
from fer_core.labels import EMOTIONS
from fer_core.pipeline import ImageResult, Pipeline, crop_faces, result_columns, result_rows
from fer_core.verdict import ModelView, model_view

log = logging.getLogger(__name__)
#: Up to this many faces get a chart each; beyond it the user picks the face. Three charts stand about as tall as
#: the photo beside them; six ran some 1,500 px down past it, with the page's next photo far below.
MAX_CHARTS = 3
#: The heat maps' first class: the label on the face's box. Each member's own top class ("predicted", as it was)
#: showed "A_crp: neutral" under a face boxed "happy", a map of a class the page did not speak of.
BOXED_CLASS = "label"
#: A photo is shown at most this high (px): a tall one filled its column's width, a 1:3 picture some 1,590 px high,
#: its charts and the next photo far below. The width it gets for it is capped at the column's, as "stretch" is.
MAX_PHOTO_HEIGHT = 800
#: What each other page is for, linked under the first words of the page the app opens on.
OTHER_PAGES = {
    ui.WEBCAM_PAGE: "labels the faces in your camera live",
    ui.COMPARE_PAGE: "shows how each of the two emotion models and their mix sees a face",
    ui.VIDEO_PAGE: "labels the faces in a clip, frame by frame",
}
#: A photo this many times as wide as it is high takes the page's width, its charts in a row below it: beside them
#: a 4:1 panorama was shown some 530 px wide, its faces' captions about 4 px high.
WIDE_PHOTO = 2.0


@dataclass(frozen=True)
class Analysed:
    """One uploaded file: its pixels and faces, or the reason it could not be used."""

    name: str
    image: np.ndarray | None = None
    result: ImageResult | None = None
    error: str | None = None
    digest: str = ""
    #: (width, height) of the upright file itself; larger than the result's when `load_image` shrank it (over 4096 px).
    file_size: tuple[int, int] | None = None
    #: Frames (animation) or pages (TIFF) in the file: only the first is analysed.
    frames: int = 1

    def reported(self) -> ImageResult:
        """The result in the file's own pixels, as the downloads give it (the page draws on the shrunk copy)."""
        assert self.result is not None and self.file_size is not None
        return self.result.in_pixels_of(*self.file_size)


@dataclass(frozen=True)
class PageReads:
    """What this page run reads from the session's stores (`memo.remember`): the uploads' decoded pixels and their
    results under the current settings."""

    decoded: frozenset[tuple[str, str]] = frozenset()
    results: frozenset[tuple[Any, ...]] = frozenset()

    @classmethod
    def of(cls, name_digests: list[tuple[str, str]], settings: ui.DetectorSettings, pipe: Pipeline) -> PageReads:
        """From each upload's (name, digest); the result keys as `memo.image_result` stores them."""
        return cls(
            frozenset((digest, name) for name, digest in name_digests),
            frozenset(memo.image_result_key(digest, settings, pipe) for _, digest in name_digests),
        )


def analyse_upload(
    name: str,
    data: bytes,
    digest: str,
    pipe: Pipeline,
    settings: ui.DetectorSettings,
    reads: PageReads = PageReads(),
    shown_as: str | None = None,
) -> Analysed:
    """Decode and analyse one file (`digest`: its `memo.file_digest`); every failure becomes a message about this file
    only. `name` is the upload's own (its suffix picks the decoder), `shown_as` what the page and the downloads
    call it (`uploads.distinct_names`)."""
    label = shown_as or name
    try:
        image, file_size = memo.decoded_upload(name, data, digest, reads.decoded)
    except ImageLoadError as err:  # its message begins with the upload's own name
        return Analysed(label, error=label + str(err).removeprefix(name) if str(err).startswith(name) else str(err))
    except Exception as err:  # e.g. MemoryError or a decoder bug: still no traceback for the user
        log.exception("decoding %s failed", name)
        return Analysed(label, error=f"{label}: cannot read this file ({type(err).__name__})")
    try:
        result = memo.image_result(digest, image, file_size, settings, pipe, reads.results)  # shared with Compare
    except Exception as err:
        log.exception("analysing %s failed", name)
        return Analysed(label, image, error=f"{label}: analysis failed ({type(err).__name__}: {err})")
    frames = memo.upload_frames(data, digest)
    return Analysed(label, image, result, digest=digest, file_size=file_size, frames=frames)


def face_views(result: ImageResult, model: str) -> list[ModelView]:
    return [model_view(face.model_probs[model]) for face in result.faces]


def annotated_image(item: Analysed, views: list[ModelView]) -> np.ndarray:
    """The photo with numbered boxes, labelled by the chosen model."""
    assert item.result is not None and item.image is not None
    faces = item.result.faces
    return draw_faces(item.image, numbered(faces, views))


def show_charts(item: Analysed, views: list[ModelView], slot: str, model: str, side_by_side: bool = False) -> None:
    """A chart per face up to `MAX_CHARTS`, else one for the face picked; in a row under a wide photo."""
    assert item.result is not None
    faces = item.result.faces
    numbers = list(range(len(faces)))
    if len(faces) > MAX_CHARTS:
        picker = st.columns(2)[0] if side_by_side else st.container()
        chosen = picker.selectbox(
            f"{len(faces)} faces: show the probabilities of",
            numbers,
            format_func=lambda i: f"face #{i + 1} ({views[i].label} {views[i].confidence:.0%})",
            key=f"photos_chart_face_{slot}",
        )
        numbers = [chosen]
    # Under a wide photo, the row is shared by the charts shown, at least halves: one picked face's chart sat in a
    # third of the width, squeezed, beside two thirds left empty
    places = st.columns(max(2, len(numbers))) if side_by_side else [st.container() for _ in numbers]
    for place, i in zip(places, numbers, strict=False):
        title = label_text(views[i].label, views[i].confidence, i + 1)  # as the face's box says it
        chart = charts.probs_bar(views[i].probs, title, subtitle=ui.model_title(model))
        place.plotly_chart(chart, config=charts.figure_config(), key=f"bar_{slot}_{i}")


def show_gradcam(item: Analysed, views: list[ModelView], slot: str, model: str, pipe: Pipeline) -> None:
    """Heat maps of the chosen face for the chosen model (both members when the ensemble is chosen)."""
    assert item.result is not None and item.image is not None
    faces = item.result.faces
    st.markdown(f"**Heat maps** ({SHOWN_CAM.method}): what in the face raised the model's score for the class")
    st.caption(
        "Each map is scaled to its own peak: it shows where, not how much. How sure the model is of the class is "
        "the figure under the map."
    )
    left, right = st.columns(2)
    face_index = left.selectbox(
        "Face",
        range(len(faces)),
        format_func=lambda i: f"#{i + 1} {views[i].label}",
        key=f"photos_cam_face_{slot}",
    )
    boxed = views[face_index].label  # what the box says, whichever model is picked
    target = right.selectbox(
        "Class",
        [BOXED_CLASS, *EMOTIONS],
        format_func=lambda name: f"its label ({boxed})" if name == BOXED_CLASS else name,
        key=f"photos_cam_class_{slot}",
    )
    members = [m for m in pipe.ensemble.members if model in (ENSEMBLE_KEY, m.name)]
    face = faces[face_index]
    crop = crop_faces(item.image, [face.box], pipe.face_margin)[0]
    columns = st.columns(len(members) + 1)
    columns[0].image(crop, caption="face crop", width=160)
    cam_target = boxed if target == BOXED_CLASS else target
    for column, member in zip(columns[1:], members, strict=True):
        # The probability the charts show (with the ensemble's test-time views), not that of the one view the heat
        # map runs on.
        shown = face.model_probs[member.name]
        key = (item.digest, tuple(face.box), cam_target, str(member.path), ui.file_stamp(member.path))  # replaced
        try:  # the first map of a session loads the network for it: seconds with nothing else moving on the page
            with column, st.spinner(f"Heat map of {member.name}…"):
                explain = partial(ui.load_explainer(str(member.path)).explain, crop, cam_target)
                result = memo.session_memo("gradcam", key, explain)
        except Exception as err:
            log.exception("heat map failed")
            column.error(f"Heat map failed for {member.name}: {err}")
            continue
        column.image(result.overlay, caption=f"{member.name}: {cam_target} ({shown[cam_target]:.0%})", width=160)


def show_photo(item: Analysed, slot: str, model: str, show_cam: bool, pipe: Pipeline) -> None:
    """`slot` names the photo in its widget keys (see `photo_slots`)."""
    assert item.result is not None and item.image is not None and item.file_size is not None
    result = item.result
    views = face_views(result, model)
    annotated = annotated_image(item, views)
    with st.container(border=True):
        st.subheader(item.name)
        st.caption(f"{len(result.faces)} face(s) · {ui.size_note(item.file_size, result)} · {ui.model_title(model)}")
        ui.face_count_notes(item.name, len(result.faces), pipe, item.file_size)
        ui.first_frame_note(item.name, item.frames)
        wide = result.width > WIDE_PHOTO * result.height
        photo, beside = (st.container(), st.container()) if wide else st.columns([3, 2])
        with photo:
            shown = ui.displayable(annotated)
            ui.image_at_most(
                shown,
                round(MAX_PHOTO_HEIGHT * shown.shape[1] / shown.shape[0]),
                ui.faces_in_words(views, " (the table lists every face)"),
            )
            if result.faces:  # with none, the "annotated" image is the photo itself (the zip of all still holds it)
                st.download_button(
                    "Download annotated image",
                    data=partial(annotated_png, item, views),
                    file_name=annotated_name(item),
                    mime="image/png",
                    key=f"photos_png_{slot}",
                    on_click="ignore",
                )
        with beside:
            if result.faces:
                show_charts(item, views, slot, model, side_by_side=wide)
        if show_cam and result.faces:
            show_gradcam(item, views, slot, model, pipe)


def photo_slots(items: list[Analysed]) -> list[str]:
    """Widget-key names for the photos: the file's digest and its shown name (`uploads.distinct_names`), not its place
    in the list, so removing a file neither hands its chosen face and class to the photo that moves up nor resets
    that one's. Not the copy's number either: of the same photo dropped as x.png and y.png, removing x.png handed its
    choices to y.png."""
    return [f"{item.digest[:16]}_{memo.file_digest(item.name.encode())[:12]}" for item in items]


def results_table(items: list[Analysed], members: list[str]) -> pd.DataFrame:
    rows = [row for item in items for row in result_rows(item.name, item.reported(), members)]
    return pd.DataFrame(rows, columns=result_columns(members))


def table_columns(columns: list[str], model: str) -> list[str]:
    """The on-screen table's order (the CSV keeps its own): the photo, the face and, when one model is picked, its
    label first, which the boxes show (beside the ensemble's it read "happy" on the box and "sad" in the row); the box
    corners last, since nobody reads them on screen, and past them the table scrolled before any emotion."""
    first = ["image", "face", *([f"{model}_label"] if model != ENSEMBLE_KEY else [])]
    last = ["detector_score", "x1", "y1", "x2", "y2"]
    return [*first, *(name for name in columns if name not in first and name not in last), *last]


def results_json(items: list[Analysed], errors: list[str]) -> str:
    images = [{"name": item.name, **item.reported().to_dict()} for item in items if item.result is not None]
    return json.dumps({"images": images, "errors": errors}, indent=2)


def annotated_name(item: Analysed) -> str:
    """`<name>_annotated.png`, with the size it is drawn at when the photo was analysed shrunk (over 4096 px): the
    CSV/JSON boxes are in the file's own pixels, and would not fit that picture."""
    assert item.result is not None
    shown = (item.result.width, item.result.height)
    size = "" if item.file_size in (None, shown) else f"_{shown[0]}x{shown[1]}"
    return f"{PurePath(item.name).stem}_annotated{size}.png"


def annotated_png(item: Analysed, views: list[ModelView]) -> bytes:
    """The annotated download, drawn when asked for: the page's drawn copy is not kept for it until the next run
    (a copy per photo, on top of the decoded pixels, for as long as the session sits idle)."""
    return encode_png(annotated_image(item, views))


def annotated_zip(items: list[Analysed], model: str) -> bytes:
    """Built only when the button is clicked (on Streamlit's download thread: no `st.*` in here)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for index, item in enumerate(items):
            assert item.result is not None
            png = annotated_png(item, face_views(item.result, model))
            archive.writestr(f"{index:03d}_{annotated_name(item)}", png)
    return buffer.getvalue()


def shared_names_note(names: list[str], shown: list[str]) -> None:
    """The uploader lists every file by its own name, so "a (2).png" in the results matched nothing there: say which
    files were numbered, and in what order."""
    numbered: dict[str, list[str]] = {}
    for name, label in zip(names, shown, strict=True):
        numbered.setdefault(name, []).append(label)
    for name, labels in numbered.items():
        if len(labels) > 1:
            st.caption(f"{len(labels)} files are named {name}: shown as {', '.join(labels)}, in the order dropped.")


def sidebar() -> tuple[ui.DetectorSettings, str, bool, Pipeline]:
    """The page's settings: detection, the model whose labels the boxes show, test-time views and heat maps."""
    settings = ui.detector_controls("photos", offer_tta=True)
    ens = ui.ensemble()
    st.sidebar.subheader("Emotion model")
    model = st.sidebar.selectbox("Model", ui.model_names(ens), format_func=ui.model_title, key="photos_model")
    tta = ui.tta_control("photos", default=True)  # on, as the ensemble was fitted; off for a quicker large batch
    show_cam = st.sidebar.toggle(
        "Show heat maps",
        key="photos_gradcam",
        help=f"{SHOWN_CAM.method} maps of the face regions that raised the chosen model's score for a class: of the "
        'maps measured, the most faithful that still shows regions (README, "Heat maps").',
    )
    pipe = ui.pipeline(settings, tta=tta)
    ui.sidebar_info(pipe)
    return settings, model, show_cam, pipe


def welcome() -> None:
    """What the app does, and links to the other pages: the page the app opens on is the only place a newcomer
    learns what they are for. Links, not "in the menu on the left": on a phone that menu is folded away."""
    st.info(
        "Every face is boxed and labelled with its emotion (angry, disgust, fear, happy, sad, surprise or "
        "neutral); the results can be downloaded as CSV or JSON.",
        icon=":material/info:",
    )
    for page, what in OTHER_PAGES.items():
        title, icon = ui.PAGE_TITLES_AND_ICONS[page]
        st.page_link(page, label=f"**{title}**: {what}", icon=icon)


def analyse_all(files: list[Any], settings: ui.DetectorSettings, pipe: Pipeline) -> list[Analysed]:
    """Each upload analysed (or its result taken from this session's store), with a progress bar for several."""
    progress = st.progress(0.0, text="Analysing…") if len(files) > 1 else None
    analysed: list[Analysed] = []
    digests = [memo.file_digest(upload.getvalue()) for upload in files]
    name_digests = [(upload.name, digest) for upload, digest in zip(files, digests, strict=True)]
    reads = PageReads.of(name_digests, settings, pipe)
    names = [upload.name for upload in files]
    shown = uploads.distinct_names(names)
    shared_names_note(names, shown)
    for n, (upload, digest, label) in enumerate(zip(files, digests, shown, strict=True), start=1):
        analysed.append(analyse_upload(upload.name, upload.getvalue(), digest, pipe, settings, reads, label))
        if progress is not None:
            progress.progress(n / len(files), text=f"Analysed {n} of {len(files)}")
    if progress is not None:
        progress.empty()
    return analysed


def show_table(table: pd.DataFrame, good: list[Analysed], model: str) -> None:
    """Every face of every photo, the picked model's label beside its number; or why there is no row."""
    if table.empty:
        st.info("No face found in any photo.")
        return
    # Three places throughout (the CSV keeps its own): 0.045 beside 0.0452 looked like two precisions. A column
    # format, not a pandas Styler: Streamlit refuses a Styler of over 262,144 cells (some 14,600 faces).
    order = table_columns(list(table.columns), model)
    three_places = st.column_config.NumberColumn(format="%.3f")
    shares = ["detector_score", "ensemble_confidence", *EMOTIONS]
    config: dict[str, Any] = dict.fromkeys(shares, three_places)
    config |= {name: st.column_config.Column(pinned=True) for name in order[: order.index("ensemble_label")]}
    st.dataframe(table, hide_index=True, column_order=order, column_config=config)
    picked = "" if model == ENSEMBLE_KEY else f"The boxes show {model}'s labels: its column comes after the face. "
    st.caption(  # the chart above follows the model picker; these columns do not
        f"Face numbers match the boxes. {picked}The confidence and the seven probability columns are the "
        "ensemble's; each model's own label is in its `_label` column."
    )
    faceless = [item.name for item in good if item.result is not None and not item.result.faces]
    if faceless:  # a row is a face: without this a CSV reader cannot tell them from photos never analysed
        st.caption(f"No face found in {', '.join(faceless)}: no rows here nor in the CSV (the JSON lists them).")


def show_downloads(table: pd.DataFrame, good: list[Analysed], errors: list[str], model: str) -> None:
    downloads = st.container(horizontal=True)  # side by side, not spread over thirds of the page
    downloads.download_button(
        "Results as CSV", table.to_csv(index=False), "faces.csv", "text/csv", key="photos_csv", on_click="ignore"
    )
    downloads.download_button(
        "Results as JSON",
        results_json(good, errors),
        "faces.json",
        "application/json",
        key="photos_json",
        on_click="ignore",
    )
    downloads.download_button(
        "All annotated images (zip)",
        lambda: annotated_zip(good, model),
        "annotated.zip",
        "application/zip",
        key="photos_zip",
        on_click="ignore",
    )


def main() -> None:
    st.title("Photos")
    settings, model, show_cam, pipe = sidebar()
    files = uploads.kept_file_uploader(
        "Drop one or more photos",
        type=ui.PHOTO_TYPES,
        accept_multiple_files=True,
        key="photos_upload",
        help=", ".join(ui.PHOTO_TYPES),
    )
    if not files:
        welcome()
        return
    analysed = analyse_all(files, settings, pipe)
    errors = [item.error for item in analysed if item.error]
    good = [item for item in analysed if item.result is not None]
    for message in errors:
        st.error(message, icon=":material/error:")
    for item, slot in zip(good, photo_slots(good), strict=True):
        try:
            show_photo(item, slot, model, show_cam, pipe)
        except Exception as err:  # one photo that cannot be shown must not take the others' results with it
            log.exception("showing %s failed", item.name)
            st.error(f"{item.name}: could not show the result ({err})", icon=":material/error:")
    if not good:
        return
    st.subheader("All faces")
    table = results_table(good, pipe.ensemble.names)
    show_table(table, good, model)
    show_downloads(table, good, errors, model)


main()
