"""Sphinx configuration: Markdown pages (MyST), API reference from docstrings."""

from __future__ import annotations

import sys
from pathlib import Path

# Document the source tree this file sits in, whatever is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

project = "trioflow"
author = "the trioflow developers"
copyright = "2026, the trioflow developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "plots/*.md"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
default_role = "py:obj"

# The docs build offline (CI reaches no documentation hosts), so there is no
# intersphinx and no nitpicky mode: references to trio and the standard
# library render as plain code. Every other warning fails the build (-W).
suppress_warnings = ["myst.xref_missing"]

html_theme = "furo"
html_title = "trioflow"
