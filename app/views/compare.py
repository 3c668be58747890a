"""Ensemble comparison page: model A, model B and their mix side by side per face, and the measured metrics.

The weight slider re-mixes the stored per-model probabilities with `fer_core.ensemble.combine`: no model
runs again when it moves, so the charts follow the slider instantly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, memo, ui, uploads
from fer_core.draw import draw_faces, numbered
from fer_core.ensemble import ENSEMBLE_KEY, Ensemble, combine, normalised
from fer_core.imageio import ImageLoadError
from fer_core.labels import probs_dict, probs_vector
from fer_core.pipeline import FaceResult, ImageResult, Pipeline, crop_faces
from fer_core.tta import NO_TTA
from fer_core.verdict import Disagreement, disagreement, model_view

SOURCE_KEY = "compare_source"
WEIGHT_KEY = "compare_weight"
UPLOAD, SNAPSHOT, FROM_PHOTOS = "Upload a photo", "Webcam snapshot", "A photo from the Photos page"
PHOTOS_UPLOAD_KEY = "photos_upload"
#: Why a snapshot's figures are not the live ones ("happy 61%" live became 57% here, unexplained).
SNAPSHOT_NOTE = (
    "The snapshot is analysed again here with this page's settings (in the sidebar): the detector at the photo "
    "size and, if on, the test-time views, where the webcam runs smaller and smooths over frames; so its figures "
    "can differ a little from the live ones."
)
#: Faces shown at once; more can be picked (each face is a row of three charts).
MAX_FACES = 6
#: A face crop's widest, beside its charts (on a phone, above them: it was blown up to the screen's width).
FACE_THUMBNAIL_PX = 200
#: The annotated photo's widest: its charts are per face, below it, so it need not fill a wide screen.
MAX_PHOTO_WIDTH = 720


def pick_image() -> tuple[str, np.ndarray, str, tuple[int, int]] | None:
    """(name, RGB image, cache key, the file's (width, height): a photo over 4096 px is analysed shrunk) from an
    upload here, one of the Photos page's (a photo dropped there had to be dropped again here), or the webcam
    snapshot; or None with a message shown."""
    snapshot: ui.Snapshot | None = st.session_state.get(ui.SNAPSHOT_KEY)
    from_photos = uploads.kept_files(PHOTOS_UPLOAD_KEY)
    options = [UPLOAD, *([FROM_PHOTOS] if from_photos else []), *([SNAPSHOT] if snapshot else [])]
    if st.session_state.get(SOURCE_KEY) not in options:  # a kept choice whose photo is gone, or a first visit
        own_upload = uploads.kept_files("compare_upload")
        st.session_state[SOURCE_KEY] = FROM_PHOTOS if from_photos and not own_upload else UPLOAD
    if snapshot and snapshot.fresh:
        snapshot.fresh = False
        st.session_state[SOURCE_KEY] = SNAPSHOT  # just sent from the webcam page: show it
    source = st.radio("Photo", options, horizontal=True, key=SOURCE_KEY) if len(options) > 1 else UPLOAD
    if snapshot and source == SNAPSHOT:
        image = snapshot.image
        # raw pixels do not say their shape (a 2x6 and a 6x2 snapshot would share a result), nor are they a file's
        # bytes as the upload digests are (both key the results shared with the Photos page)
        digest = memo.file_digest(f"{image.shape} {image.dtype}".encode() + image.tobytes())
        st.caption(SNAPSHOT_NOTE)
        return snapshot.name, image, digest, (image.shape[1], image.shape[0])
    if source == FROM_PHOTOS:
        shown = uploads.distinct_names([photo.name for photo in from_photos])  # as the Photos page names them
        choices = range(len(from_photos))
        start = first_readable(from_photos)
        index = st.selectbox("Photo from the Photos page", choices, start, format_func=shown.__getitem__) or 0
        upload, name = from_photos[index], shown[index]
    else:
        upload = uploads.kept_file_uploader("Drop a photo", type=ui.PHOTO_TYPES, key="compare_upload")
        if upload is None:
            st.info("Upload a photo, or take a snapshot on the Webcam page.")
            return None
        name = upload.name
    data = upload.getvalue()
    digest = memo.file_digest(data)
    try:
        image, file_size = memo.decoded_upload(upload.name, data, digest)  # the upload's own suffix picks the decoder
        ui.first_frame_note(name, memo.upload_frames(data, digest))
        return name, image, digest, file_size
    except ImageLoadError as err:
        st.error(str(err), icon=":material/error:")
    except Exception as err:  # never a traceback for a bad file
        st.error(f"{name}: cannot read this file ({type(err).__name__})", icon=":material/error:")
    return None


def first_readable(photos: list[Any]) -> int:
    """The first of the Photos page's uploads that decodes (0 if none does): the page opened on a broken file when
    one was dropped first, with an error where a photo was expected. Decoded photos are remembered (Photos decoded
    them already) and failures are quick."""
    for number, photo in enumerate(photos):
        data = photo.getvalue()
        try:
            memo.decoded_upload(photo.name, data, memo.file_digest(data))
        except Exception:  # whatever the upload's fault, `pick_image` names it if the user picks that photo
            continue
        return number
    return 0


def reset_weight(fitted: float) -> None:
    st.session_state[WEIGHT_KEY] = fitted


def weight_controls(ens: Ensemble) -> tuple[dict[str, float], float | None]:
    """Slider(s) starting at the fitted weights; returns the mix and, for two models, the first one's share."""
    names = ens.names
    shares = normalised(ens.weights)  # a raw sum of 1e308s overflowed and started the slider at 0
    if len(names) != 2:
        return {n: st.slider(f"Weight of {n}", 0.0, 1.0, shares[n], 0.01, key=f"{WEIGHT_KEY}_{n}") for n in names}, None
    first, second = names
    fitted = round(shares[first], 2)
    left, right = st.columns([4, 1])
    weight = left.slider(  # plain text: a screen reader read the label's markdown asterisks aloud
        f"Weight of {first} in the ensemble (fitted: {fitted}; 0 = {second} alone, 1 = {first} alone)",
        0.0,
        1.0,
        fitted,
        0.01,
        key=WEIGHT_KEY,
        help=f"The ensemble averages the two models' probabilities, {first}'s times this weight and {second}'s "
        f"times the rest (1 − weight). It starts at the weight fitted on PublicTest ({fitted}).",
    )
    right.button("Reset to fitted", on_click=reset_weight, args=(fitted,), key="compare_reset")
    return {first: weight, second: 1.0 - weight}, weight


def mixed_probs(face: FaceResult, names: list[str], weights: dict[str, float]) -> dict[str, float]:
    """The face's probabilities under the slider's mix of the models, re-mixed from the stored per-model ones."""
    return probs_dict(combine({n: probs_vector(face.model_probs[n]) for n in names}, weights))


def show_face(
    number: int, face: FaceResult, crop: np.ndarray, names: list[str], mix: dict[str, float], verdict: Disagreement
) -> None:
    ensemble = model_view(mix)
    with st.container(border=True):
        columns = st.columns([1, *[2] * (len(names) + 1)])
        with columns[0]:  # stacked on a phone, the column is the screen's width: the face stays a thumbnail
            ui.image_at_most(crop, FACE_THUMBNAIL_PX, f"face #{number}")
        for column, name in zip(columns[1:], names, strict=False):
            view = model_view(face.model_probs[name])
            alert = view.label != ensemble.label
            column.plotly_chart(
                charts.probs_bar(view.probs, f"{name}: {view.label} {view.confidence:.0%}", alert=alert),
                config=charts.figure_config(),
                key=f"compare_{number}_{name}",
            )
        columns[-1].plotly_chart(
            charts.probs_bar(mix, f"Ensemble: {ensemble.label} {ensemble.confidence:.0%}"),
            config=charts.figure_config(),
            key=f"compare_{number}_{ENSEMBLE_KEY}",
        )
        said = ", ".join(f"{n} says **{verdict.labels[n]}**" for n in names)
        # One minus the total variation, in words a reader can check against the charts: "26% apart" beside 0.48
        # and 0.61 matched nothing shown
        apart = f"{1 - verdict.distance:.0%} of their probability lies on the same classes"
        if verdict.disagree:
            st.warning(
                f"Face #{number}: the models disagree: {said}, and {apart}; the ensemble picks **{ensemble.label}**.",
                icon=":material/warning:",
            )
        else:
            st.success(f"Face #{number}: the models agree on **{ensemble.label}**; {apart}.")


def public_test(ens: Ensemble) -> dict[str, Any]:
    """ensemble.json's PublicTest figures from the fit, {} when absent or not an object (a hand-edited file may hold
    `"public_test": null`, which raised an AttributeError on every upload)."""
    public = ens.spec.get("public_test")
    return public if isinstance(public, dict) else {}


def show_weight_curve(ens: Ensemble, weight: float) -> None:
    """The fit's accuracy against the weight, when ensemble.json has a curve; a malformed one is named, not drawn."""
    curve = public_test(ens).get("weight_curve")
    if not curve:
        return
    points = charts.weight_curve_points(curve)
    with st.expander("PublicTest accuracy against the weight"):
        if points is None:
            st.caption("ensemble.json's `public_test.weight_curve` is not a list of weight/accuracy pairs: not drawn.")
            return
        fitted = normalised(ens.weights)[ens.names[0]]
        st.plotly_chart(charts.weight_curve(points, weight, fitted, ens.names[0]), config=charts.figure_config())


def show_faces(
    name: str, digest: str, image: np.ndarray, file_size: tuple[int, int], result: ImageResult, pipe: Pipeline
) -> None:
    ens = pipe.ensemble
    mix, weight = weight_controls(ens)
    try:
        mixes = [mixed_probs(face, ens.names, mix) for face in result.faces]
    except ValueError as err:  # all weights zero
        st.warning(str(err))
        return
    views = [model_view(m) for m in mixes]
    annotated = draw_faces(image, numbered(result.faces, views))
    shown = ui.displayable(annotated)
    ui.image_at_most(
        shown,
        min(shown.shape[1], MAX_PHOTO_WIDTH),
        f"{name}: {len(result.faces)} face(s) · {ui.size_note(file_size, result)} · labelled by the ensemble at the "
        f"weight above{': ' if views else ''}{ui.faces_in_words(views, ' (pick any below)')}",
    )
    ui.face_count_notes(name, len(result.faces), pipe, file_size)
    if not result.faces:
        return
    numbers = list(range(len(result.faces)))
    verdicts = [disagreement({name: face.model_probs[name] for name in ens.names}) for face in result.faces]
    if len(numbers) > MAX_FACES:
        split = [i for i in numbers if verdicts[i].disagree]  # the faces worth a look first
        numbers = st.multiselect(  # one choice per photo and face count: numbers that no longer exist must not stay
            "Faces to compare",
            numbers,
            [*split, *(i for i in numbers if i not in split)][:3],
            format_func=lambda i: f"#{i + 1}",
            key=f"compare_faces_{digest}_{len(numbers)}",
        )
        if split:
            listed = ", ".join(f"#{i + 1}" for i in split)
            st.caption(f"The models disagree on {len(split)} of {len(result.faces)} faces ({listed}): those first.")
    if not numbers:  # the picker emptied: say why nothing follows
        st.info("No face picked: pick faces above to compare them.", icon=":material/arrow_upward:")
    crops = crop_faces(image, [result.faces[i].box for i in numbers], pipe.face_margin)
    for i, crop in zip(numbers, crops, strict=True):
        show_face(i + 1, result.faces[i], crop, ens.names, mixes[i], verdicts[i])
    if weight is not None:
        show_weight_curve(ens, weight)


def metrics_table(ens: Ensemble, found: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Accuracy and macro-F1 per model and split; PublicTest from the ensemble fit when no file has it."""
    table: dict[str, dict[str, float | None]] = {}
    public = public_test(ens)
    if "PublicTest" not in found and public:
        singles = public.get("singles")
        for name, scores in (singles if isinstance(singles, dict) else {}).items():
            if isinstance(scores, dict):
                table.setdefault(name, {})["PublicTest accuracy"] = charts.finite(scores.get("accuracy"))
                table[name]["PublicTest macro-F1"] = charts.finite(scores.get("macro_f1"))
        if charts.finite(public.get("ensemble_accuracy")) is not None:
            table.setdefault(ENSEMBLE_KEY, {})["PublicTest accuracy"] = charts.finite(public["ensemble_accuracy"])
    for split, data in found.items():
        for name, scores in data["models"].items():
            table.setdefault(name, {})[f"{split} accuracy"] = scores.get("accuracy")
            table[name][f"{split} macro-F1"] = scores.get("macro_f1")
    return pd.DataFrame.from_dict(table, orient="index").rename(index=ui.model_title)


def fitted_mix_note(ens: Ensemble) -> str:
    """What the table's Ensemble row measured: the mix and TTA set in ensemble.json, not the slider's (the metrics
    files are checked to be of that mix, `ui.load_metrics`), which the table beside the slider did not say."""
    shares = normalised(ens.weights)
    mix = " + ".join(f"{name} × {shares[name]:.2f}" for name in ens.names)
    tta = "no TTA" if ens.shipped_tta == NO_TTA else f"TTA {ens.shipped_tta}"
    sliders = "the slider does" if len(ens.names) == 2 else "the sliders do"
    return f"Ensemble = {mix}, {tta}: the fitted mix; {sliders} not change these figures."


#: The metrics' terms for a reader who does not know FER-2013's splits or F1 (the section named them only).
METRICS_NOTE = (
    "Measured on FER-2013's two test sets of faces the models never trained on. PublicTest chose the models and "
    "the ensemble's weight; PrivateTest was kept aside until the end, so its figures are the fair estimate. "
    "Accuracy: the share of faces labelled right. Macro-F1: the F1 score (the balance of precision and recall) "
    "averaged over the seven emotions, so a rare one (disgust) counts as much as a common one."
)


def show_metrics(ens: Ensemble) -> None:
    st.header("Measured metrics")
    found, problems = ui.load_metrics(ui.weights_dir(), ens)
    for problem in problems:
        st.warning(problem)
    table = metrics_table(ens, found)
    if table.empty:
        st.info(
            f"No measured metrics for these weights in `{ui.weights_dir()}` (`python -m fer_core.evaluate` writes "
            "metrics.json; copy it there as metrics_PrivateTest.json / metrics_PublicTest.json)."
        )
        return
    st.caption(METRICS_NOTE)
    st.dataframe(table.style.format("{:.3f}", na_rep="–"))
    if ui.model_title(ENSEMBLE_KEY) in table.index:
        st.caption(fitted_mix_note(ens))
    if not found:
        st.caption("Only PublicTest numbers from the ensemble fit are available; no confusion matrices.")
        return
    split = st.radio("Split", list(found), horizontal=True, key="compare_metrics_split")
    data = found[split]
    st.caption(f"{split}: {data.get('n', '?')} images.")
    models = list(data["models"])
    for tab, name in zip(st.tabs([ui.model_title(n) for n in models]), models, strict=True):
        scores = data["models"][name]
        with tab:
            if "confusion" in scores:
                title = (
                    f"{ui.model_title(name)}: accuracy {scores.get('accuracy', float('nan')):.3f}, "
                    f"macro-F1 {scores.get('macro_f1', float('nan')):.3f}"
                )
                st.plotly_chart(
                    charts.confusion_heatmap(scores["confusion"], title),
                    config=charts.figure_config(toolbar=True),
                    key=f"confusion_{split}_{name}",
                )
            if "per_class" in scores:
                table = pd.DataFrame(scores["per_class"]).T
                counts = [c for c in table.columns if c == "support"]  # face counts, not fractions: no "491.000"
                st.dataframe(table.style.format("{:.3f}").format("{:.0f}", subset=counts))


def models_note(ens: Ensemble) -> str:
    """What the page compares, in one plain sentence for a user who meets the models' names here first."""
    return (
        f"Each face as each of the two emotion models ({', '.join(m.name for m in ens.members)}) labels it, and as "
        "their ensemble does, which the other pages show. A red chart title: that model's label is not the ensemble's."
    )


def models_detail(ens: Ensemble) -> str:
    """What each model is (its checkpoint's architecture and recipe), and why the ensemble can be less sure than a
    model: for whoever opens it, not in the way of everyone else (it opened the page as one paragraph of recipes)."""
    members = "\n".join(
        f"- **{m.name}**: {m.config.arch}, {m.meta.get('recipe') or 'recipe not recorded'}" for m in ens.members
    )
    return (
        "Both are image classifiers trained on FER-2013, each with its own augmentation:\n\n"
        f"{members}\n\nThe ensemble is the weighted average of their probabilities, class by class, so it is often "
        "less sure than the surer model."
    )


def main() -> None:
    st.title("Ensemble comparison")
    settings = ui.detector_controls("compare", offer_tta=True)
    pipe = ui.pipeline(settings, tta=ui.tta_control("compare", default=True))  # as on Photos: results are shared
    ui.sidebar_info(pipe)
    st.caption(models_note(pipe.ensemble))
    with st.expander("What the two models are"):
        st.markdown(models_detail(pipe.ensemble))
    picked = pick_image()
    if picked is not None:
        name, image, digest, file_size = picked
        try:
            result = memo.image_result(digest, image, file_size, settings, pipe)  # shared with Photos
        except Exception as err:
            st.error(f"{name}: analysis failed ({type(err).__name__}: {err})", icon=":material/error:")
        else:
            show_faces(name, digest, image, file_size, result, pipe)
    show_metrics(pipe.ensemble)


main()
