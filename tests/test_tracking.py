"""FaceTracker: ids stay with a moving face, new faces get new ids, lost tracks expire, smoothing is right."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fer_core.labels import EMOTIONS
from fer_core.pipeline import FaceResult
from fer_core.tracking import FaceTracker, iou_matrix, jump_matrix


def face(box: tuple[float, float, float, float], label: str = "happy", p: float = 1.0) -> FaceResult:
    """A face whose ensemble puts `p` on `label` and spreads the rest evenly."""
    rest = (1.0 - p) / (len(EMOTIONS) - 1)
    probs = {name: (p if name == label else rest) for name in EMOTIONS}
    return FaceResult(box, 0.9, label, p, probs, {"ensemble": probs})


def test_iou_matrix_values() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 3]])
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0, 0.0]])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)


def test_moving_face_keeps_one_id() -> None:
    tracker = FaceTracker()
    ids = set()
    for step in range(30):
        x = 100 + 3 * step
        (tracked,) = tracker.update([face((x, 50, x + 80, 130))])
        ids.add(tracked.track_id)
        assert tracked.age == step + 1
        assert tracked.box == (x, 50, x + 80, 130)
    assert ids == {1}


def test_a_track_goes_on_when_the_frame_is_resized() -> None:
    """Half the resolution, the same face: without carrying the box over, its overlap (0.25) starts a new track."""
    tracker = FaceTracker(alpha=0.5)
    tracker.update([face((10, 10, 50, 50), "happy")])
    tracker.rescale(0.5, 0.5)
    (tracked,) = tracker.update([face((5, 5, 25, 25), "sad")])
    assert (tracked.track_id, tracked.age) == (1, 2) and tracked.probs["happy"] == pytest.approx(0.5)
    fresh = FaceTracker(alpha=0.5)
    fresh.update([face((10, 10, 50, 50), "happy")])
    assert fresh.update([face((5, 5, 25, 25), "sad")])[0].track_id == 2


def test_matching_is_optimal_not_greedy() -> None:
    """Two neighbours moving right: greedy matching gives the first detection to the second track (IoU 0.82) and
    leaves the second detection at IoU 0.18, under the threshold, so it would start a new id."""
    tracker = FaceTracker(iou_threshold=0.3)
    tracker.update([face((0, 0, 10, 10)), face((4, 0, 14, 10))])
    moved = tracker.update([face((3, 0, 13, 10)), face((7, 0, 17, 10))])
    assert [t.track_id for t in moved] == [1, 2]


def test_a_pairing_under_the_threshold_does_not_take_a_face_from_its_own_track() -> None:
    """P moves a little (IoU 0.80 with its own box); Q beside it is not found; a newcomer appears on P's other side
    (IoU 0.28 with P). Maximising the raw overlap sum pairs P with the newcomer (0.28 + Q-P's 0.60 = 0.88 > 0.80 +
    0.04), rejects that pairing as under 0.3, and gives P's face to Q: #2 with Q's smoothed 'angry'. P keeps #1;
    the newcomer, 0.9 of Q's widths from Q's last box, continues Q's track (the module's stated limit)."""
    tracker = FaceTracker(iou_threshold=0.3, alpha=1.0)
    tracker.update([face((0, 0, 100, 100), "happy"), face((36, 0, 136, 100), "angry")])
    moved = tracker.update([face((11, 0, 111, 100), "happy"), face((-56, 0, 44, 100), "sad")])
    assert [(t.track_id, t.label) for t in moved] == [(1, "happy"), (2, "sad")]


@pytest.mark.parametrize(("step", "ids"), [(0.6, {1}), (1.4, {1}), (1.6, {1, 2, 3, 4})])
def test_a_face_that_moved_past_its_box_keeps_its_track_up_to_max_jump(step: float, ids: set[int]) -> None:
    """The webcam page analysing 1-3 frames a second: a face crossing the picture gave 8 ids in 20 s (IoU under
    0.3 on every analysed frame), each starting its smoothing again."""
    tracker = FaceTracker()
    seen = {tracker.update([face((x, 50, x + 70, 140))])[0].track_id for x in 100 + 70 * step * np.arange(4)}
    assert seen == ids


def test_distance_pairs_only_boxes_of_a_similar_size() -> None:
    tracker = FaceTracker()
    tracker.update([face((100, 100, 150, 150))])
    assert tracker.update([face((130, 80, 250, 200))])[0].track_id == 2  # 5.8x the area: someone nearer
    np.testing.assert_allclose(jump_matrix(np.array([[0, 0, 10, 10]]), np.array([[15, 0, 25, 10]])), [[1.5]])
    assert jump_matrix(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 30, 30]]))[0, 0] == np.inf


def test_far_box_gets_new_id_and_two_faces_do_not_swap() -> None:
    tracker = FaceTracker()
    first = tracker.update([face((0, 0, 50, 50)), face((200, 0, 250, 50))])
    assert [t.track_id for t in first] == [1, 2]
    # input order swapped, both moved a little: ids follow the boxes, not the list positions
    second = tracker.update([face((204, 2, 254, 52)), face((3, 1, 53, 51))])
    assert [t.track_id for t in second] == [2, 1]
    third = tracker.update([face((3, 1, 53, 51)), face((400, 300, 450, 350))])
    assert [t.track_id for t in third] == [1, 3]


def test_a_face_followed_further_than_max_jump_keeps_its_id() -> None:
    """Analysed a second apart, a face 4 widths on took a new id; where the caller followed it there, it keeps it."""
    for moved, expected in [(None, 2), ({1: (195.0, 0.0, 245.0, 50.0)}, 1)]:
        tracker = FaceTracker()
        tracker.update([face((0, 0, 50, 50))])
        assert tracker.update([face((200, 0, 250, 50))], moved)[0].track_id == expected


def test_two_faces_that_crossed_keep_their_ids_where_they_were_followed() -> None:
    """Between two analyses the faces swapped places: by where they were found, each took the other's id (and its
    smoothed emotion)."""
    tracker = FaceTracker()
    tracker.update([face((0, 0, 50, 50), "happy"), face((150, 0, 200, 50), "sad")])
    crossed = [face((148, 0, 198, 50), "happy"), face((2, 0, 52, 50), "sad")]
    followed = {1: (147.0, 0.0, 197.0, 50.0), 2: (3.0, 0.0, 53.0, 50.0)}
    assert [(t.track_id, t.label) for t in tracker.update(crossed, followed)] == [(1, "happy"), (2, "sad")]
    swapped = FaceTracker()
    swapped.update([face((0, 0, 50, 50), "happy"), face((150, 0, 200, 50), "sad")])
    assert [t.track_id for t in swapped.update(crossed)] == [2, 1]


def test_a_track_not_followed_does_not_take_the_place_another_was_followed_to() -> None:
    """Its box where it was found (B's) took the face followed there (A's), with B's id and smoothed emotion: with
    faces crossing, the follower loses the one behind. And a track missed at the last analysis, by its old box,
    took the face another track was followed onto."""
    tracker = FaceTracker()
    tracker.update([face((0, 0, 50, 50), "happy"), face((100, 0, 150, 50), "sad")])
    crossing = [face((100, 0, 150, 50), "happy"), face((250, 0, 300, 50), "sad")]
    assert tracker.update(crossing, {1: (92.0, 0.0, 142.0, 50.0)})[0].track_id == 1
    missed = FaceTracker()
    missed.update([face((0, 0, 50, 50)), face((200, 0, 250, 50))])
    missed.update([face((100, 0, 150, 50))], {2: (100.0, 0.0, 150.0, 50.0)})  # #1 not found this time
    assert [t.track_id for t in missed.update([face((0, 0, 50, 50))], {2: (8.0, 0.0, 58.0, 50.0)})] == [2]


def test_a_box_followed_astray_costs_the_face_nothing() -> None:
    """A followed box that drifted off the face, a lost (NaN) one and ids the tracker does not know: each face is
    matched by where it was found."""
    tracker = FaceTracker()
    tracker.update([face((0, 0, 50, 50)), face((300, 0, 350, 50))])
    moved = {1: (600.0, 400.0, 650.0, 450.0), 2: (np.nan, 0.0, np.nan, 50.0), 7: (0.0, 0.0, 50.0, 50.0)}
    assert [t.track_id for t in tracker.update([face((2, 0, 52, 50)), face((303, 0, 353, 50))], moved)] == [1, 2]


def test_track_dropped_after_max_missed() -> None:
    tracker = FaceTracker(max_missed=2)
    box = (10, 10, 60, 60)
    assert tracker.update([face(box)])[0].track_id == 1
    assert tracker.update([]) == []
    assert tracker.update([]) == []
    assert tracker.active_ids == [1]  # missed twice: still within max_missed
    assert tracker.update([face(box)])[0].track_id == 1  # comes back: same id, miss count cleared
    for _ in range(3):
        tracker.update([])
    assert tracker.active_ids == []
    assert tracker.update([face(box)])[0].track_id == 2


def test_reset_restarts_ids() -> None:
    tracker = FaceTracker()
    tracker.update([face((0, 0, 10, 10)), face((50, 50, 60, 60))])
    tracker.reset()
    assert tracker.active_ids == []
    assert tracker.update([face((0, 0, 10, 10))])[0].track_id == 1


def test_ema_smoothing_maths() -> None:
    tracker = FaceTracker(smoothing="ema", alpha=0.25)
    box = (0, 0, 40, 40)
    assert tracker.update([face(box, "happy")])[0].probs["happy"] == pytest.approx(1.0)
    expected = 1.0
    for _ in range(3):
        (tracked,) = tracker.update([face(box, "sad")])
        expected *= 0.75  # s = 0.25 * 0 + 0.75 * s
        assert tracked.probs["happy"] == pytest.approx(expected)
        assert tracked.probs["sad"] == pytest.approx(1.0 - expected)
        assert sum(tracked.probs.values()) == pytest.approx(1.0)
    # after 3 sad frames: happy 0.42, sad 0.58 -> the label flips only once the evidence is there
    assert tracked.label == "sad" and tracked.confidence == pytest.approx(1.0 - 0.75**3)
    assert tracked.raw.label == "sad"


def test_ema_alpha_one_is_raw() -> None:
    tracker = FaceTracker(alpha=1.0)
    tracker.update([face((0, 0, 40, 40), "happy")])
    assert tracker.update([face((0, 0, 40, 40), "fear", 0.6)])[0].probs["fear"] == pytest.approx(0.6)


def test_window_smoothing_is_mean_of_last_n() -> None:
    tracker = FaceTracker(smoothing="window", window=3)
    box = (0, 0, 40, 40)
    labels = ["happy", "sad", "sad", "angry", "angry"]
    results = [tracker.update([face(box, label)])[0] for label in labels]
    assert results[1].probs["happy"] == pytest.approx(0.5)  # mean of the 2 frames seen so far
    assert results[2].probs["sad"] == pytest.approx(2 / 3)
    last = results[-1]  # window = sad, angry, angry
    assert last.probs["happy"] == pytest.approx(0.0)
    assert last.probs["sad"] == pytest.approx(1 / 3)
    assert last.probs["angry"] == pytest.approx(2 / 3)
    assert last.label == "angry"


def test_no_smoothing() -> None:
    tracker = FaceTracker(smoothing="none")
    tracker.update([face((0, 0, 40, 40), "happy")])
    assert tracker.update([face((0, 0, 40, 40), "sad")])[0].probs["sad"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"iou_threshold": 0.0}, {"max_missed": -1}, {"smoothing": "median"}, {"alpha": 0.0}, {"window": 0}],
)
def test_bad_settings_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FaceTracker(**kwargs)


def test_new_settings_keep_the_faces_followed() -> None:
    """The live page rebuilt its tracker when a slider moved: every id restarted at 1, every label went raw."""
    tracker = FaceTracker(smoothing="window", window=4)
    box = (0, 0, 40, 40)
    for label in ("happy", "happy", "sad", "sad"):
        tracker.update([face(box, label)])
    tracker.reconfigure(iou_threshold=0.3, max_missed=10, smoothing="window", alpha=0.5, window=2)
    (tracked,) = tracker.update([face(box, "sad")])
    assert tracked.track_id == 1 and tracked.age == 5
    assert tracked.probs["sad"] == pytest.approx(1.0)  # the window is now the last two frames, both sad
    tracker.reconfigure(iou_threshold=0.3, max_missed=10, smoothing="ema", alpha=0.5, window=2)
    assert tracker.update([face(box, "angry")])[0].probs["angry"] == pytest.approx(0.5)  # EMA from the last value
    with pytest.raises(ValueError):
        tracker.reconfigure(iou_threshold=0.3, max_missed=10, smoothing="ema", alpha=0.0, window=2)


def test_a_resize_carries_each_axis_by_its_own_factor() -> None:
    """rescale(sx, sy) is per axis: a box carried with x and y mixed up lands elsewhere, and its face starts anew."""
    tracker = FaceTracker(iou_threshold=0.9)
    tracker.update([face((10, 20, 30, 40))])
    tracker.rescale(2.0, 0.5)
    (tracked,) = tracker.update([face((20, 10, 60, 20))])
    assert (tracked.track_id, tracked.age) == (1, 2)


def test_an_overlap_exactly_at_the_threshold_counts() -> None:
    """'At least iou_threshold', as the setting's help says: an overlap of exactly 0.5 at 0.5 pairs the box."""
    tracker = FaceTracker(iou_threshold=0.5)
    assert tracker._overlap_pairs(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 5]])) == [(0, 0)]


def test_smoothing_switched_off_and_on_again_goes_on_from_the_newest_frame() -> None:
    """Off shows the newest frame raw; turned back to EMA before the next analysed frame, the average restarts from
    that newest frame, not from the oldest one the window still holds."""
    tracker = FaceTracker(smoothing="ema", alpha=0.5, window=3)
    box = (0, 0, 40, 40)
    for label in ("happy", "sad"):
        tracker.update([face(box, label)])
    for smoothing in ("none", "ema"):
        tracker.reconfigure(iou_threshold=0.3, max_missed=10, smoothing=smoothing, alpha=0.5, window=3)
    probs = tracker.update([face(box, "angry")])[0].probs
    assert probs["sad"] == pytest.approx(0.5) and probs["angry"] == pytest.approx(0.5) and probs["happy"] < 1e-9
