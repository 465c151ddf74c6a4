"""Every function in dynopt.plotting: a Figure with labelled axes and a legend, the data it was given,
and no pyplot global state touched (the figure list and the current figure stay as they were)."""

from __future__ import annotations

import io
from dataclasses import replace

import matplotlib.pyplot as plt  # the Agg backend: tests/conftest.py sets MPLBACKEND
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from dynopt import plotting
from dynopt.losses import LOSSES
from dynopt.plotting import OKABE_ITO, colour, contour_trajectories, legend_extras, loss_curves, race_animation, step_size_trace
from dynopt.trajectory import run

STEPS = 30


@pytest.fixture
def pyplot_untouched():
    """An existing pyplot figure; after the test the list of figures and the current figure are unchanged."""
    sentinel = plt.figure()
    before = plt.get_fignums()
    yield
    try:
        assert plt.get_fignums() == before
        assert plt.gcf() is sentinel
    finally:
        plt.close(sentinel)


@pytest.fixture(scope="module")
def quadratic_runs():
    return [run("SGD", {"lr": 0.3}, "quadratic", STEPS), run("Momentum", {"lr": 0.05, "momentum": 0.8}, "quadratic", STEPS)]


@pytest.fixture(scope="module")
def meta_runs():
    return [run("MetaSGD", {"lr": 1e-3, "meta_lr": 0.05}, "quadratic", STEPS, with_flow=False),
            run("MetaMomentum", {"lr": 1e-4, "momentum": 0.9, "meta_lr": 0.05}, "quadratic", STEPS, with_flow=False)]


def legend_labels(ax) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None, "the axes should have a legend"
    return [text.get_text() for text in legend.get_texts()]


def assert_labelled(ax) -> None:
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def lines_with_label(ax, label: str) -> list[Line2D]:
    return [line for line in ax.get_lines() if line.get_label() == label]


def test_the_module_lists_every_public_function():
    public = {name for name, value in vars(plotting).items() if callable(value) and getattr(value, "__module__", "") == plotting.__name__
              and not name.startswith("_")}
    assert public <= set(plotting.__all__)
    assert "step_size_trace" in plotting.__all__


def test_colour_cycles_through_the_okabe_ito_palette():
    assert [colour(i) for i in range(len(OKABE_ITO))] == list(OKABE_ITO)
    assert colour(len(OKABE_ITO) + 2) == OKABE_ITO[2]
    assert len(set(OKABE_ITO)) == len(OKABE_ITO)


@pytest.mark.parametrize("show_flow", [False, True])
def test_legend_extras(show_flow):
    handles = legend_extras(show_flow)
    labels = [h.get_label() for h in handles]
    assert labels[:2] == ["minimizer", "start"]
    assert (len(labels) == 3) == show_flow
    assert all(isinstance(h, Line2D) for h in handles)


def test_contour_trajectories_draws_each_path_and_flow(quadratic_runs, pyplot_untouched):
    loss = LOSSES["quadratic"]
    fig = contour_trajectories(loss, quadratic_runs)
    assert isinstance(fig, Figure) and len(fig.axes) >= 1
    ax = fig.axes[0]
    assert_labelled(ax)
    labels = legend_labels(ax)
    assert all(t.label in labels for t in quadratic_runs) and "ODE flow (dashed)" in labels
    for traj in quadratic_runs:
        (path,) = lines_with_label(ax, traj.label)
        np.testing.assert_array_equal(np.column_stack(path.get_data()), traj.iterates)
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == len(quadratic_runs)
    np.testing.assert_array_equal(np.column_stack(dashed[0].get_data()), quadratic_runs[0].flow_iterates)
    fig.savefig(io.BytesIO(), format="png")  # renders


def test_contour_trajectories_on_a_given_axes_returns_its_figure(quadratic_runs, pyplot_untouched):
    fig = Figure()
    ax = fig.add_subplot()
    assert contour_trajectories(LOSSES["quadratic"], quadratic_runs, ax=ax, show_flow=False) is fig
    assert not [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert "ODE flow (dashed)" not in legend_labels(ax)


def test_contour_trajectories_on_the_simplex_draws_the_projection_and_the_triangle(pyplot_untouched):
    loss = LOSSES["portfolio"]
    traj = run("EG", {"lr": 0.5, "variant": "simplex"}, loss, STEPS)
    fig = contour_trajectories(loss, [traj])
    ax = fig.axes[0]
    assert_labelled(ax)
    assert ax.get_xlabel() == "w₁" and ax.get_ylabel().startswith("w₂")
    assert traj.label in legend_labels(ax)
    (path,) = lines_with_label(ax, traj.label)
    np.testing.assert_array_equal(np.column_stack(path.get_data()), traj.iterates[:, :2])
    corners = {(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)}
    edges = [line for line in ax.get_lines() if {tuple(map(float, p)) for p in np.column_stack(line.get_data())} == corners]
    assert edges, "the simplex boundary should be drawn"
    texts = {t.get_text() for t in ax.texts}
    assert {"w₁ = 1", "w₂ = 1", "w₃ = 1"} <= texts


@pytest.mark.parametrize("x", ["step", "time"])
def test_loss_curves(quadratic_runs, x, pyplot_untouched):
    loss = LOSSES["quadratic"]
    fig = loss_curves(quadratic_runs, x=x, loss=loss)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert_labelled(ax)
    assert ax.get_yscale() == "log" and ax.get_xscale() == ("log" if x == "time" else "linear")
    labels = legend_labels(ax)
    assert all(t.label in labels for t in quadratic_runs) and "ODE flow" in labels
    (curve,) = lines_with_label(ax, quadratic_runs[0].label)
    first = 1 if x == "time" else 0
    expected_x = quadratic_runs[0].times if x == "time" else np.arange(STEPS + 1)
    np.testing.assert_array_equal(curve.get_xdata(), expected_x[first:])
    np.testing.assert_allclose(curve.get_ydata(), np.maximum(quadratic_runs[0].losses[first:] - loss.minimum, 1e-16))


def test_loss_curves_without_flows_has_no_flow_entry(meta_runs, pyplot_untouched):
    ax = loss_curves(meta_runs).axes[0]
    assert "ODE flow" not in legend_labels(ax)
    assert ax.get_ylabel() == "L(θ)"


def test_loss_curves_rejects_an_unknown_abscissa(quadratic_runs, pyplot_untouched):
    with pytest.raises(ValueError, match="step"):
        loss_curves(quadratic_runs, x="epoch")


def test_step_size_trace_draws_the_recorded_step_sizes(meta_runs, pyplot_untouched):
    fig = step_size_trace(meta_runs)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert_labelled(ax)
    assert ax.get_yscale() == "log"
    labels = legend_labels(ax)
    assert all(t.label in labels for t in meta_runs) and "initial lr" in labels
    for traj in meta_runs:
        (curve,) = lines_with_label(ax, traj.label)
        np.testing.assert_array_equal(curve.get_xdata(), np.arange(1, STEPS + 1))
        np.testing.assert_array_equal(curve.get_ydata(), traj.step_sizes)
        assert traj.step_sizes[-1] > traj.step_sizes[0], "the meta step grows from a too-small lr"
    fig2 = Figure()
    ax2 = fig2.add_subplot()
    assert step_size_trace(meta_runs[:1], ax=ax2, legend=False) is fig2 and ax2.get_legend() is None


def test_step_size_trace_needs_step_sizes(meta_runs, pyplot_untouched):
    with pytest.raises(ValueError, match="step sizes"):
        step_size_trace([replace(meta_runs[0], step_sizes=None)])


def test_race_animation_writes_a_gif(quadratic_runs, tmp_path, pyplot_untouched):
    path = race_animation(LOSSES["quadratic"], quadratic_runs, tmp_path / "race.gif", frames=8, dpi=30)
    assert path == tmp_path / "race.gif"
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 8


def test_race_animation_on_the_simplex(tmp_path, pyplot_untouched):
    traj = run("EG", {"lr": 0.5, "variant": "simplex"}, "portfolio", 10, with_flow=False)
    with Image.open(race_animation(LOSSES["portfolio"], [traj], tmp_path / "simplex.gif", frames=5, dpi=30)) as gif:
        assert gif.n_frames == 5
