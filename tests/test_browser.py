"""The app in a real headless Chromium: a photo upload and the live webcam (a fake camera playing a face clip).

Starts `streamlit run app/main.py` as a subprocess with the fake weights (or `$FER_BROWSER_WEIGHTS_DIR`, e.g. the
shipped `weights/` for the README screenshot) and the default runtime (onnxruntime). Screenshots go to
`$FER_SCREENSHOT_DIR` (default: a pytest temp dir) as photos.png, webcam.png and compare.png.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from skimage.data import astronaut

from fer_core.labels import EMOTIONS
from tests.browser_helpers import browser_available, chromium, streamlit_server, write_y4m

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not browser_available(), reason="needs /usr/bin/chromium and /usr/bin/chromedriver"),
]

#: How long the server keeps a closed tab's session (Streamlit's default is 120 s).
SESSION_TTL_S = 2
#: Model loading (with a first ONNX export) and WebRTC set-up are slow on a busy CPU; raise it on a starved machine.
WAIT_S = float(os.environ.get("FER_BROWSER_WAIT_S", "300"))


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("FER_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's cache and its log (`streamlit.log`), which a test may read."""
    return tmp_path_factory.mktemp("server")


@pytest.fixture(scope="module")
def server(fake_weights: Path, server_dir: Path) -> Iterator[str]:
    env = {
        "FER_WEIGHTS_DIR": os.environ.get("FER_BROWSER_WEIGHTS_DIR") or str(fake_weights),
        "FER_CACHE_DIR": str(server_dir / "cache"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": "",
        "STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL": str(SESSION_TTL_S),  # a closed tab's session ends soon
    }
    with streamlit_server(env, server_dir / "streamlit.log", timeout=WAIT_S) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    work = tmp_path_factory.mktemp("chromium")
    # A 4:3 crop centred on the astronaut's face, which then spans about a third of the 320x240 frame.
    face = astronaut()[8:218, 83:363]
    camera = write_y4m(work / "camera.y4m", face)
    driver = chromium(work / "profile", camera)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def driver(browser: Any, screenshots: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The shared browser; a failing test leaves failed_<test>.png behind to show what the page looked like."""
    failed_before = request.session.testsfailed
    yield browser
    if request.session.testsfailed > failed_before:
        browser.switch_to.default_content()
        browser.save_screenshot(str(screenshots / f"failed_{request.node.name}.png"))


def wait_for(condition: Callable[[], Any], timeout: float = WAIT_S, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # stale elements while Streamlit re-renders
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def page_texts(driver: Any, test_id: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{test_id}"]')]


def frames_analysed(driver: Any) -> int:
    """The live panel's 'N frames analysed' counter (0 until it shows)."""
    for text in page_texts(driver, "stCaptionContainer"):
        if "frames analysed in this session" in text:
            return int(text.split()[0])
    return 0


def test_webcam_shows_live_labelled_face(server: str, driver: Any, screenshots: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{server}/webcam")  # a deep link as the server's very first visit: must still get the full app
    nav = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, '[data-testid="stSidebarNav"]').text, what="nav")
    assert "Ensemble comparison" in nav and "main" not in nav.split()
    frame = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, 'iframe[title*="webrtc"]'), what="webrtc iframe")
    driver.switch_to.frame(frame)
    try:
        start = wait_for(
            lambda: next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip().upper() == "START"),
            what="the START button",
        )
        start.click()
    finally:
        driver.switch_to.default_content()
    status = wait_for(
        lambda: next((t for t in page_texts(driver, "stText") if t.startswith("faces: 1 (")), None),
        what="a labelled face in the live status",
    )
    assert status.endswith("FPS")
    sent = wait_for(  # the relay tells the page which drawn frames the browser's sender took
        lambda: next((t for t in page_texts(driver, "stCaptionContainer") if "sent to the browser" in t), None),
        what="the rate of frames sent to the browser",
    )
    assert re.search(r"video \d+\.\d FPS drawn, \d+\.\d sent to the browser$", sent), sent
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"]'), what="the live chart")
    first = wait_for(lambda: frames_analysed(driver), what="the frame counter")
    with contextlib.suppress(TimeoutError):  # only for a nicer screenshot: annotated frames have reached the video
        wait_for(lambda: frames_analysed(driver) >= first + 3, timeout=30)
    assert not page_texts(driver, "stException")
    driver.save_screenshot(str(screenshots / "webcam.png"))

    driver.switch_to.frame(frame)  # STOP: the page says when the stream ended (a lost connection looks the same)
    try:
        wait_for(
            lambda: next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip().upper() == "STOP"),
            what="the STOP button",
        ).click()
    finally:
        driver.switch_to.default_content()
    ended = wait_for(
        lambda: next(
            (t for t in page_texts(driver, "stCaptionContainer") if t.startswith("The last stream ran")), None
        ),
        what="the ended stream's summary",
    )
    assert re.search(
        r"^The last stream ran (\d+ min )?\d+ s \([1-9]\d* frames analysed\); its last frame came", ended
    ), ended


def test_photo_upload_shows_a_labelled_face(server: str, driver: Any, screenshots: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(photo)
    driver.get(server)
    upload = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, 'input[type="file"]'), what="the uploader")
    upload.send_keys(str(photo))
    caption = wait_for(
        lambda: next((t for t in page_texts(driver, "stCaptionContainer") if "face(s)" in t), None),
        what="the photo's result caption",
    )
    assert caption.startswith("1 face(s)")
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"]'), what="a chart")
    time.sleep(1.0)  # let plotly finish drawing before the screenshot
    assert not page_texts(driver, "stException")
    driver.save_screenshot(str(screenshots / "photos.png"))
    # Everything comes from this server: a ":material/mood:" page icon sent the browser to fonts.gstatic.com.
    icons = driver.execute_script("return [...document.querySelectorAll('link[rel~=icon]')].map(l => l.href)")
    assert icons and all(href.startswith((server, "data:")) for href in icons), icons
    outside = [e["message"] for e in driver.get_log("browser") if re.search(OUTSIDE_URL, e["message"])]
    assert not outside, outside

    # Streamlit drops an uploader's files when another page is shown; the page keeps them itself, and the
    # comparison page starts on the photo dropped there (it had to be dropped again).
    open_page(driver, "Ensemble comparison")
    compared = wait_for(
        lambda: next((t for t in page_texts(driver, "stImageCaption") if "face(s)" in t), None),
        what="the comparison page's result for the Photos page's photo",
    )
    assert compared.startswith("astronaut.png: 1 face(s)")
    open_page(driver, "Photos")
    kept = wait_for(
        lambda: next((t for t in page_texts(driver, "stCaptionContainer") if "dropped earlier" in t), None),
        what="the kept-files caption",
    )
    assert kept.startswith("1 file(s) dropped earlier")
    wait_for(lambda: any(t.startswith("1 face(s)") for t in page_texts(driver, "stCaptionContainer")), what="result")
    assert not page_texts(driver, "stException")
    # A drop now adds to the kept photo, which it replaced: the browser's uploader starts empty, calling no callback.
    mirrored = tmp_path / "mirrored.png"
    Image.fromarray(astronaut()[:, ::-1]).save(mirrored)
    driver.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(mirrored))
    titles = wait_for(
        lambda: [t for t in page_texts(driver, "stHeading") if t.endswith(".png")] == ["astronaut.png", "mirrored.png"],
        what="both photos' results",
    )
    assert titles and not page_texts(driver, "stException")
    driver.save_screenshot(str(screenshots / "photos_kept.png"))


#: A URL of another host than the test server's (whose requests the console logs when they fail offline).
OUTSIDE_URL = r"https?://(?!localhost[:/]|127\.0\.0\.1[:/])"


def open_page(driver: Any, title: str) -> None:
    """Click the sidebar navigation link, as a user does (a new URL would start a new session)."""
    from selenium.webdriver.common.by import By

    links = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNav"] a')
    matching = [link for link in links if link.text.strip().endswith(title)]  # the text starts with the icon's name
    assert matching, [link.text for link in links]
    matching[0].click()


def test_a_sidebar_switch_survives_a_visit_to_another_page(server: str, driver: Any) -> None:
    """Streamlit forgets a widget's value when a run does not draw it: the page re-stores its settings
    (`ui.KEPT_SETTINGS`). AppTest keeps the value either way; a real session does not."""
    from selenium.webdriver.common.by import By

    def follow_switch() -> Any:
        labels = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebar"] label')
        return next(label for label in labels if label.text.strip() == "Boxes follow the faces")

    def switched_on() -> bool:
        return bool(follow_switch().find_element(By.TAG_NAME, "input").is_selected())

    driver.get(f"{server}/webcam")
    wait_for(follow_switch, what="the follow switch")
    assert switched_on()
    follow_switch().click()
    wait_for(lambda: not switched_on(), what="the switch turned off")
    open_page(driver, "Photos")
    wait_for(lambda: driver.find_element(By.CSS_SELECTOR, 'input[type="file"]'), what="the Photos page")
    open_page(driver, "Webcam")
    wait_for(follow_switch, what="the follow switch again")
    time.sleep(1.0)  # the page's run has finished drawing the sidebar
    assert not switched_on()
    assert not page_texts(driver, "stException")


def test_comparison_shows_models_side_by_side(server: str, driver: Any, screenshots: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(astronaut()).save(photo)
    driver.get(f"{server}/compare")
    upload = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, 'input[type="file"]'), what="the uploader")
    upload.send_keys(str(photo))
    verdict = wait_for(
        lambda: next((t for t in page_texts(driver, "stAlert") if "Face #1: the models" in t), None),
        what="the models' verdict on face #1",
    )
    labels = "|".join(EMOTIONS)
    assert re.search(rf"the models (agree on ({labels})|disagree: .*({labels}))", verdict), verdict
    wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"]')) >= 3, what="charts")
    time.sleep(1.0)
    assert not page_texts(driver, "stException")
    driver.save_screenshot(str(screenshots / "compare.png"))


def test_video_analysis_goes_on_while_a_setting_changes(
    server: str, driver: Any, screenshots: Path, tmp_path: Path
) -> None:
    """The analysis runs beside the page: its progress bar refreshes itself, a widget touched meanwhile does not
    end it, and the result appears by itself when it is done (no click)."""
    import numpy as np
    from selenium.webdriver.common.by import By

    from tests.test_video import write_video

    face = np.ascontiguousarray(astronaut()[8:218, 83:363][::2, ::2][:104, :136])  # even sides for yuv420p
    clip = write_video(tmp_path / "clip.mp4", [np.roll(face, i % 7, axis=1) for i in range(300)], "mpeg4", fps=25)
    driver.get(f"{server}/video")
    upload = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, 'input[type="file"]'), what="the uploader")
    upload.send_keys(str(clip))
    analyse = wait_for(
        lambda: next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text == "Analyse video"),
        what="the Analyse button",
    )
    analyse.click()
    seen = wait_for(
        lambda: next((t for t in page_texts(driver, "stProgress") if t.startswith("Analysing clip.mp4")), None),
        what="the progress bar",
    )
    driver.find_element(By.CSS_SELECTOR, '[data-testid="stNumberInputStepUp"]').click()  # every 3 -> 4, mid-run
    metrics = wait_for(lambda: page_texts(driver, "stMetric"), what="the result's figures")
    assert metrics[0].split() == ["Frames", "300"] and metrics[1].split() == ["Analysed", "100"], (seen, metrics)
    assert not page_texts(driver, "stException")
    assert any("Settings changed" in t for t in page_texts(driver, "stCaptionContainer"))
    driver.save_screenshot(str(screenshots / "video.png"))


def test_closing_the_tab_cancels_its_video_analysis(server: str, server_dir: Path, driver: Any, tmp_path: Path) -> None:
    """Minutes of analysis must not run on for a tab that is gone: once Streamlit drops the closed tab's session,
    the job is cancelled (the server says so in its log)."""
    import numpy as np
    from selenium.webdriver.common.by import By

    from tests.test_video import write_video

    face = np.ascontiguousarray(astronaut()[8:218, 83:363][::2, ::2][:104, :136])
    clip = write_video(tmp_path / "long.mp4", [np.roll(face, i % 7, axis=1) for i in range(9000)], "mpeg4", fps=25)
    first_tab = driver.current_window_handle
    driver.switch_to.new_window("tab")
    try:
        driver.get(f"{server}/video")
        upload = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, 'input[type="file"]'), what="the uploader")
        upload.send_keys(str(clip))
        wait_for(
            lambda: next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text == "Analyse video"),
            what="the Analyse button",
        ).click()
        wait_for(lambda: any(t.startswith("Analysing long.mp4") for t in page_texts(driver, "stProgress")), what="it")
    finally:
        driver.close()
        driver.switch_to.window(first_tab)
    log = server_dir / "streamlit.log"
    wait_for(lambda: "background job long.mp4 cancelled" in log.read_text(errors="replace"), 60, "the cancel")
