"""Evaluation and prediction CLIs on generated data with generated weights."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import types
import warnings
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

from fer_core import cli, model_card
from fer_core.classifier import EmotionClassifier
from fer_core.ensemble import Ensemble
from fer_core.evaluate import main as evaluate_main
from fer_core.export import file_sha256
from fer_core.fit_ensemble import main as fit_ensemble_main
from fer_core.labels import EMOTIONS
from fer_core.metrics import classification_report, summary_metrics
from fer_core.predict import iter_inputs
from fer_core.predict import main as predict_main
from tests.fer_fixtures import synthetic_faces, write_fer_csv, write_fer_folder


def test_evaluate_matches_scikit_learn(tmp_path, fake_weights):
    """Every model's figures against scikit-learn run here on labels and predictions made independently of
    `evaluate` (the fixture's own labels, the ensemble called directly): a transposed confusion matrix or swapped
    precision and recall would put wrong "recall" and "taken for" lines in the model card."""
    csv = write_fer_csv(tmp_path / "fer.csv", n_train=7, n_public=7, n_private=35)
    out = tmp_path / "report"
    evaluate_main(["--data", str(csv), "--split", "PrivateTest", "--out", str(out), "--weights", str(fake_weights)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "PrivateTest" and metrics["n"] == 35
    assert set(metrics["models"]) == {"ensemble", "A_crp", "B_mixcut"}
    images, y_true = synthetic_faces(49)
    images, y_true = images[14:], y_true[14:]  # the CSV's PrivateTest rows
    expected = Ensemble.load(fake_weights).predict_batch(np.ascontiguousarray(images[:, None]))
    classes = list(range(len(EMOTIONS)))
    for name, report in metrics["models"].items():
        y_pred = expected[name].argmax(1)
        assert report["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred)), name
        assert report["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0)), name
        assert report["confusion"] == confusion_matrix(y_true, y_pred, labels=classes).tolist(), name
        precision = precision_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
        recall = recall_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
        for i, emotion in enumerate(EMOTIONS):
            row = report["per_class"][emotion]
            assert (row["precision"], row["recall"]) == pytest.approx((precision[i], recall[i])), (name, emotion)
            assert row["support"] == int((y_true == i).sum())
    predictions = pd.read_csv(out / "predictions.csv")
    assert predictions["label"].tolist() == [EMOTIONS[i] for i in y_true]
    assert predictions["predicted"].tolist() == [EMOTIONS[i] for i in expected["ensemble"].argmax(1)]
    assert (out / "confusion_ensemble.png").stat().st_size > 1000
    hashes = {name: file_sha256(fake_weights / f"{name}.pt") for name in ("A_crp", "B_mixcut")}
    mix = {"A_crp": 0.5, "B_mixcut": 0.5}
    assert metrics["weights"] == {"tta": "none", "members": hashes, "mix": mix}  # what the model card checks
    assert metrics["skipped"] == 0


def test_a_publictest_carved_from_training_is_said_in_the_output(tmp_path, fake_weights, capsys):
    """Without PublicTest images the loader carves a seeded share of Training; evaluate reported "PublicTest"
    accuracy on training images and fit_ensemble fitted on them, saying so only in a log line no CLI shows."""
    root = write_fer_folder(tmp_path / "fer", per_class=2, prefixes=False)
    shutil.rmtree(root / "test")
    out = tmp_path / "report"
    evaluate_main(["--data", str(root), "--split", "PublicTest", "--out", str(out), "--weights", str(fake_weights)])
    warning = f"{root} has no PublicTest images: PublicTest here is a seeded 10% of its Training images"
    assert warning in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["warning"].startswith(warning)
    fit_ensemble_main(
        ["--data", str(root), "--models", *map(str, sorted(fake_weights.glob("*.pt"))), "--out", str(tmp_path / "w")]
    )
    assert warning in capsys.readouterr().err
    assert json.loads((tmp_path / "w" / "ensemble.json").read_text())["warning"].startswith(warning)
    write_fer_folder(tmp_path / "real", per_class=2)
    evaluate_main(
        ["--data", str(tmp_path / "real"), "--split", "PublicTest", "--out", str(out), "--weights", str(fake_weights)]
    )
    assert "warning" not in capsys.readouterr().err and "warning" not in json.loads((out / "metrics.json").read_text())


def test_evaluate_writes_each_confusion_plot_whole_or_not_at_all(tmp_path, fake_weights, monkeypatch, capsys):
    """The plots were saved in place: a full disk left a cut PNG and a traceback."""
    csv = write_fer_csv(tmp_path / "fer.csv", n_train=7, n_public=7, n_private=14)
    out = tmp_path / "report"
    argv = ["--data", str(csv), "--split", "PrivateTest", "--out", str(out), "--weights", str(fake_weights)]
    evaluate_main(argv)
    earlier = (out / "confusion_ensemble.png").read_bytes()

    def disk_full(figure: object, path: Path, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(earlier[:100])  # a part is on disk before the error
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", disk_full)
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: evaluate_main(argv))
    assert exit_.value.code == 2
    target = out / "confusion_ensemble.png"
    assert f"error: {target}: could not write the results (No space left on device)" in capsys.readouterr().err
    assert target.read_bytes() == earlier
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no partial file left behind


def test_evaluate_checks_its_output_names_and_folder_before_predicting(
    tmp_path: Path, fake_weights: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """metrics.json as a folder was an IsADirectoryError traceback after all the predictions, predictions.csv one
    an error after them with the plots already written; an output folder mkdir cannot make (under /proc or /sys,
    where os.access lets root past) was a traceback, or a bare "[Errno 2]" that did not say it was --out."""
    from fer_core import evaluate

    monkeypatch.setattr(evaluate, "predict_split", lambda *args: pytest.fail("predicted before checking --out"))
    csv = write_fer_csv(tmp_path / "fer.csv", n_train=7, n_public=7, n_private=7)
    base = ["--data", str(csv), "--weights", str(fake_weights), "--tta", "off"]
    for name in ("metrics.json", "predictions.csv", "confusion_B_mixcut.png"):
        out = tmp_path / f"out_{name}"
        (out / name).mkdir(parents=True)
        with pytest.raises(SystemExit) as done:
            cli.run(partial(evaluate_main, [*base, "--out", str(out)]))
        err = capsys.readouterr().err
        assert done.value.code == 2 and err == f"error: --out {out}: {name} is a folder; the results need those names\n"
        assert [path.name for path in out.iterdir()] == [name]  # nothing written
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here for a folder mkdir cannot make")
    monkeypatch.setattr(cli.os, "access", lambda path, mode: True)  # as for root, whom it lets write anywhere
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: evaluate_main([*base, "--out", "/proc/fer_core_out"]))
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith("error: --out /proc/fer_core_out: cannot create the output folder")
    assert err.count("\n") == 1


def test_macro_f1_leaves_out_a_class_absent_from_labels_and_predictions():
    """A small set without `disgust` (label 1) anywhere: that class has no F1, so it must not pull the mean to 6/7."""
    y_true = np.array([0, 0, 2, 3, 3, 4, 5, 6])
    y_pred = np.array([0, 2, 2, 3, 3, 4, 5, 6])
    report = classification_report(y_true, np.eye(7)[y_pred])
    assert report["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))  # 0.889, not 0.762
    assert set(report["per_class"]) == set(EMOTIONS) and report["per_class"]["disgust"]["support"] == 0
    half_wrong = np.array([0, 1, 2, 3, 3, 4, 5, 6])  # disgust predicted once, never true: it counts, as F1 0
    assert summary_metrics(y_true, half_wrong)["macro_f1"] == pytest.approx(
        f1_score(y_true, half_wrong, average="macro")
    )


def test_an_interrupted_evaluation_leaves_no_metrics_beside_other_results(tmp_path, fake_weights, monkeypatch):
    """metrics.json was written first: Ctrl-C during the confusion plots left a new one beside the earlier run's
    predictions.csv (here of another split); and an earlier one must not stay beside this run's files."""
    csv = write_fer_csv(tmp_path / "fer.csv", n_train=7, n_public=7, n_private=14)
    out = tmp_path / "report"
    base = ["--data", str(csv), "--out", str(out), "--weights", str(fake_weights)]
    evaluate_main([*base, "--split", "PublicTest"])
    assert json.loads((out / "metrics.json").read_text())["split"] == "PublicTest"
    real_write = cli.write_text_atomically

    def interrupted_before_metrics(path, text):
        if path.name == "metrics.json":
            raise KeyboardInterrupt
        real_write(path, text)

    monkeypatch.setattr(cli, "write_text_atomically", interrupted_before_metrics)
    with pytest.raises(KeyboardInterrupt):
        evaluate_main([*base, "--split", "PrivateTest"])
    assert not (out / "metrics.json").exists()  # no PublicTest figures beside PrivateTest predictions
    assert sorted(path.name for path in out.iterdir() if path.name.startswith(".")) == []


def test_evaluate_tta_off_overrides_ensemble_json(tmp_path, fake_weights, monkeypatch):
    csv = write_fer_csv(tmp_path / "fer.csv", n_train=7, n_public=7, n_private=21)
    flipped = tmp_path / "weights_tta"
    shutil.copytree(fake_weights, flipped)
    spec = json.loads((flipped / "ensemble.json").read_text())
    (flipped / "ensemble.json").write_text(json.dumps({**spec, "tta": "flip_rot8"}))
    flags: list[str] = []
    original = EmotionClassifier.predict_batch

    def recording(self, batch, tta="none"):
        flags.append(tta)
        return original(self, batch, tta)

    monkeypatch.setattr(EmotionClassifier, "predict_batch", recording)
    for extra, expected in (([], "flip_rot8"), (["--tta", "off"], "none")):
        flags.clear()
        evaluate_main(["--data", str(csv), "--out", str(tmp_path / "r"), "--weights", str(flipped), *extra])
        assert flags and set(flags) == {expected}


def write_crop_folder(root):
    face = data.astronaut()[60:170, 170:280]
    (root / "nested").mkdir(parents=True)
    Image.fromarray(face).save(root / "colour.jpg")
    Image.fromarray(face[:, :, 0]).save(root / "nested" / "gray.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (root / "notes.png").write_text("not an image")
    return root


def latin1_named(path: Path) -> Path:
    """`path` renamed with the Latin-1 byte of "café" in its name, as old archives hold on UTF-8 systems (Python
    reads it as a lone surrogate); skipped where the file system refuses names that are not UTF-8."""
    target = path.with_name(path.stem + os.fsdecode(b"_caf\xe9") + path.suffix)
    try:
        path.rename(target)
    except OSError:
        pytest.skip("this file system keeps only UTF-8 names")
    return target


def test_file_names_that_are_not_utf8_are_written_as_escapes_not_a_traceback(tmp_path, fake_weights):
    """evaluate wrote predictions.csv with pyarrow, which refused the name after the whole split was predicted (and
    an earlier metrics.json was already gone); predict's CSV did the same."""
    root = write_fer_folder(tmp_path / "fer", per_class=1)
    private = next((root / "test").rglob("PrivateTest_*.png"))
    latin1_named(private)
    out = tmp_path / "report"
    evaluate_main(["--data", str(root), "--split", "PrivateTest", "--out", str(out), "--weights", str(fake_weights)])
    assert pd.read_csv(out / "predictions.csv")["source"].str.contains("_caf\\xe9.png", regex=False).sum() == 1

    crop = tmp_path / "crops" / "face.png"
    crop.parent.mkdir()
    Image.fromarray(data.astronaut()[60:170, 170:280]).save(crop)
    (tmp_path / "crops" / "broken.jpg").write_bytes(b"not an image")
    latin1_named(crop), latin1_named(tmp_path / "crops" / "broken.jpg")
    json_out = tmp_path / "out.json"
    assert predict_main([str(crop.parent), "--crops", "--json", str(json_out), "--weights", str(fake_weights)]) == 1
    images = sorted(Path(r["image"]).name for r in json.loads(json_out.read_text(encoding="utf-8")))
    assert images == ["broken_caf\\xe9.jpg", "face_caf\\xe9.png"]
    rows = latin1_named(write_fer_csv(tmp_path / "rows.csv", n_train=2, n_public=0, n_private=0))
    assert predict_main([str(rows), "--csv-out", str(tmp_path / "p.csv"), "--weights", str(fake_weights)]) == 0
    assert set(pd.read_csv(tmp_path / "p.csv")["source"]) == {str(rows.parent / "rows_caf\\xe9.csv")}


def test_predict_crops_reports_bad_files_and_keeps_the_rest(tmp_path, fake_weights, capsys):
    root = write_crop_folder(tmp_path / "crops")
    out = tmp_path / "out.json"
    assert predict_main([str(root), "--crops", "--json", str(out), "--weights", str(fake_weights)]) == 1  # 2 bad
    records = {r["image"].split("/")[-1]: r for r in json.loads(out.read_text())}
    assert set(records) == {"colour.jpg", "gray.png", "broken.jpg", "notes.png"}
    assert "corrupt" in records["broken.jpg"]["error"] and records["broken.jpg"]["faces"] == []
    assert "not an image" in records["notes.png"]["error"]
    face = records["gray.png"]["faces"][0]
    assert face["label"] in EMOTIONS and len(face["box"]) == 4
    assert set(face["probs"]) == {"ensemble", "A_crp", "B_mixcut"}
    ensemble = face["probs"]["ensemble"]
    assert sum(ensemble.values()) == pytest.approx(1.0, abs=1e-3)
    assert face["label"] == max(ensemble, key=ensemble.get)  # the label is the ensemble's, not one member's
    assert face["confidence"] == pytest.approx(max(ensemble.values()), abs=1e-4)
    assert "broken.jpg" in capsys.readouterr().err


def test_predict_crops_refuses_pictures_that_cannot_be_face_crops(tmp_path, fake_weights, capsys):
    """A 1x1 and a 5000x1 picture were squeezed to 48x48 and labelled like faces ("angry 0.41"), exit 0."""
    root = tmp_path / "crops"
    root.mkdir()
    face = data.astronaut()[60:170, 170:280]
    Image.fromarray(face).save(root / "face.png")
    Image.fromarray(face[:8, :32]).save(root / "loose.png")  # 32x8: 4:1 and 8 px, the limits, still taken
    Image.fromarray(face[:1, :1]).save(root / "dot.png")
    Image.fromarray(np.tile(face[:1, :50], (1, 100, 1))).save(root / "strip.png")  # 5000x1
    Image.fromarray(face[:10, :41]).save(root / "band.png")  # 41x10: over 4:1
    out = tmp_path / "out.json"
    assert predict_main([str(root), "--crops", "--json", str(out), "--weights", str(fake_weights)]) == 1
    records = {r["image"].split("/")[-1]: r for r in json.loads(out.read_text())}
    assert records["dot.png"]["error"] == "1x1 px is too small for a face crop (at least 8 px a side)"
    assert records["strip.png"]["error"] == "5000x1 px is too small for a face crop (at least 8 px a side)"
    assert records["band.png"]["error"] == "41x10 px is too elongated for a face crop (at most 4:1)"
    assert all(records[name]["faces"] == [] for name in ("dot.png", "strip.png", "band.png"))
    assert len(records["face.png"]["faces"]) == len(records["loose.png"]["faces"]) == 1
    assert "error: " in capsys.readouterr().err


def test_predict_names_the_csv_input_that_needs_csv_out(tmp_path, fake_weights, capsys):
    """A zip of photos given with --json got "CSV inputs need --csv-out", naming neither the file nor why it was
    taken for a CSV (a .zip is read as one zipped FER-2013 CSV)."""
    photos = tmp_path / "photos.zip"
    with zipfile.ZipFile(photos, "w") as archive:
        archive.writestr("a.jpg", b"not read")
    with pytest.raises(SystemExit) as stopped:
        predict_main([str(photos), "--json", str(tmp_path / "out.json"), "--weights", str(fake_weights)])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert f"{photos}: CSV inputs (.csv, or one CSV in a .gz/.xz/.zip) need --csv-out" in err


def test_predict_csv_marks_malformed_rows(tmp_path, fake_weights):
    csv = write_fer_csv(tmp_path / "fer.csv", n_train=5, n_public=0, n_private=0)
    lines = csv.read_text().splitlines()
    lines.insert(2, "4,1 2 3,Training")
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "pred.csv"
    assert predict_main([str(csv), "--csv-out", str(out), "--weights", str(fake_weights)]) == 1  # one bad row
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 6
    bad = table[table["line"] == 3].iloc[0]
    assert "expected 2304 pixel values" in bad["error"] and bad["predicted"] == ""
    good = table[table["error"] == ""]
    probs = good[list(EMOTIONS)].astype(float)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    assert len(good) == 5 and good["predicted"].tolist() == probs.idxmax(axis=1).tolist()


def test_predict_csv_reports_every_record_and_every_unreadable_file(tmp_path, fake_weights, capsys):
    csv = write_fer_csv(tmp_path / "fer.csv", n_train=4, n_public=0, n_private=0)
    lines = csv.read_text().splitlines()
    lines[2:2] = ["", "4,1 2 3,Training,extra"]  # a blank line, then a record with a field too many
    csv.write_text("\n".join(lines) + "\n")
    no_pixels = tmp_path / "labels.csv"
    no_pixels.write_text("emotion\n3\n")
    out = tmp_path / "pred.csv"
    args = [str(no_pixels), str(csv), "--csv-out", str(out), "--weights", str(fake_weights)]
    assert predict_main(args) == 1
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns[:3]) == ["source", "line", "true_label"]
    unreadable = table[table["source"] == str(no_pixels)]
    assert len(unreadable) == 1 and "missing column(s) ['pixels']" in unreadable.iloc[0]["error"]
    rows = table[table["source"] == str(csv)]
    assert list(rows["line"].astype(int)) == [2, 4, 5, 6, 7]  # file lines: the blank line 3 holds no record
    assert "a row has 4 fields, expected 3" in rows.iloc[1]["error"]
    assert (rows["error"] == "").sum() == 4
    assert "labels.csv" in capsys.readouterr().err


def test_predict_csv_keeps_the_rows_before_a_damaged_part_and_names_empty_or_missing_files(tmp_path, fake_weights):
    whole = write_fer_csv(tmp_path / "fer.csv.gz", n_train=30, n_public=0, n_private=0).read_bytes()
    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes(whole[: len(whole) * 2 // 3])
    header_only = tmp_path / "header.csv"
    header_only.write_text("emotion,pixels,Usage\n")
    missing = tmp_path / "missing.csv"
    out = tmp_path / "pred.csv"
    paths = [str(truncated), str(header_only), str(missing)]
    assert predict_main([*paths, "--csv-out", str(out), "--weights", str(fake_weights)]) == 1
    table = pd.read_csv(out, keep_default_na=False)
    rows = table[table["source"] == str(truncated)]
    assert len(rows) > 5 and rows.iloc[:-1]["predicted"].isin(EMOTIONS).all()  # predictions made before the damage
    assert "cannot read past line" in rows.iloc[-1]["error"]
    (empty,) = table[table["source"] == str(header_only)]["error"]
    assert "no records after the header" in empty
    (absent,) = table[table["source"] == str(missing)]["error"]
    assert "missing.csv" in absent and "cannot read" in absent


def test_predict_refuses_haar_boxes_when_yolo_is_asked_for_by_name(tmp_path, fake_weights, capsys):
    """With unusable YOLO weights, --detector yolo ran the Haar cascade and exited 0: a wrong answer for a user who
    named the detector (detect_faces --backend yolo already refused)."""
    weights = tmp_path / "weights"
    shutil.copytree(fake_weights, weights)
    (weights / "face_yolo.pt").write_bytes(b"garbage")
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(photo)
    out = tmp_path / "out.json"
    argv = [str(photo), "--json", str(out), "--weights", str(weights)]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "YOLO face weights unusable")  # it said "falling back to Haar", then refused
        with pytest.raises(SystemExit) as stopped:
            predict_main([*argv, "--detector", "yolo"])
    assert stopped.value.code == 2 and "--detector yolo: its weights are unusable" in capsys.readouterr().err
    assert not out.exists()
    with pytest.warns(RuntimeWarning, match="falling back to the OpenCV Haar cascade"):
        assert predict_main(argv) == 0  # auto: the fallback, said in a warning


def test_predict_records_a_folder_it_cannot_list_and_exits_1(tmp_path, fake_weights, deny_listing, capsys):
    """Only a warning said a folder's images were left out, and the exit status was 0."""
    root = tmp_path / "crops"
    (root / "locked").mkdir(parents=True)
    face = data.astronaut()[60:170, 170:280]
    Image.fromarray(face).save(root / "ok.png")
    Image.fromarray(face).save(root / "locked" / "hidden_from_us.png")
    deny_listing(root / "locked")
    out = tmp_path / "out.json"
    assert predict_main([str(root), "--crops", "--json", str(out), "--weights", str(fake_weights)]) == 1
    records = {Path(r["image"]).name: r for r in json.loads(out.read_text())}
    assert set(records) == {"ok.png", "locked"} and records["ok.png"]["faces"]
    assert records["locked"]["error"].endswith("cannot read this folder (Permission denied); its images are missing")
    assert "locked: cannot read this folder" in capsys.readouterr().err


def test_predict_tta_off_classifies_one_view(tmp_path, fake_weights):
    weights = shutil.copytree(fake_weights, tmp_path / "weights")
    spec = json.loads((weights / "ensemble.json").read_text())
    (weights / "ensemble.json").write_text(json.dumps({**spec, "tta": "flip"}))
    crop = tmp_path / "face.png"
    Image.fromarray(data.astronaut()[60:170, 170:280]).save(crop)
    outputs = {}
    for tta in ("shipped", "off"):
        out = tmp_path / f"{tta}.json"
        predict_main([str(crop), "--crops", "--json", str(out), "--weights", str(weights), "--tta", tta])
        outputs[tta] = json.loads(out.read_text())[0]["faces"][0]["probs"]["ensemble"]
    single = Ensemble.load(weights).with_tta(False).predict([np.asarray(Image.open(crop))])["ensemble"][0]
    assert [outputs["off"][e] for e in EMOTIONS] == pytest.approx(single.tolist(), abs=1e-4)
    assert outputs["off"] != outputs["shipped"]


def test_predict_refuses_bad_options_before_any_work(tmp_path, capsys):
    photo = tmp_path / "face.png"
    Image.fromarray(data.astronaut()).save(photo)
    for extra, message in (
        (["--json", str(tmp_path / "o.json"), "--conf", "2"], "--conf must be between 0 and 1"),
        (["--json", str(tmp_path)], "is a folder; give a file name"),
        (["--json", str(photo / "o.json")], f"{photo} is a file, not a folder"),  # failed after all the work
    ):
        with pytest.raises(SystemExit) as exit_:
            predict_main([str(photo), *extra, "--weights", str(tmp_path / "no_weights")])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_predict_refuses_to_write_over_an_input(tmp_path, capsys):
    """`--json me.jpg you.jpg` (a shell slip) replaced the photo me.jpg with JSON, and `--csv-out` the CSV it read."""
    me, you = tmp_path / "me.jpg", tmp_path / "you.jpg"
    for photo in (me, you):
        Image.fromarray(data.astronaut()).save(photo)
    csv = write_fer_csv(tmp_path / "fer.csv", n_train=3, n_public=0, n_private=0)
    before = {path: path.read_bytes() for path in (me, you, csv)}
    for argv, message in (
        (["--json", str(me), str(you)], f"--json {me} is an existing image or data file"),
        ([str(tmp_path), "--json", str(tmp_path / "sub" / ".." / "you.jpg")], "is one of the inputs"),  # walked
        ([str(csv), "--csv-out", str(csv)], f"--csv-out {csv} is one of the inputs"),
        ([str(me), "--json", str(tmp_path / "o.json"), "--csv-out", str(csv)], "existing image or data file"),
        ([str(me), str(csv), "--json", str(tmp_path / "o"), "--csv-out", str(tmp_path / "o")], "name the same file"),
    ):
        with pytest.raises(SystemExit) as exit_:
            predict_main([*argv, "--weights", str(tmp_path / "no_weights")])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert all(path.read_bytes() == content for path, content in before.items())


@pytest.mark.parametrize("name", ["pred.csv", "pred.csv.gz"])
def test_predict_replaces_its_own_earlier_csv(tmp_path, fake_weights, name):
    """A gzipped output stays gzipped (the partial file's name decides pandas' compression) and is replaced too."""
    csv, out = write_fer_csv(tmp_path / "fer.csv", n_train=3, n_public=0, n_private=0), tmp_path / name
    for _ in range(2):  # the second run finds its first run's predictions there, and replaces them
        assert predict_main([str(csv), "--csv-out", str(out), "--weights", str(fake_weights)]) == 0
    assert len(pd.read_csv(out)) == 3 and (out.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")


def test_a_failed_write_keeps_the_earlier_results_and_is_one_error_line(tmp_path, fake_weights, monkeypatch, capsys):
    """A full disk mid-write left half a JSON (or a CSV cut mid-number) in place of the earlier results, and a
    traceback with the exit status that means "some inputs were bad"."""
    photo, csv = tmp_path / "face.png", write_fer_csv(tmp_path / "fer.csv", n_train=3, n_public=0, n_private=0)
    Image.fromarray(data.astronaut()).save(photo)
    out_json, out_csv = tmp_path / "out.json", tmp_path / "out.csv"
    argv = [str(photo), str(csv), "--crops", "--json", str(out_json), "--csv-out", str(out_csv)]
    assert predict_main([*argv, "--weights", str(fake_weights)]) == 0
    earlier = out_json.read_bytes(), out_csv.read_bytes()

    def disk_full(partial: Path) -> None:
        with partial.open("w") as handle:
            handle.write('[{"image": "fa')  # a part is on disk before the error
        raise OSError(28, "No space left on device")

    breaks = (
        (out_json, Path, "write_text", lambda self, *a, **k: disk_full(self)),
        (out_csv, pd.DataFrame, "to_csv", lambda self, partial, *a, **k: disk_full(Path(partial))),
    )
    for target, owner, method, broken in breaks:
        with monkeypatch.context() as patch:
            patch.setattr(owner, method, broken)
            with pytest.raises(SystemExit) as exit_:
                cli.run(lambda: predict_main([*argv, "--weights", str(fake_weights)]))
        assert exit_.value.code == 2
        assert f"error: {target}: could not write the results (No space left on device)" in capsys.readouterr().err
        assert (out_json.read_bytes(), out_csv.read_bytes()) == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.png", "fer.csv", "out.csv", "out.json"]


def test_predict_names_the_files_a_folder_walk_passes_over(tmp_path, fake_weights, capsys):
    root = tmp_path / "photos"
    root.mkdir()
    face = data.astronaut()[60:170, 170:280]
    for name in ("a.jpg", "b.jfif", "c.jpe"):
        Image.fromarray(face).save(root / name, format="JPEG")
    (root / "notes.txt").write_text("who is who")
    (root / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    out = tmp_path / "out.json"
    assert predict_main([str(root), "--crops", "--json", str(out), "--weights", str(fake_weights)]) == 1
    records = {Path(r["image"]).name: r for r in json.loads(out.read_text())}
    assert sorted(records) == ["a.jpg", "b.jfif", "c.jpe", "gone.jpg"]
    # a broken link named as an image is reported like any unreadable image, in the same record shape as the rest
    assert "error" in records["gone.jpg"] and records["gone.jpg"].keys() == {*records["a.jpg"], "error"}
    assert "skipped 1 file(s)" in (err := capsys.readouterr().err) and "notes.txt" in err


def test_predict_reports_a_huge_photo_in_its_own_pixels(tmp_path, fake_weights):
    """Photos over MAX_SIDE are analysed downscaled; the JSON still speaks of the file the user has."""
    canvas = np.full((1200, 4300, 3), 200, np.uint8)
    face = Image.fromarray(data.astronaut()[0:260, 120:340]).resize((700, 820))
    canvas[200:1020, 3500:4200] = np.asarray(face)  # near the far right edge, where the scales differ most
    photo = tmp_path / "panorama.png"
    Image.fromarray(canvas).save(photo)
    out = tmp_path / "out.json"
    assert predict_main([str(photo), "--json", str(out), "--weights", str(fake_weights), "--detector", "haar"]) == 0
    (record,) = json.loads(out.read_text())
    assert (record["width"], record["height"]) == (4300, 1200)
    (found,) = record["faces"]
    x1, _, x2, _ = found["box"]
    assert 3720 <= (x1 + x2) / 2 <= 3980  # the face's middle is x 3850; in the 4096 px copy it is x 3667


def test_evaluate_names_a_missing_split_and_a_file_as_out(tmp_path, fake_weights, capsys):
    training_only = write_fer_csv(tmp_path / "train.csv", n_train=20, n_public=0, n_private=0)
    base = ["--data", str(training_only), "--weights", str(fake_weights)]
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: evaluate_main([*base, "--split", "PrivateTest", "--out", str(tmp_path / "ev")]))
    assert exit_.value.code == 2
    assert "error: this source has no PrivateTest split; it has PublicTest, Training" in capsys.readouterr().err
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(SystemExit) as exit_:
        evaluate_main([*base, "--out", str(a_file)])
    assert exit_.value.code == 2 and "exists and is not a folder" in capsys.readouterr().err


def test_predict_walks_folders_below_hidden_ones_and_refuses_nothing_to_do(tmp_path, capsys):
    root = tmp_path / ".cache" / "photos"
    (root / ".thumbnails").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "face.png")
    Image.new("RGB", (8, 8)).save(root / ".thumbnails" / "face.png")
    Image.new("RGB", (8, 8)).save(root / ".hidden.png")
    assert list(iter_inputs([root])) == [root / "face.png"]  # hidden inside the folder walked, not above it
    albums = tmp_path / "albums"
    albums.mkdir()
    (albums / "photos").symlink_to(root, target_is_directory=True)  # a folder of links to folders: followed
    (albums / "photos_again").symlink_to(root, target_is_directory=True)  # the same folder twice: walked once
    (root / "loop").symlink_to(albums, target_is_directory=True)  # and a loop back up ends
    assert list(iter_inputs([albums])) == [albums / "photos" / "face.png"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_:
        predict_main([str(empty), "--json", str(tmp_path / "out.json")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "no image files in this folder" in err and "no images or CSV files found" in err


def test_predict_whole_photos_detects_faces(tmp_path, fake_weights):
    photo, empty = tmp_path / "astronaut.png", tmp_path / "wall.png"
    Image.fromarray(data.astronaut()).save(photo)
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(empty)
    out = tmp_path / "out.json"
    predict_main([str(photo), str(empty), "--json", str(out), "--weights", str(fake_weights), "--detector", "haar"])
    records = {r["image"].split("/")[-1]: r for r in json.loads(out.read_text())}
    assert len(records["astronaut.png"]["faces"]) == 1
    x1, y1, x2, y2 = records["astronaut.png"]["faces"][0]["box"]
    assert 150 < (x1 + x2) / 2 < 300 and 50 < (y1 + y2) / 2 < 180
    assert records["wall.png"]["faces"] == []


def test_predict_says_when_a_photo_reaches_max_faces(tmp_path, fake_weights, capsys):
    photo = tmp_path / "crowd.png"
    face = data.astronaut()[27:200, 137:310]
    Image.fromarray(np.hstack([face] * 3)).save(photo)
    out = tmp_path / "out.json"
    args = [str(photo), "--json", str(out), "--weights", str(fake_weights), "--detector", "haar"]
    predict_main(args)
    (record,) = json.loads(out.read_text())
    assert len(record["faces"]) == 3 and "--max-faces" not in capsys.readouterr().err
    assert record["face_limit_reached"] is False
    predict_main([*args, "--max-faces", "2"])
    (record,) = json.loads(out.read_text())
    assert len(record["faces"]) == 2 and record["face_limit_reached"] is True  # readers of the JSON see it too
    assert "crowd.png: labelled the 2 most confident faces (--max-faces)" in capsys.readouterr().err


def test_bad_input_is_one_line_on_stderr_not_a_traceback(tmp_path):
    missing = tmp_path / "no_such_fer2013"
    command = [sys.executable, "-m", "fer_core.evaluate", "--data", str(missing), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {missing}: no such file or folder"


def test_a_missing_file_is_one_line_on_stderr_too(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: model_card.main(["--weights", str(tmp_path / "no_weights")]))
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_weights/ensemble.json" in err and err.count("\n") == 1


def test_a_hand_edited_ensemble_json_is_one_line_in_every_tool(tmp_path, fake_weights, capsys):
    """evaluate, model_card and export all read ensemble.json through one check: an unknown TTA set or a weight that
    is not a number is an `error:` line naming the file, not a traceback."""
    from fer_core import export

    weights = shutil.copytree(fake_weights, tmp_path / "weights")
    spec = json.loads((weights / "ensemble.json").read_text())
    csv = write_fer_csv(tmp_path / "fer.csv", n_train=7, n_public=7, n_private=7)
    tools = (
        lambda: evaluate_main(["--data", str(csv), "--out", str(tmp_path / "ev"), "--weights", str(weights)]),
        lambda: model_card.main(["--weights", str(weights)]),
        lambda: export.main(["--weights", str(weights)]),
    )
    for damage in ({"tta": "flip_rot10"}, {"models": [spec["models"][0], {**spec["models"][1], "weight": "high"}]}):
        (weights / "ensemble.json").write_text(json.dumps({**spec, **damage}))
        for tool in tools:
            with pytest.raises(SystemExit) as done:
                cli.run(tool)
            err = capsys.readouterr().err
            assert done.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
            assert "ensemble.json" in err


def test_export_names_a_detector_it_cannot_load_and_a_file_as_out(tmp_path, fake_weights, capsys):
    from fer_core import export

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_text("not a checkpoint")
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: export.main(["--weights", str(fake_weights), "--detector", str(corrupt)]))
    err = capsys.readouterr().err
    assert done.value.code == 2 and f"{corrupt}: not a YOLO detector checkpoint" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as done:
        export.main(["--weights", str(fake_weights), "--out", str(corrupt)])
    assert done.value.code == 2 and "exists and is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("tool", "argv", "problem"),
    [
        ("fit_ensemble", ["--data", "d", "--models", "a.pt", "b.pt", "--out", "{file}"], "exists and is not a folder"),
        ("detect_faces", ["{dir}", "--out", "{file}"], "exists and is not a folder"),
        ("train_detector", ["--data-root", "d", "--work", "{file}"], "exists and is not a folder"),
        ("video", ["in.mp4", "--out", "{file}"], "exists and is not a folder"),
        ("bench", ["--json", "{dir}"], "is a folder; give a file name"),
        ("bench_train", ["--json", "{dir}"], "is a folder; give a file name"),
    ],
)
def test_outputs_of_the_wrong_kind_are_refused_before_any_work(tmp_path, capsys, tool, argv, problem):
    """A file where a folder goes (or the reverse) used to end in a traceback, for bench after the whole run."""
    module = __import__(f"fer_core.{tool}", fromlist=["main"])
    a_file = tmp_path / "taken"
    a_file.write_text("")
    with pytest.raises(SystemExit) as done:
        module.main([arg.format(file=a_file, dir=tmp_path) for arg in argv])
    err = capsys.readouterr().err
    assert done.value.code == 2 and f"{a_file if 'not a folder' in problem else tmp_path}: {problem}" in err, err
    beneath = a_file / "deeper" / ("out" if "not a folder" in problem else "out.json")  # under a file: after the run
    with pytest.raises(SystemExit) as done:
        module.main([arg.format(file=beneath, dir=beneath) for arg in argv])
    assert done.value.code == 2 and f"{beneath}: {a_file} is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("tool", "argv"),
    [
        ("bench", ["--json", "{tmp}/bench.json"]),
        ("detect_faces", ["{tmp}/no_images", "--out", "{tmp}/out"]),
        ("export", ["--weights", "{tmp}", "--imgsz", "640"]),
        ("train_detector", ["--data-root", "d", "--work", "{tmp}/work"]),
        ("video", ["{tmp}/in.mp4", "--out", "{tmp}/out"]),
    ],
)
@pytest.mark.parametrize("size", ["5", "99999"])
def test_every_detector_size_flag_is_refused_alike_while_the_flags_are_read(tmp_path, capsys, tool, argv, size):
    """Five tools checked --imgsz by hand, each in its own words and beside other flags' checks; detect_faces not at
    all (it passed FaceDetector's ValueError on after walking the images, so a missing folder was said first)."""
    module = __import__(f"fer_core.{tool}", fromlist=["main"])
    with pytest.raises(SystemExit) as done:
        module.main([*(arg.format(tmp=tmp_path) for arg in argv), "--imgsz", size])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.endswith(
        f"error: argument --imgsz: {size}: must be from 32 to 4096 px (the detector's input)\n"
    ), err
    assert cli.detector_imgsz("32") == 32 and cli.detector_imgsz("4096") == 4096


def test_an_output_place_we_may_not_write_in_is_refused(tmp_path, monkeypatch):
    """Checked with os.access (the tests run as root, who may write anywhere)."""
    monkeypatch.setattr(cli.os, "access", lambda path, mode: Path(path) != tmp_path)
    for check, where in ((cli.out_file, tmp_path / "out.json"), (cli.out_folder, tmp_path / "new" / "out")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"cannot write in {tmp_path} .permission denied"):
            check(str(where))
    assert cli.out_file("relative.json") == Path("relative.json")  # the working folder, when nothing else exists


def test_cli_run_passes_the_status_of_main_through():
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: 3)
    assert exit_.value.code == 3
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: None)
    assert exit_.value.code == 0
    with pytest.raises(RuntimeError):  # a bug is not a user's mistake: its traceback stays
        cli.run(lambda: (_ for _ in ()).throw(RuntimeError("bug")))


#: Every tool whose flags --help must explain, with arguments that get past argparse's required ones.
HELP_TOOLS = (
    "train",
    "train_pair",
    "evaluate",
    "predict",
    "video",
    "fit_ensemble",
    "distill",
    "detect_faces",
    "train_detector",
    "bench_train",
    "bench",
    "export",
    "explain",
    "model_card",
    "robustness",
    "wider_eval",
)


class _ParserSeen(Exception):
    """Raised in place of parsing, carrying the parser a tool built."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def tool_parser(tool: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser `python -m fer_core.<tool>` builds, taken as it starts to parse (nothing runs)."""

    def seen(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _ParserSeen(self)

    module = __import__(f"fer_core.{tool}", fromlist=["main"])
    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", seen)
        with pytest.raises(_ParserSeen) as caught:
            module.main([])
    return caught.value.parser


@pytest.mark.parametrize("tool", HELP_TOOLS)
def test_every_flag_says_what_it_is_for_and_its_default(tool, monkeypatch):
    """evaluate --split (default PrivateTest), fit_ensemble's flags, --runtime and --detector everywhere, ... had
    no help and no default in --help."""
    parser = tool_parser(tool, monkeypatch)
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{tool} {name}: no help"
        shown = formatter._get_help_string(action) or ""
        default = action.default
        says_nothing = default is None or default is False or default == []  # not `in`: 0 == False
        has_default = bool(action.option_strings) and not action.required and not says_nothing
        if has_default and tool != "train":  # train's flags default to None: their defaults are TrainConfig's
            assert "default" in shown.lower(), f"{tool} {name}: default {default!r} not shown"
        assert "(default: None)" not in shown, f"{tool} {name}"
        assert "(default: False)" not in shown and "(default: True)" not in shown, f"{tool} {name}"  # on/off
        assert shown.count("(default") <= 1, f"{tool} {name}: two defaults"
    text = parser.format_help()
    assert text.count("(default") >= 1


def test_the_runtime_flag_is_one_and_the_same_in_every_tool(monkeypatch):
    """fit_ensemble alone had no `auto` and defaulted to torch; every tool now takes the same three, auto first."""
    for tool in ("evaluate", "predict", "video", "fit_ensemble", "distill"):
        (runtime,) = [a for a in tool_parser(tool, monkeypatch)._actions if "--runtime" in a.option_strings]
        assert runtime.choices is not None
        assert runtime.default == "auto" and tuple(runtime.choices) == cli.RUNTIMES, tool


def test_fit_ensemble_skips_bad_rows_on_request_and_records_how_many(tmp_path, fake_weights, capsys, caplog):
    """train and evaluate had --skip-bad, fit_ensemble not: a pair trained with skip_bad failed in its fit."""
    csv = write_fer_csv(tmp_path / "bad.csv", n_train=7, n_public=14, n_private=7)
    lines = csv.read_text().splitlines()
    lines.insert(5, "4,1 2 3,PublicTest")
    csv.write_text("\n".join(lines) + "\n")
    argv = ["--data", str(csv), "--models", *map(str, sorted(fake_weights.glob("*.pt"))), "--out", str(tmp_path / "w")]
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: fit_ensemble_main(argv))
    assert done.value.code == 2 and "line 6: expected 2304 pixel values, got 3" in capsys.readouterr().err
    assert not (tmp_path / "w" / "ensemble.json").exists()
    fit_ensemble_main([*argv, "--skip-bad"])  # the default runtime, auto: onnxruntime here
    assert "skipped 1 bad rows/files" in caplog.text  # the loader's warning (on stderr outside pytest)
    spec = json.loads((tmp_path / "w" / "ensemble.json").read_text())
    assert spec["skipped"] == 1 and [m["name"] for m in spec["models"]] == ["A_crp", "B_mixcut"]
    assert Ensemble.load(tmp_path / "w", runtime="torch").names == ["A_crp", "B_mixcut"]
    clean = write_fer_csv(tmp_path / "clean.csv", n_train=7, n_public=14, n_private=7)
    fit_ensemble_main(["--data", str(clean), *argv[2:-1], str(tmp_path / "clean"), "--skip-bad"])
    assert "skipped" not in json.loads((tmp_path / "clean" / "ensemble.json").read_text())  # none left out


def test_fit_ensemble_says_what_models_takes_when_given_data(tmp_path, fake_weights, capsys):
    """A CSV given to --models was "(IndexError: pop from empty list)"."""
    csv = write_fer_csv(tmp_path / "fer.csv", n_train=7, n_public=7, n_private=7)
    notes = tmp_path / "notes.pt"
    notes.write_text("not a checkpoint")
    for wrong, kind in ((csv, "FER-2013 data, not a checkpoint"), (notes, "not a classifier checkpoint")):
        argv = ["--data", str(csv), "--models", str(wrong), str(fake_weights / "A_crp.pt"), "--out", str(tmp_path)]
        with pytest.raises(SystemExit) as done:
            cli.run(cast(Callable[[], int | None], lambda argv=argv: fit_ensemble_main(argv)))
        err = capsys.readouterr().err
        assert done.value.code == 2 and f"error: --models {wrong}: {kind}; --models takes two classifier" in err
        assert "IndexError" not in err or wrong == notes
    assert not (tmp_path / "ensemble.json").exists()


def test_fit_ensemble_calls_a_truncated_member_damaged(
    tmp_path: Path, fake_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint cut short was "not a classifier checkpoint; --models takes two classifier checkpoints ... (this
    file begins with b'PK\\x03\\x04...')": the right kind of file, damaged, not the wrong kind."""
    csv = write_fer_csv(tmp_path / "fer.csv", n_train=7, n_public=7, n_private=7)
    truncated = tmp_path / "A_crp.pt"
    truncated.write_bytes((fake_weights / "A_crp.pt").read_bytes()[:100_000])
    argv = ["--data", str(csv), "--models", str(truncated), str(fake_weights / "B_mixcut.pt"), "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: fit_ensemble_main(argv))
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: --models {truncated}: looks like a torch.save archive but cannot be read (damaged")
    assert "not a classifier checkpoint" not in err


def test_the_tools_and_the_app_start_from_the_same_detection_and_tracking_defaults(monkeypatch):
    """The detector's confidence (0.35) was written out in five places and the tracker's defaults in three: one
    changed alone would have made the video tool and the app's Video page label the same clip differently."""
    from app.live import TrackerSettings
    from app.ui import DetectorSettings
    from fer_core.detection import DEFAULT_CONF, FaceDetector
    from fer_core.tracking import FaceTracker

    video = {a.dest: a.default for a in tool_parser("video", monkeypatch)._actions}
    predict = {a.dest: a.default for a in tool_parser("predict", monkeypatch)._actions}
    assert video["conf"] == predict["conf"] == DetectorSettings().conf == DEFAULT_CONF
    assert FaceDetector(backend="haar").conf == DEFAULT_CONF
    tracker, settings = FaceTracker(), TrackerSettings()
    flags = {"iou_threshold": "iou", "max_missed": "max_missed", "alpha": "alpha", "window": "window"}
    for name, flag in flags.items():
        assert getattr(tracker, name) == getattr(settings, name) == video[flag], name
    assert tracker.smoothing == settings.smoothing == video["smoothing"]


def test_a_flag_that_turns_something_off_shows_no_default_of_on():
    """A store_false flag's default is True: "(default: on)" beside --no-foo would say the opposite of what it does."""
    parser = cli.argument_parser("x", None)
    parser.add_argument("--no-foo", dest="foo", action="store_false", help="skip the foo")
    parser.add_argument("--bar", action=argparse.BooleanOptionalAction, default=True, help="use the bar")
    text = " ".join(parser.format_help().split())
    assert "skip the foo (default" not in text and "use the bar (default: on)" in text


def test_predict_split_covers_every_image_once_across_batches() -> None:
    """A split longer than one batch is predicted whole and in order: no image is left out at a batch's end, and row
    i of every model's probabilities is image i's (the shipped batch of 512 exceeds every test split)."""
    from fer_core.data import FerSplit
    from fer_core.evaluate import predict_split

    shapes: list[tuple[int, ...]] = []

    def brightness(batch: np.ndarray) -> dict[str, np.ndarray]:
        shapes.append(batch.shape)
        return {"ensemble": batch.mean(axis=(1, 2, 3))[:, None]}

    images = np.stack([np.full((48, 48), i, np.uint8) for i in range(7)])
    split = FerSplit("PrivateTest", images, np.zeros(7, np.int64), tuple(map(str, range(7))))
    probs = predict_split(types.SimpleNamespace(predict_batch=brightness), split, batch_size=3, progress=False)  # type: ignore[arg-type]
    assert probs["ensemble"][:, 0].tolist() == list(range(7))
    assert shapes == [(3, 1, 48, 48), (3, 1, 48, 48), (1, 1, 48, 48)]


def test_evaluate_drops_an_earlier_metrics_file_before_its_new_plots(tmp_path, monkeypatch):
    """A run stopped while drawing its plots must not leave the previous run's metrics.json beside them, vouching
    for figures these plots and predictions are not of."""
    from fer_core import evaluate
    from fer_core.data import FerSplit

    out = tmp_path / "report"
    out.mkdir()
    (out / "metrics.json").write_text('{"n": 999}\n')

    def stopped(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "save_confusion_png", stopped)
    report = {"models": {"ensemble": {"accuracy": 0.5, "macro_f1": 0.5, "confusion": []}}}
    split = FerSplit("PrivateTest", np.zeros((1, 48, 48), np.uint8), np.zeros(1, np.int64), ("a.png",))
    with pytest.raises(KeyboardInterrupt):
        evaluate.write_report(report, split, {"ensemble": np.full((1, 7), 1 / 7)}, out)
    assert not (out / "metrics.json").exists()


def test_fit_ensemble_calls_any_data_file_given_to_models_data_and_a_missing_one_missing(tmp_path):
    """FER2013.CSV or fer2013.csv.gz given to --models is named FER-2013 data as a plain fer.csv is, and a --models
    path that does not exist is said to be missing, without the advice on what --models takes."""
    from fer_core.fit_ensemble import load_member

    for name in ("FER2013.CSV", "fer2013.csv.gz"):
        data = tmp_path / name
        data.write_bytes(b"emotion,pixels,Usage\n")
        with pytest.raises(cli.UserInputError) as caught:
            load_member(data)
        assert str(caught.value).startswith(f"--models {data}: FER-2013 data, not a checkpoint; --models takes")
    missing = tmp_path / "missing.pt"
    with pytest.raises(cli.UserInputError) as caught:
        load_member(missing)
    assert str(caught.value) == f"{missing}: no such checkpoint file"
