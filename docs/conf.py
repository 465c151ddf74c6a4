"""Sphinx configuration of dynopt's documentation site.

Build it (offline, warnings as errors) from the repository root::

    .venv/bin/sphinx-build -W -b html docs docs/_build/html

Every build first runs ``docs/generate.py``, which writes the pages that come from the code into
``docs/generated/`` (one page per registered optimizer, the zoo and scheme tables, the gallery, the
notebooks). The hand-written pages are ``index.md`` and ``api/*.md``.
"""

from __future__ import annotations

import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))
sys.path.insert(0, str(DOCS))

import generate  # noqa: E402

generate.write_pages()

project = "dynopt"
author = "the dynopt authors"
copyright = "dynopt authors, Apache-2.0"

extensions = [
    "myst_nb",  # Markdown pages and the notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the Google-style sections (Args:, Attributes:) of the docstrings
]

exclude_patterns = ["_build", "gallery", "Thumbs.db", ".DS_Store", "**/.ipynb_checkpoints"]

# The formulas are Unicode text (θ', ∇L, …): keep the primes and quotes as written.
smartquotes = False

# Notebooks are committed without outputs and shown as they are: never executed by the build.
nb_execution_mode = "off"
nb_merge_streams = True

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = "dynopt"
html_static_path = ["_static"]
html_css_files = ["dynopt.css"]
html_show_sourcelink = False
html_copy_source = False
