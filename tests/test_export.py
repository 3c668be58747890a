"""ONNX export matches PyTorch and is what the CPU runtime uses."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from skimage import data as skdata

from fer_core import cli, export, onnx_session
from fer_core.checkpoint import load_classifier
from fer_core.classifier import EmotionClassifier, OnnxRuntime
from fer_core.detection import import_ultralytics
from fer_core.ensemble import write_spec
from fer_core.export import (
    MAX_BOX_DIFF_PX,
    MAX_PROB_DIFF,
    MAX_SCORE_DIFF,
    cache_dir,
    classifier_onnx_path,
    detector_onnx_path,
    detector_output_difference,
    export_classifier,
    export_detector,
    file_sha256,
    max_prob_difference,
)
from fer_core.export import main as export_main
from fer_core.untrained_yolo import build_untrained_yolo
from fer_core.yolo_onnx import OnnxYolo, letterbox
from tests.conftest import make_classifier_checkpoint


def test_onnx_probabilities_match_torch(fake_weights):
    loaded = load_classifier(fake_weights / "A_crp.pt")
    onnx_path = classifier_onnx_path(loaded)
    assert onnx_path.exists()
    assert max_prob_difference(loaded, onnx_path, loaded.config, n=32) <= MAX_PROB_DIFF


def test_a_member_retrained_in_place_is_served_from_its_own_onnx_file(tmp_path):
    """The ONNX cache is keyed by the checkpoint's bytes, not its name: a new A_crp.pt must not reuse the old
    export (on a CPU onnxruntime is the default, so the app would classify with the replaced weights)."""
    path = tmp_path / "A_crp.pt"
    crops = [np.random.default_rng(i).integers(0, 256, size=(48, 48), dtype=np.uint8) for i in range(4)]
    make_classifier_checkpoint(path, "A_crp", seed=0)
    before = EmotionClassifier.load(path).predict(crops)
    make_classifier_checkpoint(path, "A_crp", seed=1)
    after, eager = (
        EmotionClassifier.load(path).predict(crops),
        EmotionClassifier.load(path, runtime="torch").predict(crops),
    )
    np.testing.assert_allclose(after, eager, atol=MAX_PROB_DIFF)
    assert np.abs(after - before).max() > 10 * MAX_PROB_DIFF


def test_auto_runtime_is_onnxruntime_on_cpu_and_agrees(fake_weights):
    fast = EmotionClassifier.load(fake_weights / "B_mixcut.pt")
    eager = EmotionClassifier.load(fake_weights / "B_mixcut.pt", runtime="torch")
    assert fast.runtime_name == "onnxruntime" and eager.runtime_name == "torch"
    crops = [np.random.default_rng(i).integers(0, 256, size=(60 + i, 50, 3), dtype=np.uint8) for i in range(4)]
    np.testing.assert_allclose(fast.predict(crops), eager.predict(crops), atol=MAX_PROB_DIFF)


def test_sessions_stop_spinning_when_a_run_returns(fake_weights):
    """Three sessions take turns per frame: spinning threads of one would starve the next (see cpu_session)."""
    session = cast(OnnxRuntime, EmotionClassifier.load(fake_weights / "A_crp.pt").runtime).session  # auto on a CPU
    assert session.get_session_options().get_session_config_entry(onnx_session.STOP_SPINNING_KEY) == "1"


@pytest.fixture(scope="module")
def stand_in_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained one-class YOLO11n whose outputs depend on the image (see `build_untrained_yolo`)."""
    return build_untrained_yolo(tmp_path_factory.mktemp("yolo") / "face_yolo.pt", images=[skdata.astronaut()])


def test_two_exports_of_one_checkpoint_at_once_both_succeed(
    fake_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app and a CLI can export the same checkpoint into the shared cache at the same moment."""
    loaded = load_classifier(fake_weights / "A_crp.pt")
    target = tmp_path / "onnx" / "A_crp.onnx"
    started: list[bool]
    finished_meanwhile: list[Path]
    real_export, started, finished_meanwhile = torch.onnx.export, [], []

    def export_while_another_process_exports(*args: Any, **kwargs: Any) -> None:
        real_export(*args, **kwargs)
        if not started:
            started.append(True)
            finished_meanwhile.append(export_classifier(loaded, target))

    monkeypatch.setattr(torch.onnx, "export", export_while_another_process_exports)
    assert export_classifier(loaded, target) == target
    assert finished_meanwhile == [target]
    assert [path.name for path in target.parent.iterdir()] == ["A_crp.onnx"]  # no scratch file left behind
    assert max_prob_difference(loaded, target, loaded.config) <= MAX_PROB_DIFF


def test_detector_onnx_raw_outputs_match_torch(stand_in_detector: Path, tmp_path: Path) -> None:
    onnx_path = export_detector(stand_in_detector, tmp_path / "face.onnx", imgsz=320)
    box_diff, score_diff = detector_output_difference(stand_in_detector, onnx_path, 320)
    assert box_diff <= MAX_BOX_DIFF_PX and score_diff <= MAX_SCORE_DIFF
    # Also on a real photo, square and letterboxed to 3:4, through the runtime's own preprocessing.
    net = import_ultralytics().YOLO(str(stand_in_detector)).model.float().eval()
    session = OnnxYolo(onnx_path)
    assert session.names == {0: "face"} and session.stride == 32
    photo = skdata.astronaut()
    for image, cells in ((photo, 40 * 40 + 20 * 20 + 10 * 10), (photo[56:456], 40 * 32 + 20 * 16 + 10 * 8)):
        blob, _ = letterbox(np.ascontiguousarray(image), 320)
        got = session.raw(blob)
        with torch.inference_mode():
            expected = net(torch.from_numpy(blob))[0].numpy()
        assert got.shape == expected.shape == (1, 5, cells)  # cx, cy, w, h, face score per anchor
        assert np.abs(got[:, :4] - expected[:, :4]).max() <= MAX_BOX_DIFF_PX
        assert np.abs(got[:, 4] - expected[:, 4]).max() <= MAX_SCORE_DIFF
        assert expected[:, 4].std() > 0.01  # outputs vary across anchors: the comparison is not of constants


def test_detector_export_is_cached_by_content_and_size(stand_in_detector: Path) -> None:
    first = detector_onnx_path(stand_in_detector, 160)
    stamp = first.stat().st_mtime_ns
    assert detector_onnx_path(stand_in_detector, 160) == first and first.stat().st_mtime_ns == stamp
    assert file_sha256(stand_in_detector)[:16] in first.name and first.name.endswith("-160.onnx")
    assert first.parent == cache_dir() / "onnx"
    assert not list(first.parent.glob(".export-*"))  # the scratch folder is gone


def test_export_cli_covers_classifiers_and_detector(
    fake_weights: Path, stand_in_detector: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "weights"  # one classifier keeps the test fast; the loop over members is trivial
    weights.mkdir()
    shutil.copy(fake_weights / "A_crp.pt", weights)
    write_spec(weights / "ensemble.json", {"models": [{"name": "A_crp", "file": "A_crp.pt", "weight": 1.0}]})
    out = tmp_path / "onnx"
    export_main(["--weights", str(weights), "--detector", str(stand_in_detector), "--imgsz", "160", "--out", str(out)])
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"A_crp", "face_yolo@160"}
    assert report["A_crp"]["max_prob_diff"] <= MAX_PROB_DIFF
    assert report["face_yolo@160"]["max_box_diff_px"] <= MAX_BOX_DIFF_PX
    assert report["face_yolo@160"]["max_score_diff"] <= MAX_SCORE_DIFF
    assert (out / "face_yolo-160.onnx").is_file() and (out / "A_crp.onnx").is_file()
    assert (out / "A_crp.onnx").stat().st_mode & 0o777 == 0o644  # mkstemp's 0600: unreadable to other users
    export_main(["--weights", str(weights)])  # no face_yolo.pt there: classifiers only, and it says so
    assert "skipped" in json.loads(capsys.readouterr().out)["face_detector"]


def test_export_checks_the_detector_and_out_before_the_first_export(
    fake_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing --detector was named only after the classifiers were exported into --out; a folder in the place
    of an .onnx file failed at its export; and an --out that mkdir cannot make (under /sys or /proc, where os.access
    lets root past the up-front check) was a PermissionError traceback."""
    monkeypatch.setattr(export, "export_classifier", lambda *args: pytest.fail("exported before the checks"))
    out = tmp_path / "onnx"
    missing = tmp_path / "no_detector.pt"
    base = ["--weights", str(fake_weights), "--out", str(out)]
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: export_main([*base, "--detector", str(missing)]))
    # no usage line first: a missing input file is one `error:` line in every tool (argparse's came with one)
    assert done.value.code == 2 and capsys.readouterr().err == f"error: {missing}: no such detector checkpoint\n"
    assert not out.exists()
    (out / "B_mixcut.onnx").mkdir(parents=True)
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: export_main(base))
    err = capsys.readouterr().err
    assert (
        done.value.code == 2 and err == f"error: --out {out}: B_mixcut.onnx is a folder; the results need those names\n"
    )
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here for a folder mkdir cannot make")
    monkeypatch.setattr(cli.os, "access", lambda path, mode: True)  # as for root, whom it lets write anywhere
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: export_main(["--weights", str(fake_weights), "--out", "/proc/fer_core_onnx"]))
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith("error: --out /proc/fer_core_onnx: cannot create the output folder")
    assert err.count("\n") == 1


def test_the_onnx_cache_is_keyed_on_the_bytes_the_network_was_built_from(tmp_path):
    """The cache key hashed the file on disk after the model was built: a fit replacing the file in between filed
    the old network's graph under the new file's hash, and onnxruntime ran the old network until the cache went."""
    path = make_classifier_checkpoint(tmp_path / "A_crp.pt", "A_crp", seed=0)
    built_from = file_sha256(path)
    loaded = load_classifier(path)
    make_classifier_checkpoint(path, "A_crp", seed=1)  # replaced before the export was asked for
    assert loaded.sha256 == built_from
    assert classifier_onnx_path(loaded).name == f"A_crp-{built_from[:16]}.onnx"
    crops = [np.random.default_rng(i).integers(0, 256, size=(48, 48), dtype=np.uint8) for i in range(4)]
    np.testing.assert_allclose(
        EmotionClassifier.load(path).predict(crops),
        EmotionClassifier.load(path, runtime="torch").predict(crops),
        atol=MAX_PROB_DIFF,
    )


def test_an_unwritable_cache_costs_speed_not_the_models(tmp_path, monkeypatch):
    """A read-only cache folder stopped the classifiers loading with a bare FileNotFoundError."""
    path = make_classifier_checkpoint(tmp_path / "A_crp.pt", "A_crp", seed=0)
    monkeypatch.setenv("FER_CACHE_DIR", "/proc/fer_cache")  # cannot be created, even by root
    with pytest.warns(RuntimeWarning, match="cannot write its ONNX export under /proc/fer_cache"):
        member = EmotionClassifier.load(path)
    assert member.runtime_name == "torch" and "running it on PyTorch instead" in member.runtime_warning
    with pytest.raises(cli.UserInputError, match="set FER_CACHE_DIR to a writable folder"):
        EmotionClassifier.load(path, runtime="onnxruntime")


def test_a_damaged_cached_export_is_exported_again_once(tmp_path, monkeypatch, caplog):
    """A cached export cut short (a full disk, a copy) was an InvalidProtobuf traceback on every run until the user
    found and deleted the cache; a fresh export that does not load either is one clear error."""
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    path = make_classifier_checkpoint(tmp_path / "A_crp.pt", "A_crp", seed=0)
    cached = classifier_onnx_path(load_classifier(path))
    os.truncate(cached, cached.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="fer_core.export"):
        member = EmotionClassifier.load(path)
    assert f"{cached}: onnxruntime cannot load this ONNX file (InvalidProtobuf" in caplog.text
    assert "exporting" in caplog.text and member.runtime_name == "onnxruntime"
    crops = [np.random.default_rng(i).integers(0, 256, size=(48, 48), dtype=np.uint8) for i in range(4)]
    eager = EmotionClassifier.load(path, runtime="torch").predict(crops)
    np.testing.assert_allclose(member.predict(crops), eager, atol=MAX_PROB_DIFF)
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # replaced in place, no scratch file left
    os.truncate(cached, 1000)
    monkeypatch.setattr(export, "export_classifier", lambda loaded, out: out.write_bytes(b"not onnx"))
    with pytest.raises(onnx_session.OnnxLoadError, match=r"A_crp\.pt: its fresh ONNX export does not load either"):
        EmotionClassifier.load(path)


def test_an_empty_or_tilde_cache_setting_stays_out_of_the_working_folder(monkeypatch):
    monkeypatch.setenv("FER_CACHE_DIR", "")
    assert cache_dir() == Path.home() / ".cache" / "fer_core"  # was Path(""), the current folder
    monkeypatch.setenv("FER_CACHE_DIR", "~/fer_cache_test")
    assert cache_dir() == Path.home() / "fer_cache_test"  # was ./~/fer_cache_test


def test_a_cache_setting_under_a_file_is_one_error_line(tmp_path, monkeypatch):
    (tmp_path / "fer.csv").write_text("emotion,pixels\n")
    for setting in (tmp_path / "fer.csv", tmp_path / "fer.csv" / "cache"):  # the second was a traceback
        monkeypatch.setenv("FER_CACHE_DIR", str(setting))
        with pytest.raises(
            cli.UserInputError, match="the ONNX cache folder \\(FER_CACHE_DIR\\) lies at or under a file"
        ):
            cache_dir()


@pytest.mark.parametrize("size", ["0", "99999"])
def test_export_refuses_a_detector_size_under_32_or_over_4096(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], size: str
) -> None:
    """--imgsz 0 wrote face_yolo-0.onnx, checked at 32 px, with exit 0; 99999 set off an export no FaceDetector
    could use (they run at 32 to 4096 px)."""
    with pytest.raises(SystemExit) as exit_:
        export_main(["--weights", str(tmp_path), "--imgsz", "640", size])
    assert exit_.value.code == 2 and f"argument --imgsz: {size}: must be from 32 to 4096 px" in capsys.readouterr().err
