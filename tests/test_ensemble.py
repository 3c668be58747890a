"""Ensemble maths and the weight search."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from types import MethodType
from typing import Any, cast

import numpy as np
import pytest

from fer_core import classifier, cli, fit_ensemble
from fer_core import ensemble as ensemble_module
from fer_core.checkpoint import CheckpointError
from fer_core.data import FerDataError, load_fer2013
from fer_core.ensemble import ENSEMBLE_KEY, Ensemble, combine, fit_weight, read_spec, write_spec
from fer_core.export import file_sha256
from fer_core.fit_ensemble import main as fit_ensemble_main
from fer_core.tta import TTA_SETS, View, tta_from_spec
from tests.conftest import make_classifier_checkpoint


def random_probs(n: int, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(n, 7))
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def test_weight_one_equals_the_single_model_and_rows_sum_to_one():
    a, b = random_probs(20, 0), random_probs(20, 1)
    np.testing.assert_allclose(combine({"a": a, "b": b}, {"a": 1.0, "b": 0.0}), a)
    mixed = combine({"a": a, "b": b}, {"a": 0.3, "b": 0.7})
    np.testing.assert_allclose(mixed, 0.3 * a + 0.7 * b)
    np.testing.assert_allclose(mixed.sum(1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="positive sum"):
        combine({"a": a, "b": b}, {"a": 0.0, "b": 0.0})


def test_fit_weight_prefers_the_better_model():
    labels = np.arange(40) % 7
    perfect = np.eye(7)[labels] * 0.9 + 0.1 / 7
    noise = random_probs(40, 2)
    weight, curve = fit_weight(perfect, noise, labels)
    assert max(row["accuracy"] for row in curve) == 1.0
    assert len(curve) == 21 and curve[0]["weight"] == 0.0 and curve[-1]["weight"] == 1.0
    # Accuracy ties from w = 0.4 up; the lower NLL breaks the tie: all weight on the perfect model, either order.
    assert weight == 1.0 and fit_weight(noise, perfect, labels)[0] == 0.0


def test_fit_ensemble_refuses_two_members_with_one_name(tmp_path, fake_weights, capsys):
    """Same-named members would share one file and one probability column: a silently wrong ensemble."""
    member = fake_weights / "A_crp.pt"
    with pytest.raises(SystemExit):
        fit_ensemble_main(["--data", str(tmp_path), "--models", str(member), str(member), "--out", str(tmp_path / "o")])
    assert "both checkpoints are named 'A_crp'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_fit_ensemble_refuses_a_member_whose_name_cannot_name_its_file(tmp_path, fake_weights, capsys):
    """A name with a path separator failed with a raw "[Errno 2]" after the fit; an empty one shipped ".pt"."""
    odd = make_classifier_checkpoint(tmp_path / "odd.pt", "sub/x", seed=3)
    with pytest.raises(SystemExit):
        fit_ensemble_main(["--data", str(tmp_path), "--models", str(fake_weights / "A_crp.pt"), str(odd), "--out",
                           str(tmp_path / "o")])  # fmt: skip
    assert f"{odd}: its model name 'sub/x' cannot name a model file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def fit_args(fake_weights, data, out):
    members = [str(fake_weights / "A_crp.pt"), str(fake_weights / "B_mixcut.pt")]
    return ["--data", str(data), "--models", *members, "--out", str(out)]


def test_fit_ensemble_writes_a_checked_spec_and_nothing_else(tmp_path, fake_weights, tiny_csv):
    out = tmp_path / "weights"
    fit_ensemble_main(fit_args(fake_weights, tiny_csv, out))
    assert sorted(p.name for p in out.iterdir()) == ["A_crp.pt", "B_mixcut.pt", "ensemble.json"]  # no staging left
    spec = json.loads((out / "ensemble.json").read_text())
    assert sum(m["weight"] for m in spec["models"]) == pytest.approx(1.0)
    assert spec["tta"] in TTA_SETS and spec["public_test"]["ensemble_accuracy"] > 0
    assert Ensemble.load(out, runtime="torch").names == ["A_crp", "B_mixcut"]  # the recorded hashes match


def peaked(classes: np.ndarray, peak: float) -> np.ndarray:
    """Rows that put `peak` on the given class and spread the rest evenly."""
    probs = np.full((len(classes), 7), (1 - peak) / 6)
    probs[np.arange(len(classes)), classes] = peak
    return probs


def test_fit_ensemble_ships_the_best_tta_set_and_its_weights_in_member_order(
    tmp_path, fake_weights, tiny_csv, monkeypatch
):
    """Designed PublicTest probabilities with one right answer: under `flip_rot8` A is right on 12 of the 14
    faces and B, surer, on 4, so the best mix leans on A (w >= 0.65 for 12/14); every other set makes A worse.
    A swapped weight (A's fitted weight given to B) or a worst-set choice would be written as if it were best."""
    labels = load_fer2013(tiny_csv)["PublicTest"].labels
    wrong = (labels + 1) % 7

    def designed(ensemble: Ensemble, split, **_) -> dict[str, np.ndarray]:
        a_right = 12 if ensemble.tta == "flip_rot8" else 9
        a = peaked(np.where(np.arange(len(labels)) < a_right, labels, wrong), 0.6)
        b = peaked(np.where(np.arange(len(labels)) >= 10, labels, (labels + 2) % 7), 0.9)
        return {"A_crp": a, "B_mixcut": b}

    monkeypatch.setattr(fit_ensemble, "predict_split", designed)
    out = tmp_path / "weights"
    fit_ensemble_main(fit_args(fake_weights, tiny_csv, out))
    spec = json.loads((out / "ensemble.json").read_text())
    measured = spec["public_test"]
    assert spec["tta"] == "flip_rot8" and measured["ensemble_accuracy"] == pytest.approx(12 / 14)
    assert measured["ensemble_accuracy_by_tta"]["flip_rot8"] == max(measured["ensemble_accuracy_by_tta"].values())
    weights = {m["name"]: m["weight"] for m in spec["models"]}
    assert weights["A_crp"] >= 0.65 and weights["B_mixcut"] == pytest.approx(1 - weights["A_crp"])
    assert measured[ENSEMBLE_KEY + "_weight_of_first"] == pytest.approx(weights["A_crp"])
    probs = designed(Ensemble.load(out, runtime="torch").with_tta("flip_rot8"), None)
    mixed = combine(probs, weights).argmax(1)
    assert (mixed == labels).mean() == pytest.approx(measured["ensemble_accuracy"])  # the shipped weights score it
    singles = measured["singles"]
    assert (singles["A_crp"]["accuracy"], singles["B_mixcut"]["accuracy"]) == pytest.approx((12 / 14, 4 / 14))


@pytest.mark.parametrize("failure", ["bad data", "interrupted"])
def test_a_failed_refit_leaves_the_shipped_folder_as_it_was(tmp_path, fake_weights, tiny_csv, monkeypatch, failure):
    out = tmp_path / "weights"
    shutil.copytree(fake_weights, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    data = tmp_path / "typo.csv" if failure == "bad data" else tiny_csv
    if failure == "interrupted":  # Ctrl-C during the minutes of PublicTest predictions
        monkeypatch.setattr(fit_ensemble, "predict_split", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(FerDataError if failure == "bad data" else KeyboardInterrupt):
        fit_ensemble_main(fit_args(fake_weights, data, out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_fit_ensemble_checks_its_output_names_first_and_moves_its_files_in_all_or_none(
    tmp_path: Path,
    fake_weights: Path,
    tiny_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A folder named B_mixcut.pt (or ensemble.json) in --out was an IsADirectoryError traceback after the whole
    fit, with A_crp.pt already moved in: the folder half replaced, where the README promises that a failed run
    leaves it as it was. Such a folder is now refused before the fit, and one made during the fit (a move that
    fails part-way) gets every name its earlier file back, or none where it had none."""
    out = tmp_path / "weights"
    (out / "B_mixcut.pt").mkdir(parents=True)
    real_fit = fit_ensemble.fit
    monkeypatch.setattr(fit_ensemble, "fit", lambda *args: pytest.fail("fitted before checking --out"))
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: fit_ensemble_main(fit_args(fake_weights, tiny_csv, out)))
    err = capsys.readouterr().err
    assert (
        done.value.code == 2 and err == f"error: --out {out}: B_mixcut.pt is a folder; the results need those names\n"
    )

    (out / "B_mixcut.pt").rmdir()
    (out / "B_mixcut.pt").write_bytes(b"earlier B")  # and no A_crp.pt before the run

    def fit_then_block_the_last_move(*args: Any) -> dict[str, Any]:
        spec = real_fit(*args)
        (out / "ensemble.json").mkdir()  # moved in last, after both checkpoints
        return spec

    monkeypatch.setattr(fit_ensemble, "fit", fit_then_block_the_last_move)
    even = {"A_crp": np.full((14, 7), 1 / 7), "B_mixcut": np.full((14, 7), 1 / 7)}  # tiny_csv's 14 PublicTest faces
    monkeypatch.setattr(fit_ensemble, "predict_split", lambda *args: even)  # the weight search is not tested here
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: fit_ensemble_main(fit_args(fake_weights, tiny_csv, out)))
    err = capsys.readouterr().err
    blocked = out / "ensemble.json"
    assert done.value.code == 2
    assert err == f"error: {blocked}: could not move the fitted file there (Is a directory); {out} is left as it was\n"
    assert sorted(path.name for path in out.iterdir()) == ["B_mixcut.pt", "ensemble.json"]  # no A_crp.pt, no staging
    assert (out / "B_mixcut.pt").read_bytes() == b"earlier B" and blocked.is_dir()


def copy_with_hashes(fake_weights, tmp_path):
    """A copy of the weights whose ensemble.json records each member's sha256, as fit_ensemble writes it."""
    folder = shutil.copytree(fake_weights, tmp_path / "weights")
    spec = json.loads((folder / "ensemble.json").read_text())
    for member in spec["models"]:
        member["sha256"] = file_sha256(folder / member["file"])
    write_spec(folder / "ensemble.json", spec)
    return folder


def test_loading_refuses_a_member_replaced_after_the_fit(tmp_path, fake_weights):
    folder = copy_with_hashes(fake_weights, tmp_path)
    assert Ensemble.load(folder, runtime="torch").names == ["A_crp", "B_mixcut"]
    shutil.copyfile(folder / "B_mixcut.pt", folder / "A_crp.pt")  # a new stage dropped in without a refit
    with pytest.raises(CheckpointError, match=r"A_crp\.pt: sha256 .* run python -m fer_core.fit_ensemble again"):
        Ensemble.load(folder, runtime="torch")


def test_a_recorded_sha256_that_is_not_a_string_is_named(tmp_path, fake_weights):
    """`"sha256": 5` in a hand-edited ensemble.json was a TypeError traceback ('int' object is not subscriptable)."""
    folder = copy_with_hashes(fake_weights, tmp_path)
    spec = json.loads((folder / "ensemble.json").read_text())
    for recorded in (5, 0, False):
        spec["models"][1]["sha256"] = recorded
        write_spec(folder / "ensemble.json", spec)
        named = rf"ensemble\.json: model 2 \(B_mixcut\) has sha256 {json.dumps(recorded)}; expected"
        for load in (lambda: Ensemble.load(folder, runtime="torch"), lambda: read_spec(folder)):
            with pytest.raises(CheckpointError, match=named):
                load()


@pytest.mark.parametrize("weight", [1e-50, 1e39, 1e308])
def test_extreme_weights_mix_as_their_ratio(tmp_path, fake_weights, weight):
    """Equal weights of 1e-50 or 1e39 passed the checks, then underflowed or overflowed against the float32
    probabilities: NaN for every face, each labelled angry."""
    folder = shutil.copytree(fake_weights, tmp_path / "weights")
    spec = json.loads((folder / "ensemble.json").read_text())
    for member in spec["models"]:
        member["weight"] = weight
    write_spec(folder / "ensemble.json", spec)
    batch = np.random.default_rng(5).integers(0, 256, size=(4, 1, 48, 48), dtype=np.uint8)
    halves = Ensemble.load(fake_weights, runtime="torch").predict_batch(batch)[ENSEMBLE_KEY]  # 0.5 each
    np.testing.assert_array_equal(Ensemble.load(folder, runtime="torch").predict_batch(batch)[ENSEMBLE_KEY], halves)
    a, b = random_probs(5, 0).astype(np.float32), random_probs(5, 1).astype(np.float32)
    uneven = combine({"a": a, "b": b}, {"a": weight, "b": 3 * weight if weight < 1e300 else weight / 3})
    expected = 0.25 * a + 0.75 * b if weight < 1e300 else 0.75 * a + 0.25 * b
    np.testing.assert_allclose(uneven, expected, rtol=1e-6)


def test_loading_refuses_members_whose_names_would_collide(tmp_path, fake_weights):
    folder = shutil.copytree(fake_weights, tmp_path / "weights")
    spec = json.loads((folder / "ensemble.json").read_text())
    spec["models"][1]["file"] = "A_crp.pt"  # both members the same network: one probability column
    write_spec(folder / "ensemble.json", spec)
    with pytest.raises(CheckpointError, match=r"members are named \['A_crp', 'A_crp'\]"):
        Ensemble.load(folder, runtime="torch")


def test_loaded_ensemble_predicts_members_and_mix(fake_weights):
    ensemble = Ensemble.load(fake_weights, runtime="torch")
    batch = np.random.default_rng(0).integers(0, 256, size=(5, 1, 48, 48), dtype=np.uint8)
    probs = ensemble.predict_batch(batch)
    assert set(probs) == {ENSEMBLE_KEY, "A_crp", "B_mixcut"}
    np.testing.assert_allclose(probs[ENSEMBLE_KEY].sum(1), 1.0, rtol=1e-5)
    only_a = ensemble.with_weights({"A_crp": 1.0, "B_mixcut": 0.0}).predict_batch(batch)
    np.testing.assert_allclose(only_a[ENSEMBLE_KEY], probs["A_crp"], rtol=1e-5)
    assert not np.allclose(probs["A_crp"], probs["B_mixcut"])


def test_flip_tta_averages_the_mirror_image(fake_weights):
    ensemble = Ensemble.load(fake_weights, runtime="torch")
    member = ensemble.members[0]
    batch = np.random.default_rng(1).integers(0, 256, size=(3, 1, 48, 48), dtype=np.uint8)
    expected = (member.predict_batch(batch) + member.predict_batch(np.ascontiguousarray(batch[..., ::-1]))) / 2
    np.testing.assert_allclose(member.predict_batch(batch, "flip"), expected, rtol=1e-5, atol=1e-7)


def test_every_tta_set_averages_its_views_one_by_one(fake_weights):
    member = Ensemble.load(fake_weights, runtime="torch").members[0]
    batch = np.random.default_rng(3).integers(0, 256, size=(4, 1, 48, 48), dtype=np.uint8)
    for name, (views, _description) in TTA_SETS.items():
        one_by_one = np.mean([member.predict_batch(view.apply(batch)) for view in views], axis=0)
        np.testing.assert_allclose(member.predict_batch(batch, name), one_by_one, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(member.predict_batch(batch, name).sum(1), 1.0, rtol=1e-5)


def test_views_move_pixels_as_documented():
    image = np.zeros((1, 1, 48, 48), np.uint8)
    image[0, 0, 10, 5] = 255
    assert View(mirror=True).apply(image)[0, 0, 10, 42] == 255
    assert View(shift_px=(3.0, 0.0)).apply(image)[0, 0, 10, 8] == 255
    assert View(shift_px=(0.0, -3.0)).apply(image)[0, 0, 7, 5] == 255
    rotated = View(angle_deg=90.0).apply(image)[0, 0]  # counter-clockwise: left column goes to the bottom row
    y, x = np.unravel_index(rotated.argmax(), rotated.shape)
    assert (y, x) == (42, 10)
    assert View().is_identity and View().apply(image) is image
    square = np.zeros((1, 1, 48, 48), np.uint8)
    square[0, 0, 9:39, 9:39] = 255  # 900 white pixels about the centre: a scale multiplies the area by scale**2
    for scale in (0.5, 0.93, 1.08):  # flip_zoom's scales shrink and enlarge the face a little
        white = int((View(scale=scale).apply(square) > 127).sum())
        assert white == pytest.approx(900 * scale**2, abs=60 * scale), scale  # half the edge pixels may round
    shrunk = View(scale=0.5).apply(np.full((1, 1, 48, 48), 255, np.uint8))[0, 0]
    assert shrunk[0].max() == 0 and shrunk[:, 0].max() == 0 and shrunk[24, 24] == 255  # zero padding, as in training


def test_unknown_tta_set_is_a_clear_error(fake_weights):
    ensemble = Ensemble.load(fake_weights, runtime="torch")
    with pytest.raises(ValueError, match=r"unknown TTA set 'tenfold'.*flip_rot8"):
        ensemble.with_tta("tenfold")
    with pytest.raises(ValueError, match="unknown TTA set"):
        tta_from_spec({"tta": "tenfold"})
    assert tta_from_spec({"hflip_tta": True}) == "flip" and tta_from_spec({}) == "none"


def test_with_tta_shares_the_models_and_switches_the_shipped_set(fake_weights, tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(fake_weights, folder)
    spec = json.loads((folder / "ensemble.json").read_text())
    write_spec(folder / "ensemble.json", {**spec, "tta": "flip_zoom"})
    ensemble = Ensemble.load(folder, runtime="torch")
    batch = np.random.default_rng(2).integers(0, 256, size=(2, 1, 48, 48), dtype=np.uint8)
    on, off = ensemble.with_tta(True), ensemble.with_tta(False)
    assert (ensemble.tta, on.tta, off.tta) == ("flip_zoom", "flip_zoom", "none")
    assert on.members is ensemble.members and on.weights == off.weights == ensemble.weights
    for switched, name in ((on, "flip_zoom"), (off, "none")):
        for member in ensemble.members:
            np.testing.assert_allclose(
                switched.predict_batch(batch)[member.name], member.predict_batch(batch, name), rtol=1e-6
            )


def test_large_batches_reach_the_runtime_in_chunks(fake_weights, monkeypatch):
    member = Ensemble.load(fake_weights, runtime="torch").members[0]
    batch = np.random.default_rng(4).integers(0, 256, size=(10, 1, 48, 48), dtype=np.uint8)
    whole = member.predict_batch(batch, "flip_rot8")
    sizes: list[int] = []
    runtime = member.runtime
    member.runtime = lambda crops: (sizes.append(len(crops)), runtime(crops))[1]  # type: ignore[func-returns-value]
    monkeypatch.setattr(classifier, "MAX_RUNTIME_BATCH", 4)
    np.testing.assert_allclose(member.predict_batch(batch, "flip_rot8"), whole, rtol=1e-5, atol=1e-6)
    assert max(sizes) == 4 and sum(sizes) == 10 * len(TTA_SETS["flip_rot8"].views)


def test_crops_of_any_pixel_type_are_scaled_by_their_own_range():
    gray = np.random.default_rng(0).integers(0, 256, size=(60, 50), dtype=np.uint8)
    expected = classifier.prepare_batch([gray], 48)
    as_float = gray / 255.0  # scikit-image's convention
    as_uint16 = gray.astype(np.uint16) * 257
    as_float_255 = gray.astype(np.float32)
    rgb_float = np.repeat(as_float[:, :, None], 3, axis=2).astype(np.float32)
    for crop in (as_float, as_uint16, as_float_255, rgb_float):
        np.testing.assert_array_equal(classifier.prepare_batch([crop], 48), expected)


def test_a_nan_pixel_does_not_turn_a_float_crop_black():
    """min/max of a crop with one NaN were NaN, so a [0, 1] crop was clipped as 0..255: almost all black."""
    gray = np.random.default_rng(0).integers(0, 256, size=(60, 50), dtype=np.uint8)
    with_nan = gray / 255.0
    with_nan[5, 5] = np.nan
    difference = classifier.prepare_batch([with_nan], 48).astype(int) - classifier.prepare_batch([gray], 48)
    assert np.abs(difference).mean() < 0.5


def test_transparent_crops_lie_over_white_as_transparent_files_do():
    """RGBA arrays lost their alpha (the hidden colour showed) while the same PNG was laid over white."""
    from PIL import Image

    from fer_core.detection import _as_rgb
    from fer_core.imageio import to_rgb

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(40, 30, 4), dtype=np.uint8)
    rgba[:20, :, 3] = 0  # the top half fully transparent
    as_file = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))
    assert np.abs(_as_rgb(rgba).astype(int) - as_file).max() <= 1
    as_file_gray = classifier.to_gray(as_file)
    assert np.abs(classifier.to_gray(rgba).astype(int) - as_file_gray).max() <= 1
    assert (classifier.to_gray(rgba)[:20] == 255).all()
    gray_alpha = np.dstack([rgba[:, :, 0], rgba[:, :, 3]])  # gray + alpha: raised an OpenCV assertion
    gray_as_rgba = np.dstack([rgba[:, :, 0]] * 3 + [rgba[:, :, 3]])
    np.testing.assert_array_equal(classifier.to_gray(gray_alpha), classifier.to_gray(gray_as_rgba))


@pytest.mark.parametrize(("crop", "message"), [((0, 40, 3), "empty face crop"), ((8, 8, 5), "shape \\(8, 8, 5\\)")])
def test_crops_that_are_no_picture_are_named(crop, message):
    with pytest.raises(ValueError, match=message):
        classifier.prepare_batch([np.zeros(crop, np.uint8)], 48)


def test_the_torch_runtime_takes_mirrored_and_read_only_batches(fake_weights):
    member = Ensemble.load(fake_weights, runtime="torch").members[0]
    batch = np.random.default_rng(2).integers(0, 256, size=(3, 1, 48, 48), dtype=np.uint8)
    expected = member.predict_batch(np.ascontiguousarray(batch[..., ::-1]))
    np.testing.assert_allclose(member.predict_batch(batch[..., ::-1]), expected, rtol=1e-6)  # raised before
    batch.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch warned on every read-only batch
        member.predict_batch(batch)


def test_mixing_weights_must_name_the_members(fake_weights):
    """A misspelt name in with_weights was ignored: the mix the user asked for silently did not happen."""
    ensemble = Ensemble.load(fake_weights, runtime="torch")
    with pytest.raises(ValueError, match=r"name \['A_crp', 'B_mixcut', 'a_crp'\]; the members are"):
        ensemble.with_weights({"a_crp": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        ensemble.with_weights({"A_crp": -0.5})


def test_loading_checks_the_bytes_each_network_was_built_from(tmp_path, fake_weights, monkeypatch):
    """read_spec hashed the files, then the members were read again: a file replaced in between was run."""
    folder = copy_with_hashes(fake_weights, tmp_path)
    original = cast(MethodType, classifier.EmotionClassifier.load).__func__  # a classmethod, bound to the class

    def replaced_first(cls, path, *args, **kwargs):
        if path.name == "A_crp.pt":
            shutil.copyfile(folder / "B_mixcut.pt", path)  # a new stage lands after read_spec checked the file
        return original(cls, path, *args, **kwargs)

    monkeypatch.setattr(classifier.EmotionClassifier, "load", classmethod(replaced_first))
    with pytest.raises(CheckpointError, match=r"A_crp\.pt: sha256 .* is not the"):
        Ensemble.load(folder, runtime="torch")


def test_loading_reads_each_member_file_once(tmp_path, fake_weights, monkeypatch):
    """read_spec hashed each member file and load_classifier read it again: two extra 16 MB reads per app start."""
    folder = copy_with_hashes(fake_weights, tmp_path)
    opened: list[str] = []
    real_read_bytes = type(folder).read_bytes

    def counting_read_bytes(path):
        opened.append(path.name)
        return real_read_bytes(path)

    def counting_file_sha256(path):
        opened.append(Path(path).name)
        return file_sha256(path)

    monkeypatch.setattr(type(folder), "read_bytes", counting_read_bytes)
    monkeypatch.setattr(ensemble_module, "file_sha256", counting_file_sha256)
    assert Ensemble.load(folder, runtime="torch").names == ["A_crp", "B_mixcut"]
    assert sorted(name for name in opened if name.endswith(".pt")) == ["A_crp.pt", "B_mixcut.pt"]


def test_a_member_named_ensemble_is_refused(tmp_path, fake_weights):
    """Its probabilities are keyed by its name, so a member trained with --name ensemble would replace the mix: the
    app, predict and evaluate would report one network as the ensemble without a word."""
    folder = shutil.copytree(fake_weights, tmp_path / "weights")
    make_classifier_checkpoint(folder / "B_mixcut.pt", ENSEMBLE_KEY, seed=3)
    with pytest.raises(CheckpointError, match=r"members are named \['A_crp', 'ensemble'\].*not 'ensemble'"):
        Ensemble.load(folder, runtime="torch")


def test_a_weight_of_zero_is_a_valid_fit_and_zero_weights_are_not(tmp_path, fake_weights):
    """fit_weight may pick an end of its grid (one model clearly better), so fit_ensemble can ship 1.0 / 0.0: that file
    must load, as the first member alone. Weights of 0 / 0 mix nothing: refused naming the file, at load, not a bare
    ValueError at the first face."""
    folder = shutil.copytree(fake_weights, tmp_path / "weights")
    spec = json.loads((folder / "ensemble.json").read_text())
    spec["models"][0]["weight"], spec["models"][1]["weight"] = 1.0, 0.0
    write_spec(folder / "ensemble.json", spec)
    read_spec(folder)
    batch = np.random.default_rng(2).integers(0, 256, size=(3, 1, 48, 48), dtype=np.uint8)
    probs = Ensemble.load(folder, runtime="torch").predict_batch(batch)
    np.testing.assert_allclose(probs[ENSEMBLE_KEY], probs["A_crp"], rtol=1e-6)
    spec["models"][0]["weight"] = 0.0
    write_spec(folder / "ensemble.json", spec)
    with pytest.raises(CheckpointError, match=r"ensemble\.json.*positive sum"):
        read_spec(folder)


def test_a_weight_that_is_not_a_number_is_refused_when_mixed_in_code(fake_weights):
    """read_spec refuses NaN in a file; an Ensemble built in code must fail at construction too, not return NaN
    probabilities for every face."""
    with pytest.raises(ValueError, match="non-negative"):
        Ensemble.load(fake_weights, runtime="torch").with_weights({"A_crp": float("nan")})


def test_fit_weight_takes_the_even_mix_when_every_mix_scores_the_same():
    """The documented last tie-break: members that agree exactly give every weight the same accuracy and NLL."""
    probs = np.array([[0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.015625]] * 4)  # dyadic: every mix exact
    weight, curve = fit_weight(probs, probs, np.array([0, 0, 1, 0]), grid=[0.0, 0.25, 0.5, 0.75, 1.0])
    assert len({(row["accuracy"], row["nll"]) for row in curve}) == 1 and weight == 0.5


def test_every_tta_set_holds_the_views_it_describes():
    """The tests averaged whatever views a set held, never what it held: a set whose mirrors lost their shift, or one
    rotated +8 degrees twice, would have been shipped under its description."""
    for name, entry in TTA_SETS.items():
        views = entry.views
        assert len(set(views)) == len(views), name  # no view twice
        if name != "none":  # each view with its mirror image
            assert {View(not v.mirror, v.angle_deg, v.scale, v.shift_px) for v in views} == set(views), name
    assert {v.angle_deg for v in TTA_SETS["flip_rot8"].views} == {-8.0, 0.0, 8.0}
    assert {v.scale for v in TTA_SETS["flip_zoom"].views} == {0.93, 1.0, 1.08}
    shifts = {v.shift_px for v in TTA_SETS["flip_shift3"].views}
    assert shifts == {(0.0, 0.0), (-3.0, 0.0), (3.0, 0.0), (0.0, -3.0), (0.0, 3.0)}
    assert View(True, 0.0, 1.0, (3.0, 0.0)) in TTA_SETS["flip_shift3"].views


def test_rotated_and_zoomed_views_interpolate_as_training_did():
    """Training's random affine views are bilinear; nearest-neighbour test-time views would be aliased, out of the
    distribution the models learned (integer shifts cannot tell the two apart)."""
    checkerboard = ((np.indices((48, 48)).sum(axis=0) // 2) % 2 * 255).astype(np.uint8)[None, None]
    for view in (View(angle_deg=8.0), View(scale=1.08)):
        inner = view.apply(checkerboard)[0, 0, 8:40, 8:40]
        assert ((inner > 20) & (inner < 235)).mean() > 0.2, view  # blended pixels, not only black and white


def test_a_move_that_fails_after_setting_the_earlier_file_aside_puts_that_file_back(tmp_path, monkeypatch):
    """A refit whose last move fails (a full disk, a Ctrl-C between the two renames) leaves the weights folder as it
    was: the earlier ensemble.json, set aside a moment before, comes back too, not only the checkpoints."""
    out, staging = tmp_path / "weights", tmp_path / "weights" / ".staging"
    staging.mkdir(parents=True)
    names = ["A.pt", "ensemble.json"]
    for name in names:
        (out / name).write_text(f"old {name}")
        (staging / name).write_text(f"new {name}")
    replace = os.replace

    def fails_for_the_new_spec(source: Path, target: Path) -> None:
        if Path(source) == staging / "ensemble.json":
            raise OSError(28, "No space left on device")
        replace(source, target)

    monkeypatch.setattr(fit_ensemble.os, "replace", fails_for_the_new_spec)
    with pytest.raises(cli.UserInputError, match="is left as it was"):
        fit_ensemble.move_in_together(staging, out, names)
    assert {name: (out / name).read_text() for name in names} == {name: f"old {name}" for name in names}
