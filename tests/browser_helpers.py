"""Helpers for the real-browser test: a Streamlit server subprocess, headless Chromium, a fake camera file."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[1]


def browser_available() -> bool:
    return CHROMIUM.is_file() and CHROMEDRIVER.is_file()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_y4m(
    path: Path, image_rgb: np.ndarray, seconds: float = 3.0, fps: int = 15, size: tuple[int, int] = (320, 240)
) -> Path:
    """A looping fake-camera clip for Chromium: the image centred and gently drifting (so frames differ)."""
    width, height = size
    frame = cv2.resize(image_rgb, (width, height), interpolation=cv2.INTER_AREA)
    with open(path, "wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(int(seconds * fps)):
            shifted = np.roll(frame, int(3 * np.sin(2 * np.pi * i / (seconds * fps))), axis=1)
            handle.write(b"FRAME\n")
            handle.write(cv2.cvtColor(shifted, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


@contextlib.contextmanager
def streamlit_server(env: dict[str, str], log_path: Path, timeout: float = 120.0) -> Iterator[str]:
    """`streamlit run app/main.py` on a free port; yields its URL once /_stcore/health answers."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1"]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"streamlit exited with {process.returncode}: {log_path.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"streamlit did not start in {timeout}s: {log_path.read_text()[-2000:]}")
                time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def chromium(profile_dir: Path, fake_video: Path, size: tuple[int, int] = (1400, 1000)) -> WebDriver:
    """Headless Chromium via Debian's chromedriver, with a fake camera that plays `fake_video`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={fake_video}",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        f"--user-data-dir={profile_dir}",
        f"--window-size={size[0]},{size[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for driver.get_log("browser")
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
