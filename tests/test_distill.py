"""Knowledge distillation: teacher soft labels (CLI and file checks) and training on them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_core import train
from fer_core.checkpoint import load_classifier, read_checkpoint
from fer_core.cli import UserInputError
from fer_core.data import FerDataError, load_fer2013
from fer_core.distill import SoftLabels, blend_targets
from fer_core.distill import main as distill_main
from fer_core.ensemble import ENSEMBLE_KEY, Ensemble
from fer_core.labels import EMOTIONS, TRAIN_SPLIT
from fer_core.train import main as train_main
from fer_core.train import predict_probs, to_tensors
from tests.fer_fixtures import write_fer_csv

TINY = ["--batch-size", "16", "--stem-stride", "2", "--threads", "1"]


def test_blend_targets_mixes_one_hot_and_teacher():
    labels = torch.tensor([0, 3, 6])
    soft = torch.softmax(torch.randn(3, len(EMOTIONS)), dim=1)
    one_hot = torch.nn.functional.one_hot(labels, len(EMOTIONS)).float()
    torch.testing.assert_close(blend_targets(labels, soft, 0.0), one_hot)
    torch.testing.assert_close(blend_targets(labels, soft, 1.0), soft)
    half = blend_targets(labels, soft, 0.5)
    torch.testing.assert_close(half, (one_hot + soft) / 2)
    torch.testing.assert_close(half.sum(1), torch.ones(3))


def test_distill_cli_labels_the_training_split_and_train_records_the_teacher(
    tmp_path, tiny_csv, fake_weights, monkeypatch
):
    soft_path = tmp_path / "teacher.npz"
    distill_main(["--data", str(tiny_csv), "--teacher", str(fake_weights), "--out", str(soft_path), "--tta", "flip"])
    soft = SoftLabels.load(soft_path)
    dataset = load_fer2013(tiny_csv)
    assert soft.probs.shape == (len(dataset[TRAIN_SPLIT]), len(EMOTIONS))
    np.testing.assert_allclose(soft.probs.sum(1), 1.0, atol=1e-5)
    assert soft.fingerprint == dataset.fingerprint()
    assert soft.teacher["tta"] == "flip" and set(soft.teacher["members"]) == {"A_crp", "B_mixcut"}
    images = np.ascontiguousarray(dataset[TRAIN_SPLIT].images[:, None])
    teacher = Ensemble.load(fake_weights).with_tta("flip").predict_batch(images)
    np.testing.assert_allclose(soft.probs, teacher[ENSEMBLE_KEY], atol=1e-5)  # the ensemble's, not a member's

    alphas: list[float] = []
    monkeypatch.setattr(
        train,
        "blend_targets",
        lambda y, soft, alpha: alphas.append(alpha) or blend_targets(y, soft, alpha),  # type: ignore[func-returns-value]
    )

    out = tmp_path / "student"
    train_main(
        ["--data", str(tiny_csv), "--out", str(out), "--recipe", "mixcut", "--epochs", "1", "--soft-labels",
         str(soft_path), "--distill-alpha", "0.7", *TINY]
    )  # fmt: skip
    meta = load_classifier(out / "best.pt").meta
    assert meta["distilled_from"]["alpha"] == 0.7 and meta["distilled_from"]["tta"] == "flip"
    assert alphas and set(alphas) == {0.7}  # every batch's targets blended with the alpha asked for


def test_distill_refuses_an_out_it_would_not_write_and_reads_tta_off(tmp_path, tiny_csv, fake_weights, capsys):
    """numpy adds .npz to any other name, so the file `train --soft-labels` was then pointed at did not exist."""
    base = ["--data", str(tiny_csv), "--teacher", str(fake_weights)]
    for out, tta, problem in (
        (tmp_path / "teacher", "shipped", "give a .npz file name"),
        (tmp_path, "shipped", "is a folder; give a file name"),
        (tmp_path / "t.npz", "rot10", "invalid choice: 'rot10'"),
    ):
        with pytest.raises(SystemExit) as done:
            distill_main([*base, "--out", str(out), "--tta", tta])
        assert done.value.code == 2 and problem in capsys.readouterr().err
    assert not (tmp_path / "teacher.npz").exists()
    distill_main([*base, "--out", str(tmp_path / "t.npz"), "--tta", "off"])  # "off", as evaluate and predict say it
    assert SoftLabels.load(tmp_path / "t.npz").teacher["tta"] == "none"


def test_distill_tta_offers_one_spelling_of_one_view_and_still_reads_none(tmp_path, tiny_csv, fake_weights, capsys):
    """--tta listed both `off` and `none`, two names of the same single view."""
    with pytest.raises(SystemExit):
        distill_main(["--help"])
    choices = capsys.readouterr().out.split("--tta {", 1)[1].split("}", 1)[0].split(",")
    assert "off" in choices and "none" not in choices and "flip" in choices
    out = tmp_path / "t.npz"
    distill_main(["--data", str(tiny_csv), "--teacher", str(fake_weights), "--out", str(out), "--tta", "none"])
    assert SoftLabels.load(out).teacher["tta"] == "none"


def test_a_missing_soft_label_file_is_called_missing(tmp_path, tiny_csv):
    """It was "not a soft-label file from `python -m fer_core.distill`", as if the file were of the wrong kind."""
    missing = tmp_path / "teacher.npz"
    with pytest.raises(ValueError, match=r"teacher\.npz: no such file \(soft labels are made by"):
        SoftLabels.load(missing)
    args = ["--data", str(tiny_csv), "--out", str(tmp_path / "x"), "--epochs", "1", *TINY]
    with pytest.raises(UserInputError, match=r"teacher\.npz: no such file") as raised:
        train_main([*args, "--soft-labels", str(missing)])
    assert "not a soft-label file" not in str(raised.value)
    assert not (tmp_path / "x").exists()


def test_distill_skips_bad_rows_as_train_does(tmp_path, fake_weights):
    csv = write_fer_csv(tmp_path / "fer.csv", n_train=12, n_public=7, n_private=7)
    lines = csv.read_text().splitlines()
    lines.insert(3, "4,1 2 3,Training")  # a row of 3 pixels
    csv.write_text("\n".join(lines) + "\n")
    base = ["--data", str(csv), "--teacher", str(fake_weights), "--out", str(tmp_path / "t.npz"), "--tta", "off"]
    with pytest.raises(FerDataError, match="line 4"):
        distill_main(base)
    distill_main([*base, "--skip-bad"])
    kept = load_fer2013(csv, skip_bad=True)
    soft = SoftLabels.load(tmp_path / "t.npz")
    assert soft.probs.shape[0] == len(kept[TRAIN_SPLIT]) == 12 and soft.fingerprint == kept.fingerprint()


@pytest.mark.parametrize(("taught", "recipe"), [("sad", "crp"), ("surprise", "crp"), ("sad", "mixcut")])
def test_a_student_follows_its_teacher_over_the_labels(tmp_path, tiny_csv, taught, recipe):
    """With alpha 1 the labels are ignored: a teacher that always says one class must be learnt as such.

    Two different classes, so a tiny model that collapses to one class by chance cannot pass both; with
    MixUp/CutMix the blended targets (not the labels) must be what gets mixed."""
    dataset = load_fer2013(tiny_csv)
    count = len(dataset[TRAIN_SPLIT])
    constant = np.zeros((count, len(EMOTIONS)), np.float32)
    constant[:, EMOTIONS.index(taught)] = 1.0
    soft_path = tmp_path / "teacher.npz"
    SoftLabels(constant, dataset.fingerprint(), {"note": f"always {taught}"}).save(soft_path)
    out = tmp_path / "student"
    train_main(
        ["--data", str(tiny_csv), "--out", str(out), "--recipe", recipe, "--epochs", "3", "--lr", "3e-3",
         "--soft-labels", str(soft_path), "--distill-alpha", "1", "--label-smoothing", "0", *TINY]
    )  # fmt: skip
    student = load_classifier(out / "last.pt")
    images, labels = to_tensors(dataset[TRAIN_SPLIT])
    predicted = predict_probs(student.model, images, student.config, torch.device("cpu")).argmax(1)
    assert (predicted == EMOTIONS.index(taught)).mean() > 0.9
    assert (labels.numpy() == EMOTIONS.index(taught)).mean() < 0.2  # the labels alone would not teach this


def test_resume_refuses_soft_labels_from_another_teacher(tmp_path, tiny_csv):
    dataset = load_fer2013(tiny_csv)
    count, soft_path, out = len(dataset[TRAIN_SPLIT]), tmp_path / "teacher.npz", tmp_path / "student"
    uniform = np.full((count, len(EMOTIONS)), 1.0 / len(EMOTIONS), np.float32)
    SoftLabels(uniform, dataset.fingerprint(), {"members": {"A_crp": "aaaa"}}).save(soft_path)
    student = ["--data", str(tiny_csv), "--out", str(out), "--soft-labels", str(soft_path), "--epochs", "2", *TINY]
    train_main([*student, "--stop-after", "1"])
    for other in ({"members": {"A_crp": "bbbb"}}, {"members": {"A_crp": "aaaa"}, "tta": "flip"}):
        SoftLabels(uniform, dataset.fingerprint(), other).save(soft_path)
        with pytest.raises(UserInputError, match="the teacher of --soft-labels differ"):
            train_main([*student, "--resume"])


def test_resume_accepts_the_same_soft_labels_moved_elsewhere(tmp_path, tiny_csv):
    """The teacher and the data are what a resume must keep, not the file's path."""
    dataset = load_fer2013(tiny_csv)
    uniform = np.full((len(dataset[TRAIN_SPLIT]), len(EMOTIONS)), 1.0 / len(EMOTIONS), np.float32)
    first, moved, out = tmp_path / "teacher.npz", tmp_path / "moved" / "teacher.npz", tmp_path / "student"
    SoftLabels(uniform, dataset.fingerprint(), {"members": {"A_crp": "aaaa"}}).save(first)
    base = ["--data", str(tiny_csv), "--out", str(out), "--epochs", "2", *TINY]
    train_main([*base, "--soft-labels", str(first), "--stop-after", "1"])
    moved.parent.mkdir()
    shutil.move(first, moved)
    train_main([*base, "--soft-labels", str(moved), "--resume"])
    assert read_checkpoint(out / "last.pt")["training"]["epoch"] == 1  # both epochs are done


def test_train_refuses_soft_labels_for_other_data(tmp_path, tiny_csv):
    other = write_fer_csv(tmp_path / "other.csv", n_train=48, n_public=14, n_private=14, seed=5)
    dataset = load_fer2013(other)
    soft_path = tmp_path / "other.npz"
    probs = np.full((len(dataset[TRAIN_SPLIT]), len(EMOTIONS)), 1 / len(EMOTIONS), np.float32)
    SoftLabels(probs, dataset.fingerprint(), {}).save(soft_path)
    args = ["--data", str(tiny_csv), "--out", str(tmp_path / "x"), "--epochs", "1", *TINY]
    with pytest.raises(UserInputError, match="other training data"):
        train_main([*args, "--soft-labels", str(soft_path)])
    not_labels = tmp_path / "notes.npz"
    not_labels.write_text("not numpy")
    with pytest.raises(UserInputError, match="not a soft-label file"):
        train_main([*args, "--soft-labels", str(not_labels)])


def test_a_bare_numpy_array_is_not_a_soft_label_file(tmp_path):
    bare = tmp_path / "probs.npy"
    np.save(bare, np.full((4, len(EMOTIONS)), 1 / len(EMOTIONS), np.float32))
    with pytest.raises(ValueError, match=r"probs\.npy: not a soft-label file"):
        SoftLabels.load(bare)


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_soft_label_file_is_named_not_a_traceback(tmp_path, damage):
    whole = tmp_path / "t.npz"
    SoftLabels(np.full((40, len(EMOTIONS)), 1 / len(EMOTIONS), np.float32), "f" * 12, {}).save(whole)
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"" if damage == "empty" else whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"damaged\.npz: not a soft-label file"):
        SoftLabels.load(damaged)


def test_soft_labels_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """Ctrl-C while the archive was written left a truncated file under the final name."""
    target = tmp_path / "t.npz"
    target.write_bytes(b"earlier labels")

    def interrupted(file, **arrays):
        file.write(b"PK half")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        SoftLabels(np.zeros((2, len(EMOTIONS)), np.float32), "f", {}).save(target)
    assert target.read_bytes() == b"earlier labels" and sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]


def test_distill_checks_where_its_out_goes_before_the_teacher_runs(tmp_path, tiny_csv, fake_weights, monkeypatch):
    """A folder for --out that mkdir cannot make (under /proc or /sys, where os.access lets root past) was a
    PermissionError traceback after the teacher's predictions, and a file there that cannot be written one too."""
    from fer_core import cli, distill

    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here for a place that cannot be written")
    monkeypatch.setattr(cli.os, "access", lambda path, mode: True)  # as for root
    base = ["--data", str(tiny_csv), "--teacher", str(fake_weights), "--tta", "off"]
    with monkeypatch.context() as patched:
        patched.setattr(distill, "load_fer2013", lambda *a, **k: pytest.fail("loaded the data before checking --out"))
        with pytest.raises(UserInputError, match="--out /proc/fer_core_out: cannot create the output folder"):
            distill_main([*base, "--out", "/proc/fer_core_out/t.npz"])
    with pytest.raises(UserInputError, match=r"/proc/t\.npz: could not write the results"):
        distill_main([*base, "--out", "/proc/t.npz"])
