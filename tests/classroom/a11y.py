"""axe-core accessibility checks of built pages, offline.

axe-core comes from the npm registry once (pinned version, sha512 checked, cached in
docs/_build/.vendor like the site's own assets) and is injected into each page from that file.

    python tests/classroom/a11y.py docs/_build/html      # axe counts per page, by impact
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
sys.path.insert(0, str(ROOT / "tests"))

AXE = {
    "name": "axe-core",
    "version": "4.14.1",
    "integrity": "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ==",
    "license": "MPL-2.0",
    "keep": ["package.json", "LICENSE", "axe.min.js"],
    "strip": "",
}
SEVERE = ("serious", "critical")


def axe_path() -> Path:
    import mixtral_site
    return mixtral_site.ensure_npm_asset(AXE) / "axe.min.js"


def run_axe(page) -> List[dict]:
    """The axe violations of the open page (WCAG 2.1 A/AA and best practices): [{id, impact, nodes, help}]."""
    page.add_script_tag(path=str(axe_path()))
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 8), count: v.nodes.length,
            why: v.nodes.slice(0, 3).map(n => (n.any.concat(n.all, n.none)[0] || {}).message || '')}));
    }""")
    return result


def site_pages(site: Path) -> List[str]:
    pages = []
    for path in sorted(site.rglob("*.html")):
        rel = path.relative_to(site).as_posix()
        if not rel.startswith(("_static/", "_sources/", "_images/", "_downloads/", "slides/vendor/")):
            pages.append(rel)
    return pages


def audit(site: Path, pages: List[str] = None, ready_js: str = None, chrome=None) -> Dict[str, List[dict]]:
    """{page: violations} for every page of `site` (or `pages`); chrome: a browser to use (else one is started)."""
    import contextlib
    import browser as br
    out, seconds = {}, {}
    with br.serve(site) as base, (contextlib.nullcontext(chrome) if chrome is not None
                                  else br.chromium(viewport=(1280, 900))) as chrome:
        for rel in pages or site_pages(site):
            start = time.monotonic()
            tab, log = br.open_page(chrome, base + rel)
            if ready_js:
                try:
                    tab.wait_for_function(ready_js, timeout=30_000)
                except Exception:
                    pass
            tab.wait_for_timeout(300)
            out[rel] = run_axe(tab)
            tab.context.close()
            seconds[rel] = round(time.monotonic() - start, 1)
    print("axe seconds per page:", seconds)
    return out


def counts(violations: List[dict]) -> Counter:
    c = Counter()
    for v in violations:
        c[v["impact"]] += v["count"]
    return c


if __name__ == "__main__":
    site = Path(sys.argv[1])
    report = audit(site)
    for rel, vs in report.items():
        c = counts(vs)
        rules = sorted({f"{v['id']}({v['impact']})" for v in vs})
        print(f"{rel}: critical {c['critical']} serious {c['serious']} moderate {c['moderate']} "
              f"minor {c['minor']} | {' '.join(rules)}")
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_text(json.dumps(report, indent=1))
