"""A tiny synthetic corpus with three domains whose tokens look different.

* ``"arith"``: integer additions such as ``37+48=85`` (always correct).
* ``"lang"``:  sentences of a small English-like grammar with number
  agreement, such as ``the small cat sees a red ball .``
* ``"kv"``:    key-value records ``{id: 42, name: "ada", ok: true}`` and
  little programs ``x = 7; y = x + 3;``

The domains share almost no tokens (digits and ``+=`` / lowercase words /
braces, quotes, colons and semicolons), so a mixture-of-experts router has
an easy signal to specialise its experts on.

Everything is deterministic given a seed and uses only the standard library.
Samples carry no special tokens: the trainer wraps each one as
``<s>`` + text + ``</s>`` and packs them, so ``</s>`` is what tells a model
that an answer (e.g. the digits after ``=``) is finished.
"""

import random
import re

DOMAINS = ("arith", "lang", "kv")


def _check_domain(domain):
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; use one of {DOMAINS}")


def _check_count(name, n):
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {n!r}; pass a count such as 1000")


# --------------------------------------------------------------------------
# arith: "a+b=c"
# --------------------------------------------------------------------------

# Digits in normal order (what learners read). The tokenizer makes every
# digit its own token, so the model sees "3 7 + 4 8 = 8 5" and can learn
# digit-wise addition with carries.
_DIGIT_RANGES = {1: (0, 9), 2: (10, 99), 3: (100, 999)}
_ADDITION_RE = re.compile(r"(0|[1-9][0-9]*)\+(0|[1-9][0-9]*)=(0|[1-9][0-9]*)")


def _arith(rng):
    # Mostly (80%) two-digit + two-digit, the held-out task: addition in
    # normal digit order is the hardest thing in the corpus for a tiny model,
    # so it gets most of the arith budget. The rest mixes in one- and
    # three-digit operands so the model cannot just memorise a length.
    if rng.random() < 0.8:
        n_a = n_b = 2
    else:
        n_a, n_b = rng.choice((1, 2, 3)), rng.choice((1, 2, 3))
    a = rng.randint(*_DIGIT_RANGES[n_a])
    b = rng.randint(*_DIGIT_RANGES[n_b])
    return f"{a}+{b}={a + b}"


def check_addition(text):
    """True iff ``text`` is exactly ``a+b=c`` with ``a + b == c`` (no spaces)."""
    m = _ADDITION_RE.fullmatch(text) if isinstance(text, str) else None
    return bool(m) and int(m[1]) + int(m[2]) == int(m[3])


def addition_prompts(n, seed):
    """``n`` distinct held-out prompts ``("37+48=", "85")``, two-digit + two-digit.

    They are drawn from their own random stream (the seed is salted), so they
    do not follow the training corpus' sequence even for the same seed.
    There are only 90 * 90 = 8100 such pairs and a training corpus of a few
    thousand arith samples already contains most of them, so this measures
    whether the model learnt to add reliably, not generalisation to unseen
    pairs.
    """
    _check_count("n", n)
    if n > 90 * 90:
        raise ValueError(f"n={n} but only 8100 two-digit pairs exist; ask for n <= 8100")
    rng = random.Random(f"addition_prompts:{seed}")
    pairs = [divmod(i, 90) for i in rng.sample(range(90 * 90), n)]
    return [(f"{10 + i}+{10 + j}=", str(20 + i + j)) for i, j in pairs]


# --------------------------------------------------------------------------
# lang: a small context-free grammar with agreement
#
#   S   -> NP[subj, n] VP[n] "."
#   NP  -> Det[n] (Adj) N[n] (PP)        subject NPs: animate nouns only,
#   PP  -> P Det[m] (Adj) N[m]           PP noun may disagree ("the cat near the trees sees")
#   VP  -> Vi[n] (PP) | Vt[n] Det[m] (Adj) N[m] (PP)
#
# No word starts with a vowel, which sidesteps "a" vs "an".
# --------------------------------------------------------------------------

_DETS = {"sg": ("a", "the", "this"), "pl": ("the", "some", "these")}
_ADJS = ("small", "big", "red", "tall", "happy", "green", "quick", "lazy")
_PREPS = ("in", "on", "near", "under")
_ANIMATE = {"cat": "cats", "dog": "dogs", "bird": "birds", "fox": "foxes",
            "mouse": "mice", "child": "children", "girl": "girls", "boy": "boys"}
_THINGS = {"ball": "balls", "box": "boxes", "tree": "trees", "house": "houses",
           "book": "books", "cup": "cups", "hat": "hats"}
_TRANSITIVE = {"sees": "see", "likes": "like", "chases": "chase", "finds": "find",
               "wants": "want", "holds": "hold", "watches": "watch", "carries": "carry"}
_INTRANSITIVE = {"sleeps": "sleep", "runs": "run"}

# Reverse lookups for the checker: word -> (number, ...).
_DET_NUMBERS = {}
for _n, _words in _DETS.items():
    for _w in _words:
        _DET_NUMBERS.setdefault(_w, set()).add(_n)
_NOUN_INFO = {}  # word -> (number, animate)
for _table, _animate in ((_ANIMATE, True), (_THINGS, False)):
    for _sg, _pl in _table.items():
        _NOUN_INFO[_sg] = ("sg", _animate)
        _NOUN_INFO[_pl] = ("pl", _animate)
_VERB_INFO = {}  # word -> (number, transitive)
for _table, _transitive in ((_TRANSITIVE, True), (_INTRANSITIVE, False)):
    for _sg, _pl in _table.items():
        _VERB_INFO[_sg] = ("sg", _transitive)
        _VERB_INFO[_pl] = ("pl", _transitive)


def _noun_phrase(rng, number, nouns, adj_p=0.5):
    words = [rng.choice(_DETS[number])]
    if rng.random() < adj_p:
        words.append(rng.choice(_ADJS))
    sg = rng.choice(sorted(nouns))
    words.append(sg if number == "sg" else nouns[sg])
    return words


def _any_number(rng):
    return rng.choice(("sg", "pl"))


def _pp(rng):
    return [rng.choice(_PREPS)] + _noun_phrase(rng, _any_number(rng), {**_ANIMATE, **_THINGS})


def _lang(rng):
    number = _any_number(rng)
    words = _noun_phrase(rng, number, _ANIMATE)
    if rng.random() < 0.15:
        words += _pp(rng)  # an "attractor" between subject and verb
    if rng.random() < 0.8:
        sg = rng.choice(sorted(_TRANSITIVE))
        words.append(sg if number == "sg" else _TRANSITIVE[sg])
        words += _noun_phrase(rng, _any_number(rng), {**_ANIMATE, **_THINGS})
    else:
        sg = rng.choice(sorted(_INTRANSITIVE))
        words.append(sg if number == "sg" else _INTRANSITIVE[sg])
    if rng.random() < 0.3:
        words += _pp(rng)
    return " ".join(words) + " ."


def _parse_np(words, i, animate_only, allow_pp):
    """Parse an NP starting at ``words[i]``; return (next index, number) or None."""
    numbers = _DET_NUMBERS.get(words[i] if i < len(words) else None)
    if not numbers:
        return None
    i += 1
    if i < len(words) and words[i] in _ADJS:
        i += 1
    info = _NOUN_INFO.get(words[i] if i < len(words) else None)
    if info is None or info[0] not in numbers or (animate_only and not info[1]):
        return None
    i += 1
    if allow_pp and i < len(words) and words[i] in _PREPS:
        inner = _parse_np(words, i + 1, animate_only=False, allow_pp=False)
        if inner is None:
            return None
        i = inner[0]
    return i, info[0]


def check_sentence(text):
    """True iff ``text`` is one complete grammatical sentence ending in ``" ."``.

    Checks word categories, determiner-noun and subject-verb agreement,
    animate subjects and exact single spacing. To judge a model completion,
    cut it after the first sentence: ``s = (prefix + completion)`` then
    ``check_sentence(s[: s.index(" .") + 2])``.
    """
    if not isinstance(text, str) or not text.endswith(" ."):
        return False
    words = text[:-2].split(" ")
    subject = _parse_np(words, 0, animate_only=True, allow_pp=True)
    if subject is None or subject[0] >= len(words):
        return False
    i, number = subject
    verb = _VERB_INFO.get(words[i])
    if verb is None or verb[0] != number:
        return False
    i += 1
    if verb[1]:  # transitive: needs an object
        obj = _parse_np(words, i, animate_only=False, allow_pp=False)
        if obj is None:
            return False
        i = obj[0]
    if i < len(words) and words[i] in _PREPS:
        pp = _parse_np(words, i + 1, animate_only=False, allow_pp=False)
        if pp is None:
            return False
        i = pp[0]
    return i == len(words)


def lang_prompts(n, seed):
    """``n`` sentence prefixes (a subject NP such as ``"the small cat"``) for a model to complete.

    Half singular, half plural on average, so completions test agreement.
    Drawn from a salted seed, i.e. a different stream than the corpus.
    """
    _check_count("n", n)
    rng = random.Random(f"lang_prompts:{seed}")
    return [" ".join(_noun_phrase(rng, _any_number(rng), _ANIMATE)) for _ in range(n)]


# --------------------------------------------------------------------------
# kv: records {id: 42, name: "ada", ok: true} and programs x = 7; y = x + 3;
# --------------------------------------------------------------------------

_NAMES = ("ada", "alan", "grace", "linus", "guido", "barbara", "ken", "margaret")
_CITIES = ("paris", "lagos", "lima", "oslo", "delhi", "tokyo")
# Field order is canonical in generated records; the checker only requires
# each key once with a value of the right type.
_FIELD_TYPES = {"id": "int", "name": "str", "age": "int", "city": "str", "ok": "bool"}
_VALUE_RES = {"int": re.compile(r"0|[1-9][0-9]*"), "str": re.compile(r'"[a-z]+"'),
              "bool": re.compile(r"true|false")}
_VARS = "xyzabnk"
_ATOM = r"(?:[a-z]|0|[1-9][0-9]*)"
_STATEMENT_RE = re.compile(rf"([a-z]) = ({_ATOM})(?: [+-] ({_ATOM}))?")


def _record(rng):
    others = [k for k in _FIELD_TYPES if k != "id" and rng.random() < 0.5]
    values = {"id": rng.randint(0, 999), "name": f'"{rng.choice(_NAMES)}"',
              "age": rng.randint(1, 99), "city": f'"{rng.choice(_CITIES)}"',
              "ok": rng.choice(("true", "false"))}
    return "{" + ", ".join(f"{k}: {values[k]}" for k in ["id"] + others) + "}"


def _program(rng):
    names = rng.sample(_VARS, rng.randint(2, 4))
    statements = [f"{names[0]} = {rng.randint(0, 20)};"]
    for k, name in enumerate(names[1:], start=1):
        left = rng.choice(names[:k])  # only variables that already exist
        right = rng.choice([str(rng.randint(1, 9)), rng.choice(names[:k])])
        statements.append(f"{name} = {left} {rng.choice('+-')} {right};")
    return " ".join(statements)


def _kv(rng):
    return _record(rng) if rng.random() < 0.6 else _program(rng)


def check_record(text):
    """True iff ``text`` is a well-formed kv sample (either kind).

    A record ``{key: value, ...}`` needs known keys, each at most once, with
    values of the key's type. A program ``x = 7; y = x + 3;`` may only read
    variables assigned earlier.
    """
    if not isinstance(text, str):
        return False
    if text.startswith("{"):
        if not text.endswith("}") or len(text) < 3:
            return False
        seen = set()
        for field in text[1:-1].split(", "):
            key, sep, value = field.partition(": ")
            kind = _FIELD_TYPES.get(key)
            if not sep or kind is None or key in seen or not _VALUE_RES[kind].fullmatch(value):
                return False
            seen.add(key)
        return True
    if not text.endswith(";"):
        return False
    defined = set()
    for statement in text[:-1].split("; "):
        m = _STATEMENT_RE.fullmatch(statement)
        if m is None:
            return False
        for atom in (m[2], m[3]):
            if atom is not None and atom.isalpha() and atom not in defined:
                return False
        defined.add(m[1])
    return True


# --------------------------------------------------------------------------
# Public sampling API
# --------------------------------------------------------------------------

_GENERATORS = {"arith": _arith, "lang": _lang, "kv": _kv}


def sample(domain, rng):
    """One sample of ``domain`` (no special tokens), drawn from ``rng``."""
    _check_domain(domain)
    return _GENERATORS[domain](rng)


def make_corpus(n_samples, seed, domains=DOMAINS):
    """``n_samples`` ``(domain, text)`` pairs, balanced across ``domains``, shuffled.

    Each entry of ``domains`` gets ``n_samples // len(domains)`` samples (the
    first few one more for the remainder); list a domain twice to double its
    share, e.g. ``("arith", "arith", "lang", "kv")``. The order is shuffled so
    that packed training sequences mix domains.
    """
    _check_count("n_samples", n_samples)
    domains = tuple(domains)
    if not domains:
        raise ValueError(f"domains is empty; pass a subset of {DOMAINS}")
    for domain in domains:
        _check_domain(domain)
    rng = random.Random(seed)
    plan = [domains[i % len(domains)] for i in range(n_samples)]
    rng.shuffle(plan)
    return [(domain, sample(domain, rng)) for domain in plan]


def samples_by_domain(n_samples, seed, domains=DOMAINS):
    """``{domain: [text, ...]}``, ``n_samples`` texts of each domain on its own.

    ``samples_by_domain(32, evaluate.EVAL_SEED)`` gives held-out texts (training
    uses small seeds), e.g. for ``mixtral_edu.viz.balance_stats``.
    """
    return {d: [text for _, text in make_corpus(n_samples, seed, domains=(d,))] for d in domains}
