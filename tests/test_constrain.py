"""segtext.constrain: the token automaton against languages enumerated in plain Python, and
against the strict decoders with Qwen2's real tokenizer."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

import segtext as st

pytest.importorskip("transformers")
from segtext.constrain import BSDLogitsProcessor, RRLELogitsProcessor, TokenAutomaton  # noqa: E402
from segtext.tokens import add_format_tokens, byte_level_tokenizer, token_bytes  # noqa: E402

# merged tokens that span several pieces of the formats, or parts of labels
MERGES = [("Ġ", "*"), ("|", "Ġ"), ("Ċ", "Ġ"), ("o", "t"), ("ot", "h"), ("oth", "e"), ("othe", "r"),
          ("other", "s"), ("d", "o"), ("do", "g"), ("Ġ", "d"), ("Ġd", "o"), ("Ġdo", "g"), ("1", "Ċ"),
          ("<", "s"), ("<s", "e"), ("<se", "g"), ("<seg", ">"), ("<", "/"), ("Ġ*", "1"), ("|Ġ", "d"),
          ("2", "Ċ"), ("s", "Ġ*"), ("Ċ", "<"), ("Ċ<", "/"), ("1", "2"), ("<", "f"), ("<f", "g"), ("<fg", "_"),
          ("_", "1"), ("1", ">"), (">", "<"), ("Ã", "©"), ("[", "0"), ("0", ","), (",", "0"), ("]", "<")]


@pytest.fixture(scope="module")
def tok():
    return byte_level_tokenizer(MERGES)


# --------------------------------------------------------------------------- enumerated languages


def _runs(n, labels, canonical, prev=None):
    """Every run sequence (label, count) with counts summing to n."""
    if n == 0:
        yield []
        return
    for lab in labels:
        if canonical and lab == prev:
            continue
        for c in range(1, n + 1):
            for rest in _runs(n - c, labels, canonical, lab):
                yield [(lab, c), *rest]


def grid_language(labels, h, w, fmt, canonical=False):
    if fmt == "irle":
        lines = ["| ".join(f"{a} *{c}" for a, c in runs) for runs in _runs(h * w, labels, canonical)]
        return {f"<seg>{line}\n</seg>".encode() for line in lines}
    if fmt == "isd":
        rows = ["| ".join(cells) for cells in itertools.product(labels, repeat=w)]
    else:
        rows = ["| ".join(f"{a} *{c}" for a, c in runs) for runs in _runs(w, labels, canonical)]
    return {("<seg>" + "\n ".join(combo) + "\n</seg>").encode() for combo in itertools.product(rows, repeat=h)}


def _bricks(n, S, max_run, row_wise, done=0):
    if n == 0:
        yield ""
        return
    cap = min(max_run, n)
    if row_wise:
        cap = min(cap, S - done % S)
    for kind in ("fg", "bg"):
        for k in range(1, cap + 1):
            for rest in _bricks(n - k, S, max_run, row_wise, done + k):
                yield f"<{kind}_{k}>" + rest


def bsd_language(labels, S, max_run, row_wise, W, H, max_objects):
    boxes = [(x1, y1, x2, y2) for x1 in range(W) for x2 in range(x1 + 1, W + 1)
             for y1 in range(H) for y2 in range(y1 + 1, H + 1)]
    blocks = [f"<ref>{lab}</ref><box>[{x1},{y1},{x2},{y2}]</box><seg>{b}</seg>"
              for lab in labels for (x1, y1, x2, y2) in boxes for b in _bricks(S * S, S, max_run, row_wise)]
    out = set()
    for n in range(1, max_objects + 1):
        out |= {"".join(c).encode() for c in itertools.product(blocks, repeat=n)}
    return out


def _prefixes(language):
    return {t[:i] for t in language for i in range(len(t) + 1)}


def _naive_allowed(prefix, language, prefixes, pieces, eos):
    ok = {i for i, p in enumerate(pieces) if p and i not in eos and prefix + p in prefixes}
    if prefix in language:
        ok |= set(eos)
    return ok


def _check_against(auto, tok, language, n_texts=40, seed=0):
    rng = random.Random(seed)
    prefixes = _prefixes(language)
    pieces = token_bytes(tok)
    eos = set(auto.eos_token_id)
    texts = sorted(language)
    sample = rng.sample(texts, min(n_texts, len(texts)))
    for t in texts:  # every text of the language is accepted
        assert auto.accepts(t), t
    seen = set()
    for t in sample:  # the allowed sets at every prefix equal the brute-force ones
        for i in range(len(t) + 1):
            p = t[:i]
            if p in seen:
                continue
            seen.add(p)
            state = auto.feed(auto.start(), p)
            assert state is not None, p
            assert set(auto.allowed(state).tolist()) == _naive_allowed(p, language, prefixes, pieces, eos), p
    for t in sample:  # one-byte mutations: refused exactly when they leave the language's prefixes
        for _ in range(10):
            j = rng.randrange(len(t))
            m = rng.choice([t[:j] + t[j + 1:], t[:j] + bytes([rng.choice(b"<>| *\n0123456789oda")]) + t[j:],
                            t[:j] + bytes([rng.randrange(256)]) + t[j + 1:]])
            assert (auto.feed(auto.start(), m) is not None) == (m in prefixes), m
            assert auto.accepts(m) == (m in language), m
    for _ in range(30):  # random walks over allowed tokens end in the language
        state, text = auto.start(), b""
        while True:
            allowed = auto.allowed(state)
            assert len(allowed), text
            t = int(rng.choice(allowed.tolist()))
            if t in eos:
                break
            text += pieces[t]
            state = auto.advance(state, t)
        assert text in language, text


@pytest.mark.parametrize("labels", [["others", "dog"], ["others", "dog", "dog house"], ["others", "é", "éa"]])
@pytest.mark.parametrize("fmt, h, w, canonical", [
    ("rrle", 2, 3, False), ("rrle", 2, 3, True), ("isd", 2, 2, False),
    ("irle", 2, 2, False), ("irle", 2, 2, True),
])
def test_grid_automaton_is_the_enumerated_language(tok, labels, fmt, h, w, canonical):
    language = grid_language(labels, h, w, fmt, canonical)
    auto = TokenAutomaton.for_grid(tok, labels, (h, w), format=fmt, canonical=canonical)
    _check_against(auto, tok, language)


def test_grid_automaton_two_digit_counts(tok):
    """A 1 x 12 row, canonical: counts of two digits, each bounded by what is left of the row."""
    language = grid_language(["others", "dog"], 1, 12, "rrle", canonical=True)
    _check_against(TokenAutomaton.for_grid(tok, ["others", "dog"], (1, 12), canonical=True), tok, language)


def test_grid_automaton_one_label_canonical(tok):
    """One label, canonical: a row is one run, so '|' is never allowed and counts are exact."""
    language = grid_language(["others"], 3, 13, "rrle", canonical=True)
    assert language == {b"<seg>others *13\n others *13\n others *13\n</seg>"}
    auto = TokenAutomaton.for_grid(tok, ["others"], (3, 13), canonical=True)
    _check_against(auto, tok, language)


@pytest.mark.parametrize("S, max_run, row_wise, W, H, labels, max_objects", [
    (2, 3, False, 2, 2, ["cat", "cat toy"], 1),
    (2, 4, True, 2, 1, ["cat"], 1),
    (1, 1, False, 1, 1, ["a"], 3),
    (2, 2, False, 1, 2, ["é"], 1),
])
def test_bsd_automaton_is_the_enumerated_language(tok, S, max_run, row_wise, W, H, labels, max_objects):
    language = bsd_language(labels, S, max_run, row_wise, W, H, max_objects)
    auto = TokenAutomaton.for_bsd(tok, labels, resolution=S, box_format="pixel", image_size=(H, W),
                                  max_objects=max_objects, max_run=max_run, row_wise=row_wise)
    _check_against(auto, tok, language)


def test_bsd_automaton_with_brick_tokens():
    tok = byte_level_tokenizer(MERGES)
    add_format_tokens(tok, ("bsd", "tags"), max_run=3)
    language = bsd_language(["cat"], 2, 3, False, 2, 1, 1)
    auto = TokenAutomaton.for_bsd(tok, ["cat"], resolution=2, box_format="pixel", image_size=(1, 2), max_run=3,
                                  max_objects=1)
    _check_against(auto, tok, language)


# --------------------------------------------------------------------------- hand-made cases


@pytest.mark.parametrize("text, ok", [
    ("<seg>others *2| dog *2\n others *4\n</seg>", True),
    ("<seg>others *2| dog *2\n others *4\n</seg>\n", False),   # nothing after </seg>
    ("<seg>others *2| dog *2\n others *4</seg>", False),       # the last row's newline
    ("<seg>others *2| dog *02\n others *4\n</seg>", False),    # a leading zero
    ("<seg>others *0| dog *4\n others *4\n</seg>", False),
    ("<seg>others *2| dog *3\n others *3\n</seg>", False),     # a row over its width
    ("<seg>others *2| dog *2\n</seg>", False),                 # a row missing
    ("<seg>others *2|dog *2\n others *4\n</seg>", False),
    ("<seg>others*2| dog *2\n others *4\n</seg>", False),
    ("<seg>Others *2| dog *2\n others *4\n</seg>", False),
    ("<seg>others *2| cat *2\n others *4\n</seg>", False),
    ("others *2| dog *2\n others *4\n", False),                # start="answer": the tags are part of it
    ("<seg>others *2| others *2\n others *4\n</seg>", True),   # not canonical by default
])
def test_grid_cases(tok, text, ok):
    auto = TokenAutomaton.for_grid(tok, ["others", "dog"], (2, 4))
    assert auto.accepts(text) is ok


def test_start_seg_free_text(tok):
    auto = TokenAutomaton.for_grid(tok, ["others", "dog"], (1, 2), start="seg")
    assert auto.accepts("Sure, here it is: <seg>others *1| dog *1\n</seg>")
    assert auto.accepts("<seg>dog *2\n</seg>")
    assert not auto.accepts("Sure <b>x</b> <seg>dog *2\n</seg>")  # '<' only starts <seg>
    assert not auto.accepts("Sure, here it is")                     # no mask: never complete
    state = auto.feed(auto.start(), "The dog is here")
    assert tok.eos_token_id not in auto.allowed(state).tolist()
    b = TokenAutomaton.for_bsd(tok, ["cat"], resolution=1, start="seg", max_objects=1)
    assert b.accepts("Found one. <ref>cat</ref><box>[0,0,10,10]</box><seg><bg_1></seg>")


@pytest.mark.parametrize("text, ok", [
    ("<ref>cat</ref><box>[0,0,1000,1000]</box><seg><fg_3><bg_1></seg>", True),
    ("<ref>cat</ref><box>[0,0,1000,1000]</box><seg><fg_3><bg_1></seg><ref>dog</ref>"
     "<box>[10,20,30,40]</box><seg><bg_4></seg>", True),
    ("<ref>cat</ref><box>[0,0,1001,1000]</box><seg><fg_3><bg_1></seg>", False),
    ("<ref>cat</ref><box>[5,0,5,1000]</box><seg><fg_3><bg_1></seg>", False),   # x1 < x2
    ("<ref>cat</ref><box>[0,7,9,7]</box><seg><fg_3><bg_1></seg>", False),       # y1 < y2
    ("<ref>cat</ref><box>[0,0,0500,1000]</box><seg><fg_3><bg_1></seg>", False),
    ("<ref>cat</ref><box>[0,0,500,1000]</box><seg><fg_3><bg_2></seg>", False),  # 5 cells of 4
    ("<ref>cat</ref><box>[0,0,500,1000]</box><seg><fg_3></seg>", False),
    ("<ref>cat</ref><box>[0,0,500,1000]</box><seg><fg_03><bg_1></seg>", False),
    ("<ref>cat</ref><box>[0,0,500,1000]</box><seg><fg_1><fg_2><bg_1></seg>", True),
    ("<ref>bird</ref><box>[0,0,500,1000]</box><seg><fg_4></seg>", False),
    ("", False),
])
def test_bsd_cases(tok, text, ok):
    auto = TokenAutomaton.for_bsd(tok, ["cat", "dog"], resolution=2)
    assert auto.accepts(text) is ok


def test_bsd_free_labels_presets_and_limits(tok):
    free = TokenAutomaton.for_bsd(tok, None, resolution=1, max_label_length=10)
    assert free.accepts("<ref>the cat é</ref><box>[0,0,1,1]</box><seg><fg_1></seg>")
    assert not free.accepts("<ref></ref><box>[0,0,1,1]</box><seg><fg_1></seg>")           # empty
    assert not free.accepts("<ref>a<b</ref><box>[0,0,1,1]</box><seg><fg_1></seg>")        # '<'
    assert not free.accepts("<ref>a\nb</ref><box>[0,0,1,1]</box><seg><fg_1></seg>")       # control
    assert not free.accepts("<ref>elevenchars</ref><box>[0,0,1,1]</box><seg><fg_1></seg>")  # too long
    assert not free.accepts(b"<ref>\xc3</ref><box>[0,0,1,1]</box><seg><fg_1></seg>")      # cut UTF-8
    q = TokenAutomaton.for_bsd(tok, ["cat"], resolution=1, box_format="qwen2vl")
    assert q.accepts("<|object_ref_start|>cat<|object_ref_end|><|box_start|>(1,2),(3,4)<|box_end|><seg><bg_1></seg>")
    assert not q.accepts("<ref>cat</ref><box>[1,2,3,4]</box><seg><bg_1></seg>")
    px = TokenAutomaton.for_bsd(tok, ["cat"], resolution=1, box_format="pixel", image_size=(20, 10))
    assert px.accepts("<ref>cat</ref><box>[0,0,10,20]</box><seg><bg_1></seg>")
    assert not px.accepts("<ref>cat</ref><box>[0,0,11,20]</box><seg><bg_1></seg>")
    two = TokenAutomaton.for_bsd(tok, ["cat"], resolution=1, max_objects=2)
    block = "<ref>cat</ref><box>[0,0,1,1]</box><seg><bg_1></seg>"
    assert two.accepts(block * 2) and not two.accepts(block * 3)
    custom = TokenAutomaton.for_bsd(tok, ["cat"], resolution=2, fg_token="F{k}", bg_token="B{k}")
    assert custom.accepts("<ref>cat</ref><box>[0,0,1,1]</box><seg>F1B2F1</seg>")
    assert not custom.accepts("<ref>cat</ref><box>[0,0,1,1]</box><seg>F1B2F2</seg>")


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(labels=["others", "dog"], grid_size=0), ValueError, "grid_size"),
    (dict(labels=["others", "a | b"], grid_size=2), ValueError, "separator"),
    (dict(labels=["others", "others"], grid_size=2), ValueError, "twice"),
    (dict(labels=["others"], grid_size=2, format="rle"), ValueError, "format"),
    (dict(labels=["others"], grid_size=2, format="isd", canonical=True), ValueError, "canonical"),
    (dict(labels=["others"], grid_size=2, canonical=1), TypeError, "canonical"),
    (dict(labels=["others"], grid_size=2, start="text"), ValueError, "start"),
    (dict(labels=["others"], grid_size=2, eos_token_id=-1), ValueError, "eos_token_id"),
])
def test_grid_argument_errors(tok, kwargs, err, match):
    with pytest.raises(err, match=match):
        RRLELogitsProcessor(tok, **kwargs)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(resolution=0), ValueError, "resolution"),
    (dict(box_format="xyxy"), ValueError, "box_format"),
    (dict(box_format="pixel"), ValueError, "image_size"),
    (dict(max_objects=0), ValueError, "max_objects"),
    (dict(labels="cat"), TypeError, "labels"),
    (dict(labels=["c<ref>at"]), ValueError, "tag"),
    (dict(labels=["cat", "cat"]), ValueError, "twice"),
    (dict(max_label_length=0), ValueError, "max_label_length"),
    (dict(fg_token="</seg{k}>", bg_token="<bg_{k}>"), ValueError, "start differently"),
])
def test_bsd_argument_errors(tok, kwargs, err, match):
    with pytest.raises(err, match=match):
        BSDLogitsProcessor(tok, **kwargs)


# --------------------------------------------------------------------------- Qwen2's tokenizer


LABELS = ["others", "dog", "dog house", "traffic light", "chien é"]


@settings(max_examples=25)
@given(data=hs.data())
def test_encoder_texts_are_allowed_token_by_token(qwen_tokenizer, data):
    h = data.draw(hs.integers(1, 8))
    w = data.draw(hs.integers(1, 8))
    n = data.draw(hs.integers(1, len(LABELS)))
    fmt = data.draw(hs.sampled_from(["rrle", "isd", "irle"]))
    grid = np.array(data.draw(hs.lists(hs.integers(0, n - 1), min_size=h * w, max_size=h * w))).reshape(h, w)
    labels = LABELS[:n]
    encode = {"rrle": st.encode_rrle, "isd": st.encode_isd, "irle": st.encode_irle}[fmt]
    text = "<seg>" + encode(grid, labels) + "</seg>"
    auto = TokenAutomaton.for_grid(qwen_tokenizer, labels, (h, w), format=fmt, canonical=fmt != "isd")
    state = auto.start()
    for t in qwen_tokenizer(text, add_special_tokens=False).input_ids:
        assert t in set(auto.allowed(state).tolist())
        state = auto.advance(state, t)
    assert auto.is_accepting(state) and qwen_tokenizer.eos_token_id in auto.allowed(state).tolist()


def test_bsd_encoder_texts_are_allowed_token_by_token(qwen_tokenizer, sample_annotations):
    import copy

    with_bricks = copy.deepcopy(qwen_tokenizer)
    add_format_tokens(with_bricks, ("bsd",))
    rles = [a["segmentation"] for a in sample_annotations[:30]]
    for tok_ in (qwen_tokenizer, with_bricks):
        for S, preset in ((16, "norm1000"), (32, "qwen2vl")):
            auto = TokenAutomaton.for_bsd(tok_, None, resolution=S, box_format=preset)
            for i in range(0, 30, 6):
                objects = [(f"thing {j}", r) for j, r in enumerate(rles[i:i + 3]) if r["size"] == rles[i]["size"]]
                text = st.encode_bsd(objects, tuple(rles[i]["size"]), resolution=S, box_format=preset)
                state = auto.start()
                for t in tok_(text, add_special_tokens=False).input_ids:
                    assert t in set(auto.allowed(state).tolist()), text
                    state = auto.advance(state, t)
                assert auto.is_accepting(state)


def test_random_walks_decode_strictly(qwen_tokenizer):
    """Whatever the automaton lets a sampler write decodes in strict mode, to the requested grid."""
    rng = np.random.default_rng(0)
    eos = qwen_tokenizer.eos_token_id
    for fmt, size, canonical in (("rrle", (16, 16), False), ("rrle", (6, 9), True), ("isd", (4, 5), False),
                                 ("irle", (5, 5), True)):
        auto = TokenAutomaton.for_grid(qwen_tokenizer, LABELS, size, format=fmt, canonical=canonical, start="seg")
        for _ in range(15):
            # free text first (a uniform walk would hardly ever pick the '<' that starts <seg>)
            ids = qwen_tokenizer("Sure, the mask is <seg>", add_special_tokens=False).input_ids
            state = auto.start()
            for t in ids:
                state = auto.advance(state, t)
            while True:
                allowed = auto.allowed(state)
                t = int(rng.choice(allowed))
                if t == eos:
                    break
                ids.append(t)
                state = auto.advance(state, t)
                if len(ids) > 3000:
                    raise AssertionError("a walk did not finish")
            text = qwen_tokenizer.decode(ids)
            res = st.decode_rrle(text, LABELS, size, mode="strict")
            assert res.grid.shape == size and res.ok
            if canonical:
                assert "<seg>" + {"rrle": st.encode_rrle, "irle": st.encode_irle}[fmt](res.grid, LABELS) in text
    auto = TokenAutomaton.for_bsd(qwen_tokenizer, None, resolution=8, max_objects=3)
    for _ in range(15):
        state, ids = auto.start(), []
        while True:
            t = int(rng.choice(auto.allowed(state)))
            if t == eos:
                break
            ids.append(t)
            state = auto.advance(state, t)
        text = qwen_tokenizer.decode(ids)
        res = st.decode_bsd(text, (480, 640), resolution=8, mode="strict")
        assert 1 <= len(res.objects) <= 3 and res.ok


# --------------------------------------------------------------------------- the fast paths against the plain ones


def _spelled(*texts):
    """Merges that make each text one token (built a byte at a time, in byte-level spelling)."""
    from segtext.tokens import _byte_alphabet

    alphabet = _byte_alphabet()
    merges = []
    for text in texts:
        s = [alphabet[b] for b in text.encode()]
        for i in range(1, len(s)):
            pair = ("".join(s[:i]), s[i])
            if pair not in merges:
                merges.append(pair)
    return merges


def test_canonical_rows_against_the_enumerated_language():
    """A token that crosses three row ends: rows far enough from the last share one allowed set,
    and the allowed sets still equal the brute-force ones."""
    tok = byte_level_tokenizer(MERGES + _spelled("1\n others *1\n dog *1\n ", "s *1\n "))
    for fmt, h, w in (("rrle", 7, 1), ("isd", 6, 1), ("rrle", 6, 2)):
        language = grid_language(["others", "dog"], h, w, fmt)
        auto = TokenAutomaton.for_grid(tok, ["others", "dog"], (h, w), format=fmt)
        assert auto._canon[2] == 4  # 1 + the three crossings of that token
        _check_against(auto, tok, language)
        states = sorted({auto.feed(auto.start(), t[:i]) for t in sorted(language)[:20] for i in range(len(t))})
        assert any(auto._canonical(s) != s for s in states)  # the canonical path was taken
        _check_memo(auto, states, tok)


def test_canonical_bricks_against_the_enumerated_language():
    """Brick states far enough from the last cell share one allowed set (also row-wise, and with
    a token holding two brick prefixes)."""
    tok = byte_level_tokenizer(MERGES + _spelled("1><fg_1><bg_"))
    rng = random.Random(0)
    for S, max_run, row_wise in ((3, 1, False), (3, 1, True), (3, 2, False)):
        language = bsd_language(["a"], S, max_run, row_wise, 1, 1, 1)
        auto = TokenAutomaton.for_bsd(tok, ["a"], resolution=S, box_format="pixel", image_size=(1, 1),
                                      max_objects=1, max_run=max_run, row_wise=row_wise)
        assert auto._canon[3] == (2 + 2) * max_run + 1
        _check_against(auto, tok, language, n_texts=60)
        states = sorted({auto.feed(auto.start(), t[:i]) for t in rng.sample(sorted(language), 30)
                         for i in range(len(t))})
        changed = [s for s in states if auto._canonical(s) != s]
        assert changed or max_run == 2 and S * S <= auto._canon[3]
        _check_memo(auto, states, tok)


def _plain_advance(auto, state, t):
    """The state after token ``t`` fed byte by byte (no transition memo, no shifted states)."""
    if t in auto.eos_token_id:
        return None
    tr = auto._trie
    return auto._feed_bytes(state, tr.buf, tr.bounds[t], tr.bounds[t + 1]) if tr.bounds[t] < tr.bounds[t + 1] else None


def _check_memo(auto, states, tok):
    """The memoised allowed sets and transitions of ``states`` equal the plain walk and feed."""
    for s in states:
        allowed = auto.allowed(s)
        assert np.array_equal(allowed, auto._walk(s)), s
        for t in range(len(tok)):
            assert auto.advance(s, t) == _plain_advance(auto, s, t), (s, t)


def _walk_states(auto, rng, n_walks, limit=4000):
    """The states of random walks over allowed tokens (EOS ends a walk); free text before the
    answer (``start="seg"``) for three tokens only, then the answer's tag."""
    out = []
    eos = set(auto.eos_token_id)
    for _ in range(n_walks):
        state = auto.start()
        for _ in range(limit):
            out.append(state)
            if auto.in_prefix(state) and len(out) % 4 == 3:
                state = auto.feed(state, "<seg>" if auto._g[0][0] == 0 else "<ref>")
                continue
            allowed = auto._walk(state)
            t = int(rng.choice(allowed))
            if t in eos:
                break
            state = auto.advance(state, t)
    return out


def test_fast_walk_and_memo_equal_the_plain_walk(qwen_tokenizer):
    """With Qwen2's real vocabulary: the children walk equals the preorder walk of the token trie,
    id for id, and the memo (canonical states) equals the plain walk, on every state of random
    answers; transitions from the memo equal fresh ones."""
    import copy

    from segtext._kernels import constrain as CK

    with_bricks = copy.deepcopy(qwen_tokenizer)
    add_format_tokens(with_bricks, ("bsd",))
    rng = np.random.default_rng(1)
    autos = [
        TokenAutomaton.for_grid(qwen_tokenizer, LABELS, (16, 16)),
        TokenAutomaton.for_grid(qwen_tokenizer, LABELS, (12, 7), canonical=True, start="seg"),
        TokenAutomaton.for_grid(qwen_tokenizer, LABELS, (9, 5), format="isd"),
        TokenAutomaton.for_grid(qwen_tokenizer, LABELS, (5, 5), format="irle", canonical=True),
        TokenAutomaton.for_bsd(qwen_tokenizer, ["dog", "cat"], resolution=16, max_objects=2, start="seg"),
        TokenAutomaton.for_bsd(with_bricks, None, resolution=32, max_objects=1, max_run=20, row_wise=True,
                               max_label_length=12),
        TokenAutomaton.for_bsd(with_bricks, ["dog"], resolution=64, max_objects=1),
    ]
    for auto in autos:
        tr = auto._trie
        states = _walk_states(auto, rng, 1)
        fresh = TokenAutomaton(auto.tokenizer, auto._g)
        for i, s in enumerate(states):
            a = np.array(s, np.int64)
            out = np.empty_like(auto._out)
            n = CK.allowed_tokens(*auto._g, a, tr.nb, tr.depth, tr.end, tr.tok_start, tr.toks, tr.max_depth, out)
            m = CK.allowed_kids(*auto._g, a, tr.info, tr.kid_byte, tr.kid_node, tr.toks, *auto._scratch, auto._out)
            assert n == m and np.array_equal(out[:n], auto._out[:m]), s
            assert np.array_equal(auto.allowed(s), auto._walk(s)), s
            for t in auto.allowed(s)[:: max(1, len(auto.allowed(s)) // 8)].tolist():
                assert auto.advance(s, t) == _plain_advance(auto, s, t), (s, t)
                assert fresh.advance(s, t) == auto.advance(s, t)
        assert any(auto._canonical(s) != s for s in states) == (auto._canon is not None)


def test_processor_numpy_path_equals_torch_path(qwen_tokenizer):
    """Scores on the CPU in float32 go through numpy; in another dtype through torch: the same
    refused ids, the same kept scores, and the input scores untouched."""
    torch = pytest.importorskip("torch")
    proc = RRLELogitsProcessor(qwen_tokenizer, ["others", "dog"], (4, 4), start="seg", max_prefix_tokens=3)
    other = RRLELogitsProcessor(qwen_tokenizer, ["others", "dog"], (4, 4), start="seg", max_prefix_tokens=3)
    V = len(qwen_tokenizer) + 7
    g = torch.Generator().manual_seed(0)
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    ids = prompt
    answer = "Sure <seg>others *4\n dog *1| others *3\n others *4\n others *4\n</seg>"
    eos = qwen_tokenizer.eos_token_id
    text = qwen_tokenizer(answer, add_special_tokens=False).input_ids + [eos, eos]  # then a finished row
    for k in range(len(text) + 1):
        scores = torch.randn(2, V, generator=g, dtype=torch.float64)
        keep = scores.clone()
        a = proc(ids, scores)
        b = other(ids, scores.to(torch.bfloat16).to(torch.float32).to(torch.bfloat16))
        assert torch.equal(scores, keep)
        assert a.dtype == torch.float64 and a.shape == (2, V)
        assert torch.equal(torch.isinf(a), torch.isinf(b.to(torch.float64)))
        assert torch.equal(a[~torch.isinf(a)], scores[~torch.isinf(a)])
        if k == len(text):  # row 0 is done: its scores are left alone
            assert torch.equal(a[0], scores[0])
        if k < len(text):
            nxt = torch.tensor([[text[k]], [int(torch.nonzero(~torch.isinf(a[1]))[0])]])
            ids = torch.cat([ids, nxt], dim=1)
    assert proc.refused == other.refused == 0
