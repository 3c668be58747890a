"""Video reading (four containers, rotation, broken files), annotated output and tracked CSV of `analyse_video`."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import tempfile
import threading
import types
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import cv2
import numpy as np
import pandas as pd
import pytest
from skimage.data import astronaut

from fer_core import cli, video
from fer_core.cli import UserInputError
from fer_core.labels import EMOTIONS
from fer_core.pipeline import FaceResult, ImageResult, Pipeline
from fer_core.tracking import FaceTracker
from fer_core.video import CSV_COLUMNS, VideoError, analyse_video, iter_frames, probe_video


def write_video(
    path: Path,
    frames: list[np.ndarray],
    codec: str,
    fps: int = 10,
    rotation: int = 0,
    faststart: bool = False,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB frames with PyAV directly (independent of the writer under test); `faststart` puts the index at
    the front, as phones and browsers write mp4; `options` go to the encoder."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = cast(av.VideoStream, container.add_stream(codec, rate=Fraction(fps)))  # `codec` names a video codec
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        stream.options = cast(dict[str, object], options or {})
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def face_frames(n: int = 20, step: int = 2) -> list[np.ndarray]:
    """320x240 frames with the astronaut's face (about 95 px) sliding right by `step` px per frame."""
    face = cv2.resize(astronaut()[20:240, 140:360], (200, 200), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        canvas = np.full((240, 320, 3), 90, np.uint8)
        canvas[20:220, 40 + step * i : 240 + step * i] = face
        frames.append(canvas)
    return frames


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def face_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "face.mp4", face_frames(), "libx264")


@pytest.fixture(scope="module")
def haar_pipe(fake_weights: Path) -> Pipeline:
    return Pipeline.load(fake_weights, runtime="torch", detector_backend="haar", conf=0.3, min_face=40)


GRAY_LEVELS = [30, 80, 130, 180, 230]


@pytest.mark.parametrize(
    ("suffix", "codec"), [(".mp4", "libx264"), (".mov", "libx264"), (".webm", "libvpx"), (".avi", "mpeg4")]
)
def test_reads_common_containers(tmp_path: Path, suffix: str, codec: str) -> None:
    frames = [np.full((48, 64, 3), level, np.uint8) for level in GRAY_LEVELS]
    path = write_video(tmp_path / f"clip{suffix}", frames, codec)
    info = probe_video(path)
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(10)
    decoded = list(iter_frames(path))
    assert [f.index for f in decoded] == list(range(len(GRAY_LEVELS)))
    assert [f.time_s for f in decoded] == pytest.approx([i / 10 for i in range(len(GRAY_LEVELS))], abs=1e-3)
    for frame, level in zip(decoded, GRAY_LEVELS, strict=True):
        assert frame.image.shape == (48, 64, 3) and frame.image.dtype == np.uint8
        assert abs(float(frame.image.mean()) - level) < 6


def test_rotation_metadata_is_applied(tmp_path: Path) -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    image[:12, :12] = 255  # a white square at the stored frame's top-left
    path = write_video(tmp_path / "phone.mp4", [image] * 2, "libx264", rotation=90)
    info = probe_video(path)
    assert (info.rotation, info.width, info.height) == (90, 48, 64)
    upright = next(iter_frames(path)).image
    assert upright.shape == (64, 48, 3)
    # 90 degrees counter-clockwise moves the top-left corner to the bottom-left
    assert upright[-6, 5].mean() > 200 and upright[5, 5].mean() < 50


def test_broken_inputs_raise_video_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    text = tmp_path / "notes.avi"
    text.write_text("this is not a video\n" * 50)
    good = write_video(tmp_path / "good.mp4", [np.zeros((48, 64, 3), np.uint8)] * 3, "libx264")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path in (garbage, empty, text, truncated, tmp_path / "missing.mov"):
        with pytest.raises(VideoError, match=path.name):
            list(iter_frames(path))
        with pytest.raises(VideoError, match=path.name):
            analyse_video(path, None, tmp_path / "out")  # type: ignore[arg-type]
    assert issubclass(VideoError, ValueError)


def test_text_and_pictures_are_not_videos(tmp_path: Path) -> None:
    """FFmpeg opens a .txt as ANSI art and a picture as a one-frame stream; neither is a video to analyse."""
    text = tmp_path / "notes.txt"
    text.write_text("meeting notes\n" * 200)  # a short text is refused by every demuxer anyway
    picture = tmp_path / "photo.png"
    cv2.imwrite(str(picture), np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(VideoError, match=r"notes\.txt: a text file, not a video"):
        probe_video(text)
    with pytest.raises(VideoError, match=r"photo\.png: a still image, not a video"):
        analyse_video(picture, StubPipeline(), tmp_path / "out")  # type: ignore[arg-type]
    folder = tmp_path / "clip.mp4"  # was called missing
    folder.mkdir()
    with pytest.raises(VideoError, match=r"clip\.mp4: a folder, not a video file"):
        probe_video(folder)


def write_browser_recording(path: Path, times_ms: list[int]) -> Path:
    """WebM as a browser's MediaRecorder writes it: a millisecond time base, frames at the camera's own times."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx", rate=Fraction(1000))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, time_ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 5 % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = time_ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_a_browser_recording_keeps_its_rate_and_timing(tmp_path: Path) -> None:
    """30 fps, then 15 fps (a camera in low light): the annotated video keeps each frame's time, as the CSV does."""
    times_ms = [round(i * 1000 / 30) for i in range(30)] + [1000 + round(i * 1000 / 15) for i in range(1, 31)]
    path = write_browser_recording(tmp_path / "webcam.webm", times_ms)
    assert av.open(str(path)).streams.video[0].average_rate == 1000  # the container's clock, not a frame rate
    assert probe_video(path).fps == pytest.approx(30, rel=0.02)
    summary = analyse_video(path, StubPipeline(), tmp_path / "out", every=5)  # type: ignore[arg-type]
    written = [frame.time_s for frame in iter_frames(summary.annotated_path)]
    assert written == pytest.approx([t / 1000 for t in times_ms], abs=2e-3)
    assert summary.faces["time_s"].tolist() == pytest.approx([t / 1000 for t in times_ms[::5]], abs=1e-3)
    assert summary.duration_s == pytest.approx(3.0 + 1 / summary.fps, abs=0.01)  # not 60 frames / 30 fps = 2 s
    # WebM stores no frame count: 3 s x 30 fps = 90 estimated frames would have called these 60 frames truncated
    assert summary.announced_frames is None and summary.ended_early is None


def test_a_cut_recording_without_a_frame_count_is_judged_by_its_duration(tmp_path: Path) -> None:
    data = write_browser_recording(tmp_path / "full.webm", [round(i * 1000 / 30) for i in range(90)]).read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: len(data) // 2])
    summary = analyse_video(cut, StubPipeline(), tmp_path / "out")  # type: ignore[arg-type]
    assert summary.announced_frames is None and summary.announced_duration_s == pytest.approx(2.97, abs=0.01)
    assert summary.ended_early == (
        f"cut.webm: only the first {summary.duration_s:.1f} s of the 3.0 s the file announces could be decoded; it "
        "may be truncated or damaged, and the results cover that part only"
    )


def test_an_unusable_output_folder_is_refused_before_decoding(tmp_path: Path) -> None:
    source = write_video(tmp_path / "in.mp4", [np.zeros((48, 64, 3), np.uint8)] * 3, "libx264")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    blocked = tmp_path / "blocked"
    (blocked / video.ANNOTATED_NAME).mkdir(parents=True)
    for out, problem in ((a_file, "is not a folder"), (a_file / "sub", "cannot create"), (blocked, "is a folder")):
        with pytest.raises(UserInputError, match=problem):
            analyse_video(source, None, out)  # type: ignore[arg-type]  # no pipeline: nothing may be analysed


def test_a_detector_size_over_4096_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--imgsz had a floor (32) but no ceiling: 99999 loaded the models, then OpenCV asked for 22 GB per frame."""
    source = write_video(tmp_path / "in.mp4", [np.zeros((48, 64, 3), np.uint8)] * 3, "libx264")
    monkeypatch.setattr(video.Pipeline, "load", lambda *a, **k: pytest.fail("models loaded for a refused run"))
    with pytest.raises(SystemExit) as stopped:
        video.main([str(source), "--out", str(tmp_path / "out"), "--imgsz", "99999"])
    assert stopped.value.code == 2 and "argument --imgsz: 99999: must be from 32 to 4096 px" in capsys.readouterr().err


@pytest.mark.parametrize("name", [video.ANNOTATED_NAME, video.CSV_NAME, *video.PARTIAL_NAMES.values()])
def test_an_input_that_is_one_of_the_outputs_is_refused_before_any_work(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`video vs/annotated.mp4 --out vs` replaced the video it read with its annotated copy, with exit 0; a video
    named as a hidden partial result was overwritten as it was read, then deleted."""
    source = write_video(tmp_path / "in.mp4", [np.zeros((48, 64, 3), np.uint8)] * 3, "libx264").rename(tmp_path / name)
    before = source.read_bytes()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / name).symlink_to(source)  # the same file under another path
    for out in (tmp_path, linked):
        with pytest.raises(UserInputError, match=f"{name}: is the input video; writing the results there would"):
            analyse_video(source, None, out)  # type: ignore[arg-type]  # no pipeline: nothing may be analysed
    monkeypatch.setattr(video.Pipeline, "load", lambda *a, **k: pytest.fail("models loaded for a refused run"))
    with pytest.raises(SystemExit) as stopped:
        cli.run(lambda: video.main([str(source), "--out", str(tmp_path)]))
    assert stopped.value.code == 2 and "is the input video" in capsys.readouterr().err
    assert source.read_bytes() == before


@pytest.mark.parametrize("cover_art", [False, True])
def test_audio_only_file_has_no_video_stream(tmp_path: Path, cover_art: bool) -> None:
    """With or without a cover picture: FFmpeg shows the picture as a one-frame video stream."""
    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        if cover_art:
            cover = container.add_stream("mjpeg", rate=1)
            cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
            cover.disposition = av.stream.Disposition.attached_pic
            picture = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            for packet in [*cover.encode(picture), *cover.encode()]:
                container.mux(packet)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(VideoError, match="no video stream"):
        probe_video(path)


def test_analyse_video_tracks_one_face(face_video: Path, haar_pipe: Pipeline, tmp_path: Path) -> None:
    reports: list[tuple[int, int | None]] = []
    progress = lambda done, total: reports.append((done, total))  # noqa: E731
    summary = analyse_video(face_video, haar_pipe, tmp_path / "out", every=2, progress_callback=progress)
    assert (summary.frames, summary.analysed_frames, summary.width, summary.height) == (20, 10, 320, 240)
    assert summary.track_ids == [1]
    table = pd.read_csv(summary.csv_path)
    assert list(table.columns) == CSV_COLUMNS
    assert len(table) == 10
    assert table["frame"].tolist() == list(range(0, 20, 2))
    assert table["time_s"].tolist() == pytest.approx([i / 10 for i in range(0, 20, 2)], abs=1e-3)
    assert set(table["face_id"]) == {1}
    np.testing.assert_allclose(table[list(EMOTIONS)].sum(axis=1), 1.0, atol=1e-3)
    assert set(table["label"]) <= set(EMOTIONS)
    assert table["x1"].iloc[-1] > table["x1"].iloc[0] + 20  # the box follows the face to the right
    assert reports == [(n, 20) for n in range(20)] + [(20, 20)]  # 0 % at once, then every 1 %: every frame
    pd.testing.assert_frame_equal(summary.faces.reset_index(drop=True), table, check_dtype=False)

    info = probe_video(summary.annotated_path)
    assert info.codec == summary.codec == "h264"
    assert (info.width, info.height) == (320, 240)
    with av.open(str(summary.annotated_path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert len(list(iter_frames(summary.annotated_path))) == 20
    assert not list((tmp_path / "out").glob(".*partial"))


def test_the_minimum_face_size_is_in_the_videos_own_pixels(tmp_path: Path, fake_weights: Path) -> None:
    """Frames over 1920 px are analysed shrunk: a face about 700 px wide in a 2400 px clip was dropped by a 640 px
    minimum applied to the shrunk copy, where it measures under 600 (the Video page's help says the clip's own
    pixels)."""
    clip = write_video(tmp_path / "big.mp4", [cv2.resize(f, (2400, 1800)) for f in face_frames(2)], "libx264")
    pipe = Pipeline.load(fake_weights, runtime="torch", detector_backend="haar", conf=0.3, min_face=640)
    table = pd.read_csv(analyse_video(clip, pipe, tmp_path / "out").csv_path)
    assert len(table) == 2 and (table["x2"] - table["x1"]).min() >= 640


def test_a_resolution_change_is_fitted_whole(tmp_path: Path) -> None:
    small = np.zeros((48, 64, 3), np.uint8)
    large = np.zeros((96, 128, 3), np.uint8)
    large[64:, 96:] = 255  # a white block in the corner a crop to 64x48 would cut off
    path = tmp_path / "changing.mp4"
    with video.VideoWriter(path, 64, 48, 10) as writer:
        for image in (small, large, small):
            writer.write(image)
    frames = [frame.image for frame in iter_frames(path)]
    assert [frame.shape for frame in frames] == [(48, 64, 3)] * 3
    assert frames[1][36:, 52:].mean() > 200 and frames[1][:28, :44].mean() < 30
    wide = video.letterbox(np.full((10, 20, 3), 255, np.uint8), 10, 10)  # another shape: black bars, no stretch
    assert wide[:2].max() == 0 and wide[8:].max() == 0 and wide[3:7].min() == 255


def test_the_mpeg4_fallback_writes_frames_at_their_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FFmpeg builds without libx264 get MPEG-4 Part 2, whose encoder refuses time bases finer than 1/65535."""
    monkeypatch.setattr(video, "h264_available", lambda: False)
    path = tmp_path / "fallback.mp4"
    with video.VideoWriter(path, 64, 48, 30) as writer:
        for time_s in (0.0, 0.033, 0.1, 0.5):
            writer.write(np.zeros((48, 64, 3), np.uint8), time_s)
    assert writer.codec == "mpeg4"
    assert [frame.time_s for frame in iter_frames(path)] == pytest.approx([0.0, 0.033, 0.1, 0.5], abs=1e-3)


def test_a_failed_finish_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_video(tmp_path / "in.mp4", [np.zeros((48, 64, 3), np.uint8)] * 3, "libx264")
    real_close = video.VideoWriter.close

    def close_on_a_full_disk(self: video.VideoWriter) -> None:
        real_close(self)
        raise OSError("No space left on device")

    monkeypatch.setattr(video.VideoWriter, "close", close_on_a_full_disk)
    with pytest.raises(OSError, match="No space"):
        analyse_video(path, StubPipeline(), tmp_path / "out")  # type: ignore[arg-type]
    assert list((tmp_path / "out").iterdir()) == []


def test_a_video_too_thin_to_encode_names_the_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_video(tmp_path / "thin.mp4", [np.zeros((48, 64, 3), np.uint8)] * 3, "libx264")
    real_probe = video.probe_video
    monkeypatch.setattr(video, "probe_video", lambda p: dataclasses.replace(real_probe(p), width=1))
    with pytest.raises(VideoError, match=r"thin\.mp4: a 1x48 video is too small"):
        analyse_video(path, StubPipeline(), tmp_path / "out")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (None, [(25, None), (50, None), (60, 60)]),  # a WebM without a frame count: every 25 frames
        (40, [*((n, 40) for n in range(40)), (60, 60)]),  # an estimate that proved low: unknown from then on
        (600, [(0, 600), *((n, 600) for n in range(6, 61, 6)), (60, 60)]),  # 0 % at once, every 1 %; the end's count
    ],
)  # fmt: skip
def test_progress_reports_with_and_without_a_frame_count(total, expected) -> None:
    reports: list[tuple[int, int | None]] = []
    with video._Progress(total, "clip", False, lambda done, of: reports.append((done, of))) as report:
        for done in range(1, 61):
            report(done)
        report.finish()
    assert reports == expected


def test_a_callback_that_raises_stops_the_analysis_and_leaves_nothing(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", [np.zeros((48, 64, 3), np.uint8)] * 30, "libx264")

    def cancel(done: int, total: int | None) -> None:
        raise KeyboardInterrupt  # what a user's Cancel amounts to

    with pytest.raises(KeyboardInterrupt):
        analyse_video(path, StubPipeline(), tmp_path / "out", progress_callback=cancel)  # type: ignore[arg-type]
    assert list((tmp_path / "out").iterdir()) == []


def test_a_cancel_at_the_last_report_leaves_no_result_behind(tmp_path: Path) -> None:
    """The last report came after both files were moved into place: a cancel there raised and left them."""
    path = write_video(tmp_path / "clip.mp4", [np.zeros((48, 64, 3), np.uint8)] * 5, "libx264")

    def cancel_at_the_end(done: int, total: int | None) -> None:
        if done == total == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        analyse_video(path, StubPipeline(), tmp_path / "out", progress_callback=cancel_at_the_end)  # type: ignore[arg-type]
    assert list((tmp_path / "out").iterdir()) == []


def test_non_square_pixels_are_shown_and_analysed_square(tmp_path: Path) -> None:
    """Anamorphic footage stores 64x48 to be shown 128x48: the output and the detector got it squeezed."""
    path = tmp_path / "anamorphic.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(2, 1)
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert (probe_video(path).width, probe_video(path).height) == (128, 48)
    assert {frame.image.shape for frame in iter_frames(path)} == {(48, 128, 3)}
    pipe = StubPipeline()
    summary = analyse_video(path, pipe, tmp_path / "out")  # type: ignore[arg-type]
    assert (summary.width, summary.height) == (128, 48)
    assert video.square_size(64, 48, Fraction(1, 2)) == (64, 96)  # tall pixels: the height grows, nothing shrinks
    remuxed = tmp_path / "pasp.mp4"  # the shape stored by the container (an mp4 `pasp` box), not the codec
    plain = write_video(tmp_path / "plain.mp4", [np.zeros((48, 64, 3), np.uint8)] * 3, "mpeg4")
    with av.open(str(plain)) as reader, av.open(str(remuxed), "w") as writer:
        original = reader.streams.video[0]
        copy = writer.add_stream_from_template(original)
        copy.sample_aspect_ratio = Fraction(2, 1)
        for packet in reader.demux(original):
            if packet.dts is not None:
                packet.stream = copy
                writer.mux(packet)
    with av.open(str(remuxed)) as reader:
        stored = reader.streams.video[0].sample_aspect_ratio
    if stored == 2:  # this FFmpeg build writes the box
        assert (probe_video(remuxed).width, probe_video(remuxed).height) == (128, 48)
        assert {frame.image.shape for frame in iter_frames(remuxed)} == {(48, 128, 3)}


def noise_mp4(frames: int) -> bytes:
    """An H.264 mp4 with its index at the front (as phones and browsers write it) of noise frames, so that every
    frame takes its share of the bytes and cutting the file cuts frames."""
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(frames)]
    with tempfile.TemporaryDirectory() as folder:
        return write_video(Path(folder) / "noise.mp4", noise, "libx264", fps=25, faststart=True).read_bytes()


def test_a_truncated_file_is_analysed_as_far_as_it_goes_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A download cut short (index at the front, as phones and browsers write it): FFmpeg decodes the frames that
    are there and stops without an error, so the results covered part of the clip without a word."""
    data, full, cut = noise_mp4(60), tmp_path / "full.mp4", tmp_path / "cut.mp4"
    full.write_bytes(data)
    cut.write_bytes(data[: len(data) * 2 // 3])
    summary = analyse_video(cut, StubPipeline(), tmp_path / "out")  # type: ignore[arg-type]
    assert 0 < summary.frames < 54 and summary.announced_frames == 60
    assert summary.ended_early == (
        f"cut.mp4: only {summary.frames} of the 60 frames the file announces could be decoded; it may be truncated "
        f"or damaged, and the results cover its first {summary.duration_s:.1f} s only"
    )
    assert analyse_video(full, StubPipeline(), tmp_path / "out2").ended_early is None  # type: ignore[arg-type]
    monkeypatch.setattr(video.Pipeline, "load", lambda *a, **k: StubPipeline())
    assert video.main([str(cut), "--out", str(tmp_path / "cli")]) == cli.PARTIAL_FAILURE
    assert "warning: cut.mp4: only" in capsys.readouterr().err


def noise_frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48, 64, 3), np.uint8) for _ in range(count)]


def damage_packet(path: Path, number: int) -> bytes:
    """The file's bytes with one video packet's payload overwritten, as a bad sector or a flipped download does."""
    with av.open(str(path)) as container:
        packets = [(packet.pos, packet.size) for packet in container.demux(container.streams.video[0]) if packet.size]
    data = bytearray(path.read_bytes())
    start, size = packets[number]
    assert start is not None  # demuxed from a file: every packet has its position
    data[start : start + size] = b"\xff" * size
    return bytes(data)


def test_a_damaged_packet_is_skipped_and_counted_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One unreadable packet ended the analysis with an error and threw away every frame already analysed; a
    player skips it. The loss is said, and the CLI exits with its partial-failure code."""
    path = write_video(tmp_path / "src.mp4", noise_frames(40), "libx264")
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(damage_packet(path, 20))
    summary = analyse_video(damaged, StubPipeline(), tmp_path / "out")  # type: ignore[arg-type]
    assert summary.frames == 39 and summary.skipped_packets == 1 and summary.ended_early is None
    assert summary.damaged == (
        "damaged.mp4: 1 damaged packet(s) could not be decoded and were skipped; the frames they held are missing "
        "from the results"
    )
    assert summary.to_dict()["skipped_packets"] == 1
    monkeypatch.setattr(video.Pipeline, "load", lambda *a, **k: StubPipeline())
    assert video.main([str(damaged), "--out", str(tmp_path / "cli")]) == cli.PARTIAL_FAILURE
    assert "warning: damaged.mp4: 1 damaged packet(s)" in capsys.readouterr().err
    assert analyse_video(path, StubPipeline(), tmp_path / "whole").damaged is None  # type: ignore[arg-type]


def test_a_keyframe_patched_up_by_the_decoder_is_counted_not_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Garbage inside a keyframe raises nothing: FFmpeg conceals it and hands out a smeared frame flagged corrupt,
    and every frame predicted from it carries the smear. The clip was analysed with exit 0 and no word."""
    path = write_video(tmp_path / "src.mp4", noise_frames(40), "libx264")
    with av.open(str(path)) as container:
        keyframe = next(p for p in container.demux(container.streams.video[0]) if p.is_keyframe and p.size)
        start, size = keyframe.pos, keyframe.size
    assert start is not None
    data = bytearray(path.read_bytes())
    data[start + size // 2 : start + size // 2 + 64] = bytes(64)  # zeroed bytes inside the picture data
    smeared = tmp_path / "smeared.mp4"
    smeared.write_bytes(bytes(data))
    summary = analyse_video(smeared, StubPipeline(), tmp_path / "out")  # type: ignore[arg-type]
    assert summary.frames == 40 and summary.skipped_packets == 0 and summary.corrupt_frames >= 1
    assert summary.damaged == (
        f"smeared.mp4: {summary.corrupt_frames} frame(s) were decoded with errors and patched up, as players do; they "
        "and the frames that follow from them may show damage, where faces can be missed or mislabelled"
    )
    assert summary.to_dict()["corrupt_frames"] == summary.corrupt_frames
    monkeypatch.setattr(video.Pipeline, "load", lambda *a, **k: StubPipeline())
    assert video.main([str(smeared), "--out", str(tmp_path / "cli")]) == cli.PARTIAL_FAILURE
    assert "warning: smeared.mp4: " in capsys.readouterr().err
    whole = analyse_video(path, StubPipeline(), tmp_path / "whole")  # type: ignore[arg-type]
    assert whole.corrupt_frames == 0 and whole.damaged is None


def test_a_read_error_part_way_keeps_the_frames_before_it_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read error (a bad sector, a dropped network share) escaped as a bare OSError: a traceback in the CLI."""
    path = write_video(tmp_path / "clip.mkv", noise_frames(40), "libx264")
    failing_after = path.stat().st_size // 2

    class FailingHalfWay(io.FileIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() > failing_after:
                raise OSError(5, "Input/output error")
            return super().read(size)

    real_open = av.open

    def open_failing(target: str, *args: Any, **kwargs: Any) -> Any:
        return real_open(FailingHalfWay(target) if target == str(path) else target, *args, **kwargs)

    monkeypatch.setattr(video.av, "open", open_failing)
    summary = analyse_video(path, StubPipeline(), tmp_path / "out")  # type: ignore[arg-type]
    assert 0 < summary.frames < 40 and summary.read_error == "[Errno 5] Input/output error"
    assert summary.damaged == (
        f"clip.mkv: reading the file failed after {summary.frames} frames ([Errno 5] Input/output error); the "
        "results end there"
    )


def test_a_file_of_nothing_but_damage_is_given_up_early(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", noise_frames(150), "libx264")
    with av.open(str(path)) as container:
        packets = [(packet.pos, packet.size) for packet in container.demux(container.streams.video[0]) if packet.size]
    data = bytearray(path.read_bytes())
    for start, size in packets:
        assert start is not None  # demuxed from a file: every packet has its position
        data[start : start + size] = b"\xff" * size
    path.write_bytes(bytes(data))
    log = video.DecodeLog()
    with pytest.raises(VideoError, match=r"no video frame could be decoded .*Invalid data"):
        list(iter_frames(path, log))
    assert log.skipped_packets == video.MAX_BAD_PACKETS_BEFORE_A_FRAME < len(packets)


def test_a_stop_lands_while_damaged_packets_yield_no_frame(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", noise_frames(10), "libx264")
    stop = threading.Event()
    stop.set()
    with pytest.raises(video.VideoCancelled):
        list(iter_frames(path, stop=stop))


def test_an_avi_with_b_frames_keeps_its_frame_times(tmp_path: Path) -> None:
    """An AVI stores no presentation times, so the frames of an H.264 with B-frames (x264's default, what `ffmpeg
    -i x.mp4 -c:v libx264 x.avi` writes) come out with shuffled pts: each step back was taken for a restarted
    clock, and a 2 s clip became 3.8 s in the CSV and the annotated video."""
    clip = write_video(tmp_path / "b_frames.avi", face_frames(20), "libx264", fps=10)  # noise gets no B-frames
    assert [round(frame.time_s, 3) for frame in iter_frames(clip)] == [i / 10 for i in range(20)]
    summary = analyse_video(clip, StubPipeline(), tmp_path / "out")  # type: ignore[arg-type]
    assert summary.duration_s == pytest.approx(2.0)
    assert [round(frame.time_s, 3) for frame in iter_frames(summary.annotated_path)] == [i / 10 for i in range(20)]


def test_a_truncated_avi_is_called_truncated(tmp_path: Path) -> None:
    """FFmpeg works out a cut AVI's duration from the data that survived, so the duration always looked whole and
    excused the missing frames; the AVI header's frame count is what the file announces."""
    full = write_video(tmp_path / "full.avi", noise_frames(100), "libx264", fps=25)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    summary = analyse_video(cut, StubPipeline(), tmp_path / "out")  # type: ignore[arg-type]
    assert 0 < summary.frames < 90 and summary.announced_frames == 100
    assert summary.ended_early is not None and summary.ended_early.startswith(
        f"cut.avi: only {summary.frames} of the 100 frames the file announces could be decoded"
    )
    assert analyse_video(full, StubPipeline(), tmp_path / "out2").ended_early is None  # type: ignore[arg-type]


def test_an_mp4_cut_before_its_index_is_called_incomplete(tmp_path: Path) -> None:
    """Phones and cameras write the index last, so a recording or download cut short has none, and FFmpeg's
    "Invalid data found" was shown as "not a video file"."""
    full = write_video(tmp_path / "full.mp4", noise_frames(30), "libx264")  # no faststart: the moov box is last
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(VideoError, match="an incomplete MP4/MOV: its index"):
        probe_video(cut)
    assert not video.mp4_without_index(full)
    not_video = tmp_path / "notes.mp4"
    not_video.write_bytes(b"just some text, nothing like a video")
    with pytest.raises(VideoError, match="not a video file") as refused:
        probe_video(not_video)
    assert "[Errno" not in str(refused.value) and str(refused.value).count("notes.mp4") == 1  # FFmpeg's own text


def test_an_avi_whose_source_dropped_frames_is_not_called_truncated(tmp_path: Path) -> None:
    """An AVI counts frame slots, dropped ones too: 25 frames over 4 s announced 40 and were called truncated once
    the count alone judged AVIs. The header's span (40 slots of 0.1 s) is what plays."""
    kept = [i for i in range(40) if i < 10 or i >= 30 or i % 4 == 0]  # a webcam slowing down in low light
    path = tmp_path / "dropped.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i, image in zip(kept, noise_frames(len(kept)), strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    summary = analyse_video(path, StubPipeline(), tmp_path / "out")  # type: ignore[arg-type]
    assert summary.frames == len(kept) == 25 and summary.announced_frames == 40
    assert summary.duration_s == pytest.approx(4.0) and summary.ended_early is None


def test_a_quicktime_file_without_ftyp_cut_before_its_index_is_called_incomplete(tmp_path: Path) -> None:
    """Old QuickTime MOVs start with `wide` and `mdat`, not `ftyp`."""
    cut = tmp_path / "old.mov"
    cut.write_bytes(b"\x00\x00\x00\x08wide" + (10_000).to_bytes(4, "big") + b"mdat" + bytes(500))
    assert video.mp4_without_index(cut)
    cut.write_bytes(b"\x00\x00\x00\x08wide" + (16).to_bytes(4, "big") + b"mdat" + bytes(8) + b"\x00\x00\x00\x08moov")
    assert not video.mp4_without_index(cut)


def test_a_trimmed_mp4_is_not_called_truncated(tmp_path: Path) -> None:
    """`ffmpeg -ss 5 -c copy` keeps every packet and shifts the times, so the mp4 counts 100 samples but plays,
    and decodes, the last 50: its duration says so, and that is a whole clip, not a damaged one."""
    frames = [np.full((48, 64, 3), i * 2, np.uint8) for i in range(100)]
    one_key_frame = {"g": "1000", "bf": "0"}  # a copy-cut keeps every packet before the cut
    source = write_video(tmp_path / "long.mp4", frames, "libx264", options=one_key_frame)
    trimmed = tmp_path / "trimmed.mp4"
    with av.open(str(source)) as reader, av.open(str(trimmed), "w") as writer:
        original = reader.streams.video[0]
        copy = writer.add_stream_from_template(original)
        assert original.time_base is not None  # a stream read from a file has its time base
        shift = int(5 / original.time_base)
        for packet in reader.demux(original):
            if packet.dts is None:
                continue
            assert packet.pts is not None  # a packet with a dts has a pts
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = copy
            writer.mux(packet)
    summary = analyse_video(trimmed, StubPipeline(), tmp_path / "out")  # type: ignore[arg-type]
    assert summary.announced_frames == 100 and summary.frames < 60  # the count covers the cut part too
    assert summary.announced_duration_s == pytest.approx(5.0) and summary.ended_early is None


def test_sound_longer_than_the_picture_is_not_called_truncated(tmp_path: Path) -> None:
    """A WebM's duration covers every stream: 3 s of video with 10 s of sound looked like a clip cut at 3 s. The
    video track's own DURATION tag is used."""
    path = tmp_path / "talk.webm"
    with av.open(str(path), "w") as container:
        picture = container.add_stream("libvpx", rate=10)
        picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        sound = container.add_stream("libopus", rate=48000)
        sound.layout = "mono"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 5, np.uint8), format="rgb24")
            for packet in picture.encode(frame):
                container.mux(packet)
        for packet in picture.encode():
            container.mux(packet)
        for k in range(500):  # 10 s in 20 ms Opus frames
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), format="s16", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, k * 960
            for packet in sound.encode(chunk):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)
    summary = analyse_video(path, StubPipeline(), tmp_path / "out")  # type: ignore[arg-type]
    assert summary.frames == 30 and summary.announced_duration_s == pytest.approx(3.0, abs=0.05)
    assert summary.ended_early is None
    untagged = tmp_path / "untagged.mkv"  # no per-track DURATION: the container's covers the sound too
    with av.open(str(path)) as reader, av.open(str(untagged), "w", options={"write_tags": "0"}) as writer:
        copies = {stream.index: writer.add_stream_from_template(stream) for stream in reader.streams}
        for packet in reader.demux():
            if packet.dts is not None:
                packet.stream = copies[packet.stream.index]
                writer.mux(packet)
    info = probe_video(untagged)
    if info.duration_shared:  # some muxers write the tag anyway
        assert info.frames and info.duration_s == pytest.approx(10.0, abs=0.1)  # an estimate for the progress bar
        summary = analyse_video(untagged, StubPipeline(), tmp_path / "out2")  # type: ignore[arg-type]
        assert summary.announced_duration_s is None and summary.ended_early is None


def test_a_stop_event_ends_the_analysis_at_the_next_frame(tmp_path: Path) -> None:
    """A cancel waited for the next 1 % progress report: hundreds of frames on a long clip."""
    path = write_video(tmp_path / "clip.mp4", [np.zeros((48, 64, 3), np.uint8)] * 30, "libx264")
    stop = threading.Event()

    class StoppedAtThird(StubPipeline):
        def __call__(self, image: np.ndarray, file_size: tuple[int, int] | None = None) -> ImageResult:
            if self.calls == 2:
                stop.set()  # as the page's Cancel does, from another thread
            return super().__call__(image)

    pipe = StoppedAtThird()
    with pytest.raises(video.VideoCancelled, match=r"clip\.mp4: analysis cancelled"):
        analyse_video(path, pipe, tmp_path / "out", stop=stop)  # type: ignore[arg-type]
    assert pipe.calls == 3 and list((tmp_path / "out").iterdir()) == []


class StubPipeline:
    """Finds one fixed face on every frame; counts calls."""

    detector = None  # as a Pipeline for face crops: no detector to have fallen back

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: np.ndarray, file_size: tuple[int, int] | None = None) -> ImageResult:
        self.calls += 1
        probs = {name: 1 / len(EMOTIONS) for name in EMOTIONS}
        face = FaceResult((8.0, 8.0, 40.0, 40.0), 0.9, "angry", 1 / 7, probs, {"ensemble": probs})
        return ImageResult([face], image.shape[1], image.shape[0])


class AlternatingPipeline(StubPipeline):
    """The same face, sure it is happy on even calls and sad on odd ones: smoothing shows in every row."""

    def __call__(self, image: np.ndarray, file_size: tuple[int, int] | None = None) -> ImageResult:
        label = "happy" if self.calls % 2 == 0 else "sad"
        self.calls += 1
        probs = dict.fromkeys(EMOTIONS, 0.0) | {label: 1.0}
        face = FaceResult((8.0, 8.0, 40.0, 40.0), 0.9, label, 1.0, probs, {"ensemble": probs})
        return ImageResult([face], image.shape[1], image.shape[0])


def test_the_csv_holds_the_smoothed_probabilities_the_video_shows(tmp_path: Path) -> None:
    """EMA with alpha 0.5 over happy, sad, happy, sad: happy is 1, 0.5, 0.75, 0.375, as worked by hand."""
    path = write_video(tmp_path / "clip.mp4", [np.zeros((48, 64, 3), np.uint8)] * 4, "libx264")
    summary = analyse_video(path, AlternatingPipeline(), tmp_path / "out", tracker=FaceTracker(alpha=0.5))  # type: ignore[arg-type]
    table = pd.read_csv(summary.csv_path)
    assert table["happy"].tolist() == pytest.approx([1.0, 0.5, 0.75, 0.375])
    assert table["sad"].tolist() == pytest.approx([0.0, 0.5, 0.25, 0.625])
    assert table["label"].tolist()[2:] == ["happy", "sad"]  # the smoothed argmax, not the frame's own label
    assert table["confidence"].tolist()[2:] == pytest.approx([0.75, 0.625])


def test_a_very_large_video_is_analysed_at_a_playable_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_video(tmp_path / "wide.mp4", [np.zeros((64, 2400, 3), np.uint8)] * 2, "libx264")
    seen: list[tuple[int, ...]] = []
    stub = StubPipeline()

    def record(image: np.ndarray, file_size: tuple[int, int] | None = None) -> ImageResult:
        seen.append(image.shape)
        return stub(image)

    summary = analyse_video(path, record, tmp_path / "out")  # type: ignore[arg-type]
    assert seen == [(51, 1920, 3)] * 2 and (summary.width, summary.height) == (1920, 50)
    assert summary.faces["x2"].tolist() == pytest.approx([40 * 2400 / 1920] * 2, abs=0.1)  # the source's pixels
    monkeypatch.setattr(video, "MAX_PIXELS", 100_000)
    with pytest.raises(VideoError, match=r"wide\.mp4: 2400x64 frames are too large"):
        analyse_video(path, record, tmp_path / "out")  # type: ignore[arg-type]


def test_skipped_frames_reuse_last_boxes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_video(tmp_path / "odd.avi", [np.zeros((47, 65, 3), np.uint8)] * 10, "mpeg4")
    drawn: list[list[Any]] = []
    real_draw = video.draw_faces
    monkeypatch.setattr(video, "draw_faces", lambda image, boxes: drawn.append(list(boxes)) or real_draw(image, boxes))  # type: ignore[func-returns-value]
    stub = StubPipeline()
    summary = analyse_video(path, stub, tmp_path / "out", every=3, tracker=FaceTracker(alpha=0.2))  # type: ignore[arg-type]
    assert stub.calls == 4  # frames 0, 3, 6, 9
    assert len(drawn) == 10 and all(len(boxes) == 1 for boxes in drawn)
    assert all(boxes[0][3] == 1 for boxes in drawn)  # the track id is drawn on every frame
    assert (summary.width, summary.height) == (64, 46)  # odd sides cropped for yuv420p
    assert len(list(iter_frames(summary.annotated_path))) == 10
    with pytest.raises(ValueError, match="every"):
        analyse_video(path, stub, tmp_path / "out", every=0)  # type: ignore[arg-type]


def raw_h264(frames: list[np.ndarray]) -> bytes:
    """An Annex-B H.264 elementary stream: two of them joined play as one stream that changes resolution."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


class CentredFacePipeline(StubPipeline):
    """One face over the middle half of whatever frame it is given."""

    def __call__(self, image: np.ndarray, file_size: tuple[int, int] | None = None) -> ImageResult:
        result = super().__call__(image)
        height, width = image.shape[:2]
        box = (width / 4, height / 4, 3 * width / 4, 3 * height / 4)
        return ImageResult([dataclasses.replace(result.faces[0], box=box)], width, height)


def test_a_resolution_change_keeps_the_track_and_its_boxes_on_the_face(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """320x240 then 160x120 mid-stream: the boxes kept for skipped frames and the track follow into the new pixels
    (before, frames 4 and 5 were drawn with frame 3's box in 320x240 pixels, and frame 6 started track #2)."""
    path = tmp_path / "changing.h264"
    path.write_bytes(
        raw_h264([np.full((240, 320, 3), 90, np.uint8)] * 4) + raw_h264([np.full((120, 160, 3), 90, np.uint8)] * 4)
    )
    assert [frame.image.shape[:2] for frame in iter_frames(path)] == [(240, 320)] * 4 + [(120, 160)] * 4
    drawn: list[list[Any]] = []
    real_draw = video.draw_faces
    monkeypatch.setattr(video, "draw_faces", lambda image, boxes: drawn.append(list(boxes)) or real_draw(image, boxes))  # type: ignore[func-returns-value]
    summary = analyse_video(path, CentredFacePipeline(), tmp_path / "out", every=3)  # type: ignore[arg-type]
    boxes = [frame_boxes[0][0] for frame_boxes in drawn]
    assert boxes[:4] == [pytest.approx((80, 60, 240, 180))] * 4
    assert boxes[4:] == [pytest.approx((40, 30, 120, 90))] * 4  # frames 4 and 5 reuse frame 3's box, rescaled
    assert summary.faces["face_id"].tolist() == [1, 1, 1]  # frames 0, 3 and 6: one face, one track
    assert summary.faces["x1"].tolist() == pytest.approx([80, 80, 40])  # each frame's own pixels


def test_a_stream_that_grows_past_the_pixel_limit_is_stopped_at_that_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size check before decoding sees only the first frame's size; a later, larger one is refused unread."""
    monkeypatch.setattr(video, "MAX_PIXELS", 100_000)
    path = tmp_path / "grows.h264"
    path.write_bytes(raw_h264([np.zeros((48, 64, 3), np.uint8)] * 200) + raw_h264([np.zeros((480, 640, 3), np.uint8)]))
    with pytest.raises(VideoError, match=r"grows\.h264: frame 200 is 640x480, too large to analyse"):
        analyse_video(path, StubPipeline(), tmp_path / "out")  # type: ignore[arg-type]
    assert list((tmp_path / "out").iterdir()) == []


def test_joined_transport_streams_keep_their_times_in_order(tmp_path: Path) -> None:
    """`cat a.ts b.ts` (camera and HLS segments): b's clock starts again, which made the CSV's times restart at 0
    and the annotated video squeeze b's two seconds into a fraction of a millisecond."""
    segments = []
    for level in (50, 200):
        segment = tmp_path / f"{level}.ts"
        with av.open(str(segment), "w", format="mpegts") as container:
            stream = container.add_stream("libx264", rate=Fraction(10))
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for _ in range(20):
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), level, np.uint8))):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        segments.append(segment.read_bytes())
    path = tmp_path / "joined.ts"
    path.write_bytes(b"".join(segments))
    summary = analyse_video(path, StubPipeline(), tmp_path / "out", every=5)  # type: ignore[arg-type]
    assert summary.faces["time_s"].tolist() == pytest.approx([0.5 * i for i in range(8)], abs=1e-3)
    assert summary.duration_s == pytest.approx(4.0, abs=1e-3)
    written = [frame.time_s for frame in iter_frames(summary.annotated_path)]
    assert written == pytest.approx([0.1 * i for i in range(40)], abs=2e-3)


def test_cli_end_to_end(
    face_video: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    loads: list[dict[str, Any]] = []

    def load(weights: Path, **kwargs: Any) -> StubPipeline:  # the wiring is under test; models are tested above
        loads.append({"weights": weights, **kwargs})
        return StubPipeline()

    monkeypatch.setattr(video.Pipeline, "load", load)
    trackers: list[FaceTracker] = []
    monkeypatch.setattr(video, "FaceTracker", lambda *args: trackers.append(FaceTracker(*args)) or trackers[-1])  # type: ignore[func-returns-value]
    out = tmp_path / "cli"
    code = video.main(
        [
            str(face_video),
            "--out",
            str(out),
            "--every",
            "4",
            "--weights",
            "w",
            "--detector",
            "haar",
            "--alpha",
            "0.3",
            "--iou",
            "0.4",
            "--max-missed",
            "3",
            "--smoothing",
            "window",
            "--window",
            "7",
            "--conf",
            "0.3",
            "--imgsz",
            "320",
            "--min-face",
            "24",
        ]
    )
    assert code == 0
    expected = {"weights": Path("w"), "runtime": "auto", "detector_backend": "haar", "conf": 0.3}
    assert loads == [{**expected, "imgsz": 320, "min_face": 24}]
    (tracker,) = trackers
    assert (tracker.alpha, tracker.iou_threshold, tracker.max_missed) == (0.3, 0.4, 3)
    assert (tracker.smoothing, tracker.window) == ("window", 7)
    assert (out / "annotated.mp4").stat().st_size > 0
    table = pd.read_csv(out / "faces.csv")
    assert table["frame"].tolist() == [0, 4, 8, 12, 16] and set(table["face_id"]) == {1}
    assert "5 analysed" in capsys.readouterr().out
    bad = tmp_path / "bad.mov"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(SystemExit) as stopped:
        cli.run(lambda: video.main([str(bad), "--out", str(out), "--detector", "haar"]))
    assert stopped.value.code == 2 and "bad.mov" in capsys.readouterr().err
    assert len(loads) == 1  # refused before any model was loaded


def test_cli_tta_off_analyses_with_one_view(
    face_video: Path, fake_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = shutil.copytree(fake_weights, tmp_path / "weights")
    spec = json.loads((weights / "ensemble.json").read_text())
    (weights / "ensemble.json").write_text(json.dumps({**spec, "tta": "flip"}))
    used: list[str] = []

    def capture(source: Path, pipe: Pipeline, *args: Any, **kwargs: Any) -> Any:
        used.append(pipe.ensemble.tta)
        raise VideoError("stop here: only the pipeline handed over is under test")

    monkeypatch.setattr(video, "analyse_video", capture)
    for tta in ("shipped", "off"):
        args = [str(face_video), "--out", str(tmp_path / tta), "--weights", str(weights), "--detector", "haar"]
        with pytest.raises(VideoError):
            video.main([*args, "--tta", tta])
    assert used == ["flip", "none"]


def test_cli_refuses_haar_boxes_when_yolo_is_asked_for_by_name(
    face_video: Path, fake_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With unusable YOLO weights, --detector yolo analysed the clip with the Haar cascade and exited 0."""
    weights = shutil.copytree(fake_weights, tmp_path / "weights")
    (weights / "face_yolo.pt").write_bytes(b"garbage")
    args = [str(face_video), "--out", str(tmp_path / "out"), "--weights", str(weights), "--detector", "yolo"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "YOLO face weights unusable")  # it said "falling back to Haar", then refused
        with pytest.raises(SystemExit) as stopped:
            video.main(args)
    assert stopped.value.code == 2 and "--detector yolo: its weights are unusable" in capsys.readouterr().err
    assert not (tmp_path / "out" / "faces.csv").exists()


class PlacedFacePipeline(StubPipeline):
    """A sure-happy face at the true box of the frame analysed (the k-th call is frame k * every)."""

    def __init__(self, truth: list[tuple[float, float, float, float]], every: int) -> None:
        super().__init__()
        self.truth, self.every = truth, every

    def __call__(self, image: np.ndarray, file_size: tuple[int, int] | None = None) -> ImageResult:
        box = self.truth[self.calls * self.every]
        self.calls += 1
        probs = dict.fromkeys(EMOTIONS, 0.0) | {"happy": 1.0}
        return ImageResult(
            [FaceResult(box, 0.9, "happy", 1.0, probs, {"ensemble": probs})], image.shape[1], image.shape[0]
        )


def fast_face_video(folder: Path) -> tuple[Path, list[tuple[float, float, float, float]]]:
    """12 frames of bench_motion's face crossing the picture (up to 28 px a frame) as an mp4, with its true boxes."""
    from fer_core.bench_motion import PATHS, clip

    pictures, truth = zip(*clip(next(p for p in PATHS if p.name == "fast"), 12), strict=True)
    return write_video(folder / "fast.mp4", list(pictures), "libx264", options={"crf": "18"}), list(truth)


@pytest.mark.parametrize("follow", [True, False])
def test_boxes_move_with_the_face_between_analysed_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, follow: bool
) -> None:
    """With --every 4 the frames between drew the last analysed box where it was found: on a face moving up to
    28 px a frame, up to 80 px behind it. Followed by optical flow, it stays on the face."""
    from fer_core.tracking import iou_matrix

    path, truth = fast_face_video(tmp_path)
    drawn: list[Any] = []
    draw = video.draw_faces
    monkeypatch.setattr(video, "draw_faces", lambda image, faces: drawn.append(faces[0][0]) or draw(image, faces))  # type: ignore[func-returns-value]
    summary = analyse_video(path, PlacedFacePipeline(truth, 4), tmp_path / "out", 4, follow=follow)  # type: ignore[arg-type]
    assert (summary.frames, summary.analysed_frames, len(drawn)) == (12, 3, 12)
    for index, (box, true_box) in enumerate(zip(drawn, truth, strict=True)):
        analysed = truth[index - index % 4]
        if index % 4 == 0 or not follow:
            assert box == analysed
        else:
            assert iou_matrix(np.array(box), np.array(true_box))[0, 0] > 0.9, index
    if not follow:
        assert iou_matrix(np.array(drawn[3]), np.array(truth[3]))[0, 0] < 0.5  # what following mends


@pytest.mark.parametrize(("follow", "ids"), [(True, [1, 1]), (False, [1, 2])])
def test_a_face_followed_between_analysed_frames_keeps_its_id(tmp_path: Path, follow: bool, ids: list[int]) -> None:
    """With --every 6 the face is 1.7 widths on at the next analysed frame, past the tracker's MAX_JUMP from where it
    was found: it took a new id (and restarted its smoothing). Matched against where it was followed to, it keeps
    its id."""
    path, truth = fast_face_video(tmp_path)
    summary = analyse_video(path, PlacedFacePipeline(truth, 6), tmp_path / "out", 6, follow=follow)  # type: ignore[arg-type]
    assert summary.faces["face_id"].tolist() == ids


def test_face_rows_give_each_corner_in_the_source_s_pixels() -> None:
    """A face tracked on a frame shrunk to half size is written to faces.csv at twice its coordinates, each corner
    its own, with the frame's number and time."""
    from fer_core.tracking import TrackedFace

    probs = dict.fromkeys(EMOTIONS, 0.0) | {"sad": 1.0}
    raw = FaceResult((0.0, 0.0, 1.0, 1.0), 0.9, "sad", 1.0, probs, {"ensemble": probs})
    face = TrackedFace(3, (10.0, 20.0, 30.0, 50.0), probs, "sad", 1.0, raw, 0)
    frame = video.Frame(7, 0.23456, np.zeros((1, 1, 3), np.uint8))
    (row,) = video.face_rows(frame, [face], scale=0.5)
    corners = {"x1": 20.0, "y1": 40.0, "x2": 60.0, "y2": 100.0}
    assert row == {"frame": 7, "time_s": 0.2346, "face_id": 3, **corners, **probs, "label": "sad", "confidence": 1.0}


def test_fit_side_shrinks_by_the_longer_side_whichever_it_is() -> None:
    """A portrait clip is limited by its height as a landscape one by its width; one that fits is left as it is."""
    tall, scale = video.fit_side(np.zeros((400, 100, 3), np.uint8), 200)
    wide, wide_scale = video.fit_side(np.zeros((100, 400, 3), np.uint8), 200)
    assert (tall.shape[:2], scale, wide.shape[:2], wide_scale) == ((200, 50), 0.5, (50, 200), 0.5)
    fits = np.zeros((200, 100, 3), np.uint8)
    same, same_scale = video.fit_side(fits, 200)
    assert same is fits and same_scale == 1.0


def test_an_upside_down_recording_keeps_its_width_and_height(tmp_path: Path) -> None:
    """A phone held upside down stores a 180-degree rotation: the picture turns over but stays as wide as it was, so
    the annotated video and the boxes keep the clip's own width and height."""
    path = write_video(tmp_path / "phone.mp4", [np.zeros((48, 64, 3), np.uint8)] * 2, "libx264", rotation=180)
    info = probe_video(path)
    assert (info.rotation % 360, info.width, info.height) == (180, 64, 48)
    assert next(iter_frames(path)).image.shape == (48, 64, 3)


def test_a_matroska_duration_tag_is_read_as_hours_minutes_and_seconds() -> None:
    """A WebM or MKV keeps its video track's length in a DURATION tag ("HH:MM:SS.fffffffff"): an hour-long recording
    is 3723.5 s, which decides whether it is called truncated (the test clips, all under a minute, never read the
    minutes)."""
    stream = types.SimpleNamespace(duration=None, time_base=None, metadata={"DURATION": "01:02:03.500000000"})
    container = types.SimpleNamespace(duration=None, streams=[stream])
    seconds, shared = video._stream_duration(container, stream)
    assert seconds == pytest.approx(3723.5) and shared is False
