"""The rendered docs site: built once per session, served on 127.0.0.1, opened in headless Chromium.

The build is the very one `bash scripts/docs.sh` runs (that script is called), so
a notebook that errors or any Sphinx warning fails here too. It builds every
language (docs/_build/html/en, docs/_build/html/zh_CN) and each language's site
gets every check: every page is opened once and checked (no request leaves
127.0.0.1, no JavaScript error, every plotly figure drawn, every saved widget
drawn, math typeset), a plotly slider is dragged with the mouse, the search page
is queried (in Chinese on the Chinese site), every internal link of the built
html must resolve, and the language switch must land on the same page in the
other language. Screenshots of every page go to artifacts/screenshots/<lang>/
(gitignored).
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Set, Tuple
from urllib.parse import quote, unquote, urlsplit

import pytest

import browser as br  # tests/browser.py (pytest puts tests/ on sys.path)

ROOT = Path(__file__).resolve().parents[2]
SITE_ROOT = ROOT / "docs" / "_build" / "html"
LANGUAGES = ("en", "zh_CN")
HTML_LANG = {"en": "en", "zh_CN": "zh-CN"}
# a word each site's search must find on the glossary page (Chinese: the glossary's term for router)
SEARCH_TERM = {"en": "router", "zh_CN": "路由器"}
ARTIFACTS = ROOT / "artifacts"
SHOTS_ROOT = ARTIFACTS / "screenshots"
EXTERNAL_WORDS = ("cdn", "unpkg", "jsdelivr", "googleapis", "cloudflare")

pytestmark = pytest.mark.slow  # every test here reads the site this module builds (minutes)


# ---------------------------------------------------------------- build


@pytest.fixture(scope="module")
def built() -> Path:
    """Build the site exactly as `bash scripts/docs.sh` does; fail with the log if it fails."""
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "docs-build.log"
    start = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "docs.sh")], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    log_path.write_text(proc.stdout)
    if proc.returncode != 0:
        pytest.fail(f"docs build failed (exit {proc.returncode}, full log: {log_path}):\n"
                    + proc.stdout[-6000:], pytrace=False)
    print(f"docs build: {time.monotonic() - start:.1f} s")
    return SITE_ROOT


@pytest.fixture(scope="module", params=LANGUAGES)
def lang(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def site(built, lang) -> Path:
    """One language's site: docs/_build/html/<lang>."""
    return built / lang


@pytest.fixture(scope="module")
def shots(lang) -> Path:
    """Where this language's screenshots go."""
    return SHOTS_ROOT / lang


def html_pages(site: Path) -> List[str]:
    """Built pages, relative to the site root ('index.html', 'notebooks/00_x.html', ...)."""
    pages = []
    for path in sorted(site.rglob("*.html")):
        rel = path.relative_to(site).as_posix()
        # slides/: the reveal.js decks, not Sphinx pages (tests/classroom checks them)
        if rel.startswith(("_static/", "_sources/", "_images/", "_downloads/", "slides/")):
            continue
        pages.append(rel)
    return pages


@pytest.fixture(scope="module")
def pages(site) -> List[str]:
    found = html_pages(site)
    for needed in ("index.html", "search.html", "glossary.html", "api.html", "walkthrough_map.html",
                   "benchmarks.html"):
        assert needed in found, f"{needed} was not built"
    return found


# ---------------------------------------------------------------- static checks of the html


class _Refs(HTMLParser):
    """Collects the ids of a page and every URL it refers to, with the tag and attribute."""

    URL_ATTRS = {("a", "href"), ("link", "href"), ("script", "src"), ("img", "src"), ("iframe", "src"),
                 ("source", "src"), ("video", "src"), ("audio", "src"), ("embed", "src"), ("object", "data"),
                 ("form", "action")}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: Set[str] = set()
        self.refs: List[Tuple[str, str, str, Dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        attrs = {k: (v or "") for k, v in attrs}
        for key in ("id", "name"):
            if attrs.get(key) and (key == "id" or tag == "a"):
                self.ids.add(attrs[key])
        for (t, a) in self.URL_ATTRS:
            if tag == t and a in attrs:
                self.refs.append((tag, a, attrs[a], attrs))

    handle_startendtag = handle_starttag


def parse(path: Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _is_external(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme) or url.startswith("//")


def test_no_asset_from_another_host(site, pages):
    """No <script src>, <link href> (other than a plain hyperlink), <img src>, ... points off the site."""
    bad = []
    for page in pages:
        for tag, attr, url, attrs in parse(site / page).refs:
            if tag == "a" or tag == "form":
                continue  # a hyperlink a reader may follow is not a page asset
            lowered = url.lower()
            if (_is_external(url) and not lowered.startswith("data:")) or any(
                    w in lowered for w in EXTERNAL_WORDS):
                bad.append(f"{page}: <{tag} {attr}={url!r}>")
    css_bad = []
    for css in (site / "_static").rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"(?:@import\s+(?:url\()?|url\()\s*['\"]?((?:https?:)?//[^'\")\s]+)", text):
            css_bad.append(f"{css.relative_to(site)}: {m.group(1)}")
    assert not bad, "page assets from another host:\n" + "\n".join(bad)
    assert not css_bad, "stylesheets importing from another host:\n" + "\n".join(css_bad)


def test_every_internal_link_resolves(site, pages):
    """Every relative href/src of every page points to a built file (and an existing anchor in it)."""
    ids: Dict[Path, Set[str]] = {}

    def anchors(path: Path) -> Set[str]:
        if path not in ids:
            ids[path] = parse(path).ids
        return ids[path]

    broken = []
    checked = 0
    for page in pages:
        page_path = site / page
        for tag, attr, url, _ in parse(page_path).refs:
            if not url or _is_external(url):
                continue
            parts = urlsplit(url)
            target = page_path if not parts.path else (page_path.parent / unquote(parts.path))
            if parts.path.endswith("/") or (target.is_dir() and parts.path):
                target = target / "index.html"
            checked += 1
            try:  # the language switch leads to the sibling language's folder: still the site
                target.resolve().relative_to(SITE_ROOT.resolve())
            except ValueError:
                broken.append(f"{page}: {url} leaves the site")
                continue
            if not target.is_file():
                broken.append(f"{page}: <{tag} {attr}={url!r}> -> missing {target.relative_to(site)}")
                continue
            frag = unquote(parts.fragment)
            if frag and target.suffix == ".html" and frag not in anchors(target):
                broken.append(f"{page}: {url} -> no anchor #{frag} in {target.relative_to(site)}")
    assert checked > 50, f"only {checked} internal links found: is the site complete?"
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:60])


def test_chapter_pages_offer_notebook_and_lab(site, pages):
    """Each notebook page says how to run it locally and links a downloadable .ipynb that exists."""
    notebook_pages = [p for p in pages if (site / "_sources" / (p[:-5] + ".ipynb")).is_file()]
    assert notebook_pages, "no notebook page was built"
    for page in notebook_pages:
        text = (site / page).read_text(encoding="utf-8")
        assert "bash scripts/lab.sh" in text, page
        links = [url for tag, _, url, attrs in parse(site / page).refs
                 if tag == "a" and "download" in attrs and url.endswith(".ipynb")]
        assert links, f"{page}: no download link to its .ipynb"
        for url in links:
            nb = (site / page).parent / unquote(url)
            assert nb.is_file(), f"{page}: {url} is missing"
            assert json.loads(nb.read_text(encoding="utf-8"))["cells"], f"{nb} is not a notebook"


def test_vendored_assets_have_license_notes(site):
    vendor = site / "_static" / "vendor"
    readme = (vendor / "README.txt").read_text()
    for folder in vendor.iterdir():
        if folder.is_dir() and folder.name != "fontawesome":
            assert folder.name in readme, f"{folder.name} is served but not described in vendor/README.txt"
    assert any(vendor.glob("plotly.js-*/plotly.min.js"))
    assert any(vendor.glob("jupyter-widgets-html-manager-*/embed.js"))
    assert any(vendor.glob("mathjax-*/es5/tex-mml-chtml.js"))


# ---------------------------------------------------------------- in the browser


@pytest.fixture(scope="module")
def root_url(built):
    """The whole site (every language) served once."""
    with br.serve(built) as url:
        yield url


@pytest.fixture(scope="module")
def base_url(root_url, lang):
    return f"{root_url}{lang}/"


@pytest.fixture(scope="module")
def chrome():
    if not br.chromium_available():
        pytest.fail(f"{br.CHROMIUM} not found: bash scripts/test.sh installs Debian's chromium", pytrace=False)
    with br.chromium() as browser:
        yield browser


STATE_JS = """() => {
  const figs = [...document.querySelectorAll('.js-plotly-plot')];
  const ours = [...document.querySelectorAll('.mxe-plotly')];
  const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
  return {
    plotly: figs.length,
    plotlyDrawn: figs.filter(g => g.querySelector('svg.main-svg')).length,
    ours: ours.length,
    oursDrawn: ours.filter(g => g.querySelector('svg.main-svg')).length,
    sliders: figs.filter(g => g.layout && g.layout.sliders && g.layout.sliders.length).length,
    widgetViews: views.length,
    widgetsDrawn: document.querySelectorAll('.jupyter-widgets.widget-inline-hbox, .jupyter-widgets .widget-inline-hbox, .jupyter-widgets').length,
    math: document.querySelectorAll('.math, span.math, div.math').length,
    mathDrawn: document.querySelectorAll('mjx-container').length,
    plotlyNotes: [...document.querySelectorAll('.mxe-plotly-note')].filter(n => !n.hidden).length,
    cloudButtons: document.querySelectorAll('.mxe-plotly .modebar-btn[data-title^="Share chart"]').length,
  };
}"""

READY_JS = """() => {
  const figs = [...document.querySelectorAll('.js-plotly-plot, .mxe-plotly')];
  if (!figs.every(g => g.querySelector('svg.main-svg'))) return false;
  const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
  if (views.length && !document.querySelector('.jupyter-widgets')) return false;
  const math = document.querySelectorAll('.math');
  if (math.length && !document.querySelector('mjx-container')) return false;
  return true;
}"""


def _shot_name(page: str) -> str:
    return page[:-5].replace("/", "__") + ".png"


@pytest.fixture(scope="module")
def visited(pages, base_url, chrome, shots) -> Dict[str, dict]:
    """Open every page once: its request log, what it drew, and a screenshot."""
    shots.mkdir(parents=True, exist_ok=True)
    results = {}
    for page in pages:
        tab, log = br.open_page(chrome, base_url + page)
        ready = True
        try:
            tab.wait_for_function(READY_JS, timeout=30_000)
        except Exception:  # reported below through the state counts
            ready = False
        try:
            tab.wait_for_load_state("networkidle", timeout=15_000)
        except Exception:
            pass
        state = tab.evaluate(STATE_JS)
        height = tab.evaluate("() => document.documentElement.scrollHeight")
        tab.screenshot(path=str(shots / _shot_name(page)), full_page=True,
                       clip={"x": 0, "y": 0, "width": 1280, "height": min(height, 8000)})
        results[page] = {"log": log, "state": state, "ready": ready}
        tab.context.close()
    return results


@pytest.mark.browser
def test_no_request_leaves_the_machine(visited):
    bad = {page: r["log"].blocked for page, r in visited.items() if r["log"].blocked}
    assert not bad, "requests to another host than 127.0.0.1:\n" + json.dumps(bad, indent=1)
    for page, r in visited.items():
        assert all(urlsplit(u).hostname == "127.0.0.1" or urlsplit(u).scheme in ("data", "blob")
                   for u in r["log"].requests), page


@pytest.mark.browser
def test_no_javascript_errors_or_failed_loads(visited):
    bad = {page: r["log"].page_errors + r["log"].console_errors + r["log"].failed
           for page, r in visited.items()}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, "JavaScript errors / failed loads:\n" + json.dumps(bad, indent=1)


@pytest.mark.browser
def test_every_plotly_figure_is_drawn(visited):
    total = 0
    for page, r in visited.items():
        s = r["state"]
        total += s["ours"]
        assert s["plotly"] == s["plotlyDrawn"], f"{page}: {s['plotlyDrawn']}/{s['plotly']} plotly figures drawn"
        assert s["ours"] == s["oursDrawn"], f"{page}: {s['oursDrawn']}/{s['ours']} viz.show figures drawn"
        assert s["plotlyNotes"] == 0, f"{page}: a figure shows its 'no Plotly' note: plotly.js did not load"
        assert s["cloudButtons"] == 0, f"{page}: a viz.show figure offers plotly's 'Share chart' (a server) button"
    assert total > 0, "no page has a plotly figure shown with mixtral_edu.viz.show"


@pytest.mark.browser
def test_saved_widgets_are_drawn(visited):
    with_widgets = [p for p, r in visited.items() if r["state"]["widgetViews"]]
    assert with_widgets, "no page has a saved ipywidgets view"
    for page in with_widgets:
        assert visited[page]["state"]["widgetsDrawn"] > 0, f"{page}: saved widget views were not drawn"


@pytest.mark.browser
def test_math_is_typeset(visited):
    for page, r in visited.items():
        s = r["state"]
        if s["math"]:
            assert s["mathDrawn"] > 0, f"{page}: {s['math']} math elements but MathJax drew none"


@pytest.mark.browser
def test_plotly_slider_drag_changes_the_figure(visited, base_url, chrome, shots):
    """Drag a slider handle with the mouse; the figure's active step and its shown data change."""
    candidates = [p for p, r in visited.items() if r["state"]["sliders"]]
    assert candidates, "no page has a plotly figure with a slider"
    chapters = [p for p in candidates if p.startswith("notebooks/")]
    page = (chapters or candidates)[0]
    tab, log = br.open_page(chrome, base_url + page)
    try:
        tab.wait_for_function(READY_JS, timeout=30_000)
        handle = tab.evaluate_handle("""() => [...document.querySelectorAll('.js-plotly-plot')]
            .find(g => g.layout && g.layout.sliders && g.layout.sliders.length)""")
        gd = handle.as_element()
        gd.scroll_into_view_if_needed()
        # What a reader sees: every trace's visibility and first values, and the layout
        # (title, annotations, shapes, ranges) apart from the slider itself.
        snapshot = """g => {
            const head = a => (a && a.length !== undefined && typeof a !== 'string')
                ? Array.from(a).slice(0, 20).map(v => (v && v.length !== undefined && typeof v !== 'string')
                    ? Array.from(v).slice(0, 20) : v) : a;
            const layout = Object.assign({}, g.layout, {sliders: null, template: null});
            return JSON.stringify({
                active: g._fullLayout.sliders[0].active,
                steps: g._fullLayout.sliders[0].steps.length,
                data: g.data.map(t => [t.visible, head(t.x), head(t.y), head(t.z), head(t.text)]),
                layout: JSON.stringify(layout)});
        }"""
        before = json.loads(gd.evaluate(snapshot))
        grip = gd.query_selector(".slider-grip-rect").bounding_box()
        rail = gd.query_selector(".slider-rail-rect").bounding_box()
        assert grip and rail, "slider not drawn"
        x0, y0 = grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2
        at_end = before["active"] >= before["steps"] - 1
        x1 = rail["x"] + 2 if at_end else rail["x"] + rail["width"] - 2
        tab.mouse.move(x0, y0)
        tab.mouse.down()
        tab.mouse.move(x1, y0, steps=12)
        tab.mouse.up()
        tab.wait_for_function(
            "([g, a]) => g._fullLayout.sliders[0].active !== a", arg=[gd, before["active"]], timeout=10_000)
        tab.wait_for_timeout(300)  # let an animate step finish drawing
        after = json.loads(gd.evaluate(snapshot))
        shots.mkdir(parents=True, exist_ok=True)
        gd.screenshot(path=str(shots / ("slider_dragged__" + _shot_name(page))))
    finally:
        tab.context.close()
    assert after["active"] != before["active"], (before, after)
    assert after["data"] != before["data"] or after["layout"] != before["layout"], \
        f"slider moved ({before['active']} -> {after['active']}) but the figure did not change"
    assert not log.problems(), log.problems()


@pytest.mark.browser
def test_search_finds_a_glossary_term(base_url, chrome, lang, shots):
    """The search page finds the glossary's word for router (a Chinese word on the Chinese site:
    the index is split into words by jieba, with the glossary's terms as its own words)."""
    term = SEARCH_TERM[lang]
    tab, log = br.open_page(chrome, base_url + "search.html?q=" + quote(term))
    try:
        tab.wait_for_selector("#search-results ul.search li", timeout=30_000)
        # Sphinx adds hits one by one and writes the summary when it is done: read them after that
        tab.wait_for_function("() => { const p = document.querySelector('#search-results p.search-summary');"
                              " return p && /found|did not match|搜索完成|没有匹配/i.test(p.textContent); }",
                              timeout=30_000)
        hits = tab.eval_on_selector_all("#search-results ul.search li a",
                                        "as => as.map(a => a.getAttribute('href'))")
        br.screenshot(tab, shots / f"search__{lang}.png", full_page=False)
    finally:
        tab.context.close()
    assert hits, f"search for {term!r} found nothing"
    assert any(h.startswith("glossary.html") for h in hits), hits
    assert not log.problems(), log.problems()


def test_pages_declare_their_language(site, pages, lang):
    for page in pages:
        head = (site / page).read_text(encoding="utf-8")[:400]
        assert f'<html lang="{HTML_LANG[lang]}"' in head, page


@pytest.mark.browser
def test_language_switch_lands_on_the_same_page(pages, base_url, root_url, chrome, lang, shots):
    """Every page links the same page in the other language; clicking it there and back works."""
    other = next(code for code in LANGUAGES if code != lang)
    for page in pages:
        links = [url for tag, _, url, attrs in parse(SITE_ROOT / lang / page).refs
                 if tag == "a" and "mxe-language-switch" in attrs.get("class", "")]
        assert links == ["../" * page.count("/") + f"../{other}/{page}"], (page, links)
    page = "notebooks/00_orientation.html"
    tab, log = br.open_page(chrome, base_url + page)
    try:
        tab.click("a.mxe-language-switch")
        tab.wait_for_load_state("load")
        assert tab.url == f"{root_url}{other}/{page}", tab.url
        assert tab.evaluate("document.documentElement.lang") == HTML_LANG[other]
        br.screenshot(tab, shots / f"language_switch__to_{other}.png", full_page=False)
        tab.click("a.mxe-language-switch")
        tab.wait_for_load_state("load")
        assert tab.url == f"{root_url}{lang}/{page}", tab.url
    finally:
        tab.context.close()
    assert not log.problems(), log.problems()


def test_the_site_root_leads_to_each_language(built):
    index = (built / "index.html").read_text(encoding="utf-8")
    assert 'url=en/index.html' in index
    for code in LANGUAGES:
        assert f'href="{code}/index.html"' in index and (built / code / "index.html").is_file()
