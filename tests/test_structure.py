"""The architecture's promises, checked: one definition per optimizer, backends that never
name one, imports that stay apart, docs generated from the specs."""

from __future__ import annotations

import ast
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


SECTIONS = ("ODE", "Scheme", "Hyperparameter map", "Conventions", "References")


def paragraphs(doc: str) -> list[list[str]]:
    """The docstring's paragraphs: runs of non-blank lines, literal blocks (indented) kept with them."""
    out: list[list[str]] = [[]]
    for line in doc.splitlines():
        if line.strip():
            out[-1].append(line)
        elif out[-1]:
            out.append([])
    return [p for p in out if p]


def documented_sections(doc: str, variants=()) -> set[str]:
    """The sections a docstring declares by a header, not by a word in passing. A header is a paragraph
    that opens, unindented, with the title followed by ":" or " (" ("ODE (state θ)::", "Conventions:"),
    or a paragraph whose last line introduces a literal block with it ("... gains p > 0. Scheme::").
    The ODE and the scheme may instead be labelled lines ("ODE: ...", "scheme: ...") of a literal block
    (one case per option value, as SGD's momentum=0 / momentum=μ); an optimizer with a ``variant`` option
    must then label them in every variant's block (a paragraph opening with ``"variant"``)."""
    found, blocks = set(), paragraphs(doc)
    for block in blocks:
        for title in SECTIONS:
            if re.match(rf"{title}(:| \()", block[0]) or re.search(rf"\b{title}::$", block[-1]):
                found.add(title)
    for before, block in zip(blocks, blocks[1:]):
        if before[-1].endswith("::") and not variants:  # a literal block
            found |= {t for t in ("ODE", "Scheme") for line in block if re.match(rf"\s+{t}:", line, re.I)}
    if variants:
        heads = {v: i for i, b in enumerate(blocks) for v in variants if b[0].startswith(f'``"{v}"``')}
        for title in ("ODE", "Scheme"):
            labelled = [v for v, i in heads.items()
                        if any(re.match(rf"\s+{title}:", line, re.I) for b in blocks[i:i + 2] for line in b)]
            if set(labelled) == set(variants):
                found.add(title)
    return found


def own_doc(spec) -> str:
    """A meta-step spec's docstring is the wrapper's followed by its base's (checked as its own spec)."""
    return spec.doc.split("\n\nThe base, ")[0]


def variants_of(spec) -> tuple:
    h = next((h for h in spec.hyperparams if h.name == "variant"), None)
    return () if h is None else ast.literal_eval(h.check.rule.removeprefix("must be one of "))  # the spec's own message


def test_every_optimizer_file_documents_its_math():
    for spec in dynopt.REGISTRY.values():
        missing = set(SECTIONS) - documented_sections(own_doc(spec), variants_of(spec))
        assert not missing, f"{spec.name} docstring has no section header for {sorted(missing)}"


def test_section_headers_are_not_words_in_passing():
    """The matcher itself can fail: prose that mentions every title (and "mode", which contains "ode")
    declares nothing, and removing one header from a real docstring is noticed."""
    prose = "In this mode the ODE and the scheme follow the hyperparameter map.\n\nConventions and references vary."
    assert documented_sections(prose) == set()
    doc = dynopt.momentum.doc
    assert documented_sections(doc) == set(SECTIONS)
    assert documented_sections(doc.replace("\nODE (", "\nThe ODE (")) == set(SECTIONS) - {"ODE"}
    eg = dynopt.eg.doc
    assert documented_sections(eg, variants_of(dynopt.eg)) == set(SECTIONS)
    assert "ODE" not in documented_sections(eg.replace("    ODE:    θ' = −θ ⊙ (F", "    θ' = −θ ⊙ (F"), variants_of(dynopt.eg))
    cases = "A flow.\n\n``a=0``::\n\n    ODE:    θ' = −F\n    scheme: θ ← θ − lr·F\n"
    assert documented_sections(cases) == {"ODE", "Scheme"}  # labelled lines of a literal block, not prose
    assert documented_sections(cases.replace("::", ":")) == set()


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
        vector_field=lambda o, hp, time, grad, param, state: (-o.sign(grad), {}),
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
