"""The webcam's relay hands the browser's sender the newest frame, never a backlog (app/webrtc_relay.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

import pytest
from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

from app import webrtc_relay


class NumberedFrames(MediaStreamTrack):
    """A camera of `count` frames, numbered 1, 2, ..., one a millisecond."""

    kind = "video"

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count, self.sent = count, 0

    async def recv(self) -> int:  # type: ignore[override]
        await asyncio.sleep(0.001)
        if self.sent == self.count:
            raise MediaStreamError
        self.sent += 1
        return self.sent


class NumberedSound(NumberedFrames):
    kind = "audio"


async def frames_seen_by_a_slow_consumer(relay: MediaRelay, source: NumberedFrames) -> tuple[int, int]:
    """The first frame, then the frame got after 20 more came in while the consumer was busy."""
    consumer = relay.subscribe(source)
    first = cast(int, await consumer.recv())  # the frames here are their numbers
    while source.sent < first + 20:
        await asyncio.sleep(0.002)
    later = cast(int, await consumer.recv())
    consumer.stop()
    while source.sent < source.count:  # let the relay's reader finish its source
        await asyncio.sleep(0.002)
    return first, later


@pytest.mark.parametrize(
    ("relay", "source", "newest"),
    [
        (webrtc_relay.LatestFrameRelay, NumberedFrames, True),
        (MediaRelay, NumberedFrames, False),
        (webrtc_relay.LatestFrameRelay, NumberedSound, False),  # a dropped audio frame is a gap in the sound
    ],
)
def test_a_slow_consumer_gets_the_newest_video_frame_not_the_next_in_a_queue(
    relay: type[MediaRelay], source: type[NumberedFrames], newest: bool
) -> None:
    """streamlit-webrtc's own (buffered) relay hands on the next queued frame: a sender slower than the camera
    shows the past, further behind by the second."""
    first, later = asyncio.run(frames_seen_by_a_slow_consumer(relay(), source(60)))
    assert later >= first + 20 if newest else later == first + 1


class ToldFrames(NumberedFrames):
    """Frames that ask to be told when a consumer takes them, as the webcam's drawn frames do (`opaque`)."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.told: list[int] = []

    async def recv(self) -> SimpleNamespace:  # type: ignore[override]
        number = await super().recv()
        return SimpleNamespace(number=number, opaque=SimpleNamespace(frame_sent=lambda: self.told.append(number)))


def test_only_the_frames_a_consumer_takes_are_told_they_were_sent() -> None:
    """The relay drops the frames a slow sender had no time for: counting the callback's frames overstated the
    video the browser got. Frames without a `frame_sent` (the camera's own) pass through untouched."""

    async def run() -> tuple[list[int], list[int]]:
        source = ToldFrames(60)
        consumer = webrtc_relay.LatestFrameRelay().subscribe(source)
        taken = [cast(SimpleNamespace, await consumer.recv()).number]
        while source.sent < taken[0] + 20:
            await asyncio.sleep(0.002)
        taken.append(cast(SimpleNamespace, await consumer.recv()).number)
        consumer.stop()
        while source.sent < source.count:
            await asyncio.sleep(0.002)
        return taken, source.told

    taken, told = asyncio.run(run())
    assert told == taken and taken[1] >= taken[0] + 20  # the 19 or more frames skipped were never told


def test_install_puts_the_relay_where_streamlit_webrtc_looks_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit_webrtc import relay as streamlit_webrtc_relay

    runtime = SimpleNamespace()
    assert webrtc_relay.install(runtime)
    monkeypatch.setattr(streamlit_webrtc_relay.Runtime, "instance", lambda: runtime)
    relay = streamlit_webrtc_relay.get_global_relay()
    assert isinstance(relay, webrtc_relay.LatestFrameRelay)
    assert webrtc_relay.install(runtime) and streamlit_webrtc_relay.get_global_relay() is relay  # once per server


def test_without_a_streamlit_server_nothing_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scripted run of the page (AppTest) has no server: the page goes on without the relay."""
    from streamlit.runtime.runtime import Runtime

    monkeypatch.setattr(Runtime, "exists", lambda: False)
    assert not webrtc_relay.install()
