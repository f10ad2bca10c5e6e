"""Translations: complete catalogs, faithful entries, one term per concept, and the language switch.

The catalogs are docs/locale/<lang>/LC_MESSAGES/**.po (docs pages, notebooks' markdown) and
mixtral_edu/locale/<lang>/LC_MESSAGES/mixtral_edu.po (views and checkers); scripts/i18n.py
extracts, merges and checks them. `test_every_entry_is_translated` fails while any entry is
empty or fuzzy: it prints the counts (bash scripts/i18n.sh check -v lists the entries).
"""
from __future__ import annotations

import collections
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("mxe_i18n_tool", ROOT / "scripts" / "i18n.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)

from mixtral_edu import i18n  # noqa: E402

LANGUAGES = tool.LANGUAGES


@pytest.fixture(autouse=True)
def english_after():
    yield
    i18n.set_language("en")


def translated_entries(language: str):
    """(catalog path, entry) of every translated, non-fuzzy entry of every catalog."""
    for po in tool.catalogs(language):
        for entry in i18n.read_po(po):
            if entry["msgid"] and entry["msgstr"] and not entry["fuzzy"] and not entry["obsolete"]:
                yield po, entry


# ---------------------------------------------------------------- completeness


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_entry_is_translated(language):
    table = tool.stats(language)
    total = {k: sum(row[k] for row in table.values()) for k in ("total", "translated", "fuzzy", "untranslated")}
    print(f"{language}: {total['translated']}/{total['total']} translated, {total['fuzzy']} fuzzy, "
          f"{total['untranslated']} untranslated")
    behind = {rel: f"{row['translated']}/{row['total']} translated, {row['fuzzy']} fuzzy"
              for rel, row in table.items() if row["translated"] != row["total"]}
    assert total["total"] > 0
    assert not behind, (f"{language}: {total['untranslated']} untranslated and {total['fuzzy']} fuzzy of "
                        f"{total['total']} entries:\n" + "\n".join(f"  {k}: {v}" for k, v in behind.items()))


def test_the_package_catalog_holds_every_message_of_the_code():
    """Every _("...") / N_("...") literal is extractable and already in each language's catalog."""
    messages, problems = tool.package_messages()
    assert not problems, problems
    assert len(messages) > 100
    for language in LANGUAGES:
        po = tool.PKG_LOCALE / language / "LC_MESSAGES" / "mixtral_edu.po"
        ids = {e["msgid"] for e in i18n.read_po(po) if e["msgid"] and not e["obsolete"]}
        missing = sorted(set(messages) - ids)
        assert not missing, f"run bash scripts/i18n.sh update: {len(missing)} messages not in {po.name}: {missing[:5]}"


def test_catalog_locations_point_at_their_notebook_blocks():
    for language in LANGUAGES:
        assert not tool.location_problems(language)


# ---------------------------------------------------------------- faithful entries


CODE = re.compile(r"`[^`]+`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
DIGITS = re.compile(r"\d+")
ROLE_TARGET = re.compile(r"\{(\w+)\}`(?:[^`<]*<)?([^`>]+)>?`")


def _roles(text: str):
    # {term}`prefill` and {term}`预填充 <prefill>` point at the same target
    return sorted((m.group(1), m.group(2).strip()) for m in ROLE_TARGET.finditer(text))


@pytest.mark.parametrize("language", LANGUAGES)
def test_code_links_numbers_and_placeholders_are_kept(language):
    """A translation keeps the English entry's code spans, link targets, role targets, numbers and
    str.format placeholders exactly (numbers may be written again, e.g. a Chinese number word, never lost)."""
    bad = []
    for po, e in translated_entries(language):
        en, zh = e["msgid"], e["msgstr"]
        where = f"{po.name}:{e['line']} {en[:50]!r}"
        en_roles, zh_roles = _roles(en), _roles(zh)
        en_code = sorted(CODE.findall(ROLE_TARGET.sub("", en)))
        zh_code = sorted(CODE.findall(ROLE_TARGET.sub("", zh)))
        if en_code != zh_code:
            bad.append(f"{where}: code spans {set(en_code) ^ set(zh_code)}")
        if en_roles != zh_roles:
            bad.append(f"{where}: role targets {en_roles} != {zh_roles}")
        if sorted(LINK.findall(en)) != sorted(LINK.findall(zh)):
            bad.append(f"{where}: links {LINK.findall(en)} != {LINK.findall(zh)}")
        missing = collections.Counter(DIGITS.findall(en)) - collections.Counter(DIGITS.findall(zh))
        if missing:
            bad.append(f"{where}: numbers missing {sorted(missing)}")
        if po.name == "mixtral_edu.po" and i18n.placeholders(en) != i18n.placeholders(zh):
            bad.append(f"{where}: placeholders {i18n.placeholders(en)} != {i18n.placeholders(zh)}")
    assert not bad, "\n".join(bad)


def _terms():
    return [t for t in tool_terms() if t["english"]]


def tool_terms():
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    import mixtral_site

    return mixtral_site.read_terms()


def test_terms_follow_the_walkthrough():
    """A term marked 'walkthrough' is the Chinese walkthrough's own word (when the walkthrough is here)."""
    seed = ROOT.parent / "shared" / "seed" / "mixtral-generate-walkthrough.txt"
    candidates = [seed, Path("/work/shared/seed/mixtral-generate-walkthrough.txt")]
    text = next((p.read_text(encoding="utf-8") for p in candidates if p.is_file()), None)
    terms = _terms()
    assert len({t["english"].lower() for t in terms}) == len(terms), "one row per English term"
    assert text is not None, f"the walkthrough is not at {candidates[0]} (shared/ lies beside the repository)"
    squashed = text.replace(" ", "").lower()
    for t in terms:
        if t["source"] == "walkthrough":
            assert t["chinese"].replace(" ", "").lower() in squashed, t


@pytest.mark.parametrize("language", LANGUAGES)
def test_one_chinese_term_per_concept(language):
    """Every translated sentence holding a glossary term (outside code) uses the glossary's Chinese term.

    Longer terms are matched first and blanked, so 'rotary position embedding' does not also
    count as 'embedding'.
    """
    terms = sorted(_terms(), key=lambda t: -len(t["english"]))
    patterns = [(t, re.compile(r"(?<![\w-])" + re.escape(t["english"]) + r"(?:s|es)?(?![\w-])", re.IGNORECASE))
                for t in terms]
    bad, checked = [], 0
    for po, e in translated_entries(language):
        text = ROLE_TARGET.sub(lambda m: " ", e["msgid"])
        text = CODE.sub(" ", LINK.sub(" ", text))
        for term, pattern in patterns:
            if pattern.search(text):
                checked += 1
                text = pattern.sub(" ", text)
                if term["chinese"] not in e["msgstr"]:
                    bad.append(f"{po.name}:{e['line']}: {term['english']!r} -> {term['chinese']!r} not in "
                               f"{e['msgstr'][:70]!r}")
    assert checked > 50, f"only {checked} term uses checked"
    assert not bad, f"{len(bad)} sentences do not use the glossary's term:\n" + "\n".join(bad)


def test_our_po_reader_agrees_with_babel():
    from babel.messages.pofile import read_po as babel_read

    for language in LANGUAGES:
        for po in tool.catalogs(language):
            ours = {(e["msgctxt"], e["msgid"]): (e["msgstr"], e["fuzzy"]) for e in i18n.read_po(po)
                    if e["msgid"] and not e["obsolete"]}
            with open(po, "rb") as f:
                theirs = {(m.context, m.id): (m.string, m.fuzzy) for m in babel_read(f) if m.id}
            assert ours == theirs, po


# ---------------------------------------------------------------- a changed English sentence goes fuzzy


def test_update_marks_a_changed_sentence_fuzzy(tmp_path):
    """Change one sentence of a notebook and one message of the code in a copy of the project, run
    `scripts/i18n.py update` there: both translations turn fuzzy (kept, shown in English), check fails."""
    copy = tmp_path / "repo"
    skip = shutil.ignore_patterns("_build", "_generated", "__pycache__", "*.mo")

    def ignore(folder, names):  # docs/notebooks is the symlink to the chapters: the copy gets one chapter
        return set(skip(folder, names)) | ({"notebooks"} if Path(folder) == ROOT / "docs" else set())

    for name in ("docs", "mixtral_edu", "scripts", "benchmarks", "tests"):  # tests: the troubleshooting page's table
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, copy / name, ignore=ignore, symlinks=False)
    (copy / "notebooks").mkdir()
    shutil.copytree(ROOT / "notebooks" / "solutions", copy / "notebooks" / "solutions", ignore=skip)
    nb_name = "00_orientation.ipynb"                      # the one chapter is enough for the build
    nb = json.loads((ROOT / "notebooks" / nb_name).read_text(encoding="utf-8"))
    # a sentence of the chapter that is one catalog entry on one line of a cell (whatever the prose says today)
    po_now = ROOT / "docs" / "locale" / LANGUAGES[0] / "LC_MESSAGES" / "notebooks" / "00_orientation.po"
    ids = {e["msgid"] for e in i18n.read_po(po_now) if not e["obsolete"]}
    cell, old_sentence = next((c, line.strip()) for c in nb["cells"] if c["cell_type"] == "markdown"
                              for line in "".join(c["source"]).splitlines()
                              if line.strip() in ids and line.strip().endswith(".") and " " in line.strip())
    new_sentence = old_sentence[:-1] + ", changed."
    cell["source"] = "".join(cell["source"]).replace(old_sentence, new_sentence)
    (copy / "notebooks" / nb_name).write_text(json.dumps(nb, indent=1), encoding="utf-8")
    for po in (copy / "docs" / "locale").rglob("notebooks/*.po"):
        if po.stem != "00_orientation":
            po.unlink()
    view = copy / "mixtral_edu" / "viz" / "cache.py"
    view.write_text(view.read_text(encoding="utf-8").replace('_("fed now")', '_("fed just now")'),
                    encoding="utf-8")

    proc = subprocess.run([sys.executable, str(copy / "scripts" / "i18n.py"), "update"], cwd=copy,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    def entry(po: Path, msgid: str):
        found = [e for e in i18n.read_po(po) if e["msgid"] == msgid]
        assert found, f"{msgid!r} not in {po}"
        return found[0]

    for language in LANGUAGES:
        chapter = copy / "docs" / "locale" / language / "LC_MESSAGES" / "notebooks" / "00_orientation.po"
        package = copy / "mixtral_edu" / "locale" / language / "LC_MESSAGES" / "mixtral_edu.po"
        was = {e["msgid"]: e["msgstr"] for e in i18n.read_po(
            ROOT / "docs" / "locale" / language / "LC_MESSAGES" / "notebooks" / "00_orientation.po")}
        changed = entry(chapter, new_sentence)
        assert changed["fuzzy"], "a changed English sentence must mark its translation fuzzy"
        assert changed["msgstr"] == was.get(old_sentence, ""), "the old translation is kept for the translator"
        previous = re.sub(r"\n#\| ", " ", chapter.read_text(encoding="utf-8"))  # a wrapped #| msgid, joined
        assert old_sentence in previous, "the previous English is kept (#| msgid)"
        assert not [e for e in i18n.read_po(chapter) if e["msgid"] == old_sentence and not e["obsolete"]]
        msg = entry(package, "fed just now")
        assert msg["fuzzy"], "a changed message of the code must mark its translation fuzzy"
        # a fuzzy translation is never shown
        assert "fed just now" not in {k for k, v in i18n._read_catalog(str(package), 0, 0).items()}
        check = subprocess.run([sys.executable, str(copy / "scripts" / "i18n.py"), "check", "--lang", language],
                               cwd=copy, capture_output=True, text=True, timeout=300)
        assert check.returncode == 1 and "fuzzy" in check.stdout


# ---------------------------------------------------------------- the package follows the language


def test_set_language_switches_views_and_checkers():
    import torch

    import mixtral_edu
    from mixtral_edu.exercises import ExerciseResult, not_yet
    from mixtral_edu.viz import mask_figure

    assert mixtral_edu.get_language() == "en"
    with pytest.raises(ValueError, match="available languages"):
        mixtral_edu.set_language("xx_YY")
    assert mixtral_edu.set_language("zh-cn") == "zh_CN" and mixtral_edu.get_language() == "zh_CN"

    def stub(x):
        raise NotImplementedError

    result = not_yet(stub, 1)
    assert repr(result).startswith("尚未完成：") and "`stub`" in repr(result), repr(result)
    assert "通过" in ExerciseResult(True, "x")._repr_html_()

    torch.manual_seed(0)
    config = mixtral_edu.MixtralConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=1, num_local_experts=2,
                                       num_experts_per_tok=1, attn_implementation="eager")
    model = mixtral_edu.MixtralForCausalLM(config).eval()
    with torch.no_grad(), mixtral_edu.trace(model) as tr:
        model.generate(torch.tensor([[1, 5, 6, 7]]), max_new_tokens=2, do_sample=False)
    fig = mask_figure(tr)
    title = fig.layout.title.text
    assert "预填充" in title or "decode" in title, title
    assert "已缓存长度 P=" in title, title
    assert fig.layout.sliders[0].currentvalue.prefix == "步："
    # no English phrase left in what the views write (titles, axes, legends, notes, colour bars, sliders)
    from mixtral_edu.viz import attention_figure, cache_figure, routing_figure, sampling_figure

    english = re.compile(r"\b(?!KV\b)[A-Za-z]{2,} (?!cache\b)[a-z]{2,}\b")
    for view in (mask_figure(tr), cache_figure(tr), routing_figure(tr), attention_figure(tr), sampling_figure(tr)):
        texts = [view.layout.title.text] + [a.text for a in view.layout.annotations or ()]
        texts += [view.layout[k].title.text for k in view.layout if k.startswith(("xaxis", "yaxis"))]
        texts += [t.name for t in view.data if t.showlegend is not False and t.name]
        texts += [s.currentvalue.prefix for s in view.layout.sliders or ()]
        texts += [c.colorbar.title.text for c in view.data if getattr(c, "colorbar", None) and c.colorbar.title.text]
        left = [t for t in texts if t and english.search(re.sub(r"<[^>]+>|\w*_\w*", " ", t))]
        assert not left, f"untranslated in a view: {left}"
    mixtral_edu.set_language("en")
    assert "past length P=" in mask_figure(tr).layout.title.text
