"""mixtral_edu.viz.display: how a figure reaches JupyterLab and the docs site (no browser here)."""
from __future__ import annotations


def _figure():
    import plotly.graph_objects as go

    fig = go.Figure([go.Scatter(x=[0, 1, 2], y=[1, 0, 1], name="a")])
    fig.update_layout(title="t", sliders=[dict(steps=[dict(method="restyle", args=["visible", [True]])])])
    return fig


def test_show_sends_plotly_json_and_offline_html():
    from mixtral_edu.viz import display

    bundle = display.mime_bundle(_figure())
    assert set(bundle) == {display.PLOTLY_MIME, "text/html", "text/plain"}
    assert bundle[display.PLOTLY_MIME]["layout"]["sliders"]
    page = bundle["text/html"]
    assert "Plotly.newPlot" in page and "window.Plotly" in page
    assert "http" not in page.lower() and "<script src" not in page.lower(), "the html must load nothing"
    assert "</script>" not in page.split("<script", 1)[1].split("</script>", 1)[1]  # one script, not broken


def test_show_displays_one_bundle(monkeypatch):
    import IPython.display

    from mixtral_edu import viz
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append((obj, raw)))
    viz.show(_figure())
    assert len(shown) == 1 and shown[0][1] is True
    assert "application/vnd.plotly.v1+json" in shown[0][0]


def test_static_twin_shows_the_live_note(monkeypatch):
    import IPython.display

    from mixtral_edu import viz
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    monkeypatch.setenv("MIXTRAL_EDU_STATIC_PAGE", "1")       # a page without a kernel (docs/conf.py sets it)
    viz.show_static_twin(_figure(), note="Drag to change k")
    assert len(shown) == 2
    note = shown[0]["text/plain"]
    assert note.startswith("Drag to change k.") and "Live version runs in JupyterLab (bash scripts/lab.sh)" in note
    assert "text/html" in shown[1]


def test_static_twin_is_not_shown_beside_a_live_view(monkeypatch):
    """In JupyterLab (no MIXTRAL_EDU_STATIC_PAGE) the live view is the figure: no second, static copy below it."""
    import IPython.display

    from mixtral_edu import viz
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    monkeypatch.delenv("MIXTRAL_EDU_STATIC_PAGE", raising=False)
    viz.show_static_twin(_figure(), note="Drag to change k")
    assert shown == []


def test_docs_build_sets_the_static_page_switch():
    """docs/conf.py sets the variable before myst-nb starts its kernels (which inherit the environment)."""
    from pathlib import Path
    conf = (Path(__file__).resolve().parents[2] / "docs" / "conf.py").read_text()
    assert 'os.environ.setdefault("MIXTRAL_EDU_STATIC_PAGE", "1")' in conf


def test_figure_html_escapes_script_breakers():
    import plotly.graph_objects as go

    from mixtral_edu.viz import display

    page = display.figure_html(go.Figure(layout=dict(title="</script><b>x")))
    assert page.count("</script>") == 1
