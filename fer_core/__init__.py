"""fer_core: face detection and facial-expression recognition, with no UI inside.

    from fer_core import Pipeline
    pipe = Pipeline.load("weights")
    result = pipe(image)          # result.faces[0].probs
"""

from __future__ import annotations

__version__ = "0.1.0"

from fer_core.labels import EMOTIONS  # noqa: E402

__all__ = ["EMOTIONS", "__version__"]
