"""Live views for JupyterLab: ipywidgets controls above a figure that redraws.

A live view is controls (ipywidgets) above an ``ipywidgets.Output`` that holds a
plotly figure as a mime bundle (the same bundle :func:`mixtral_edu.viz.show`
displays). Moving a control re-runs the model (or the package's own function)
and redraws. Why an Output and not ``plotly.graph_objects.FigureWidget``:
FigureWidget needs the ``anywidget`` package since plotly 6, which this project
does not install; the Output route needs only ipywidgets and the plotly
JupyterLab renderer that ships with plotly, and works offline. What a view feeds
the model and reads back (prompts, traced runs, steps) is in :mod:`.runs`.
"""
from __future__ import annotations

import html
from typing import Any, Callable, Dict, Optional, Sequence

from ..i18n import _


# -- live views -----------------------------------------------------------------------------------

def _plotly_outputs(fig) -> tuple:
    from .display import mime_bundle
    return ({"output_type": "display_data", "data": mime_bundle(fig), "metadata": {}},)


def _error_outputs(message: str) -> tuple:
    text = _("Could not redraw: {message}").format(message=message)
    return ({"output_type": "display_data", "metadata": {},
             "data": {"text/html": f'<pre class="mxe-live-error">{html.escape(text)}</pre>', "text/plain": text}},)


def make_live_view(controls: Dict[str, Any], render: Callable[..., Any], description: str = ""):
    """A LiveView (an ipywidgets.VBox): `controls` above the figure `render(**values)` returns."""
    import ipywidgets as widgets

    class LiveView(widgets.VBox):
        """Controls + the figure they produce. Attributes: controls (name -> widget), figure
        (the plotly Figure on screen), output (the ipywidgets.Output holding it), error (last
        redraw's error text or None), redraws (how many times it drew)."""

        def __init__(self):
            self.controls = dict(controls)
            self.output = widgets.Output(layout=widgets.Layout(min_height="300px"))
            self.figure = None
            self.error: Optional[str] = None
            self.redraws = 0
            self._render = render
            header = [widgets.HTML(f"<b>{html.escape(description)}</b>")] if description else []
            boxes = [widgets.HBox(list(self.controls.values()), layout=widgets.Layout(flex_flow="row wrap"))]
            super().__init__(header + boxes + [self.output])
            self.add_class("mxe-live-view")
            for control in self.controls.values():
                if hasattr(control, "value"):
                    control.observe(self._changed, names="value")
            self.redraw()

        def values(self) -> Dict[str, Any]:
            return {k: c.value for k, c in self.controls.items() if hasattr(c, "value")}

        def _changed(self, change) -> None:
            self.redraw()

        def redraw(self) -> None:
            """Re-run `render` with the controls' values and show the new figure."""
            try:
                fig = self._render(**self.values())
            except Exception as e:  # show the problem where the learner looks, keep the last figure
                self.error = f"{type(e).__name__}: {e}"
                self.output.outputs = _error_outputs(self.error)
                return
            self.error, self.figure = None, fig
            self.redraws += 1
            self.output.outputs = _plotly_outputs(fig)

    return LiveView()


def slider(description: str, value: int, lo: int, hi: int, step: int = 1, width: str = "460px"):
    """An IntSlider that redraws on release (continuous_update=False): each redraw runs the model."""
    import ipywidgets as widgets
    return widgets.IntSlider(value=value, min=lo, max=max(hi, lo), step=step, description=description,
                             continuous_update=False, style={"description_width": "initial"},
                             layout=widgets.Layout(width=width))


def float_slider(description: str, value: float, lo: float, hi: float, step: float, width: str = "400px"):
    import ipywidgets as widgets
    return widgets.FloatSlider(value=value, min=lo, max=hi, step=step, description=description,
                               continuous_update=False, style={"description_width": "initial"},
                               layout=widgets.Layout(width=width))


def dropdown(description: str, options, value=None, width: str = "260px"):
    import ipywidgets as widgets
    options = list(options)
    return widgets.Dropdown(options=options, value=options[0][1] if value is None and isinstance(options[0], tuple)
                            else (options[0] if value is None else value), description=description,
                            style={"description_width": "initial"}, layout=widgets.Layout(width=width))


def text_box(description: str, value: str, width: str = "420px"):
    import ipywidgets as widgets
    return widgets.Text(value=value, description=description, continuous_update=False,
                        style={"description_width": "initial"}, layout=widgets.Layout(width=width))


def visibility_slider(labels: Sequence[str], groups: Sequence[Sequence[int]], n_traces: int, prefix: str,
                      layouts: Optional[Sequence[dict]] = None, active: int = 0, y: float = -0.08) -> dict:
    """A plotly slider for static figures: position i shows the traces in groups[i] (others hidden)
    and applies layouts[i] (e.g. a new title). Works with no kernel: plotly.js does it all."""
    steps = []
    for i, label in enumerate(labels):
        visible = [False] * n_traces
        for j in groups[i]:
            visible[j] = True
        args = [{"visible": visible}]
        if layouts is not None:
            args.append(layouts[i])
        steps.append(dict(method="update", label=str(label), args=args))
    return dict(active=active, steps=steps, currentvalue=dict(prefix=prefix, font=dict(size=13)),
                pad=dict(t=10, b=10), y=y, yanchor="top", len=0.9, x=0.05)
