"""The mask-head path end to end: a tiny Qwen2-VL + LoRA writes <SEG>, the X-SAM head turns it into a mask.

Four synthetic 64 x 64 images with simple shapes, ``xsam`` records made by segtext.records from
their masks, a short joint (LM + mask) training; ``segment`` must generate ``<SEG>`` and give back
masks with IoU >= 0.9; saving and reloading gives the same masks; gradients reach every trainable
parameter; samples without a target give finite losses; malformed records name the record.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from shapes import coco_rle, four_shapes

import segtext as st
from segtext import records

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
from PIL import Image  # noqa: E402

from segtext.model import XSamResult, XSamSegmenter  # noqa: E402

NAMES = ["square", "bar", "corner", "cross"]
COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


_shapes = four_shapes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("xsam_shapes")
    shapes = _shapes()
    samples = []
    for k, m in enumerate(shapes):
        img = np.full((64, 64, 3), 90, np.uint8)
        img[m] = COLORS[k]
        Image.fromarray(img).save(d / f"img{k}.png")
        samples.append(records.Sample(f"s{k}", "referring", f"img{k}.png", k, (64, 64),
                                      [records.Target(NAMES[k], coco_rle(m))], phrase=NAMES[k]))
    templates = records.load_templates({"referring": {"questions": ["Segment {phrase}."], "answers": ["{mask}"]}})
    recs = [records.make_record(s, records.Options(style="xsam", templates=templates)) for s in samples]
    path = d / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return d, shapes, recs, path


@pytest.fixture(scope="module")
def trained(data):
    d, shapes, recs, path = data
    seg = XSamSegmenter.tiny()
    losses = seg.fit(path, steps=100, lr=5e-3, batch_size=4)
    return seg, losses


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _images(d):
    return [d / f"img{k}.png" for k in range(4)]


def test_records_are_xsam_style(data):
    recs = data[2]
    assert recs[0]["conversations"][0]["value"] == "<image>\nSegment <p>square</p>."
    assert recs[0]["conversations"][1]["value"] == "<SEG>"
    assert len(recs[0]["segmentation"]) == 1


def test_head_path_learns_the_masks(data, trained, tmp_path):
    d, shapes, recs, path = data
    seg, losses = trained
    assert losses[-1] < 0.02 * losses[0], (losses[0], losses[-1])
    assert seg.question == "Segment {phrase}."
    results = seg.segment(_images(d), NAMES)
    for k, r in enumerate(results):
        assert isinstance(r, XSamResult) and r.phrase == NAMES[k]
        assert "<SEG>" in r.text and not r.forced, r.text          # the model writes <SEG> itself
        assert r.mask.shape == (64, 64) and r.mask.dtype == bool
        assert _iou(r.mask, shapes[k]) >= 0.9, (k, _iou(r.mask, shapes[k]))
    # the masks as text for the text path: R-RLE on an 8 x 8 grid holds these shapes exactly
    for k, r in enumerate(results):
        text = r.to_text("rrle", grid_size=8)
        back = st.decode_rrle(text, ["others", NAMES[k]], (8, 8), image_size=(64, 64), mode="strict").mask > 0
        assert _iou(back, r.mask) >= 0.9, text
        bsd = r.to_text("bsd", resolution=8)
        assert st.decode_bsd(bsd, (64, 64), resolution=8, mode="strict").objects[0].label == NAMES[k]
    # save, reload: the same masks
    seg.save_pretrained(tmp_path / "model")
    again = XSamSegmenter.from_pretrained(tmp_path / "model")
    assert again.question == seg.question and again.token_ids == seg.token_ids
    for r, r2 in zip(results, again.segment(_images(d), NAMES)):
        assert r2.text == r.text and np.array_equal(r2.mask, r.mask)
        assert r2.score == pytest.approx(r.score, abs=1e-5)


def test_the_phrase_decides_the_mask():
    """Two shapes in each image: the same image asked for "red" and for "green" gives two masks."""
    templates = records.load_templates({"referring": {"questions": ["Segment {phrase}."], "answers": ["{mask}"]}})
    cases, samples = [], []
    for k in range(2):
        red, green = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
        if k == 0:
            red[8:32, 8:32] = True
            green[40:56, 8:56] = True
        else:
            red[32:56, 32:56] = True
            green[8:24, 8:56] = True
        img = np.full((64, 64, 3), 90, np.uint8)
        img[red], img[green] = (200, 30, 30), (30, 200, 30)
        for name, m in (("red", red), ("green", green)):
            samples.append(records.Sample(f"{name}{k}", "referring", img, k, (64, 64),
                                          [records.Target(name, coco_rle(m))], phrase=name))
            cases.append((img, name, m))
    recs = [records.make_record(s, records.Options(style="xsam", templates=templates)) for s in samples]
    seg = XSamSegmenter.tiny(seed=1)
    seg.fit(recs, steps=100, lr=5e-3, batch_size=4)
    results = seg.segment([img for img, _, _ in cases], [name for _, name, _ in cases])
    for (img, name, m), r in zip(cases, results):
        assert not r.forced and _iou(r.mask, m) >= 0.9, (name, _iou(r.mask, m))


def test_generated_seg_state_matches_a_forward_pass(data, trained):
    """With max_new_tokens=1 no generation step consumes <SEG>: its state comes from one forward
    pass over prompt + <SEG>; it must agree with the generated step's state (MODEL_NOTES 4.6)."""
    d = data[0]
    seg, _ = trained
    full = seg.segment(_images(d)[:2], NAMES[:2])
    short = seg.segment(_images(d)[:2], NAMES[:2], max_new_tokens=1)
    for a, b in zip(full, short):
        assert b.text == "<SEG>" and not b.forced
        assert np.array_equal(a.mask, b.mask) and a.score == pytest.approx(b.score, abs=1e-4)


def test_untrained_model_gets_a_forced_seg(data):
    seg = XSamSegmenter.tiny(seed=0)
    r = seg.segment([data[0] / "img0.png"], ["square"], max_new_tokens=2)[0]
    assert r.forced == ("<SEG>" not in r.text)
    assert r.forced                     # a random model does not write <SEG> in two tokens
    assert r.mask.shape == (64, 64)


@pytest.mark.parametrize("train_embeddings", ["new", "all"])
def test_gradients_reach_every_trainable_parameter(data, train_embeddings):
    d, shapes, recs, path = data
    seg = XSamSegmenter.tiny(train_embeddings=train_embeddings)
    named = [(n, p) for n, p in seg.model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
    assert not any("visual" in n for n in names)
    if train_embeddings == "new":
        assert any("embed_tokens" in n and "trainable_tokens" in n for n in names)
        assert any("lm_head" in n and "trainable_tokens" in n for n in names)
    else:
        assert any("embed_tokens" in n for n in names) and any("lm_head" in n for n in names)
    seg.fit(path, steps=1, lr=1e-3)            # lora_B starts at zero (and with it lora_A's gradient)
    seg.model.zero_grad()
    seg.head.zero_grad()
    out = seg.losses(recs, image_root=str(d))
    out["loss"].backward()
    missing = [n for n, p in named if p.grad is None or not p.grad.abs().sum() > 0]
    missing += [f"head.{n}" for n, p in seg.head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert all(p.grad is None for n, p in seg.model.named_parameters() if "visual" in n)


@pytest.mark.parametrize("empty", [[], None])
def test_empty_targets_give_finite_losses(data, empty):
    d, shapes, recs, path = data
    blank = {**recs[0], "id": "blank", "image": str(d / "img0.png"), "segmentation": empty}
    seg = XSamSegmenter.tiny()
    for batch in ([blank], [blank, {**recs[1], "image": str(d / "img1.png")}]):
        out = seg.losses(batch)
        assert all(torch.isfinite(v).all() for v in out.values() if isinstance(v, torch.Tensor))
        out["loss"].backward()
        assert all(torch.isfinite(p.grad).all() for p in seg.head.parameters() if p.grad is not None)
    losses = seg.fit([blank], steps=3)
    assert all(np.isfinite(losses))


def _rec(d, **over):
    base = {"id": "r1", "image": str(d / "img0.png"), "image_size": [64, 64],
            "conversations": [{"from": "human", "value": "<image>\nSegment <p>square</p>."},
                              {"from": "gpt", "value": "<SEG>"}],
            "segmentation": [coco_rle(_shapes()[0])]}
    base.update(over)
    return base


def _turns(q, a):
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


@pytest.mark.parametrize("make, match", [
    (lambda d: {k: v for k, v in _rec(d).items() if k != "image"}, "record 'r1': the record has no image"),
    (lambda d: _rec(d, image=""), "record 'r1': the record has no image"),
    (lambda d: _rec(d, image=str(d / "missing.png")), "record 'r1': image file .* does not exist"),
    (lambda d: _rec(d, image=str(d / "float.tif")), "record 'r1': image mode 'F'"),
    (lambda d: _rec(d, image=str(d / "notimage.png")), "record 'r1': cannot read the image"),
    (lambda d: _rec(d, conversations=_turns("<image>\n<p>square</p>", "It is here.")),
     "record 'r1': the answer has no <SEG>"),
    (lambda d: _rec(d, conversations=_turns("<image>\n<p>square</p>", "<SEG> and <SEG>")),
     "record 'r1': exactly one <SEG> per sample"),
    (lambda d: _rec(d, conversations=_turns("<image>\n<p>a</p> <p>b</p> <p>c</p>", "<SEG>"),
                    segmentation=[coco_rle(_shapes()[0])] * 2), "record 'r1': 2 masks for 3"),
    (lambda d: _rec(d, conversations=_turns("<image>\n<p>a</p> <p>b</p>", "<SEG>"), segment_classes=[2]),
     r"record 'r1': segment_classes must be a list of 1 phrase indexes \(ints in 0..1\)"),
    (lambda d: _rec(d, segment_classes=[0, 0]), "record 'r1': segment_classes must be a list of 1"),
    (lambda d: _rec(d, segment_classes=[True]), "record 'r1': segment_classes must be"),
    (lambda d: _rec(d, segment_classes=0), "record 'r1': segment_classes must be"),
    (lambda d: _rec(d, conversations=_turns("<image>\nSegment it.", "<SEG>")), "record 'r1': the question has no <p>"),
    (lambda d: _rec(d, conversations=_turns("<image>\nSegment <p>square.", "<SEG>")),
     "record 'r1': unbalanced or nested"),
    (lambda d: _rec(d, segmentation=[coco_rle(np.zeros((32, 32), bool))]),
     r"record 'r1': segmentation 0 has size \[32, 32\] but the image is \[64, 64\]"),
    (lambda d: _rec(d, segmentation=["oops"]), "record 'r1': segmentation 0 must be a COCO RLE"),
    (lambda d: _rec(d, conversations=[{"from": "human", "value": "<image>\n<p>x</p>"}]),
     "record 'r1': expected one human and one gpt turn"),
    (lambda d: {"id": "r1", "messages": []}, "record 'r1': expected an 'xsam' record"),
    (lambda d: "not a record", "record 0: expected an 'xsam' record"),
])
def test_malformed_records_name_the_record(data, make, match):
    d = data[0]
    Image.fromarray(np.zeros((8, 8), np.float32)).save(d / "float.tif")
    (d / "notimage.png").write_bytes(b"not a png")
    seg = XSamSegmenter.tiny()
    with pytest.raises(ValueError, match=match):
        seg.fit([make(d)], steps=1)


def test_argument_errors(data, tmp_path):
    d = data[0]
    seg = XSamSegmenter.tiny()
    with pytest.raises(ValueError, match="same length"):
        seg.segment([d / "img0.png"], ["a", "b"])
    with pytest.raises(ValueError, match="same length"):
        seg.segment([d / "img0.png"], "a")
    with pytest.raises(ValueError, match="plain phrase"):
        seg.segment([d / "img0.png"], ["<p>a</p>"])
    with pytest.raises(ValueError, match="question must be a str with"):
        seg.segment([d / "img0.png"], ["a"], question="Segment it.")
    with pytest.raises(ValueError, match="steps"):
        seg.fit([], steps=-1)
    with pytest.raises(ValueError, match="records is empty"):
        seg.fit([], steps=1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1: not JSON"):
        seg.fit(bad, steps=1)
    with pytest.raises(ValueError, match="not a directory"):
        XSamSegmenter.from_pretrained(tmp_path / "nothing")
    with pytest.raises(ValueError, match="train_embeddings"):
        XSamSegmenter.tiny(train_embeddings="some")
    with pytest.raises(TypeError, match="lora"):
        XSamSegmenter.tiny(lora=8)
    from segtext.model.xsam import SegHeadConfig

    with pytest.raises(ValueError, match="llm_dim"):
        XSamSegmenter.tiny(head_config=SegHeadConfig.tiny(llm_dim=32))


def test_checkpoint_directory(data, tmp_path):
    """A Qwen2-VL checkpoint on disk gets a new head at its width."""
    from transformers import Qwen2VLForConditionalGeneration

    from segtext.model import _qwen

    tok = _qwen.tiny_tokenizer()
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(_qwen.tiny_config(tok)).save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    _qwen.tiny_image_processor().save_pretrained(tmp_path / "ckpt")
    seg = XSamSegmenter.from_pretrained(tmp_path / "ckpt", lora={"r": 4}, head_size=64)
    assert seg.head.config.llm_dim == 64 and seg.lora["r"] == 4
    r = seg.segment([data[0] / "img0.png"], ["square"], max_new_tokens=2)[0]
    assert r.mask.shape == (64, 64)


def test_no_target_records_of_segtext_build_train_the_lm_only(data):
    """`segtext build --style xsam` writes a no-target sample without <SEG> ("I cannot find ..."):
    it is read, trains the language model alone, and mixes with target samples in a batch."""
    d, shapes, recs, path = data
    sample = records.Sample("none", "referring", str(d / "img0.png"), 9, (64, 64), [], phrase="a giraffe")
    rec = records.make_record(sample, records.Options(style="xsam"))
    assert "<SEG>" not in rec["conversations"][1]["value"] and rec["segmentation"] == []
    seg = XSamSegmenter.tiny()
    out = seg.losses([rec])
    assert float(out["mask"]) == 0.0 and torch.isfinite(out["lm"]) and float(out["lm"]) > 0
    mixed = seg.losses([rec, {**recs[1], "image": str(d / "img1.png")}])
    assert float(mixed["mask"]) > 0 and torch.isfinite(mixed["loss"])
    mixed["loss"].backward()
    assert any(p.grad is not None for p in seg.head.parameters())
    assert all(np.isfinite(seg.fit([rec, {**recs[0], "image": str(d / "img0.png")}], steps=2)))
    # a record with target masks must still answer with <SEG>
    with pytest.raises(ValueError, match="the answer has no <SEG>"):
        seg.losses([{**rec, "segmentation": [coco_rle(shapes[0])]}])


def test_several_masks_of_a_class_and_a_negative_class(data):
    """An instances record as segtext build --style xsam writes it: two masks of one class, a
    listed class without any mask (a negative); the targets name each mask's class."""
    d = data[0]
    shapes = _shapes()
    sample = records.Sample("inst", "instances", "img0.png", 0, (64, 64),
                            [records.Target("thing", coco_rle(shapes[0])), records.Target("thing", coco_rle(shapes[1]))])
    rec = records.make_record(sample, records.Options(style="xsam", images=str(d)))
    assert rec["classes"] == ["thing"] and rec["segment_classes"] == [0, 0]
    rec["conversations"][0]["value"] = rec["conversations"][0]["value"][:-1] + ", <p>nothing</p>."
    rec["classes"].append("nothing")
    seg = XSamSegmenter.tiny()
    items = seg._records([rec], None)
    assert items[0]["labels"] == [0, 0] and items[0]["n_phrases"] == 2
    out = seg.losses([rec])
    assert torch.isfinite(out["loss"]) and out["mask"] > 0



def test_command_line_trains_and_runs_the_mask_head(data, tmp_path, capsys):
    """`segtext train` on xsam records trains the X-SAM head path (found from the records);
    `segtext predict` with that model answers a phrase (mask PNG) or classes (a label-map PNG, or
    COCO panoptic's RGB ids)."""
    from segtext.cli import main

    d, shapes, recs, path = data
    out = tmp_path / "model"
    assert main(["train", str(path), "--model", "tiny", "--output", str(out), "--steps", "100", "--quiet"]) == 0
    assert (out / "segtext_xsam.json").exists() and "the X-SAM mask head, 100 steps" in capsys.readouterr().err
    for k in (0, 3):
        png = tmp_path / f"m{k}.png"
        assert main(["predict", "--model", str(out), "--image", str(d / f"img{k}.png"), "--prompt", NAMES[k],
                     "-o", str(png)]) == 0
        line = json.loads(capsys.readouterr().out)
        assert line["task"] == "referring" and "<SEG>" in line["text"] and not line["forced"]
        mask = np.array(Image.open(png)) > 0
        assert _iou(mask, shapes[k]) >= 0.9 and line["area"] == int(mask.sum()) and line["image_size"] == [64, 64]
    sem = tmp_path / "sem.png"
    assert main(["predict", "--model", str(out), "--image", str(d / "img0.png"), "--classes", "square,bar",
                 "-o", str(sem)]) == 0
    line = json.loads(capsys.readouterr().out)
    labels = np.array(Image.open(sem))
    assert line["task"] == "semantic" and line["classes"] == ["square", "bar"] and labels.shape == (64, 64)
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert line["areas"] == {"square": int((labels == 1).sum()), "bar": int((labels == 2).sum())}
    pan = tmp_path / "pan.png"
    assert main(["predict", "--model", str(out), "--image", str(d / "img0.png"), "--classes", "square,bar",
                 "--task", "panoptic", "-o", str(pan)]) == 0
    line = json.loads(capsys.readouterr().out)
    rgb = np.array(Image.open(pan)).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    assert set(np.unique(ids)) - {0} == {s["id"] for s in line["segments_info"]}
    assert all(s["area"] == int((ids == s["id"]).sum()) for s in line["segments_info"])
    # errors: exit status 2 with a message
    for argv, message in [
        (["--task", "semantic", "--prompt", "square"], "--task semantic takes --classes"),
        (["--prompt", "square", "--classes", "a"], "not both"),
        (["--task", "referring", "--classes", "a"], "--task referring takes --prompt"),
        ([], "--task referring takes --prompt"),
        (["--classes", "a,,b"], "holds an empty name"),
        (["--prompt", "square", "--sample"], "are for text-path models"),
    ]:
        assert main(["predict", "--model", str(out), "--image", str(d / "img0.png"), *argv]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", str(path), "--model", "tiny", "--head", "text", "--output", str(tmp_path / "t"),
                 "--steps", "1", "--quiet"]) == 2
    assert "expected a 'messages' record" in capsys.readouterr().err and not (tmp_path / "t").exists()
    assert main(["train", str(path), "--model", str(out), "--head", "text", "--output", str(tmp_path / "t"),
                 "--steps", "1", "--quiet"]) == 2
    assert "is a saved X-SAM segmenter, but the records are for the text path" in capsys.readouterr().err
    assert main(["train", str(path), "--model", str(out), "--output", str(tmp_path / "again"), "--steps", "2",
                 "--quiet"]) == 0  # a saved X-SAM model goes on training
    assert (tmp_path / "again" / "segtext_xsam.json").exists()
