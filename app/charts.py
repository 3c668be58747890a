"""Plotly figures shared by the pages: one look (emotion colours, fixed 0..1 axis) everywhere."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from fer_core.draw import EMOTION_COLORS
from fer_core.labels import EMOTIONS

COLOR_MAP = {name: f"rgb{EMOTION_COLORS[name]}" for name in EMOTIONS}
HIGHLIGHT = "#d62728"


def probs_bar(
    probs: Mapping[str, float], title: str = "", *, subtitle: str = "", height: int = 260, alert: bool = False
) -> go.Figure:
    """Seven bars on a fixed 0..1 axis, so charts side by side compare at a glance; `alert` reddens the title.
    `subtitle` goes on a line of its own under it: a title does not wrap, and "#1 happy 72% · Ensemble" lost its
    end in a chart a third of a tablet wide.

    The bars lie down, one emotion a row: upright, a chart in a third of a tablet's width had room to name only 4 of
    the 7 emotions under its bars, and "happy" was among those left out."""
    values = [float(probs.get(name, 0.0)) for name in EMOTIONS]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=list(EMOTIONS),
            orientation="h",
            marker_color=[COLOR_MAP[name] for name in EMOTIONS],
            text=[f"{v:.0%}" for v in values],  # as the box's caption says it: "73%", not 0.73
            textposition="outside",
            cliponaxis=False,  # a "100%" beside a full bar is drawn past the axis's end, not cut
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        title={
            "text": title,
            "font": {"color": HIGHLIGHT} if alert else {},
            "subtitle": {"text": subtitle, "font": {"color": AXIS_TEXT}},
        },
        height=height + (20 if subtitle else 0),
        margin={"l": 10, "r": 30, "t": 10 + (30 if title else 0) + (20 if subtitle else 0), "b": 10},
        # room past 100 % for a full bar's "100%" (drawn outside the bar), ticks at the true ends
        xaxis={"range": [0, 1.12], "tickformat": ".0%", "tickvals": [0, 0.5, 1]},
        yaxis={"autorange": "reversed", "automargin": True},  # angry at the top: the emotions' order everywhere
        showlegend=False,
    )
    return readable(fig)


#: The axes' tick labels and titles, and the bars' values: Streamlit's chart theme draws them rgb(128, 132, 149),
#: about 3.7:1 against white, under the 4.5:1 WCAG AA asks of small text; this is about 9.7:1.
AXIS_TEXT = "#444444"


def readable(fig: go.Figure) -> go.Figure:
    """`fig` with its axes' labels and its bars' value labels in `AXIS_TEXT`."""
    fig.update_xaxes(tickfont_color=AXIS_TEXT, title_font_color=AXIS_TEXT)
    fig.update_yaxes(tickfont_color=AXIS_TEXT, title_font_color=AXIS_TEXT)
    fig.update_traces(textfont_color=AXIS_TEXT, selector={"type": "bar"})
    return fig


def confusion_heatmap(matrix: Sequence[Sequence[int]], title: str) -> go.Figure:
    """Counts as text, colour by row share, so rare classes (disgust) are as readable as common ones."""
    frame = pd.DataFrame(matrix, index=list(EMOTIONS), columns=list(EMOTIONS))
    share = frame.div(frame.sum(axis=1).replace(0, 1), axis=0)
    fig = go.Figure(
        go.Heatmap(
            z=share.values,
            x=list(EMOTIONS),
            y=list(EMOTIONS),
            text=frame.values,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": "share of the<br>true class"},
            hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        height=420,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis_title="predicted",
        yaxis={"title": "true", "autorange": "reversed"},
    )
    return readable(fig)


def finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number (not a bool, a string or None), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def weight_curve_points(curve: Any) -> list[dict[str, float]] | None:
    """ensemble.json's `weight_curve` as points to plot, or None when it is not a list of {"weight", "accuracy"}
    numbers: the file can be edited by hand, and a malformed curve must not take the page with it."""
    if not isinstance(curve, list) or not curve:
        return None
    points = []
    for point in curve:
        if not isinstance(point, Mapping):
            return None
        weight, accuracy = finite(point.get("weight")), finite(point.get("accuracy"))
        if weight is None or accuracy is None:
            return None
        points.append({"weight": weight, "accuracy": accuracy})
    return points


def weight_curve(curve: Sequence[Mapping[str, float]], current: float, fitted: float, first: str) -> go.Figure:
    """PublicTest accuracy against the ensemble weight, with the fitted and the slider's weight marked.

    The marks are named in the title, not beside their lines: labels there were printed over each other while the
    slider sat at the fitted weight (every first view), and within a few steps of it each line struck through the
    other's label. The slider's 0.01 steps cannot sit nearer the fitted weight than equal to two decimals."""
    frame = pd.DataFrame(curve)
    fig = px.line(frame, x="weight", y="accuracy", markers=True)
    if round(current, 2) == round(fitted, 2):
        fig.add_vline(x=fitted, line_dash="dot", line_color=HIGHLIGHT)
        title = f"fitted weight = slider: {fitted:.2f}"
    else:
        fig.add_vline(x=fitted, line_dash="dot")
        fig.add_vline(x=current, line_color=HIGHLIGHT)
        title = f"dotted: fitted weight {fitted:.2f} · <span style='color:{HIGHLIGHT}'>red: slider {current:.2f}</span>"
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        height=280,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_title=f"weight of {first}",
        yaxis_title="PublicTest accuracy",
    )
    return readable(fig)


def clip_time_layout(faces: pd.DataFrame) -> dict[str, Any]:
    """One time axis for the Video page's two charts, which sit one above the other: each scaled itself (the dots 0 to
    4 s, one face's lines 0 to 3.9 s) and sized its own margins and legend, so one moment stood at two places. Same
    range, fixed side margins (the y labels' room set, not measured) and the legends above the plots."""
    end = float(faces["time_s"].max()) if len(faces) else 0.0
    pad = max(end * 0.02, 0.05)  # the dots at either end stay whole
    return {
        "margin": {"l": CLIP_CHART_LEFT_PX, "r": 10, "t": 40, "b": 10},
        "xaxis": {"title": "time (s)", "range": [-pad, end + pad]},
        "yaxis_automargin": False,
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "xanchor": "left", "yanchor": "bottom"},
    }


#: Room left of the Video page's charts for their y labels ("face #12", or the probability axis and its title).
CLIP_CHART_LEFT_PX = 80


#: A marker shape per emotion on the Video page's timeline, beside its colour: happy, surprise and angry (yellow,
#: orange, red) were told apart by colour alone.
EMOTION_SYMBOLS = dict(
    zip(EMOTIONS, ("x", "triangle-down", "diamond", "circle", "triangle-up", "star", "square"), strict=True)
)


def emotion_timeline(faces: pd.DataFrame) -> go.Figure:
    """Every tracked face as a row of marks over time, coloured and shaped by its smoothed emotion."""
    frame = faces.assign(face=faces["face_id"].map(lambda i: f"face #{i}"))
    rows = [f"face #{i}" for i in sorted(faces["face_id"].unique())]  # by number, as the face picker lists them
    fig = px.scatter(
        frame,
        x="time_s",
        y="face",
        color="label",
        color_discrete_map=COLOR_MAP,
        symbol="label",
        symbol_map=EMOTION_SYMBOLS,
        category_orders={"label": list(EMOTIONS), "face": rows},
        hover_data={"confidence": ":.0%", "frame": True},
    )
    fig.update_traces(marker={"size": 10})
    fig.update_layout(clip_time_layout(faces), height=160 + 40 * frame["face"].nunique(), yaxis_title="")
    fig.update_layout(legend_title="emotion")
    return readable(fig)


def face_probability_lines(faces: pd.DataFrame, face_id: int) -> go.Figure:
    """One face's seven smoothed probabilities over time."""
    rows = faces[faces["face_id"] == face_id]
    long = rows.melt(id_vars=["time_s"], value_vars=list(EMOTIONS), var_name="emotion", value_name="probability")
    fig = px.line(long, x="time_s", y="probability", color="emotion", color_discrete_map=COLOR_MAP)
    fig.update_traces(hovertemplate="%{fullData.name}: %{y:.0%} at %{x:.2f} s<extra></extra>")
    axis = {"range": [0, 1], "title": f"probability, face #{face_id}", "tickformat": ".0%"}
    fig.update_layout(clip_time_layout(faces), height=320, yaxis=axis)
    return readable(fig)


def figure_config(toolbar: bool = False) -> dict[str, Any]:
    """No plotly logo link and no cloud export (the app stays offline); small charts get no toolbar at all, and the
    others only while the pointer is on them: always shown, it covered the title of a chart a phone wide."""
    return {
        "displaylogo": False,
        "displayModeBar": "hover" if toolbar else False,
        "modeBarButtonsToRemove": ["sendDataToCloud"],
    }
