"""The documentation site builds offline with warnings treated as errors, and shows every optimizer.

One Sphinx build of ``docs/`` (``-W``: any warning of Sphinx, docutils, MyST or myst-nb fails it)
into a temporary folder, then the pages are read back as text:

* every optimizer registered in ``dynopt.REGISTRY`` has its page, with its ODE, scheme and
  hyperparameter map exactly as the spec states them, its order (when a scheme gives one), every
  hyperparameter with its default, and its docstring's Conventions and References;
* the zoo page links every optimizer, the gallery shows every figure of ``docs/gallery/``, each
  notebook of ``notebooks/`` has its page, and the API pages document ``dynopt.schemes`` and
  ``dynopt.statement``;
* no page loads a script or stylesheet from the network (the site works offline);
* README gives the command that builds the site.
"""

from __future__ import annotations

import html
import json
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = ["-m", "sphinx", "-W", "--keep-going", "-b", "html"]
README_COMMAND = "sphinx-build -W -b html docs docs/_build/html"

# What a fresh interpreter registers: other tests in this process may register optimizers of their
# own, which the site (built in a fresh process) rightly does not show.
REGISTRY_JSON = r"""
import json, re, sys
sys.path.insert(0, "docs")
import dynopt
import generate
print(json.dumps([{
    "name": s.name, "page": generate.slug(s), "ode": s.ode, "scheme": s.scheme, "hyper_map": s.hyper_map,
    "order": None if s.discretization is None else s.discretization.order,
    "hyperparams": [[h.name, repr(h.default)] for h in s.hyperparams],
    "sections": sorted(set(re.findall(r"^(Conventions|References)\s*:", s.doc or "", re.M))),
} for s in dynopt.REGISTRY.values()]))
"""


def text_of(page: pathlib.Path) -> str:
    """The visible text of an HTML page, whitespace collapsed."""
    body = page.read_text()
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", body, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", body)).split())


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    html_dir = out / "html"
    proc = subprocess.run([sys.executable, *BUILD, "-d", str(out / "doctrees"), "docs", str(html_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"sphinx -W failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}"
    return html_dir


@pytest.fixture(scope="module")
def registry():
    proc = subprocess.run([sys.executable, "-c", REGISTRY_JSON], cwd=ROOT, capture_output=True, text=True, check=True)
    specs = json.loads(proc.stdout)
    assert len(specs) >= 12
    return specs


def test_every_optimizer_has_a_page_with_its_ode_scheme_order_conventions_and_references(site, registry):
    for spec in registry:
        page = site / "generated" / "optimizers" / f"{spec['page']}.html"
        assert page.is_file(), f"{spec['name']}: no page {page.relative_to(site)}"
        assert f"<h1>{html.escape(spec['name'])}<" in page.read_text(), f"{spec['name']}: page without its title"
        text = text_of(page)
        for field in ("ode", "scheme", "hyper_map"):
            assert flat(spec[field]) in text, f"{spec['name']}: page lacks its {field} {spec[field]!r}"
        if spec["order"] is not None:
            assert f"order {spec['order']}" in text, f"{spec['name']}: page lacks its order {spec['order']}"
        for name, default in spec["hyperparams"]:
            assert f"{name} {flat(default)}" in text, f"{spec['name']}: hyperparameter table lacks {name}={default}"
        for section in spec["sections"]:
            assert f"{section} " in text, f"{spec['name']}: page lacks the docstring's {section}"


def test_the_zoo_page_links_every_optimizer(site, registry):
    zoo = (site / "generated" / "zoo.html").read_text()
    for spec in registry:
        assert f'href="optimizers/{spec["page"]}.html"' in zoo, f"the zoo page does not link {spec['name']}"
        assert flat(spec["ode"]) in text_of(site / "generated" / "zoo.html")


def test_schemes_gallery_notebooks_and_api_pages(site):
    schemes = text_of(site / "generated" / "schemes.html")
    for name in ("Euler()", "SemiImplicitEuler()", "Lookahead()", "Heun()", "RK4()", "Leapfrog()"):
        assert name in schemes
    assert "★" in schemes  # the statement × scheme table

    gallery = (site / "generated" / "gallery.html").read_text()
    shown = set(re.findall(r'<img [^>]*src="[^"]*?/_images/([^"/]+)"', gallery))
    figures = {p.name for p in (ROOT / "docs" / "gallery").glob("*.png")}
    assert figures and figures <= shown, f"gallery page lacks {sorted(figures - shown)}"

    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for notebook in notebooks:
        cells = json.loads(notebook.read_text())["cells"]
        first = next(line for c in cells if c["cell_type"] == "markdown" for line in "".join(c["source"]).splitlines()
                     if line.startswith("# "))
        page = site / "generated" / "notebooks" / f"{notebook.stem}.html"
        assert page.is_file(), f"no page for {notebook.name}"
        assert flat(first[2:]) in text_of(page)

    for module, members in (("schemes", ("ExplicitRK", "Splitting", "Euler", "Leapfrog")),
                            ("statement", ("Leak", "Relax", "Drift", "from_statement", "discretize"))):
        api = (site / "api" / f"{module}.html").read_text()
        for member in members:
            assert f'id="dynopt.{module}.{member}"' in api, f"dynopt.{module}.{member} is not documented"


def test_the_site_loads_nothing_from_the_network(site):
    for page in site.rglob("*.html"):
        remote = re.findall(r'<(?:script|link|img)\b[^>]*(?:src|href)="(https?://[^"]+)"', page.read_text())
        assert not remote, f"{page.relative_to(site)} loads {remote}"


def test_readme_says_how_to_build_the_site():
    assert README_COMMAND in (ROOT / "README.md").read_text()
