"""The docs site as a classroom uses it: the teacher's guide, the printable handout, and accessibility.

axe-core (npm, pinned, vendored, see a11y.py) runs over every page of the built site, the slide decks
included: no serious or critical violation. The counts per page go to artifacts/axe_after.json.
"""
from __future__ import annotations

import json
import re

import pytest

import a11y
import browser as br
import route as rt

from classroom_site import ARTIFACTS, SHOTS

pytestmark = pytest.mark.browser

READY = ("() => [...document.querySelectorAll('.js-plotly-plot, .mxe-plotly')].every(g => g.querySelector('svg.main-svg'))"
         " && (!document.querySelector('script[type=\"application/vnd.jupyter.widget-view+json\"]')"
         "     || document.querySelector('.jupyter-widgets'))")


def test_guide_has_the_routes_and_links_every_deck(site):
    page = (site / "teaching" / "guide.html").read_text(encoding="utf-8")
    totals = rt.totals(rt.load_route())
    bold_totals = re.findall(r"<strong>(\d+)</strong>", page)
    assert str(totals["lecture"]) in bold_totals and str(totals["short"]) in bold_totals, bold_totals
    for i in (1, 2, 3):
        assert f"Lesson {i} " in page
    assert 'href="../slides/index.html"' in page
    for chapter in rt.lecture_chapters(rt.load_route()):
        name = chapter["notebook"]
        assert (site / "slides" / f"{name}.html").is_file(), name
        chapter_page = (site / "notebooks" / f"{name}.html").read_text(encoding="utf-8")
        assert f'href="../slides/{name}.html"' in chapter_page, f"{name}: no link to its deck"


def test_handout_prints_on_one_page(site, chrome):
    with br.serve(site) as base:
        tab, log = br.open_page(chrome, base + "teaching/handout.html")
        try:
            pdf = tab.pdf(prefer_css_page_size=True, print_background=True)
            tab.emulate_media(media="print")
            tab.set_viewport_size({"width": 1123, "height": 794})          # A4 landscape at 96 dpi
            SHOTS.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(SHOTS / "handout_print.png"), full_page=True)
            height = tab.evaluate("() => document.documentElement.scrollHeight")
        finally:
            tab.context.close()
    (ARTIFACTS / "handout.pdf").write_bytes(pdf)
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert pages == 1, f"the handout prints on {pages} pages"
    assert height <= 794 + 16, f"printed, the handout is {height} px tall: more than one A4 landscape page"
    assert not log.problems(), log.problems()


def test_no_serious_or_critical_accessibility_violation(site, chrome):
    report = a11y.audit(site, ready_js=READY, chrome=chrome)
    (ARTIFACTS / "axe_after.json").write_text(json.dumps(report, indent=1))
    severe = {}
    for rel, violations in report.items():
        counts = a11y.counts(violations)
        print(f"axe {rel}: critical {counts['critical']} serious {counts['serious']} "
              f"moderate {counts['moderate']} minor {counts['minor']}")
        bad = [f"{v['id']} x{v['count']}: {v['nodes'][:3]} {v['why'][:1]}" for v in violations
               if v["impact"] in a11y.SEVERE]
        if bad:
            severe[rel] = bad
    assert len(report) >= 25, sorted(report)
    assert any(rel.startswith("slides/") for rel in report)
    assert not severe, json.dumps(severe, indent=1)


def test_saved_widgets_work_from_the_keyboard_and_are_named(site, chrome):
    with br.serve(site) as base:
        tab, log = br.open_page(chrome, base + "notebooks/04_model_forward.html")
        try:
            tab.wait_for_function(READY, timeout=30_000)
            handle = tab.locator(".jupyter-widgets [role=slider]").first
            handle.wait_for(timeout=30_000)
            named = handle.evaluate("h => { const id = h.getAttribute('aria-labelledby');"
                                    " return id && document.getElementById(id).textContent; }")
            label = handle.evaluate("h => h.closest('.widget-inline-hbox').querySelector('.widget-label').textContent")
            assert named == label and label.strip(), (named, label)
            before = handle.get_attribute("aria-valuenow")
            handle.focus()
            handle.press("ArrowRight")
            tab.wait_for_function("([h, v]) => h.getAttribute('aria-valuenow') !== v",
                                  arg=[handle.element_handle(), before], timeout=5_000)
            assert handle.get_attribute("aria-valuenow") != before
            labels = tab.evaluate("() => [...document.querySelectorAll('.mxe-plotly-figure')].map(f => f.getAttribute('aria-label'))")
            assert labels and all(l and len(l) > 30 for l in labels), labels   # every figure has its text alternative
        finally:
            tab.context.close()
    assert not log.problems(), log.problems()
