"""WIDER / Face Mask parsing, the YOLO conversion policy, and the detector training entry point."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from fer_core import cli, train_detector, wider_eval
from fer_core.detection import import_ultralytics
from fer_core.widerface import (
    COL_INVALID,
    AnnotationError,
    ConversionConfig,
    convert_to_yolo,
    filter_boxes,
    load_wider_sets,
    parse_voc_xml,
    parse_wider_gt,
    split_events,
    write_wider_gt,
)
from tests.conftest import make_classifier_checkpoint

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]

GT_TEXT = """\
0--Parade/0_Parade_1.jpg
3
10.5 20.0 30.0 40.0 1 0 0 0 0 0
5 5 0 12 0 0 0 0 0 0
50 50 20 20 2 1 1 1 2 3
0--Parade/0_Parade_2.jpg
0
0 0 0 0 0 0 0 0 0 0
1--Handshaking/1_Hand_1.jpg
1
1 2 3 4 0 0 0 0 0 0
"""

VOC_XML = """<annotation><folder>images</folder><filename>mask_0.jpg</filename>
<size><width>128</width><height>96</height><depth>3</depth></size>
<object><name>with_mask</name><bndbox><xmin>10.0</xmin><ymin>12</ymin><xmax>40</xmax><ymax>50</ymax></bndbox></object>
<object><name>without_mask</name><bndbox><xmin>60</xmin><ymin>20</ymin><xmax>90</xmax><ymax>60</ymax></bndbox></object>
</annotation>"""


def test_parse_wider_gt_handwritten(tmp_path: Path) -> None:
    path = tmp_path / "gt.txt"
    path.write_text(GT_TEXT)
    gt = parse_wider_gt(path)
    assert list(gt) == ["0--Parade/0_Parade_1.jpg", "0--Parade/0_Parade_2.jpg", "1--Handshaking/1_Hand_1.jpg"]
    first = gt["0--Parade/0_Parade_1.jpg"]
    assert first.shape == (3, 10)
    np.testing.assert_allclose(first[0, :4], [10.5, 20, 30, 40])
    assert first[:, COL_INVALID].tolist() == [0, 0, 1]
    assert gt["0--Parade/0_Parade_2.jpg"].shape == (0, 10)  # the placeholder zeros line is not a face
    assert gt["1--Handshaking/1_Hand_1.jpg"].shape == (1, 10)


def test_wider_gt_round_trips(tmp_path: Path) -> None:
    (tmp_path / "gt.txt").write_text(GT_TEXT)
    gt = parse_wider_gt(tmp_path / "gt.txt")
    again = parse_wider_gt(write_wider_gt(tmp_path / "copy.txt", gt))
    assert list(again) == list(gt)
    for key in gt:
        np.testing.assert_array_equal(again[key], gt[key])


@pytest.mark.parametrize(
    "text, message",
    [
        ("a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", "ends early"),
        ("a.jpg\nx\n", "face count"),
        ("a.jpg\n1\n1 2\n", "x y w h"),
        ("e/a.jpg\n1\nnan 10 30 30 0 0 0 0 0 0\n", r"gt\.txt:3: nan or inf"),  # no size test rejects a NaN
        ("e/../../../x.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n", "must be relative"),  # would write outside the dataset
        ("/abs/x.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n", "must be relative"),
    ],
)
def test_malformed_wider_gt_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "gt.txt").write_text(text)
    with pytest.raises(AnnotationError, match=message):
        parse_wider_gt(tmp_path / "gt.txt")


def test_parse_voc_xml(tmp_path: Path) -> None:
    (tmp_path / "a.xml").write_text(VOC_XML)
    ann = parse_voc_xml(tmp_path / "a.xml")
    assert (ann.filename, ann.width, ann.height) == ("mask_0.jpg", 128, 96)
    np.testing.assert_allclose(ann.boxes, [[10, 12, 40, 50], [60, 20, 90, 60]])
    assert ann.labels == ("with_mask", "without_mask")
    (tmp_path / "bad.xml").write_text("<annotation><object>")
    with pytest.raises(AnnotationError):
        parse_voc_xml(tmp_path / "bad.xml")


def test_split_events_is_seeded_disjoint_and_by_fraction() -> None:
    events = [f"{i}--Event" for i in range(10)] * 3  # repeated names: one entry per image
    train, dev = split_events(events, 0.6, seed=3)
    assert len(train) == 6 and len(dev) == 4
    assert not set(train) & set(dev) and set(train) | set(dev) == set(events)
    assert split_events(events, 0.6, seed=3) == (train, dev)
    assert split_events(events, 0.6, seed=4) != (train, dev)
    assert len(split_events(["a", "b"], 1.0)[1]) == 1  # both sides stay non-empty
    forced_train, forced_dev = split_events(events, 0.6, seed=3, force_train=["7--Event", "8--Event", "unknown"])
    assert {"7--Event", "8--Event"} <= set(forced_train) and len(forced_train) == 6 and len(forced_dev) == 4
    assert "unknown" not in forced_train


def test_filter_boxes_policy() -> None:
    # a 320-px image: everything doubles at 640 scale
    boxes = np.array(
        [
            [10, 10, 20, 20],  # kept
            [10, 10, 0, 20],  # w <= 0
            [10, 10, 3, 30],  # short side 6 px at 640 -> kept with min 5
            [10, 10, 2, 30],  # 4 px at 640 -> tiny
            [400, 10, 20, 20],  # entirely outside
            [300, 230, 40, 40],  # clipped to the image, kept
            [50, 50, 20, 20],  # flagged invalid
        ],
        dtype=float,
    )
    invalid = np.array([0, 0, 0, 0, 0, 0, 1], bool)
    kept, drops = filter_boxes(boxes, 320, 240, min_face_px=5, invalid=invalid)
    np.testing.assert_allclose(kept, [[10, 10, 30, 30], [10, 10, 13, 40], [300, 230, 320, 240]])
    assert drops == {"invalid": 1, "nonpositive": 1, "outside": 1, "tiny": 1}
    assert len(filter_boxes(boxes, 320, 240, min_face_px=0, invalid=invalid)[0]) == 4


def make_bundle(root: Path, n_val_events: int = 4) -> Path:
    """A tiny data bundle in the shared-data layout: WIDER train/val with gt and sets, plus Face Mask."""
    rng = np.random.default_rng(0)

    def image(path: Path, boxes: list[tuple[int, int, int, int]]) -> None:
        """Noise with skin-coloured ellipses where the faces are."""
        img = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        for x, y, w, h in boxes:
            cv2.ellipse(img, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, (150, 170, 200), -1)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img)

    specs = {"train": ["0--Parade"], "val": [f"{i + 1}--Event{i}" for i in range(n_val_events)]}
    for split, events in specs.items():
        gt, sets = {}, {}
        for event in events:
            for j in range(2):
                key = f"{event}/{event}_{j}.jpg"
                face = (8 + 30 * j, 20, 30, 36)
                image(root / "widerface" / split / "images" / key, [face])
                rows: list[list[float]] = [[*face, 0, 0, 0, 0, 0, 0]]
                rows.append([90, 10, 0.8, 0.8, 0, 0, 0, 0, 0, 0])  # 4 px at 640 scale: tiny
                rows.append([60, 60, 20, 20, 0, 0, 0, 1, 0, 0])  # flagged invalid
                gt[key] = np.array(rows, dtype=float)
                sets[key] = {"easy": [0], "medium": [0], "hard": [0, 1]}
        wider = root / "widerface" / split
        write_wider_gt(wider / f"wider_face_{split}_bbx_gt.txt", gt)
        if split == "val":
            (wider / "wider_eval_sets.json").write_text(json.dumps(sets))
    image(root / "facemask" / "images" / "mask_0.jpg", [(10, 12, 30, 38)])
    (root / "facemask" / "annotations").mkdir(parents=True)
    (root / "facemask" / "annotations" / "mask_0.xml").write_text(VOC_XML)
    return root


def test_convert_to_yolo(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "data")
    out = tmp_path / "yolo"
    result = convert_to_yolo(bundle, out, ConversionConfig(min_face_px=5, seed=1))

    data = yaml.safe_load(result.data_yaml.read_text())
    assert data["names"] == {0: "face"} and data["nc"] == 1
    assert Path(data["path"]) == out.resolve()
    assert len(result.train_events) == 2 and len(result.devval_events) == 2  # 60 % of 4 events
    # train: 2 WIDER-train + 4 WIDER-val (train events) + 1 facemask; val: 4 dev-val images
    assert result.images == {"train": 7, "val": 4}
    # one invalid and one tiny box in every WIDER image: 6 training images, 4 dev-val ones, counted apart
    assert {split: (counts["invalid"], counts["tiny"]) for split, counts in result.dropped.items()} == {
        "train": (6, 6),
        "val": (4, 4),
    }

    train_images = sorted(p.relative_to(out / "images" / "train").as_posix() for p in out.rglob("train/**/*.jpg"))
    assert "facemask/mask_0.jpg" in train_images
    assert sum(p.startswith("wider_train/0--Parade/") for p in train_images) == 2
    val_events = {p.parent.name for p in (out / "images" / "val").rglob("*.jpg")}
    assert val_events == set(result.devval_events)
    assert not val_events & {p.split("/")[1] for p in train_images if p.startswith("wider_val/")}
    assert all(p.is_symlink() for p in out.rglob("*.jpg"))

    label = out / "labels" / "train" / "wider_train" / "0--Parade" / "0--Parade_0.txt"
    cls, cx, cy, w, h = label.read_text().split()
    assert cls == "0"
    np.testing.assert_allclose([float(cx), float(cy), float(w), float(h)], [23 / 128, 38 / 96, 30 / 128, 36 / 96], 1e-5)
    mask_label = (out / "labels" / "train" / "facemask" / "mask_0.txt").read_text().splitlines()
    mask_boxes = [[float(v) for v in line.split()] for line in mask_label]  # VOC corners to YOLO centre/size
    expected = [[0, 25 / 128, 31 / 96, 30 / 128, 38 / 96], [0, 75 / 128, 40 / 96, 30 / 128, 40 / 96]]
    np.testing.assert_allclose(mask_boxes, expected, rtol=1e-5)

    dev_gt = parse_wider_gt(result.devval["gt"])
    assert {k.split("/")[0] for k in dev_gt} == set(result.devval_events)
    assert all(v.shape == (3, 10) for v in dev_gt.values())  # every face kept so set indices stay valid
    assert set(json.loads(result.devval["sets"].read_text())) == set(dev_gt)
    assert result.devval["images"].read_text().split() == sorted(dev_gt)

    again = convert_to_yolo(bundle, out, ConversionConfig(min_face_px=5, seed=1, copy_images=True))
    assert again.images == result.images
    assert not any(p.is_symlink() for p in out.rglob("*.jpg"))


def test_a_failed_conversion_is_never_reused_and_names_the_unreadable_image(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "data")
    out = tmp_path / "yolo"
    convert_to_yolo(bundle, out, ConversionConfig(min_face_px=5, seed=1))
    assert train_detector.dataset_usable(out)
    broken = next((bundle / "widerface" / "train" / "images").rglob("*.jpg"))
    broken.write_text("not an image")
    with pytest.raises(AnnotationError, match=f"{broken.name}: cannot read this image"):
        convert_to_yolo(bundle, out, ConversionConfig(min_face_px=5, seed=1))
    assert not train_detector.dataset_usable(out)  # the old data.yaml went first: --resume must convert again


def test_a_missing_image_stays_out_of_the_dev_val_ground_truth_and_an_empty_split_is_refused(tmp_path: Path) -> None:
    """A dev-val image not on disk was still written into the dev-val ground truth, so AP counted its faces as
    misses; a data root without images converted 'successfully' and training ended in an ultralytics traceback."""
    bundle = make_bundle(tmp_path / "data")
    first = convert_to_yolo(bundle, tmp_path / "yolo", ConversionConfig(min_face_px=5, seed=1))
    gone = sorted(parse_wider_gt(first.devval["gt"]))[0]
    (bundle / "widerface" / "val" / "images" / gone).unlink()
    result = convert_to_yolo(bundle, tmp_path / "yolo", ConversionConfig(min_face_px=5, seed=1))
    assert result.images["val"] == 3 and result.dropped["val"]["missing_image"] == 1
    dev_gt = parse_wider_gt(result.devval["gt"])
    assert gone not in dev_gt and len(dev_gt) == 3 and gone not in result.devval["images"].read_text().split()
    assert gone not in json.loads(result.devval["sets"].read_text())
    shutil.rmtree(bundle / "widerface" / "val" / "images")
    with pytest.raises(AnnotationError, match=r"no val image could be placed \(4 listed images are not on disk\)"):
        convert_to_yolo(bundle, tmp_path / "yolo", ConversionConfig(min_face_px=5, seed=1))


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_face_mask_box_that_is_not_a_finite_number_is_named(tmp_path: Path, value: str) -> None:
    """NaN passed every size filter and became 'nan' in a YOLO label; inf was clipped to the image edge."""
    path = tmp_path / "mask.xml"
    path.write_text(VOC_XML.replace("<xmin>10.0</xmin>", f"<xmin>{value}</xmin>"))
    with pytest.raises(AnnotationError, match=rf"mask\.xml: <xmin> is '{value}', not a finite number"):
        parse_voc_xml(path)


def test_two_face_mask_annotations_of_one_image_place_it_once(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "data")
    annotations = bundle / "facemask" / "annotations"
    (annotations / "mask_0_again.xml").write_text((annotations / "mask_0.xml").read_text())
    for copy_images in (False, True):  # links used to collide, copies to count the image twice
        result = convert_to_yolo(
            bundle, tmp_path / "yolo", ConversionConfig(min_face_px=5, seed=1, copy_images=copy_images)
        )
        assert result.images == {"train": 7, "val": 4} and result.dropped["train"]["duplicate_annotation"] == 1


def test_conversion_refuses_the_repo_and_foreign_folders(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "data")
    with pytest.raises(ValueError, match="inside the repository"):
        convert_to_yolo(bundle, REPO / "dataset_should_not_exist")
    assert not (REPO / "dataset_should_not_exist").exists()
    (tmp_path / "foreign" / "images").mkdir(parents=True)
    with pytest.raises(cli.UserInputError, match="not written by fer_core"):  # `error:` and exit 2 in the CLI
        convert_to_yolo(bundle, tmp_path / "foreign")
    assert (tmp_path / "foreign" / "images").is_dir()


def test_train_detector_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):  # argparse's one line, not split_events' traceback after the work folder exists
        train_detector.parse_args(["--data-root", "d", "--work", str(tmp_path), "--train-fraction", "1.5"])
    args = train_detector.parse_args(["--data-root", "d", "--work", str(tmp_path), "--epochs", "3"])
    assert args.model == "yolo11n.yaml" and args.imgsz == 640 and not args.resume
    kwargs = train_detector.train_kwargs(args, tmp_path / "data.yaml")
    assert kwargs["pretrained"] is False and kwargs["plots"] is False and kwargs["single_cls"] is True
    assert kwargs["epochs"] == 3 and kwargs["name"] == "face" and "device" not in kwargs
    assert "time" not in kwargs and "val" not in kwargs
    assert kwargs["patience"] == 0  # early stopping would select on the dev-val that AP is reported on
    (tmp_path / "run" / "weights").mkdir(parents=True)
    for name in ("best.pt", "last.pt"):
        (tmp_path / "run" / "weights" / name).write_bytes(b"")
    assert train_detector.final_weights(tmp_path / "run").name == "last.pt"
    timed = train_detector.parse_args(["--data-root", "d", "--work", str(tmp_path), "--time", "0.1", "--no-val"])
    timed_kwargs = train_detector.train_kwargs(timed, tmp_path / "data.yaml")
    assert timed_kwargs["time"] == 0.1 and timed_kwargs["val"] is False
    with pytest.raises(SystemExit):  # a bare weights name would be downloaded by ultralytics
        train_detector.parse_args(["--data-root", "d", "--work", str(tmp_path), "--model", "yolo11n.pt"])
    with pytest.raises(SystemExit):
        train_detector.parse_args(["--data-root", "d", "--work", str(REPO / "work")])
    a_file = tmp_path / "run" / "weights" / "last.pt"
    for flags, problem in (  # refused before the data is converted, not after hours of training
        (["--export-to", str(tmp_path)], "--export-to .*: give a .pt file name"),
        (["--export-to", str(tmp_path / "face.onnx")], "give a .pt file name"),
        (["--work", str(a_file)], "exists and is not a folder"),
        (["--export-to", str(a_file / "face.pt")], "is a file, not a folder"),  # failed after the training
        (["--epochs", "5", "--time", "-1"], "--time must be a positive number of hours"),  # 1 epoch, exit 0
        (["--patience", "-5"], "--patience and --workers must be at least 0"),
        (
            ["--imgsz", "99999"],
            "argument --imgsz: 99999: must be from 32 to 4096 px",
        ),  # a detector no FaceDetector would run at that size
        (["--seed", "-1"], "argument --seed: -1: must be a whole number"),  # NumPy's traceback in the conversion
        (["--seed", str(2**32)], "argument --seed: 4294967296: must be a whole number"),  # ultralytics' np.random.seed
        (["--min-face-px", "nan"], "--min-face-px must be a number of pixels"),  # then every resume was refused
        (["--model", str(make_classifier_checkpoint(tmp_path / "A.pt", "A", 0))], "one of our emotion classifiers"),
    ):
        with pytest.raises(SystemExit) as done:
            train_detector.parse_args(["--data-root", "d", "--work", str(tmp_path), *flags])
        assert done.value.code == 2 and re.search(problem, capsys.readouterr().err)


def test_train_detector_prepare_only(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "data")
    argv = ["--data-root", str(bundle), "--work", str(tmp_path / "work"), "--prepare-only"]
    assert train_detector.train(train_detector.parse_args(argv)) is None
    dataset = tmp_path / "work" / "dataset"
    assert (dataset / "data.yaml").is_file() and train_detector.dataset_usable(dataset)
    with pytest.raises(cli.UserInputError, match=r"other settings \(seed 0 -> 1\)"):  # would mix dev-val into train
        train_detector.train(train_detector.parse_args([*argv, "--resume", "--seed", "1"]))
    assert train_detector.train(train_detector.parse_args([*argv, "--resume"])) is None  # same flags: reused
    moved = tmp_path / "moved"
    (tmp_path / "work").rename(moved)  # a moved work folder must be converted again on --resume
    assert not train_detector.dataset_usable(moved / "dataset")


class _Interrupted(Exception):
    """Stands in for a GPU session ending mid-training."""


def test_training_is_interruptible_resumable_and_offline(
    tmp_path: Path, no_network: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 epochs at 64 px on 5 generated images, cut after epoch 1, resumed, then re-exported from the finished run."""
    import_ultralytics()  # first, so our offline switches precede ultralytics' import-time online probe
    import ultralytics.engine.trainer as trainer_mod

    bundle = make_bundle(tmp_path / "data", n_val_events=2)
    work, target = tmp_path / "work", tmp_path / "exported" / "face.pt"
    argv = ["--data-root", str(bundle), "--work", str(work), "--epochs", "2", "--imgsz", "64", "--batch", "4"]
    argv += ["--workers", "0", "--device", "cpu", "--export-to", str(target), "--quiet"]
    save_model = trainer_mod.BaseTrainer.save_model

    def save_then_stop(self: trainer_mod.BaseTrainer) -> None:
        save_model(self)
        raise _Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(trainer_mod.BaseTrainer, "save_model", save_then_stop)
        with pytest.raises(_Interrupted):
            train_detector.main(argv)
    assert not target.exists()
    converted = {p: p.stat().st_mtime_ns for p in (work / "dataset").rglob("*")}
    with pytest.raises(cli.UserInputError, match="--resume"):  # never silently overwrite a run
        train_detector.main([*argv, "--seed", "5"])
    assert {p: p.stat().st_mtime_ns for p in (work / "dataset").rglob("*")} == converted  # refused before rebuilding

    assert train_detector.main([*argv, "--resume"]) == 0
    results = (work / "runs" / "face" / "results.csv").read_text().splitlines()
    assert [line.split(",")[0].strip() for line in results[1:]] == ["1", "2"]  # epoch 2 continued epoch 1
    assert target.is_file() and not list(work.rglob("*.png"))  # plots=False

    target.unlink()
    assert train_detector.main([*argv, "--resume"]) == 0  # a finished run only re-exports
    assert target.is_file()
    assert no_network == []


@pytest.mark.skipif(not DATA.is_dir(), reason="shared data not available")
def test_real_wider_and_facemask_annotations_parse() -> None:
    val = parse_wider_gt(DATA / "widerface" / "val" / "wider_face_val_bbx_gt.txt")
    train = parse_wider_gt(DATA / "widerface" / "train" / "wider_face_train_bbx_gt.txt")
    assert len(val) == 2588 and len(train) == 690
    assert len({k.split("/")[0] for k in val}) == 61
    sets = json.loads((DATA / "widerface" / "val" / "wider_eval_sets.json").read_text())
    assert set(sets) == set(val)
    for key, per_set in sets.items():
        for indices in per_set.values():
            assert all(0 <= i < len(val[key]) for i in indices)
    assert all(v.shape[1] == 10 for v in val.values())
    assert any((v[:, COL_INVALID] == 1).any() for v in val.values())

    xmls = sorted((DATA / "facemask" / "annotations").glob("*.xml"))
    anns = [parse_voc_xml(p) for p in xmls]
    assert len(anns) == 853
    assert sum(len(a.boxes) for a in anns) == 4072
    assert {label for a in anns for label in a.labels} <= {"with_mask", "without_mask", "mask_weared_incorrect"}
    assert all((a.boxes[:, 2:] >= a.boxes[:, :2]).all() for a in anns)


def test_export_keeps_working_weights_when_the_new_file_does_not_load(tmp_path: Path) -> None:
    target, garbage = tmp_path / "weights" / "face_yolo.pt", tmp_path / "best.pt"
    target.parent.mkdir()
    target.write_bytes(b"the weights the app runs on")
    garbage.write_bytes(b"not a checkpoint")
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="do not load"):
        train_detector.export(garbage, target)
    assert target.read_bytes() == b"the weights the app runs on"
    assert sorted(p.name for p in target.parent.iterdir()) == ["face_yolo.pt"]  # no staging file left behind


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"e/a.jpg": [0, 1]}', "must map easy/medium/hard"),
        ('{"e/a.jpg": {"easy": [0.7]}}', "whole face indices"),  # was read as face 0
        ('{"e/a.jpg": {"easy": ["x"]}}', "whole face indices"),
        ('{"e/a.jpg": {"easy": [0]', "not valid JSON"),
        ("{}", r"sets\.json: holds no image; wider_eval_sets\.json maps each WIDER val image"),  # APs were null
    ],
)
def test_malformed_sets_file_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "sets.json").write_text(text)
    with pytest.raises(AnnotationError, match=message):
        load_wider_sets(tmp_path / "sets.json")


def test_a_missing_sets_file_is_named_with_what_it_holds(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match=r"absent\.json: no such file; .*\"easy\".*data bundle holds it"):
        load_wider_sets(tmp_path / "absent.json")


def test_without_a_sets_file_the_dev_val_split_is_unknown_not_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--prepare-only wrote `{}` without a word; wider_eval then printed three null APs with exit 0."""
    bundle = make_bundle(tmp_path / "data")
    sets_file = bundle / "widerface" / "val" / "wider_eval_sets.json"
    sets_file.unlink()
    argv = ["--data-root", str(bundle), "--work", str(tmp_path / "work"), "--prepare-only"]
    assert train_detector.train(train_detector.parse_args(argv)) is None
    err = capsys.readouterr().err
    assert f"warning: {sets_file} not found: the dev-val's easy/medium/hard split is unknown" in err
    assert "wider_eval_sets.json maps each WIDER val image" in err  # what the file holds and where it comes from
    dataset = tmp_path / "work" / "dataset"
    assert not (dataset / "devval" / "wider_eval_sets.json").exists()
    conversion = json.loads((dataset / "conversion.json").read_text())
    assert conversion["eval_sets"] == f"unknown: {sets_file} not found"
    (tmp_path / "pred" / "e").mkdir(parents=True)
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: wider_eval.main(["--gt", str(dataset / "devval"), "--pred", str(tmp_path / "pred")]))
    err = capsys.readouterr().err
    assert done.value.code == 2 and "sets file not found" in err and "wider_eval_sets.json maps each" in err


def test_a_sets_file_for_other_images_leaves_the_split_unknown_and_a_partial_one_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_bundle(tmp_path / "data")
    sets_file = bundle / "widerface" / "val" / "wider_eval_sets.json"
    sets = json.loads(sets_file.read_text())
    result = convert_to_yolo(bundle, tmp_path / "yolo", ConversionConfig(min_face_px=5, seed=1))
    assert result.eval_sets == str(sets_file) and capsys.readouterr().err == ""
    dev_keys = sorted(parse_wider_gt(result.devval["gt"]))
    sets_file.write_text(json.dumps({k: v for k, v in sets.items() if k not in dev_keys}))
    result = convert_to_yolo(bundle, tmp_path / "yolo", ConversionConfig(min_face_px=5, seed=1))
    assert result.eval_sets == f"unknown: {sets_file} names none of the dev-val images" and "sets" not in result.devval
    assert "split is unknown" in capsys.readouterr().err
    assert not (tmp_path / "yolo" / "devval" / "wider_eval_sets.json").exists()
    sets_file.write_text("{}")
    result = convert_to_yolo(bundle, tmp_path / "yolo", ConversionConfig(min_face_px=5, seed=1))
    assert result.eval_sets == f"unknown: {sets_file} holds no image" and "sets" not in result.devval
    assert f"warning: {sets_file} holds no image: the dev-val's easy/medium/hard split" in capsys.readouterr().err
    sets_file.write_text(json.dumps({k: v for k, v in sets.items() if k != dev_keys[0]}))
    result = convert_to_yolo(bundle, tmp_path / "yolo", ConversionConfig(min_face_px=5, seed=1))
    assert result.eval_sets == str(sets_file) and len(json.loads(result.devval["sets"].read_text())) == 3
    assert f"warning: 1 of 4 dev-val images have no entry in {sets_file}, e.g. {dev_keys[0]}" in capsys.readouterr().err


class _TouchesWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.marker,))


def test_run_finished_reads_the_epoch_without_unpickling_code(tmp_path: Path) -> None:
    """A run folder given to --resume is read with ultralytics' allow-list loader, never a full unpickle."""
    import torch

    import_ultralytics()
    from ultralytics.nn.tasks import torch_safe_load

    shipped = REPO / "weights" / "face_yolo.pt"
    assert train_detector.run_finished(shipped)  # a finished (stripped) run: epoch -1
    checkpoint, _ = torch_safe_load(str(shipped), safe_only=True)
    torch.save({**checkpoint, "epoch": 3}, tmp_path / "last.pt")
    assert not train_detector.run_finished(tmp_path / "last.pt")
    marker = tmp_path / "code_ran"
    torch.save({"epoch": 3, "model": _TouchesWhenUnpickled(marker)}, tmp_path / "planted.pt")
    with pytest.raises(Exception):  # noqa: B017 - whichever error torch's restricted unpickler picks
        train_detector.run_finished(tmp_path / "planted.pt")
    assert not marker.exists()
