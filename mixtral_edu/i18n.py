"""The language of what the package shows: view titles, axis labels, legends, widget labels, checker messages.

    mixtral_edu.set_language("zh_CN")   # the generated Chinese notebooks call this first
    mixtral_edu.get_language()          # "zh_CN"
    from mixtral_edu.i18n import _
    _("step")                           # "步"

Messages are English in the code, wrapped in ``_()``; their translations live in gettext
catalogs, ``mixtral_edu/locale/<lang>/LC_MESSAGES/mixtral_edu.po``, read here with a small
parser of our own (no compiled .mo, nothing unpickled). A message with placeholders is
translated first and formatted after: ``_("step {i}").format(i=3)``, so the translation may
move them. A message missing from the catalog, empty or marked fuzzy shows in English.
``bash scripts/i18n.sh extract`` collects every ``_("...")`` literal of the package.
"""
from __future__ import annotations

import ast
import functools
import os
from pathlib import Path
from typing import Dict, List, Tuple

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "mixtral_edu"
SOURCE_LANGUAGE = "en"

_language = SOURCE_LANGUAGE


def available_languages() -> List[str]:
    """'en' (the source) and every language with a catalog in mixtral_edu/locale."""
    found = sorted(p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    return [SOURCE_LANGUAGE] + found


def _normalise(language: str) -> str:
    """'zh-CN', 'zh_cn' and 'zh_CN' are one language; 'en_US' is English."""
    if not isinstance(language, str) or not language.strip():
        raise ValueError(f"language must be a name such as 'zh_CN' or 'en', got {language!r}")
    lang, _sep, region = language.strip().replace("-", "_").partition("_")
    lang = lang.lower()
    if lang == SOURCE_LANGUAGE:
        return SOURCE_LANGUAGE
    return f"{lang}_{region.upper()}" if region else lang


def set_language(language: str) -> str:
    """Show views and checker messages in ``language`` from now on (``"zh_CN"`` or ``"en"``).

    Returns the language set. An unknown language raises ValueError listing the available ones.
    """
    global _language
    lang = _normalise(language)
    if lang not in available_languages():
        raise ValueError(f"no translations for {language!r}: available languages are "
                         f"{', '.join(available_languages())} (catalogs in {LOCALE_DIR})")
    _language = lang
    return lang


def get_language() -> str:
    """The language views and checkers use now ("en" unless set_language was called)."""
    return _language


def gettext(message: str, language: str = None) -> str:
    """``message`` in ``language`` (default: the current one); the English itself when not translated."""
    lang = _language if language is None else _normalise(language)
    if lang == SOURCE_LANGUAGE:
        return message
    return catalog(lang).get(message) or message


_ = gettext


def N_(message: str) -> str:
    """Mark a message for the catalog where it is defined (a constant); translate it where shown, with _()."""
    return message


# The labels of the notebooks' folded blocks (<details><summary>Hint</summary>): raw HTML, which
# the docs catalogs do not reach, so the site and the notebook generator translate them with these.
FOLD_LABELS = (N_("Hint"), N_("Answer"), N_("Solution"))


# ---------------------------------------------------------------- reading .po files


def catalog(language: str) -> Dict[str, str]:
    """msgid -> msgstr of ``language``'s package catalog: translated, non-fuzzy entries only."""
    path = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.is_file():
        return {}
    stat = path.stat()
    return _read_catalog(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_catalog(path: str, _mtime: int, _size: int) -> Dict[str, str]:
    # the file's mtime and size are part of the key: an edited catalog is read again
    out: Dict[str, str] = {}
    for entry in read_po(Path(path)):
        if entry["msgid"] and entry["msgstr"] and not entry["fuzzy"] and not entry["obsolete"]:
            out[entry["msgid"]] = entry["msgstr"]
    return out


def _unquote(text: str, where: str) -> str:
    text = text.strip()
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ValueError(f"{where}: expected a quoted string, got {text!r}")
    return ast.literal_eval(text)  # a C-style quoted string: \n, \t, \", \\ as in Python


def read_po(path: os.PathLike) -> List[Dict]:
    """The entries of a .po file: dicts with msgctxt, msgid, msgstr, fuzzy, obsolete, locations, line."""
    entries: List[Dict] = []
    current: Dict = {}
    field = None

    def finish():
        nonlocal current, field
        if "msgid" in current:
            current.setdefault("msgstr", "")
            current.setdefault("msgctxt", None)
            entries.append(current)
        current, field = {}, None

    def fresh() -> Dict:
        return {"fuzzy": False, "obsolete": False, "locations": []}

    current = fresh()
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, raw in enumerate(lines, 1):
        where = f"{path}:{number}"
        line = raw.strip()
        obsolete = line.startswith("#~")
        if obsolete:
            line = line[2:].strip()
        if not line:
            if "msgid" in current:
                finish()
                current = fresh()
            continue
        if line.startswith("#"):
            if "msgid" in current and field == "msgstr":  # a comment starts the next entry
                finish()
                current = fresh()
            if line.startswith("#,"):
                current["fuzzy"] = current["fuzzy"] or "fuzzy" in [f.strip() for f in line[2:].split(",")]
            elif line.startswith("#:"):
                current["locations"] += line[2:].split()
            continue
        keyword, _sep, rest = line.partition(" ")
        if keyword in ("msgctxt", "msgid", "msgid_plural") or keyword.startswith("msgstr"):
            if keyword in ("msgctxt", "msgid") and field == "msgstr":  # no blank line between entries
                finish()
                current = fresh()
            if keyword == "msgctxt" or (keyword == "msgid" and field != "msgctxt"):
                current.setdefault("line", number)
            field = "msgstr" if keyword.startswith("msgstr") else keyword
            if keyword.startswith("msgstr["):  # plural forms: the first one is enough here
                if keyword != "msgstr[0]":
                    field = "ignored"
                    continue
            current[field] = _unquote(rest, where)
            current["obsolete"] = obsolete
        elif line.startswith('"'):
            if field is None:
                raise ValueError(f"{where}: a continuation line outside an entry")
            if field != "ignored":
                current[field] += _unquote(line, where)
        else:
            raise ValueError(f"{where}: cannot read {raw!r}")
    finish()
    return entries


def placeholders(message: str) -> Tuple[str, ...]:
    """The str.format fields of a message, sorted: a translation must keep exactly these."""
    import string

    names = [name for _text, name, _spec, _conv in string.Formatter().parse(message) if name is not None]
    return tuple(sorted(names))
