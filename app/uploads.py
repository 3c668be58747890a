"""Uploads kept across page visits: Streamlit empties a file uploader whenever a run does not draw it.

Leaving a page for another therefore lost every file dropped on it, and an uploader, unlike a slider, cannot be
re-stored from `st.session_state` (`ui.keep_settings` does that for the settings). So the files are kept here, in
the session's state, and shown beside the uploader until the user drops others or forgets them; another page can
read them too (`kept_files`: Compare offers the photos dropped on Photos).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import streamlit as st


def kept_file_uploader(label: str, *, key: str, **kwargs: Any) -> Any:
    """`st.file_uploader` whose files outlive a visit to another page.

    Streamlit drops the uploader's files when a run does not draw it, and an uploader cannot be re-stored like the
    settings (`ui.keep_settings`), so the files are kept here. A one-file uploader's kept file goes when the user
    drops another (its `on_change`; a page switch calls no callback) or presses the button shown beside it. A
    multi-file uploader adds new drops to its kept files (`KeptUploads`): one more photo must not cost the rest.
    """
    if kwargs.get("accept_multiple_files"):
        return _kept_multi_file_uploader(label, key=key, **kwargs)
    kept_key = f"_kept_{key}"

    def forget() -> None:
        st.session_state.pop(kept_key, None)

    files = st.file_uploader(label, key=key, on_change=forget, **kwargs)
    if files:
        st.session_state[kept_key] = files
        return files
    kept = st.session_state.get(kept_key)
    if not kept:
        return files
    left, right = st.columns([4, 1], vertical_alignment="center")
    left.caption(f"Showing {kept.name}, dropped earlier (the uploader empties while hidden): drop one to replace it.")
    right.button("Forget", key=f"{key}_forget", on_click=forget, icon=":material/close:")
    return kept


@dataclass
class KeptUploads:
    """A multi-file uploader's files between runs: those it shows, and those a visit to another page took out of it."""

    #: Dropped before a visit to another page, which emptied the uploader: shown first, removable one by one.
    carried: list[Any] = field(default_factory=list)
    #: What the uploader itself holds, as its last run or the user's last change (its `on_change`) left it: an
    #: uploader found empty while this is not was emptied by a visit to another page, which calls no callback.
    in_widget: list[Any] = field(default_factory=list)
    #: Renews the carried files' picker whenever `carried` changes, so it starts from them all.
    generation: int = 0

    def shown(self) -> list[Any]:
        return self.carried + self.in_widget


def _uploads_state(key: str) -> KeptUploads:
    state: KeptUploads = st.session_state.setdefault(f"_uploads_{key}", KeptUploads())
    return state


def _kept_multi_file_uploader(label: str, *, key: str, **kwargs: Any) -> list[Any]:
    def changed() -> None:  # set here, not by the run: a run stopped by a click on another page never gets there
        _uploads_state(key).in_widget = list(st.session_state.get(key) or [])

    files = list(st.file_uploader(label, key=key, on_change=changed, **kwargs) or [])
    state = _uploads_state(key)
    if not files and state.in_widget:  # emptied by a visit to another page; one dropped again is kept once
        state.carried += [new for new in state.in_widget if not any(same_upload(new, old) for old in state.carried)]
        state.generation += 1
    if files and state.carried:  # dropped again: the uploader's own copy stays, which its cross removes
        carried = [kept for kept in state.carried if not any(same_upload(kept, upload) for upload in files)]
        if len(carried) < len(state.carried):
            state.carried, state.generation = carried, state.generation + 1
    state.in_widget = files
    shown = state.shown()
    if state.carried:
        _carried_files_picker(key, state, distinct_names([upload.name for upload in shown])[: len(state.carried)])
    return shown


def same_upload(a: Any, b: Any) -> bool:
    """The same file dropped twice: name, size, then bytes (copied out of each upload only when the rest agree)."""
    return bool(a.name == b.name and a.size == b.size and a.getvalue() == b.getvalue())


def _carried_files_picker(key: str, state: KeptUploads, names: list[str]) -> None:
    """The files a page visit took out of the uploader, each a chip with its own cross; a button forgets them all."""

    def keep_chosen(picker_key: str) -> None:
        kept = _uploads_state(key)
        kept.carried = [kept.carried[i] for i in st.session_state[picker_key] if i < len(kept.carried)]
        kept.generation += 1

    def forget() -> None:
        kept = _uploads_state(key)
        kept.carried, kept.generation = [], kept.generation + 1

    count = len(names)
    st.caption(
        f"{count} file(s) dropped earlier, kept while the uploader was hidden (it empties on a visit to another "
        "page). New drops are added to them; remove one with the cross on its name."
    )
    left, right = st.columns([4, 1], vertical_alignment="center")
    picker_key = f"{key}_carried_{state.generation}"
    left.multiselect(
        "Kept files",
        list(range(count)),
        default=list(range(count)),
        format_func=names.__getitem__,
        key=picker_key,
        on_change=keep_chosen,
        args=(picker_key,),
        label_visibility="collapsed",
    )
    right.button("Forget all" if count > 1 else "Forget", key=f"{key}_forget", on_click=forget, icon=":material/close:")


def distinct_names(names: list[str]) -> list[str]:
    """The uploads' names, a repeated one numbered as a file manager would ("a.png", "a (2).png"): the page, the
    table, the JSON and the zip then tell two different photos that share a name apart."""
    taken, out = set(names), []
    seen: Counter[str] = Counter()
    for name in names:
        seen[name] += 1
        if seen[name] == 1:
            out.append(name)
            continue
        path, copy = PurePath(name), seen[name]
        while (numbered := f"{path.stem} ({copy}){path.suffix}") in taken:
            copy += 1
        taken.add(numbered)
        out.append(numbered)
    return out


def kept_files(key: str) -> list[Any]:
    """The files `kept_file_uploader(key=key)` holds (another page's too), as a list; empty when none."""
    uploads: KeptUploads | None = st.session_state.get(f"_uploads_{key}")  # a multi-file uploader's
    if uploads is not None:
        return uploads.shown()
    kept = st.session_state.get(f"_kept_{key}")
    return [] if not kept else [kept]
