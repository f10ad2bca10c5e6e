"""The docs site's folded Solutions pages, built by docs/_ext/mixtral_site.py from notebooks/solutions/*.py."""
import sys

from exercise_harness import ROOT, all_exercises, notebook_path, solutions_path

sys.path.insert(0, str(ROOT / "docs" / "_ext"))
import mixtral_site  # noqa: E402


def test_one_folded_block_per_exercise_in_notebook_order():
    chapters = sorted({notebook_path(key).stem for key, *_ in all_exercises()})
    for stem in chapters:
        exercises = mixtral_site.chapter_exercises(stem)
        functions = mixtral_site.solution_functions(solutions_path(exercises[0][0]))
        headings = mixtral_site.exercise_headings(ROOT / "notebooks" / f"{stem}.ipynb")
        page = mixtral_site.solutions_page(stem, stem, exercises, functions, headings)
        assert page.count('<details class="mxe-solution"') >= len(exercises)
        assert "<details" in page and "open" not in page.split("<details", 1)[1].split(">", 1)[0]   # folded
        positions = [page.index(f'id="solution-{name}"') for _, name in exercises]
        assert positions == sorted(positions), f"{stem}: solutions not in notebook order"
        for key, name in exercises:
            assert f"Exercise {key}" in page and f"class=\"nf\">{name}</span>" in page


def test_the_landing_page_links_every_box():
    links = mixtral_site.resolve_call_chain(
        {"norm": "notebooks/04_model_forward", "outputs": "notebooks/03_causal_lm_forward"},
        mixtral_site.chapter_docnames())
    html = mixtral_site.call_chain_html(links)
    assert 'href="notebooks/04_model_forward.html"><span class="mxe-box-name"><code>norm' in html
