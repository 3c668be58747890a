"""Per-session memo store: what this session already computed about its uploads, kept across reruns.

Streamlit reruns the whole page script on every click, so without it each slider move or model pick decoded and
analysed every upload again (up to 1.5 s to decode a 12 MP JPEG, seconds to analyse a crowd). The stores live in the
user's own `st.session_state`, never shared between sessions as the models are (`st.cache_resource`), and are
bounded: `remember` evicts the least recently used entries, but what this page run still reads only last, so a page
with more uploads than fit redoes only the excess, not every file on every click.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import numpy as np
import streamlit as st

from app.ui import DetectorSettings
from fer_core.imageio import frame_count, load_image_sized
from fer_core.pipeline import ImageResult, Pipeline

T = TypeVar("T")

#: How many analysed uploads a session remembers, so moving a slider does not re-run detection.
MEMO_SIZE = 64


def file_digest(data: bytes) -> str:
    """What the stores key a file by: its bytes, whatever it is named or whichever page it was dropped on."""
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def session_memo(
    namespace: str, key: tuple[Any, ...], compute: Callable[[], T], needed: Collection[tuple[Any, ...]] = ()
) -> T:
    """Per-session LRU of `MEMO_SIZE` entries: results survive reruns (sliders, toggles) but are never shared between
    users. `needed`: the keys this page run reads (see `remember`)."""
    store: OrderedDict[tuple[Any, ...], Any] = st.session_state.setdefault(f"_memo_{namespace}", OrderedDict())
    if key in store:
        store.move_to_end(key)
        return store[key]
    value = compute()
    remember(store, key, value, lambda: len(store) > MEMO_SIZE, needed)
    return value


def remember(
    store: OrderedDict[Any, Any], key: Any, value: Any, too_big: Callable[[], bool], needed: Collection[Any] = ()
) -> None:
    """Keep `value`, evicting the least recently used entries while `too_big()`, but entries in `needed` (what this
    page run reads) only after every other. When only those would be left to evict, the new value is not kept.

    A page reads its uploads in the same order on every run: a plain LRU smaller than that scan evicts each entry
    just before it is read again, so with one file too many every click decoded and analysed every file again.
    This way the files that fit stay, and only the rest are redone."""
    store[key] = value
    while too_big():
        victim = next((old for old in store if old != key and old not in needed), None)
        if victim is None:
            if needed and len(store) > 1:
                del store[key]
            return
        del store[victim]


#: Decoded pixels a session keeps, so a click (a model picker, a slider) does not decode every upload again (a 12 MP
#: JPEG takes 0.2-1.5 s). Bounded by size, not count: pixels take about ten times the bytes of the file.
DECODED_BUDGET_BYTES = 512 * 2**20


def decoded_upload(
    name: str, data: bytes, digest: str, needed: Collection[tuple[str, str]] = ()
) -> tuple[np.ndarray, tuple[int, int]]:
    """`load_image_sized` of an upload, remembered for this session (failures are not: they are fast and raise).
    `needed`: the (digest, name) of every upload this page run reads (see `remember`).

    The pixels are shared between reruns, so they are made read-only: an in-place edit would corrupt the next run.
    """
    store: OrderedDict[tuple[str, str], tuple[np.ndarray, tuple[int, int]]] = st.session_state.setdefault(
        "_memo_decoded", OrderedDict()
    )
    key = (digest, name)
    if key in store:
        store.move_to_end(key)
        return store[key]
    image, file_size = load_image_sized(data, name=name)
    image.setflags(write=False)
    remember(store, key, (image, file_size), lambda: decoded_bytes(store) > DECODED_BUDGET_BYTES, needed)
    return image, file_size


def decoded_bytes(store: OrderedDict[tuple[str, str], tuple[np.ndarray, tuple[int, int]]]) -> int:
    return sum(pixels.nbytes for pixels, _ in store.values())


def upload_frames(data: bytes, digest: str) -> int:
    """`frame_count` of an upload, remembered for this session."""
    return session_memo("frames", (digest,), lambda: frame_count(data))


#: `session_memo` namespace of photo results, shared by the Photos and Compare pages: the same photo with the same
#: settings was analysed again (seconds for a crowd) on moving from one page to the other.
IMAGE_RESULTS = "image_results"


def image_result_key(digest: str, settings: DetectorSettings, pipe: Pipeline) -> tuple[Any, ...]:
    """What a photo's result depends on: its bytes, the detector settings and weights (`DetectorSettings.key`) and
    what the page's pipeline adds to them (the classifiers' TTA set, the crop margin), so pages that share the
    results never serve one another a result computed otherwise."""
    return (digest, *settings.key, pipe.ensemble.tta, pipe.face_margin)


def image_result(
    digest: str,
    image: np.ndarray,
    file_size: tuple[int, int],
    settings: DetectorSettings,
    pipe: Pipeline,
    needed: Collection[tuple[Any, ...]] = (),
) -> ImageResult:
    """`pipe(image, file_size)`, remembered for this session under `image_result_key` in the shared namespace
    (`needed`: see `remember`)."""
    key = image_result_key(digest, settings, pipe)
    return session_memo(IMAGE_RESULTS, key, lambda: pipe(image, file_size), needed)
