"""Live views for JupyterLab, and the small helpers every view shares to read a trace.

A live view is controls (ipywidgets) above an ``ipywidgets.Output`` that holds a
plotly figure as a mime bundle (the same bundle :func:`mixtral_edu.viz.show`
displays). Moving a control re-runs the model (or the package's own function)
and redraws. Why an Output and not ``plotly.graph_objects.FigureWidget``:
FigureWidget needs the ``anywidget`` package since plotly 6, which this project
does not install; the Output route needs only ipywidgets and the plotly
JupyterLab renderer that ships with plotly, and works offline.
"""
from __future__ import annotations

import contextlib
import html
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from ..i18n import _
from ..observe.tracer import StepRecord, Trace

Source = Union[Trace, StepRecord]


# -- reading traces -------------------------------------------------------------------------------

def pick_step(source: Source, step: int = 0) -> StepRecord:
    """The StepRecord to draw: `source` itself, or `source.steps[step]` of a Trace."""
    if isinstance(source, StepRecord):
        return source
    if isinstance(source, Trace):
        if not source.steps:
            raise ValueError("The trace recorded no step: run the model (or generate) inside `with trace(model):`.")
        if not -len(source.steps) <= step < len(source.steps):
            raise IndexError(f"step {step} does not exist: the trace holds {len(source.steps)} step(s).")
        return source.steps[step]
    raise TypeError(f"Expected a mixtral_edu Trace or StepRecord, got {type(source).__name__}.")


def sequence_ids(trace: Trace, step: int) -> Optional[torch.Tensor]:
    """(B, S) ids of every key at `step`: the slices fed at steps 0..step, side by side.

    Each generation step feeds only the tokens the cache lacks, so these slices
    laid end to end are the sequence the cache holds plus this step's new ones.
    None if a step fed embeddings instead of ids.
    """
    parts = [s.input_ids for s in trace.steps[: step + 1]]
    if any(p is None for p in parts):
        return None
    if trace.steps[0].past_length:
        return None  # the first traced step already had a cache: its keys' ids are unknown
    return torch.cat(parts, dim=1)


def config_of(source: Source, config=None):
    """The model config: given, or the traced model's."""
    if config is not None:
        return config
    if isinstance(source, Trace):
        return source.model.config
    raise ValueError("Pass config=model.config when drawing a StepRecord (it does not know its model).")


def encode(tokenizer, text: str) -> List[int]:
    """Token ids of `text` for a transformers tokenizer or a raw `tokenizers.Tokenizer`."""
    out = tokenizer.encode(text)
    return list(out.ids) if hasattr(out, "ids") else list(out)


def encode_batch(tokenizer, texts: Sequence[str], pad_id: int = 3) -> Tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) (B, T) for several texts, left-padded (as generation needs)."""
    if callable(tokenizer) and hasattr(tokenizer, "padding_side"):  # a transformers tokenizer
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            batch = tokenizer(list(texts), padding=True, return_tensors="pt")
        finally:
            tokenizer.padding_side = side
        return batch["input_ids"], batch["attention_mask"]
    rows = [encode(tokenizer, t) for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids, mask


def pad_id_of(model, tokenizer=None) -> int:
    for candidate in (getattr(tokenizer, "pad_token_id", None), model.config.pad_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def left_pad(ids: Sequence[int], pads: Sequence[int], pad_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, len(ids)): row b is pads[b] pads, then ids[pads[b]:].

    So every row ends with the same tokens and the rows with pads are shorter
    prompts, as in a left-padded batch.
    """
    n = len(ids)
    if any(not 0 <= p < n for p in pads):
        raise ValueError(f"each row needs at least one real token: pads must lie in [0, {n - 1}], got {list(pads)}.")
    rows = [[pad_id] * p + list(ids[p:]) for p in pads]
    masks = [[0] * p + [1] * (n - p) for p in pads]
    return torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.long)


@contextlib.contextmanager
def config_values(model, **fields: Any) -> Iterator[None]:
    """Set config fields (e.g. sliding_window) for the block; put the old values back after."""
    config = model.config
    saved = {k: getattr(config, k) for k in fields}
    try:
        for k, v in fields.items():
            setattr(config, k, v)
        config.validate()
        yield
    finally:
        for k, v in saved.items():
            setattr(config, k, v)


def traced_generate(model, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                    **generate_kwargs: Any) -> Tuple[Trace, Any]:
    """Run model.generate inside a trace; returns (trace, generate's output)."""
    from ..observe.tracer import trace
    with torch.no_grad(), trace(model) as tr:
        out = model.generate(input_ids, attention_mask=attention_mask, **generate_kwargs)
    return tr, out


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
