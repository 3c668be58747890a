"""WIDER evaluator: hand-computed APs, the official quirks, file layouts and the CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from fer_core import cli
from fer_core.wider_eval import (
    box_iou_xywh,
    evaluate_wider,
    image_key,
    main,
    operating_points,
    read_result_file,
    read_wider_results,
    voc_ap,
)
from fer_core.widerface import COL_INVALID, AnnotationError, load_wider_sets, parse_wider_gt, write_wider_gt

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
ALL = {"easy": [0], "medium": [0], "hard": [0]}


def gt_rows(*xywh: tuple[float, float, float, float]) -> np.ndarray:
    """Ground-truth rows with zero attributes."""
    return np.array([[*b, 0, 0, 0, 0, 0, 0] for b in xywh], dtype=np.float64).reshape(-1, 10)


def dets(*rows: tuple[float, float, float, float, float]) -> np.ndarray:
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


FACE_A = (10.0, 10.0, 40.0, 40.0)
FACE_B = (100.0, 100.0, 30.0, 30.0)
FAR = (300.0, 300.0, 20.0, 20.0)


def test_operating_points_by_hand() -> None:
    """Two faces to find, one too small for the page and one marked invalid; five boxes of known fate."""
    faces = gt_rows((0, 0, 40, 40), (100, 0, 40, 40), (200, 200, 14, 14), (300, 0, 40, 40))
    faces[3, COL_INVALID] = 1
    boxes = dets(
        (0, 0, 40, 40, 0.9),  # finds face 1
        (1, 1, 40, 40, 0.8),  # a second box on face 1: false
        (199, 199, 16, 16, 0.7),  # on the 14 px face: the page need not find it, nor is it wrong to
        (300, 0, 40, 40, 0.6),  # on the invalid face: neither
        (500, 500, 40, 40, 0.3),  # on nothing: false
        (100, 0, 10, 10, 0.95),  # under the 16 px minimum: dropped, though it lies on face 2
    )
    half, quarter = operating_points({"e/a.jpg": faces}, {"e/a": boxes}, min_face=16, thresholds=[0.5, 0.25])
    assert (half.targets, half.found, half.false) == (2, 1, 1)
    assert (quarter.targets, quarter.found, quarter.false) == (2, 1, 2)
    assert (half.precision, half.recall, half.f1) == (0.5, 0.5, 0.5)
    assert quarter.precision == pytest.approx(1 / 3) and quarter.f1 == pytest.approx(0.4)
    (capped,) = operating_points({"e/a.jpg": faces}, {"e/a": boxes}, min_face=16, thresholds=[0.5], max_faces=1)
    assert (capped.found, capped.false) == (1, 0)  # only the best box is kept
    (alone,) = operating_points({"e/a.jpg": faces}, {}, min_face=16, thresholds=[0.5])
    assert (alone.targets, alone.found, alone.false, alone.precision, alone.recall) == (2, 0, 0, 1.0, 0.0)
    (empty,) = operating_points({"e/b.jpg": gt_rows()}, {"e/b": boxes}, min_face=16, thresholds=[0.5])
    assert (empty.found, empty.false) == (0, 4)  # an image without faces: every kept box is false


def test_iou_uses_the_official_plus_one_convention() -> None:
    # identical boxes: 1; half-overlapping 10x10 boxes at x 0 and x 5: inter 6*11, union 2*121-66
    assert box_iou_xywh(dets((0, 0, 10, 10, 1))[:, :4], gt_rows((0, 0, 10, 10)))[0, 0] == pytest.approx(1.0)
    iou = box_iou_xywh(dets((5, 0, 10, 10, 1))[:, :4], gt_rows((0, 0, 10, 10)))[0, 0]
    assert iou == pytest.approx(66 / (242 - 66))
    plain = box_iou_xywh(dets((5, 0, 10, 10, 1))[:, :4], gt_rows((0, 0, 10, 10)), plus_one=False)[0, 0]
    assert plain == pytest.approx(50 / 150)
    assert box_iou_xywh(dets((*FAR, 1))[:, :4], gt_rows(FACE_A))[0, 0] == 0.0


def test_voc_ap_by_hand() -> None:
    # points (r=0.5, p=1), (r=1, p=2/3): area 0.5*1 + 0.5*2/3
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 2 / 3])) == pytest.approx(0.5 + 1 / 3)
    # a later higher precision lifts the envelope of earlier recall levels
    assert voc_ap(np.array([0.5, 1.0]), np.array([0.5, 1.0])) == pytest.approx(1.0)


def test_perfect_detections_give_ap_one() -> None:
    gt = {"e/a.jpg": gt_rows(FACE_A, FACE_B), "e/b.jpg": gt_rows(FAR)}
    sets = {"e/a.jpg": {"easy": [0, 1], "medium": [0, 1], "hard": [0, 1]}, "e/b.jpg": ALL}
    preds = {"e/a": dets((*FACE_A, 0.9), (*FACE_B, 0.6)), "e/b": dets((*FAR, 0.7))}
    assert evaluate_wider(gt, preds, sets) == pytest.approx({"easy": 1.0, "medium": 1.0, "hard": 1.0})


def test_one_false_positive_above_the_true_positive_halves_ap() -> None:
    # normalised scores: FP -> 1.0, TP -> 0.0. For every threshold > 0 only the FP passes (P=0, R=0);
    # at threshold 0 both pass (P=1/2, R=1). AP = 1 * 1/2.
    gt, sets = {"e/a.jpg": gt_rows(FACE_A)}, {"e/a.jpg": ALL}
    preds = {"e/a": dets((*FAR, 0.9), (*FACE_A, 0.8))}
    assert evaluate_wider(gt, preds, sets)["hard"] == pytest.approx(0.5)


def test_three_detections_by_hand() -> None:
    # TP 0.9 -> 1.0, FP 0.8 -> 0.5, TP 0.7 -> 0.0 after normalisation, 2 faces:
    # thresholds in (0.5, 1): P=1, R=1/2; (0, 0.5]: P=1/2, R=1/2; 0: P=2/3, R=1 -> AP = 1/2*1 + 1/2*2/3
    gt = {"e/a.jpg": gt_rows(FACE_A, FACE_B)}
    sets = {"e/a.jpg": {"easy": [0, 1], "medium": [0, 1], "hard": [0, 1]}}
    preds = {"e/a.jpg": dets((*FACE_A, 0.9), (*FAR, 0.8), (*FACE_B, 0.7))}
    assert evaluate_wider(gt, preds, sets)["medium"] == pytest.approx(0.5 + 1 / 3)


def test_detection_on_an_ignored_face_is_neither_tp_nor_fp() -> None:
    # face 1 (B) is outside every set: its detection (score 0.9) must not count as a FP above the TP on A.
    gt = {"e/a.jpg": gt_rows(FACE_A, FACE_B)}
    preds = {"e/a": dets((*FACE_B, 0.9), (*FACE_A, 0.5))}
    ignored = {"e/a.jpg": {"easy": [0], "medium": [0], "hard": [0, 1]}}
    aps = evaluate_wider(gt, preds, ignored)
    assert aps["easy"] == pytest.approx(1.0)
    assert aps["medium"] == pytest.approx(1.0)
    assert aps["hard"] == pytest.approx(1.0)  # both faces count, both found
    # if B counted but were missed by a low detection instead, precision would fall: FP check on a far box
    far = {"e/a": dets((*FAR, 0.9), (*FACE_A, 0.5))}
    assert evaluate_wider(gt, far, ignored)["easy"] == pytest.approx(0.5)


def test_empty_predictions_give_zero_and_missing_faces_lower_recall() -> None:
    gt, sets = {"e/a.jpg": gt_rows(FACE_A), "e/b.jpg": gt_rows(FACE_B)}, {"e/a.jpg": ALL, "e/b.jpg": ALL}
    assert evaluate_wider(gt, {}, sets) == {"easy": 0.0, "medium": 0.0, "hard": 0.0}
    assert evaluate_wider(gt, {"e/a": dets()}, sets)["easy"] == 0.0
    # one of two faces found with perfect precision: AP = 1/2
    assert evaluate_wider(gt, {"e/a": dets((*FACE_A, 0.3))}, sets)["easy"] == pytest.approx(0.5)


def test_duplicates_count_as_proposals() -> None:
    # a duplicate below the TP lowers precision only after recall 1 is reached (P=1 at R=1 first): AP stays 1
    gt, sets = {"e/a.jpg": gt_rows(FACE_A)}, {"e/a.jpg": ALL}
    assert evaluate_wider(gt, {"e/a": dets((*FACE_A, 0.9), (*FACE_A, 0.1))}, sets)["easy"] == pytest.approx(1.0)
    # FP 0.9 (-> 1), TP 0.5 (-> 0.5), duplicate 0.1 (-> 0): recall 1 first reached with P=1/2; AP = 1/2
    triple = dets((*FAR, 0.9), (*FACE_A, 0.5), (*FACE_A, 0.1))
    assert evaluate_wider(gt, {"e/a": triple}, sets)["easy"] == pytest.approx(0.5)


def test_images_without_faces_do_not_add_false_positives() -> None:
    gt = {"e/a.jpg": gt_rows(FACE_A), "e/empty.jpg": gt_rows()}
    sets: dict[str, dict[str, list[int]]] = {"e/a.jpg": ALL, "e/empty.jpg": {"easy": [], "medium": [], "hard": []}}
    preds = {"e/a": dets((*FACE_A, 0.5)), "e/empty": dets((*FAR, 0.99))}
    assert evaluate_wider(gt, preds, sets)["easy"] == pytest.approx(1.0)


def test_scores_are_normalised_so_their_scale_does_not_matter() -> None:
    gt = {"e/a.jpg": gt_rows(FACE_A, FACE_B)}
    sets = {"e/a.jpg": {"easy": [0, 1], "medium": [0, 1], "hard": [0, 1]}}
    base = dets((*FACE_A, 0.9), (*FAR, 0.8), (*FACE_B, 0.7))
    scaled = base.copy()
    scaled[:, 4] = scaled[:, 4] * 50 + 3
    assert evaluate_wider(gt, {"e/a": scaled}, sets) == pytest.approx(evaluate_wider(gt, {"e/a": base}, sets))


def _official_loop(gt: dict, preds: dict, sets: dict, name: str) -> float:
    """A literal, loop-by-loop transcription of the official algorithm, as an oracle for the vectorised code."""
    lo, hi = 1.0, 0.0
    for p in preds.values():
        if len(p):
            lo, hi = min(lo, p[:, 4].min()), max(hi, p[:, 4].max())
    pr, faces = np.zeros((1000, 2)), 0
    for key, g in gt.items():
        keep = sets[key][name]
        faces += len(keep)
        p = preds.get(image_key(key), np.zeros((0, 5))).copy()
        if len(g) == 0 or len(p) == 0:
            continue
        p[:, 4] = (p[:, 4] - lo) / (hi - lo)
        p = p[np.argsort(-p[:, 4], kind="stable")]
        recall_list, proposal, pred_recall = np.zeros(len(g)), np.ones(len(p)), np.zeros(len(p))
        for h in range(len(p)):
            overlaps = box_iou_xywh(p[h : h + 1, :4], g)[0]
            idx = int(np.argmax(overlaps))
            if overlaps[idx] >= 0.5:
                if idx not in keep:
                    recall_list[idx], proposal[h] = -1, -1
                elif recall_list[idx] == 0:
                    recall_list[idx] = 1
            pred_recall[h] = (recall_list == 1).sum()
        for t in range(1000):
            above = np.flatnonzero(p[:, 4] >= 1 - (t + 1) / 1000)
            if len(above):
                pr[t] += [(proposal[: above[-1] + 1] == 1).sum(), pred_recall[above[-1]]]
    precision = np.divide(pr[:, 1], pr[:, 0], out=np.zeros(1000), where=pr[:, 0] > 0)
    return voc_ap(pr[:, 1] / faces, precision)


def test_vectorised_evaluator_matches_a_loop_transcription_on_random_cases() -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        gt, preds, sets = {}, {}, {}
        for i in range(12):
            key, n = f"ev{i % 3}/img{i}.jpg", int(rng.integers(0, 6))
            boxes = np.c_[rng.uniform(0, 200, (n, 2)), rng.uniform(8, 50, (n, 2))]
            gt[key] = gt_rows(*map(tuple, boxes))
            sets[key] = {s: sorted(rng.choice(n, int(rng.integers(0, n + 1)), replace=False).tolist()) for s in ALL}
            m = int(rng.integers(0, 8))
            near = boxes[rng.integers(0, n, m)] + rng.normal(0, 2, (m, 4)) if n else rng.uniform(8, 200, (m, 4))
            near[:, 2:] = np.abs(near[:, 2:]) + 1
            preds[image_key(key)] = np.c_[near, rng.random(m) * 2]
        ours = evaluate_wider(gt, preds, sets)
        for name in ALL:
            assert ours[name] == pytest.approx(_official_loop(gt, preds, sets, name), abs=1e-12)


def test_result_files_in_the_official_layout(tmp_path: Path) -> None:
    event = tmp_path / "0--Parade"
    event.mkdir()
    (event / "a.txt").write_text("a\n2\n1 2 3 4 0.9\n5.5 6 7 8 0.1\n\n")
    (event / "b.txt").write_text("b\n0\n")
    got = read_wider_results(tmp_path)
    assert set(got) == {"0--Parade/a", "0--Parade/b"}
    np.testing.assert_allclose(got["0--Parade/a"], [[1, 2, 3, 4, 0.9], [5.5, 6, 7, 8, 0.1]])
    assert got["0--Parade/b"].shape == (0, 5)
    (event / "bad.txt").write_text("bad\n1\n1 2 3\n")
    with pytest.raises(AnnotationError, match=r"bad\.txt:3"):  # a user's file: one error line, not a traceback
        read_result_file(event / "bad.txt")
    (event / "nocount.txt").write_text("nocount\n10 10 40 40 0.9\n12 12 40 40 0.5\n")  # lost its first box
    with pytest.raises(AnnotationError, match=r"nocount\.txt:2: expected the number of detections"):
        read_result_file(event / "nocount.txt")
    (event / "short.txt").write_text("short\n5\n10 10 40 40 0.9\n")
    with pytest.raises(AnnotationError, match=r"short\.txt:2: announces 5 detections but has 1"):
        read_result_file(event / "short.txt")


def test_cli_prints_json_and_honours_the_image_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = {"e1/a.jpg": gt_rows(FACE_A), "e2/b.jpg": gt_rows(FACE_B)}
    gt_file = write_wider_gt(tmp_path / "gt" / "wider_face_val_bbx_gt.txt", gt)
    (tmp_path / "gt" / "wider_eval_sets.json").write_text(json.dumps({"e1/a.jpg": ALL, "e2/b.jpg": ALL}))
    pred = tmp_path / "pred"
    (pred / "e1").mkdir(parents=True)
    (pred / "e1" / "a.txt").write_text("a\n1\n10 10 40 40 0.8\n")
    with pytest.raises(SystemExit) as done:  # as `python -m fer_core.wider_eval` runs it
        cli.run(lambda: main(["--gt", str(gt_file.parent), "--pred", str(pred)]))
    assert done.value.code == 0  # a returned dict of APs used to become exit status 1 and a second copy on stderr
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"easy": 0.5, "medium": 0.5, "hard": 0.5}
    assert captured.err == "warning: 1 evaluated images have no result file, e.g. e2/b; their faces count as missed\n"
    (tmp_path / "list.txt").write_text("# dev-val\ne1/a.jpg\n")
    main(["--gt", str(gt_file), "--pred", str(pred), "--images", str(tmp_path / "list.txt")])
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"easy": 1.0, "medium": 1.0, "hard": 1.0} and captured.err == ""
    (tmp_path / "list.txt").write_text("# nothing listed\n")  # printed three nulls, exit 0
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: main(["--gt", str(gt_file), "--pred", str(pred), "--images", str(tmp_path / "list.txt")]))
    err = capsys.readouterr().err
    assert done.value.code == 2 and "list.txt: no images to evaluate" in err and "usage:" not in err


def test_cli_operating_points_need_no_sets_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt_file = write_wider_gt(tmp_path / "gt" / "wider_face_val_bbx_gt.txt", {"e1/a.jpg": gt_rows(FACE_A, FACE_B)})
    (tmp_path / "pred" / "e1").mkdir(parents=True)
    (tmp_path / "pred" / "e1" / "a.txt").write_text("a\n2\n10 10 40 40 0.8\n300 300 40 40 0.3\n")
    main(["--gt", str(gt_file), "--pred", str(tmp_path / "pred"), "--operating-points", "16"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "1 images, minimum face 16 px"
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:-1]}
    assert rows["0.25"] == ["2", "1", "1", "0.500", "0.500", "0.500"]  # both boxes kept
    assert rows["0.35"] == ["2", "1", "0", "1.000", "0.500", "0.667"]  # the false one dropped
    assert lines[-1] == "best F1 0.667 at conf 0.35"
    with pytest.raises(SystemExit) as done:
        main(["--gt", str(gt_file), "--pred", str(tmp_path / "pred"), "--operating-points", "nan"])
    assert done.value.code == 2 and "minimum face size of 0 px or more" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("sets", "problem"),
    [
        (None, r"sets file not found: .*wider_eval_sets\.json \(pass --sets\); wider_eval_sets\.json maps each"),
        ({}, r"wider_eval_sets\.json: holds no image; wider_eval_sets\.json maps each WIDER val image"),
        ({"e9/z.jpg": ALL}, r"names none of the 1 evaluated images"),
        ({"e1/a.jpg": {"easy": [], "medium": [], "hard": []}}, "puts no face of the evaluated images in any set"),
    ],
)
def test_a_missing_empty_or_foreign_sets_file_is_an_error_not_null_aps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sets: dict | None, problem: str
) -> None:
    """Each printed {"easy": null, "medium": null, "hard": null} and exited 0 (the missing one said only its name)."""
    gt_file = write_wider_gt(tmp_path / "gt" / "wider_face_val_bbx_gt.txt", {"e1/a.jpg": gt_rows(FACE_A)})
    if sets is not None:
        (tmp_path / "gt" / "wider_eval_sets.json").write_text(json.dumps(sets))
    (tmp_path / "pred" / "e1").mkdir(parents=True)
    (tmp_path / "pred" / "e1" / "a.txt").write_text("a\n1\n10 10 40 40 0.8\n")
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: main(["--gt", str(gt_file), "--pred", str(tmp_path / "pred")]))
    captured = capsys.readouterr()
    assert done.value.code == 2 and captured.out == "" and re.search(problem, captured.err), captured.err
    assert "usage:" not in captured.err  # one error line, as every tool says a missing or unusable input


def test_a_set_without_faces_is_null_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt_file = write_wider_gt(tmp_path / "gt" / "wider_face_val_bbx_gt.txt", {"e1/a.jpg": gt_rows(FACE_A)})
    (tmp_path / "gt" / "wider_eval_sets.json").write_text(json.dumps({"e1/a.jpg": {"hard": [0]}}))
    (tmp_path / "pred" / "e1").mkdir(parents=True)
    (tmp_path / "pred" / "e1" / "a.txt").write_text("a\n1\n10 10 40 40 0.8\n")
    assert main(["--gt", str(gt_file), "--pred", str(tmp_path / "pred")]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"easy": None, "medium": None, "hard": 1.0}
    assert "warning: no evaluated face is in the easy/medium set(s)" in captured.err


def test_a_sets_file_naming_faces_the_ground_truth_lacks_is_an_error_not_an_index_crash() -> None:
    gt = {"e1/a.jpg": gt_rows(FACE_A)}
    preds = {"e1/a.jpg": np.array([[10.0, 10, 30, 30, 0.8]])}
    for bad in (1, -1):
        with pytest.raises(AnnotationError, match=rf"e1/a: the easy set names face {bad}, but the ground truth has 1"):
            evaluate_wider(gt, preds, {"e1/a.jpg": {**ALL, "easy": [0, bad]}})


def test_results_one_folder_level_off_are_an_error_not_ap_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt_file = write_wider_gt(tmp_path / "gt" / "wider_face_val_bbx_gt.txt", {"e1/a.jpg": gt_rows(FACE_A)})
    (tmp_path / "gt" / "wider_eval_sets.json").write_text(json.dumps({"e1/a.jpg": ALL}))
    nested = tmp_path / "pred" / "run1" / "e1"  # <event> one level too deep: every key is run1/e1/a
    nested.mkdir(parents=True)
    (nested / "a.txt").write_text("a\n1\n10 10 40 40 0.8\n")
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: main(["--gt", str(gt_file), "--pred", str(tmp_path / "pred")]))
    err = capsys.readouterr().err
    assert done.value.code == 2 and "no result file under" in err and "usage:" not in err
    (tmp_path / "pred" / "e1").mkdir()
    (tmp_path / "pred" / "e1" / "a.txt").write_text("a\n1\n10 10 40 40 0.8\n")
    assert main(["--gt", str(gt_file), "--pred", str(tmp_path / "pred")]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["easy"] == 1.0
    assert "1 result files name no image" in captured.err and "run1/e1/a" in captured.err


def test_a_face_listed_twice_in_a_set_is_an_error_not_a_lower_ap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """easy = [0, 0, 1] counted face 0 twice as a face to find and once as found: AP 0.667 where [0, 1] gives 1.0,
    without a word."""
    gt = {"e1/a.jpg": gt_rows(FACE_A, FACE_B)}
    gt_file = write_wider_gt(tmp_path / "gt" / "wider_face_val_bbx_gt.txt", gt)
    sets_file = tmp_path / "gt" / "wider_eval_sets.json"
    sets_file.write_text(json.dumps({"e1/a.jpg": {**ALL, "easy": [0, 0, 1], "medium": [0, 1], "hard": [0, 1]}}))
    (tmp_path / "pred" / "e1").mkdir(parents=True)
    (tmp_path / "pred" / "e1" / "a.txt").write_text("a\n2\n10 10 40 40 0.9\n300 300 40 40 0.8\n")
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: main(["--gt", str(gt_file), "--pred", str(tmp_path / "pred")]))
    captured = capsys.readouterr()
    assert done.value.code == 2 and captured.out == ""
    assert captured.err == f"error: {sets_file}: 'e1/a.jpg': the easy set lists face 0 more than once\n"
    preds = {"e1/a.jpg": dets((10, 10, 40, 40, 0.9))}
    with pytest.raises(AnnotationError, match="e1/a: the hard set lists face 1 more than once"):  # sets not from a file
        evaluate_wider(gt, preds, {"e1/a.jpg": {**ALL, "hard": [1, 0, 1]}})


def test_a_ground_truth_box_of_negative_width_or_height_is_an_error_naming_its_line(tmp_path: Path) -> None:
    """A negative side was read as a face no detection can overlap: a miss in every set, lowering AP silently. A
    side of 0 stays a face, as in the official val ground truth (9 faces 0 px wide or high, none negative)."""
    gt_file = tmp_path / "gt.txt"
    for row in ("10 10 -40 40 0 0 0 0 0 0", "10 10 40 -0.5 0 0 0 0 0 0"):
        gt_file.write_text(f"e1/a.jpg\n2\n300 300 40 40 0 0 0 0 0 0\n{row}\n")
        with pytest.raises(AnnotationError, match=rf"gt\.txt:4: negative width or height in '{row}'"):
            parse_wider_gt(gt_file)
    gt_file.write_text("e1/a.jpg\n2\n441.2 58.8 0 0.6 2 0 0 0 1 0\n541.9 193.8 1.2 0 1 0 0 0 0 0\n")
    assert parse_wider_gt(gt_file)["e1/a.jpg"].shape == (2, 10)


def test_a_missing_ground_truth_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SystemExit) as done:
        cli.run(lambda: main(["--gt", str(missing), "--pred", str(tmp_path)]))
    assert done.value.code == 2
    assert capsys.readouterr().err == f"error: ground truth not found: {missing}\n"


def test_a_binary_ground_truth_or_a_folder_as_image_list_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The official download ships `wider_face_val.mat` beside the text file; passing it must say so."""
    gt_file = write_wider_gt(tmp_path / "gt" / "wider_face_val_bbx_gt.txt", {"e1/a.jpg": gt_rows(FACE_A)})
    (tmp_path / "gt" / "wider_eval_sets.json").write_text(json.dumps({"e1/a.jpg": ALL}))
    mat = tmp_path / "wider_face_val.mat"
    mat.write_bytes(b"MATLAB 5.0 MAT-file\x00\xc8\xff\x01")
    (tmp_path / "pred" / "e1").mkdir(parents=True)
    for argv, problem in (
        (["--gt", str(mat), "--sets", str(tmp_path / "gt" / "wider_eval_sets.json")], "not a UTF-8 text file"),
        (["--gt", str(gt_file), "--images", str(tmp_path / "pred")], "is a folder; give the file"),
    ):
        with pytest.raises(SystemExit) as done:
            cli.run(cast(Callable[[], int | None], lambda argv=argv: main([*argv, "--pred", str(tmp_path / "pred")])))
        err = capsys.readouterr().err
        assert done.value.code == 2 and err.startswith("error: ") and problem in err and err.count("\n") == 1, err


@pytest.mark.skipif(not DATA.is_dir(), reason="shared data not available")
def test_ground_truth_as_predictions_scores_near_one_on_real_wider() -> None:
    val = DATA / "widerface" / "val"
    gt = parse_wider_gt(val / "wider_face_val_bbx_gt.txt")
    sets = load_wider_sets(val / "wider_eval_sets.json")
    keys = sorted(gt)[::10]
    rng = np.random.default_rng(0)
    preds = {k: np.c_[gt[k][:, :4], rng.random(len(gt[k]))] for k in keys}
    aps = evaluate_wider({k: gt[k] for k in keys}, preds, sets)
    # not exactly 1: duplicate/near-duplicate WIDER boxes make a few detections match an already-recalled face
    assert all(ap > 0.97 for ap in aps.values()), aps


@pytest.mark.parametrize("iou", ["0", "-1", "1.5", "nan"])
def test_an_iou_threshold_outside_0_to_1_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], iou: str
) -> None:
    """--iou 0 counted every miss as a hit (AP 0.67 for boxes that missed every face); over 1 or NaN, no hit."""
    with pytest.raises(SystemExit) as exit_:
        main(["--gt", str(tmp_path), "--pred", str(tmp_path), f"--iou={iou}"])
    assert exit_.value.code == 2 and "--iou must lie in (0, 1]" in capsys.readouterr().err
