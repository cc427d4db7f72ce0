"""Sphinx configuration: the guides (Markdown, through MyST), the API reference (autodoc with
numpydoc, as Nengo's own documentation) and the example notebooks (MyST-NB, executed at every
build, so a notebook that fails fails the build). Build with

    sphinx-build -W -b html docs docs/_build/html

Nitpicky mode is on (below), so a cross-reference that resolves to nothing is a warning, and
``-W`` makes it an error: a renamed function breaks the build, not a link.
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

# every :class:/:func:/:mod: reference must resolve (with -W a broken one fails the build).
# Our own names resolve against the API page; a private name is written as a ``literal``.
nitpicky = True
# Third-party and standard-library targets only: their inventories would need the network at
# build time (intersphinx), which CI does not have. Never a pattern for memristor_hil itself.
nitpick_ignore = [
    ("py:class", "abc.ABC"),  # Crossbar's base (show-inheritance)
    ("py:class", "nengo.PES"),
    ("py:class", "nengo.learning_rules.LearningRuleType"),  # mPES's base (show-inheritance)
    ("py:func", "scipy.optimize.least_squares"),
]


def public_bases(app, name, obj, options, bases):
    """Show a class's public ancestors: a base from a private module (``drivers._sequenced``)
    is replaced by its own bases, so show-inheritance never names an undocumented class."""
    i = 0
    while i < len(bases):
        base = bases[i]
        if any(part.startswith("_") for part in base.__module__.split(".")) and base.__bases__:
            bases[i : i + 1] = [b for b in base.__bases__ if b not in bases]
        else:
            i += 1


def setup(app):
    app.connect("autodoc-process-bases", public_bases)


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
