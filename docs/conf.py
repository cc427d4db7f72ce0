"""Sphinx configuration: the guides (Markdown, through MyST), the API reference (autodoc with
numpydoc, as Nengo's own documentation) and the example notebooks (MyST-NB, executed at every
build, so a notebook that fails fails the build). Build with

    sphinx-build -W -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # pytest_memristor_hil and memristor_hil_nengo_compat

import memristor_hil  # noqa: E402

project = "memristor-hil"
release = version = memristor_hil.__version__
copyright = "memristor-hil developers, MIT licence"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# the API: every public name of the public modules, documented from its numpydoc docstring
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# MyST: Markdown guides with heading anchors (links like file.md#a-heading resolve)
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "dollarmath"]

# notebooks: executed at every build; an error in a cell fails the build
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

html_theme = "alabaster"
html_title = f"memristor-hil {release}"
html_theme_options = {"description": "Spiking-network learning on memristor crossbars"}
