"""Video page: analyse every Nth frame of an uploaded clip, play the annotated result, plot each face over time.

The upload is written to a private `tempfile` directory only for FFmpeg to read, and that directory (with the
annotated copy and the CSV) is deleted as soon as the results are read back into this session's memory. The
analysis runs as a `BackgroundJob`: the page may rerun (any widget touched) while it works, and only the Cancel
button stops it.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path, PurePath
from typing import Any, NamedTuple, cast

import pandas as pd
import streamlit as st

from app import charts, memo, ui, uploads
from app.jobs import BackgroundJob, watch_this_session
from app.live import TrackerSettings
from fer_core.pipeline import Pipeline
from fer_core.video import VideoError, VideoInfo, VideoSummary, analyse_video, probe_video

RESULT_KEY = "video_result"
#: A clip narrower than this is shown at its own width: a 136x104 clip filled the column, enlarged into a blur.
SMALL_CLIP_PX = 640
JOB_KEY = "video_job"
#: The `RunProblem` of the last run that ended without a result.
PROBLEM_KEY = "video_problem"


class VideoKey(NamedTuple):
    """What a result depends on: the clip first (results, jobs and problems are matched to the loaded clip by
    `digest` alone), then the settings it was analysed with (a result under other settings is shown as stale)."""

    digest: str
    every: int
    tracking: TrackerSettings
    tta: bool
    detector: tuple[Any, ...]  # `DetectorSettings.key`: the detection settings and the weights


@dataclass(frozen=True)
class ResultSummary:
    """The parts of `VideoSummary` the page shows, kept once the temp files are gone; the warnings name the uploaded
    file, not the temp copy the analysis read."""

    frames: int
    analysed_frames: int
    every: int
    faces_tracked: int
    duration_s: float
    width: int
    codec: str
    damaged: str | None
    ended_early: str | None

    @classmethod
    def of(cls, summary: VideoSummary, name: str) -> ResultSummary:
        """`summary` of the temp copy of the upload `name`."""
        temp_name = summary.source.name
        return cls(
            frames=summary.frames,
            analysed_frames=summary.analysed_frames,
            every=summary.every,
            faces_tracked=len(summary.track_ids),
            duration_s=round(summary.duration_s, 3),  # as `VideoSummary.to_dict` (and the CLI's JSON) gives it
            width=summary.width,
            codec=summary.codec,
            damaged=summary.damaged and summary.damaged.replace(temp_name, name),
            ended_early=summary.ended_early and summary.ended_early.replace(temp_name, name),
        )

    def renamed(self, old: str, new: str) -> ResultSummary:
        """The warnings under the name the same bytes were dropped again with."""
        return replace(
            self,
            damaged=self.damaged and renamed(self.damaged, old, new),
            ended_early=self.ended_early and renamed(self.ended_early, old, new),
        )


@dataclass(frozen=True)
class VideoResult:
    """Everything the page shows about one analysed upload, held in this session only."""

    name: str
    key: VideoKey
    video: bytes
    csv: bytes
    faces: pd.DataFrame
    summary: ResultSummary


@dataclass(frozen=True)
class RunProblem:
    """Why the last run ended without a result, shown while its clip (`digest`) is loaded, under the name the clip
    has now: an error when it `failed`, a warning when it was cancelled."""

    digest: str
    name: str
    message: str
    failed: bool


@contextmanager
def upload_on_disk(name: str, data: bytes) -> Iterator[Path]:
    """The upload's bytes as a file in a private temp dir, removed afterwards, errors included; a `VideoError`
    raised inside names the user's file, not our temp path."""
    suffix = PurePath(name).suffix.lower() or ".mp4"
    with tempfile.TemporaryDirectory(prefix="fer_video_") as tmp:
        source = Path(tmp) / f"upload{suffix}"
        source.write_bytes(data)
        try:
            yield source
        except VideoError as err:
            raise VideoError(str(err).replace(str(source), name)) from err


def analyse_upload(
    name: str,
    data: bytes,
    pipe: Pipeline,
    every: int,
    tracking: TrackerSettings,
    key: VideoKey,
    progress: Callable[[int, int | None], None] | None = None,
    stop: threading.Event | None = None,
) -> VideoResult:
    """Run `analyse_video` on the bytes (`upload_on_disk`)."""
    with upload_on_disk(name, data) as source:
        summary = analyse_video(
            source,
            pipe,
            source.parent / "out",
            every=every,
            tracker=tracking.build(),
            progress_callback=progress,
            stop=stop,
            follow=tracking.follow,
        )
        return VideoResult(
            name,
            key,
            summary.annotated_path.read_bytes(),
            summary.csv_path.read_bytes(),
            summary.faces,
            ResultSummary.of(summary, name),
        )


def probe_upload(name: str, data: bytes) -> VideoInfo | str:
    """The clip's size, rate and length, or why it cannot be analysed, as soon as it is dropped: a text file named
    .mp4 was named only after Analyse. `analyse_video` probes the same way first, so a refused clip would fail."""
    try:
        with upload_on_disk(name, data) as source:
            return probe_video(source)
    except VideoError as err:
        return str(err)
    except Exception as err:  # never a traceback for a bad file
        return f"{name}: cannot read this file ({type(err).__name__})"


def clip_note(name: str, info: VideoInfo) -> str:
    """E.g. 'clip.mp4: 1280x720 px · 30.0 FPS · 12.0 s · 360 frames'."""
    parts = [f"{info.width}x{info.height} px", f"{info.fps:.1f} FPS"]
    if info.duration_s:
        parts.append(f"{info.duration_s:.1f} s")
    if info.frames:
        parts.append(f"{'about ' if info.frames_estimated else ''}{info.frames} frames")
    return f"{name}: {' · '.join(parts)}"


def analysed_help(every: Any) -> str | None:
    """What 'Analysed' counts, beside 'Frames': "Analysed 42" next to "Frames 125" said nothing of the setting."""
    if not isinstance(every, int) or every < 1:
        return None
    if every == 1:
        return "Every frame went through the models."
    suffix = "th" if 10 <= every % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(every % 10, "th")
    return f"Every {every}{suffix} frame went through the models (the setting); those between show its labels."


def show_result(result: VideoResult) -> None:
    summary = result.summary
    metrics = st.container(horizontal=True)  # wrapped where narrow: four stacked rows put the video off a phone
    metrics.metric("Frames", summary.frames)
    metrics.metric("Analysed", summary.analysed_frames, help=analysed_help(summary.every))
    metrics.metric(
        "Face tracks",
        summary.faces_tracked,
        help=f"A face the detector misses for more than {TrackerSettings.max_missed} analysed frames in a row "
        "comes back as a new track, so one person can count more than once.",
    )
    metrics.metric("Duration", f"{summary.duration_s:.1f} s")
    if summary.damaged:
        st.warning(summary.damaged, icon=":material/broken_image:")
    if summary.ended_early:
        st.warning(summary.ended_early, icon=":material/content_cut:")
    if summary.codec == "mpeg4":  # FFmpeg built without an H.264 encoder: the fallback browsers do not play
        st.warning(
            "This server's FFmpeg has no H.264 encoder, so the annotated video is MPEG-4 Part 2, which browsers do "
            "not play: download it and open it in a video player (VLC, mpv).",
            icon=":material/play_disabled:",
        )
    # A small clip at most its own width, not stretched into a blur; set on a container, which Streamlit narrows to
    # the column on a phone (a width set on the video itself is not)
    with st.container(width=summary.width) if summary.width < SMALL_CLIP_PX else st.container():
        st.video(result.video, format="video/mp4", width="stretch")
    stem = PurePath(result.name).stem
    downloads = st.container(horizontal=True)  # side by side, not half a page apart
    downloads.download_button(
        "Faces over time (CSV)", result.csv, f"{stem}_faces.csv", "text/csv", key="video_csv", on_click="ignore"
    )
    downloads.download_button(
        "Annotated video (mp4)", result.video, f"{stem}_annotated.mp4", "video/mp4", key="video_mp4", on_click="ignore"
    )
    faces = result.faces
    if faces.empty:
        st.info("No face was found in the analysed frames.", icon=":material/search_off:")
        return
    st.subheader("Emotions over time")
    st.plotly_chart(charts.emotion_timeline(faces), config=charts.figure_config(toolbar=True), key="video_timeline")
    ids = sorted(int(i) for i in faces["face_id"].unique())
    face_id = st.selectbox("Probabilities of face", ids, format_func=lambda i: f"face #{i}", key="video_face")
    st.plotly_chart(
        charts.face_probability_lines(faces, face_id), config=charts.figure_config(toolbar=True), key="video_lines"
    )


def main() -> None:
    st.title("Video")
    settings = ui.detector_controls("video")
    tta = ui.tta_control("video", default=False)  # a long clip is many frames: as on the Webcam page, off at first
    tracking = ui.tracker_controls("video")
    pipe = ui.pipeline(settings, tta=tta)
    ui.sidebar_info(pipe)

    upload = uploads.kept_file_uploader(
        "Drop a video", type=ui.VIDEO_TYPES, key="video_upload", help="mp4, mov, webm or avi; audio is ignored."
    )
    every = st.number_input(
        "Analyse every Nth frame",
        1,
        60,
        3,
        key="video_every",
        help="Frames in between reuse the last labels (their boxes move with the faces when 'Boxes follow the "
        "faces' is on): higher is faster, coarser.",
    )
    if upload is None:
        # the user removed the file (or pressed Forget): its analysis stops. The last result (one, so its memory is
        # bounded) and failure stay for the clip: the browser empties the uploader for a moment when another file is
        # dropped on it, and a finished analysis was lost to one mis-drop
        abandon_job()
        st.info("Faces are tracked through the clip; the result is an annotated video and a timeline per face.")
        return
    data = upload.getvalue()
    if every == 1:  # every frame analysed: nothing between to follow, so the switch cannot change the result
        tracking = replace(tracking, follow=True)
    key = VideoKey(memo.file_digest(data), int(every), tracking, tta, settings.key)
    job: BackgroundJob[VideoResult] | None = st.session_state.get(JOB_KEY)
    if job is not None and job_key(job).digest != key.digest:
        abandon_job()  # another file was dropped
        job = st.session_state.get(JOB_KEY)  # an ended job stays, to be collected
    running = job is not None and not job.done
    probed_name, probed = memo.session_memo(
        "video_probe", (key.digest,), lambda: (upload.name, probe_upload(upload.name, data))
    )
    if isinstance(probed, str):  # nothing here can be analysed: said now, not after Analyse
        st.error(renamed(probed, probed_name, upload.name), icon=":material/error:")
        return
    st.caption(clip_note(upload.name, probed))
    # Started in the click's callback, before the run that follows draws the page: started in that run, the button
    # was already drawn enabled beside a running job (and a second click did nothing)
    st.button(
        "Analyse video",
        type="primary",
        key="video_analyse",
        disabled=running,
        on_click=start_analysis,
        args=(upload.name, data, pipe, int(every), tracking, key),
    )
    if job is not None:
        if job.done:
            collect(job)
        else:
            job_panel(job)
    problem: RunProblem | None = st.session_state.get(PROBLEM_KEY)
    if problem is not None and problem.digest == key.digest:
        message = renamed(problem.message, problem.name, upload.name)
        failed = problem.failed
        (st.error if failed else st.warning)(message, icon=":material/error:" if failed else ":material/stop:")
    previous: VideoResult | None = st.session_state.get(RESULT_KEY)
    if previous is not None and previous.key.digest == key.digest and previous.name != upload.name:
        # the same bytes under another name: the downloads and the warnings follow it
        summary = previous.summary.renamed(previous.name, upload.name)
        previous = replace(previous, name=upload.name, summary=summary)
        st.session_state[RESULT_KEY] = previous
    if previous is not None and previous.key == key:
        show_result(previous)
    elif previous is not None and previous.key.digest == key.digest:
        if not (running and job is not None and job.key == key):  # not while the run with these settings goes on
            st.caption("Settings changed: press *Analyse video* to apply them.")
        show_result(previous)


def start_analysis(
    name: str, data: bytes, pipe: Pipeline, every: int, tracking: TrackerSettings, key: VideoKey
) -> None:
    """The Analyse button's callback: start the background analysis of this clip with these settings."""
    st.session_state.pop(PROBLEM_KEY, None)
    work = partial(analyse_upload, name, data, pipe, every, tracking, key)
    st.session_state[JOB_KEY] = BackgroundJob.start(name, key, work, watch_this_session())


def renamed(message: str, old: str, new: str) -> str:
    """A message that begins with the file's name, under the name the same bytes were dropped again with."""
    return new + message[len(old) :] if old != new and message.startswith(f"{old}:") else message


def job_key(job: BackgroundJob[VideoResult]) -> VideoKey:
    """The key `start_analysis` started `job` with (a `BackgroundJob` holds any tuple)."""
    return cast(VideoKey, job.key)


def abandon_job() -> None:
    """Stop the analysis of a clip that was removed or replaced, and forget it: if the clip is dropped again before
    the job notices the cancel (at its next progress report), the page must not show it running, then cancelled.
    A job that has already ended is left to `collect`, as before: its result is kept for its clip."""
    job: BackgroundJob[VideoResult] | None = st.session_state.get(JOB_KEY)
    if job is not None and not job.done:
        del st.session_state[JOB_KEY]
        job.cancel()


@st.fragment(run_every=1.0)
def job_panel(job: BackgroundJob[VideoResult]) -> None:
    """Progress of the running analysis, redrawn every second; the whole page reruns once it has ended."""
    if job.done:
        st.rerun()
    progress = job.progress
    if progress.fraction is None:
        st.progress(0.0, text=f"Analysing {job.name}… {progress.done} frames")
    else:
        st.progress(progress.fraction, text=f"Analysing {job.name}… {progress.fraction:.0%}")
    st.caption("It goes on while you change settings; they apply to the next run.")
    st.button("Cancel", key="video_cancel", on_click=job.cancel, icon=":material/stop:")


def collect(job: BackgroundJob[VideoResult]) -> None:
    """Take an ended job's result, or word why there is none (once: the job is then forgotten)."""
    st.session_state.pop(JOB_KEY, None)
    digest = job_key(job).digest
    if job.result is not None:
        st.session_state[RESULT_KEY] = job.result
    elif job.cancelled:
        st.session_state[PROBLEM_KEY] = RunProblem(digest, job.name, f"{job.name}: analysis cancelled.", False)
    elif isinstance(job.error, VideoError):
        st.session_state[PROBLEM_KEY] = RunProblem(digest, job.name, str(job.error), True)
    elif job.error is not None:  # an encoder or decoder failure, a full disk: a message, not a traceback
        problem = getattr(job.error, "strerror", None) or str(job.error)  # an OSError's text without our temp path
        message = f"{job.name}: analysis failed ({type(job.error).__name__}: {problem})"
        st.session_state[PROBLEM_KEY] = RunProblem(digest, job.name, message, True)


main()
