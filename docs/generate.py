"""Write the generated pages of the documentation site into ``docs/generated/``.

``docs/conf.py`` calls :func:`write_pages` at the start of every Sphinx build, so the site always
shows what the code says: one page per optimizer in ``dynopt.REGISTRY`` (a newly registered
optimizer gets its page with no change here), the zoo and scheme tables of :mod:`dynopt.docs`, the
figures in ``docs/gallery/`` and the notebooks in ``notebooks/`` (copied, rendered without running).

Run it alone with ``python docs/generate.py`` to inspect the pages. ``docs/generated/`` is not
committed.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import pathlib
import re
import shutil
import sys
import tempfile
import textwrap

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
OUT = DOCS / "generated"
GALLERY = DOCS / "gallery"
NOTEBOOKS = ROOT / "notebooks"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dynopt  # noqa: E402
import dynopt.docs  # noqa: E402

# What each committed figure shows (README's Gallery section has the long story). A figure that is
# not listed here still gets onto the gallery page, under its file name.
FIGURES = {
    "rosenbrock.png": ("The zoo on Rosenbrock", "Every optimizer with the same budget (16 log-spaced learning rates, "
                       "300 steps, best lr kept); solid: the iterates, dashed: the spec's own ODE flow at the same "
                       "times t_k = k·h (``experiments/zoo_trajectories.py``)."),
    "step_size_insensitivity.png": ("Step-size insensitivity", "Final loss against the initial lr over four decades, "
                                    "base optimizers solid and their meta-learned step sizes dashed "
                                    "(``experiments/step_size_insensitivity.py``)."),
    "distribution_shift.png": ("Distribution shift", "Linear regression whose target switches halfway: the adapted "
                               "step re-grows after the switch, a cosine schedule cannot "
                               "(``experiments/distribution_shift.py``)."),
    "eg_vs_gd_sparse.png": ("EG± against GD on sparse targets", "Online regression on ±1 inputs with k relevant "
                            "features out of 128, equal tuning budget (``experiments/eg_vs_gd_sparse.py``, "
                            "Kivinen–Warmuth)."),
    "orders.png": ("The ODE view, measured", "Error of the iterates against their flow as the step shrinks, with "
                   "the fitted order of each scheme (``experiments/ode_orders.py``)."),
}

NOTEBOOK_TITLES = {
    "zoo_tour": "the zoo on toy losses",
    "ode_view": "discrete against continuous as the step shrinks, with the fitted order",
    "eg_and_meta_step": "EG on the simplex, EG± on sparse regression, the meta-learned step from a badly chosen lr",
}


def slug(spec) -> str:
    """The page name of an optimizer: its JAX name (``meta_sgd``), which is unique and file-safe."""
    name = spec.jax_name or spec.name.lower()
    return re.sub(r"[^A-Za-z0-9_]+", "_", name)


# ----------------------------------------------------------------------------- writing


def _write(path: pathlib.Path, text: str, written: set[pathlib.Path]) -> None:
    """Write ``text`` only if it changed (Sphinx then rereads only what changed), atomically."""
    written.add(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    if path.is_file() and path.read_bytes() == data:
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _escape(text: str) -> str:
    """Plain text for a reST paragraph or table cell: no markup is interpreted."""
    text = re.sub(r"([\\`*_|\[\]<>])", r"\\\1", " ".join(str(text).split()))
    return "\\" + text if text[:1] in "-+#:." else text


def _literal(text: str, indent: str) -> str:
    """A ``text`` literal block (shown exactly as written), indented for a list-table cell."""
    body = textwrap.indent(str(text), indent + "   ")
    return f".. code-block:: text\n\n{body}"


# ----------------------------------------------------------------------------- the docstring

_LABEL = re.compile(r"^(Conventions|References)\s*:\s*(.*)$")
_ARXIV = re.compile(r"arXiv:(\d{4}\.\d{4,5})")


def _block_end(lines: list[str], start: int) -> int:
    """End of the top-level block that starts at ``start``: a blank line followed by a line at column 0."""
    j = start + 1
    while j < len(lines):
        if not lines[j].strip():
            k = j
            while k < len(lines) and not lines[k].strip():
                k += 1
            if k == len(lines) or not lines[k][:1].isspace():
                return j
            j = k
        j += 1
    return j


def _references(lines: list[str]) -> list[str]:
    """A bullet list, one reference per item: a reference ends on a line that ends with a full stop."""
    items: list[list[str]] = []
    fresh = True
    for line in lines:
        text = line.strip()
        if fresh or not items:
            items.append([])
        items[-1].append(text)
        fresh = text.endswith(".")
    out = []
    for item in items:
        text = _ARXIV.sub(r"`arXiv:\1 <https://arxiv.org/abs/\1>`__", " ".join(item))
        if re.match(r"([A-Za-z]|\d+|[ivxlcdmIVXLCDM]+)[.)] ", text):  # "A. F. Filippov" is no enumerated list
            text = "\\" + text
        out.append(f"* {text}")
    return out


def _prepare(lines: list[str]) -> list[str]:
    """Two readings of the docstrings' plain-text habits, as reST.

    * ``|`` in prose is an absolute value (|F|), not a substitution reference: it is escaped
      (literal blocks, inline literals, grid-table rows and line blocks are left alone).
    * A paragraph indented less than the literal block above it, but still indented, is prose
      that continues the item (the docstrings' habit); plain reST would swallow it into the
      literal block. An empty comment ends the block, so the paragraph is shown as a block quote.
    """
    out: list[str] = []
    opened_at: int | None = None  # indentation of the line whose ``::`` opened the literal block
    content_at: int | None = None  # indentation of the literal block's first line
    for line in lines:
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if opened_at is not None and stripped:
            if indent <= opened_at:
                opened_at = None
            elif content_at is None:
                content_at = indent
            elif indent < content_at and out and not out[-1].strip():
                out += [" " * opened_at + "..", ""]
                opened_at = None
        if opened_at is None and stripped and not stripped.startswith("| ") and not (
                stripped.startswith(("|", "+")) and stripped.endswith(("|", "+"))):
            parts = re.split(r"(``.*?``)", line)
            line = "".join(part if part.startswith("``") else part.replace("|", r"\|") for part in parts)
        if opened_at is None and stripped.endswith("::"):
            opened_at, content_at = indent, None
        out.append(line)
    return out


def docstring_rst(doc: str) -> str:
    """The spec's docstring as reST, with its Conventions and References blocks under their own headings.

    Everything else is kept as written (the docstrings are reST: ``::`` literal blocks for the
    formulas, double backquotes, directives)."""
    lines = _prepare(inspect.cleandoc(doc).splitlines())
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _LABEL.match(lines[i]) if (i == 0 or not lines[i - 1].strip()) else None
        if not match:
            out.append(lines[i])
            i += 1
            continue
        end = _block_end(lines, i)
        label, rest = match.groups()
        body = lines[i + 1:end]
        if all(line[:1].isspace() or not line.strip() for line in body):
            body = textwrap.dedent("\n".join(body)).splitlines()
        if rest:
            body = [rest[:1].upper() + rest[1:]] + body
        simple = body and all(line.strip() and not line.lstrip().startswith(("* ", "- ", ".. ")) for line in body)
        if label == "References" and simple:
            body = _references(body)
        out += [f".. rubric:: {label}", "", *body]
        i = end
    return "\n".join(out).strip() + "\n"


# ----------------------------------------------------------------------------- one optimizer


def _signatures(spec) -> list[tuple[str, str]]:
    """``dynopt.torch.<Name>(...)`` and ``dynopt.jax.<name>(...)`` as the backends define them."""
    found = []
    for module, name in (("dynopt.torch", spec.name), ("dynopt.jax", spec.jax_name)):
        try:
            backend = __import__(module, fromlist=["_"])
        except ImportError:  # torch or jax not installed: the page simply has no signature for it
            continue
        obj = getattr(backend, name, None)
        if obj is None:
            continue
        try:
            signature = str(inspect.signature(obj))
        except (TypeError, ValueError):
            signature = "(...)"
        found.append((module, f"{module}.{name}{signature}"))
    return found


def _scheme_cell(spec) -> str:
    scheme = spec.discretization
    if scheme is None:
        return ("written by hand (the step is not a :mod:`dynopt.schemes` scheme applied to a statement); "
                "the docstring below states its order")
    family = type(scheme).__name__
    calls = scheme.gradient_calls
    return (f"**order {scheme.order}**: {_escape(scheme.describe())}; a :class:`dynopt.schemes.{family}`, "
            f"{calls} gradient{'s' if calls != 1 else ''} per step")


def optimizer_page(spec) -> str:
    doc = inspect.cleandoc(spec.doc or "")
    summary, _, rest = doc.partition("\n\n")
    title = spec.name
    lines = [f".. _optimizer-{slug(spec)}:", "", title, "=" * max(len(title), 3), ""]
    if summary:
        lines += [" ".join(_prepare(summary.split("\n"))), ""]
    rows = [
        ("ODE", _literal(spec.ode, "     ")),
        ("Scheme", _literal(spec.scheme, "     ")),
        ("Discretization and order", _scheme_cell(spec)),
        ("Hyperparameter map", _literal(spec.hyper_map, "     ")),
    ]
    rows += [(f"``{module}``", _literal(text, "     ")) for module, text in _signatures(spec)]
    lines += [".. list-table::", "   :stub-columns: 1", "   :widths: 1 4", "   :class: dynopt-glance", ""]
    for head, cell in rows:
        lines += [f"   * - {head}", f"     - {cell}", ""]

    lines += ["Hyperparameters", "---------------", ""]
    lines += ["Same names and defaults on both backends (the learning rate is ``lr`` in torch and the first "
              "positional argument in JAX, where it may be an optax schedule).", ""]
    lines += [".. list-table::", "   :header-rows: 1", "   :widths: 1 1 3 2", ""]
    lines += ["   * - name", "     - default", "     - meaning", "     - accepted values", ""]
    for h in spec.hyperparams:
        rule = h.check.rule if h.check is not None else ("a bool" if h.static else "")
        kind = " (static)" if h.static else ""
        lines += [f"   * - ``{h.name}``", f"     - ``{h.default!r}``", f"     - {_escape(h.doc) or '—'}",
                  f"     - {_escape(rule + kind) or '—'}", ""]

    lines += ["ODE, scheme, conventions and references", "---------------------------------------", ""]
    lines += ["From the docstring of ``dynopt.torch.{0}`` and ``dynopt.jax.{1}``, written in "
              "``dynopt/optimizers/``.".format(spec.name, spec.jax_name), ""]
    lines += [docstring_rst(rest) if rest.strip() else "(no docstring)", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the other pages


_PIPE = re.compile(r"(?<!\\)\|")


def _table(make, specs) -> list[str]:
    """A markdown table of ``dynopt.docs`` over ``specs``, rows intact: a formula that contains ``|``
    (an absolute value, |∇L|) would split its cell, so then the table is made again from copies
    of the specs with that character escaped."""
    rows = make(specs).splitlines()
    if len({len(_PIPE.findall(row)) for row in rows}) <= 1:
        return rows
    fields = ("ode", "scheme", "hyper_map")
    escaped = [dataclasses.replace(s, **{f: getattr(s, f).replace("|", "\\|") for f in fields}) for s in specs]
    return make(escaped).splitlines()


def _linked_optimizer_table(specs) -> str:
    rows = _table(dynopt.docs.optimizer_table, specs)
    for index, spec in enumerate(specs, start=2):
        prefix = f"| {spec.name} |"
        if index < len(rows) and rows[index].startswith(prefix):
            rows[index] = f"| [{spec.name}](optimizers/{slug(spec)}.rst) |" + rows[index][len(prefix):]
    return "\n".join(rows)


def zoo_page(specs) -> str:
    def default(h):
        return f"`{h.name}={h.default!r}`".replace("|", "\\|")

    hyper_rows = ["| optimizer | hyperparameters (defaults) |", "|---|---|"]
    hyper_rows += [f"| [{s.name}](optimizers/{slug(s)}.rst) | " + ", ".join(default(h) for h in s.hyperparams) + " |"
                   for s in specs]
    toctree = "\n".join(f"optimizers/{slug(s)}" for s in specs)
    return f"""# The zoo

Every registered optimizer, generated from its spec by `dynopt.docs.optimizer_table()` (the same
table as README's). Each name links to the optimizer's page: its ODE, its scheme and order, its
hyperparameters, its conventions against torch.optim and optax, and its references.

{_linked_optimizer_table(specs)}

## Hyperparameters and defaults

{chr(10).join(hyper_rows)}

```{{toctree}}
:hidden:
:maxdepth: 1

{toctree}
```
"""


def schemes_page(specs) -> str:
    orders = "\n".join(_table(dynopt.docs.ode_scheme_table, specs))
    return f"""# Schemes

An optimizer in dynopt is an ODE *statement* plus a *scheme* (see {{mod}}`dynopt.statement` and
{{mod}}`dynopt.schemes`). `dynopt.discretize(spec, scheme)` pairs any statement with any scheme.

## The schemes

Generated by `dynopt.docs.scheme_table()`:

{dynopt.docs.scheme_table()}

## Each statement × each scheme: the order

Generated by `dynopt.docs.ode_scheme_table()`. ★ marks the zoo's own optimizer; — a pair that does
not apply (leapfrog needs θ as a position variable and a velocity variable).

{orders}

The API: [dynopt.schemes](../api/schemes.md), [dynopt.statement](../api/statement.md).
"""


def gallery_page() -> str:
    parts = ["# Gallery", "",
             "The figures README shows, written by `bash scripts/figures.sh` (`python -m experiments`) into "
             "`docs/gallery/`. README's Gallery section tells how each is made and what it shows.", ""]
    order = list(FIGURES)
    pngs = sorted(GALLERY.glob("*.png"), key=lambda p: (order.index(p.name) if p.name in FIGURES else len(order), p.name))
    for png in pngs:
        title, text = FIGURES.get(png.name, (png.stem.replace("_", " "), ""))
        parts += [f"## {title}", ""]
        if text:
            parts += [text.replace("``", "`"), ""]
        parts += [f"```{{image}} ../gallery/{png.name}", f":alt: {title}", ":width: 100%", "```", ""]
    if not pngs:
        parts += ["No figure yet: run `bash scripts/figures.sh`.", ""]
    return "\n".join(parts)


def notebooks_page(names: list[str]) -> str:
    items = "\n".join(f"- [{name}](notebooks/{name}.ipynb): {NOTEBOOK_TITLES.get(name, name.replace('_', ' '))}"
                      for name in names)
    toctree = "\n".join(f"notebooks/{name}" for name in names)
    return f"""# Notebooks

The notebooks of `notebooks/`, shown as committed: without outputs (the site does not run them; the
test suite runs them in a fast mode, and `jupyter lab notebooks/` runs them in full).

{items}

```{{toctree}}
:hidden:
:maxdepth: 1

{toctree}
```
"""


def write_pages(out: pathlib.Path = OUT) -> list[pathlib.Path]:
    """Write every generated page under ``out``; remove generated files that no longer have a source."""
    specs = list(dynopt.REGISTRY.values())
    slugs = [slug(s) for s in specs]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"two optimizers would share a page: {slugs}")
    written: set[pathlib.Path] = set()
    for spec in specs:
        _write(out / "optimizers" / f"{slug(spec)}.rst", optimizer_page(spec), written)
    _write(out / "zoo.md", zoo_page(specs), written)
    _write(out / "schemes.md", schemes_page(specs), written)
    _write(out / "gallery.md", gallery_page(), written)
    order = list(NOTEBOOK_TITLES)
    names = sorted((p.stem for p in NOTEBOOKS.glob("*.ipynb")),
                   key=lambda n: (order.index(n) if n in NOTEBOOK_TITLES else len(order), n))
    for name in names:
        _write(out / "notebooks" / f"{name}.ipynb", (NOTEBOOKS / f"{name}.ipynb").read_text(), written)
    _write(out / "notebooks.md", notebooks_page(names), written)
    for path in sorted(out.rglob("*"), reverse=True):  # stale pages: an optimizer or notebook that is gone
        if path.is_file() and path not in written and not path.name.startswith(".tmp-"):
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            shutil.rmtree(path)
    return sorted(written)


if __name__ == "__main__":
    for page in write_pages():
        print(page.relative_to(ROOT))
