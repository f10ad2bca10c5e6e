"""Figures and views for the walkthrough.

:func:`show` displays a plotly figure so it is drawn both in JupyterLab and on
the docs site; :func:`show_static_twin` does the same for the static stand-in
of a live, widget-backed view.
"""
from .display import LIVE_NOTE, alt_text, show, show_static_twin
from .exports import export, export_session
from .projector_mode import projector
from .source import side_by_side, source_of
from .tables import Table, table

__all__ = ["LIVE_NOTE", "alt_text", "export", "export_session", "projector", "show", "show_static_twin",
           "side_by_side", "source_of", "Table", "table"]

# The views: a static plotly figure (works with no kernel) and a live JupyterLab widget each.
from .attention import attention_explorer, attention_figure  # noqa: E402
from .balance import balance_explorer, balance_figure, balance_stats  # noqa: E402
from .cache import cache_explorer, cache_figure  # noqa: E402
from .callchain import callchain_figure, callchain_html  # noqa: E402
from .masks import mask_explorer, mask_figure  # noqa: E402
from .routing import routing_explorer, routing_figure  # noqa: E402
from .sampling import sampling_explorer, sampling_figure  # noqa: E402

__all__ += [
    "attention_explorer", "attention_figure", "balance_explorer", "balance_figure", "balance_stats",
    "cache_explorer", "cache_figure", "callchain_figure", "callchain_html", "mask_explorer", "mask_figure",
    "routing_explorer", "routing_figure", "sampling_explorer", "sampling_figure",
]
