"""fer_core: face detection and facial-expression recognition, with no UI inside.

    from fer_core.pipeline import Pipeline
    pipe = Pipeline.load("weights")
    result = pipe(image)          # result.faces[0].probs

The Streamlit app in `app/` is UI only and calls into this package.
"""

from __future__ import annotations

__version__ = "0.1.0"

from fer_core.labels import EMOTIONS

__all__ = ["EMOTIONS", "__version__"]
