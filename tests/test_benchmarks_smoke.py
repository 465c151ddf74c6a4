"""The step-time benchmark runs end to end (tiny sizes), including dynopt's fused=True kernels.

No timing assertions: machines are noisy. The full run is ``python benchmarks/step_time.py``."""

from __future__ import annotations

import math

import pytest

from benchmarks import step_time


@pytest.fixture(scope="module")
def fast_run():
    lines: list[str] = []
    result = step_time.main(["--fast"], out=lines.append)
    return result, "\n".join(lines)


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_a_torch_row_per_layout_and_optimizer(fast_run):
    result, text = fast_run
    rows = result["torch"]
    expected = {(layout, name) for layout in step_time.FAST_LAYOUTS for name in step_time.ORDER}
    assert {(r["layout"][0], r["optimizer"]) for r in rows} == expected
    assert len(rows) == len(expected)
    for r in rows:
        for key in ("dynopt_ms", "fused_ms", "ref_ms", "dynopt_vs_ref", "fused_vs_ref", "bound_ms", "dynopt_vs_bound",
                    "fused_vs_bound", "ref_vs_bound"):
            assert _positive(r[key]), (r["layout"], r["optimizer"], key, r[key])
        line = f"| {r['layout']} | {r['optimizer']} | {r['dynopt_ms']:.2f} |"
        assert line in text
    assert {r["ref"] for r in rows if r["optimizer"] == "EG"} == {"dynopt SGD"}
    for r in rows:  # the flat-parameter mode: every parameter stepped in place, on both paths
        assert r["flatp_direct"] == (len(step_time.FAST_LAYOUTS[r["layout"][0]][1]),) * 2, r
        assert r["direct"] == (1, 1) if r["layout"][0] == "a" else r["direct"][0] < r["flatp_direct"][0], r
        for key in ("flatp_ms", "flatp_fused_ms", "flatp_vs_ref", "flatp_fused_vs_ref"):
            assert _positive(r[key]), (r["layout"], r["optimizer"], key, r[key])
        if r["ref"] == "torch fused":
            assert _positive(r["flatp_vs_torch_fused"]) and _positive(r["flatp_fused_vs_torch_fused"]), r
    assert "### flat-parameter mode" in text
    assert "### issue 15's targets" in text
    for r in rows:  # the default path against torch.optim foreach (issue 15), where torch.optim has the optimizer
        assert _positive(r["fused_vs_dynopt"]) and (_positive(r["dynopt_vs_foreach"]) or r["ref"].startswith("dynopt")), r
    assert {r["ref"] for r in rows if r["optimizer"] == "MetaAdam"} == {"dynopt Adam"}
    assert all(r["ref"].startswith("torch ") for r in rows if r["optimizer"] in ("SGD", "Adam"))


def test_a_jax_row_per_layout_and_optimizer(fast_run):
    result, _ = fast_run
    rows = result["jax"]
    assert {(r["layout"][0], r["optimizer"]) for r in rows} == {(layout, name) for layout in step_time.FAST_LAYOUTS for name in step_time.ORDER}
    for r in rows:
        keys = ("dynopt_ms", "ref_ms", "dynopt_vs_ref", "bound_ms", "dynopt_vs_bound", "compile_s")
        if r["layout"].startswith("b"):  # multi-dimensional leaves: the 1-D prototype runs too
            keys += ("proto_ms", "proto_vs_ref")
        for key in keys:
            assert _positive(r[key]), (r["layout"], r["optimizer"], key, r[key])


# "No per-step allocation" (README, Performance): after the first step a dynopt step allocates only 0-d
# scalars (the step counter, the lr, a finite flag: 12 B on the default path, at most 96 B with
# fused=True, measured) and, in the meta step, one float32 per tensor for the per-tensor alignment
# (one aten::where: 800 B for the 200 tensors of layout c; measured peak 961 B). 2 KiB bounds that with
# a margin of 2; a temporary the size of the parameters is at least 80,000 B in these layouts
# (layout c: 200 x 100 float32), 39x the bound (test_peak_measurement_sees_a_parameter_sized_temporary).
MAX_STEP_BYTES = 2048


def test_memory_rows(fast_run):
    result, text = fast_run
    assert len(result["memory"]) == len(step_time.FAST_LAYOUTS) * len(step_time.ORDER)
    for r in result["memory"]:
        assert 0 <= r["dynopt"] <= MAX_STEP_BYTES and 0 <= r["dynopt-fused"] <= MAX_STEP_BYTES, r
        assert 0 <= r["dynopt-flatp"] <= MAX_STEP_BYTES and 0 <= r["dynopt-flatp-fused"] <= MAX_STEP_BYTES, r
        assert r["param_bytes"] >= 32 * MAX_STEP_BYTES, r  # so that a parameter-sized temporary cannot hide
        assert r["dynopt_flat"] and r["fused_flat"]  # every benchmarked optimizer runs on flat buckets
        # held between steps: the default path's pool is empty where its eager program works in place (SGD on one tensor)
        assert r["dynopt_held"] >= 0 and r["fused_held"] >= 0
    assert "peak transient memory" in text


def test_peak_measurement_sees_a_parameter_sized_temporary():
    """The control for the bound above: the per-tensor reference path (flat=False) of Adam allocates
    temporaries the size of the parameters at every step, and the benchmark's measurement sees them."""
    import dynopt.torch

    shapes = step_time.FAST_LAYOUTS["c"][1]
    init, grads = step_time.make_init(shapes)
    opt = dynopt.torch.Adam(step_time.torch_params(init, grads), lr=1e-3, flat=False)
    for _ in range(3):
        opt.step()
    param_bytes = sum(math.prod(s) for s in shapes) * 4
    assert step_time.profile_peak(opt.step) >= param_bytes >= 32 * MAX_STEP_BYTES


def test_bytes_per_element_formula():
    entries = {e.name: e for e in step_time._entries()}
    got = {name: step_time.bytes_per_element(entries[name]) for name in step_time.ORDER}
    assert got == {"SGD": 12, "Momentum": 20, "Nesterov": 20, "RMSprop": 20, "Adam": 28, "AdamW": 28, "EG": 12, "MetaSGD": 40,
                   "MetaAdam": 56}


def test_resnet18_layout():
    shapes = step_time.LAYOUTS["b"][1]
    assert len(shapes) == 62 and sum(math.prod(s) for s in shapes) == 11_689_512


def test_cold_fused_first_steps_are_reported(fast_run):
    result, text = fast_run
    probe = result["fused_probe"]
    assert len(probe) == 1 and all(r["ok"] for r in probe.values()), probe
    for name, r in probe.items():
        assert _positive(r["first_step_s"]) and _positive(r["second_step_s"])
        assert f"c {name}: step 1 (state)" in text


def test_scaling_runs_and_plots(tmp_path):
    from benchmarks import scaling

    result = scaling.main(["--fast", "--out", str(tmp_path / "scaling")], out=lambda line: None)
    assert [p["x"] for p in result["size"]] == [1_000, 10_000, 100_000]
    assert [p["x"] for p in result["count"]] == [1, 4, 16]
    for point in result["size"] + result["count"]:
        assert set(point["ms"]) == set(scaling.LABELS)
        assert all(_positive(v) for v in point["ms"].values())
    assert (tmp_path / "scaling.png").stat().st_size > 10_000 and (tmp_path / "scaling.json").exists()


def test_the_device_step_time_table_runs_on_the_cpu():
    """benchmarks/device_step_time.py is the GPU table of benchmarks/gpu_check.sh; CI has no GPU, so its code runs
    here on the CPU (tiny sizes) to keep it from rotting. Rows for every variant; no timing asserted."""
    from benchmarks import device_step_time

    lines: list[str] = []
    rows = device_step_time.main(["--device", "cpu", "--fast", "--layouts", "ac", "--optimizers", "SGD,RMSprop"],
                                 out=lines.append)
    assert [(r["layout"][0], r["optimizer"]) for r in rows] == [("a", "SGD"), ("a", "RMSprop"), ("c", "SGD"), ("c", "RMSprop")]
    for r in rows:
        for key in ("dynopt_ms", "dynopt-fused_ms", "foreach_ms", "dynopt/foreach", "dynopt-fused/foreach"):
            assert _positive(r[key]), (r, key)
    assert _positive(rows[0]["fused_ms"]) and math.isnan(rows[1]["dynopt/fused"])  # torch.optim has no fused RMSprop
    assert any(line.startswith("| c: 200 x 100 | RMSprop |") for line in lines)


def test_the_flat_iteration_table_runs():
    """benchmarks/flat_iteration.py --fast: a row per optimizer and variant, every phase timed, the flat variants
    stepped in place (the script asserts it). No timing assertions."""
    from benchmarks import flat_iteration

    rows = flat_iteration.main(["--fast"])
    labels = ["torch fused", "dynopt fused", "flat fused, hooks", "flat fused, no hooks"]
    assert [(name, label) for name, label, *_ in rows] == [(n, v) for n in ("Momentum", "Adam") for v in labels]
    for _name, _label, med, ratio, step_ratio, k in rows:
        assert all(math.isfinite(med[key]) and med[key] > 0 for key in ("zero", "backward", "step", "total"))
        assert math.isfinite(ratio) and math.isfinite(step_ratio) and k >= 1


def test_the_jax_ab_table_runs():
    """benchmarks/jax_ab.py --fast: a row per layout with finite times and ratios, and both programs' fusion counts
    (dynopt's SGD state holds a step count: one more scalar fusion than optax's). No timing assertions."""
    from benchmarks import jax_ab

    lines: list[str] = []
    rows = jax_ab.main(["--fast", "--layouts", "ad", "--optimizers", "SGD"], out=lines.append)
    assert [(r["layout"][0], r["optimizer"]) for r in rows] == [("a", "SGD"), ("d", "SGD")]
    for r in rows:
        assert _positive(r["dynopt_ms"]) and _positive(r["optax_ms"]) and math.isfinite(r["ratio"])
        assert r["fusions"][0] >= r["fusions"][1] >= 1
    assert sum(line.startswith("| ") for line in lines) == 3  # the header and a row per layout


def test_the_compiled_step_table_runs():
    """benchmarks/compiled_step.py --fast --allocations: a row with both compiled steps timed and the largest
    allocation of each (dynopt's compiled step allocates nothing parameter-sized: the tiny MLP's smallest
    parameter has 16 float32 entries, 64 bytes). No timing assertions."""
    import torch

    from benchmarks import compiled_step

    torch._dynamo.reset()
    rows = compiled_step.main(["--fast", "--optimizers", "SGD,Adam", "--allocations"])
    torch._dynamo.reset()
    assert [r["optimizer"] for r in rows] == ["SGD", "Adam"]
    for r in rows:
        assert _positive(r["dynopt_ms"]) and _positive(r["torch_ms"]) and math.isfinite(r["ratio"])
        assert 0 <= r["largest_allocation_bytes"]["dynopt"] < 64, r


def test_the_meta_step_table_runs():
    """benchmarks/meta_step_time.py --fast: a row per engine and base with finite times, and the passes each compiled
    program makes over the tensor (XLA:CPU: one loop per output, plus a dot per sum; torch: the reductions and the
    update as two compiled graphs). No timing assertions."""
    import torch

    from benchmarks import meta_step_time

    torch._dynamo.reset()
    lines: list[str] = []
    rows = meta_step_time.main(["--fast"], out=lines.append)
    torch._dynamo.reset()
    assert [(r["engine"], r["base"]) for r in rows] == [("JAX", "SGD"), ("JAX", "Adam"), ("torch fused", "SGD"),
                                                        ("torch fused", "Adam")]
    for r in rows:
        assert _positive(r["meta_ms"]) and _positive(r["base_ms"]) and math.isfinite(r["ratio"])
    jax_sgd, jax_adam, torch_sgd, torch_adam = (r["passes"] for r in rows)
    assert jax_sgd == ({"loops": 3, "dots": 5}, {"loops": 1, "dots": 0})  # θ, u, D; the five sums; optax: θ
    assert jax_adam[0]["dots"] == 5 and jax_adam[0]["loops"] > jax_adam[1]["loops"] >= 3
    assert torch_sgd == ({"compiled": 2}, {"compiled": 0}) and torch_adam == ({"compiled": 2}, {"compiled": 1})
    assert sum(line.startswith("| ") for line in lines) == 5  # the header and a row per pair
