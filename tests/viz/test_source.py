"""Source beside source: an excerpt assigned to a column is what is rendered, and the notebooks' excerpts hide
what they say they hide.

Notebook 03 shows load_balancing_loss_func without its masked branch (that branch is Exercise 03.2);
notebook 01 shows the two `while` loops, not the 175 lines of `_sample` around them. The view each notebook
builds is rebuilt here from the notebook's own cell and rendered.
"""
import ast
from pathlib import Path

import nbformat
from transformers.generation.utils import GenerationMixin
from transformers.models.mixtral import modeling_mixtral as hf

from mixtral_edu.modeling import generation
from mixtral_edu.modeling.moe import load_balancing_loss_func
from mixtral_edu.viz.source import excerpt, excerpts, side_by_side, source_of

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
MASKED = "expert_attention_mask"   # a name only the attention-mask branch uses


def _assigns_view(node: ast.AST) -> bool:
    """`view = ...`, `view.left = ...` or `view.left, view.right = ...`."""
    targets = [t for a in getattr(node, "targets", []) for t in (a.elts if isinstance(a, ast.Tuple) else [a])]
    return any(getattr(t, "id", None) == "view" or getattr(getattr(t, "value", None), "id", None) == "view"
               for t in targets)


def _view_of_cell(notebook: str, cell_id: str, namespace: dict):
    """Run the notebook cell's statements up to the last one that sets `view` or one of its columns; the view."""
    cell = next(c for c in nbformat.read(NOTEBOOKS / notebook, as_version=4).cells if c.get("id") == cell_id)
    body = ast.parse(cell.source).body
    last = max((i for i, node in enumerate(body) if _assigns_view(node)), default=None)
    assert last is not None, f"{notebook} {cell_id}: no `view = ...` in the cell"
    exec(compile(ast.Module(body=body[:last + 1], type_ignores=[]), f"<{notebook} {cell_id}>", "exec"), namespace)
    return namespace["view"]


def test_notebook_03_shows_no_masked_branch():
    view = _view_of_cell("03_causal_lm_forward.ipynb", "nb03-25",
                         {"side_by_side": side_by_side, "hf": hf, "load_balancing_loss_func": load_balancing_loss_func,
                          "excerpts": excerpts})
    page, text = view._repr_html_(), repr(view)
    assert MASKED in source_of(hf.load_balancing_loss_func) and MASKED in source_of(load_balancing_loss_func)
    assert MASKED not in page and MASKED not in text
    for column in (view.left, view.right):
        assert "if attention_mask is None:" in column and "return overall_loss * num_experts" in column
        assert column.startswith("def load_balancing_loss_func") and "# ..." in column   # docstring skipped


def test_notebook_01_shows_the_two_loops_only():
    view = _view_of_cell("01_generation_loop.ipynb", "nb01-03",
                         {"side_by_side": side_by_side, "GenerationMixin": GenerationMixin, "generation": generation,
                          "print": lambda *a, **k: None, "source_of": source_of, "excerpt": excerpt})
    assert view.left.startswith("while self._has_unfinished_sequences") and view.right.startswith("while input_ids")
    assert len(view.left.splitlines()) < len(source_of(GenerationMixin._sample).splitlines()) / 2
    page = view._repr_html_()
    assert "def _sample" not in page and "def generate" not in page


def test_assigning_a_column_changes_what_is_rendered():
    view = side_by_side(hf.load_balancing_loss_func, load_balancing_loss_func)
    assert MASKED in view._repr_html_()
    view.left = excerpt(view.left, "if gate_logits is None", "return 0")
    view.right = excerpt(view.right, "if gate_logits is None", "return 0")
    assert MASKED not in view._repr_html_() and MASKED not in repr(view)


def test_excerpts_keep_indentation_and_mark_the_gaps():
    source = "def f(x):\n    a = 1\n    b = 2\n    if x:\n        c = 3\n    return a\n"
    assert excerpts(source, ("a = 1", "b = 2")) == "a = 1\nb = 2"
    joined = excerpts(source, [("def f", "a = 1"), ("c = 3", "return a")])
    assert joined.splitlines() == ["def f(x):", "    a = 1", "    # ...", "        c = 3", "    return a"]
