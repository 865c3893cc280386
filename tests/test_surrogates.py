"""Lone surrogates (str code points UTF-8 cannot hold): every decoder reads them as U+FFFD with a
``bad_character`` repair, and strict mode raises at the first one (or at an earlier deviation)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import segtext as st
from segtext import evaluation

CLEAN = ["others *2| dog *2\n others *4\n", "<seg>others *2| dog *2\n others *4\n</seg>",
         "<ref>dog</ref><box>[0,0,500,1000]</box><seg><fg_3><bg_1></seg>", ""]
surrogates = hs.text(alphabet=hs.characters(categories=["Cs"]), min_size=1, max_size=3)


@given(i=hs.integers(0, len(CLEAN) - 1), at=hs.integers(0, 200), bad=surrogates)
def test_repair_modes_never_raise_and_read_u_fffd(i, at, bad):
    base = CLEAN[i]
    at = min(at, len(base))
    text = base[:at] + bad + base[at:]
    clean = base[:at] + "\ufffd" * len(bad) + base[at:]
    for mode in ("repair", "t4s"):
        got = st.decode_rrle(text, mode=mode)
        want = st.decode_rrle(clean, mode=mode)
        assert np.array_equal(got.grid, want.grid) and got.labels == want.labels
        kinds = [r.kind for r in got.repairs]
        assert kinds.count("bad_character") == len(bad)
        assert sorted(r for r in kinds if r != "bad_character") == sorted(r.kind for r in want.repairs)
    got = st.decode_bsd(text, (8, 8), resolution=2)
    want = st.decode_bsd(clean, (8, 8), resolution=2)
    assert np.array_equal(got.mask(), want.mask()) and [o.label for o in got.objects] == [o.label for o in want.objects]
    assert [r.kind for r in got.repairs].count("bad_character") == len(bad)
    positions = [(r.line, r.column) for r in got.repairs]
    assert positions == sorted(positions)
    evaluation.decode_answer(text, (8, 8), grid_size=(2, 4), resolution=2)  # never raises either


@pytest.mark.parametrize("decode", [
    lambda t: st.decode_rrle(t, mode="strict"),
    lambda t: st.decode_bsd(t, (8, 8), resolution=2, mode="strict"),
])
def test_strict_raises_at_the_surrogate(decode):
    with pytest.raises(st.DecodeError, match="line 1, column 1: a lone surrogate") as e:
        decode("\udc80<seg>others *8\n</seg>")
    assert e.value.kind == "bad_character"


def test_strict_raises_the_earlier_deviation_first():
    with pytest.raises(st.DecodeError) as e:
        st.decode_rrle("others *02\udc80\n", mode="strict")
    assert e.value.kind == "bad_count"
    assert "bad_character" in st.REPAIR_KINDS
