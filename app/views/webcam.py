"""Webcam page: live boxes and emotions on the camera stream, tracked and smoothed, with a live chart.

WebRTC needs no network on localhost: the default ICE server list is empty, so nothing is contacted.
For access from another machine a STUN/TURN list can be switched on in the sidebar.
"""

from __future__ import annotations

import logging
import time

import pandas as pd
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from app import charts, ui, webrtc_relay
from app.live import STALE_AFTER_S, LiveStatus, LiveStore, TrackerSettings, parse_ice_servers
from fer_core.labels import EMOTIONS

log = logging.getLogger(__name__)
STORE_KEY = "webcam_store"
DEFAULT_ICE = '[{"urls": ["stun:stun.l.google.com:19302"]}]'


def ice_servers() -> list[dict]:
    """[] unless the user asks for STUN/TURN: an empty list keeps WebRTC on localhost, offline."""
    bar = st.sidebar
    bar.subheader("Connection")
    remote = bar.toggle(
        "Remote access (STUN/TURN)",
        key="webcam_remote",
        help="Only needed when the browser is not on this machine; contacts the servers below.",
    )
    if not remote:
        return []
    text = bar.text_area("ICE servers (JSON list)", DEFAULT_ICE, key="webcam_ice")
    try:
        servers = parse_ice_servers(text)
    except ValueError as err:  # json.JSONDecodeError included
        bar.error(f"Ignoring the ICE server list: {err}")
        return []
    return servers


@st.fragment(run_every=0.5)
def live_panel(store: LiveStore, tracking: TrackerSettings) -> None:
    """Re-drawn twice a second from the store; the callback itself never calls Streamlit.

    FPS is frames analysed per second; the video's FPS counts the frames drawn with the latest boxes, which is the
    camera's rate unless the machine is too busy to draw them all (streamlit-webrtc then drops the surplus), and
    the frames the browser's sender took of those (`webrtc_relay` drops the ones it was too slow for).
    """
    status = store.status()
    stalled = store.stalled_for()
    if stalled > STALE_AFTER_S:
        st.warning(
            f"No camera frame for {stalled:.0f} s: the connection may have been lost. Press STOP, then START.",
            icon=":material/videocam_off:",
        )
    st.text(status.text())
    sent = f", {status.sent_fps:.1f} sent to the browser" if status.sent_fps else ""
    st.caption(f"{status.frames} frames analysed in this session · video {status.video_fps:.1f} FPS drawn{sent}")
    if status.error:
        st.warning(f"Frame analysis failed: {status.error}")
    smoothed = " (smoothed)" if tracking.smooths else ""
    face = status.charted_face
    if face is not None:
        title = f"Face #{face.track_id}: {face.label} {face.confidence:.0%}{smoothed}"
        st.plotly_chart(charts.probs_bar(face.probs, title), config=charts.figure_config(), key="webcam_chart")
    if len(status.faces) > 1:
        every_face(status, smoothed=tracking.smooths)


def every_face(status: LiveStatus, *, smoothed: bool) -> None:
    """A column per tracked face: with several people in view, each one's probabilities, not only the charted one's
    (emotions down the side keep the table as narrow as the panel for the usual few faces)."""
    faces = sorted(status.faces, key=lambda f: f.track_id)
    table = pd.DataFrame({f"#{f.track_id}": [f.probs[e] for e in EMOTIONS] for f in faces}, index=list(EMOTIONS))
    charted = status.charted_face
    shown = f"; the chart above: #{charted.track_id}" if charted is not None else ""
    st.caption(f"Every face{', smoothed' if smoothed else ''} (columns numbered as the boxes; bold: its label{shown})")
    st.dataframe(table.style.format("{:.0%}").highlight_max(axis=0, props="font-weight: bold"))


def main() -> None:
    st.title("Webcam")
    settings = ui.detector_controls("webcam")
    tracking = ui.tracker_controls("webcam")
    tta = ui.tta_control("webcam", default=False)
    servers = ice_servers()
    pipe = ui.pipeline(settings, tta=tta)
    ui.sidebar_info(pipe)

    store: LiveStore = st.session_state.setdefault(STORE_KEY, LiveStore())
    store.configure(pipe, tracking)

    video, panel = st.columns([3, 2])
    with video:
        webrtc_relay.install()  # the newest frame to the browser, never a backlog that grows behind the camera
        try:
            ctx = webrtc_streamer(
                key="webcam",
                mode=WebRtcMode.SENDRECV,
                rtc_configuration={"iceServers": servers},
                media_stream_constraints={"video": True, "audio": False},
                video_frame_callback=store.callback,
                on_video_ended=store.end_stream,  # a STOP then START within seconds is still a fresh stream
                async_processing=True,
            )
        except Exception as err:  # e.g. no Streamlit server behind the page (scripted runs)
            log.exception("webrtc_streamer failed")
            st.error(f"The live camera is unavailable here ({type(err).__name__}: {err}).", icon=":material/error:")
            ctx = None
        playing = ctx is not None and ctx.state.playing
        store.playing(playing)
        if st.button(
            "Snapshot to the ensemble comparison", icon=":material/photo_camera:", key="webcam_snapshot_button"
        ):
            frame = store.latest_frame() if playing else None  # after STOP the last frame is the past, however recent
            if frame is None:
                st.warning("No current camera frame: press START first.")
            else:
                name = f"webcam snapshot {time.strftime('%H:%M:%S')}"
                st.session_state[ui.SNAPSHOT_KEY] = ui.Snapshot(name, frame)
                st.switch_page(ui.COMPARE_PAGE)
    with panel:
        if playing:
            live_panel(store, tracking)
        else:
            st.info(
                "Press START and allow the camera. Faces are boxed live; the chart follows the face nearest the "
                "camera (until another is clearly nearer), and with several faces a table gives each one's "
                "probabilities. If the browser answers "
                "NotFoundError, it found no camera; NotAllowedError, the camera was refused (its permission is "
                "in the address bar)."
            )
            span = store.last_stream()
            if span is not None:  # STOP pressed, or the connection lost: the server cannot tell them apart
                st.caption(
                    f"{span.summary(time.time())} Press START to go on. (A stream that ended without STOP lost its "
                    "connection, which a machine too busy can do.)"
                )


main()
