"""onnxruntime sessions as every CPU model here opens them: quiet, CPU provider, one thread setting for all.

`FER_ORT_THREADS` caps intra-op threads of every session (default: onnxruntime's own choice, one per physical
core). It exists for shared machines and for benchmarks that must give onnxruntime and PyTorch the same threads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fer_core.cli import UserInputError

THREADS_ENV = "FER_ORT_THREADS"
#: onnxruntime's switch that stops intra-op threads busy-waiting once a run returns (they still spin inside a run).
STOP_SPINNING_KEY = "session.force_spinning_stop"


class OnnxLoadError(UserInputError):
    """An ONNX file onnxruntime cannot load (cut short, damaged, not ONNX), named: its own error was a traceback."""


def threads(requested: int = 0) -> int:
    """Intra-op threads for a new session: `requested`, else `$FER_ORT_THREADS`, else 0 (onnxruntime decides)."""
    if requested:
        return requested
    text = os.environ.get(THREADS_ENV) or "0"
    if not text.strip().isdecimal():
        raise UserInputError(
            f"{THREADS_ENV}={text!r}: give a whole number of threads (0 or unset: onnxruntime decides)"
        )
    return int(text)


def cpu_session(path: str | Path, intra_threads: int = 0) -> Any:
    """An `onnxruntime.InferenceSession` on the CPU provider with warnings-only logging; threads stop spinning
    when a run returns.

    A frame runs three sessions in turn (detector, then both classifiers). By default each session's idle threads
    keep busy-waiting after its run and take the cores from the next session: on 2 cores that more than doubled
    the photo path (640 px detector + TTA, 1 face: 75 ms a frame). Turning spinning off altogether costs a thread
    wake-up per operator instead (32 ms a frame, and a lone detector fell from 56 to 36 images/s); spinning only
    inside a run gives 26 ms and keeps the 56 images/s.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    chosen = threads(intra_threads)
    if chosen:
        options.intra_op_num_threads = chosen
    options.log_severity_level = 3
    options.add_session_config_entry(STOP_SPINNING_KEY, "1")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own errors (InvalidProtobuf, Fail, ...) share no narrower base
        raise OnnxLoadError(f"{path}: onnxruntime cannot load this ONNX file ({type(err).__name__}: {err})") from err
