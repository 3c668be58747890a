"""A long task run beside the page, so that touching a widget does not throw its work away.

Streamlit stops a running script at its next `st.*` call when the user changes any widget. Minutes of video
analysis done in the script thread would be lost without a word (the progress bar just vanishes). A
`BackgroundJob` runs the work in its own thread, keeps its progress in plain attributes that each page run reads,
and stops only when asked to (`cancel`). No Streamlit call happens in the job's thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

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
    def start(cls, name: str, key: tuple[Any, ...], work: Callable[[Report, threading.Event], T]) -> BackgroundJob[T]:
        job = cls(name, key)
        threading.Thread(target=job._run, args=(work,), name=f"fer-job {name}", daemon=True).start()
        return job

    def _run(self, work: Callable[[Report, threading.Event], T]) -> None:
        try:
            self.result = work(self._report, self._cancel)
        except JobCancelled:
            self.cancelled = True
        except Exception as err:  # handed to the page, which words it for the user
            if self._cancel.is_set():  # the work stopped on `stop` in its own way: a cancel, not a failure
                self.cancelled = True
                return
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
