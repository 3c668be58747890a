"""draw_faces: boxes in the emotion's colour, captions kept inside the image, input left untouched."""

from __future__ import annotations

import numpy as np
import pytest

from fer_core.draw import (
    DEFAULT_COLOR,
    EMOTION_COLORS,
    OUTLINE,
    draw_faces,
    label_text,
    numbered,
    style_for,
    text_color,
    to_annotations,
)
from fer_core.labels import EMOTIONS
from fer_core.pipeline import FaceResult
from fer_core.verdict import model_view


def test_every_emotion_has_a_distinct_colour() -> None:
    assert set(EMOTION_COLORS) == set(EMOTIONS)
    assert len(set(EMOTION_COLORS.values())) == len(EMOTIONS)


def test_box_drawn_in_emotion_colour_on_a_copy() -> None:
    image = np.zeros((240, 320, 3), np.uint8)
    out = draw_faces(image, [((100, 100, 200, 200), "happy", 0.87, 3)])
    assert image.max() == 0  # the input is not modified
    assert out.shape == image.shape and out.dtype == np.uint8
    assert tuple(out[150, 100]) == EMOTION_COLORS["happy"]  # left edge of the box
    assert tuple(out[150, 150]) == (0, 0, 0)  # inside stays clear
    assert (out[70:100, 100:200] != 0).any()  # caption above the box


def test_a_box_has_a_dark_outline_that_keeps_it_visible_on_white() -> None:
    """A thin "happy" yellow box (1.6:1 against white) all but vanished on a bright, washed-out photo."""
    white = np.full((240, 320, 3), 255, np.uint8)
    out = draw_faces(white, [((100, 100, 200, 200), "happy", 0.87, 3)], thickness=2)  # 99 to 101 px wide
    happy = EMOTION_COLORS["happy"]
    assert [tuple(out[150, x]) for x in range(97, 104)] == [(255, 255, 255), OUTLINE, *[happy] * 3, OUTLINE, (255,) * 3]


def caption_text_pixels(out: np.ndarray, background: tuple[int, int, int], fill: tuple[int, int, int]) -> int:
    """Pixels that are neither the background, the box/caption colour nor the box's outline: the caption's
    (anti-aliased) letters."""
    return int(((out != background).any(-1) & (out != fill).any(-1) & (out != OUTLINE).any(-1)).sum())


@pytest.mark.parametrize("box", [(0, 0, 50, 50), (290, 200, 330, 260), (-20, -20, 400, 300), (10, 10, 10, 10)])
def test_boxes_at_or_beyond_the_edges_keep_the_whole_caption(box: tuple[float, float, float, float]) -> None:
    gray, fill = (90, 90, 90), EMOTION_COLORS["surprise"]
    canvas = np.full((240, 320, 3), gray, np.uint8)  # same size as the reference: same automatic style
    reference = draw_faces(canvas, [((100, 100, 200, 200), "surprise", 0.5, None)])  # room above and beside
    out = draw_faces(canvas, [(box, "surprise", 0.5, None)])
    letters = caption_text_pixels(reference, gray, fill)
    assert letters > 50
    assert caption_text_pixels(out, gray, fill) == letters  # moved, never clipped by the image border


@pytest.mark.parametrize("side", [48, 64, 96])
def test_a_caption_wider_than_a_small_image_is_shrunk_not_cut(side: int) -> None:
    """ "#12 surprise 87%" needs about 105 px at the smallest style: on a face crop its "87%" used to fall off."""
    gray, fill = (90, 90, 90), EMOTION_COLORS["surprise"]
    out = draw_faces(np.full((side, side, 3), gray, np.uint8), [((8, 20, side - 8, side - 4), "surprise", 0.87, 12)])
    ink = (
        np.abs(out.astype(int) - fill).max(-1) > 40
    )  # off the caption's colour by more than anti-aliasing's faint edge
    letters = (out != gray).any(-1) & ink
    assert letters.sum() > 40
    assert not letters[:, -1].any()  # the text ends inside its caption box, which ends inside the image


def test_captions_on_an_image_one_pixel_wide_do_not_fail() -> None:
    """A review's fuzzing: three boxes on a 1x100 image raised ZeroDivisionError while fitting a caption."""
    boxes = [(1.59, 140.2, 2.45, 186.3), (0.51, 72.2, 1.19, 152.7), (-0.13, 170.3, 0.29, 267.6)]
    faces = [
        (box, label, 0.6, number)
        for box, label, number in zip(boxes, ("surprise", "disgust", "neutral"), (1000, None, None), strict=True)
    ]
    assert draw_faces(np.zeros((100, 1, 3), np.uint8), faces).shape == (100, 1, 3)


def test_gray_and_rgba_inputs_and_unknown_label() -> None:
    gray = draw_faces(np.full((60, 80), 7, np.uint8), [((5, 5, 40, 40), "sad", 0.4, None)])
    assert gray.shape == (60, 80, 3) and tuple(gray[55, 70]) == (7, 7, 7)  # gray spread to three equal channels
    assert tuple(gray[35, 5]) == EMOTION_COLORS["sad"]
    rgba = draw_faces(np.full((60, 80, 4), (10, 20, 30, 40), np.uint8), [((5, 5, 40, 40), "face", 0.9, None)])
    assert rgba.shape == (60, 80, 3) and tuple(rgba[55, 70]) == (10, 20, 30)  # alpha dropped, colour kept
    assert tuple(rgba[35, 5]) == DEFAULT_COLOR  # a label that is not an emotion gets the neutral box colour


def test_helpers() -> None:
    assert label_text("happy", 0.866, 2) == "#2 happy 87%"
    assert label_text("sad") == "sad"
    assert text_color((255, 255, 255)) == (0, 0, 0) and text_color((0, 0, 0)) == (255, 255, 255)
    small, large = style_for(320, 240), style_for(3840, 2160)
    assert small[0] < large[0] and small[1] < large[1]
    assert style_for(640, 480) == style_for(480, 640) == (2, pytest.approx(0.6, abs=0.001))
    assert style_for(4096, 1143) == style_for(4096, 3072)  # a panorama is shown as small as a photo of its width
    probs = {name: 1 / 7 for name in EMOTIONS}
    face = FaceResult((1.0, 2.0, 3.0, 4.0), 0.9, "fear", 0.3, probs, {"ensemble": probs})
    assert to_annotations([face]) == [((1.0, 2.0, 3.0, 4.0), "fear", 0.3, None)]
    other = FaceResult((5.0, 6.0, 7.0, 8.0), 0.8, "sad", 0.6, probs, {"ensemble": probs})
    picked = [model_view({**probs, "happy": 0.5}), model_view({**probs, "angry": 0.4})]  # the picked model's verdicts
    assert numbered([face, other], picked) == [
        ((1.0, 2.0, 3.0, 4.0), "happy", 0.5, 1),
        ((5.0, 6.0, 7.0, 8.0), "angry", 0.4, 2),
    ]


def test_captions_in_a_crowd_leave_the_other_faces_uncovered() -> None:
    """Captions followed the photo's size only: on a 3000 px group photo each was ~700 px wide and lay over the
    faces beside and above it. Every face gets its own colour here, so a caption over another face shows."""
    canvas = np.full((1500, 3000, 3), 90, np.uint8)
    labels = EMOTIONS[:6]
    boxes = [(300 + 170 * i, 400 + 200 * (i % 2), 450 + 170 * i, 550 + 200 * (i % 2)) for i in range(len(labels))]
    faces = [(box, label, 0.87, number) for number, (box, label) in enumerate(zip(boxes, labels, strict=True), 1)]
    out = draw_faces(canvas, faces)
    for box, label in zip(boxes, labels, strict=True):
        x1, y1, x2, y2 = box
        inside = out[y1 + 6 : y2 - 5, x1 + 6 : x2 - 5].reshape(-1, 3)
        for other in labels:
            if other != label:
                assert not (inside == EMOTION_COLORS[other]).all(-1).any(), (label, other)
    lone = draw_faces(canvas, [((300, 400, 450, 550), "happy", 0.87, 1)])
    assert caption_text_pixels(lone, (90, 90, 90), EMOTION_COLORS["happy"]) > 200  # alone, the full caption


def test_a_face_number_does_not_cover_the_caption_placed_before_it() -> None:
    """The number that stands in for a caption that would cover something went above its face regardless: "#8" lay
    over the "52%" of "#7 sad 52%". It goes inside its face when above is taken."""
    canvas = np.full((400, 600, 3), 90, np.uint8)
    seventh = ((100, 100, 160, 160), "sad", 0.52, 7)
    eighth = ((170, 112, 230, 172), "happy", 0.61, 8)  # beside it, a little lower: its caption's row is #7's
    alone, both = draw_faces(canvas, [seventh]), draw_faces(canvas, [seventh, eighth])
    np.testing.assert_array_equal(both[:100, 90:250], alone[:100, 90:250])  # #7's caption, as it is alone
    assert (both[112:140, 172:228] == EMOTION_COLORS["happy"]).all(-1).sum() > 100  # "#8" at the top of its box


def test_caption_text_has_the_better_contrast() -> None:
    """Rec.601 luma with a fixed threshold put white text on the disgust green (3.4:1) and fear purple (4.3:1)."""
    assert text_color(EMOTION_COLORS["disgust"]) == (0, 0, 0) and text_color(EMOTION_COLORS["fear"]) == (0, 0, 0)
    assert text_color(EMOTION_COLORS["sad"]) == (255, 255, 255) and text_color(EMOTION_COLORS["happy"]) == (0, 0, 0)


def test_a_small_face_never_enlarges_a_caption_asked_for_small() -> None:
    from fer_core.draw import _fit_caption

    assert _fit_caption("#1 happy 80%", (0, 100, 10, 110), (640, 480), 0.2, 1).font_scale <= 0.2  # was 0.35


def test_a_number_with_no_free_place_goes_inside_its_own_face() -> None:
    """Three faces stacked edge to edge: the middle one's number touches a neighbour above, inside (the face above's
    line) and below alike; it goes inside, over its own brow, not above over the face before it."""
    canvas = np.full((130, 160, 3), 255, np.uint8)
    faces = [
        ((30, 0, 130, 40), "sad", 0.5, 1),
        ((30, 41, 130, 81), "happy", 0.5, 2),
        ((30, 82, 130, 122), "angry", 0.5, 3),
    ]
    out = draw_faces(canvas, faces, thickness=2, font_scale=0.5)
    middle = np.all(out == EMOTION_COLORS["happy"], axis=2).sum(axis=1)  # yellow pixels per row
    assert middle[10:39].max() == 0  # nothing of it over the face above
    assert middle[44:60].min() > 12  # its caption filled inside its top, not just its two side lines (6 px a row)


def test_a_caption_below_a_face_at_the_bottom_edge_stays_on_the_picture() -> None:
    """Placed below a face that touches the picture's bottom, a number was drawn past the edge: not seen at all."""
    from fer_core.draw import _fit_caption

    left, top, right, bottom = _fit_caption("#3", (10, 80, 50, 99), (100, 100), 0.5, 1, "below").rect
    assert top >= 0 and bottom <= 100 and left >= 0 and right <= 100  # inside, at its bottom


def test_captions_that_only_touch_a_neighbour_do_not_overlap_it() -> None:
    """Touching is not covering: a caption that ends where the next face begins keeps its words."""
    from fer_core.draw import _overlap

    assert not _overlap((0, 0, 10, 10), (10, 0, 20, 10)) and not _overlap((0, 0, 10, 10), (0, 10, 10, 20))
    assert _overlap((0, 0, 11, 10), (10, 0, 20, 10)) and _overlap((0, 0, 10, 11), (0, 10, 10, 20))


def test_a_box_given_right_to_left_is_drawn_as_the_same_box() -> None:
    """(x2, y2, x1, y1) drew the rectangle, but its caption was sized to a negative width and placed at the far edge."""
    canvas = np.full((100, 120, 3), 255, np.uint8)
    drawn = draw_faces(canvas, [((10, 20, 60, 70), "happy", 0.9, 1)])
    np.testing.assert_array_equal(draw_faces(canvas, [((60, 70, 10, 20), "happy", 0.9, 1)]), drawn)


def test_annotations_scale_each_axis_by_its_own_factor() -> None:
    """A stream that changed its resolution: x by the width's factor, y by the height's."""
    from fer_core.draw import scale_annotations

    assert scale_annotations([((10, 20, 30, 40), "happy", 0.9, 1)], 2, 3) == [((20, 60, 60, 120), "happy", 0.9, 1)]


def test_a_caption_does_not_cover_a_neighbour_s_box_line() -> None:
    """OpenCV draws a line centred on the box's edge, so a thick line reaches half its width outside the box: a
    caption ending one pixel short of the neighbour's edge still covered that line, and is cut to the number."""
    from fer_core.draw import _fit_caption

    canvas = np.full((160, 240, 3), 255, np.uint8)
    face = (10, 60, 70, 120)
    full = _fit_caption(label_text("happy", 0.9, 1), face, (240, 160), 0.5, 3)  # as draw_faces sizes it at 4 px lines
    neighbour = (full.rect[2] + 1, 10, full.rect[2] + 60, 58)
    out = draw_faces(canvas, [(face, "happy", 0.9, 1), (neighbour, "sad", 0.9, 2)], thickness=4, font_scale=0.5)
    caption_row = np.all(out[full.rect[1] + 2] == EMOTION_COLORS["happy"], axis=1).sum()
    assert caption_row < (full.rect[2] - full.rect[0]) / 2  # "#1", not "#1 happy 90%"
