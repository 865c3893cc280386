"""The exact bytes `records.build` writes: pinned against the output of the dict-based writer
(json.dumps of the record, as the first version wrote every line) for hand-made samples, and
checked against json.dumps(make_record(...)) for every style, encoding and odd input the fast
line writer (escaped pieces, cached per phrase and per image) has to get right."""

from __future__ import annotations

import hashlib
import importlib
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest

from segtext import records
from segtext.records import Sample, Target
from upstream_fixtures import refer_layout

builder = importlib.import_module("segtext.records.builder")
DUMPS = {"ensure_ascii": False, "separators": (", ", ": ")}

# written by the records writer before the fast line writer existed (json.dumps of each record dict)
GOLDEN_LINES = {
    'messages': [
        '{"id": "ann1", "messages": [{"role": "user", "content": "<image>Give the segmentation mask of dog."}, {"role": "assistant", "content": "The mask of dog:\\n<seg>others *1| dog *1| others *1\\n others *1| dog *1| others *1\\n</seg>"}], "images": ["COCO_1.jpg"], "image_id": 1, "image_size": [4, 6], "label": "dog", "segmentation": {"size": [4, 6], "counts": "9220003"}, "task": "referring", "source": {"ann_ids": [1], "category_id": 18}}',
        '{"id": "réf\\"2\\"", "messages": [{"role": "user", "content": "<image>Where is le chien \\\\ \\"noir\\"? Answer with its mask."}, {"role": "assistant", "content": "<seg>le chien \\\\ \\"noir\\" *1| others *2\\n le chien \\\\ \\"noir\\" *3\\n</seg>"}], "images": ["dè/x.jpg"], "image_id": 2, "image_size": [4, 6], "label": "le chien \\\\ \\"noir\\"", "segmentation": {"size": [4, 6], "counts": "083I000000"}, "task": "referring"}',
    ],
    'llava': [
        '{"id": "ann1", "image": "COCO_1.jpg", "conversations": [{"from": "human", "value": "<image>\\nGive the segmentation mask of dog."}, {"from": "gpt", "value": "The mask of dog:\\n<seg>others *1| dog *1| others *1\\n others *1| dog *1| others *1\\n</seg>"}], "image_id": 1, "image_size": [4, 6], "label": "dog", "segmentation": {"size": [4, 6], "counts": "9220003"}, "task": "referring", "source": {"ann_ids": [1], "category_id": 18}}',
        '{"id": "réf\\"2\\"", "image": "dè/x.jpg", "conversations": [{"from": "human", "value": "<image>\\nWhere is le chien \\\\ \\"noir\\"? Answer with its mask."}, {"from": "gpt", "value": "<seg>le chien \\\\ \\"noir\\" *1| others *2\\n le chien \\\\ \\"noir\\" *3\\n</seg>"}], "image_id": 2, "image_size": [4, 6], "label": "le chien \\\\ \\"noir\\"", "segmentation": {"size": [4, 6], "counts": "083I000000"}, "task": "referring"}',
    ],
    'prompt-completion': [
        '{"id": "ann1", "prompt": [{"role": "user", "content": "<image>Give the segmentation mask of dog."}], "completion": [{"role": "assistant", "content": "The mask of dog:\\n<seg>others *1| dog *1| others *1\\n others *1| dog *1| others *1\\n</seg>"}], "images": ["COCO_1.jpg"], "image_id": 1, "image_size": [4, 6], "label": "dog", "segmentation": {"size": [4, 6], "counts": "9220003"}, "task": "referring", "source": {"ann_ids": [1], "category_id": 18}}',
        '{"id": "réf\\"2\\"", "prompt": [{"role": "user", "content": "<image>Where is le chien \\\\ \\"noir\\"? Answer with its mask."}], "completion": [{"role": "assistant", "content": "<seg>le chien \\\\ \\"noir\\" *1| others *2\\n le chien \\\\ \\"noir\\" *3\\n</seg>"}], "images": ["dè/x.jpg"], "image_id": 2, "image_size": [4, 6], "label": "le chien \\\\ \\"noir\\"", "segmentation": {"size": [4, 6], "counts": "083I000000"}, "task": "referring"}',
    ],
    'xsam': [
        '{"id": "ann1", "image": "COCO_1.jpg", "conversations": [{"from": "human", "value": "<image>\\nGive the segmentation mask of <p>dog</p>."}, {"from": "gpt", "value": "The mask of <p>dog</p>:\\n<SEG>"}], "image_id": 1, "image_size": [4, 6], "label": "dog", "segmentation": [{"size": [4, 6], "counts": "9220003"}], "task": "referring", "source": {"ann_ids": [1], "category_id": 18}}',
        '{"id": "réf\\"2\\"", "image": "dè/x.jpg", "conversations": [{"from": "human", "value": "<image>\\nWhere is <p>le chien \\\\ \\"noir\\"</p>? Answer with its mask."}, {"from": "gpt", "value": "<SEG>"}], "image_id": 2, "image_size": [4, 6], "label": "le chien \\\\ \\"noir\\"", "segmentation": [{"size": [4, 6], "counts": "083I000000"}], "task": "referring"}',
    ],
}

GOLDEN_SHA256 = {
    'messages rrle tpl': 'a6695b537ed8844bc7229b82d2d0a74fc21149241d1edd2cf024f9735cbbe246',
    'messages isd plain': 'ab44c36ebf3e9cd1be39e8cf863fb89c1cf36c71cd39447156f3778fb691b904',
    'messages isd tpl': '73d8251406af8fb942296c5b11152d50448f4b51b93c21473818dd38f64ff35f',
    'messages irle plain': '879735f77d1adcdaa2111ba29e603d1afa60c77bf04556b974cf84eb46867e61',
    'messages irle tpl': '99c4981f8ce63acd01d9d820342a1ddc3b40f1dc088bb368c52a682a2bd56c6e',
    'messages bsd plain': '75a6848bb8ee56c8a2d72c98b0cdd230b73b634cffd63978aa99dcdbbf87c386',
    'messages bsd tpl': 'd8532b9c7f85cb683f464b093ee346511942247e7da83e786eb95023795a1d06',
    'llava rrle tpl': '169aee511c997ff1edb2e58fdb060da71b808ef61868ef7fe3473c2d5b58e37e',
    'llava isd plain': 'e7634987e08aeed4587a2e599a2fef26377b8bc2d1c15a76e1b3a489fdafe7a9',
    'llava isd tpl': '6c2ba66526a8728a62a38ff589ee879e778d6c9b145ce4ddb76d5915912873de',
    'llava irle plain': 'b85ba32c21b657ebd7434ce2f6b68fad6a86c8c2945f5afa201cbca08e127375',
    'llava irle tpl': '5a0c773dc31b88df7f1a5ee381b2f2516a9ea9d4ff764d9a0b7409b6adfd6472',
    'llava bsd plain': 'b73719f80e07e2db0d20dbc422c9bc9b30e92a71b7745377ff7921cc93d235e8',
    'llava bsd tpl': '0ef99a8320fef719c07756695fd007291714d9e8495f4c7e8036e204d7701a06',
    'prompt-completion rrle tpl': '83b1bbb70808642fe25029c808c240479da4fea3e5f6531ce6eaf8bcc26024d4',
    'prompt-completion isd plain': '73e58355fb46e5d5f173f27607756337831c5de8d4d3701b032a279d08569f6c',
    'prompt-completion isd tpl': '440acac2fa99cd33760e8c1c774369f145862e253651fcdf8de8f8fb5128cdd1',
    'prompt-completion irle plain': '8ce88c7421c626d774378467418c6406d06b6a40103aff97e9024c87ea2d8f5a',
    'prompt-completion irle tpl': '0ed349a1f1b03633aa21a9b978ddcf8b3694f92567ae06e16b9ca38112a1b55c',
    'prompt-completion bsd plain': '2fb9a839c98c026e4b0d399771d7a4e44c9377ce1a04148952c68de9562ea089',
    'prompt-completion bsd tpl': 'f31fa4bb0775fe92e1a8e1dc069fc1283eb98c4b1a01587d16ff8a805205d1fb',
    'xsam rrle tpl': 'cd5d2a39905d25571639b8034d685af14b2a87bfcb4af106c4383c4834de8f08',
    'xsam isd plain': 'bf566899cea8099b33f8e29adca1090ee7ce96211cea86b75a296bcce83a008a',
    'xsam isd tpl': 'cd5d2a39905d25571639b8034d685af14b2a87bfcb4af106c4383c4834de8f08',
    'xsam irle plain': 'bf566899cea8099b33f8e29adca1090ee7ce96211cea86b75a296bcce83a008a',
    'xsam irle tpl': 'cd5d2a39905d25571639b8034d685af14b2a87bfcb4af106c4383c4834de8f08',
    'xsam bsd plain': 'bf566899cea8099b33f8e29adca1090ee7ce96211cea86b75a296bcce83a008a',
    'xsam bsd tpl': 'cd5d2a39905d25571639b8034d685af14b2a87bfcb4af106c4383c4834de8f08',
}


def pinned_samples():
    return [
        Sample("ann1", "referring", "COCO_1.jpg", 1, (4, 6), [Target("dog", {"size": [4, 6], "counts": "9220003"}, 1)],
               "dog", {"ann_ids": [1], "category_id": 18}),
        Sample("r\u00e9f\"2\"", "referring", "d\u00e8/x.jpg", 2, (4, 6),
               [Target("le chien \\ \"noir\"", {"size": [4, 6], "counts": "083I000000"}, 2)], "le chien \\ \"noir\"", {}),
    ]


PINNED_TEMPLATES = {"referring": {"questions": ["{mask}? O\u00f9 est {phrase}\t?"],
                                  "answers": ["{mask} et {mask}", "\u00ab{phrase}\u00bb\n{mask}"]}}


@pytest.mark.parametrize("style", records.STYLES)
def test_pinned_lines(tmp_path, style):
    out = tmp_path / "o.jsonl"
    records.build(pinned_samples(), out, records.Options(style=style, grid_size=(2, 3)), seed=3)
    assert out.read_text(encoding="utf-8").splitlines() == GOLDEN_LINES[style]


@pytest.mark.parametrize("key", sorted(GOLDEN_SHA256))
def test_pinned_bytes(tmp_path, key):
    style, encoding, variant = key.split()
    extra = {"templates": records.load_templates(PINNED_TEMPLATES), "images": "/img"} if variant == "tpl" else {}
    out = tmp_path / "o.jsonl"
    records.build(pinned_samples(), out, records.Options(style=style, encoding=encoding, grid_size=(2, 3),
                                                          resolution=4, **extra), seed=3)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == GOLDEN_SHA256[key]


def rle(mask):
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def odd_samples():
    """Referring samples of one compressed RLE each (the batched path) with everything odd a line can hold."""
    rng = np.random.default_rng(1)
    masks = [rng.random((9, 13)) < p for p in (0.1, 0.5, 0.9, 0.3, 0.7, 0.2, 0.6, 0.4, 0.8, 0.5, 0.5, 0.5)]
    masks[11] = (np.arange(117) // 44 == 1).reshape((9, 13), order="F")  # a first run of 44: counts "\\1..."
    r = [rle(m) for m in masks]
    swapped = {"counts": r[5]["counts"], "size": r[5]["size"]}  # keys in the other order
    extra = dict(r[6], note="kept")  # a key more
    return [
        Sample("plain", "referring", "a.jpg", 1, (9, 13), [Target("dog", r[0], 1)], "dog", {"ann_ids": [1]}),
        Sample("same image", "referring", "a.jpg", 1, (9, 13), [Target("cat", r[1], 2)], "cat", {}),
        Sample("q\"\\\u00e9\n\t\u2028", "referring", "d\u00e8/\"x\".jpg", {"k": [1, None]}, (9, 13),
               [Target("\u00e7a \"va\" \\", r[2])], "\u00e7a \"va\" \\", {"id": "clash", "messages": 3}),
        Sample("brace", "referring", "b.jpg", "img-b", (9, 13), [Target("{phrase} x {mask}", r[3])], "{phrase} x {mask}",
               {"s": "\u00e9"}),
        Sample("quirk", "referring", "b.jpg", "img-b", (9, 13), [Target("mask} y", r[4])], "mask} y", {"n": None}),
        Sample("swapped", "referring", "c.jpg", 3.0, (9, 13), [Target("dog", swapped)], "dog", {"f": 1.5}),
        Sample("extra key", "referring", "c.jpg", True, (9, 13), [Target("dog", extra)], "dog", {}),
        Sample("empty source", "referring", "c.jpg", 3, (9, 13), [Target("dog", r[7])], "dog", None),
        Sample("ctrl \x01\x1f", "referring", "e.jpg", None, (9, 13), [Target("bird", r[8])], "bird", []),
        Sample(7, "referring", "e.jpg", 4, (9, 13), [Target("bird", r[9])], "bird", {"ann_ids": [7, 8]}),
        Sample("float size", "referring", "e.jpg", 4, (9.0, 13), [Target("bird", r[10])], "bird", {}),
        Sample("np size", "referring", "e.jpg", 4, (np.int64(9), np.int32(13)), [Target("bird", r[11])], "bird", {}),
        *[Sample(f"coco source {n}", "referring", "f.jpg", 5, (9, 13), [Target("cow", r[n])], "cow", src)
          for n, src in enumerate([{"ann_ids": [5], "category_id": 18}, {"ann_ids": [5], "category_id": None},
                                   {"ann_ids": [True], "category_id": 3}, {"category_id": 3, "ann_ids": [5]},
                                   {"ann_ids": [5, 6], "category_id": 3}, {"ann_ids": ["5"], "category_id": 3},
                                   {"ann_ids": [5], "category_id": 2.0}, {"ann_ids": (5,), "category_id": 3}])],
    ]


QUIRK_TEMPLATES = {"referring": {"questions": ["Find {phrase}.", "{{phrase}?", "{mask} {phrase} {mask}"],
                                 "answers": ["{mask}", "{phrase}: {mask} and again {mask}", "{{phrase}\n{mask}",
                                             "\u00ab{phrase}\u00bb \\ \"\x02\" {mask}"]}}


@pytest.mark.parametrize("style", records.STYLES)
@pytest.mark.parametrize("encoding", ["rrle", "isd", "irle"])
def test_batched_lines_are_json_dumps_of_the_records(tmp_path, style, encoding):
    samples = odd_samples()
    for templates in (None, records.load_templates(QUIRK_TEMPLATES)):
        for images in (None, "/data/im\u00e0ges"):
            options = records.Options(style=style, encoding=encoding, grid_size=(3, 4), templates=templates,
                                      images=images)
            for seed in (0, 11):
                fast = builder._fast_lines(samples, options, seed)
                assert None not in fast  # the batched path wrote them all
                want = [json.dumps(records.make_record(s, options, seed), **DUMPS) for s in samples]
                for s, got, line in zip(samples, fast, want):
                    assert got is None or got == line, s.id
                out = tmp_path / "o.jsonl"
                records.build(samples, out, options, seed=seed)
                assert out.read_text(encoding="utf-8") == "".join(w + "\n" for w in want)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return refer_layout(tmp_path_factory.mktemp("refer"), n_images=3)


@pytest.mark.parametrize("style", records.STYLES)
def test_build_writes_json_dumps_of_make_record_for_every_source(layout, tmp_path, style):
    sources = [records.read_refcoco(layout["refcoco"], layout["refcoco_instances"]),
               records.read_grefcoco(layout["grefcoco"], layout["grefcoco_instances"]),
               records.read_coco(layout["refcoco_instances"], include_crowd=True),
               records.read_coco(layout["refcoco_instances"], "instances")]
    for samples in sources:
        for encoding in ("rrle", "isd", "bsd"):
            options = records.Options(style=style, encoding=encoding, grid_size=(8, 12), resolution=8)
            out = tmp_path / "o.jsonl"
            records.build(samples, out, options, seed=4)
            want = "".join(json.dumps(records.make_record(s, options, 4), **DUMPS) + "\n" for s in samples)
            assert out.read_text(encoding="utf-8") == want


def test_the_piece_caches_do_not_leak_between_options(tmp_path):
    """The same phrase and image under other templates, styles, image folders: other lines."""
    samples = odd_samples()[:2]
    seen = set()
    for style in ("messages", "llava"):
        for images in (None, "/x"):
            for templates in (None, records.load_templates(QUIRK_TEMPLATES)):
                options = records.Options(style=style, templates=templates, images=images, grid_size=(3, 4))
                lines = builder._fast_lines(samples, options, 0)
                assert lines == [json.dumps(records.make_record(s, options, 0), **DUMPS) for s in samples]
                seen.add(tuple(lines))
    assert len(seen) == 8


def test_an_invalid_sample_leaves_the_others_batched(tmp_path):
    """A sample the batched encoder refuses (here: no phrase, so an empty label) goes one by one and
    is reported; the rest of its chunk is still written by the batched path, with the same bytes."""
    samples = odd_samples()
    bad = Sample("bad", "referring", "c.jpg", 3, (9, 13), [Target("", samples[7].targets[0].segmentation)], None, {})
    mixed = [*samples[:4], bad, *samples[4:]]
    options = records.Options(grid_size=(3, 4))
    fast = builder._fast_lines(mixed, options, 0)
    assert fast[4] is None and None not in fast[:4] + fast[5:]
    with pytest.raises(ValueError, match="sample bad .*empty"):
        records.make_record(bad, options, 0)
    out = tmp_path / "o.jsonl"
    summary = records.build(mixed, out, options, skip_invalid=True)
    assert summary.skipped == 1 and "sample bad" in summary.problems[0] and "empty" in summary.problems[0]
    assert out.read_text(encoding="utf-8") == "".join(
        json.dumps(records.make_record(s, options, 0), **DUMPS) + "\n" for s in samples)
    with pytest.raises(ValueError, match="sample bad"):
        records.build(mixed, tmp_path / "strict.jsonl", options)


def test_batched_counts_hold_only_cocos_characters():
    """The fast line writer escapes only the backslash in the counts of a batched sample: it relies on
    the batched encoder refusing a counts string with any character outside COCO's '0'..'o'."""
    import segtext as st

    good = rle(np.eye(9, 13, dtype=bool))
    counts = good["counts"]
    outside = [chr(c) for c in range(128) if not 48 <= c <= 111] + ["\u00e9", "\u2028", "\U0001f600"]
    for ch in outside:
        bad = {"size": good["size"], "counts": counts[:2] + ch + counts[2:]}
        with pytest.raises((ValueError, TypeError)):
            st.rles_to_texts([good, bad], "x", (3, 4))
        s = Sample("s", "referring", "a.jpg", 1, (9, 13), [Target("x", bad)], "x", {})
        assert builder._fast_lines([s, s], records.Options(grid_size=(3, 4)), 0) == [None, None], repr(ch)
    with_backslash = [s for s in odd_samples() if "\\" in s.targets[0].segmentation["counts"]]
    assert with_backslash  # the escaped case is among the samples checked against json.dumps above
