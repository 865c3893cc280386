"""The text path end to end: a tiny random Qwen2-VL learns to write R-RLE and B-SD masks.

Four synthetic 64 x 64 images with simple shapes (edges on the 8-pixel cells of an 8 x 8 grid, and
on the cells of their B-SD boxes, so that the texts hold the masks exactly), records made by
segtext.records from their masks, a few hundred LoRA steps until the model overfits, then
``segment`` must give back masks with IoU >= 0.9; saving and reloading gives the same answers.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from shapes import four_shapes

import segtext as st
from segtext import records

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
from PIL import Image  # noqa: E402

from segtext.model.segmenter import Segmenter  # noqa: E402

NAMES = ["square", "bar", "corner", "cross"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


_shapes = four_shapes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import pycocotools.mask as pm

    d = tmp_path_factory.mktemp("shapes")
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    shapes = _shapes()
    samples = []
    for k, m in enumerate(shapes):
        img = np.full((64, 64, 3), 90, np.uint8)
        img[m] = colors[k]
        Image.fromarray(img).save(d / f"img{k}.png")
        rle = pm.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        samples.append(records.Sample(f"s{k}", "referring", str(d / f"img{k}.png"), k, (64, 64),
                                      [records.Target(NAMES[k], rle)], phrase=NAMES[k]))
    templates = records.load_templates({"referring": {"questions": ["Segment {phrase}."], "answers": ["{mask}"]}})
    return d, shapes, samples, templates


def _records(samples, templates, encoding):
    opts = records.Options(encoding=encoding, grid_size=(8, 8), resolution=8, templates=templates)
    return [records.make_record(s, opts, seed=0) for s in samples]


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.parametrize("encoding", ["rrle", "bsd"])
def test_text_path_learns_the_masks(data, encoding, tmp_path):
    d, shapes, samples, templates = data
    recs = _records(samples, templates, encoding)
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    seg = Segmenter.tiny(encoding=encoding, grid_size=8, resolution=8)
    losses = seg.fit(path, steps=150, lr=5e-3, batch_size=4)
    assert losses[-1] < 0.05 * losses[0]
    images = [d / f"img{k}.png" for k in range(4)]
    results = seg.segment(images, NAMES)
    for k, r in enumerate(results):
        assert r.mask.shape == (64, 64) and r.ok, r.text
        assert _iou(r.mask, shapes[k]) >= 0.9, (k, r.text)
    seg.save_pretrained(tmp_path / "model")
    again = Segmenter.from_pretrained(tmp_path / "model")
    assert [r.text for r in again.segment(images, NAMES)] == [r.text for r in results]


def test_untrained_model_still_writes_decodable_masks(data):
    """Constrained generation: even a random model's answers decode in strict mode."""
    d, shapes, samples, templates = data
    for encoding in ("rrle", "bsd"):
        seg = Segmenter.tiny(encoding=encoding, grid_size=4, resolution=4, seed=1)
        out = seg.segment([d / "img0.png", d / "img1.png"], ["square", "bar"], do_sample=True, seed=0,
                          max_new_tokens=400, max_objects=2)
        for r, phrase in zip(out, ["square", "bar"]):
            assert r.mask.shape == (64, 64)
            if encoding == "rrle":
                st.decode_rrle(r.text, ["others", phrase], (4, 4), mode="strict")
            else:
                res = st.decode_bsd(r.text, (64, 64), resolution=4, mode="strict")
                assert all(o.label == phrase for o in res.objects)


def test_checkpoint_directory(data, tmp_path):
    """Any Qwen2-VL checkpoint on disk: model, tokenizer and image processor read from it."""
    from transformers import Qwen2VLForConditionalGeneration

    from segtext.model import _qwen

    tok = _qwen.tiny_tokenizer()
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(_qwen.tiny_config(tok)).save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    _qwen.tiny_image_processor().save_pretrained(tmp_path / "ckpt")
    seg = Segmenter.from_pretrained(tmp_path / "ckpt", encoding="bsd", resolution=4, lora={"r": 4})
    assert len(seg.format_ids) == 126
    trainable = [n for n, p in seg.model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trainable) and not any("visual" in n for n in trainable)
    r = seg.segment([data[0] / "img0.png"], ["square"], max_new_tokens=200, max_objects=1)[0]
    assert r.mask.shape == (64, 64)


def _rec(**over):
    base = {"id": "r1", "messages": [{"role": "user", "content": "<image>Segment it."},
                                     {"role": "assistant", "content": "<seg>others *4\n</seg>"}], "images": ["x.png"]}
    base.update(over)
    return base


@pytest.mark.parametrize("make, match", [
    (lambda d: _rec(images=[]), "record 'r1': expected one image"),
    (lambda d: _rec(images=None), "record 'r1': expected one image"),
    (lambda d: _rec(messages=[{"role": "user", "content": "<image>x"}]), "record 'r1': expected one user and one assistant"),
    (lambda d: _rec(images=[str(d / "img0.png")], messages=[{"role": "user", "content": "<image>x"},
                                                            {"role": "assistant", "content": "others *4\n"}]),
     "record 'r1': the answer has no <seg>"),
    (lambda d: _rec(images=[str(d / "missing.png")]), "record 'r1': image file .* does not exist"),
    (lambda d: _rec(images=[str(d / "float.tif")]), "record 'r1': image mode 'F'"),
    (lambda d: _rec(images=[str(d / "notimage.png")]), "record 'r1': cannot read the image"),
    (lambda d: "not a record", "record 0: expected a 'messages' record"),
])
def test_malformed_records_name_the_record(data, make, match):
    d = data[0]
    Image.fromarray(np.zeros((8, 8), np.float32)).save(d / "float.tif")
    (d / "notimage.png").write_bytes(b"not a png")
    seg = Segmenter.tiny(grid_size=2)
    with pytest.raises(ValueError, match=match):
        seg.fit([make(d)], steps=1)


def test_argument_errors(data, tmp_path):
    seg = Segmenter.tiny(grid_size=2)
    with pytest.raises(ValueError, match="encoding"):
        Segmenter.tiny(encoding="png")
    with pytest.raises(ValueError, match="same length"):
        seg.segment([data[0] / "img0.png"], ["a", "b"])
    with pytest.raises(ValueError, match="same length"):
        seg.segment([data[0] / "img0.png"], "a")
    with pytest.raises(ValueError, match="steps"):
        seg.fit([], steps=-1)
    with pytest.raises(ValueError, match="records is empty"):
        seg.fit([], steps=1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1: not JSON"):
        seg.fit(bad, steps=1)
    with pytest.raises(ValueError, match="not a directory"):
        Segmenter.from_pretrained(tmp_path / "nothing")
    with pytest.raises(TypeError, match="lora"):
        Segmenter.tiny(lora=8)


def test_command_line_train_and_predict(data, tmp_path, capsys):
    from segtext.cli import main

    d, shapes, samples, templates = data
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records(samples, templates, "rrle")))
    out = tmp_path / "model"
    assert main(["train", str(path), "--model", "tiny", "--output", str(out), "--steps", "150", "--grid-size", "8",
                 "--quiet"]) == 0
    assert (out / "segtext.json").exists()
    assert "150 steps" in capsys.readouterr().err
    assert main(["predict", "--model", str(out), "--image", str(d / "img3.png"), "--prompt", "cross",
                 "-o", str(tmp_path / "mask.png")]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["ok"] and line["image_size"] == [64, 64] and line["text"].startswith("<seg>")
    mask = np.array(Image.open(tmp_path / "mask.png")) > 0
    assert _iou(mask, shapes[3]) >= 0.9 and line["area"] == int(mask.sum())
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "mask.png").st_mode & 0o777 == 0o666 & ~umask  # as other files get, not 0600
    # errors: exit status 2 and a message, nothing half-written
    assert main(["predict", "--model", str(out), "--image", str(d / "img3.png"), "--prompt", "cross",
                 "-o", str(tmp_path / "no" / "mask.png")]) == 2
    assert "output directory does not exist" in capsys.readouterr().err
    assert main(["train", str(path), "--model", "tiny", "--output", str(out), "--steps", "1"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "none.jsonl"), "--model", "tiny", "--output", str(tmp_path / "m2")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "m2").exists()
    assert main(["predict", "--model", str(tmp_path / "nothing"), "--image", "x.png", "--prompt", "a"]) == 2
    assert "not a directory" in capsys.readouterr().err
    for argv in (["--classes", "a,b"], [], ["--prompt", "a", "--task", "semantic"]):  # X-SAM models only
        assert main(["predict", "--model", str(out), "--image", str(d / "img3.png"), *argv]) == 2
        assert "need a model trained on xsam records" in capsys.readouterr().err


def test_from_config_random_weights():
    from segtext.model import _qwen

    tok = _qwen.tiny_tokenizer()
    seg = Segmenter.from_pretrained(_qwen.tiny_config(tok), encoding="rrle", grid_size=2, tokenizer=tok,
                                    image_processor=_qwen.tiny_image_processor())
    r = seg.segment([np.zeros((56, 56, 3), np.uint8)], ["dog"], max_new_tokens=120, start="answer")[0]
    assert r.mask.shape == (56, 56)
    st.decode_rrle(r.text, ["others", "dog"], (2, 2), mode="strict")
    with pytest.raises(ValueError, match="tokenizer="):
        Segmenter.from_pretrained(_qwen.tiny_config(tok))
