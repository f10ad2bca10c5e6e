"""The slide decks: built offline with the site, opened from 127.0.0.1 with every other host blocked.

Each deck: no script or stylesheet from another host, 0 external requests, 0 JavaScript errors, every
slide visited with the keyboard; in the deck of chapter 01, a plotly figure's slider changes the figure.
Slide counts go to artifacts/decks.json; screenshots to artifacts/screenshots/classroom/.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import browser as br
import decks as dk
import route as rt

from classroom_site import ARTIFACTS, SHOTS

pytestmark = pytest.mark.browser

LECTURE = [c["notebook"] for c in rt.lecture_chapters(rt.load_route())]


def test_decks_load_nothing_from_another_host(site):
    for name in LECTURE + ["index"]:
        page = (site / "slides" / f"{name}.html").read_text(encoding="utf-8")
        refs = re.findall(r"<(?:script|link)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", page)
        for url in refs:
            assert not re.match(r"^(https?:)?//", url), f"{name}: {url}"
            assert (site / "slides" / url).is_file(), f"{name}: {url} is missing"
        assert not re.search(r"unpkg|cdn\.|jsdelivr|cdnjs|googleapis", " ".join(refs)), name


def test_page_through_every_deck(site, chrome):
    counts = {}
    with br.serve(site) as base:
        for name in LECTURE:
            tab, log = br.open_page(chrome, base + f"slides/{name}.html")
            try:
                tab.wait_for_function("() => document.body.getAttribute('data-mxe-ready') === '1'", timeout=30_000)
                total = tab.evaluate("() => Reveal.getTotalSlides()")
                seen = {json.dumps(tab.evaluate("() => Reveal.getIndices()"))}
                for _ in range(total + 5):
                    if tab.evaluate("() => Reveal.isLastSlide()"):
                        break
                    tab.keyboard.press("Space")
                    tab.wait_for_timeout(40)
                    seen.add(json.dumps(tab.evaluate("() => Reveal.getIndices()")))
                assert tab.evaluate("() => Reveal.isLastSlide()"), name
                assert len(seen) == total, (name, len(seen), total)
                html_count = dk.count_slides((site / "slides" / f"{name}.html").read_text(encoding="utf-8"))
                assert html_count == total, (name, html_count, total)
                counts[name] = total
                assert not log.problems(), (name, log.problems())
                assert all(u.startswith(base) or u.startswith(("data:", "blob:")) for u in log.requests), name
            finally:
                tab.context.close()
    (ARTIFACTS / "decks.json").write_text(json.dumps(counts, indent=1))
    print("slides per deck:", counts, "total", sum(counts.values()))


def test_a_plotly_figure_in_a_deck_reacts_to_its_slider(site, chrome):
    with br.serve(site) as base:
        tab, log = br.open_page(chrome, base + "slides/01_generation_loop.html")
        try:
            tab.wait_for_function("() => document.body.getAttribute('data-mxe-ready') === '1'", timeout=30_000)
            # go to the first slide whose figure has a slider, the way a teacher does: with the keyboard
            for _ in range(60):
                if tab.evaluate("() => [...Reveal.getCurrentSlide().querySelectorAll('.js-plotly-plot')]"
                                ".some(g => g.layout && g.layout.sliders && g.layout.sliders.length)"):
                    break
                tab.keyboard.press("Space")
                tab.wait_for_timeout(60)
            gd = tab.evaluate_handle("() => [...Reveal.getCurrentSlide().querySelectorAll('.js-plotly-plot')]"
                                     ".find(g => g.layout && g.layout.sliders && g.layout.sliders.length)").as_element()
            assert gd is not None, "no slide of the deck holds a figure with a slider"
            tab.wait_for_timeout(500)
            state = "g => JSON.stringify([g._fullLayout.sliders[0].active, g.layout.title.text, g.layout.shapes])"
            before = json.loads(gd.evaluate(state))
            grip = gd.query_selector(".slider-grip-rect").bounding_box()
            rail = gd.query_selector(".slider-rail-rect").bounding_box()
            x0, y0 = grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2
            tab.mouse.move(x0, y0)
            tab.mouse.down()
            tab.mouse.move(rail["x"] + 3, y0, steps=10)            # drag to the first step
            tab.mouse.up()
            tab.wait_for_function("([g, a]) => g._fullLayout.sliders[0].active !== a", arg=[gd, before[0]],
                                  timeout=10_000)
            after = json.loads(gd.evaluate(state))
            SHOTS.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(SHOTS / "deck_01_slider_moved.png"))
        finally:
            tab.context.close()
    assert after[0] != before[0] and (after[1] != before[1] or after[2] != before[2]), (before[:2], after[:2])
    assert not log.problems(), log.problems()
