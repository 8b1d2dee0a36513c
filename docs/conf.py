"""Sphinx configuration for bgio's manual."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from bgio.version import __version__

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
# The pages' examples are `.. doctest::` blocks; the docstrings' own examples
# (pulled in by autodoc) are run by the test suite, in their modules.
doctest_test_doctest_blocks = ""
html_theme = "furo"
html_title = f"bgio {release}"
html_static_path = ["_static"]
