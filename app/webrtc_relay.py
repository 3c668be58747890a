"""Keep the webcam's shown video at the present: streamlit-webrtc's frame relay, handing on the newest frame only.

streamlit-webrtc passes every track through one server-wide aiortc `MediaRelay`, subscribing each consumer *buffered*:
an unbounded queue per consumer. The callback's output gets one frame per camera frame, and the WebRTC sender that
encodes them for the browser takes them from that queue. On a busy machine (the models, the callback and the sender
share two cores and one interpreter lock) the sender drains it more slowly than the camera fills it, so the video
the page shows fell further and further behind the camera. In a headless Chromium at 640x480 on this 2-core machine
the queue grew to 132 frames in 20 s, and over a two-minute run the shown video fell from 20 s to 84 s behind the
frames the server was drawing.

`LatestFrameRelay` subscribes every consumer of a video track unbuffered (aiortc's `buffered=False`): each takes the
newest frame when it is ready for one, and frames it was too slow for are dropped rather than queued, so what the
browser shows is at most a frame or two old. Audio stays buffered (a dropped audio frame is a gap in the sound), and
the relay is server-wide: a page that recorded video through streamlit-webrtc would lose frames too (the webcam page,
the only one using WebRTC, records nothing).

Dropping frames here also means the frames the callback drew are no longer the frames the browser gets. So each video
consumer tells a frame's owner when it takes the frame: a frame whose `opaque` has a `frame_sent()` method (the
webcam's `LiveStore` marks the frames it draws so) gets that call, and the page can show the rate the browser was sent
as well as the rate it drew.
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRelay

log = logging.getLogger(__name__)


class TellingConsumer(MediaStreamTrack):
    """A relay consumer that calls `frame.opaque.frame_sent()`, where a frame has it, as its reader takes the frame:
    frames the relay dropped are never taken, so their owner counts only what went on to the browser."""

    def __init__(self, consumer: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = consumer.kind
        self._consumer = consumer

    async def recv(self) -> Any:
        frame = await self._consumer.recv()
        frame_sent = getattr(getattr(frame, "opaque", None), "frame_sent", None)
        if callable(frame_sent):
            frame_sent()
        return frame

    def stop(self) -> None:
        self._consumer.stop()
        super().stop()


class LatestFrameRelay(MediaRelay):
    """An aiortc relay whose video consumers always get the newest frame, never a backlog, and tell its owner they
    took it (see the module's docstring)."""

    def subscribe(self, track: MediaStreamTrack, buffered: bool = True) -> MediaStreamTrack:
        """A consumer of `track`; of a video track, one that skips to the newest frame whatever `buffered` says
        (streamlit-webrtc asks for a buffer by default, for no reason that holds for a live view)."""
        if track.kind != "video":
            return super().subscribe(track, buffered=buffered)
        return TellingConsumer(super().subscribe(track, buffered=False))


def install(holder: object | None = None) -> bool:
    """Make `LatestFrameRelay` the relay streamlit-webrtc uses from now on (call before `webrtc_streamer`; the
    streams already running keep theirs). streamlit-webrtc keeps its relay as an attribute of Streamlit's `Runtime`
    (`holder`, by default the running one). False where there is no Streamlit server (a scripted run), and False
    with a log line for a streamlit-webrtc that keeps its relay elsewhere: the page then works as before, with the
    backlog."""
    try:
        from streamlit.runtime.runtime import Runtime
        from streamlit_webrtc import relay as webrtc_relay

        name = webrtc_relay._SERVER_GLOBAL_RELAY_ATTR_NAME_
        if holder is None:
            if not Runtime.exists():
                return False
            holder = Runtime.instance()
    except (ImportError, AttributeError) as err:
        log.warning("streamlit-webrtc's frame relay could not be replaced (%s): the shown video may lag", err)
        return False
    if not isinstance(getattr(holder, name, None), LatestFrameRelay):
        setattr(holder, name, LatestFrameRelay())
    return True


__all__ = ["LatestFrameRelay", "TellingConsumer", "install"]
