"""Emotions through a video: every Nth frame analysed, faces tracked and smoothed, an annotated copy written.

    python -m fer_core.video clip.mp4 --out reports/clip --every 2

Writes DIR/annotated.mp4 (H.264, yuv420p, faststart: plays in browsers; MPEG-4 Part 2 where no H.264
encoder exists) and DIR/faces.csv (one row per face per analysed frame: frame, time_s, face_id, box, the
seven smoothed probabilities, label, confidence). Between analysed frames the last labels are drawn on boxes moved
with the faces by optical flow (`fer_core.motion`; `--no-follow` draws them where they were found).

Decoding and encoding use PyAV (FFmpeg), which reads mp4, mov, webm, avi and mkv alike and honours the
rotation phones store in the container. Frames are streamed: no more than one decoded frame is held at a time
(only the CSV rows, a few hundred bytes per face per analysed frame, grow with the video's length).
Audio is not copied. Each frame keeps its source time, so variable-frame-rate inputs (browser recordings) play as
recorded. Frames over 1920 px are analysed and written scaled down; the CSV's boxes stay in the source's pixels.
A stream that changes resolution part-way keeps its tracks (their boxes are rescaled); its later frames are
fitted into the first frame's size in the annotated video, and their CSV boxes are in their own frame's pixels.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from fer_core import cli
from fer_core.cli import UserInputError
from fer_core.detection import BACKENDS as DETECTOR_BACKENDS
from fer_core.detection import (
    DEFAULT_CONF,
    PHOTO_IMGSZ,
    VIDEO_IMGSZ,
    fallback_unannounced_where_refused,
    refusal_of_fallback,
)
from fer_core.draw import Annotation, draw_faces, scale_annotations, to_annotations, with_boxes
from fer_core.imageio import MAX_PIXELS
from fer_core.labels import EMOTIONS
from fer_core.motion import BoxFollower, FlowFrame
from fer_core.pipeline import DEFAULT_WEIGHTS, Pipeline
from fer_core.tracking import (
    DEFAULT_ALPHA,
    DEFAULT_IOU_THRESHOLD,
    DEFAULT_MAX_MISSED,
    DEFAULT_SMOOTHING,
    DEFAULT_WINDOW,
    SMOOTHING,
    FaceTracker,
    TrackedFace,
)

ANNOTATED_NAME = "annotated.mp4"
CSV_NAME = "faces.csv"
#: Where each result is written before it replaces an earlier one whole (hidden, in the same folder).
PARTIAL_NAMES = {name: f".{name}.partial" for name in (ANNOTATED_NAME, CSV_NAME)}
CSV_COLUMNS = ["frame", "time_s", "face_id", "x1", "y1", "x2", "y2", *EMOTIONS, "label", "confidence"]
#: Frame rate assumed when a container states none.
FALLBACK_FPS = 25.0
#: Rates at or above this are a container's clock, not its frames: WebM from a browser's MediaRecorder states
#: 1000 (its millisecond time base) as the average rate.
IMPLAUSIBLE_FPS = 1000.0
#: FFmpeg demuxers that open files which are not videos: text drawn as ANSI art (picked by a .txt/.nfo/.asc
#: suffix) and single pictures.
NOT_VIDEO_FORMATS = {"tty": "a text file", "image2": "a still image"}
#: Frames are analysed and written with their longer side at most this (browsers play the H.264 it makes, and
#: memory stays bounded: a 36 KB upload of two 12000x12000 frames took 2.7 GB at full size). CSV boxes stay in the
#: source's pixels.
MAX_VIDEO_SIDE = 1920
#: Time base of the annotated video: frames keep their source timestamps, so a variable-rate recording keeps
#: its timing (and matches the CSV's time_s) instead of being replayed at one nominal rate. 1/60000 keeps
#: millisecond (WebM) times exact and stays under the 65535 the MPEG-4 Part 2 fallback encoder accepts.
OUTPUT_TIME_BASE = Fraction(1, 60000)
#: Progress is reported every this many frames when the total is unknown (a callback may also cancel there).
UNKNOWN_TOTAL_STEP = 25
#: Top-level boxes an MP4 or QuickTime MOV starts with (old MOVs have no `ftyp`: `wide` then `mdat`).
QUICKTIME_FIRST_BOXES = {b"ftyp", b"wide", b"free", b"skip", b"mdat", b"pnot"}
#: What the decoder may raise on hostile or damaged input (UnicodeDecodeError is a ValueError).
_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError, RuntimeError)
#: Damaged packets read before giving up on a file in which no frame has decoded yet.
MAX_BAD_PACKETS_BEFORE_A_FRAME = 100


class VideoError(UserInputError):
    """The input is not a readable video; the message names the file and the problem."""


class VideoCancelled(Exception):
    """`analyse_video` was asked to stop (its `stop` event); nothing was written."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (sizes after applying its rotation)."""

    path: Path
    width: int
    height: int
    fps: float
    frames: int | None
    duration_s: float | None
    codec: str
    rotation: int
    frames_estimated: bool = False  # `frames` is duration x fps: the container stores no count (WebM, MKV)
    duration_shared: bool = False  # `duration_s` is the container's, over its other streams (sound) too
    count_may_exceed_play: bool = False  # mp4/mov edit lists, AVI dropped-frame slots: `duration_s` says what plays


@dataclass(frozen=True)
class Frame:
    """One decoded, upright frame: index from 0, time in seconds from the first frame, HxWx3 uint8 RGB."""

    index: int
    time_s: float
    image: np.ndarray


@dataclass
class VideoSummary:
    """What `analyse_video` did and where it put the results; `faces` is the table also saved as CSV."""

    source: Path
    annotated_path: Path
    csv_path: Path
    frames: int
    analysed_frames: int
    every: int
    fps: float
    width: int
    height: int
    codec: str
    duration_s: float  # from the frames' own timestamps: frames / fps is wrong for a variable-rate recording
    track_ids: list[int] = field(default_factory=list)
    faces: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CSV_COLUMNS))
    announced_frames: int | None = None  # the container's own count (None when it gives none)
    announced_duration_s: float | None = None  # the video stream's duration (None when the file gives none)
    skipped_packets: int = 0  # damaged packets the decoder refused, whose frames are missing from the results
    read_error: str | None = None  # why reading the file stopped part-way (the results end there)
    corrupt_frames: int = 0  # frames the decoder flagged as damaged: shown patched up, as players show them
    count_may_exceed_play: bool = False  # see `VideoInfo`: then enough time also makes a whole clip

    @property
    def ended_early(self) -> str | None:
        """Why the results may cover only part of the clip: FFmpeg stops quietly at a truncated file's end, so a
        download cut short gave partial results without a word. A stored count rules where there is one, except
        where it may exceed the frames that play: an mp4 or mov trimmed without re-encoding stores every sample but
        plays (and decodes) only the kept part, and an AVI counts the slots of dropped frames; there the duration
        (for an AVI, its header's span) tells. Without a stored count (WebM, MKV) only the time counts: a count
        estimated from the duration and the opening rate would call a recording whose rate drops part-way (a
        webcam in low light) truncated. The 10 % margin allows for containers' rounding."""
        announced_frames, announced_s = self.announced_frames or 0, self.announced_duration_s or 0.0
        enough_frames = bool(announced_frames) and self.frames >= 0.9 * announced_frames
        enough_time = bool(announced_s) and self.duration_s >= 0.9 * announced_s
        time_decides = not self.announced_frames or self.count_may_exceed_play
        if enough_frames or (enough_time and time_decides) or not (self.announced_frames or self.announced_duration_s):
            return None
        if self.announced_frames:
            decoded = f"only {self.frames} of the {self.announced_frames} frames the file announces"
            covered = f"its first {self.duration_s:.1f} s only"
        else:
            decoded = (
                f"only the first {self.duration_s:.1f} s of the {self.announced_duration_s:.1f} s the file announces"
            )
            covered = "that part only"
        return (
            f"{self.source.name}: {decoded} could be decoded; it may be truncated or damaged, and the results "
            f"cover {covered}"
        )

    @property
    def damaged(self) -> str | None:
        """Frames lost inside the clip: a damaged packet is skipped, as players do, instead of ending the analysis;
        a read error ends it where it happened, with the frames before it kept."""
        problems = []
        if self.corrupt_frames:
            problems.append(
                f"{self.corrupt_frames} frame(s) were decoded with errors and patched up, as players do; they and the "
                "frames that follow from them may show damage, where faces can be missed or mislabelled"
            )
        if self.skipped_packets:
            problems.append(
                f"{self.skipped_packets} damaged packet(s) could not be decoded and were skipped; the frames they "
                "held are missing from the results"
            )
        if self.read_error:
            problems.append(
                f"reading the file failed after {self.frames} frames ({self.read_error}); the results end there"
            )
        return f"{self.source.name}: {'; '.join(problems)}" if problems else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-face table)."""
        return {
            "source": str(self.source),
            "annotated": str(self.annotated_path),
            "csv": str(self.csv_path),
            "frames": self.frames,
            "analysed_frames": self.analysed_frames,
            "every": self.every,
            "fps": round(self.fps, 3),
            "width": self.width,
            "height": self.height,
            "duration_s": round(self.duration_s, 3),
            "codec": self.codec,
            "faces_tracked": len(self.track_ids),
            "announced_frames": self.announced_frames,
            "announced_duration_s": self.announced_duration_s,
            "ended_early": self.ended_early,
            "skipped_packets": self.skipped_packets,
            "read_error": self.read_error,
            "corrupt_frames": self.corrupt_frames,
            "damaged": self.damaged,
        }


def _open(path: Path) -> tuple[Any, Any]:
    """Open a container and its first video stream, or raise `VideoError` saying why not."""
    if not path.is_file():
        raise VideoError(f"{path}: {'a folder, not a video file' if path.is_dir() else 'no such file'}")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="replace")
    except _DECODE_ERRORS as err:
        if mp4_without_index(path):
            raise VideoError(
                f"{path}: an incomplete MP4/MOV: its index (the moov box, which phones and cameras write last) is "
                "missing, as when a recording or a download is cut short, so no frame can be found"
            ) from err
        reason = getattr(err, "strerror", None) or str(err)  # "[Errno 1094995529] Invalid data ...: 'x.mp4'" before
        raise VideoError(f"{path}: not a video file, or a format we cannot read ({reason})") from err
    not_video = not_video_kind(container.format.name)
    if not_video:
        container.close()
        raise VideoError(f"{path}: {not_video}, not a video")
    moving = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not moving:  # an audio file's cover art is a one-picture "video" stream, not a video
        container.close()
        raise VideoError(f"{path}: the file has no video stream")
    stream = moving[0]
    if stream.codec_context is None:
        container.close()
        raise VideoError(f"{path}: the video stream is damaged or uses a codec we cannot decode")
    stream.thread_type = "AUTO"
    return container, stream


def mp4_without_index(path: Path) -> bool:
    """Whether `path` is an MP4/MOV (`QUICKTIME_FIRST_BOXES`) whose top-level boxes end without a `moov`: it was
    cut before its index, which FFmpeg reports only as "Invalid data", as it does for a file that is no video."""
    try:
        total = path.stat().st_size
        with open(path, "rb") as handle:
            offset = 0
            for _ in range(10_000):  # a real file has a handful of top-level boxes
                handle.seek(offset)
                header = handle.read(16)
                if len(header) < 8:
                    return offset > 0
                size, kind = int.from_bytes(header[:4], "big"), header[4:8]
                if offset == 0 and kind not in QUICKTIME_FIRST_BOXES:
                    return False
                if kind == b"moov":
                    return False
                size = int.from_bytes(header[8:16], "big") if size == 1 else (total - offset if size == 0 else size)
                if size < 8:
                    return False  # damaged boxes: not this case
                offset += size
                if offset >= total:
                    return True
    except OSError:
        return False
    return False


def _format_is(container: Any, name: str) -> bool:
    """Whether FFmpeg opened `container` with the demuxer `name` ("mov" also reads mp4, "avi" AVI)."""
    return name in container.format.name.split(",")


def not_video_kind(format_names: str) -> str | None:
    """What a container is when FFmpeg opened it with a demuxer for text or pictures (None for a real video)."""
    for name in format_names.split(","):
        if name in NOT_VIDEO_FORMATS:
            return NOT_VIDEO_FORMATS[name]
        if name.endswith("_pipe"):  # png_pipe, webp_pipe, ...: one picture
            return "a still image"
    return None


def _stream_fps(stream: Any) -> float:
    """The first plausible of the stream's average, guessed and base rates (a WebM's average can be its clock)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        fps = float(rate) if rate else 0.0
        if 0.0 < fps < IMPLAUSIBLE_FPS:
            return fps
    return FALLBACK_FPS


def probe_video(path: str | Path) -> VideoInfo:
    """Size, frame rate, frame count (the container's, or estimated from its duration); decodes one frame only."""
    source = Path(path)
    container, stream = _open(source)
    try:
        fps = _stream_fps(stream)
        duration, shared = _stream_duration(container, stream)
        counted = int(stream.frames)
        frames = counted or (round(duration * fps) if duration else None)
        rotation = _display_rotation(stream)
        width, height = square_size(stream.codec_context.width, stream.codec_context.height, pixel_aspect(stream))
        if rotation % 180:
            width, height = height, width
        codec = stream.codec_context.name
        if _format_is(container, "avi") and counted and stream.time_base is not None:
            # the header counts frame slots, dropped ones too: its span is what plays. FFmpeg's own duration is
            # worked out from the surviving data when a cut file has lost its index, so it always looked whole.
            duration, shared = float(counted * stream.time_base), False
        span_decides = _format_is(container, "mov") or _format_is(container, "avi")
        return VideoInfo(
            source, width, height, fps, frames, duration, codec, rotation, not counted, shared, span_decides
        )
    finally:
        container.close()


def _stream_duration(container: Any, stream: Any) -> tuple[float | None, bool]:
    """The video stream's own duration: the container's covers every stream, and a WebM whose sound runs on
    after the picture looked truncated. Matroska keeps each track's in a `DURATION` tag ("HH:MM:SS.fffffffff");
    the container's covers the video alone only when it is the one stream; otherwise it is returned as `shared`
    (fine for a frame estimate and a progress total, not for judging a clip truncated)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base), False
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds), False
        except ValueError:
            pass  # an odd tag: fall through
    if container.duration is not None:
        return container.duration / av.time_base, len(container.streams) > 1
    return None, False


def _display_rotation(stream: Any) -> int:
    """Counter-clockwise degrees the container asks players to rotate by (0 when it says nothing)."""
    try:
        for frame in stream.container.decode(stream):
            return round(frame.rotation or 0)
    except _DECODE_ERRORS:
        return 0
    return 0


def square_size(width: int, height: int, pixel_aspect: Fraction | None) -> tuple[int, int]:
    """The size that shows a frame of non-square pixels (anamorphic DV/HDV: 1440x1080 stored for 16:9) with square
    ones, stretching one side and never shrinking the other: faces drawn squeezed were also detected squeezed."""
    if not pixel_aspect or pixel_aspect == 1:
        return width, height
    if pixel_aspect > 1:
        return max(1, round(width * pixel_aspect)), height
    return width, max(1, round(height / pixel_aspect))


def upright(image: np.ndarray, rotation: float) -> np.ndarray:
    """Apply a display rotation (counter-clockwise degrees, multiples of 90) to a decoded frame."""
    turns = round(rotation / 90.0) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


@dataclass
class DecodeLog:
    """What `iter_frames` passed over: damaged packets, skipped as players skip them, and the damage FFmpeg patched up
    without an error (a keyframe with garbage inside decodes into a smeared frame flagged corrupt, and the frames
    predicted from it carry the smear): counted, or the results of a visibly broken clip came without a word."""

    corrupt_frames: int = 0
    skipped_packets: int = 0
    first_error: str | None = None
    read_error: str | None = None  # reading the file failed part-way (a bad sector, a dropped network share)
    decoded: int = 0


def iter_frames(
    path: str | Path, log: DecodeLog | None = None, stop: threading.Event | None = None
) -> Generator[Frame, None, None]:
    """Decode frames one at a time as upright RGB. A packet the decoder refuses is skipped and counted in `log`:
    raising there threw away the analysis of every frame before one flipped byte. A file in which no frame decodes
    raises `VideoError` with the first error. `stop`, set from another thread, raises `VideoCancelled` at the next
    packet, so a cancel lands even while a damaged stretch yields no frame.

    Times count from the first frame and always increase: where the clock restarts (MPEG-TS files joined with
    `cat`, as cameras and HLS segments are), later frames go on one nominal frame after the last, so the CSV's
    times and the annotated video's timing stay in order instead of starting again at 0.

    An AVI stores no presentation times: FFmpeg numbers its packets in stored order, so with B-frames (what
    `ffmpeg -i x.mp4 -c:v libx264 x.avi` writes) the frames' pts come out shuffled and each step back was taken
    for a clock restart, stretching a 2 s clip to 3.8 s. There the frames' dts, which follow the decoder's output
    order, are the clock (as FFmpeg's own best-effort timestamp falls back to them).
    """
    source = Path(path)
    container, stream = _open(source)
    fps = _stream_fps(stream)
    clock_is_dts = _format_is(container, "avi")
    index = 0
    first_time: float | None = None
    offset = last_time = 0.0  # keeps times increasing where the stream's clock restarts
    log = log if log is not None else DecodeLog()
    try:
        for frame in _decoded(container, stream, log, stop):
            log.corrupt_frames += frame.is_corrupt
            aspect = pixel_aspect(stream)  # read per frame: a stream can change it part-way
            width, height = square_size(frame.width, frame.height, aspect)
            if width * height > MAX_PIXELS:  # the probe saw only the first size; decoding (and squaring) allocates
                raise VideoError(
                    f"{source}: frame {index} is {width}x{height}, too large to analyse (over "
                    f"{MAX_PIXELS // 1_000_000} megapixels); please resize the video"
                )
            stamp = _frame_time(frame, clock_is_dts)
            if stamp is not None and first_time is None:
                first_time = stamp
            time_s = stamp - first_time if stamp is not None and first_time is not None else index / fps
            time_s += offset
            if index and time_s <= last_time:  # the clock went back (joined files): one frame on, then go on from there
                offset += last_time + 1 / fps - time_s
                time_s = last_time + 1 / fps
            last_time = time_s
            pixels = frame.to_ndarray(format="rgb24")
            if (width, height) != (frame.width, frame.height):  # non-square pixels, shown square
                pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)
            yield Frame(index, float(time_s), upright(pixels, frame.rotation or 0))
            index += 1
    finally:
        container.close()
    if index == 0:
        why = f": {log.read_error or log.first_error}" if log.read_error or log.first_error else ""
        raise VideoError(f"{source}: no video frame could be decoded (truncated or damaged file?){why}")


def _frame_time(frame: Any, clock_is_dts: bool) -> float | None:
    """A frame's time in seconds on the stream's clock (see `iter_frames`), or None when it has none (or NaN): the
    frames flushed at an AVI's end have no dts, and their pts are as shuffled as the others'."""
    if clock_is_dts:
        return float(frame.dts * frame.time_base) if frame.dts is not None and frame.time_base is not None else None
    return frame.time if frame.time is not None and np.isfinite(frame.time) else None


def _decoded(container: Any, stream: Any, log: DecodeLog, stop: threading.Event | None) -> Iterator[Any]:
    """The stream's frames, packet by packet (the last, empty packet flushes the decoder), skipping packets the
    decoder refuses. A read error ends the stream there, after the frames the decoder still holds."""
    packets = container.demux(stream)
    while True:
        if stop is not None and stop.is_set():
            raise VideoCancelled(f"{container.name}: analysis cancelled")
        if log.skipped_packets >= MAX_BAD_PACKETS_BEFORE_A_FRAME and log.decoded == 0:
            return  # nothing but damage so far: not worth reading the rest of a large file
        try:
            packet = next(packets)
        except StopIteration:
            return
        except _DECODE_ERRORS as err:
            log.read_error = str(err)
            with suppress(*_DECODE_ERRORS):
                for frame in stream.codec_context.decode(None):
                    log.decoded += 1
                    yield frame
            return
        try:
            frames = packet.decode()
        except _DECODE_ERRORS as err:
            log.skipped_packets += 1
            log.first_error = log.first_error or str(err)
            continue
        log.decoded += len(frames)
        yield from frames


def pixel_aspect(stream: Any) -> Fraction | None:
    """The pixels' shape as FFmpeg guesses it from the container (an mp4 `pasp` box) and the codec."""
    return stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio


def h264_available() -> bool:
    try:
        av.codec.Codec("libx264", "w")
    except _DECODE_ERRORS:
        return False
    return True


class VideoWriter:
    """Browser-friendly mp4 writer: H.264 yuv420p with the index up front, MPEG-4 Part 2 as the fallback.

    yuv420p needs even sides, so an odd last row or column is cropped.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float, crf: int = 23) -> None:
        self.path = Path(path)
        self.container: Any = None
        self.width, self.height = width - width % 2, height - height % 2
        if self.width < 2 or self.height < 2:
            raise VideoError(f"{path}: cannot encode a {width}x{height} video")
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(int(FALLBACK_FPS))
        self.container = av.open(str(self.path), "w", format="mp4", options={"movflags": "+faststart"})
        try:
            self._add_stream(rate, crf)
        except BaseException:
            self.container.close()  # left to the garbage collector, it held the file and FFmpeg's context
            raise
        self.rate = rate
        self.frames = 0
        self.last_pts = -1

    def _add_stream(self, rate: Fraction, crf: int) -> None:
        if h264_available():
            self.codec = "h264"
            self.stream = self.container.add_stream("libx264", rate=rate)
            self.stream.options = {"crf": str(crf), "preset": "veryfast"}
        else:  # pragma: no cover - depends on the FFmpeg build
            self.codec = "mpeg4"
            self.stream = self.container.add_stream("mpeg4", rate=rate)
            self.stream.bit_rate = max(1_000_000, int(self.width * self.height * float(rate) * 0.2))
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.codec_context.time_base = OUTPUT_TIME_BASE

    def write(self, image_rgb: np.ndarray, time_s: float | None = None) -> None:
        """Encode one frame at `time_s` (default: the next tick of the nominal rate); a frame of another size
        (the stream changed resolution) is fitted, not cropped."""
        height, width = image_rgb.shape[:2]
        if (width - width % 2, height - height % 2) != (self.width, self.height):
            image_rgb = letterbox(image_rgb, self.width, self.height)
        image = np.ascontiguousarray(image_rgb[: self.height, : self.width])
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        seconds = self.frames / self.rate if time_s is None else Fraction(time_s)
        self.last_pts = max(round(seconds / OUTPUT_TIME_BASE), self.last_pts + 1)  # the muxer needs rising times
        frame.pts, frame.time_base = self.last_pts, OUTPUT_TIME_BASE
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self.container is None:
            return
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` scaled to fit width x height whole, centred on black: nothing cut off, nothing stretched."""
    scale = min(width / image.shape[1], height / image.shape[0])
    new_w, new_h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


def fit_side(image: np.ndarray, max_side: int = MAX_VIDEO_SIDE) -> tuple[np.ndarray, float]:
    """`image` shrunk so its longer side is at most `max_side`, and the factor applied (1.0: untouched)."""
    scale = max_side / max(image.shape[:2])
    if scale >= 1.0:
        return image, 1.0
    size = (max(2, round(image.shape[1] * scale)), max(2, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def face_rows(frame: Frame, tracked: list[TrackedFace], scale: float = 1.0) -> list[dict[str, Any]]:
    """CSV rows for one analysed frame's tracked faces; boxes found at `scale` are given in the source's pixels."""
    rows = []
    for face in tracked:
        x1, y1, x2, y2 = (value / scale for value in face.box)
        rows.append(
            {
                "frame": frame.index,
                "time_s": round(frame.time_s, 4),
                "face_id": face.track_id,
                "x1": round(x1, 1),
                "y1": round(y1, 1),
                "x2": round(x2, 1),
                "y2": round(y2, 1),
                **{name: round(face.probs[name], 5) for name in EMOTIONS},
                "label": face.label,
                "confidence": round(face.confidence, 5),
            }
        )
    return rows


def prepare_output(out: Path, source: Path) -> Path:
    """Refuse an output path that cannot hold the results before the first frame is decoded, not after the last;
    also one whose results would replace the video being read (`vs/annotated.mp4 --out vs` did, with exit 0)."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"{out}: exists and is not a folder")
    names = (ANNOTATED_NAME, CSV_NAME, *PARTIAL_NAMES.values())  # a partial is written, then removed or renamed
    for name in names:
        if (out / name).is_file() and source.exists() and (out / name).samefile(source):
            raise UserInputError(f"{out / name}: is the input video; writing the results there would overwrite it")
    return cli.prepare_out_folder(out, names)


def analyse_video(
    path: str | Path,
    pipe: Pipeline,
    out_dir: str | Path,
    every: int = 1,
    *,
    tracker: FaceTracker | None = None,
    progress_callback: Callable[[int, int | None], None] | None = None,
    progress: bool = False,
    stop: threading.Event | None = None,
    follow: bool = True,
) -> VideoSummary:
    """Analyse every `every`-th frame, track and smooth faces, write DIR/annotated.mp4 and DIR/faces.csv.

    `progress_callback(frames_done, frames_total)` is called about every 1 % of the container's frame count (or
    its estimate from the duration), with `frames_total` None when neither is known (a browser-recorded WebM) or
    the count proved low (then every 25 frames), and once more with (frames, frames) on success, e.g. for a
    Streamlit progress bar; an exception it raises stops the analysis. `stop`, set from another thread, stops it
    at the next frame with `VideoCancelled` (a cancel waiting for the next 1 % of a long clip ran hundreds of
    frames on). `progress` shows a tqdm bar on stderr. The tracker is reset first, so ids start at 1 for every
    video. `follow` moves the boxes with the faces on the frames between analysed ones (else they stay put).
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    source = Path(path)
    info = probe_video(source)
    if info.width < 2 or info.height < 2:
        raise VideoError(f"{source}: a {info.width}x{info.height} video is too small to analyse")
    if info.width * info.height > MAX_PIXELS:
        raise VideoError(
            f"{source}: {info.width}x{info.height} frames are too large (over {MAX_PIXELS // 1_000_000} megapixels "
            "each); please resize the video"
        )
    out = prepare_output(Path(out_dir), source)
    labeller = _FrameLabeller(pipe, tracker or FaceTracker(), every, follow)
    writer: VideoWriter | None = None  # opened at the first frame, at its (fitted) size
    partial_video = out / PARTIAL_NAMES[ANNOTATED_NAME]
    frames = 0
    last_time = 0.0
    log = DecodeLog()
    with _Progress(info.frames, source.name, progress, progress_callback) as report:
        try:
            with closing(iter_frames(source, log, stop)) as decoded:
                for frame in decoded:
                    if stop is not None and stop.is_set():
                        raise VideoCancelled(f"{source}: analysis cancelled at frame {frame.index}")
                    image = labeller.label(frame)
                    if writer is None:
                        writer = VideoWriter(partial_video, image.shape[1], image.shape[0], info.fps)
                    writer.write(image, frame.time_s)
                    frames += 1
                    last_time = frame.time_s
                    report(frames)
            report.finish()  # before the files are finished: a cancel there still leaves nothing behind
            assert writer is not None  # iter_frames raises on a video without frames
            table = _publish(writer, labeller.rows, out)
        except BaseException:
            _discard(writer, out)
            raise
    return VideoSummary(
        source=source,
        annotated_path=out / ANNOTATED_NAME,
        csv_path=out / CSV_NAME,
        frames=frames,
        analysed_frames=labeller.analysed,
        every=every,
        fps=info.fps,
        width=writer.width,
        height=writer.height,
        codec=writer.codec,
        duration_s=last_time + 1 / info.fps,
        track_ids=sorted(int(i) for i in table["face_id"].unique()),
        faces=table,
        announced_frames=None if info.frames_estimated else info.frames,
        announced_duration_s=None if info.duration_shared else info.duration_s,
        skipped_packets=log.skipped_packets,
        read_error=log.read_error,
        corrupt_frames=log.corrupt_frames,
        count_may_exceed_play=info.count_may_exceed_play,
    )


class _FrameLabeller:
    """What carries over from one frame to the next while a video is labelled: the tracker, the faces of the last
    analysed frame and their annotations (drawn on the frames between, moved with the faces by `follower`), the CSV
    rows so far, and the last frame's size (a stream that changes resolution part-way keeps its tracks)."""

    def __init__(self, pipe: Pipeline, tracker: FaceTracker, every: int, follow: bool) -> None:
        self.pipe = pipe
        self.tracker = tracker
        self.tracker.reset()  # ids start at 1 for every video
        self.every = every
        self.follower = BoxFollower() if follow and every > 1 else None  # every frame analysed: nothing between
        self.tracked: list[TrackedFace] = []  # of the last analysed frame
        self.annotations: list[Annotation] = []  # what is drawn: the last analysed frame's, moved since
        self.size: tuple[int, ...] | None = None  # of the last fitted frame
        self.rows: list[dict[str, Any]] = []
        self.analysed = 0

    def label(self, frame: Frame) -> np.ndarray:
        """`frame` fitted to `MAX_VIDEO_SIDE` with the faces drawn: analysed on every `every`-th frame, else the
        last labels (on boxes moved with the faces when following)."""
        image, scale = self._fitted(frame)
        if frame.index % self.every == 0:
            self._analyse(frame, image, scale)
        else:
            self._follow(image)
        return draw_faces(image, self.annotations)

    def _fitted(self, frame: Frame) -> tuple[np.ndarray, float]:
        """`fit_side` of the frame; where the stream changed resolution, the tracks and the boxes drawn are carried
        over into the new frame's pixels."""
        image, scale = fit_side(frame.image)
        if self.size is not None and image.shape[:2] != self.size:
            sx, sy = image.shape[1] / self.size[1], image.shape[0] / self.size[0]
            self.tracker.rescale(sx, sy)
            self.annotations = scale_annotations(self.annotations, sx, sy)
        self.size = image.shape[:2]
        return image, scale

    def _analyse(self, frame: Frame, image: np.ndarray, scale: float) -> None:
        """Detect and classify the faces, match them to the tracks (where the follower has moved the faces since the
        last analysis, so a face that moved keeps its id), and anchor the follower on them."""
        flow_frame = None if self.follower is None else FlowFrame.of(image)
        source_size = (frame.image.shape[1], frame.image.shape[0])  # the minimum face is in these
        moved = None  # where the faces drawn are on this frame, for the tracker
        if self.follower is not None and flow_frame is not None and self.tracked:
            self.follower.follow(flow_frame)
            moved = self.follower.followed_by([face.track_id for face in self.tracked])
        self.tracked = self.tracker.update(self.pipe(image, source_size).faces, moved)
        self.annotations = to_annotations(self.tracked)
        self.rows.extend(face_rows(frame, self.tracked, scale))
        self.analysed += 1
        if self.follower is not None and flow_frame is not None:
            self.follower.anchor(flow_frame, [face.box for face in self.tracked])

    def _follow(self, image: np.ndarray) -> None:
        """On a frame between analysed ones, keep the last labels and move their boxes with the faces (where
        following is on; else they stay where they were found)."""
        if self.follower is not None and self.annotations:
            self.annotations = with_boxes(self.annotations, self.follower.follow(FlowFrame.of(image)))


def _publish(writer: VideoWriter, rows: list[dict[str, Any]], out: Path) -> pd.DataFrame:
    """Finish both partial files, then rename them over any earlier results: both are complete before either
    replaces one, so a failure leaves the earlier pair whole. Returns the table written as CSV."""
    writer.close()  # the flush and the faststart rewrite can fail too (a full disk, Ctrl-C)
    table = pd.DataFrame(rows, columns=CSV_COLUMNS)
    table.to_csv(out / PARTIAL_NAMES[CSV_NAME], index=False)
    (out / PARTIAL_NAMES[ANNOTATED_NAME]).replace(out / ANNOTATED_NAME)
    (out / PARTIAL_NAMES[CSV_NAME]).replace(out / CSV_NAME)
    return table


def _discard(writer: VideoWriter | None, out: Path) -> None:
    """Close and remove the partial files of an analysis that failed or was cancelled: nothing is left behind."""
    if writer is not None:
        with suppress(Exception):  # the original error matters, not a failed flush
            writer.close()
    for name in (ANNOTATED_NAME, CSV_NAME):
        (out / PARTIAL_NAMES[name]).unlink(missing_ok=True)


class _Progress:
    """tqdm bar and throttled callback: (0, total) at once when the total is known, then every 1 % of it, every
    `UNKNOWN_TOTAL_STEP` frames otherwise (also once the count passes an estimate that was too low), and
    (frames, frames) at `finish`."""

    def __init__(
        self, total: int | None, name: str, show: bool, callback: Callable[[int, int | None], None] | None
    ) -> None:
        self.total = total if total and total > 0 else None
        self.callback = callback
        self.done = 0
        self.reported = 0
        self.bar = tqdm(total=total, unit="frame", desc=name, disable=not show, leave=False)
        if callback is not None and self.total:  # a known length from the start: "0 %", not "0 frames" (unknown)
            callback(0, self.total)

    def __call__(self, done: int) -> None:
        self.bar.update(done - self.done)
        self.done = done
        if self.callback is None:
            return
        total = self.total if self.total and done < self.total else None
        step = max(1, total // 100) if total else UNKNOWN_TOTAL_STEP
        if done - self.reported >= step:
            self.callback(done, total)
            self.reported = done

    def finish(self) -> None:
        """The last report, (frames, frames): the total is now known whatever the container said."""
        if self.callback is not None:
            self.callback(self.done, self.done)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bar.close()


def main(argv: list[str] | None = None) -> int:
    parser = cli.argument_parser("video", __doc__)
    parser.add_argument("video", type=Path, help="input video (mp4, mov, webm, avi, mkv)")
    parser.add_argument("--out", type=cli.out_folder, required=True, help="folder for annotated.mp4 and faces.csv")
    parser.add_argument(
        "--every",
        type=int,
        default=1,
        help="analyse every Nth frame; the frames between reuse its labels, on boxes moved with the faces (1: every "
        "frame; higher is faster)",
    )
    parser.add_argument(
        "--follow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="between analysed frames, move the boxes with the faces by optical flow (--no-follow: draw them where "
        "they were found)",
    )
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help=cli.PIPELINE_WEIGHTS_HELP)
    cli.add_runtime_option(parser, cli.PIPELINE_RUNTIME_SUBJECT)
    parser.add_argument("--detector", default="auto", choices=DETECTOR_BACKENDS, help=cli.DETECTOR_HELP)
    parser.add_argument("--conf", type=float, default=DEFAULT_CONF, help="face detection confidence threshold")
    parser.add_argument(
        "--imgsz",
        type=cli.detector_imgsz,
        default=PHOTO_IMGSZ,
        help=f"detector input size (the app's Video page: {VIDEO_IMGSZ})",
    )
    parser.add_argument("--min-face", type=int, default=16, help="smallest face side in px (the app's Video page: 24)")
    parser.add_argument(
        "--tta", choices=("shipped", "off"), default="shipped", help="ensemble.json's TTA set, or one view (faster)"
    )
    parser.add_argument(
        "--smoothing",
        default=DEFAULT_SMOOTHING,
        choices=SMOOTHING,
        help="how a tracked face's probabilities are smoothed over analysed frames: ema (see --alpha), window (the "
        "mean of the last --window) or none",
    )
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="EMA weight of the newest frame (1 = none)")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="frames averaged with --smoothing window")
    parser.add_argument(
        "--iou", type=float, default=DEFAULT_IOU_THRESHOLD, help="minimum box overlap to continue a track"
    )
    parser.add_argument(
        "--max-missed", type=int, default=DEFAULT_MAX_MISSED, help="analysed frames a face may vanish for"
    )
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error("--every must be >= 1")
    if not 0.0 <= args.conf <= 1.0 or args.min_face < 0:
        parser.error("--conf must be in [0, 1] and --min-face at least 0")
    try:
        tracker = FaceTracker(args.iou, args.max_missed, args.smoothing, args.alpha, args.window)
    except ValueError as err:
        parser.error(str(err))
    probe_video(args.video)  # a missing or unreadable input fails now, not after the models have loaded
    prepare_output(args.out, args.video)
    with fallback_unannounced_where_refused(args.detector):
        pipe = Pipeline.load(
            args.weights,
            runtime=args.runtime,
            detector_backend=args.detector,
            conf=args.conf,
            imgsz=args.imgsz,
            min_face=args.min_face,
        )
    if refusal := refusal_of_fallback(args.detector, pipe.detector):
        parser.error(f"--detector yolo: {refusal}")
    if args.tta == "off":
        pipe = pipe.with_tta(False)
    summary = analyse_video(args.video, pipe, args.out, args.every, tracker=tracker, progress=True, follow=args.follow)
    print(
        f"{summary.frames} frames ({summary.analysed_frames} analysed), {len(summary.track_ids)} face track(s), "
        f"{len(summary.faces)} rows -> {summary.csv_path}; video ({summary.codec}) -> {summary.annotated_path}"
    )
    warnings = [message for message in (summary.damaged, summary.ended_early) if message]
    for message in warnings:
        print(f"warning: {message}", file=sys.stderr)
    if warnings:
        return cli.PARTIAL_FAILURE
    return 0


if __name__ == "__main__":
    cli.run(main)
