"""mixtral_edu.viz: every view shows what the model did, cell by cell, and its live controls redraw.

The data in each figure is compared with an independent reading of the same run
(the trace's tensors, the model's outputs, the cache it returned); live views are
driven by setting their controls in Python and reading the figure they redraw.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest
import torch

import mixtral_edu
from mixtral_edu.modeling import masks as M
from mixtral_edu import viz
from mixtral_edu.viz import runs as W

PAD = 3
CFG = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           num_local_experts=4, num_experts_per_tok=2, sliding_window=6, max_position_embeddings=256,
           rope_theta=1e4, initializer_range=0.2, pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
           attn_implementation="eager")


@pytest.fixture(scope="module")
def tok():
    """The shipped tiny model's tokenizer, or one trained here on the corpus."""
    from mixtral_edu.tiny.pretrained import TINY_DIR
    from mixtral_edu.tiny.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
    if os.path.isfile(os.path.join(TINY_DIR, "tokenizer.json")):
        return load_tokenizer(TINY_DIR)
    from mixtral_edu.tiny.corpus import make_corpus
    folder = tempfile.mkdtemp(prefix="mxe_viz_tok_")
    save_tokenizer(train_tokenizer([t for _, t in make_corpus(300, 0)], vocab_size=300), folder)
    return load_tokenizer(folder)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return mixtral_edu.MixtralForCausalLM(mixtral_edu.MixtralConfig(vocab_size=len(tok), **CFG)).eval()


@pytest.fixture(scope="module")
def run(model, tok):
    """A traced greedy generate on a left-padded batch of two prompts; (trace, output, input_ids, mask)."""
    ids, mask = W.encode_batch(tok, ["the small cat sees", "37+48="])
    assert (mask == 0).any(), "the batch needs left padding"
    with torch.no_grad(), mixtral_edu.trace(model) as tr:
        out = model.generate(ids, attention_mask=mask, max_new_tokens=5, eos_token_id=None,
                             return_dict_in_generate=True)
    assert len(tr.steps) == 5
    return tr, out, ids, mask


def traces_named(fig, prefix):
    return [t for t in fig.data if (t.name or "").startswith(prefix)]


def visible_after_slider(fig, slider_step):
    """The traces a static slider position shows (plotly.js applies the same 'update')."""
    return [t for t, v in zip(fig.data, fig.layout.sliders[0].steps[slider_step].args[0]["visible"]) if v]


# ---------------------------------------------------------------- masks

def test_mask_figure_cells_are_the_mask_the_model_used(run, tok):
    tr, _, _, _ = run
    fig = viz.mask_figure(tr, tokenizer=tok)
    assert len(fig.layout.sliders[0].steps) == len(tr.steps)
    for i, rec in enumerate(tr.steps):
        shown = visible_after_slider(fig, i)
        panels = [t for t in shown if t.name.startswith("row ")]
        B, _, T, S = rec.mask_4d.shape
        assert len(panels) == B
        reasons = M.mask_reasons(rec.attention_mask, B, T, rec.past_length, tr.model.config.sliding_window)
        for b, panel in enumerate(panels):
            z = np.asarray(panel.z)
            assert z.shape == (T, S)
            assert np.array_equal(z, reasons[b, 0].numpy())
            assert np.array_equal(z != M.VISIBLE, (rec.mask_4d[b, 0] != 0).numpy())  # what the model added
            assert list(panel.y) == list(range(rec.past_length, rec.past_length + T))  # queries at P + t
        two_d = [t for t in shown if t.name == "2D mask"][0]
        assert np.array_equal(np.asarray(two_d.z) == M.PADDING, (rec.attention_mask == 0).numpy())
    # the shape is printed as the model reported it; reasons are all there with this batch and window
    assert str(tuple(tr.steps[-1].mask_4d.shape)) in fig.layout.title.text
    first = np.concatenate([np.asarray(t.z).ravel() for t in visible_after_slider(fig, 0)])
    assert {M.VISIBLE, M.FUTURE, M.PADDING} <= set(first.tolist())
    last = np.concatenate([np.asarray(t.z).ravel() for t in visible_after_slider(fig, len(tr.steps) - 1)])
    assert M.WINDOW in set(last.tolist())


def test_mask_axes_queries_down_keys_across(run):
    fig = viz.mask_figure(run[0], step=0)
    for ax in ("xaxis2", "xaxis3"):
        assert fig.layout[ax].title.text == "key position"
    for ax in ("yaxis2", "yaxis3"):
        assert fig.layout[ax].autorange == "reversed"
    assert fig.layout.yaxis2.title.text == "query position"
    assert fig.layout.yaxis.autorange == "reversed"  # the 2D mask: row 0 on top
    assert list(fig.layout.coloraxis.colorbar.ticktext) == ["visible", "future", "outside window", "padding"]


def test_mask_figure_refuses_a_window_the_model_did_not_use(run):
    with pytest.raises(AssertionError, match="disagrees"):
        viz.mask_figure(run[0], step=0, sliding_window=2)


def test_mask_explorer_controls_rerun_the_model(model, tok):
    view = viz.mask_explorer(model, tok, prompt="the small cat sees a red ball", pads=(2, 0), sliding_window=3)
    n = len(W.encode(tok, "the small cat sees a red ball"))

    def panels():
        return [np.asarray(t.z) for t in traces_named(view.figure, "row ")]

    assert view.error is None and panels()[0].shape == (n, n)
    view.controls["past_length"].value = n - 1                     # decode: one query, all keys
    assert panels()[0].shape == (1, n) and "decode" in view.figure.layout.title.text
    assert panels()[1][0, 0] == M.WINDOW                            # W=3 hides the first keys
    tr, _ = viz.masks.run_mask_case(model, W.encode(tok, "the small cat sees a red ball"), [2, 0], n - 1, 3, PAD)
    assert np.array_equal(panels()[0] != M.VISIBLE, (tr.steps[0].mask_4d[0, 0] != 0).numpy())
    view.controls["sliding_window"].value = 0                       # window off
    assert M.WINDOW not in np.concatenate([p.ravel() for p in panels()])
    view.controls["pad1"].value = 4                                 # row 1 gets four pads
    assert (panels()[1][0] == M.PADDING).sum() == 4
    assert model.config.sliding_window == CFG["sliding_window"]     # the model's config is put back


# ---------------------------------------------------------------- cache

def test_cache_figure_lengths_and_bytes_equal_the_cache(run):
    tr, out, ids, _ = run
    fig = viz.cache_figure(tr)
    steps = viz.cache.cache_steps(tr)
    lengths = np.asarray(fig.data[1].z)                             # (steps, layers) cache length after
    for k, rec in enumerate(tr.steps):
        assert lengths[k].tolist() == [rec.layers[l].cache_after for l in sorted(rec.layers)]
    final = out.past_key_values                                     # the cache generate handed back
    S = out.sequences.shape[1] - 1                                  # the last token was never fed
    assert lengths[-1].tolist() == [k.shape[2] for k, _ in final] == [S] * len(final)
    assert steps[-1].bytes_after == mixtral_edu.full_size.sizes.measure_cache_bytes(final)
    fed = np.asarray(fig.data[0].z)
    assert (fed[0] == viz.cache.FED).sum() == ids.shape[1]          # prefill fed the whole prompt
    assert all((fed[k] == viz.cache.FED).sum() == 1 for k in range(1, len(steps)))
    # the 8x7B panel is sizes.kv_cache_bytes for the same tokens and batch
    big = mixtral_edu.full_size.presets.get_preset("mixtral-8x7b")
    assert np.allclose(fig.data[3].y, [mixtral_edu.full_size.sizes.kv_cache_bytes(big, s.after[0], batch_size=2) / 2**20
                                       for s in steps])
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.xaxis.title.text.startswith("sequence column")
    first_window = next(s.index for s in steps if s.window_hides)
    assert "window starts" in [sh.label.text.strip() for sh in fig.layout.shapes if sh.label and sh.label.text][0]
    assert any(abs(sh.x0 - (first_window - 0.5)) < 1e-9 for sh in fig.layout.shapes if sh.type == "line")


def test_cache_figure_titles_the_row_it_shows(run):
    tr, mask = run[0], run[3]
    pads = [bool((mask[row] == 0).any()) for row in (0, 1)]
    assert pads == [True, False]
    for row in (0, 1):
        fig = viz.cache_figure(tr, row=row)
        panel = fig.layout.annotations[0].text                         # "What each step fed (row r) ..."
        assert f"(row {row})" in panel and ("(pads: 1, a filler)" in panel) == pads[row]   # pads' filler position
        want = f"position ids of row {row}: {viz.cache.cache_steps(tr)[-1].position_ids[row]}"  # the last step is shown
        assert want in fig.layout.title.text
        assert all(want.split(":")[0] in s.args[0]["title.text"] for s in fig.layout.sliders[0].steps)


def test_cache_explorer_step_and_window(model, tok):
    view = viz.cache_explorer(model, tok, prompt="the small cat", max_new_tokens=4, sliding_window=0)
    assert "step 3" in view.figure.layout.title.text and "no sliding window" in view.figure.layout.title.text
    view.controls["step"].value = 1
    assert "step 1 (decode)" in view.figure.layout.title.text
    view.controls["sliding_window"].value = 2
    assert "window W=2" in view.figure.layout.title.text
    view.controls["new_tokens"].value = 2
    assert view.controls["step"].max == 1 and len(view.figure.layout.sliders[0].steps) == 2


# ---------------------------------------------------------------- routing

def test_routing_cells_equal_the_traces_top_k(run, tok):
    tr, _, _, mask = run
    fig = viz.routing_figure(tr, row=0, tokenizer=tok)
    r = viz.routing.routing_of(tr, row=0)
    K = tr.model.config.num_experts_per_tok
    # independent reading: step by step, the row's non-pad tokens in flattened order n = b * T + t
    for layer in range(tr.model.config.num_hidden_layers):
        want = []
        for rec in tr.steps:
            T, P = rec.input_ids.shape[1], rec.past_length
            for t in range(T):
                if rec.attention_mask[0, P + t] == 1:
                    want.append(rec.layers[layer].topk_indices[t].tolist())
        want = np.array(want)                                       # (N, K)
        top = np.asarray(fig.data[0].z)[layer * K: (layer + 1) * K]   # (K, N)
        assert np.array_equal(top.T, want)
        probs = traces_named(fig, f"layer {layer} probs")[0]
        assert np.allclose(np.asarray(probs.z).T, r.probs[layer].numpy())
        marks = traces_named(fig, f"layer {layer} top-")[0]
        assert list(marks.y) == want.reshape(-1).tolist()
    assert len(r.ids) == int(mask[0].sum()) + len(tr.steps) - 1     # prompt without pads + fed new tokens
    assert fig.layout.yaxis.autorange == "reversed"
    # the subscripts are columns (row 0 is left-padded: its first real token sits at column 2, position id 0)
    first = int((mask[0] == 0).sum())
    assert r.positions[0] == first > 0 and int(tr.steps[0].position_ids[0, first]) == 0
    assert fig.layout.xaxis.ticktext[0].endswith(f"<sub>{first}</sub>") and "column" in fig.layout.xaxis2.title.text


def test_routing_explorer_switching_an_expert_off(model, tok):
    view = viz.routing_explorer(model, tok, prompt="the small cat", max_new_tokens=2)
    used = set(np.asarray(view.figure.data[0].z).ravel().tolist())
    off = sorted(used)[0]
    view.controls["off"].value = off
    assert view.error is None
    assert off not in set(np.asarray(view.figure.data[0].z).ravel().tolist())
    view.controls["layer"].value = 1
    assert view.figure.layout.sliders[0].active == 1
    assert [t.name for t in view.figure.data if t.visible is not False][-2:] == ["layer 1 probs", "layer 1 top-2"]


# ---------------------------------------------------------------- load balance

def test_balance_numbers_are_the_routers(model, tok):
    from mixtral_edu.tiny.corpus import make_corpus, samples_by_domain
    from mixtral_edu.tiny.evaluate import EVAL_SEED                      # held-out samples
    stats = viz.balance_stats(model, tok, samples_by_domain(6, EVAL_SEED))
    assert list(stats.domains) == ["arith", "lang", "kv"]
    E, K = stats.num_experts, stats.top_k
    for d, b in stats.domains.items():
        assert np.allclose(b.f.sum(1), 1) and np.allclose(b.P.sum(1), 1)
        # the loss function's value is E * sum_e (K f_e) P_e: the bars are the quantities it combines
        assert np.allclose(b.aux_per_layer, E * K * (b.f * b.P).sum(1), atol=1e-5)
    # independently: the model's own aux_loss and the router's choices for one domain
    ids, mask = W.encode_batch(tok, [t for _, t in make_corpus(6, EVAL_SEED, domains=("kv",))])
    with torch.no_grad():
        out = model(ids, attention_mask=mask, output_router_logits=True)
    assert stats.domains["kv"].aux_total == pytest.approx(float(out.aux_loss), abs=1e-6)
    chosen = torch.topk(out.router_logits[1].softmax(-1), K).indices[mask.reshape(-1).bool()]
    assert np.allclose(stats.domains["kv"].f[1], torch.bincount(chosen.reshape(-1), minlength=E) / chosen.numel())
    fig = viz.balance_figure(stats)
    heat = traces_named(fig, "kv f")[0]
    assert np.allclose(heat.z, stats.domains["kv"].f)
    assert any(sh.y0 == K for sh in fig.layout.shapes)             # the perfectly balanced line at K


def test_balance_explorer_expert_off_gets_no_tokens(model, tok):
    from mixtral_edu.tiny.corpus import samples_by_domain
    view = viz.balance_explorer(model, tok, samples_by_domain, n_samples=4)
    view.controls["off"].value = 2
    f = np.asarray(traces_named(view.figure, "lang f")[0].z)
    assert view.error is None and np.all(f[:, 2] == 0)


# ---------------------------------------------------------------- attention

def test_attention_cells_equal_the_traces_weights(run):
    tr, _, _, _ = run
    fig = viz.attention_figure(tr, step=0, row=0, layer=1)
    rec = tr.steps[0]
    H, Hkv = 4, 2
    assert viz.attention.kv_head_of_query_heads(H, Hkv) == [h // (H // Hkv) for h in range(H)]
    for h in range(H):
        z = np.asarray(traces_named(fig, f"layer 1 head {h}")[0].z)
        assert np.allclose(z, rec.layers[1].attn_weights[0, h].numpy())
        overlay = np.asarray(traces_named(fig, f"layer 1 head {h} mask")[0].z, dtype=float)
        assert np.array_equal(~np.isnan(overlay), (rec.mask_4d[0, 0] != 0).numpy())
    assert traces_named(fig, "layer 1 head 0")[0].visible is True
    assert traces_named(fig, "layer 0 head 0")[0].visible is False
    labels = [sh.label.text for sh in fig.layout.shapes]
    assert labels == ["kv head 0: query heads 0, 1", "kv head 1: query heads 2, 3"]
    # the bands sit clear of the "query head h" titles (which take about 20 px above the panels)
    plot_px = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    assert all((sh.y0 - 1) * plot_px >= 25 for sh in fig.layout.shapes)
    assert fig.layout.xaxis.title.text == "key position" and fig.layout.yaxis.title.text == "query position"
    assert fig.layout.yaxis.autorange == "reversed"


def test_attention_explorer_works_on_sdpa_models(tok):
    torch.manual_seed(1)
    sdpa = mixtral_edu.MixtralForCausalLM(
        mixtral_edu.MixtralConfig(vocab_size=len(tok), **{**CFG, "attn_implementation": "sdpa"})).eval()
    view = viz.attention_explorer(sdpa, tok, prompt="the cat", max_new_tokens=2)
    assert view.error is None
    view.controls["step"].value = 1                                    # decode: one query row
    z = np.asarray(traces_named(view.figure, "layer 0 head 0")[0].z)
    assert z.shape[0] == 1 and np.isclose(z.sum(), 1, atol=1e-5)
    assert sdpa.config.output_attentions is False


# ---------------------------------------------------------------- sampling

def test_sampling_stages_are_generates_warpers(run, tok):
    tr, out, _, _ = run
    fig = viz.sampling_figure(tr, step=0, row=1, tokenizer=tok, temperature=0.8, top_k=3, top_p=0.9, top_n=10)
    rec = tr.steps[0]
    active = fig.layout.sliders[0].active
    bars = [t for t in visible_after_slider(fig, active) if t.type == "bar" and t.x[0] is not None]
    assert len(bars) == 4
    scores = rec.logits_last[1:2]
    for w in mixtral_edu.modeling.generation.get_logits_warpers(0.8, 3, 0.9):
        scores = w(None, scores)
    probs = scores.softmax(-1)[0]
    shown = torch.topk(rec.logits_last[1], 10).indices
    assert np.allclose(bars[-1].y[:10], probs[shown].numpy(), atol=1e-6)
    assert sum(1 for p in bars[2].y[:10] if p > 0) == 3             # top-k 3 keeps three
    chosen = int(out.sequences[1, tr.steps[0].input_ids.shape[1]])  # what generate appended
    assert bars[0].marker.color[shown.tolist().index(chosen)] == viz.palette.CHOSEN


def test_sampling_explorer_shows_the_token_generate_drew(model, tok):
    view = viz.sampling_explorer(model, tok, prompt="the small cat")
    view.controls["temperature"].value = 2.0
    view.controls["seed"].value = 7
    batch = tok(["the small cat"], return_tensors="pt")
    torch.manual_seed(7)
    drawn = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=1,
                           do_sample=True, temperature=2.0, top_k=50, top_p=1.0)[0, -1].item()
    label = viz.palette.token_label(viz.palette.token_texts([drawn], tok)[0], 12)
    assert f"generate chose {label}" in view.figure.layout.title.text
    assert "temperature 2" in view.figure.layout.title.text


# ---------------------------------------------------------------- call chain

@pytest.mark.parametrize("suffix", [".ipynb", ".html"])
def test_callchain_links_every_chapter(suffix, run):
    fig = viz.callchain_figure(link_suffix=suffix, trace=run[0], step=1)
    text = " ".join(a.text for a in fig.layout.annotations)
    for name in viz.callchain.NOTEBOOKS.values():
        assert f'href="{name}{suffix}"' in text
    assert "step 1: decode" in text and "appended" in text
    html = viz.callchain_html(link_suffix=suffix).data
    assert f'href="01_generation_loop{suffix}"' in html and "<script" not in html


def test_callchain_marks_the_current_chapter():
    import re
    assert "you are here" not in viz.callchain_html().data
    frame = "3px solid " + viz.palette.OKABE_ITO["orange"]
    for here, boxes in (("moe", 1), ("model", 3), ("lm_head", 2)):   # model: its group, embed/mask and norm
        page = viz.callchain_html(here=here).data
        tags = re.findall(r'href="(\d\d_\w+)\.ipynb"><b><code>[^<]*</code></b></a> <b class="mxe-here"', page)
        assert tags == [viz.callchain.NOTEBOOKS[here]]          # "you are here" once, on the chapter's own box
        assert page.count(frame) == boxes                        # every box the chapter teaches is framed
    with pytest.raises(ValueError, match="not a chapter; use one of"):
        viz.callchain_html(here="mlp")


def test_static_figures_need_nothing_from_the_web(run, tok):
    tr = run[0]
    for fig in (viz.mask_figure(tr), viz.cache_figure(tr), viz.routing_figure(tr), viz.attention_figure(tr),
                viz.sampling_figure(tr), viz.callchain_figure()):
        text = json.dumps(fig.to_plotly_json(), default=str)
        assert "http://" not in text and "https://" not in text
        assert fig.layout.title.text


# ---------------------------------------------------------------- static sliders, drawn the docs site's way

@pytest.mark.browser
def test_static_sliders_work_in_a_browser(run, tok, tmp_path):
    """Each figure as `viz.show` sends it to a page (global Plotly, no kernel): click the slider's first
    step with the mouse and the figure must switch to that step's traces and title."""
    import plotly.offline

    import browser as br
    assert br.chromium_available(), "needs Debian's chromium (scripts/test.sh installs it)"
    from mixtral_edu.viz.display import figure_html
    tr = run[0]
    # one figure per kind of slider: "update" with shapes (routing and attention use the same helper),
    # "relayout", and "update" with annotations
    figs = {"mask": viz.mask_figure(tr, tokenizer=tok), "cache": viz.cache_figure(tr, tokenizer=tok),
            "sampling": viz.sampling_figure(tr, tokenizer=tok, temperature=2.0)}
    (tmp_path / "plotly.min.js").write_text(plotly.offline.get_plotlyjs())
    body = "".join(figure_html(f, div_id=name) for name, f in figs.items())
    (tmp_path / "index.html").write_text('<html><head><meta charset="utf-8"><script src="plotly.min.js">'
                                         f"</script></head><body>{body}</body></html>")
    with br.serve(tmp_path) as base, br.chromium(viewport=(1300, 900)) as browser:
        page, log = br.open_page(browser, base + "index.html")
        page.wait_for_function(f"() => document.querySelectorAll('.main-svg').length >= {len(figs)}")
        for name, fig in figs.items():
            assert fig.layout.sliders[0].active != 0, name  # so that clicking step 0 changes something
            rail = page.locator(f"#{name} .slider-rail-touch-rect").first
            rail.scroll_into_view_if_needed()
            box = rail.bounding_box()
            page.mouse.click(box["x"] + 3, box["y"] + box["height"] / 2)
            page.wait_for_function(f"() => document.getElementById('{name}').layout.sliders[0].active === 0")
            # the step's update lands after the slider moves (plotly animates the handle): let it settle
            page.wait_for_timeout(500)
            got = page.evaluate(f"""() => {{ const gd = document.getElementById('{name}');
                return {{title: gd.layout.title.text, visible: gd.data.map(t => t.visible !== false)}}; }}""")
            args = fig.layout.sliders[0].steps[0].args
            if len(args) > 1 or fig.layout.sliders[0].steps[0].method == "relayout":
                want = args[-1]["title.text"] if "title.text" in args[-1] else fig.layout.title.text
                assert got["title"] == want, name
            if fig.layout.sliders[0].steps[0].method == "update":
                assert got["visible"] == list(args[0]["visible"]), name
        assert not log.problems(), log.problems()
        page.context.close()
