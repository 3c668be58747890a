"""The model card generator on generated files: every number it prints comes from the files it reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fer_core.checkpoint import read_checkpoint, save_checkpoint
from fer_core.cli import UserInputError
from fer_core.export import file_sha256
from fer_core.labels import EMOTIONS
from fer_core.model_card import effort, main, metrics_table, render, weakest_classes
from tests.conftest import SHIPPED_WEIGHTS, shipped_weights_present


def weights_of(folder: Path, tta: str = "none") -> dict:
    """The `weights` block fer_core.evaluate writes for the fake weights."""
    names = ("A_crp", "B_mixcut")
    return {
        "tta": tta,
        "members": {name: file_sha256(folder / f"{name}.pt") for name in names},
        "mix": dict.fromkeys(names, 0.5),
    }


def metrics_with(confusion: np.ndarray, split: str = "PrivateTest") -> dict:
    tp = np.diag(confusion)
    per_class = {
        e: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": int(n)}
        for e, n in zip(EMOTIONS, confusion.sum(1), strict=True)
    }
    scores = {
        "accuracy": float(tp.sum() / confusion.sum()),
        "macro_f1": 0.5,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }
    return {"split": split, "n": int(confusion.sum()), "models": {"ensemble": scores}}


def test_weakest_classes_reads_recall_and_the_main_confusion():
    confusion = np.diag([10, 10, 2, 10, 6, 10, 10])
    confusion[2, 4] = 8  # fear: 2 of 10 right, 8 taken for sad
    confusion[4, 6] = 4  # sad: 6 of 10 right, 4 taken for neutral
    text = weakest_classes(metrics_with(confusion))
    assert text == (
        "Weakest classes of the ensemble on PrivateTest: `fear` (20.0 % recall; 80.0 % taken for `sad`) "
        "and `sad` (60.0 % recall; 40.0 % taken for `neutral`)."
    )


def test_weakest_classes_leave_out_classes_the_split_lacks():
    confusion = np.diag([10, 0, 3, 10, 10, 10, 10])  # no disgust faces at all (a subset of FER)
    confusion[2, 4] = 7
    assert weakest_classes(metrics_with(confusion), count=1) == (
        "Weakest classes of the ensemble on PrivateTest: `fear` (30.0 % recall; 70.0 % taken for `sad`)."
    )


def test_render_lists_every_file_with_its_hash(tmp_path, fake_weights):
    weights = tmp_path / "weights"
    shutil.copytree(fake_weights, weights)  # the fixture is shared by the session: leave it as it is
    confusion = np.diag([5, 1, 5, 9, 5, 5, 5])
    (weights / "metrics_PrivateTest.json").write_text(
        json.dumps(metrics_with(confusion) | {"weights": weights_of(weights)})
    )
    card = render(weights)
    assert "## PrivateTest (n = 35)" in card and "Weakest classes" in card
    for path in weights.iterdir():
        if path.is_file():
            assert f"`{path.name}` | {path.stat().st_size} | `{file_sha256(path)}` |" in card


@pytest.mark.parametrize("public", [None, [], {"ensemble_accuracy_by_tta": None}])
def test_a_hand_edited_public_test_entry_gives_a_card_without_its_figures(tmp_path, fake_weights, public):
    """`"public_test": null` in ensemble.json raised an AttributeError (the Compare page had the same bug)."""
    weights = tmp_path / "weights"
    shutil.copytree(fake_weights, weights)
    spec = json.loads((weights / "ensemble.json").read_text())
    (weights / "ensemble.json").write_text(json.dumps(spec | {"public_test": public}))
    card = render(weights)
    assert "test-time augmentation: `none`" in card and "PublicTest ensemble accuracy by TTA set" not in card


def test_a_card_section_that_is_not_utf8_is_named(tmp_path, fake_weights):
    """A Latin-1 `weights/card/*.md` raised UnicodeDecodeError (a traceback) from the card's renderer."""
    weights = tmp_path / "weights"
    shutil.copytree(fake_weights, weights)
    (weights / "card").mkdir()
    (weights / "card" / "10_notes.md").write_text("## Notes\n\ncaf\u00e9\n", encoding="utf-8")
    assert "café" in render(weights)
    (weights / "card" / "20_latin1.md").write_bytes("## Notes\n\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserInputError, match=r"20_latin1\.md: not UTF-8 text \(byte 13\); save it as UTF-8"):
        render(weights)


@pytest.mark.parametrize("stale", ["other TTA", "other network", "other mix", "unrecorded", "other split"])
def test_render_refuses_metrics_of_other_weights(tmp_path, fake_weights, stale):
    weights = shutil.copytree(fake_weights, tmp_path / "weights")
    used = weights_of(weights, tta="flip" if stale == "other TTA" else "none")
    if stale == "other network":
        used["members"]["A_crp"] = file_sha256(weights / "B_mixcut.pt")
    if stale == "other mix":
        used["mix"] = {"A_crp": 0.9, "B_mixcut": 0.1}  # measured before ensemble.json's weights were changed
    metrics = metrics_with(
        np.diag([5, 1, 5, 9, 5, 5, 5]), split="PrivateTest" if stale == "other split" else "PublicTest"
    )
    if stale != "unrecorded":
        metrics["weights"] = used
    (weights / "metrics_PublicTest.json").write_text(json.dumps(metrics))
    fix = "copy the right file here" if stale == "other split" else r"run python -m fer_core\.evaluate again"
    with pytest.raises(UserInputError, match=rf"metrics_PublicTest\.json: .*{fix}"):
        render(weights)


def render_with_meta(tmp_path: Path, fake_weights: Path, file: str, **meta: object) -> str:
    """The card of a copy of the fake weights in which `file`'s metadata is updated with `meta`."""
    weights = tmp_path / "weights"
    shutil.copytree(fake_weights, weights)  # the fixture is shared by the session: leave it as it is
    checkpoint = read_checkpoint(weights / file)
    checkpoint["meta"].update(meta)
    save_checkpoint(weights / file, checkpoint)
    return render(weights)


def parent_stage(file: str, recipe: str, epoch: int, device: str, train_seconds: float) -> dict[str, object]:
    """The lineage record a fine-tuned checkpoint keeps of the stage it started from."""
    return {"recipe": recipe, "epoch": epoch, "device": device, "train_seconds": train_seconds, "file": file,
            "sha256": "ab" * 32, "parent": None}  # fmt: skip


@pytest.mark.parametrize(("train_seconds", "shown"), [(420, "7 min"), (26.3, "26 s")])
def test_the_classifier_table_prints_each_checkpoints_own_record(tmp_path, fake_weights, train_seconds, shown):
    card = render_with_meta(
        tmp_path,
        fake_weights,
        "A_crp.pt",
        recipe="CRP",
        epoch=12,
        device="NVIDIA H200",
        train_seconds=train_seconds,
        train_config={"epochs": 80},
        metrics={"val_acc": 0.6912, "val_macro_f1": 0.5},
    )
    row = f"| `A_crp.pt` | CRP | 12 of 80 | 48 px gray, stem stride 2 | NVIDIA H200 | {shown} | 69.1 % |"
    assert row in card.splitlines()


def test_render_tells_a_fine_tuned_models_stages_oldest_first(tmp_path, fake_weights):
    card = render_with_meta(
        tmp_path,
        fake_weights,
        "A_crp.pt",
        recipe="CRP",
        epoch=10,
        device="cpu",
        train_seconds=6000,
        fine_tuned_from=parent_stage("A_crp.pt", "CRP", 37, "NVIDIA H200", 360),
        distilled_from={"members": {"A_crp": "cd" * 32, "B_mixcut": "ef" * 32}, "tta": "flip_rot8", "alpha": 0.7},
    )  # fmt: skip
    first_stage = "1. CRP, 37 epochs on NVIDIA H200 (6 min), saved as `A_crp.pt` (sha256 abababababab)"
    assert f"- `A_crp.pt`:\n  {first_stage}" in card
    assert (
        "  2. 10 epochs on CPU (100 min), distilled from the ensemble of `A_crp` (sha256 cdcdcdcdcdcd) + "
        "`B_mixcut` (sha256 efefefefefef) with TTA `flip_rot8` (target = 0.3 x label + 0.7 x teacher)"
    ) in card
    assert "- `B_mixcut.pt`:" not in card  # trained in one stage: the table says it all


def test_render_names_a_weight_averaged_stage(tmp_path, fake_weights):
    card = render_with_meta(
        tmp_path,
        fake_weights,
        "B_mixcut.pt",
        epoch=8, device="cpu", train_seconds=3600,
        train_config={"schedule": "swa", "lr": 1e-4, "batch_size": 64, "threads": 2},
        fine_tuned_from=parent_stage("B_mixcut.pt", "MixUp", 45, "NVIDIA H200", 360),
    )  # fmt: skip
    assert (
        "  2. 8 epochs on CPU, 2 threads (60 min), stochastic weight averaging: the mean of the weights at each "
        "epoch's end, constant LR 0.0001 after warm-up, batch 64, batch-norm statistics recomputed"
    ) in card


def test_a_stage_shorter_than_a_minute_is_timed_in_seconds():
    """Session 27's GPU stage of B took 26 s, which the card printed as "0 min"."""
    assert effort({"epoch": 2, "device": "NVIDIA H200", "train_seconds": 26.3}) == "2 epochs on NVIDIA H200 (26 s)"
    assert effort({"epoch": 24, "device": "NVIDIA H200", "train_seconds": 4554}) == "24 epochs on NVIDIA H200 (76 min)"


def test_metrics_table_does_not_round_a_near_miss_up_to_the_target():
    scores = {"accuracy": 0.69958, "macro_f1": 0.6866, "per_class": {e: {"f1": 0.5} for e in EMOTIONS}}
    row = metrics_table({"models": {"A_crp": scores}})[-1]
    assert row.startswith("| A_crp | 69.96 % | 0.687 |"), row


def test_the_recipe_sentence_is_read_from_the_members_training_configs(tmp_path, fake_weights):
    """It was typed in: "OneCycle" and "frequency^-0.5" whatever the checkpoints said."""
    weights = tmp_path / "weights"
    shutil.copytree(fake_weights, weights)
    shared = {"label_smoothing": 0.1, "weight_decay": 0.05}
    for file, own in (("A_crp.pt", {"schedule": "onecycle"}), ("B_mixcut.pt", {"schedule": "swa"})):
        checkpoint = read_checkpoint(weights / file)
        checkpoint["meta"]["train_config"] = {**shared, **own, "class_weight_power": 1.0 if "B" in file else 0.5}
        save_checkpoint(weights / file, checkpoint)
    recipe = next(line for line in render(weights).splitlines() if line.startswith("Recipe: "))
    assert recipe.startswith(
        "Recipe: AdamW (weight decay 0.05, on weights only), OneCycle LR with warm-up (`A_crp.pt`)"
    )
    assert "/ a constant LR after warm-up with weight averaging (`B_mixcut.pt`), label smoothing 0.1, " in recipe
    assert "(frequency^-0.5: lifts `disgust`) (`A_crp.pt`) / " in recipe
    assert "(frequency^-1.0: lifts `disgust`) (`B_mixcut.pt`), batch augmentation" in recipe


def test_render_refuses_figures_of_other_data_and_names_a_damaged_metrics_file(tmp_path, fake_weights):
    """A sample's figures (n = 35) printed as the PrivateTest of members trained beside 3,589 faces; and a
    truncated file was a JSONDecodeError traceback."""
    weights = shutil.copytree(fake_weights, tmp_path / "weights")
    checkpoint = read_checkpoint(weights / "A_crp.pt")
    checkpoint["meta"]["data_counts"] = {"Training": 28709, "PublicTest": 3589, "PrivateTest": 3589}
    save_checkpoint(weights / "A_crp.pt", checkpoint)
    metrics = metrics_with(np.diag([5, 1, 5, 9, 5, 5, 5])) | {"weights": weights_of(weights)}
    path = weights / "metrics_PrivateTest.json"
    path.write_text(json.dumps(metrics))
    with pytest.raises(UserInputError, match=r"measured on 35 PrivateTest faces, but `A_crp.pt` was trained beside"):
        render(weights)
    for text, problem in (('{"split": "Priv', "not valid JSON"), ("[]", "not a metrics file")):
        path.write_text(text)
        with pytest.raises(UserInputError, match=rf"metrics_PrivateTest\.json: {problem}"):
            render(weights)


def describes(weights: Path, *files: str, digits: int = 12) -> str:
    """The line a card section names its files with, for the files as they are now."""
    named = ", ".join(f"{name} {file_sha256(weights / name)[:digits]}" for name in files)
    return f"<!-- describes: {named} -->"


SECTION = "## How these classifiers were trained\n\nA_crp: 3 device calls on an H200; B_mixcut on the CPU.\n"


def test_a_card_section_written_for_other_members_is_marked_out_of_date(tmp_path, fake_weights, capsys):
    """A user's own members got the shipped members' training story under their own sha256, without a word."""
    weights = shutil.copytree(fake_weights, tmp_path / "weights")
    (weights / "card").mkdir()
    section = weights / "card" / "10_training.md"
    section.write_text(describes(weights, "A_crp.pt", "B_mixcut.pt") + "\n" + SECTION)
    card = render(weights)
    assert SECTION.rstrip() in card and "describes:" not in card and "Out of date" not in card
    assert capsys.readouterr().err == ""
    old_b = file_sha256(weights / "B_mixcut.pt")
    checkpoint = read_checkpoint(weights / "B_mixcut.pt")
    checkpoint["meta"]["recipe"] = "the user's own B"
    save_checkpoint(weights / "B_mixcut.pt", checkpoint)  # a member trained anew and fitted into the folder
    new_b = file_sha256(weights / "B_mixcut.pt")
    card = render(weights)
    stale = f"`B_mixcut.pt` sha256 {old_b[:12]} (now {new_b[:12]})"
    assert f"## How these classifiers were trained\n\n> **Out of date**: this section was written for {stale}" in card
    assert "`A_crp.pt`" not in card.split("Out of date")[1].split("\n")[0]  # A is unchanged: not named
    err = capsys.readouterr().err
    assert err == (
        f"warning: {section} was written for {stale}: MODEL_CARD.md marks it out of date; update the section and its "
        "describes line\n"
    )
    section.write_text(SECTION + "\n<!-- describes: A_crp.pt 0123456789ab, gone.pt 89abcdef -->\n")
    card = render(weights)
    assert "sha256 0123456789ab (now " in card and "`gone.pt` sha256 89abcdef (no such file here now)" in card
    assert card.count("Out of date") == 1 and "warning: " in capsys.readouterr().err


def test_a_card_section_naming_no_files_is_kept_as_it_is_with_a_note(tmp_path, fake_weights, capsys):
    weights = shutil.copytree(fake_weights, tmp_path / "weights")
    (weights / "card").mkdir()
    (weights / "card" / "10_training.md").write_text(SECTION)
    assert f"\n{SECTION}\n" in render(weights)
    assert "10_training.md names no files it describes" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("<!-- describes: A_crp.pt -->", r"10_training\.md:1: 'A_crp\.pt' in its describes line is not"),
        ("<!-- describes: A_crp.pt 1234 -->", "8 or more hex digits"),
        ("<!-- describes: -->", "is not `FILE SHA256-PREFIX`"),
        ("<!-- describes: A_crp.pt 12345678 -->\n<!-- describes: B_mixcut.pt 12345678 -->", "2 `<!-- describes"),
    ],
)
def test_a_malformed_describes_line_is_named(tmp_path, fake_weights, line, problem):
    weights = shutil.copytree(fake_weights, tmp_path / "weights")
    (weights / "card").mkdir()
    (weights / "card" / "10_training.md").write_text(f"{line}\n{SECTION}")
    with pytest.raises(UserInputError, match=problem):
        render(weights)


def test_the_weights_flag_says_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--weights WEIGHTS the weights folder" in help_text and "(default: weights)" in help_text


#: The files each shipped card section tells about: its describes line (the first line of the file) names them.
SHIPPED_DESCRIBES = {
    "10_training_notes.md": ("A_crp.pt", "B_mixcut.pt"),
    "20_detector.md": ("face_yolo.pt",),
    "30_robustness.md": ("A_crp.pt", "B_mixcut.pt"),
}


@pytest.mark.skipif(not shipped_weights_present(), reason="no shipped weights in weights/")
def test_the_shipped_card_is_up_to_date_with_or_without_describes_lines(tmp_path, capsys):
    assert render(SHIPPED_WEIGHTS) == (SHIPPED_WEIGHTS / "MODEL_CARD.md").read_text(encoding="utf-8")
    capsys.readouterr()
    weights = shutil.copytree(SHIPPED_WEIGHTS, tmp_path / "weights")
    for name, files in SHIPPED_DESCRIBES.items():
        section = weights / "card" / name
        text = section.read_text(encoding="utf-8")
        if "<!-- describes:" not in text:
            section.write_text(describes(weights, *files) + "\n" + text, encoding="utf-8")
    assert render(weights) == (SHIPPED_WEIGHTS / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert capsys.readouterr().err == ""  # every section checked, none out of date
