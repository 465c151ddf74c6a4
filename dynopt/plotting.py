"""Figures of trajectories on toy losses: contours with paths and ODE flows, loss curves, step sizes, races.

Every function builds and returns a :class:`matplotlib.figure.Figure` (or draws on a given
``ax``); nothing uses pyplot's implicit current figure or calls ``show``, so this works
headless and inside notebooks alike. Colours are the Okabe–Ito colour-blind-safe palette,
assigned by position in the list of trajectories (pass the same order for matching colours).
A simplex loss is drawn in its (w₁, w₂) plane (w₃ = 1 − w₁ − w₂) inside the simplex triangle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .losses import ToyLoss
from .spec import LR
from .trajectory import Trajectory

__all__ = ["OKABE_ITO", "colour", "legend_extras", "contour_trajectories", "loss_curves", "step_size_trace",
           "race_animation"]

# Okabe & Ito, "Color Universal Design" (2008), ordered so that the first five stay apart (orange
# and vermillion are not both among them); yellow last: it reads poorly on white.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#000000", "#D55E00", "#56B4E9", "#F0E442")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
# white (low loss) to mid grey (high loss): a quiet background under the coloured paths
_BACKGROUND = ListedColormap(colormaps["Greys"](np.linspace(0.0, 0.4, 256)), name="dynopt_background")


def colour(index: int) -> str:
    """The Okabe–Ito colour of the ``index``-th trajectory."""
    return OKABE_ITO[index % len(OKABE_ITO)]


def _styles(n: int, colors: Sequence[str] | None) -> list[tuple[str, str]]:
    """(colour, marker) per trajectory: by position, or from ``colors`` (markers follow the colour)."""
    chosen = list(colors) if colors is not None else [colour(i) for i in range(n)]
    markers = [_MARKERS[OKABE_ITO.index(c) % len(_MARKERS)] if c in OKABE_ITO else "o" for c in chosen]
    return list(zip(chosen, markers, strict=True))


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _draw_contours(ax: Axes, loss: ToyLoss, resolution: int = 300) -> None:
    """Filled contours of L (log-spaced levels of L − min when ``loss.log_contours``) and minimizers.

    On a simplex loss only the triangle is filled, and its edges and corners are drawn and named.
    """
    (x0, x1), (y0, y1) = loss.bounds
    xs, ys = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    values = np.asarray(loss.plane_value(np, xs, ys), dtype=np.float64)
    outside = ~loss.inside(xs, ys)
    if loss.log_contours:
        gap = np.ma.masked_where(outside, values - loss.minimum)
        low = max(np.percentile(gap.compressed(), 0.5), 1e-3 * np.ma.median(gap), 1e-12)
        levels = np.logspace(np.log10(low), np.log10(gap.max()), 25)
        ax.contourf(xs, ys, np.ma.maximum(gap, low), levels=levels, norm=LogNorm(), cmap=_BACKGROUND)
        ax.contour(xs, ys, gap, levels=levels, colors="0.5", linewidths=0.35)
    else:
        values = np.ma.masked_where(outside, values)
        levels = np.linspace(values.min(), values.max(), 25)
        ax.contourf(xs, ys, values, levels=levels, cmap=_BACKGROUND)
        ax.contour(xs, ys, values, levels=levels, colors="0.5", linewidths=0.35)
    mx, my = loss.project(np.array(loss.minimizers)).T
    ax.plot(mx, my, ls="none", marker="*", ms=15, mfc="white", mec="black", mew=1.2, zorder=5)
    sx, sy = loss.project(np.array(loss.start))
    ax.plot(sx, sy, ls="none", marker="o", ms=8, mfc="white", mec="black", mew=1.5, zorder=5)
    labels = ("x", "y")
    if loss.simplex:
        ax.plot([0, 1, 0, 0], [0, 0, 1, 0], color="black", lw=1.2, zorder=2)
        for (cx, cy), text, align in (((0, 0), "w₃ = 1", ("left", "top")), ((1, 0), "w₁ = 1", ("right", "top")),
                                      ((0, 1), "w₂ = 1", ("left", "bottom"))):
            ax.annotate(text, (cx, cy), xytext=(4 if align[0] == "left" else -4, -4 if align[1] == "top" else 4),
                        textcoords="offset points", ha=align[0], va=align[1], fontsize="small")
        ax.text(0.55, 0.55, "w₃ = 1 − w₁ − w₂\n(outside the triangle: w₃ < 0)", ha="left", va="bottom", fontsize="small")
        labels = ("w₁", "w₂")
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel=labels[0], ylabel=labels[1],
           aspect="equal" if _square(loss) else "auto")


def _square(loss: ToyLoss) -> bool:
    (x0, x1), (y0, y1) = loss.bounds
    return 0.5 <= (x1 - x0) / (y1 - y0) <= 2


def legend_extras(show_flow: bool) -> list[Line2D]:
    """Legend entries for the minimizer and start markers, and the dashed flow line."""
    handles = [
        Line2D([], [], ls="none", marker="*", ms=12, mfc="white", mec="black", label="minimizer"),
        Line2D([], [], ls="none", marker="o", ms=7, mfc="white", mec="black", mew=1.5, label="start"),
    ]
    if show_flow:
        handles.append(Line2D([], [], color="0.2", ls="--", lw=1.5, label="ODE flow (dashed)"))
    return handles


def contour_trajectories(
    loss: ToyLoss,
    trajectories: Sequence[Trajectory],
    ax: Axes | None = None,
    show_flow: bool = True,
    *,
    title: str | None = None,
    legend: bool = True,
    colors: Sequence[str] | None = None,
) -> Figure:
    """Contours of ``loss`` with each discrete path (solid, markers) and its ODE flow (dashed, same colour).

    Draws on ``ax`` when given (and returns its figure); ``colors`` overrides the colour of each
    trajectory (default: the Okabe–Ito palette by position).
    """
    fig, ax = _new_axes(ax, (9.0, 6.0))
    _draw_contours(ax, loss)
    for traj, (color, marker) in zip(trajectories, _styles(len(trajectories), colors), strict=True):
        path = loss.project(traj.iterates)
        label = traj.label + (f", diverged at step {traj.diverged_at}" if traj.diverged_at is not None else "")
        ax.plot(path[:, 0], path[:, 1], color=color, lw=1.3, alpha=0.9, marker=marker, ms=4,
                markevery=max(1, traj.steps // 25), label=label, zorder=3)
        if show_flow and traj.flow_iterates is not None:
            flow = loss.project(traj.flow_iterates)
            ax.plot(flow[:, 0], flow[:, 1], color=color, lw=2.0, ls="--", zorder=4)
    ax.set_title(title if title is not None else (loss.title or loss.name))
    if legend:
        drawn_flow = show_flow and any(t.flow_iterates is not None for t in trajectories)
        handles = ax.get_legend_handles_labels()[0] + legend_extras(drawn_flow)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")
    return fig


def loss_curves(
    trajectories: Sequence[Trajectory],
    x: str = "step",
    *,
    loss: ToyLoss | None = None,
    ax: Axes | None = None,
    show_flow: bool = True,
    title: str | None = None,
    legend: bool = True,
    colors: Sequence[str] | None = None,
) -> Figure:
    """Loss against step number (``x="step"``) or ODE time (``x="time"``), flows dashed.

    With ``loss`` given, plots the gap L − L* on a log axis (floored at 1e-16, round-off level);
    otherwise L itself (on a log axis when every value is positive). Time is on a log axis from
    the first step (the optimizers' clocks h differ by orders of magnitude: h = lr or √lr).
    """
    if x not in ("step", "time"):
        raise ValueError(f"x must be 'step' or 'time', got {x!r}")
    fig, ax = _new_axes(ax, (7.5, 4.5))
    offset = loss.minimum if loss is not None else 0.0
    positive = True
    first = 1 if x == "time" else 0  # t = 0 has no place on a log axis
    for traj, (color, _) in zip(trajectories, _styles(len(trajectories), colors), strict=True):
        abscissa = (np.arange(traj.steps + 1) if x == "step" else traj.times)[first:]
        curves = [(traj.losses, "-", traj.label)]
        if show_flow and traj.flow_losses is not None:
            curves.append((traj.flow_losses, "--", None))
        for values, style, label in curves:
            gap = values[first:] - offset
            positive &= bool(np.all(gap[np.isfinite(gap)] > 0))
            if loss is not None:
                gap = np.maximum(gap, 1e-16)
            ax.plot(abscissa, gap, color=color, ls=style, lw=1.5, label=label)
    if loss is not None or positive:
        ax.set_yscale("log")
    if x == "time":
        ax.set_xscale("log")
    ax.set_xlabel("step k" if x == "step" else "ODE time t = k·h  (log axis, k ≥ 1)")
    ax.set_ylabel("L(θ) − L*" if loss is not None else "L(θ)")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title if title is not None else ("loss" if loss is None else loss.title or loss.name))
    if legend:
        drawn_flow = show_flow and any(t.flow_losses is not None for t in trajectories)
        extras = [Line2D([], [], color="0.2", ls="--", label="ODE flow")] if drawn_flow else []
        ax.legend(handles=ax.get_legend_handles_labels()[0] + extras, fontsize="small")
    return fig


def step_size_trace(
    trajectories: Sequence[Trajectory],
    ax: Axes | None = None,
    *,
    title: str | None = None,
    legend: bool = True,
    colors: Sequence[str] | None = None,
) -> Figure:
    """The effective step size of each step (``Trajectory.step_sizes``: lr · s) against the step, log y.

    Meant for the meta-learned optimizers (``MetaSGD``, …), whose step lr·s adapts; a fixed-lr
    optimizer draws a flat line. The initial lr of each run is drawn dotted for reference.
    """
    fig, ax = _new_axes(ax, (7.5, 4.5))
    for traj, (color, marker) in zip(trajectories, _styles(len(trajectories), colors), strict=True):
        if traj.step_sizes is None:
            raise ValueError(f"trajectory {traj.label} has no step sizes")
        steps = np.arange(1, len(traj.step_sizes) + 1)
        ax.plot(steps, traj.step_sizes, color=color, lw=1.6, marker=marker, ms=4,
                markevery=max(1, len(steps) // 12), label=traj.label)
        ax.axhline(float(traj.hyper[LR]), color=color, lw=0.9, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("step k")
    ax.set_ylabel("step size lr · s  (log axis)")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title if title is not None else "Effective step size")
    if legend:
        extras = [Line2D([], [], color="0.2", ls=":", lw=0.9, label="initial lr")]
        ax.legend(handles=ax.get_legend_handles_labels()[0] + extras, fontsize="small")
    return fig


def race_animation(
    loss: ToyLoss,
    trajectories: Sequence[Trajectory],
    path: str | Path,
    *,
    frames: int = 50,
    fps: int = 10,
    dpi: int = 70,
    colors: Sequence[str] | None = None,
) -> Path:
    """Write a GIF of the trajectories advancing step by step together (at most ``frames`` frames)."""
    from matplotlib.animation import PillowWriter

    path = Path(path)
    steps = max(t.steps for t in trajectories)
    fig, ax = _new_axes(None, (8.0, 5.0))
    _draw_contours(ax, loss)
    trails, heads = [], []
    for traj, (color, marker) in zip(trajectories, _styles(len(trajectories), colors), strict=True):
        (trail,) = ax.plot([], [], color=color, lw=1.4, label=traj.label)
        (head,) = ax.plot([], [], color=color, marker=marker, ms=9, mec="white", ls="none", zorder=6)
        trails.append(trail)
        heads.append(head)
    ax.legend(handles=trails + legend_extras(False), loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    ticks = np.unique(np.linspace(0, steps, min(frames, steps + 1)).round().astype(int))
    writer = PillowWriter(fps=fps)
    with writer.saving(fig, str(path), dpi=dpi):
        for k in ticks:
            for traj, trail, head in zip(trajectories, trails, heads, strict=True):
                upto = loss.project(traj.iterates[: k + 1])
                trail.set_data(upto[:, 0], upto[:, 1])
                last = upto[~np.isnan(upto[:, 0])][-1:]
                head.set_data(last[:, 0], last[:, 1])
            ax.set_title(f"{loss.title or loss.name}: step {k} of {steps}")
            writer.grab_frame()
    return path
