"""Sphinx configuration for bgio's manual."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from bgio.version import __version__  # noqa: E402

project = "bgio"
author = "the bgio developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
intersphinx_mapping = {}
exclude_patterns = ["_build"]
html_theme = "alabaster"
