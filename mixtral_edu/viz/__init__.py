"""Figures and views for the walkthrough.

:func:`show` displays a plotly figure so it is drawn both in JupyterLab and on
the docs site; :func:`show_static_twin` does the same for the static stand-in
of a live, widget-backed view.
"""
from .display import LIVE_NOTE, show, show_static_twin
from .source import side_by_side, source_of

__all__ = ["LIVE_NOTE", "show", "show_static_twin", "side_by_side", "source_of"]
