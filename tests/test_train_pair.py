"""`python -m fer_core.train_pair`: both members trained side by side under one deadline, then their ensemble."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fer_core import train_pair
from fer_core.checkpoint import load_classifier, read_checkpoint
from fer_core.cli import UserInputError
from fer_core.data import FerDataError, load_fer2013
from tests.conftest import REPO, make_classifier_checkpoint
from tests.fer_fixtures import write_fer_csv, write_fer_folder

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
    assert summary["members"]["A_crp"]["epochs_done"] == summary["members"]["A_crp"]["epochs_planned"] == 2
    assert summary["ensemble"]["tta"] == spec["tta"]
    assert summary["ensemble"]["public_test_accuracy"] == spec["public_test"]["ensemble_accuracy"]

    with pytest.raises(UserInputError, match="--resume"):  # a second call would start both again: refused
        train_pair.main([*call, "--no-fit"])
    train_pair.main([*call, "--no-fit", "--resume"])
    assert list(pd.read_csv(out / "A_crp" / "history.csv")["epoch"]) == [1, 2]  # finished: nothing to add
    resumed = json.loads((out / "pair.json").read_text())  # the first call's time is kept, not replaced
    assert [c["resume"] for c in resumed["calls"]] == [False, True]
    assert resumed["wall_s_all_calls"] == pytest.approx(sum(c["wall_s"] for c in resumed["calls"]), abs=0.11)
    assert resumed["members"]["A_crp"]["train_s"] == summary["members"]["A_crp"]["train_s"]
    assert (out / "A_crp.log").read_text().count("=== train_pair call at") == 2  # appended, not wiped


def test_the_deadline_counts_start_up_and_cuts_both_plans(tmp_path, fer_folder):
    """A 1 s budget is spent before the first epoch (Python, torch, the data): both plans of 50 epochs are cut to
    the shortest that anneals, where a --time-budget counted from the training loop would have allowed them."""
    out = tmp_path / "pair"
    train_pair.main(
        ["--data", str(fer_folder), "--out", str(out), *TINY, "--set", "epochs=50", "--time-budget", "1", "--no-fit"]
    )
    for name in train_pair.MEMBERS:
        assert read_checkpoint(out / name / "last.pt")["training"]["config"]["epochs"] == 3
        record = json.loads((out / "pair.json").read_text())["members"][name]
        assert record["epochs_planned"] == record["epochs_done"] == 3


def test_a_failed_member_is_named_and_the_other_stopped(tmp_path, fer_folder):
    """B trained on to the deadline after A had failed at once (a refused resume), before anyone was told."""
    out = tmp_path / "pair"
    missing = tmp_path / "nowhere.pt"
    argv = ["--data", str(fer_folder), "--out", str(out), *TINY, "--set", "B_mixcut.epochs=200"]
    with pytest.raises(UserInputError, match=r"A_crp failed \(exit 2\)") as raised:
        train_pair.main([*argv, "--set", f"A_crp.init_from={missing}"])
    assert "nowhere.pt" in str(raised.value)  # train's own message, from the log
    assert f"remove {out / 'A_crp'} and run with --resume" in str(raised.value)
    assert "B_mixcut was stopped at its last finished epoch" in str(raised.value)
    assert "B_mixcut failed" not in str(raised.value)
    assert len(pd.read_csv(out / "B_mixcut" / "history.csv")) < 200  # stopped, not trained to its end
    assert not (out / "weights").exists() and not list(out.rglob(".partial.*"))


def with_a_bad_row(csv: Path) -> Path:
    """`csv` with a row of 3 pixel values inserted as its 6th line (`--set skip_bad=true` trains past it)."""
    lines = csv.read_text().splitlines()
    lines.insert(5, "4,1 2 3,PublicTest")
    csv.write_text("\n".join(lines) + "\n")
    return csv


@pytest.mark.parametrize("items", [["skip_bad=true"], ["A_crp.skip_bad=true", "B_mixcut.skip_bad=true"]])
def test_the_fit_reads_the_data_as_the_members_did(tmp_path, items):
    """With `--set skip_bad=true` both members trained past a bad row, then the fit stopped at it ("line 6: expected
    2304 pixel values"), exit 2 and no weights/, after the whole training budget. Members stand in for trained ones
    here (their best.pt made directly): the fit is what is checked."""
    csv = with_a_bad_row(write_fer_csv(tmp_path / "bad.csv", n_train=14, n_public=7, n_private=7))
    out = tmp_path / "pair"
    members = train_pair.member_configs(str(csv), out, 60.0, train_pair.parse_overrides(items))
    for seed, member in enumerate(members):
        member.run_dir.mkdir(parents=True)
        make_classifier_checkpoint(member.run_dir / "best.pt", member.name, seed)
    with pytest.raises(FerDataError, match="line 6: expected 2304 pixel values"):  # what the members would meet
        load_fer2013(csv)
    summary = train_pair.fit_pair(members, str(csv), out / "weights", "torch")
    spec = json.loads((out / "weights" / "ensemble.json").read_text())
    assert [m["name"] for m in spec["models"]] == list(train_pair.MEMBERS) and spec["skipped"] == 1
    assert summary["public_test_accuracy"] == spec["public_test"]["ensemble_accuracy"]


def test_the_fit_still_stops_at_a_bad_row_the_members_did_not_skip(tmp_path):
    """Without skip_bad the members would have stopped at the row themselves: the fit does not hide it either."""
    csv = with_a_bad_row(write_fer_csv(tmp_path / "bad.csv", n_train=14, n_public=7, n_private=7))
    out = tmp_path / "pair"
    members = train_pair.member_configs(str(csv), out, 60.0, train_pair.parse_overrides([]))
    for seed, member in enumerate(members):
        member.run_dir.mkdir(parents=True)
        make_classifier_checkpoint(member.run_dir / "best.pt", member.name, seed)
    with pytest.raises(FerDataError, match="line 6"):
        train_pair.fit_pair(members, str(csv), out / "weights", "torch")
    assert not (out / "weights" / "ensemble.json").exists()


def start_pair(out: Path, fer_folder: Path) -> subprocess.Popen:
    """A long pair in a process of its own; returns once both members have finished an epoch."""
    argv = ["--data", str(fer_folder), "--out", str(out), *TINY, "--set", "epochs=500", "--no-fit"]
    pair = subprocess.Popen([sys.executable, "-m", "fer_core.train_pair", *argv], cwd=REPO, stderr=subprocess.PIPE)
    ends = time.time() + 120
    while not all((out / name / "last.pt").is_file() for name in train_pair.MEMBERS):
        assert pair.poll() is None and time.time() < ends, pair.stderr.read().decode() if pair.stderr else ""
        time.sleep(0.5)
    return pair


def members_running(out: Path) -> list[str]:
    """Command lines of the processes still training in `out` (their --config lies there), from /proc."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended while we looked
            continue
        if "fer_core.train " in text and str(out) in text:
            found.append(text)
    return found


def members_still_training(out: Path) -> bool:
    """Whether a last.pt changes within 3 s (a tiny epoch takes well under a second)."""
    stamps = [(out / name / "last.pt").stat().st_mtime_ns for name in train_pair.MEMBERS]
    time.sleep(3)
    return stamps != [(out / name / "last.pt").stat().st_mtime_ns for name in train_pair.MEMBERS]


LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")


@pytest.mark.parametrize(
    "how", [pytest.param(signal.SIGTERM, marks=LINUX_ONLY), pytest.param(signal.SIGKILL, marks=LINUX_ONLY)]
)
def test_the_members_stop_with_the_pair_and_resume(tmp_path, fer_folder, how):
    """After a kill of the pair both members trained on, and the next --resume ran a second trainer in each
    folder. SIGTERM stops them as Ctrl-C does; even SIGKILL, which the pair cannot catch, reaches them (Linux)."""
    out = tmp_path / "pair"
    pair = start_pair(out, fer_folder)
    pair.send_signal(how)
    pair.wait(timeout=90)
    if how == signal.SIGTERM:
        assert pair.stderr is not None  # start_pair pipes it
        assert pair.returncode == 130 and b"continue with --resume" in pair.stderr.read()
    ends = time.time() + 60  # SIGKILL: the members get their SIGINT as the pair dies and finish their epoch's write
    while members_running(out) and time.time() < ends:
        time.sleep(0.5)
    assert not members_running(out)
    assert not members_still_training(out)
    assert not list(out.rglob(".partial.*"))
    done = {name: read_checkpoint(out / name / "last.pt")["training"]["epoch"] + 1 for name in train_pair.MEMBERS}
    argv = ["--data", str(fer_folder), "--out", str(out), *TINY, "--set", "epochs=500", "--no-fit", "--resume"]
    train_pair.main([*argv, "--set", "stop_after=1"])  # one more epoch each, after the last one saved
    for name, epochs in done.items():
        assert list(pd.read_csv(out / name / "history.csv")["epoch"]) == list(range(1, epochs + 2))


def test_one_pair_call_per_folder_at_a_time(tmp_path, fer_folder):
    out = tmp_path / "pair"
    out.mkdir()
    with train_pair.locked(out), pytest.raises(UserInputError, match="another train_pair call"):
        train_pair.main(["--data", str(fer_folder), "--out", str(out), *TINY])


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], {"A_crp": {}, "B_mixcut": {}}),
        (["lr=1e-3"], {"A_crp": {"lr": 1e-3}, "B_mixcut": {"lr": 1e-3}}),  # YAML reads 1e-3 as text: typed here
        (["B_mixcut.lr=5e-4", "lr=1e-3"], {"A_crp": {"lr": 1e-3}, "B_mixcut": {"lr": 5e-4}}),  # a member's wins
        (["channels-last=false"], {"A_crp": {"channels_last": False}, "B_mixcut": {"channels_last": False}}),
        (["A_crp.init_from=#1 0123.pt"], {"A_crp": {"init_from": "#1 0123.pt"}, "B_mixcut": {}}),  # text as typed
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
    for budget in ("0", "1e20"):  # 1e20 started both members, then time.ctime overflowed
        with pytest.raises(SystemExit):
            train_pair.main(["--data", str(fer_folder), "--out", str(tmp_path / "pair"), "--time-budget", budget])
