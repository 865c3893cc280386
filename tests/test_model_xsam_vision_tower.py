"""VisionTowerBackbone: the VLM's own vision tower as the X-SAM head's backbone (tiny configs, CPU).

The patches it cuts equal Qwen2-VL's image processor's; its maps are the tower's patch states put
back on the patch grid (checked through the tower's own patch merger, for Qwen2-VL and for
Qwen2.5-VL's window order); in XSamSegmenter it shares the VLM's frozen tower, gradients reach
every new parameter, a short fit has finite losses, and save / reload rebuilds it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
from PIL import Image  # noqa: E402
from shapes import coco_rle, four_shapes  # noqa: E402

from segtext.model import XSamSegmenter, _qwen  # noqa: E402
from segtext.model.xsam import Backbone, SegHead, SegHeadConfig, VisionTowerBackbone  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def qwen2_tower():
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    return Qwen2VLForConditionalGeneration(_qwen.tiny_config(_qwen.tiny_tokenizer())).model.visual


def _qwen2_5_tower():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=None, eos_token_id=1,
                         pad_token_id=0, rope_parameters=dict(rope_type="default", mrope_section=[2, 3, 3])),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]))
    return Qwen2_5_VLForConditionalGeneration(cfg).model.visual


def test_patches_equal_the_image_processor(qwen2_tower):
    backbone = VisionTowerBackbone(qwen2_tower, out_channels=(8, 16, 32))
    arr = (np.random.default_rng(0).random((56, 84, 3)) * 255).astype(np.uint8)   # a multiple of 28: no resize
    ref = _qwen.tiny_image_processor()(images=[Image.fromarray(arr)], return_tensors="pt")
    x = torch.from_numpy(arr.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    pixel_values, grid = backbone.patchify(x)
    assert grid.tolist() == ref["image_grid_thw"].tolist() == [[1, 4, 6]]
    assert torch.allclose(pixel_values, ref["pixel_values"], atol=1e-5)


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_maps_are_the_patch_states_in_grid_order(qwen2_tower, kind):
    """Put back in the tower's merge order, the finest map's input is what the merger reads:
    merger(map) == the tower's merged output (Qwen2.5-VL: after its window order is undone)."""
    tower = qwen2_tower if kind == "qwen2_vl" else _qwen2_5_tower()
    backbone = VisionTowerBackbone(tower, layers=(-1,), scales=(1,), out_channels=(8,))
    images = torch.rand(2, 3, 112, 168) * 2 - 1
    seen = {}
    hook = backbone.connectors[0].register_forward_hook(lambda m, args, out: seen.update(map=args[0]))  # -> None
    try:
        feats = backbone(images)
    finally:
        hook.remove()
    fmap = seen["map"]
    b, c, gh, gw = fmap.shape
    assert (b, c, gh, gw) == (2, backbone.width, 8, 12) and feats[0].shape == (2, 8, 8, 12)
    with torch.no_grad():
        pixel_values, grid = backbone.patchify(images)
        merged = tower(pixel_values, grid_thw=grid).pooler_output
        tokens = fmap.reshape(b, c, gh // 2, 2, gw // 2, 2).permute(0, 2, 4, 3, 5, 1).reshape(-1, c)
        assert torch.allclose(tower.merger(tokens), merged, atol=1e-5)


def test_shapes_resizing_and_errors(qwen2_tower):
    backbone = VisionTowerBackbone(qwen2_tower, out_channels=(8, 16, 32))
    assert isinstance(backbone, Backbone) and backbone.out_channels == (8, 16, 32)
    assert backbone.patch_size == 14 and backbone.merge_size == 2 and backbone.width == 32
    assert any(n.startswith("visual.") for n, _ in backbone.named_parameters())      # not shared: its child
    shared = VisionTowerBackbone(qwen2_tower, out_channels=(8, 16, 32), shared=True)
    assert not any(n.startswith("visual") for n in shared.state_dict()) and shared.tower is qwen2_tower
    # 64 px is resized to 56 (2 x 2 merge windows of 28 px): strides 7, 14, 28
    assert [tuple(f.shape) for f in shared(torch.rand(1, 3, 64, 64))] == [(1, 8, 8, 8), (1, 16, 4, 4), (1, 32, 2, 2)]
    head = SegHead(SegHeadConfig.tiny(), shared)
    out = head(torch.rand(2, 3, 112, 112), torch.randn(2, 64), [[torch.randn(3, 64)], [torch.randn(2, 64)]])
    assert out["pred_masks"].shape == (2, 8, 16, 16)
    with pytest.raises(TypeError, match="Qwen-VL vision tower"):
        VisionTowerBackbone(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="out of range"):
        VisionTowerBackbone(qwen2_tower, layers=(0, 1, 5))
    with pytest.raises(ValueError, match="scales"):
        VisionTowerBackbone(qwen2_tower, scales=(0.5, 1, 2))
    with pytest.raises(ValueError, match="image_mean"):
        VisionTowerBackbone(qwen2_tower, image_mean=(0.5,))
    with pytest.raises(ValueError, match="3 channels"):
        shared(torch.rand(1, 1, 56, 56))


@pytest.fixture(scope="module")
def records():
    shapes = four_shapes()
    recs = []
    for k, m in enumerate(shapes[:2]):
        img = np.full((64, 64, 3), 90, np.uint8)
        img[m] = (200, 30, 30)
        recs.append({"id": f"vt{k}", "image": img, "segmentation": [coco_rle(m)],
                     "conversations": [{"from": "human", "value": "<image>\nSegment <p>the shape</p>."},
                                       {"from": "gpt", "value": "<SEG>"}]})
    return recs


def test_segmenter_with_the_vision_tower(records, tmp_path):
    seg = XSamSegmenter.tiny(backbone="vision_tower")
    bb = seg.head.backbone
    base = seg.model.get_base_model()
    assert isinstance(bb, VisionTowerBackbone) and bb.tower is base.model.visual and seg.head_size == 112
    assert not any(p.requires_grad for p in bb.tower.parameters())                 # frozen with the VLM
    assert not any(n.startswith("backbone.visual") for n in seg.head.state_dict())  # saved once, with the VLM
    # gradients reach every head parameter, the new connectors included; the tower gets none
    out = seg.losses(records)
    out["loss"].backward()
    missing = [n for n, p in seg.head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert any(n.startswith("backbone.connectors") for n, _ in seg.head.named_parameters())
    assert all(p.grad is None for p in bb.tower.parameters())
    seg.model.zero_grad()
    seg.head.zero_grad()
    losses = seg.fit(records, steps=4, lr=5e-3, batch_size=2)
    assert len(losses) == 4 and all(np.isfinite(losses))
    r = seg.segment([records[0]["image"]], ["the shape"], max_new_tokens=2)[0]
    assert r.mask.shape == (64, 64)
    s = seg.segment([records[0]["image"]], classes=["the shape", "sky"], task="semantic", max_new_tokens=2)[0]
    assert s.labels.shape == (64, 64)
    # save / reload: the backbone is rebuilt around the reloaded VLM's tower, same masks
    seg.save_pretrained(tmp_path / "m")
    again = XSamSegmenter.from_pretrained(tmp_path / "m")
    assert isinstance(again.head.backbone, VisionTowerBackbone)
    assert again.head.backbone.tower is again.model.get_base_model().model.visual
    assert again.head.backbone.settings() == bb.settings()
    r2 = again.segment([records[0]["image"]], ["the shape"], max_new_tokens=2)[0]
    assert r2.text == r.text and np.array_equal(r2.mask, r.mask) and r2.score == pytest.approx(r.score, abs=1e-5)


def test_checkpoint_with_the_vision_tower(tmp_path):
    from transformers import Qwen2VLForConditionalGeneration

    tok = _qwen.tiny_tokenizer()
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(_qwen.tiny_config(tok)).save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    _qwen.tiny_image_processor().save_pretrained(tmp_path / "ckpt")
    seg = XSamSegmenter.from_pretrained(tmp_path / "ckpt", backbone="vision_tower", head_size=56)
    bb = seg.head.backbone
    assert isinstance(bb, VisionTowerBackbone) and bb.tower is seg.model.get_base_model().model.visual
    assert bb.image_mean == pytest.approx(tuple(seg.image_processor.image_mean))
    assert seg.segment([np.zeros((40, 50, 3), np.uint8)], ["x"], max_new_tokens=1)[0].mask.shape == (40, 50)
    with pytest.raises(ValueError, match="backbone must be"):
        XSamSegmenter.from_pretrained(tmp_path / "ckpt", backbone="sam")
    with pytest.raises(ValueError, match="backbone must be"):
        XSamSegmenter.tiny(backbone="resnet")
