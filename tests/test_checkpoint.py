"""Checkpoint round trip and the clear errors for foreign, corrupt or mismatched files."""

from __future__ import annotations

import argparse
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from fer_core.checkpoint import (
    CheckpointError,
    build_checkpoint,
    first_sentence,
    load_classifier,
    read_checkpoint,
    save_checkpoint,
)
from fer_core.labels import EMOTIONS
from fer_core.models import ModelConfig, build_model
from tests.conftest import make_classifier_checkpoint


def untrained_checkpoint(config: ModelConfig | None = None) -> dict:
    """A checkpoint of an untrained network named "x", for a test to damage before saving it."""
    config = config or ModelConfig(stem_stride=2)
    return build_checkpoint(build_model(config), config, {"name": "x"})


def test_round_trip_gives_identical_outputs(tmp_path):
    path = make_classifier_checkpoint(tmp_path / "a.pt", "A", seed=0)
    first, second = load_classifier(path), load_classifier(path)
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(first.model(x), second.model(x))
    assert first.name == "A" and first.config.stem_stride == 2
    assert "created" in first.meta and not first.model.training


def test_garbage_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="not a fer_core classifier checkpoint"):
        load_classifier(path)
    data = tmp_path / "fer2013.csv"  # given to --init-from by mistake: "(IndexError: pop from empty list)"
    data.write_text("emotion,pixels,Usage\n0,1 2 3,Training\n")
    with pytest.raises(CheckpointError, match=r"zip archives; this file begins with b'emotion,pixe'") as refused:
        load_classifier(data)
    assert "IndexError" not in str(refused.value)
    damaged = tmp_path / "damaged.pt"  # a zip, but not torch's: torch's own words, on one line
    with zipfile.ZipFile(damaged, "w") as archive:
        archive.writestr("x.txt", "not a tensor")
    with pytest.raises(CheckpointError, match="not a readable fer_core classifier checkpoint"):
        load_classifier(damaged)
    foreign = tmp_path / "foreign.pt"
    torch.save(argparse.Namespace(weights=1), foreign)  # a pickle weights_only refuses: torch's text is 7 lines
    with pytest.raises(CheckpointError) as refused:
        load_classifier(foreign)
    assert "\n" not in str(refused.value) and "weights_only=False" not in str(refused.value)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_classifier(tmp_path / "missing.pt")


def test_a_truncated_checkpoint_is_called_damaged_not_foreign(tmp_path: Path) -> None:
    """The first 100 kB of a real checkpoint was "not a fer_core classifier checkpoint (those are torch.save zip
    archives; this file begins with b'PK\\x03\\x04...')": it does begin like one; it is cut short."""
    whole = make_classifier_checkpoint(tmp_path / "whole.pt", "A", seed=0)
    for size in (100_000, whole.stat().st_size - 1):
        truncated = tmp_path / f"cut_{size}.pt"
        truncated.write_bytes(whole.read_bytes()[:size])
        with pytest.raises(CheckpointError) as refused:
            load_classifier(truncated)
        message = str(refused.value)
        assert message.startswith(f"{truncated}: looks like a torch.save archive but cannot be read (damaged or ")
        assert "truncated?: PytorchStreamReader failed reading zip archive" in message
        assert "not a fer_core" not in message and "\n" not in message


def test_foreign_torch_file_is_rejected(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a fer_core classifier checkpoint"):
        load_classifier(path)


class Payload:
    """Unpickling it would write a file: the proof that code inside a checkpoint ran."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.write_text, (self.sentinel, "this must never run"))


def test_pickled_code_is_refused_by_weights_only(tmp_path):
    path, sentinel = tmp_path / "evil.pt", tmp_path / "ran.txt"
    torch.save({"format": "fer_core.classifier/1", "x": Payload(sentinel)}, path)  # a real checkpoint container
    with pytest.raises(CheckpointError, match="not a readable"):
        read_checkpoint(path)
    assert not sentinel.exists()


def test_class_order_mismatch_is_reported(tmp_path):
    checkpoint = untrained_checkpoint()
    checkpoint["model_config"]["class_names"] = ["happy", "sad", "angry", "fear", "disgust", "surprise", "neutral"]
    save_checkpoint(tmp_path / "x.pt", checkpoint)
    with pytest.raises(CheckpointError, match="class order"):
        load_classifier(tmp_path / "x.pt")


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    checkpoint = untrained_checkpoint()
    checkpoint["model_config"]["in_channels"] = 3
    save_checkpoint(tmp_path / "x.pt", checkpoint)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_classifier(tmp_path / "x.pt")


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda c: c.pop("mean"), r"model_config lacks \['mean'\]"),  # was filled with today's (0.5,) silently
        (
            lambda c: [c.pop(k) for k in ("class_names", "input_size")],
            r"model_config lacks \['input_size', 'class_names'\]",
        ),
        (lambda c: c.update(class_names=7), "model_config has malformed class_names=7"),  # a bare TypeError before
        (lambda c: c.update(input_size="48", std=[]), r"model_config has malformed input_size='48', std=\[\]"),
    ],
)
def test_incomplete_or_malformed_model_config_is_named(tmp_path, damage, problem):
    checkpoint = untrained_checkpoint()
    damage(checkpoint["model_config"])
    save_checkpoint(tmp_path / "x.pt", checkpoint)
    with pytest.raises(CheckpointError, match=rf"x\.pt: {problem}"):
        load_classifier(tmp_path / "x.pt")
    checkpoint["model_config"] = [1, 2]  # a bare AttributeError before
    save_checkpoint(tmp_path / "x.pt", checkpoint)
    with pytest.raises(CheckpointError, match=r"x\.pt: model_config is a list, not a mapping"):
        read_checkpoint(tmp_path / "x.pt")


def test_code_version_says_when_the_code_differs_from_its_commit(tmp_path):
    """A run trained with uncommitted changes claimed the commit's code."""
    from fer_core import __version__
    from fer_core.checkpoint import code_version

    assert code_version(tmp_path) == __version__  # not a checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "augment.py").write_text("A = 1\n")
    subprocess.run([*git, "add", "augment.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    sha = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "notes.txt").write_text("untracked: not part of the code")
    assert code_version(tmp_path) == f"{__version__}+{sha}"
    (tmp_path / "augment.py").write_text("A = 2\n")
    assert code_version(tmp_path) == f"{__version__}+{sha}.dirty"


def test_counts_and_sizes_must_be_positive_whole_numbers_and_rates_not_bools(tmp_path):
    """A config with `input_size: 0`, `num_classes: true` or `dropout: false` (YAML/JSON slips) is named, field by
    field, rather than built into a network that fails later with a shape error or trains with dropout 0."""
    checkpoint = untrained_checkpoint()
    checkpoint["model_config"].update(num_classes=True, input_size=0, dropout=False)
    save_checkpoint(tmp_path / "x.pt", checkpoint)
    malformed = r"x\.pt: model_config has malformed num_classes=True, input_size=0, dropout=False$"
    with pytest.raises(CheckpointError, match=malformed):
        read_checkpoint(tmp_path / "x.pt")


def test_a_class_count_that_disagrees_with_the_class_names_is_named(tmp_path):
    """num_classes 8 beside the 7 emotion names would build an 8-way head whose last output has no name."""
    checkpoint = untrained_checkpoint(ModelConfig(stem_stride=2, num_classes=8))
    save_checkpoint(tmp_path / "x.pt", checkpoint)
    with pytest.raises(CheckpointError, match=r"x\.pt: num_classes 8 but 7 class names"):
        load_classifier(tmp_path / "x.pt")


def test_a_checkpoint_without_meta_is_named_not_a_key_error(tmp_path):
    """The model's name and training record live in "meta": a file without it is refused on reading, by name."""
    checkpoint = untrained_checkpoint()
    del checkpoint["meta"]
    save_checkpoint(tmp_path / "x.pt", checkpoint)
    with pytest.raises(CheckpointError, match=r"x\.pt: checkpoint lacks 'meta'"):
        read_checkpoint(tmp_path / "x.pt")


def test_a_class_order_mismatch_says_which_order_is_the_file_s(tmp_path):
    """The file's order is named first and ours second: swapped, the message sent a user to fix the wrong side."""
    checkpoint = untrained_checkpoint()
    theirs = ["happy", "sad", "angry", "fear", "disgust", "surprise", "neutral"]
    checkpoint["model_config"]["class_names"] = theirs
    save_checkpoint(tmp_path / "x.pt", checkpoint)
    with pytest.raises(CheckpointError) as caught:
        load_classifier(tmp_path / "x.pt")
    assert str(caught.value).endswith(f"class order {theirs} does not match expected {list(EMOTIONS)}")


def test_first_sentence_keeps_the_first_line_up_to_its_first_full_stop():
    """torch's errors run on with advice ("... central directory. If you ...") and further lines: a damaged-file
    message quotes only the first sentence of the first line."""
    text = "failed finding central directory. If this is a file you trust, retry\nStack trace:\n  frame 0"
    assert first_sentence(text) == "failed finding central directory"
    assert first_sentence("  \n") == ""
