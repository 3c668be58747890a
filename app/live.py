"""The webcam's per-session live state, shared between the page script, the WebRTC callback and an analysis thread.

The video callback runs on a worker thread without a Streamlit context: it must not call `st.*` nor touch
`st.session_state`. So the page creates one `LiveStore` per browser session (kept in that session's state,
never module-global), configures it on every run, and gives the callback a closure over it; the page reads
the results back with `status()`. One lock guards every field. All image work is fer_core's.

The callback never waits for the models: it hands the newest frame to this session's analysis thread and
returns at once with the latest known faces drawn on the current frame, their boxes moved with the faces by optical
flow (`fer_core.motion`) from the frame they were found in: the callback keeps the last `CATCH_UP_FRAMES` frames'
grey copies, so a result that comes in late is followed through every frame since, not jumped to the newest one
(a jump leans on the search for the face's last look, which a turning head outgrows); where the faces were followed
to on the frame analysed next is what the tracker matches that frame's faces against, so a fast face keeps its id.
So slow models never slow the video
(only a machine too busy to draw every frame does: streamlit-webrtc then passes the callback only the newest and
drops the rest, and the page's video FPS, counted here, shows it; frames the browser's sender is too slow for are
dropped after the callback, by `webrtc_relay`, and counted as the rate sent), frames arriving while the models are
busy are skipped rather than queued, and streamlit-webrtc never kills the stream for a callback that took too long (it
allows 10 s).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import av
import numpy as np

from fer_core.draw import draw_faces, label_text, to_annotations, with_boxes
from fer_core.motion import BoxFollower, FlowFrame
from fer_core.pipeline import Box, Pipeline
from fer_core.tracking import (
    DEFAULT_ALPHA,
    DEFAULT_IOU_THRESHOLD,
    DEFAULT_MAX_MISSED,
    DEFAULT_SMOOTHING,
    DEFAULT_WINDOW,
    FaceTracker,
    TrackedFace,
)

log = logging.getLogger(__name__)
#: streamlit-webrtc silences its own logger (NullHandler): without this its thread errors vanish.
_webrtc_log = logging.getLogger("streamlit_webrtc")
if not any(isinstance(h, logging.StreamHandler) for h in _webrtc_log.handlers):
    _webrtc_log.addHandler(logging.StreamHandler())
    _webrtc_log.setLevel(logging.ERROR)

#: Timestamps kept for the FPS estimates (a moving window, so FPS follows load changes quickly).
FPS_WINDOW = 30
#: Results older than this are not drawn or reported (the camera stopped, or the models stalled).
STALE_AFTER_S = 5.0
#: The analysis thread ends after this long without a new frame (the stream stopped).
IDLE_EXIT_S = 5.0
#: Frames kept (grey, at most 320 px: 77 KB each) to follow a late result through: a second of camera. A result
#: older than that is drawn where it was found until the next one.
CATCH_UP_FRAMES = 30


def rate(times: list[float]) -> float:
    """Events per second over the window of timestamps."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


def current(times: Sequence[float], now: float) -> bool:
    """Whether the newest timestamp is recent enough for its rate (and its results) to describe the present."""
    return bool(times) and now - times[-1] < STALE_AFTER_S


def same_view(old: tuple[int, ...], new: tuple[int, ...], tolerance: float = 0.02) -> bool:
    """Whether a frame size change keeps the picture's aspect ratio (WebRTC lowering or raising the resolution,
    to the pixel) rather than bringing another view (another camera, a rotated phone): only then do the faces
    followed so far carry over."""
    (old_h, old_w), (new_h, new_w) = old[:2], new[:2]
    return abs((new_w / old_w) / (new_h / old_h) - 1.0) <= tolerance


@dataclass(frozen=True)
class TrackerSettings:
    smoothing: str = DEFAULT_SMOOTHING
    alpha: float = DEFAULT_ALPHA
    window: int = DEFAULT_WINDOW
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    max_missed: int = DEFAULT_MAX_MISSED
    #: Boxes move with the faces between analyses (drawing only: tracking and smoothing are the same either way).
    follow: bool = True

    @property
    def smooths(self) -> bool:
        """Whether a face's shown probabilities mix in earlier frames: not with smoothing off, an EMA weight of 1 or a
        window of 1 frame, where a label saying "smoothed" would contradict the setting just chosen."""
        return (self.smoothing == "ema" and self.alpha < 1.0) or (self.smoothing == "window" and self.window > 1)

    def build(self) -> FaceTracker:
        return FaceTracker(self.iou_threshold, self.max_missed, self.smoothing, self.alpha, self.window)

    def apply_to(self, tracker: FaceTracker) -> None:
        tracker.reconfigure(
            iou_threshold=self.iou_threshold,
            max_missed=self.max_missed,
            smoothing=self.smoothing,
            alpha=self.alpha,
            window=self.window,
        )


def parse_ice_servers(text: str) -> list[dict[str, Any]]:
    """The user's STUN/TURN list as WebRTC's RTCIceServer entries, checked here: a browser given a malformed entry
    (`"urls": 5`) fails the connection without a word. ValueError names the first problem."""
    servers = json.loads(text)
    if not isinstance(servers, list):
        raise ValueError("expected a JSON list of objects with 'urls'")
    for number, server in enumerate(servers, start=1):
        urls = server.get("urls") if isinstance(server, dict) else None
        url_list = [urls] if isinstance(urls, str) else urls
        if not isinstance(url_list, list) or not url_list or not all(isinstance(u, str) and u for u in url_list):
            raise ValueError(f"server {number}: 'urls' must be a URL string or a non-empty list of them")
        for key in ("username", "credential"):
            if key in server and not isinstance(server[key], str):
                raise ValueError(f"server {number}: '{key}' must be a string")
    return servers


@dataclass(frozen=True)
class LiveStatus:
    """A consistent copy of what the analysis last produced, safe to read from the page."""

    faces: list[TrackedFace] = field(default_factory=list)
    fps: float = 0.0
    video_fps: float = 0.0
    #: Frames of this stream the browser's sender took (`webrtc_relay`); 0 where no relay reports them.
    sent_fps: float = 0.0
    frames: int = 0
    error: str | None = None
    #: Track id of the face the live chart shows (`charted_face`): the store's, kept from one status to the next.
    charted: int | None = None

    @property
    def charted_face(self) -> TrackedFace | None:
        """The face the live chart shows (`follow`); the nearest one when no store chose."""
        chosen = next((face for face in self.faces if face.track_id == self.charted), None)
        return chosen or max(self.faces, key=box_area, default=None)

    def text(self) -> str:
        """One line such as 'faces: 1 (happy 62%) · 14.8 FPS' (analysed frames per second); with several faces the
        charted one's number comes first: 'faces: 2 (#2 happy 62%)'."""
        face = self.charted_face
        number = face.track_id if face is not None and len(self.faces) > 1 else None
        detail = f" ({label_text(face.label, face.confidence, number)})" if face is not None else ""
        return f"faces: {len(self.faces)}{detail} · {self.fps:.1f} FPS"


#: The live chart follows the face nearest the camera and moves to another one only when that one's box is this
#: many times larger (1.22 times as wide): two people at about the same distance swapped the chart between them at
#: almost every update, the line above it reading "happy 0.67", then "happy 0.22", without saying whose.
FOLLOW_SWITCH_AREA = 1.5


def box_area(face: TrackedFace) -> float:
    return float((face.box[2] - face.box[0]) * (face.box[3] - face.box[1]))


def follow(faces: Sequence[TrackedFace], followed: int | None) -> int | None:
    """The track id the live chart follows next: the nearest face (the largest box), unless the one followed so far
    is still in view and no face is `FOLLOW_SWITCH_AREA` times larger than it."""
    nearest = max(faces, key=box_area, default=None)
    held = next((face for face in faces if face.track_id == followed), None)
    if nearest is None or (held is not None and box_area(nearest) <= FOLLOW_SWITCH_AREA * box_area(held)):
        return followed if held is not None else None
    return nearest.track_id


@dataclass(frozen=True)
class StreamSpan:
    """The newest camera stream as the page can describe it after it ended: a STOP and a lost connection look
    alike from the server (both end the track), so the page says when the frames stopped, not why."""

    seconds: float  # from its first frame to its last
    idle: float  # since its last frame
    analysed: int

    def summary(self, wall_now: float) -> str:
        """E.g. 'The last stream ran 1 min 12 s (812 frames analysed); its last frame came at 22:14:05 (server
        time).' The server's clock: the page cannot know the browser's time zone."""
        minutes, seconds = divmod(round(self.seconds), 60)
        length = f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
        ended = time.strftime("%H:%M:%S", time.localtime(wall_now - self.idle))
        return (
            f"The last stream ran {length} ({self.analysed} frames analysed); its last frame came at {ended} (server "
            "time)."
        )


class SentNotice:
    """A drawn frame's `opaque`: `webrtc_relay` calls its `frame_sent` when the browser's sender takes the frame.

    One object per frame: PyAV files a frame's `opaque` under the object's id and forgets it when any frame holding
    it is freed, so one object shared by every frame (the store itself) was lost to all of them within a dozen.
    """

    __slots__ = ("frame_sent",)

    def __init__(self, frame_sent: Callable[[], None]) -> None:
        self.frame_sent = frame_sent


class LiveStore:
    """Thread-safe hand-over between one session's page runs, its WebRTC callback and its analysis thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  # injectable, so a test can pause the camera without sleeping
        self._lock = threading.Condition()
        self._pipe: Pipeline | None = None
        self._settings = TrackerSettings()
        self._tracker = self._settings.build()
        self._analysed_at: deque[float] = deque(maxlen=FPS_WINDOW)
        self._received_at: deque[float] = deque(maxlen=FPS_WINDOW)
        self._sent_at: deque[float] = deque(maxlen=FPS_WINDOW)
        self._frame: np.ndarray | None = None
        self._pending: np.ndarray | None = None
        self._faces: list[TrackedFace] = []
        self._frames = 0
        self._stream_started = 0.0  # the newest stream's first frame (StreamSpan)
        self._stream_last: float | None = None  # and its last; None before any
        self._playing_since: float | None = None  # the page's word that the browser shows the stream (`playing`)
        self._stream_analysed = 0
        self._error: str | None = None  # the analysis's (cleared by the next analysed frame)
        self._draw_error: str | None = None  # the callback's own (cleared by the next frame it draws)
        self._charted: int | None = None  # the track id the live chart follows (`follow`)
        self._worker: threading.Thread | None = None
        self._stream = 0  # counts restarts: an analysis begun before one must not feed the fresh tracker
        self._frame_number = 0  # of the newest frame received, to name the frame each result was found in
        self._pending_number = 0
        self._faces_number: int | None = None  # the frame `_faces` were found in (None: not a camera frame)
        self._flow_frames: deque[tuple[int, FlowFrame]] = deque(maxlen=CATCH_UP_FRAMES)
        self._follower = BoxFollower()
        self._followed: tuple[int, int] | None = None  # (frame anchored on, last frame followed to)
        #: (frame number, {track id: box}) for each frame the drawn faces were followed to, for the tracker to match
        #: the next result against where the faces were on its frame (not where they were found before)
        self._moved: deque[tuple[int, dict[int, Box]]] = deque(maxlen=CATCH_UP_FRAMES)

    def configure(self, pipe: Pipeline, settings: TrackerSettings) -> None:
        """Called on every page run; a changed smoothing setting applies to the faces already followed."""
        with self._lock:
            self._pipe = pipe
            if settings != self._settings:
                self._settings = settings
                settings.apply_to(self._tracker)

    def process(self, image_rgb: np.ndarray) -> np.ndarray:
        """The WebRTC callback's work: queue the frame for analysis, return it with the latest faces drawn."""
        now = self._clock()
        flow_frame = FlowFrame.of(image_rgb) if self._settings.follow else None
        with self._lock:
            paused = bool(self._received_at) and now - self._received_at[-1] > STALE_AFTER_S
            old_shape = None if self._frame is None else self._frame.shape
            resized = old_shape is not None and image_rgb.shape != old_shape
            if paused or (old_shape is not None and resized and not same_view(old_shape, image_rgb.shape)):
                self._restart()  # a new stream, or another camera picked (its frames come on the same track)
            elif old_shape is not None and resized:
                self._resize(old_shape, image_rgb.shape)  # WebRTC adapting to bandwidth
            if not self._received_at:  # the first frame of a stream
                self._stream_started, self._stream_analysed = now, 0
            self._stream_last = now
            self._frame = self._pending = image_rgb
            self._frame_number += 1
            self._pending_number = self._frame_number
            if flow_frame is not None:
                self._flow_frames.append((self._frame_number, flow_frame))
            else:  # switched off: frames go unkept, so nothing followed so far may be followed across the gap
                self._forget_motion()
            self._received_at.append(now)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="fer-live-analysis", daemon=True)
                self._worker.start()
            self._lock.notify()  # first: drawing this frame may fail, and the analysis must go on regardless
            fresh = current(self._analysed_at, now)
            faces = self._faces if fresh else []
            annotations = to_annotations(faces)
            if faces and self._settings.follow:
                annotations = with_boxes(annotations, self._followed_boxes(faces))
        return draw_faces(image_rgb, annotations) if annotations else image_rgb

    def _followed_boxes(self, faces: list[TrackedFace]) -> list[Box]:
        """The faces' boxes moved from the frame they were found in to the newest one (lock held). A new result is
        anchored on its own frame and followed through every kept frame since; after that, one step per frame."""
        found_in = self._faces_number
        if self._followed is None or self._followed[0] != found_in:
            kept = dict(self._flow_frames)  # only for a new result: the frame it was found in
            if found_in is None or found_in not in kept:  # not a camera frame, or older than the frames kept
                return [face.box for face in faces]
            self._follower.anchor(kept[found_in], [face.box for face in faces])
            self._followed = (found_in, found_in)
            self._moved.clear()
        anchored, last = self._followed
        for number, flow_frame in self._flow_frames:
            if number > last:
                self._follower.follow(flow_frame)
                self._moved.append((number, self._follower.followed_by([face.track_id for face in faces])))
                last = number
        self._followed = (anchored, last)
        return self._follower.boxes

    def _moved_to(self, number: int | None) -> dict[int, Box] | None:
        """Where the faces drawn were followed to on camera frame `number`, by track id (lock held); None when they
        were not followed that far (following off, a frame older than the last result, or not a camera frame)."""
        return next((moved for kept, moved in self._moved if kept == number), None)

    def callback(self, frame: av.VideoFrame) -> av.VideoFrame:
        """streamlit-webrtc's `video_frame_callback`. An exception here would end the video for good (the worker
        raises it again on every later frame) with nothing on the page: the frame goes back as it came, and the
        failure is shown like an analysis failure."""
        try:
            annotated = self.process(frame.to_ndarray(format="rgb24"))
            drawn = av.VideoFrame.from_ndarray(annotated, format="rgb24")
            drawn.opaque = SentNotice(self.frame_sent)  # called by the relay when the browser's sender takes it
        except Exception as err:
            self._record_error(err, "live frame drawing failed", drawing=True)
            return frame
        with self._lock:
            self._draw_error = None
        return drawn

    def frame_sent(self) -> None:
        """The browser's sender took a frame drawn here (`webrtc_relay`): the frames it was too slow for are dropped
        before it, so the drawn rate alone overstated what the video showed."""
        now = self._clock()
        with self._lock:
            self._sent_at.append(now)

    def end_stream(self) -> None:
        """The browser's camera track ended (STOP): whatever comes next is a new stream, however soon it starts.
        Another device picked does not end the track (streamlit-webrtc swaps it on the same connection): `process`
        tells that from the frame size, where it can."""
        with self._lock:
            self._restart()
            self._frame = self._pending = None

    def _record_error(self, err: Exception, what: str, drawing: bool = False) -> None:
        """Show the failure on the page; log its traceback once, not for every frame while it keeps failing. The
        callback's failures are kept apart (`drawing`): frames analysed meanwhile must not wipe them."""
        message = f"{type(err).__name__}: {err}"
        with self._lock:
            if drawing:
                repeated, self._draw_error = message == self._draw_error, message
            else:
                repeated, self._error = message == self._error, message
        if repeated:
            log.debug("%s again: %s", what, message)
        else:
            log.exception(what)

    def _resize(self, old: tuple[int, ...], new: tuple[int, ...]) -> None:
        """The same stream at another resolution: tracks, their smoothing and the boxes drawn go on in the new
        pixels (dropped, the boxes vanished for a few frames at each of the changes a busy browser makes); a frame in
        the models now (old size) is dropped. The follower is anchored first, while the boxes are in the pixels of
        the frame they were found in, and takes frames of the new size itself."""
        self._stream += 1
        if self._faces and self._settings.follow:
            self._followed_boxes(self._faces)
        self._moved.clear()  # in the old pixels, and for a frame whose result is now dropped
        sx, sy = new[1] / old[1], new[0] / old[0]
        self._faces = [
            replace(face, box=(face.box[0] * sx, face.box[1] * sy, face.box[2] * sx, face.box[3] * sy))
            for face in self._faces
        ]
        self._tracker.rescale(sx, sy)

    def _restart(self) -> None:
        """The camera was stopped and started again: old timestamps would drag the FPS towards zero for a window's
        worth of frames, and old tracks would carry their ids, smoothed probabilities and boxes into the new
        stream."""
        self._stream += 1
        self._received_at.clear()
        self._sent_at.clear()
        self._analysed_at.clear()
        self._faces = []
        self._forget_motion()
        self._tracker.reset()

    def _forget_motion(self) -> None:
        """A new stream (or following switched off) is not followed into: the kept frames and followed boxes go."""
        self._flow_frames.clear()
        self._follower.reset()
        self._followed = None
        self._faces_number = None
        self._moved.clear()

    def _work(self) -> None:
        """Analyse the newest pending frame, again and again; exit when frames stop coming."""
        while True:
            with self._lock:
                if not self._lock.wait_for(lambda: self._pending is not None, timeout=IDLE_EXIT_S):
                    self._worker = None
                    return
                image, stream, number, self._pending = self._pending, self._stream, self._pending_number, None
            assert image is not None  # the wait above returned because a frame was pending
            try:
                self.analyse(image, stream, number)
            except Exception as err:  # a failure past the models (the tracker) must not end live analysis unseen
                self._record_error(err, "live frame tracking failed")

    def analyse(self, image_rgb: np.ndarray, stream: int | None = None, number: int | None = None) -> list[TrackedFace]:
        """Detect, classify, track and smooth one frame (synchronously); failures are reported, not raised.
        `stream` is the stream the frame arrived in (read with the frame: a restart or resize in between makes it
        stale); None means the current one. `number` is the camera frame's (from `process`), for following its
        boxes to later frames; None draws them where they were found."""
        with self._lock:
            pipe = self._pipe
            stream = self._stream if stream is None else stream
        if pipe is None:
            return []
        try:
            faces = pipe(image_rgb).faces  # outside the lock: the page and the callback never wait for a model
        except Exception as err:
            self._record_error(err, "live frame analysis failed")
            return []
        with self._lock:
            if stream != self._stream:  # the camera restarted while this frame was in the models: it is stale
                return []
            tracked = self._tracker.update(faces, self._moved_to(number))
            self._faces, self._faces_number = tracked, number
            self._frames += 1
            self._stream_analysed += 1
            self._analysed_at.append(self._clock())
            self._error = None
        return tracked

    def status(self) -> LiveStatus:
        now = self._clock()
        with self._lock:
            analysed, received, sent = list(self._analysed_at), list(self._received_at), list(self._sent_at)
            fresh = current(analysed, now)
            faces, frames, error = list(self._faces) if fresh else [], self._frames, self._error or self._draw_error
            self._charted = charted = follow(faces, self._charted)
        return LiveStatus(
            faces,
            rate(analysed) if fresh else 0.0,
            rate(received) if current(received, now) else 0.0,
            rate(sent) if current(sent, now) else 0.0,
            frames,
            error,
            charted,
        )

    def last_stream(self) -> StreamSpan | None:
        """The newest stream, ended or not; None before the first frame. Kept past STOP (unlike the rates), for the
        page to say when the video stopped: a connection lost under load ends it without a word otherwise."""
        now = self._clock()
        with self._lock:
            if self._stream_last is None:
                return None
            return StreamSpan(self._stream_last - self._stream_started, now - self._stream_last, self._stream_analysed)

    def playing(self, on: bool) -> None:
        """The page reports on each run whether streamlit-webrtc says the stream plays, for `stalled_for`."""
        now = self._clock()
        with self._lock:
            if not on:
                self._playing_since = None
            elif self._playing_since is None:
                self._playing_since = now

    def stalled_for(self) -> float:
        """Seconds without a camera frame while the stream is said to play (0 when not playing): a connection lost
        under load can leave the page "playing" a frozen video."""
        now = self._clock()
        with self._lock:
            if self._playing_since is None:
                return 0.0
            return now - max(self._playing_since, self._stream_last or self._playing_since)

    def latest_frame(self) -> np.ndarray | None:
        """The last raw camera frame (no boxes drawn): what a snapshot sends to the comparison page. None when the
        camera has sent nothing for `STALE_AFTER_S` (after STOP): an old frame would pass for the present one."""
        now = self._clock()
        with self._lock:
            if self._frame is None or not self._received_at or now - self._received_at[-1] > STALE_AFTER_S:
                return None
            return self._frame.copy()
