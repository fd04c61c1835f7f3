"""Sphinx configuration: Markdown pages (MyST), API reference from docstrings."""

from __future__ import annotations

import sys
from pathlib import Path

# Document the source tree this file sits in, whatever is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Import trio before autodoc is loaded: trio changes its imports when it sees
# sphinx.ext.autodoc in sys.modules, which under Sphinx 7 and 8 ends in a
# circular import when autodoc is the first to import it.
import trio  # noqa: F401  # pyright: ignore[reportUnusedImport]

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
# A class's entry lists what a user calls on it, wherever it is defined: the
# methods CapacityLimiter gets from its private mixins (acquire, release,
# hold, ...) are its own as far as a user can tell. Members of these
# builtin/typing bases are not.
autodoc_default_options = {
    "members": True,
    "undoc-members": False,
    "inherited-members": "object,tuple,Protocol,Generic",
    # how a class is used, not only what it is called: async with, async for, [name]
    "special-members": "__aenter__,__aexit__,__aiter__,__anext__,__enter__,__exit__,__getitem__",
}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
default_role = "py:obj"

# The docs build offline (CI reaches no documentation hosts), so there is no
# intersphinx: references to trio, outcome, OpenTelemetry and the standard
# library render as plain code. References to trioflow's own public names
# must resolve (nitpicky, with every other target ignored), and every warning
# fails the build (-W).
nitpicky = True
nitpick_ignore_regex = [
    # anything that is not a public trioflow name
    (r"py:.*", r"(?!trioflow\.)(?!trioflow$).*"),
    (r"py:.*", r"trioflow\.(.*\.)?_.*"),
]

html_theme = "furo"
html_title = "trioflow"
