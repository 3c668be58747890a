"""`python -m fer_core.train_pair`: both members trained side by side under one deadline, then their ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fer_core import train_pair
from fer_core.checkpoint import load_classifier, read_checkpoint
from fer_core.cli import UserInputError
from tests.fer_fixtures import write_fer_folder

TINY = ["--set", "epochs=2", "--set", "batch_size=8", "--set", "stem_stride=2", "--set", "eval_batch_size=64"]


@pytest.fixture(scope="module")
def fer_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fer_folder(tmp_path_factory.mktemp("fer") / "fer", per_class=3)


def test_the_pair_trains_both_recipes_and_fits_their_ensemble(tmp_path, fer_folder):
    out = tmp_path / "pair"
    call = ["--data", str(fer_folder), "--out", str(out), *TINY, "--set", "B_mixcut.dropout=0.4"]
    train_pair.main(call)
    for name, recipe in train_pair.MEMBERS.items():
        best = load_classifier(out / name / "best.pt")
        config = best.meta["train_config"]
        assert best.name == name and config["recipe"] == recipe["recipe"] and config["seed"] == recipe["seed"]
        assert config["lr"] == train_pair.SHARED["lr"] and config["epochs"] == 2
        assert list(pd.read_csv(out / name / "history.csv")["epoch"]) == [1, 2]
    assert load_classifier(out / "B_mixcut" / "best.pt").meta["train_config"]["dropout"] == 0.4  # one member's own
    assert load_classifier(out / "A_crp" / "best.pt").meta["train_config"]["dropout"] == 0.5
    spec = json.loads((out / "weights" / "ensemble.json").read_text())
    assert [m["name"] for m in spec["models"]] == list(train_pair.MEMBERS)
    summary = json.loads((out / "pair.json").read_text())
    assert set(summary["members"]) == set(train_pair.MEMBERS)
    assert summary["ensemble"]["tta"] == spec["tta"]
    assert summary["ensemble"]["public_test_accuracy"] == spec["public_test"]["ensemble_accuracy"]

    with pytest.raises(UserInputError, match="--resume"):  # a second call would start both again: refused
        train_pair.main([*call, "--no-fit"])
    train_pair.main([*call, "--no-fit", "--resume"])
    assert list(pd.read_csv(out / "A_crp" / "history.csv")["epoch"]) == [1, 2]  # finished: nothing to add


def test_the_deadline_counts_start_up_and_cuts_both_plans(tmp_path, fer_folder):
    """A 1 s budget is spent before the first epoch (Python, torch, the data): both plans of 50 epochs are cut to
    the shortest that anneals, where a --time-budget counted from the training loop would have allowed them."""
    out = tmp_path / "pair"
    train_pair.main(
        ["--data", str(fer_folder), "--out", str(out), *TINY, "--set", "epochs=50", "--time-budget", "1", "--no-fit"]
    )
    for name in train_pair.MEMBERS:
        assert read_checkpoint(out / name / "last.pt")["training"]["config"]["epochs"] == 3
        assert json.loads((out / "pair.json").read_text())["members"][name]["epochs"] == 3


def test_a_failed_member_is_named_with_the_end_of_its_log(tmp_path, fer_folder):
    out = tmp_path / "pair"
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(UserInputError, match=r"A_crp failed \(exit 2\)") as raised:
        train_pair.main(["--data", str(fer_folder), "--out", str(out), *TINY, "--set", f"A_crp.init_from={missing}"])
    assert "nowhere.pt" in str(raised.value)  # train's own message, from the log
    assert (out / "B_mixcut" / "best.pt").is_file()  # the other member finished
    assert not (out / "weights").exists()


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], {"A_crp": {}, "B_mixcut": {}}),
        (["lr=1e-3"], {"A_crp": {"lr": 1e-3}, "B_mixcut": {"lr": 1e-3}}),  # YAML reads 1e-3 as text: typed here
        (["B_mixcut.lr=5e-4", "lr=1e-3"], {"A_crp": {"lr": 1e-3}, "B_mixcut": {"lr": 5e-4}}),  # a member's wins
        (["channels-last=false"], {"A_crp": {"channels_last": False}, "B_mixcut": {"channels_last": False}}),
    ],
)
def test_overrides_go_to_both_members_or_one(items, expected):
    assert train_pair.parse_overrides(items) == expected


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("lr", "expected KEY=VALUE"),
        ("C_other.lr=1", "no member 'C_other'"),
        ("learning_rate=1", "not a training option"),
        ("out=elsewhere", "set by the pair"),
        ("time_budget=60", "set by the pair"),
        ("epochs=two", "not a valid int"),
    ],
)
def test_bad_overrides_are_refused_by_name(item, message):
    with pytest.raises(UserInputError, match=message):
        train_pair.parse_overrides([item])


def test_an_out_of_range_option_stops_the_pair_before_any_process(tmp_path, fer_folder, monkeypatch):
    monkeypatch.setattr(train_pair, "launch", lambda *a: pytest.fail("a process was started"))
    with pytest.raises(UserInputError, match=r"A_crp: lr -1\.0 must be a positive number"):
        train_pair.main(["--data", str(fer_folder), "--out", str(tmp_path / "pair"), "--set", "lr=-1"])
    assert not (tmp_path / "pair").exists()
    with pytest.raises(SystemExit):
        train_pair.main(["--data", str(fer_folder), "--out", str(tmp_path / "pair"), "--time-budget", "0"])
