"""Robustness perturbations (deterministic, shape-preserving, doing what they say) and the CLI end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fer_core import cli, robustness
from fer_core.data import FerSplit
from fer_core.labels import EMOTIONS
from fer_core.robustness import PERTURBATIONS, confidence_table, perturb

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def faces(n: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth random 'faces': structure at several scales, like real crops (pure noise would hide blur)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 12, 12)).astype(np.float32)
    big = np.stack([cv2.resize(b, (48, 48), interpolation=cv2.INTER_CUBIC) for b in base])
    return np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)


CASES = [(name, s) for name, p in PERTURBATIONS.items() for s in p.levels]


@pytest.mark.parametrize(("name", "strength"), CASES)
def test_perturbations_are_deterministic_and_shape_preserving(name: str, strength: float) -> None:
    images = faces()
    before = images.copy()
    first = perturb(images, name, strength, seed=0)
    assert first.shape == images.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(images, before)  # the input is not modified
    np.testing.assert_array_equal(first, perturb(images, name, strength, seed=0))
    assert not np.array_equal(first, images)
    if PERTURBATIONS[name].random:
        assert not np.array_equal(first, perturb(images, name, strength, seed=1))


@pytest.mark.parametrize(("name", "strength"), [(n, s) for n, s in CASES if not PERTURBATIONS[n].random])
def test_each_face_is_perturbed_on_its_own(name: str, strength: float) -> None:
    """A batch is many faces, not one volume: blur must not reach the next face, nor the JPEG mosaic's blocks.
    (cv2's many-channel resize, used for a batch, rounds some pixels one level away from a single face's.)"""
    images = faces()
    whole = perturb(images, name, strength, seed=0).astype(int)
    for i in range(len(images)):
        alone = perturb(images[i : i + 1], name, strength, seed=0)[0].astype(int)
        np.testing.assert_allclose(whole[i], alone, atol=1 if name == "downscale" else 0, rtol=0, err_msg=str(i))


def test_every_perturbation_has_three_increasing_strengths() -> None:
    images = faces()
    assert len(robustness.conditions()) == 1 + 3 * len(PERTURBATIONS)
    for name, p in PERTURBATIONS.items():
        change = [np.abs(perturb(images, name, s).astype(int) - images).mean() for s in p.levels]
        assert all(a < b for a, b in itertools.pairwise(change)), (name, change)  # strictly: no level ignored


def test_brightness_and_contrast_maths() -> None:
    images = np.full((50, 48, 48), 128, np.uint8)
    shifted = perturb(images, "brightness", 40)
    assert set(np.unique(shifted)) == {88, 168}  # each image moved by exactly +-40, both signs drawn
    assert all(len(np.unique(image)) == 1 for image in shifted)
    ramp = np.tile(np.linspace(28, 228, 48, dtype=np.float32), (48, 1))[None].astype(np.uint8)
    flat = perturb(ramp, "contrast", 0.5).astype(np.float32)
    assert flat.mean() == pytest.approx(ramp.mean(), abs=1)
    assert flat.std() == pytest.approx(0.5 * ramp.std(), rel=0.02)


def test_rotation_geometry() -> None:
    images = faces(8)
    np.testing.assert_array_equal(robustness.rotation(images, 0.0, np.random.default_rng(0)), images)
    turned = robustness.rotation(images, 90.0, np.random.default_rng(0))
    for image, out in zip(images, turned, strict=True):
        assert np.array_equal(out, np.rot90(image, 1)) or np.array_equal(out, np.rot90(image, -1))


def test_occlusion_erases_the_requested_area() -> None:
    images = np.zeros((200, 48, 48), np.uint8)
    erased = perturb(images, "occlusion", 0.2)
    share = (erased != 0).mean()
    assert share == pytest.approx(0.2 * 255 / 256, abs=0.02)  # noise hits 0 one time in 256


def test_jpeg_mosaic_matches_per_image_coding() -> None:
    images = faces(23)
    out = perturb(images, "jpeg", 20)
    for image, coded in zip(images, out, strict=True):
        _, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 20])
        np.testing.assert_array_equal(coded, cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE))
    odd = faces(3)[:, :45, :47]  # sides not multiples of 8: coded one by one
    assert perturb(np.ascontiguousarray(odd), "jpeg", 20).shape == (3, 45, 47)


def test_downscale_over_many_images_matches_per_image_resizing() -> None:
    images = np.random.default_rng(3).integers(0, 256, (600, 48, 48), dtype=np.uint8)  # > 512: chunked
    out = perturb(images, "downscale", 3)
    for i in (0, 511, 512, 599):
        small = cv2.resize(images[i], (16, 16), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(out[i], cv2.resize(small, (48, 48), interpolation=cv2.INTER_LINEAR))


def test_bad_inputs_rejected() -> None:
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(faces(2), "fog", 1.0)
    with pytest.raises(ValueError, match="uint8"):
        perturb(faces(2).astype(np.float32), "blur", 1.0)
    assert perturb(np.zeros((0, 48, 48), np.uint8), "jpeg", 20).shape == (0, 48, 48)


def test_confidence_table_coverage_and_accuracy() -> None:
    # confidences 0.95 (right), 0.75 (wrong), 0.55 (right), 0.35 (wrong)
    probs = np.full((4, 7), 0.0)
    for i, (c, cls) in enumerate([(0.95, 0), (0.75, 1), (0.55, 2), (0.35, 3)]):
        probs[i] = (1 - c) / 6
        probs[i, cls] = c
    labels = np.array([0, 2, 2, 0])
    table = confidence_table({"ensemble": probs}, labels).set_index("threshold")
    assert list(table.index) == pytest.approx([0.1 * i for i in range(10)])
    assert table.loc[0.0, "coverage"] == 1.0 and table.loc[0.0, "accuracy_kept"] == 0.5
    assert table.loc[0.5, "coverage"] == 0.75 and table.loc[0.5, "accuracy_kept"] == pytest.approx(2 / 3)
    assert table.loc[0.9, "coverage"] == 0.25 and table.loc[0.9, "abstention_rate"] == 0.75
    assert table.loc[0.9, "accuracy_kept"] == 1.0
    assert table.loc[0.7, "bucket_n"] == 1 and table.loc[0.7, "bucket_accuracy"] == 0.0
    assert table["bucket_n"].sum() == 4
    assert np.isnan(table.loc[0.0, "bucket_accuracy"])  # nothing below 1/7 confidence


def write_fer_csv(path: Path, n: int = 20) -> Path:
    images = faces(n, seed=5)
    rows = [
        {"emotion": i % len(EMOTIONS), "pixels": " ".join(map(str, image.ravel())), "Usage": "PrivateTest"}
        for i, image in enumerate(images)
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


class BrightnessAndContrastModel:
    """Labels a face by its mean brightness (A) and its contrast (B): any perturbation that moves pixels moves them."""

    def predict_batch(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        flat = batch.reshape(len(batch), -1).astype(float)
        by_mean = np.eye(7)[np.minimum(flat.mean(1) / 256 * 7, 6).astype(int)]
        by_std = np.eye(7)[np.minimum(flat.std(1) / 64 * 7, 6).astype(int)]
        return {"ensemble": (2 * by_mean + by_std) / 3, "A_crp": by_mean, "B_mixcut": by_std}


def test_each_row_is_the_accuracy_on_its_own_condition() -> None:
    images = faces(64)
    model = BrightnessAndContrastModel()
    labels = model.predict_batch(images[:, None])["ensemble"].argmax(1)  # clean: all right; perturbed: some not
    split = FerSplit("PrivateTest", images, labels, ())
    table, _ = robustness.accuracy_table(model, split, seed=3, progress=False)  # type: ignore[arg-type]
    assert table["accuracy"].nunique() > 5  # the conditions really differ for this model
    for row in table.itertuples():
        strength = PERTURBATIONS[row.perturbation].levels[row.level - 1] if row.level else 0.0
        seen = images if not row.level else perturb(images, row.perturbation, strength, seed=3)
        probs = model.predict_batch(seen[:, None])[row.model]
        assert row.accuracy == pytest.approx((probs.argmax(1) == labels).mean()), row


def test_cli_end_to_end(fake_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_fer_csv(tmp_path / "fer.csv")
    with data.open("a") as handle:
        handle.write("3,1 2 3,PrivateTest\n")  # too few pixels: --skip-bad leaves it out, and the report says so
    out = tmp_path / "report"
    robustness.main(
        [
            "--skip-bad",
            "--data",
            str(data),
            "--out",
            str(out),
            "--weights",
            str(fake_weights),
            "--runtime",
            "torch",
            "--limit",
            "12",
            "--seed",
            "3",
        ]
    )
    table = pd.read_csv(out / "robustness.csv")
    models = {"A_crp", "B_mixcut", "ensemble"}
    assert set(table["model"]) == models
    assert len(table) == len(models) * (1 + 3 * len(PERTURBATIONS))
    assert table["accuracy"].between(0, 1).all() and (table["n"] == 12).all()
    report = json.loads((out / "robustness.json").read_text())
    assert report["n"] == 12 and report["seed"] == 3 and set(report["accuracy"]) == models
    assert report["skipped"] == 1
    assert all(len(report["accuracy"]["ensemble"][name]) == 3 for name in PERTURBATIONS)
    conf = pd.read_csv(out / "confidence.csv")
    assert len(conf) == len(models) * 10 and conf["coverage"].iloc[0] == 1.0
    assert (out / "robustness.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "| Perturbation | Setting | A_crp | B_mixcut | ensemble |" in printed
    assert "| occlusion | 35% erased |" in printed and "Accuracy on kept" in printed


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--limit", "-1"], "--limit at least 0"),
        (["--seed", "-1"], "argument --seed: -1: must be a whole number from 0 to 4294967295"),
        (["--out", "A_FILE"], "exists and is not a folder"),
        ([], "robustness.png is a folder; the results need those names"),  # found after all the work
    ],
)
def test_cli_refuses_bad_options_before_the_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], problem: str
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    (tmp_path / "out" / "robustness.png").mkdir(parents=True)
    args = ["--data", str(tmp_path / "no_data"), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_:  # before the (missing) data is even looked at
        cli.run(lambda: robustness.main([*args, *[str(a_file) if e == "A_FILE" else e for e in extra]]))
    assert exit_.value.code == 2 and problem in capsys.readouterr().err
