"""Su's Heun optimizer, measured: Heun against GD at the same number of gradient evaluations on an MLP.

Su ("让Keras更酷一些!", kexue.fm/archives/5879) wrote Heun's method as a Keras optimizer and found
it "not good"; the explanation offered in the ODE view is that GD's O(h) error is an implicit
regularizer (its modified loss is L + (h/4)‖∇L‖², Barrett & Dherin 2021) which Heun, second
order, does not have. This experiment measures it.

Model: a 64 → ``width`` (tanh) → 10 MLP with the mean cross-entropy on a random 80% of
scikit-learn's digits (pixels / 16; the other 20% give the test accuracy), full batch, float32,
torch. GD is ``dynopt.torch.SGD``; Heun is ``dynopt.torch.from_spec(dynopt.discretize(dynopt.sgd,
dynopt.schemes.Heun()))``, stepped with ``step(closure)`` (two gradient evaluations per step).
Both start from the same initialization. For each lr η, with a budget of E gradient evaluations:

* GD(η): E steps, ODE time T = Eη;
* Heun(2η): E/2 steps, the same budget and the same ODE time;
* Heun(η): E steps, the same ODE time as GD for 2E evaluations (its first E/2 steps are the
  equal-budget run at η).

Every step records the training loss and ‖∇L‖ at θ_k (the first closure call of the step computes
them anyway). The sharpness, the top eigenvalue of ∇²L, is found by power iteration on
Hessian-vector products (double backward, warm-started from the previous measurement's vector,
until the Rayleigh quotient changes by less than ``power_tolerance``) at ``checkpoints`` evenly
spaced steps, halfway, at the end, and right after the loss first falls below each of
``loss_levels``: GD and Heun compared there are compared at equal training loss. Gradient
evaluations are counted in the closure; the measurements do not count.

Outputs in ``--out``: ``heun_digits.png``, ``curves.npz`` and ``config.json`` (configuration,
final numbers per run: loss, gradient norm, sharpness, test accuracy, evaluations, ODE time).
``--seed`` draws the split and the initialization; the run is always on torch (``--backend`` is
ignored).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
from matplotlib.figure import Figure
from tqdm.auto import tqdm

import dynopt
from dynopt import schemes

from . import prepare, write_summary

NAME = "heun_digits"
COLORS = {"GD": "#0072B2", "Heun (2η)": "#D55E00", "Heun (η)": "#009E73"}


@dataclass
class Config:
    lrs: tuple[float, ...] = (1.0, 2.0)
    evaluations: int = 600  # the budget E
    width: int = 32
    checkpoints: int = 6
    loss_levels: tuple[float, ...] = (0.1, 0.03, 0.01)
    power_tolerance: float = 1e-4  # relative change of the Rayleigh quotient between two products
    power_max_iterations: int = 100
    test_fraction: float = 0.2
    backend: str = "numpy"
    seed: int = 0

    @classmethod
    def fast(cls, **overrides) -> "Config":
        """One lr, a budget of 120 evaluations, fewer checkpoints, one loss level."""
        return cls(**{"lrs": (1.0,), "evaluations": 120, "checkpoints": 3, "loss_levels": (0.3,), **overrides})


def load_digits_split(cfg: Config):
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(cfg.seed).permutation(len(x))
    x, y = x[order] / 16.0, y[order]
    cut = int(round((1 - cfg.test_fraction) * len(x)))
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return as_x(x[:cut]), torch.tensor(y[:cut]), as_x(x[cut:]), torch.tensor(y[cut:])


def make_model(cfg: Config):
    import torch

    torch.manual_seed(cfg.seed)
    return torch.nn.Sequential(torch.nn.Linear(64, cfg.width), torch.nn.Tanh(), torch.nn.Linear(cfg.width, 10))


def sharpness(model, loss_fn, vector, max_iterations: int, tolerance: float = 0.0):
    """(top eigenvalue of ∇²L by power iteration on Hessian-vector products, its vector), from ``vector``.

    Stops after ``max_iterations`` products, or earlier once the Rayleigh quotient changes by less
    than ``tolerance`` (relative) from one product to the next.
    """
    import torch

    params = list(model.parameters())
    grads = torch.autograd.grad(loss_fn(model), params, create_graph=True)
    value = float("nan")
    for _ in range(max_iterations):
        norm = torch.sqrt(sum((v * v).sum() for v in vector))
        vector = [v / norm for v in vector]
        product = torch.autograd.grad(grads, params, grad_outputs=vector, retain_graph=True)
        previous, value = value, float(sum((a * b).sum() for a, b in zip(product, vector)))
        vector = [p.detach() for p in product]
        if abs(value - previous) <= tolerance * abs(value):
            break
    return value, vector


def train(cfg: Config, data, method: str, lr: float, steps: int, progress) -> dict:
    """Run ``method`` ("GD" or "Heun") at ``lr`` for ``steps`` steps.

    Every step records the loss and ‖∇L‖ at θ_k (from the first closure call of the step, which
    evaluates them anyway). The sharpness is measured at ``checkpoints`` evenly spaced steps (and
    halfway), right after the loss first falls below each of ``loss_levels``, and at the end.
    """
    import torch

    from dynopt.torch import SGD, from_spec

    x_train, y_train, x_test, y_test = data
    model = make_model(cfg)
    params = list(model.parameters())

    def loss_fn(m):
        return torch.nn.functional.cross_entropy(m(x_train), y_train)

    if method == "GD":
        opt = SGD(params, lr=lr)
    else:
        opt = from_spec(dynopt.discretize(dynopt.sgd, schemes.Heun()))(params, lr=lr)
    evaluations = 0
    first_call = False
    curve = {"evaluations": [], "loss": [], "grad_norm": []}

    def closure():
        nonlocal evaluations, first_call
        evaluations += 1
        opt.zero_grad()
        loss = loss_fn(model)
        loss.backward()
        if first_call:  # the gradient at θ_k, the step's own point
            first_call = False
            curve["evaluations"].append(evaluations - 1)
            curve["loss"].append(float(loss.detach()))
            curve["grad_norm"].append(float(torch.sqrt(sum((p.grad * p.grad).sum() for p in params))))
        return loss

    generator = torch.Generator().manual_seed(cfg.seed + 1)
    vector = [torch.randn(p.shape, generator=generator) for p in params]
    marks = set(np.linspace(0, steps, cfg.checkpoints + 1).round().astype(int).tolist()) | {steps // 2}
    levels = sorted(cfg.loss_levels, reverse=True)
    record = {"evaluations": [], "loss": [], "grad_norm": [], "sharpness": [], "level": []}

    def measure(level: float = float("nan")):
        nonlocal vector
        loss = loss_fn(model)
        grads = torch.autograd.grad(loss, params)
        value, vector = sharpness(model, loss_fn, vector, cfg.power_max_iterations, cfg.power_tolerance)
        record["evaluations"].append(evaluations)
        record["loss"].append(float(loss.detach()))
        record["grad_norm"].append(float(torch.sqrt(sum((g * g).sum() for g in grads))))
        record["sharpness"].append(value)
        record["level"].append(level)

    per_step = []
    for k in range(steps):
        if k in marks:
            measure()
        before = evaluations
        first_call = True
        opt.step(closure)
        per_step.append(evaluations - before)
        while levels and curve["loss"][-1] <= levels[0]:
            measure(level=levels.pop(0))
        progress.update()
    measure()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(dim=1) == y_test).float().mean())
    return {**{k: np.array(v) for k, v in record.items()}, "curve": {k: np.array(v) for k, v in curve.items()},
            "test_accuracy": accuracy, "lr": lr, "steps": steps, "ode_time": steps * lr,
            "evaluations_per_step": sorted(set(per_step))}


def runs_for(cfg: Config) -> list[tuple[str, str, float, int]]:
    """(label, method, lr multiplier, steps) per lr: the three runs of the module docstring."""
    e = cfg.evaluations
    return [("GD", "GD", 1.0, e), ("Heun (2η)", "Heun", 2.0, e // 2), ("Heun (η)", "Heun", 1.0, e)]


def _entry(run: dict, i: int) -> dict:
    return {"evaluations": int(run["evaluations"][i]), "loss": float(run["loss"][i]),
            "grad_norm": float(run["grad_norm"][i]), "sharpness": float(run["sharpness"][i])}


def at_budget(run: dict, budget: int) -> dict:
    """The run's measurements at the last sharpness measurement within ``budget`` evaluations."""
    within = [i for i, e in enumerate(run["evaluations"]) if e <= budget]
    return _entry(run, max(within, key=lambda i: (run["evaluations"][i], i)))


def at_levels(run: dict) -> dict[str, dict]:
    """The measurements taken right after the loss first fell below each level it reached."""
    return {f"{level:g}": _entry(run, i) for i, level in enumerate(run["level"]) if np.isfinite(level)}


def figure(cfg: Config, results: dict) -> Figure:
    rows = len(cfg.lrs)
    fig = Figure(figsize=(19, 4.6 * rows + 1.2), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, 4, squeeze=False))
    for row, lr in enumerate(cfg.lrs):
        loss_ax, grad_ax, sharp_ax, versus = axes[row]
        for label, run in results[lr].items():
            name = f"{label.split()[0]} at lr {run['lr']:g}, {run['steps']} steps ({label})"
            style = {"color": COLORS[label], "marker": "o", "ms": 4, "lw": 1.4}
            curve = run["curve"]
            loss_ax.semilogy(curve["evaluations"], curve["loss"], color=COLORS[label], lw=1.3, label=name)
            grad_ax.semilogy(curve["evaluations"], curve["grad_norm"], color=COLORS[label], lw=1.0, label=name)
            sharp_ax.plot(run["evaluations"], run["sharpness"], label=name, **style)
            versus.semilogx(run["loss"], run["sharpness"], label=name, **style)
        for level in cfg.loss_levels:
            versus.axvline(level, color="0.6", ls=":", lw=1)
        versus.invert_xaxis()
        versus.set(xlabel="training loss (decreasing →; dotted: the loss levels)", ylabel="top eigenvalue of ∇²L",
                   title=f"η = {lr:g}: sharpness against training loss")
        versus.grid(True, which="both", alpha=0.3)
        versus.legend(fontsize="x-small")
        for ax in (loss_ax, grad_ax, sharp_ax):
            ax.axvline(cfg.evaluations, color="0.4", ls=":", lw=1.2)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xlabel("gradient evaluations (dotted: the budget E)")
        sharp_ax.axhline(2 / lr, color=COLORS["GD"], ls="--", lw=1, label=f"2/η = {2 / lr:g} (GD's stability edge)")
        sharp_ax.axhline(1 / lr, color=COLORS["Heun (2η)"], ls="--", lw=1, label=f"2/(2η) = {1 / lr:g} (Heun at 2η)")
        loss_ax.set(ylabel="training loss", title=f"η = {lr:g}: training loss")
        grad_ax.set(ylabel="‖∇L‖", title=f"η = {lr:g}: gradient norm")
        sharp_ax.set(ylabel="top eigenvalue of ∇²L", title=f"η = {lr:g}: sharpness (power iteration)")
        for ax in (loss_ax, grad_ax, sharp_ax):
            ax.legend(fontsize="x-small")
    fig.suptitle(f"Su's Heun optimizer against GD at equal gradient evaluations: a 64→{cfg.width}→10 tanh MLP on digits "
                 "(full batch)", fontsize="x-large")
    fig.supxlabel("GD(η): E steps. Heun(2η): E/2 steps, the same budget and ODE time T = Eη. Heun(η): E steps, the same "
                  "ODE time for twice the budget.\nHeun = dynopt.discretize(dynopt.sgd, dynopt.schemes.Heun()) through "
                  "dynopt.torch with step(closure).", x=0.01, ha="left", fontsize=9)
    return fig


def main(argv: list[str] | None = None) -> dict:
    cfg, out = prepare(NAME, __doc__, Config, argv)
    import torch

    torch.manual_seed(cfg.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = load_digits_split(cfg)
    plan = runs_for(cfg)
    results: dict[float, dict[str, dict]] = {}
    try:
        with tqdm(total=len(cfg.lrs) * sum(steps for *_, steps in plan), desc=NAME, unit="step") as progress:
            for lr in cfg.lrs:
                results[lr] = {}
                for label, method, factor, steps in plan:
                    progress.set_postfix_str(f"{label}, η = {lr:g}")
                    results[lr][label] = train(cfg, data, method, factor * lr, steps, progress)
    finally:
        torch.set_num_threads(threads)
    arrays = {f"lr={lr:g}/{label}/{key}": run[key] for lr, runs in results.items() for label, run in runs.items()
              for key in ("evaluations", "loss", "grad_norm", "sharpness", "level")}
    arrays.update({f"lr={lr:g}/{label}/curve/{key}": value for lr, runs in results.items() for label, run in runs.items()
                   for key, value in run["curve"].items()})
    np.savez_compressed(out / "curves.npz", **arrays)
    seconds = time.perf_counter() - start
    summary = {
        "experiment": NAME,
        "config": asdict(cfg),
        "results": {f"{lr:g}": {label: {"lr": run["lr"], "steps": run["steps"], "ode_time": run["ode_time"],
                                        "evaluations_per_step": run["evaluations_per_step"],
                                        "final": {**at_budget(run, 10**12), "test_accuracy": run["test_accuracy"]},
                                        "at_budget": at_budget(run, cfg.evaluations), "at_loss_levels": at_levels(run)}
                                for label, run in runs.items()}
                    for lr, runs in results.items()},
        "seconds": round(seconds, 2),
    }
    written = write_summary(out, summary, NAME, figure(cfg, results)) + [out / "curves.npz"]
    print(f"{NAME}: wrote {len(written)} files to {out} in {seconds:.1f} s")
    for lr, runs in summary["results"].items():
        for label, r in runs.items():
            f = r["final"]
            print(f"  η = {lr}: {label:9s} ({r['steps']} steps, {f['evaluations']} evaluations, T = {r['ode_time']:g}): "
                  f"loss {f['loss']:.4g}, ‖∇L‖ {f['grad_norm']:.3g}, sharpness {f['sharpness']:.3g}, "
                  f"test accuracy {f['test_accuracy']:.3f}")
            for level, m in r["at_loss_levels"].items():
                print(f"      loss ≤ {level}: after {m['evaluations']} evaluations, loss {m['loss']:.4g}, "
                      f"‖∇L‖ {m['grad_norm']:.3g}, sharpness {m['sharpness']:.3g}")
    return summary


if __name__ == "__main__":
    main()
