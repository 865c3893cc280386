"""The llguidance grammars of segtext.grammar accept what the encoders write and nothing the
strict decoders refuse."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

llg = pytest.importorskip("llguidance")

import segtext  # noqa: E402
from segtext import DecodeError  # noqa: E402
from segtext.grammar import MAX_GRAMMAR_SYMBOLS, bsd_grammar, rrle_grammar  # noqa: E402

# --------------------------------------------------------------------------- the check
#
# llguidance checks grammars against a tokenizer. We give it the smallest honest one: 256
# tokens, token i being the single byte i, plus an end-of-sequence token 256. A string is then
# fed to an LLMatcher one byte per token (consume_tokens); the matcher refuses the first byte
# that no sentence of the grammar can continue with (it returns False and stays in its error
# state), and is_accepting() at the end says that the bytes so far are a complete sentence. So
# "consumed and accepting" means: the whole string is in the grammar's language.


class _ByteTokenizer:
    """A tokenizer whose tokens are the 256 single bytes and an EOS (what TokenizerWrapper reads)."""

    def __init__(self) -> None:
        self.tokens = [bytes([i]) for i in range(256)] + [b"<eos>"]
        self.eos_token_id = 256
        self.bos_token_id = None
        self.special_token_ids = [256]

    def __call__(self, text):
        return list(text if isinstance(text, bytes) else text.encode("utf-8"))


TOKENIZER = llg.LLTokenizer(llg.TokenizerWrapper(_ByteTokenizer()))
EOS = 256


@functools.lru_cache(maxsize=256)
def _matcher(lark: str):
    """The grammar compiled, validated (llguidance reports grammar errors) and built."""
    grammar = llg.grammar_from("lark", lark)
    is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, TOKENIZER)
    assert not is_error, messages
    matcher = llg.LLMatcher(TOKENIZER, grammar, log_level=0)
    # validate_grammar does not catch every limit (grammar.symbols.len() < u16::MAX is only
    # checked when the parser is built): the matcher must not start in an error state
    assert not matcher.is_error(), matcher.get_error()[:500]
    return matcher


def accepts(lark: str, text: str) -> bool:
    """Whether the whole ``text`` is a sentence of the grammar ``lark`` (see above)."""
    m = _matcher(lark).deep_copy()
    return m.consume_tokens(list(text.encode("utf-8"))) and m.is_accepting()


def sample(lark: str, rng: np.random.Generator, limit: int = 20_000) -> str:
    """A random sentence of the grammar: one allowed byte after another until it stops."""
    m = _matcher(lark).deep_copy()
    out = []
    for _ in range(limit):
        if m.is_stopped():
            break
        bits = np.unpackbits(np.frombuffer(m.compute_bitmask(), np.uint8), bitorder="little")
        allowed = np.nonzero(bits[:EOS + 1])[0]
        assert len(allowed), m.get_error()
        if EOS in allowed and (len(allowed) == 1 or rng.random() < 0.5):
            break
        choices = allowed[allowed != EOS]
        # lean towards the bytes that end a piece (digits, separators) so texts stay short
        tok = int(rng.choice(choices))
        assert m.consume_token(tok), m.get_error()
        out.append(tok)
    assert m.is_accepting()
    return bytes(out).decode("utf-8")


# --------------------------------------------------------------------------- strategies

# prefixes of each other, separators inside labels, quotes, backslashes, non-ASCII
POOL = ["dog", "dog house", "dog house 2", "a", "a|b", "x*y", "é日本", "🐕 chien", 'say "hi"',
        "back\\slash", "tab\there", "c"]
ENCODERS = {"rrle": segtext.encode_rrle, "isd": segtext.encode_isd, "irle": segtext.encode_irle}


@st.composite
def grids(draw, max_side=4):
    fg = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=4, unique=True))
    labels = ["others", *fg]
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    grid = draw(hnp.arrays(np.int64, (h, w), elements=st.integers(0, len(labels) - 1)))
    return labels, grid


def strict_ok(text, labels, shape) -> bool:
    try:
        segtext.decode_rrle(text, labels, shape, mode="strict", unknown="error")
    except DecodeError:
        return False
    return True


def rows_of(text: str) -> list[list[tuple[str, str]]]:
    """R-RLE body -> rows of (label, count text)."""
    assert text.endswith("\n")
    return [[tuple(run.rsplit(" *", 1)) for run in row.split("| ")] for row in text[:-1].split("\n ")]


def text_of(rows) -> str:
    return "\n ".join("| ".join(f"{label} *{count}" for label, count in row) for row in rows) + "\n"


def wrap(text: str) -> str:
    return "<seg>" + text + "</seg>"


# --------------------------------------------------------------------------- R-RLE / I-RLE / I-SD


@given(grids(), st.sampled_from(["rrle", "isd", "irle"]))
def test_encoder_output_is_accepted(case, fmt):
    labels, grid = case
    text = wrap(ENCODERS[fmt](grid, labels))
    assert accepts(rrle_grammar(labels, grid.shape, fmt), text)
    if fmt != "isd":  # the encoders never write two adjacent runs of one label
        assert accepts(rrle_grammar(labels, grid.shape, fmt, canonical=True), text)
    assert strict_ok(text, labels, grid.shape)


@given(grids())
def test_rrle_deviations_are_rejected(case):
    labels, grid = case
    h, w = grid.shape
    g = rrle_grammar(labels, (h, w))
    rows = rows_of(segtext.encode_rrle(grid, labels))
    bad = {}
    label, count = rows[0][-1]
    bad["row sum + 1"] = [[*rows[0][:-1], (label, str(int(count) + 1))], *rows[1:]]
    if int(count) > 1:
        bad["row sum - 1"] = [[*rows[0][:-1], (label, str(int(count) - 1))], *rows[1:]]
    if h > 1:
        bad["missing row"] = rows[:-1]
    bad["extra row"] = [*rows, rows[-1]]
    bad["count 0"] = [[*rows[0], ("others", "0")], *rows[1:]]
    bad["leading zero"] = [[(rows[0][0][0], "0" + rows[0][0][1]), *rows[0][1:]], *rows[1:]]
    bad["unknown label"] = [[("zebra", rows[0][0][1]), *rows[0][1:]], *rows[1:]]
    cut = rows[0][0][0][:-1].strip() or "q"  # a label cut short (not a label itself)
    if cut not in labels:
        bad["label cut short"] = [[(cut, rows[0][0][1]), *rows[0][1:]], *rows[1:]]
    for what, r in bad.items():
        text = wrap(text_of(r))
        assert not accepts(g, text), what
        assert not strict_ok(text, labels, (h, w)), what  # the strict decoder agrees
    body = segtext.encode_rrle(grid, labels)
    assert not accepts(g, body), "without <seg>"
    assert not accepts(g, wrap(body[:-1])), "without the final newline"
    if h > 1:
        assert not accepts(g, wrap(body.replace("\n ", "\n"))), "row separator without its space"
    assert not accepts(g, wrap(segtext.encode_isd(grid, labels))), "cells without counts"


@given(grids())
def test_canonical_rejects_split_runs(case):
    labels, grid = case
    h, w = grid.shape
    rows = rows_of(segtext.encode_rrle(grid, labels))
    split = next(((i, j) for i, row in enumerate(rows) for j, (_, c) in enumerate(row) if int(c) > 1), None)
    if split is None:
        return  # every run is one cell: nothing to split
    i, j = split
    label, count = rows[i][j]
    rows[i][j:j + 1] = [(label, "1"), (label, str(int(count) - 1))]
    text = wrap(text_of(rows))
    assert strict_ok(text, labels, (h, w))  # the decoder reads split runs ...
    assert accepts(rrle_grammar(labels, (h, w)), text)  # ... and so does the plain grammar
    assert not accepts(rrle_grammar(labels, (h, w), canonical=True), text)
    flat = wrap(text_of([[run for row in rows for run in row]]))
    assert accepts(rrle_grammar(labels, (h, w), "irle"), flat)
    assert not accepts(rrle_grammar(labels, (h, w), "irle", canonical=True), flat)


@given(grids())
def test_irle_deviations_are_rejected(case):
    labels, grid = case
    h, w = grid.shape
    g = rrle_grammar(labels, (h, w), "irle")
    (runs,) = rows_of(segtext.encode_irle(grid, labels))
    label, count = runs[-1]
    bad = {
        "total + 1": [*runs[:-1], (label, str(int(count) + 1))],
        "count 0": [*runs, ("others", "0")],
        "leading zero": [(runs[0][0], "0" + runs[0][1]), *runs[1:]],
        "unknown label": [("zebra", runs[0][1]), *runs[1:]],
    }
    if int(count) > 1:
        bad["total - 1"] = [*runs[:-1], (label, str(int(count) - 1))]
    for what, r in bad.items():
        text = wrap(text_of([r]))
        assert not accepts(g, text), what
        assert not strict_ok(text, labels, (h, w)), what
    if h > 1:  # the same grid in rows is another format
        assert not accepts(g, wrap(segtext.encode_rrle(grid, labels)))


@given(grids())
def test_isd_deviations_are_rejected(case):
    labels, grid = case
    h, w = grid.shape
    g = rrle_grammar(labels, (h, w), "isd")
    rows = [row.split("| ") for row in segtext.encode_isd(grid, labels)[:-1].split("\n ")]

    def isd(r):
        return wrap("\n ".join("| ".join(row) for row in r) + "\n")

    bad = {"extra cell": [[*rows[0], "others"], *rows[1:]], "extra row": [*rows, rows[-1]],
           "unknown label": [["zebra", *rows[0][1:]], *rows[1:]],
           "with a count": [[rows[0][0] + " *1", *rows[0][1:]], *rows[1:]]}
    if w > 1:
        bad["missing cell"] = [rows[0][:-1], *rows[1:]]
    if h > 1:
        bad["missing row"] = rows[:-1]
    for what, r in bad.items():
        assert not accepts(g, isd(r)), what
        if what != "with a count":  # the decoder reads every spelling; the grammar one
            assert not strict_ok(isd(r), labels, (h, w)), what


@settings(max_examples=30)
@given(grids(max_side=3), st.sampled_from(["rrle", "isd", "irle"]), st.booleans(), st.integers(0, 2**32 - 1))
def test_every_sentence_of_the_grammar_decodes_strictly(case, fmt, canonical, seed):
    """Random walks through the grammar: whatever it lets a model write, the strict decoder reads."""
    labels, grid = case
    canonical = canonical and fmt != "isd"
    g = rrle_grammar(labels, grid.shape, fmt, canonical)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        text = sample(g, rng)
        res = segtext.decode_rrle(text, labels, grid.shape, mode="strict", unknown="error")
        assert res.format == fmt or grid.shape[0] == 1 and fmt != "isd"
        if canonical:  # the walk wrote what the encoder writes for the grid it stands for
            assert wrap(ENCODERS[fmt](res.grid, labels)) == text


def test_labels_that_are_prefixes_of_each_other():
    labels = ["others", "dog", "dog house"]
    g = rrle_grammar(labels, (1, 3))
    assert accepts(g, "<seg>dog *1| dog house *1| others *1\n</seg>")
    assert accepts(g, "<seg>dog house *2| dog *1\n</seg>")
    assert not accepts(g, "<seg>dog hous *3\n</seg>")
    assert not accepts(g, "<seg>dog house 2 *3\n</seg>")
    gi = rrle_grammar(labels, (1, 2), "isd")
    assert accepts(gi, "<seg>dog| dog house\n</seg>") and accepts(gi, "<seg>dog house| dog\n</seg>")
    gp = rrle_grammar(["others", "a", "a|b"], (1, 2), "isd")
    assert accepts(gp, "<seg>a| a|b\n</seg>") and accepts(gp, "<seg>a|b| a\n</seg>")


def test_the_docstring_example_shape():
    g = rrle_grammar(["others", "dog"], (2, 4))
    assert accepts(g, "<seg>others *2| dog *2\n others *4\n</seg>")
    assert not accepts(g, "<seg>others *2| dog *2\n others *4\n</seg>\n")
    assert rrle_grammar(("others", "dog", "dog"), 4) == rrle_grammar(["others", "dog"], (4, 4))


def test_rrle_grammar_argument_errors():
    with pytest.raises(TypeError):
        rrle_grammar("others", (2, 2))
    with pytest.raises(TypeError):
        rrle_grammar(["others", 3], (2, 2))
    with pytest.raises(ValueError, match="separator"):
        rrle_grammar(["others", "a | b"], (2, 2))
    with pytest.raises(ValueError, match="empty"):
        rrle_grammar([], (2, 2))
    with pytest.raises(ValueError, match="format"):
        rrle_grammar(["others"], (2, 2), format="csv")
    with pytest.raises(ValueError, match="canonical"):
        rrle_grammar(["others"], (2, 2), format="isd", canonical=True)
    with pytest.raises(TypeError, match="canonical"):
        rrle_grammar(["others"], (2, 2), canonical=1)
    with pytest.raises(TypeError):
        rrle_grammar(["others"], None)
    with pytest.raises(TypeError):
        rrle_grammar(["others"], 2.5)
    with pytest.raises(ValueError):
        rrle_grammar(["others"], (0, 4))
    with pytest.raises(ValueError, match="logits processor"):
        rrle_grammar(["others", "dog"], (32, 32), "irle")
    with pytest.raises(ValueError, match="MAX_GRAMMAR_SYMBOLS"):
        rrle_grammar(["others", "dog"], (16, 16), "irle", canonical=True)


@pytest.mark.parametrize("labels, size, fmt, canonical", [
    (["others", "dog"], (32, 32), "rrle", False),
    (["others", *(f"class {i}" for i in range(79))], (32, 32), "rrle", True),
    (["others", "dog"], (16, 16), "irle", False),
    (["others", *(f"class {i}" for i in range(79))], (32, 32), "isd", False),
])
def test_the_largest_grids_build_a_matcher(labels, size, fmt, canonical):
    g = rrle_grammar(labels, size, fmt, canonical)
    rng = np.random.default_rng(0)
    grid = rng.integers(0, len(labels), size)
    grid[:, : size[1] // 2] = 0
    assert accepts(g, wrap(ENCODERS[fmt](grid, labels)))


# --------------------------------------------------------------------------- B-SD

BSD_POOL = ["dog", "dog house", "dog house 2", "a<b", "é日本", "🐕", 'say "hi"', "back\\slash", "x]y"]
PRESETS = ["norm1000", "qwen2vl", "pixel"]


@st.composite
def bsd_cases(draw):
    H = draw(st.integers(1, 10))
    W = draw(st.integers(1, 10))
    n = draw(st.integers(1, 3))
    objects = []
    for _ in range(n):
        m = draw(hnp.arrays(np.bool_, (H, W)))
        m[draw(st.integers(0, H - 1)), draw(st.integers(0, W - 1))] = True  # never empty
        objects.append((draw(st.sampled_from(BSD_POOL)), m))
    return objects, (H, W)


def _bsd_kwargs(preset, image_size, **kw):
    return dict(resolution=4, box_format=preset, image_size=image_size, **kw)


@given(bsd_cases(), st.sampled_from(PRESETS), st.booleans(), st.sampled_from([63, 5, 1]))
def test_bsd_encoder_output_is_accepted(case, preset, row_wise, max_run):
    objects, size = case
    text = segtext.encode_bsd(objects, size, resolution=4, box_format=preset, row_wise=row_wise,
                              max_run=max_run)
    labels = [label for label, _ in objects]
    for exact in (False, True):
        kw = _bsd_kwargs(preset, size, row_wise=row_wise, max_run=max_run, exact_sum=exact)
        assert accepts(bsd_grammar(labels, **kw), text)
        assert accepts(bsd_grammar([*BSD_POOL, *labels], **kw), text)
        free = bsd_grammar(None, **kw)
        assert accepts(free, text) == all("<" not in label for label in labels)
        assert accepts(bsd_grammar(labels, max_objects=len(objects), **kw), text)
        if len(objects) > 1:
            assert not accepts(bsd_grammar(labels, max_objects=len(objects) - 1, **kw), text)
    decoded = segtext.decode_bsd(text, size, resolution=4, box_format=preset, row_wise=row_wise,
                                 max_run=max_run, mode="strict")
    assert len(decoded.objects) == len(objects)


_BRICK = re.compile(r"<(fg|bg)_([0-9]+)>")


@given(bsd_cases(), st.sampled_from(PRESETS))
def test_bsd_deviations_are_rejected(case, preset):
    objects, (H, W) = case
    text = segtext.encode_bsd(objects, (H, W), resolution=4, box_format=preset)
    labels = [label for label, _ in objects]
    exact = bsd_grammar(labels, **_bsd_kwargs(preset, (H, W), exact_sum=True))
    loose = bsd_grammar(labels, **_bsd_kwargs(preset, (H, W)))
    close = "</seg>"
    first_end = text.index(close)
    body_start = text.index("<seg>") + len("<seg>")
    body = text[body_start:first_end]
    bricks = _BRICK.findall(body)
    more = text[:first_end] + "<bg_1>" + text[first_end:]  # 17 cells
    fewer = text[:body_start] + "".join(f"<{k}_{n}>" for k, n in bricks[:-1]) + text[first_end:]
    kind, n = bricks[-1]
    if int(n) > 1:
        shorter = (text[:body_start] + "".join(f"<{k}_{m}>" for k, m in bricks[:-1])
                   + f"<{kind}_{int(n) - 1}>" + text[first_end:])
        assert not accepts(exact, shorter) and accepts(loose, shorter)
    assert not accepts(exact, more) and accepts(loose, more)  # the loose grammar: sum not enforced
    if len(bricks) > 1:
        assert not accepts(exact, fewer) and accepts(loose, fewer)
    else:  # no bricks at all
        assert not accepts(exact, fewer) and not accepts(loose, fewer)
    # bricks out of 1..max_run
    for bad in ("<fg_0>", "<fg_64>", "<fg_07>", "<xx_1>", "fg_1"):
        t = text[:first_end] + bad + text[first_end:]
        assert not accepts(loose, t), bad
    # box numbers
    hi_x = W if preset == "pixel" else 1000
    nums = re.search(r"[\[(]([0-9]+),([0-9]+)\)?,\(?([0-9]+),([0-9]+)[\])]", text)
    for i, bad in ((1, str(hi_x + 1)), (3, str(hi_x + 1)), (1, "-1"), (2, "0" + nums.group(2)),
                   (4, "1" + "0" * 4)):
        t = text[:nums.start(i)] + bad + text[nums.end(i):]
        assert not accepts(loose, t), (i, bad)
        if not bad.startswith("0"):  # decode_bsd's strict mode reads '0250' as 250 (the encoder
            with pytest.raises(DecodeError):  # never writes it, and the grammar refuses it)
                segtext.decode_bsd(t, (H, W), resolution=4, box_format=preset, mode="strict")
    if preset == "pixel" and H != W:  # y has its own range
        y_hi = H
        t = text[:nums.start(2)] + str(y_hi + 1) + text[nums.end(2):]
        assert not accepts(loose, t)
        if W > H:
            t = text[:nums.start(2)] + str(W) + text[nums.end(2):]
            assert not accepts(loose, t)
    # labels
    sp = segtext.BOX_FORMATS[preset]
    unknown = text.replace(sp.ref_open + labels[0] + sp.ref_close, sp.ref_open + "zebra" + sp.ref_close, 1)
    assert not accepts(loose, unknown)
    assert accepts(bsd_grammar(None, **_bsd_kwargs(preset, (H, W))), unknown) == all(
        "<" not in label for label in labels[1:])
    assert not accepts(loose, "")  # one or more blocks
    assert not accepts(loose, "Sure: " + text)


@settings(max_examples=30)
@given(st.sampled_from(PRESETS), st.booleans(), st.booleans(), st.integers(0, 2**32 - 1))
def test_every_bsd_sentence_decodes_strictly(preset, row_wise, free, seed):
    """Random walks through the exact-sum grammar decode strictly, but for the box order (the
    grammar does not express x1 < x2, y1 < y2)."""
    H, W = 7, 9
    kw = _bsd_kwargs(preset, (H, W), row_wise=row_wise, exact_sum=True, max_run=5, max_objects=3)
    g = bsd_grammar(None if free else ["dog", "dog house", "é"], **kw)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        text = sample(g, rng)
        try:
            res = segtext.decode_bsd(text, (H, W), resolution=4, box_format=preset, row_wise=row_wise,
                                     max_run=5, mode="strict")
        except DecodeError as e:
            assert e.kind in ("box_swapped", "box_empty"), (e, text)
        else:
            assert 1 <= len(res.objects) <= 3


def test_bsd_other_brick_spellings():
    m = np.zeros((4, 4), bool)
    m[:2, :3] = True
    kw = dict(resolution=2, fg_token="<F{k}>", bg_token="[B{k}]", max_run=3)
    text = segtext.encode_bsd([("cat", m)], (4, 4), **kw)
    assert "<F" in text
    assert accepts(bsd_grammar(["cat"], exact_sum=True, **kw), text)
    assert not accepts(bsd_grammar(["cat"], exact_sum=True, **kw), text.replace("<F", "<fg_"))


def test_bsd_exact_sum_sizes():
    # the docstring example and the limits: resolution 32 with max_run 63 builds, 64 is refused
    g = bsd_grammar(["cat"], resolution=2, max_run=4, exact_sum=True)
    assert accepts(g, "<ref>cat</ref><box>[0,0,500,500]</box><seg><fg_4></seg>")
    assert accepts(g, "<ref>cat</ref><box>[0,0,500,500]</box><seg><fg_1><bg_2><fg_1></seg>")
    assert not accepts(g, "<ref>cat</ref><box>[0,0,500,500]</box><seg><fg_1><bg_2></seg>")
    big = bsd_grammar(None, resolution=32, exact_sum=True)
    rng = np.random.default_rng(1)
    m = rng.random((50, 60)) > 0.4
    assert accepts(big, segtext.encode_bsd([("dog", m)], (50, 60), resolution=32))
    with pytest.raises(ValueError, match="BSDLogitsProcessor"):
        bsd_grammar(None, resolution=64, exact_sum=True)
    rows = bsd_grammar(None, resolution=64, exact_sum=True, row_wise=True)  # one row at a time: small
    text = segtext.encode_bsd([("dog", m)], (50, 60), resolution=64, row_wise=True)
    assert accepts(rows, text)
    assert not accepts(rows, segtext.encode_bsd([("dog", m)], (50, 60), resolution=64))


def test_bsd_grammar_argument_errors():
    with pytest.raises(ValueError, match="image_size"):
        bsd_grammar(["dog"], box_format="pixel")
    with pytest.raises(ValueError, match="box_format"):
        bsd_grammar(["dog"], box_format="coco")
    with pytest.raises(ValueError, match="resolution"):
        bsd_grammar(["dog"], resolution=0)
    with pytest.raises(ValueError, match="max_run"):
        bsd_grammar(["dog"], max_run=0)
    with pytest.raises(ValueError, match="max_objects"):
        bsd_grammar(["dog"], max_objects=0)
    with pytest.raises(ValueError, match="max_objects"):
        bsd_grammar(["dog"], max_objects=True)
    with pytest.raises(TypeError, match="exact_sum"):
        bsd_grammar(["dog"], exact_sum="yes")
    with pytest.raises(TypeError):
        bsd_grammar("dog")
    with pytest.raises(TypeError):
        bsd_grammar([3])
    with pytest.raises(ValueError, match="tag"):
        bsd_grammar(["a</ref>b"])
    with pytest.raises(ValueError, match="empty"):
        bsd_grammar([""])
    with pytest.raises(ValueError, match="empty"):
        bsd_grammar([])
    with pytest.raises(ValueError, match="fg_token"):
        bsd_grammar(["dog"], fg_token="<fg>")
    with pytest.raises((TypeError, ValueError)):
        bsd_grammar(["dog"], image_size=(0, 4))


def test_grammars_stay_within_the_symbol_limit():
    assert MAX_GRAMMAR_SYMBOLS < 65_535
    for g in (rrle_grammar(["others", "dog"], 16), bsd_grammar(["dog"]), bsd_grammar(None, resolution=8,
                                                                                    exact_sum=True)):
        _matcher(g)  # compiles, validates and builds
