"""Sphinx configuration of the mixtral-edu docs site (build: bash scripts/docs.sh).

The chapters are the notebooks in ../notebooks (linked in as docs/notebooks by
the local extension _ext/mixtral_site.py), executed by myst-nb at build time and
cached. Every script and font a page needs is served from _static: nothing is
loaded from another host.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Chapter 12 (build it yourself) is shown finished: with this variable set, its exercise cells plug in the
# reference pieces of notebooks/solutions/12_build_it_yourself.py instead of the stubs (the cells the reader
# sees stay stubs; see mixtral_edu.build.chapter). The kernels myst-nb starts inherit it.
os.environ.setdefault("MIXTRAL_EDU_SOLUTIONS", str(DOCS.parent / "notebooks" / "solutions"))
# The pages have no kernel: each live (widget) view gets its static twin below it (mixtral_edu.viz.show_static_twin
# draws only with this variable set; in JupyterLab the live view alone is shown).
os.environ.setdefault("MIXTRAL_EDU_STATIC_PAGE", "1")

from mixtral_site import static_paths  # noqa: E402

project = "mixtral-edu"
author = "the mixtral-edu authors"
copyright = "the mixtral-edu authors, Apache-2.0"
release = version = "0.1.0"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "mixtral_site",
    "plain_docstrings",
    "classroom",
]

root_doc = "index"

# ---------------------------------------------------------------- languages
# One English source; translations in docs/locale/<lang>/LC_MESSAGES/*.po (gettext, one
# catalog per page and per chapter). scripts/docs.sh builds the site once per language
# (-D language=zh_CN) into docs/_build/html/<lang>/; scripts/i18n.sh updates the catalogs.
language = "en"
locale_dirs = ["locale/"]
gettext_compact = False        # docs/locale/zh_CN/LC_MESSAGES/notebooks/00_orientation.po, ...
gettext_uuid = False
gettext_location = True        # the notebook generator maps an entry back to its cell by location
mxe_languages = {"en": "English", "zh_CN": "中文"}
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "_generated",
    "**/.ipynb_checkpoints",
    # Only the notebooks themselves are chapters; other files next to them are not pages.
    "notebooks/**/*.md",
    "notebooks/**/*.rst",
    "notebooks/*/**",
    "Thumbs.db",
    ".DS_Store",
]

# Internal references must resolve (-W turns a miss into a failure). Without
# network there is no intersphinx, so references to other libraries' objects
# (torch.Tensor, ...) cannot resolve: only mixtral_edu targets are checked.
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(?!mixtral_edu\b).*")]

# ---------------------------------------------------------------- landing page map
# Which chapter each box of the call-chain diagram links to. A value is either a
# chapter docname ("notebooks/04_causal_lm") or keywords: then the first chapter
# whose topic (file name after "NN_") contains one of them is linked. A box with
# no chapter is drawn unlinked ("chapter to come"), never as a broken link.
mxe_call_chain = {
    "generate": ["generate", "generation"],
    "prepare_inputs_for_generation": ["prepare_inputs", "prepare"],
    "causal_lm": ["causal_lm", "causallm", "for_causal"],
    "model": ["backbone", "mixtralmodel", "mixtral_model", "model_forward"],
    "decoder_layer": ["decoder", "layer"],
    "self_attn": ["attention", "attn", "rope", "rotary"],
    "block_sparse_moe": ["moe", "router", "routing", "expert"],
    "norm": "notebooks/04_model_forward",  # the final norm is taught with MixtralModel.forward
    "lm_head": ["lm_head", "head"],
    "outputs": "notebooks/03_causal_lm_forward",  # what forward returns: logits, past_key_values, losses
    "next_token": ["next_token", "sampling", "decoding"],
}

# API reference: modules in this order when they exist (others found in the
# package are appended by name).
mxe_api_modules = ["modeling", "fast", "observe", "full_size", "tiny", "viz", "exercises"]

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# ---------------------------------------------------------------- MyST / notebooks
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

nb_execution_mode = "cache"
# One cache for every language: it is keyed on the code cells, which translation never touches,
# so the second language's build executes nothing.
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_timeout = 120
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
# A plotly figure shown with mixtral_edu.viz.show carries plotly JSON and html:
# the html (which draws with the site's own plotly.js) is what a page shows.
nb_mime_priority_overrides = [
    ("html", "application/vnd.plotly.v1+json", None),
]
# Saved ipywidgets state is drawn by the standalone html-manager bundle, served locally.
nb_ipywidgets_js = {static_paths()["widgets"]: {}}

# ---------------------------------------------------------------- math
# MathJax 3 from _static (only pages with math load it).
mathjax_path = static_paths()["mathjax"]
mathjax3_config = {"tex": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]}}

# ---------------------------------------------------------------- HTML
html_theme = "sphinx_book_theme"
html_title = "mixtral-edu"
# mixtral_edu/viz/static holds the script that names widget controls by their visible labels; the
# package shows it in JupyterLab too (viz.projector), so it has one copy, there.
html_static_path = ["_static", "../mixtral_edu/viz/static"]
html_css_files = ["mixtral_edu.css"]
html_js_files = ["mxe-a11y.js"]
html_copy_source = True  # the .ipynb of each chapter is offered for download from _sources
html_show_sourcelink = False
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "use_download_button": True,
    "use_fullscreen_button": True,
    "use_repository_button": False,
    "use_source_button": False,
    "use_issues_button": False,
    "use_edit_page_button": False,
    "navigation_with_keys": False,
    "show_toc_level": 2,
    # pydata-sphinx-theme 0.20 adds a top bar holding only a second search field;
    # the book theme's sidebar already has one.
    "navbar_persistent": [],
    # the other language's version of the same page, on every page
    "article_header_end": ["mxe-language-switch.html", "article-header-buttons.html"],
}
html_last_updated_fmt = None
# Light by default (figures have white backgrounds); the reader can switch.
html_context = {"default_mode": "light"}
