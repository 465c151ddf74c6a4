"""The architecture's promises, checked: one definition per optimizer, backends that never
name one, imports that stay apart, docs generated from the specs."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

import dynopt
from dynopt.docs import optimizer_table

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dynopt"


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return set(out.split())


@pytest.mark.parametrize("statement, forbidden", [
    ("import dynopt, dynopt.numpy, dynopt.ode, dynopt.docs", {"torch", "jax", "optax"}),
    ("import dynopt.torch", {"jax", "optax"}),
    ("import dynopt.jax", {"torch"}),
])
def test_imports_stay_apart(statement, forbidden):
    assert not imported_after(statement) & forbidden


def test_backends_never_name_an_optimizer():
    names = {s.name.lower() for s in dynopt.REGISTRY.values()} | {p.stem for p in (PACKAGE / "optimizers").glob("[!_]*.py")}
    for path in (PACKAGE / "_backends").glob("*.py"):
        words = set(re.findall(r"[a-z_]+", path.read_text().lower()))
        assert not names & words, f"{path.name} names {names & words}"


def test_public_names_match_the_specs():
    import dynopt.jax
    import dynopt.numpy
    import dynopt.torch

    assert set(dynopt.ZOO) == set(dynopt.REGISTRY.values())
    for spec in dynopt.ZOO:
        assert getattr(dynopt.torch, spec.name).spec is spec
        assert getattr(dynopt.jax, spec.jax_name).__name__ == spec.jax_name
        assert getattr(dynopt.numpy, spec.jax_name)().spec is spec
        assert getattr(dynopt, spec.jax_name) is spec


def test_specs_import_no_framework():
    for path in (PACKAGE / "optimizers").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(torch|jax|optax|numpy)\b", text, re.M), path.name


def test_every_optimizer_file_documents_its_math():
    for spec in dynopt.REGISTRY.values():
        for section in ("ODE", "Scheme", "Hyperparameter map", "Conventions", "References"):
            assert section.lower() in spec.doc.lower(), f"{spec.name} docstring lacks {section!r}"


def test_readme_table_is_generated_from_the_specs():
    assert optimizer_table() in (ROOT / "README.md").read_text(), "run `python -m dynopt.docs` and paste the table into README.md"


def test_a_new_optimizer_is_one_spec():
    """A user-defined spec (outside the package) gets all three backends with no other change."""
    import numpy as np
    import torch

    import dynopt.jax
    import dynopt.numpy
    import dynopt.torch
    from dynopt.spec import Hyper, Spec, nonnegative

    sign_descent = Spec(
        name="SignDescent",
        hyperparams=(Hyper("lr", 0.01, "step", nonnegative),),
        state=lambda hp: (),
        update=lambda o, hp, t, grad, param, state: (-hp.lr * o.sign(grad), {}),
        vector_field=lambda o, hp, time, param, state, grad: (-o.sign(grad), {}),
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: False,
        ode="θ' = −sign ∇L", scheme="Euler", hyper_map="h = lr",
    )
    w = torch.nn.Parameter(torch.tensor([0.3, -2.0]))
    w.grad = torch.tensor([1.0, -4.0])
    dynopt.torch.from_spec(sign_descent)([w], lr=0.1).step()
    np.testing.assert_allclose(w.detach().numpy(), [0.2, -1.9], rtol=1e-6)
    opt = dynopt.jax.from_spec(sign_descent)(0.1)
    updates, _ = opt.update([np.array([1.0, -4.0])], opt.init([np.zeros(2)]))
    np.testing.assert_allclose(updates[0], [-0.1, 0.1])
    oracle = dynopt.numpy.from_spec(sign_descent)(0.1)
    np.testing.assert_allclose(oracle.update([np.array([1.0, -4.0])], oracle.init([np.zeros(2)]), [np.zeros(2)])[0][0], [-0.1, 0.1])
