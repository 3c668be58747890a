"""The label space shared by every model, file format and page: FER-2013's seven emotions."""

from __future__ import annotations

#: FER-2013 label ids are the positions in this tuple (angry 0 ... neutral 6).
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: FER-2013 "Usage" values: fit on Training, choose on PublicTest, report on PrivateTest.
TRAIN_SPLIT = "Training"
VAL_SPLIT = "PublicTest"
TEST_SPLIT = "PrivateTest"
SPLITS: tuple[str, ...] = (TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT)

#: Side of a FER-2013 face crop in pixels.
FER_SIZE = 48
