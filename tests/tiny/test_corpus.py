import random
import re

import pytest

from mixtral_edu.tiny.corpus import (
    DOMAINS,
    addition_prompts,
    check_addition,
    check_record,
    check_sentence,
    lang_prompts,
    make_corpus,
    sample,
)

CHECKERS = {"arith": check_addition, "lang": check_sentence, "kv": check_record}


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(3000, seed=0)


def test_same_seed_same_corpus_other_seed_differs():
    assert make_corpus(300, seed=7) == make_corpus(300, seed=7)
    assert make_corpus(300, seed=7) != make_corpus(300, seed=8)


def test_sample_is_driven_by_the_rng():
    for domain in DOMAINS:
        a = [sample(domain, random.Random(1)) for _ in range(3)]
        assert len(set(a)) == 1
        rng = random.Random(1)
        assert len({sample(domain, rng) for _ in range(50)}) > 10


def test_corpus_is_balanced_and_mixed(corpus):
    counts = {d: sum(1 for dom, _ in corpus if dom == d) for d in DOMAINS}
    assert counts == {"arith": 1000, "lang": 1000, "kv": 1000}
    # shuffled: the first 30 samples are not all one domain
    assert len({dom for dom, _ in corpus[:30]}) == 3
    sizes = [sum(1 for d, _ in make_corpus(7, 0) if d == dom) for dom in DOMAINS]
    assert sizes == [3, 2, 2]
    assert {d for d, _ in make_corpus(20, 0, domains=("lang",))} == {"lang"}
    weighted = [d for d, _ in make_corpus(400, 0, domains=("arith", "arith", "lang", "kv"))]
    assert weighted.count("arith") == 200 and weighted.count("kv") == 100


def test_every_sample_passes_its_checker(corpus):
    for domain, text in corpus:
        assert CHECKERS[domain](text), (domain, text)
        assert "<s>" not in text and "</s>" not in text and text == text.strip()


def test_checkers_do_not_accept_other_domains(corpus):
    for domain, text in corpus[:300]:
        for other, check in CHECKERS.items():
            if other != domain:
                assert not check(text), (other, text)


def test_arith_shape(corpus):
    arith = [t for d, t in corpus if d == "arith"]
    two_by_two = [t for t in arith if re.fullmatch(r"\d\d\+\d\d=\d+", t)]
    assert 0.7 < len(two_by_two) / len(arith) < 0.9
    assert any(re.match(r"\d\+", t) for t in arith) and any(re.match(r"\d{3}\+", t) for t in arith)


@pytest.mark.parametrize("good", ["37+48=85", "0+0=0", "999+1=1000", "5+474=479"])
def test_check_addition_accepts(good):
    assert check_addition(good)


@pytest.mark.parametrize("bad", ["37+48=84", "37+48=", "37+48=085", "37 + 48 = 85",
                                 "37+48=85 ", "37-48=-11", "+48=48", "a+b=c", ""])
def test_check_addition_rejects(bad):
    assert not check_addition(bad)


@pytest.mark.parametrize("good", [
    "the small cat sees a red ball .",
    "the cats see the dog .",
    "the child runs .",
    "some children run under a tall tree .",
    "the cat near the trees sees some boxes .",  # agrees with "cat", not "trees"
    "these mice carry this hat on the box .",
])
def test_check_sentence_accepts(good):
    assert check_sentence(good)


@pytest.mark.parametrize("bad", [
    "the cats sees the dog .",            # subject-verb agreement
    "the cat see the dog .",
    "the cat near the trees see a box .",  # agreement with the attractor
    "a cats sees the dog .",              # determiner-noun agreement
    "these cat sees the dog .",
    "the ball sees the dog .",            # subjects are animate
    "the cat sees .",                     # transitive verb needs an object
    "the cat sleeps the dog .",           # intransitive verb takes none
    "the cat sees the dog",               # no final " ."
    "the cat sees the dog.",
    "the cat  sees the dog .",            # double space
    "the small small cat sees a dog .",
    "the cat sees a dog near .",
    "the cat sees a dog . the dog sees a cat .",
    "",
])
def test_check_sentence_rejects(bad):
    assert not check_sentence(bad)


@pytest.mark.parametrize("good", [
    '{id: 42, name: "ada", ok: true}',
    "{id: 7}",
    '{ok: false, id: 0, city: "oslo"}',
    "x = 7; y = x + 3;",
    "a = 1; b = a - a; k = b + 12;",
])
def test_check_record_accepts(good):
    assert check_record(good)


@pytest.mark.parametrize("bad", [
    '{id: 42, name: "ada", ok: true',   # unclosed
    '{id: 42, name: ada}',              # unquoted string
    '{id: "42"}',                       # wrong type
    '{id: 42, id: 43}',                 # duplicate key
    '{id: 42, colour: "red"}',          # unknown key
    '{id: 42,name: "ada"}',             # spacing
    "{}",
    "x = 7; y = z + 3;",                # z never assigned
    "x = x + 1;",
    "x = 7; y = x + 3",                 # missing ;
    "x = 7 y = x + 3;",
    "x = 07;",
    "",
])
def test_check_record_rejects(bad):
    assert not check_record(bad)


def test_addition_prompts():
    prompts = addition_prompts(500, seed=0)
    assert prompts == addition_prompts(500, seed=0)
    assert prompts != addition_prompts(500, seed=1)
    assert len({p for p, _ in prompts}) == 500  # distinct
    for prompt, answer in prompts:
        assert re.fullmatch(r"[1-9]\d\+[1-9]\d=", prompt)
        assert check_addition(prompt + answer)
    assert len(addition_prompts(8100, seed=3)) == 8100
    # a salted stream: not simply the arith samples of the corpus with the same seed
    train = [t for d, t in make_corpus(60, seed=0) if d == "arith"]
    assert [p + a for p, a in addition_prompts(20, seed=0)] != train[:20]


def test_lang_prompts_are_sentence_starts():
    prompts = lang_prompts(200, seed=0)
    assert prompts == lang_prompts(200, seed=0) and prompts != lang_prompts(200, seed=1)
    finish = {"sg": " sees a dog .", "pl": " see a dog ."}
    for prompt in prompts:
        singular = check_sentence(prompt + finish["sg"])
        plural = check_sentence(prompt + finish["pl"])
        assert singular != plural, prompt  # exactly one agreeing verb form works
    assert 0.3 < sum(check_sentence(p + finish["sg"]) for p in prompts) / 200 < 0.7


@pytest.mark.parametrize("call, word", [
    (lambda: sample("poetry", random.Random(0)), "poetry"),
    (lambda: make_corpus(10, 0, domains=("arith", "poetry")), "poetry"),
    (lambda: make_corpus(10, 0, domains=()), "domains"),
    (lambda: make_corpus(-1, 0), "n_samples"),
    (lambda: addition_prompts(-1, 0), "n"),
    (lambda: addition_prompts(8101, 0), "8100"),
    (lambda: lang_prompts(-5, 0), "n"),
])
def test_bad_input_raises_helpful_value_error(call, word):
    with pytest.raises(ValueError, match=word):
        call()
