"""A long task run beside the page, so that touching a widget does not throw its work away.

Streamlit stops a running script at its next `st.*` call when the user changes any widget. Minutes of video
analysis done in the script thread would be lost without a word (the progress bar just vanishes). A
`BackgroundJob` runs the work in its own thread, keeps its progress in plain attributes that each page run reads,
and stops only when asked to (`cancel`), or once the browser session that started it has been gone for longer than
Streamlit keeps a closed tab's session for a reconnect (`watch_this_session`): a closed tab must not leave minutes
of CPU work running for nobody. No Streamlit call happens in the job's thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import streamlit as st
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from fer_core.cli import UserInputError

log = logging.getLogger(__name__)
T = TypeVar("T")


class JobCancelled(Exception):
    """Raised inside the work, at its next progress report, once `cancel` was called."""


Report = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Progress:
    """Units done and the total when known (a browser-recorded WebM does not say how many frames it holds)."""

    done: int = 0
    total: int | None = None

    @property
    def fraction(self) -> float | None:
        return min(self.done / self.total, 1.0) if self.total else None


@dataclass
class BackgroundJob(Generic[T]):
    """`work(report, stop)` in a daemon thread. `report(done, total)` records progress and is where a cancel lands;
    `stop` is set by `cancel`, for work that can look more often than it reports (a video, frame by frame)."""

    name: str
    key: tuple[Any, ...]
    progress: Progress = field(default_factory=Progress)
    result: T | None = None
    error: BaseException | None = None
    cancelled: bool = False
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @classmethod
    def start(
        cls,
        name: str,
        key: tuple[Any, ...],
        work: Callable[[Report, threading.Event], T],
        abandoned: Callable[[], bool] | None = None,
        poll_s: float = 2.0,
    ) -> BackgroundJob[T]:
        """Run `work` in a daemon thread; with `abandoned`, a watcher asks it every `poll_s` and cancels once True."""
        job = cls(name, key)
        threading.Thread(target=job._run, args=(work,), name=f"fer-job {name}", daemon=True).start()
        if abandoned is not None:
            watcher = threading.Thread(target=job._watch, args=(abandoned, poll_s), name=f"fer-job {name} watch")
            watcher.daemon = True
            watcher.start()
        return job

    def _watch(self, abandoned: Callable[[], bool], poll_s: float) -> None:
        while not self._done.wait(poll_s):
            try:
                gone = abandoned()
            except Exception:  # the job goes on as if unwatched, and the log says why
                log.exception("job %s: cannot tell whether its session is open; no longer watching", self.name)
                return
            if gone:
                log.warning("background job %s cancelled: the browser session that started it has closed", self.name)
                self.cancel()
                return

    def _run(self, work: Callable[[Report, threading.Event], T]) -> None:
        try:
            self.result = work(self._report, self._cancel)
        except JobCancelled:
            self.cancelled = True
        except Exception as err:  # handed to the page, which words it for the user
            if self._cancel.is_set():  # the work stopped on `stop` in its own way: a cancel, not a failure
                self.cancelled = True
                return
            if isinstance(err, UserInputError):  # a user's bad file, shown on the page: no server failure
                log.info("background job %s: %s", self.name, err)
            else:
                log.exception("background job %s failed", self.name)
            self.error = err
        finally:
            self._done.set()

    def _report(self, done: int, total: int | None) -> None:
        if self._cancel.is_set():
            raise JobCancelled(self.name)
        self.progress = Progress(done, total)  # one reference swap: a reader never sees half an update

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the job has ended (finished, failed or cancelled)."""
        return self._done.wait(timeout)


@dataclass
class AbandonWatch:
    """True once `is_active` has said False for longer than `grace_s` without a break: a tab that reconnects
    (a dropped network, a laptop lid) inside the grace keeps its job; one closed for good loses it."""

    is_active: Callable[[], bool]
    grace_s: float
    clock: Callable[[], float] = time.monotonic
    _gone_since: float | None = None

    def __call__(self) -> bool:
        if self.is_active():
            self._gone_since = None
            return False
        now = self.clock()
        if self._gone_since is None:
            self._gone_since = now
        return now - self._gone_since > self.grace_s


def watch_this_session() -> AbandonWatch | None:
    """An `abandoned` check for a job started by this page run: its session gone for longer than Streamlit keeps a
    disconnected session (`server.disconnectedSessionTTL`), after which the tab could not resume it anyway. None
    where the runtime does not know the session (AppTest, bare mode): nothing would ever say it is active."""
    context = get_script_run_ctx()
    if context is None or not Runtime.exists():
        return None
    runtime, session_id = Runtime.instance(), context.session_id
    if not runtime.is_active_session(session_id):  # thread-safe by Streamlit's own notes, as the watcher needs
        return None
    grace_s = float(st.get_option("server.disconnectedSessionTTL"))
    return AbandonWatch(lambda: runtime.is_active_session(session_id), grace_s)
