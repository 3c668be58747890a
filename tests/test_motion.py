"""Boxes moved with their faces between analyses (`fer_core.motion`), and the benchmark that measures it."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_core import bench_motion
from fer_core.bench import face_patch
from fer_core.bench_motion import PATHS, clip
from fer_core.motion import BoxFollower, FlowFrame, Template, box_move, inner_part, moved_box, pick_points
from fer_core.pipeline import Box
from fer_core.tracking import iou_matrix

PATH = {path.name: path for path in PATHS}


def astronaut_body() -> np.ndarray:
    """Another textured patch than the face: the astronaut's suit and flag."""
    from skimage import data as skdata

    return np.ascontiguousarray(skdata.astronaut()[300:500, 250:450])


def iou(a: Box, b: Box) -> float:
    return float(iou_matrix(np.array(a), np.array(b))[0, 0])


def fast_clip(frames: int) -> tuple[list[np.ndarray], list[Box]]:
    """The benchmark's face crossing the picture, up to 28 px a frame (a box of about 90 px)."""
    pictures, truth = [], []
    for picture, box in clip(PATH["fast"], frames):
        pictures.append(picture)
        truth.append(box)
    return pictures, truth


def test_a_box_followed_frame_by_frame_stays_on_a_fast_face() -> None:
    pictures, truth = fast_clip(16)
    follower = BoxFollower()
    follower.anchor(FlowFrame.of(pictures[0]), [truth[0]])
    for picture, box in zip(pictures[1:], truth[1:], strict=True):
        (followed,) = follower.follow(FlowFrame.of(picture))
        assert iou(followed, box) > 0.95
    assert iou(truth[0], truth[-1]) < 0.1  # where the box was drawn until now: off the face


def test_a_late_result_is_followed_through_the_frames_since() -> None:
    """A result for frame 0 arriving at frame 6 (the face 150 px further on), chained through 1..6, as the webcam
    does with the frames it keeps: it lands on the face."""
    pictures, truth = fast_clip(7)
    follower = BoxFollower()
    follower.anchor(FlowFrame.of(pictures[0]), [truth[0]])
    for picture in pictures[1:]:
        (box,) = follower.follow(FlowFrame.of(picture))
    assert iou(box, truth[-1]) > 0.95


def test_a_face_further_than_flow_reaches_is_found_again() -> None:
    """Frames in bursts (a busy machine): the face 80 px and more further on at each frame the follower sees. Flow
    finds nothing the round trip accepts there; the face's last look, matched nearby, puts the box back on it."""
    pictures, truth = zip(*clip(PATH["fast_10fps"], 8), strict=True)
    follower = BoxFollower()
    follower.anchor(FlowFrame.of(pictures[0]), [truth[0]])
    for picture, box in zip(pictures[1:], truth[1:], strict=True):
        (followed,) = follower.follow(FlowFrame.of(picture))
        assert iou(followed, box) > 0.9
    assert max(abs(a[0] - b[0]) for a, b in itertools.pairwise(truth)) > 80


def test_a_face_seen_half_a_second_later_is_found_again() -> None:
    """A webcam at 1-2 frames a second: the face crossing the picture is up to 4 widths further on at a frame the
    follower sees. Searched for only 2.5 box sizes around, it was lost there and waited for the next analysis."""
    pictures, truth = fast_clip(65)
    follower = BoxFollower()
    follower.anchor(FlowFrame.of(pictures[0]), [truth[0]])
    for t in (16, 32, 48, 64):
        (followed,) = follower.follow(FlowFrame.of(pictures[t]))
        assert iou(followed, truth[t]) > 0.9, t
    width = truth[0][2] - truth[0][0]
    assert max(abs(truth[t][0] - truth[t - 16][0]) for t in (16, 32, 48, 64)) > 3.5 * width  # past 2.5 box sizes


def test_a_face_tilting_and_coming_closer_keeps_its_box() -> None:
    for name in ("tilt", "approach"):
        pictures, truth = zip(*clip(PATH[name], 40), strict=True)
        follower = BoxFollower()
        follower.anchor(FlowFrame.of(pictures[0]), [truth[0]])
        boxes = [follower.follow(FlowFrame.of(picture))[0] for picture in pictures[1:]]
        assert min(iou(b, t) for b, t in zip(boxes, truth[1:], strict=True)) > 0.85, name


def test_a_cut_leaves_the_box_where_it_was_until_the_next_anchor() -> None:
    """After a cut (or a turned head) the points fail the round trip: the box stays put rather than fly off, and
    does not take up whatever the new shot pans under it (it did, from the second frame after the cut)."""
    pictures, truth = fast_clip(2)
    follower = BoxFollower()
    follower.anchor(FlowFrame.of(pictures[0]), [truth[0]])
    noise = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (480, 700, 3), dtype=np.uint8), (0, 0), 2)
    for step in range(6):  # the new shot pans 6 px a frame
        (box,) = follower.follow(FlowFrame.of(np.ascontiguousarray(noise[:, 6 * step : 6 * step + 640])))
        np.testing.assert_allclose(box, truth[0], atol=1e-6)
    follower.anchor(FlowFrame.of(pictures[0]), [truth[0]])  # the next analysis: followed again
    (box,) = follower.follow(FlowFrame.of(pictures[1]))
    assert iou(box, truth[1]) > 0.95


def scene(faces: list[tuple[np.ndarray, int, int]]) -> np.ndarray:
    """A 640x480 frame of `skimage.data.coffee` with each (patch, centre x, centre y) pasted on it."""
    from skimage import data as skdata

    frame = cv2.resize(skdata.coffee(), (640, 480), interpolation=cv2.INTER_AREA)
    for patch, cx, cy in faces:
        side = patch.shape[0]
        frame[cy - side // 2 : cy - side // 2 + side, cx - side // 2 : cx - side // 2 + side] = patch
    return frame


def box_at(cx: int, cy: int, side: int) -> Box:
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def test_a_lost_face_does_not_take_its_look_alike_neighbours_place() -> None:
    """Twins, or a person beside their own photo: when A turns away, the best match of A's look is B, and A's box
    (label and number) landed on B's face at the first frame."""
    face = face_patch(110)[0]
    follower = BoxFollower()
    follower.anchor(
        FlowFrame.of(scene([(face, 200, 240), (face, 376, 240)])), [box_at(200, 240, 110), box_at(376, 240, 110)]
    )
    for step in range(1, 7):  # A is gone; B sways
        boxes = follower.follow(FlowFrame.of(scene([(face, 376 + 2 * step, 240)])))
        np.testing.assert_allclose(boxes[0], box_at(200, 240, 110), atol=1e-6)
        assert iou(boxes[1], box_at(376 + 2 * step, 240, 110)) > 0.9


def test_a_lost_box_waits_for_the_next_anchor_whatever_the_other_boxes_do() -> None:
    """It was searched for again on every frame while another box still had points, and took up the face that
    came back 2 widths away; alone, it waited. The same scene must give the same box either way."""
    face, other = face_patch(60)[0], cv2.resize(astronaut_body(), (60, 60))
    for boxes in ([box_at(200, 240, 60)], [box_at(200, 240, 60), box_at(520, 120, 60)]):
        follower = BoxFollower()
        follower.anchor(FlowFrame.of(scene([(face, 200, 240), (other, 520, 120)])), boxes)
        gone, back = scene([(other, 520, 120)]), scene([(face, 320, 240), (other, 520, 120)])
        for frame in (gone, gone, back, back, back):
            followed = follower.follow(FlowFrame.of(frame))
        np.testing.assert_allclose(followed[0], boxes[0], atol=1e-6)
        keys = ["lost", "other"][: len(boxes)]
        assert list(follower.followed_by(keys)) == keys[1:]  # a lost box is no guide to where its face is now


def test_a_smaller_frame_is_followed_like_any_other() -> None:
    """A stream under 320 px that shrinks (320x240 to 240x180) changes the flow's frame size: the boxes were only
    rescaled on that frame, with no motion measured, and a fast face was lost (IoU 0.14)."""
    pictures, truth = fast_clip(8)
    sizes = [(320, 240)] * 3 + [(240, 180)] * 5
    follower = BoxFollower()
    follower.anchor(
        FlowFrame.of(cv2.resize(pictures[0], sizes[0], interpolation=cv2.INTER_AREA)), [tuple(np.array(truth[0]) / 2)]
    )
    for picture, box, size in zip(pictures[1:], truth[1:], sizes[1:], strict=True):
        (followed,) = follower.follow(FlowFrame.of(cv2.resize(picture, size, interpolation=cv2.INTER_AREA)))
        assert iou(followed, tuple(np.array(box) * size[0] / 640)) > 0.85


def test_odd_boxes_and_frame_sizes() -> None:
    picture = fast_clip(1)[0][0]
    assert BoxFollower().follow(FlowFrame.of(picture)) == []  # nothing anchored yet
    follower = BoxFollower()
    boxes = [(600.0, 100.0, 700.0, 200.0), (1.0, 1.0, 3.0, 3.0), (50.0, 50.0, 50.0, 80.0)]  # off the edge, tiny, flat
    follower.anchor(FlowFrame.of(picture), boxes)
    moved = follower.follow(FlowFrame.of(np.roll(picture, 5, axis=1)))
    assert len(moved) == 3 and moved[0][0] == pytest.approx(605.0, abs=1.0)
    assert moved[1:] == boxes[1:]  # nothing to follow inside them: where they were
    follower.anchor(FlowFrame.of(picture), [boxes[0]])
    (doubled,) = follower.follow(FlowFrame.of(cv2.resize(picture, (1280, 960))))  # the same view, larger
    np.testing.assert_allclose(doubled, np.array(boxes[0]) * 2, atol=2.0)
    (halved,) = follower.follow(FlowFrame.of(cv2.resize(picture, (640, 480))))
    np.testing.assert_allclose(halved, boxes[0], atol=1.0)
    grey = FlowFrame.of(cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY))
    assert grey.grey.shape == (240, 320) and grey.scale == 0.5


def test_frames_the_flow_cannot_use_are_named_and_bad_boxes_are_left_alone() -> None:
    picture = fast_clip(1)[0][0]
    rgba = FlowFrame.of(cv2.cvtColor(picture, cv2.COLOR_RGB2RGBA))
    np.testing.assert_array_equal(rgba.grey, FlowFrame.of(picture).grey)
    grey = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY)
    assert not np.shares_memory(FlowFrame.of(grey).grey, grey)  # the caller may draw on its frame afterwards
    small = np.ascontiguousarray(grey[:200, :300])  # under FLOW_SIDE: kept at its size, so a copy is needed
    assert not np.shares_memory(FlowFrame.of(small).grey, small)
    assert FlowFrame.of(grey[:, :, None]).grey.shape == (240, 320)
    bad_frames: list[tuple[np.ndarray, str]] = [
        (np.zeros((0, 5, 3), np.uint8), "non-empty 8-bit"),
        (picture.astype(np.float32), "8-bit"),
        (np.zeros((4, 4, 2), np.uint8), "2 channels"),
    ]
    for bad, problem in bad_frames:
        with pytest.raises(ValueError, match=problem):
            FlowFrame.of(bad)
    follower = BoxFollower()
    follower.anchor(FlowFrame.of(picture), [(np.nan, 0.0, 10.0, 10.0), (0.0, 0.0, np.inf, 10.0)])
    boxes = follower.follow(FlowFrame.of(picture))
    assert len(boxes) == 2 and np.isnan(boxes[0][0]) and np.isinf(boxes[1][2])  # kept as given, no error


def test_median_move_and_scale() -> None:
    before = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    shift, scale = box_move(before, before * 1.1 + 3.0)
    np.testing.assert_allclose(shift, [3.5, 3.5])
    assert scale == pytest.approx(1.1)
    assert box_move(before, before * 3)[1] == pytest.approx(1.25)  # clipped: a jump that large is noise
    np.testing.assert_allclose(moved_box(np.array([0.0, 0.0, 10.0, 20.0]), np.array([1.0, 2.0]), 2.0), [-4, -8, 16, 32])


def test_the_benchmark_prints_and_writes_its_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "motion.json"
    assert bench_motion.main(["--frames", "24", "--lags", "3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {f"{p.name}/lag3/{s}" for p in PATHS for s in bench_motion.STRATEGIES}
    assert results["still/lag3/hold"]["mean_iou"] == 1.0
    assert results["fast/lag3/chain"]["mean_iou"] > 0.95 > 0.5 > results["fast/lag3/hold"]["mean_iou"]
    assert results["fast/lag3/chain"]["ms_per_frame"]["median"] > 0
    assert results["fast_10fps/lag3/hold"]["id_switches"] > 0 == results["fast_10fps/lag3/chain"]["id_switches"]
    assert "fast/lag3/chain" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_motion.main(["--frames", "24", "--lags", "30"])


def test_a_lost_face_seen_twice_elsewhere_is_not_guessed() -> None:
    """A cut to a shot with two copies of the face (twins, a poster, a repeated pattern), under no other box: both
    places match equally, so taking either is a guess that gives a stranger this face's number and label."""
    face = face_patch(60)[0]
    follower = BoxFollower()
    follower.anchor(FlowFrame.of(scene([(face, 320, 240)])), [box_at(320, 240, 60)])
    for _ in range(3):
        (box,) = follower.follow(FlowFrame.of(scene([(face, 120, 120), (face, 520, 360)])))
        np.testing.assert_allclose(box, box_at(320, 240, 60), atol=1e-6)
    assert follower.followed_by([1]) == {}
    grey = FlowFrame.of(scene([(face, 320, 240)])).grey
    template = Template.of(grey, np.array(box_at(160, 120, 30)))
    assert template is not None
    twice = FlowFrame.of(scene([(face, 120, 120), (face, 520, 360)])).grey
    assert template.find(twice, np.array(box_at(160, 120, 30))) is None
    once = FlowFrame.of(scene([(face, 520, 360)])).grey
    found = template.find(once, np.array(box_at(160, 120, 30)))  # the same look, alone: found
    assert found is not None
    np.testing.assert_allclose(found, box_at(260, 180, 30), atol=1.0)


def test_the_box_moves_by_the_median_of_its_points_moves() -> None:
    """A few points that slipped onto the background or another moving face must not drag the box: 10 points moved
    5 px right and 2 outliers 100 px move it 5 px, not their mean's 20."""
    rng = np.random.default_rng(0)
    before = rng.uniform(0, 50, (12, 2))
    after = before + np.array([5.0, 0.0])
    after[:2] += np.array([95.0, 0.0])
    shift, _ = box_move(before, after)
    np.testing.assert_allclose(shift, [5.0, 0.0])


def test_points_are_picked_inside_the_box_not_on_its_edges() -> None:
    """The box's edges are background as often as face, and background does not move with the face: points (and
    the face's last look) come from the box with 15 % left out on each side, never from around it."""
    grey = cv2.cvtColor(np.ascontiguousarray(astronaut_body()), cv2.COLOR_RGB2GRAY)
    box = np.array([10.0, 10.0, 110.0, 110.0])
    assert inner_part(grey, box) == (25, 25, 95, 95)
    points = pick_points(grey, box)
    assert len(points) >= 5
    assert points.min() >= 25 and points.max() <= 95


def test_a_box_with_nothing_to_follow_is_lost_from_the_start() -> None:
    """A tiny or non-finite box gives no points, so it is never stepped: unless marked lost at anchor it was reported
    as moving with its face forever, and the tracker matched faces to that stale box first."""
    picture = fast_clip(1)[0][0]
    follower = BoxFollower()
    follower.anchor(FlowFrame.of(picture), [(1.0, 1.0, 3.0, 3.0), (np.nan, 0.0, 10.0, 10.0)])
    assert follower.followed_by([1, 2]) == {}
    follower.follow(FlowFrame.of(picture))
    assert follower.followed_by([1, 2]) == {}


def test_a_frame_rescaled_on_one_axis_scales_the_boxes_on_that_axis() -> None:
    """The same view at another resolution is followed by bringing the last frame and the boxes to it: a frame half
    as high halves the boxes' y, not their x (width and height ratios were swapped)."""
    picture = cv2.resize(scene([(face_patch(110)[0], 320, 240)]), (320, 240), interpolation=cv2.INTER_AREA)
    box = box_at(160, 120, 56)
    follower = BoxFollower()
    follower.anchor(FlowFrame.of(picture), [box])
    (squashed,) = follower.follow(FlowFrame.of(cv2.resize(picture, (320, 120), interpolation=cv2.INTER_AREA)))
    np.testing.assert_allclose(squashed, (box[0], box[1] / 2, box[2], box[3] / 2), atol=1.5)


def test_a_near_flat_box_gives_no_look_to_search_for() -> None:
    """A face in deep shadow or blown out (flat gray plus sensor noise): normalised correlation of noise means
    nothing and may pick any place, so there is no template to find it again by; a textured box has one."""
    rng = np.random.default_rng(0)
    flat = rng.integers(127, 130, (120, 120)).astype(np.uint8)
    assert 0 < flat.std() < 2
    assert Template.of(flat, np.array([10.0, 10.0, 110.0, 110.0])) is None
    textured = cv2.cvtColor(np.ascontiguousarray(astronaut_body()), cv2.COLOR_RGB2GRAY)
    assert Template.of(textured, np.array([10.0, 10.0, 110.0, 110.0])) is not None
