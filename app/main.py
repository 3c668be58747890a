"""Entry point: `streamlit run app/main.py`. Wires the pages together; every page is UI only, work is in fer_core.

`streamlit run` puts `app/` on sys.path but not the repository root, so the root goes in first: the pages
import `fer_core` (the product) and `app.*` (shared UI helpers) from there.

The page scripts live in `app/views/`, not `app/pages/`: a `pages/` folder beside the entry script switches
Streamlit into its legacy multipage mode until some session first runs this file, so a first visitor opening a
deep link (e.g. /webcam) would get that page without this file's set-up and navigation.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import streamlit as st  # noqa: E402

from app import ui  # noqa: E402

# A file of our own: for a ":material/...:" icon the browser fetched the favicon from fonts.gstatic.com.
st.set_page_config(page_title="Facial expressions", page_icon=str(REPO_ROOT / "app/assets/favicon.png"), layout="wide")

PAGES = [
    st.Page(path, title=title, icon=icon, default=path == ui.PHOTOS_PAGE)
    for path, (title, icon) in ui.PAGE_TITLES_AND_ICONS.items()
]

page = st.navigation(PAGES)
problem = ui.missing_weights_message(ui.weights_dir())
if problem:
    # Without models no page can do anything: say what to do instead of failing inside a page.
    st.title("Facial expression recognition")
    st.error(problem, icon=":material/error:")
    st.stop()
try:
    ui.ensemble()
except Exception as err:  # a corrupt or incompatible checkpoint: a message, not a traceback
    st.title("Facial expression recognition")
    st.error(f"The emotion models in `{ui.weights_dir()}` could not be loaded: {err}", icon=":material/error:")
    st.stop()
ui.keep_settings()
page.run()
