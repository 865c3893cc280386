"""segtext.labels.LabelMatcher: the label rules the R-RLE and the B-SD decoders share."""

from __future__ import annotations

import pytest

import segtext as st
from segtext.labels import LabelMatcher
from segtext.repairs import RepairLog


def test_exact_then_folded_then_unknown():
    log = RepairLog("x", strict=False)
    m = LabelMatcher(["others", "white horse", "dog", "dog"])
    assert m.find("dog", 0, log) == 2 and m.find("white horse", 0, log) == 1 and not log.repairs
    assert m.find("White Horse.", 0, log) == 1 and m.find("  DOG!", 0, log) == 2
    assert [(r.kind, r.message) for r in log.repairs] == [("label_case", "label 'White Horse.' read as 'white horse'"),
                                                          ("label_case", "label '  DOG!' read as 'dog'")]
    assert m.find("cat", 0, log) is None and m.find("...", 0, log) is None and len(log.repairs) == 2
    exact = LabelMatcher(["others", "dog"], fold=False)  # Text4Seg's reading: no folding
    assert exact.find("Dog", 0, log) is None and len(log.repairs) == 2


def test_add_nearest_and_refuse():
    log = RepairLog("zebra", strict=False)
    m = LabelMatcher(["others", "dog"])
    assert m.add("zebra", fold=False) == 2 and m.labels == ["others", "dog", "zebra"]
    assert m.find("zebra", 0, log) == 2 and m.find("Zebra", 0, log) is None  # not folded
    assert m.add("cat") == 3 and m.find("CAT", 0, log) == 3
    assert m.nearest("dgo") == 1 and m.nearest("dgo") == 1
    with pytest.raises(st.DecodeError) as e:
        m.refuse("zebu", 3, log)
    assert e.value.kind == "unknown_label" and "zebu" in str(e.value)


@pytest.mark.parametrize("unknown", ["background", "nearest", "foreground"])
def test_both_decoders_read_the_same_slips_the_same_way(unknown):
    """A label in another case is the known label in both formats, with the same repair; an
    unknown one follows each decoder's policy."""
    rrle = st.decode_rrle("others *1| Dog. *1\n", ["others", "dog"], (1, 2), unknown=unknown)
    bsd = st.decode_bsd("<ref>Dog.</ref><box>[0,0,1000,1000]</box><seg><fg_1></seg>", (2, 2), resolution=1,
                        labels=["dog"], unknown=unknown)
    assert rrle.grid.tolist() == [[0, 1]] and [o.label for o in bsd.objects] == ["dog"]
    assert [r.kind for r in rrle.repairs] == [r.kind for r in bsd.repairs] == ["label_case"]
    assert rrle.repairs[0].message == bsd.repairs[0].message == "label 'Dog.' read as 'dog'"
