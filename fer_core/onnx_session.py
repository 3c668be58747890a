"""onnxruntime sessions as every CPU model here opens them: quiet, CPU provider, one thread setting for all.

`FER_ORT_THREADS` caps intra-op threads of every session (default: onnxruntime's own choice, one per physical
core). It exists for shared machines and for benchmarks that must give onnxruntime and PyTorch the same threads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

THREADS_ENV = "FER_ORT_THREADS"


def threads(requested: int = 0) -> int:
    """Intra-op threads for a new session: `requested`, else `$FER_ORT_THREADS`, else 0 (onnxruntime decides)."""
    return requested or int(os.environ.get(THREADS_ENV) or 0)


def cpu_session(path: str | Path, intra_threads: int = 0) -> Any:
    """An `onnxruntime.InferenceSession` on the CPU provider with warnings-only logging."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    chosen = threads(intra_threads)
    if chosen:
        options.intra_op_num_threads = chosen
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
