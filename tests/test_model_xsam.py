"""The X-SAM-style mask head (segtext.model.xsam): shapes, conditioning, matching, losses,
gradients, post-processing, text output, and an overfit run on synthetic shapes."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")

import torch.nn.functional as F  # noqa: E402

import segtext as st  # noqa: E402
from segtext.model import xsam  # noqa: E402
from segtext.model.xsam import (  # noqa: E402
    PAD_LOGIT,
    SamBackbone,
    SegHead,
    SegHeadConfig,
    SetCriterion,
    TinyConvBackbone,
    dice_loss,
    masks_to_text,
    panoptic_inference,
    referring_inference,
    semantic_inference,
    sigmoid_bce_loss,
    span_ids,
)

LLM = 16


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def make_head(seed: int = 0, **overrides) -> tuple[SegHead, SegHeadConfig]:
    torch.manual_seed(seed)
    cfg = SegHeadConfig.tiny(llm_dim=LLM, **overrides)
    return SegHead(cfg), cfg


def inputs(b: int = 2, size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, size, size, generator=g)
    seg = torch.randn(b, LLM, generator=g)
    phrases = [[torch.randn(2 + k, LLM, generator=g) for k in range(1 + i % 2)] for i in range(b)]
    return images, seg, phrases


def random_outputs(b: int, q: int, c: int, h: int, w: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"pred_logits": 3 * torch.randn(b, q, c + 1, generator=g),
            "pred_masks": 4 * torch.randn(b, q, h, w, generator=g),
            "class_mask": torch.ones(b, c + 1, dtype=torch.bool)}


def random_targets(counts, c: int, h: int, w: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"labels": torch.randint(0, c, (t,), generator=g),
             "masks": (torch.rand(t, h, w, generator=g) > 0.6).float()} for t in counts]


# ----------------------------------------------------------------------------------- package
def test_import_segtext_model_is_light():
    code = "import sys, segtext, segtext.model; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_lazy_names():
    import segtext.model as sm

    assert sm.SegHead is SegHead and sm.masks_to_text is masks_to_text
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        sm.Nope  # noqa: B018


# ------------------------------------------------------------------------------------ config
def test_config_presets_and_validation():
    x = SegHeadConfig.xsam(2048)
    assert (x.hidden_dim, x.num_queries, x.num_layers, x.num_heads, x.ffn_dim, x.num_points) == \
        (256, 200, 9, 8, 2048, 12544)
    assert SegHeadConfig.xsam(3072, num_queries=50).num_queries == 50
    cfg = SegHeadConfig.tiny()
    assert SegHeadConfig(**cfg.to_dict()) == cfg
    for bad, match in [({"hidden_dim": 30}, "multiple of 4"), ({"num_queries": 0}, "num_queries"),
                       ({"num_points": 0}, "num_points"), ({"importance_sample_ratio": 2.0}, "importance"),
                       ({"backbone_channels": ()}, "backbone_channels"), ({"num_layers": 1.5}, "num_layers")]:
        with pytest.raises(ValueError, match=match):
            SegHeadConfig.tiny(**bad)


# ------------------------------------------------------------------------------------ shapes
def test_backbone_and_decoder_shapes():
    feats = TinyConvBackbone((8, 16, 32, 64))(torch.rand(2, 3, 64, 48))
    assert [tuple(f.shape) for f in feats] == [(2, 8, 16, 12), (2, 16, 8, 6), (2, 32, 4, 3), (2, 64, 2, 2)]
    dec = xsam.PixelDecoder((8, 16, 32, 64), hidden_dim=16, mask_dim=8, num_levels=3)
    memory, mask_features = dec(feats)
    assert [tuple(m.shape) for m in memory] == [(2, 16, 2, 2), (2, 16, 4, 3), (2, 16, 8, 6)]
    assert tuple(mask_features.shape) == (2, 8, 16, 12)
    with pytest.raises(ValueError, match="feature map 1 must be"):
        dec([feats[0], feats[0], feats[2], feats[3]])
    with pytest.raises(ValueError, match="num_levels"):
        xsam.PixelDecoder((8, 16), 16, 8, num_levels=3)


@pytest.mark.parametrize("b", [1, 3])
def test_head_output_shapes(b):
    head, cfg = make_head()
    images, seg, phrases = inputs(b, size=48)
    out = head(images, seg, phrases)
    c = max(len(p) for p in phrases)
    assert out["pred_logits"].shape == (b, cfg.num_queries, c + 1)
    assert out["pred_masks"].shape == (b, cfg.num_queries, 12, 12)          # stride 4
    assert len(out["aux_outputs"]) == cfg.num_layers                        # 1 + layers predictions in all
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == out["pred_logits"].shape
        assert aux["pred_masks"].shape == out["pred_masks"].shape
    assert out["class_mask"].tolist() == [[k < len(p) for k in range(c)] + [True] for p in phrases]
    assert out["image_size"] == (48, 48)
    # padded phrase slots can never win
    for i, p in enumerate(phrases):
        assert (out["pred_logits"][i, :, len(p):c] == PAD_LOGIT).all()
    assert torch.isfinite(out["pred_masks"]).all()


def test_phrase_inputs_as_ids_equal_inputs_as_lists():
    head, _ = make_head()
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 12, LLM, generator=g)
    open_id, close_id = 1, 2
    tokens = torch.tensor([[7, 1, 9, 9, 2, 7, 1, 8, 2, 7, 5, 5],
                           [7, 7, 1, 9, 9, 9, 2, 7, 7, 7, 5, 5]])
    ids = span_ids(tokens, open_id, close_id)
    assert ids.tolist() == [[-1, 0, 0, 0, 0, -1, 1, 1, 1, -1, -1, -1],
                            [-1, -1, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1]]
    images = torch.rand(2, 3, 32, 32)
    seg = hidden[:, -1]
    a = head(images, seg, hidden, ids)
    lists = [[hidden[0, 1:5], hidden[0, 6:9]], [hidden[1, 2:7]]]           # spans with their markers
    b = head(images, seg, lists)
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"])
    torch.testing.assert_close(a["pred_masks"], b["pred_masks"])
    # a prototype is the mean of the *projected* states (not the projection of the mean)
    protos, valid = head.prototypes(hidden, ids)
    torch.testing.assert_close(protos[0, 1], head.llm_projector(hidden[0, 6:9]).mean(0))
    assert valid.tolist() == [[True, True], [True, False]]
    assert not torch.allclose(protos[0, 1], head.llm_projector(hidden[0, 6:9].mean(0)))
    # bfloat16 hidden states (an LLM in bf16) feed the float32 head
    c = head(images, seg.bfloat16(), hidden.bfloat16(), ids)
    assert c["pred_logits"].dtype == torch.float32
    torch.testing.assert_close(c["pred_masks"], a["pred_masks"], rtol=0.1, atol=0.1)


def test_fewer_memory_levels_than_backbone_levels():
    torch.manual_seed(0)
    cfg = SegHeadConfig.tiny(llm_dim=LLM, num_levels=2, num_layers=2, backbone_channels=(8, 16, 32, 64))
    head = SegHead(cfg)
    images, seg, phrases = inputs(1, size=64)
    out = head(images, seg, phrases)
    assert out["pred_masks"].shape == (1, 8, 16, 16) and len(out["aux_outputs"]) == 2
    assert head.level_embed.weight.shape == (2, 32)


def test_span_ids_errors():
    with pytest.raises(ValueError, match="row 1"):
        span_ids(torch.tensor([[1, 2], [1, 1]]), 1, 2)                    # nested / unclosed
    with pytest.raises(ValueError, match="row 0"):
        span_ids(torch.tensor([[2, 1, 2]]), 1, 2)                          # stray </p>
    with pytest.raises(TypeError, match="integer"):
        span_ids(torch.zeros(1, 3), 1, 2)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        span_ids(torch.zeros(3, dtype=torch.long), 1, 2)
    assert span_ids(torch.zeros(2, 0, dtype=torch.long), 1, 2).shape == (2, 0)


def test_seg_state_is_added_to_every_query_and_first_prediction_comes_before_the_layers():
    head, _ = make_head()
    images, seg, phrases = inputs(2)
    out = head(images, seg, phrases)
    with torch.no_grad():
        _, mask_features = head.pixel_decoder(head.backbone(images))
        x0 = head.query_feat.weight[None] + head.llm_projector(seg)[:, None]
        q0 = head.decoder_norm(x0)
        masks0 = torch.einsum("bqc,bchw->bqhw", head.mask_embed(q0), mask_features)
        torch.testing.assert_close(out["aux_outputs"][0]["pred_masks"], masks0)
        # the last class is the latent background, scored by scaled cosine similarity
        bg = F.normalize(head.background.weight[0], dim=0)
        expected_bg = head.logit_scale.exp() * (F.normalize(q0, dim=-1) @ bg)
        torch.testing.assert_close(out["aux_outputs"][0]["pred_logits"][..., -1], expected_bg)
        # the first phrase's column: cos with the mean of its projected tokens
        proto = F.normalize(head.llm_projector(phrases[0][0]).mean(0), dim=0)
        torch.testing.assert_close(out["aux_outputs"][0]["pred_logits"][0, :, 0],
                                   head.logit_scale.exp() * (F.normalize(q0[0], dim=-1) @ proto))
    # another <SEG> state changes every query's mask
    other = head(images, seg + 1, phrases)
    changed = (other["pred_masks"] - out["pred_masks"]).abs().flatten(2).amax(-1)
    assert (changed > 1e-4).all()


def test_classify_clamps_and_pads():
    head, _ = make_head()
    with torch.no_grad():
        head.logit_scale.fill_(math.log(1000.0))
    q = torch.randn(1, 3, 32)
    logits = head.classify(q, torch.cat([q[:, :1], -q[:, :1], q[:, :1]], 1),
                           torch.tensor([[True, True, False]]))
    assert logits[0, 0, 0] == 50.0 and logits[0, 0, 1] == -50.0 and (logits[..., 2] == PAD_LOGIT).all()


def test_input_validation():
    head, _ = make_head()
    images, seg, phrases = inputs(2)
    with pytest.raises(TypeError, match="images must be"):
        head(images.numpy(), seg, phrases)
    with pytest.raises(ValueError, match="images must be"):
        head(images[0], seg, phrases)
    with pytest.raises(TypeError, match="images must be a floating"):
        head(images.to(torch.uint8), seg, phrases)
    with pytest.raises(ValueError, match="3 channels"):
        head(images[:, :1], seg, phrases)
    with pytest.raises(ValueError, match=r"seg_hidden must be \[B, llm_dim\] = \[2, 16\], got \(2, 1, 16\)"):
        head(images, seg[:, None], phrases)
    with pytest.raises(ValueError, match="1 samples, images have 2"):
        head(images, seg, phrases[:1])
    with pytest.raises(ValueError, match=r"phrase_hidden\[1\]\[0\] must be"):
        head(images, seg, [phrases[0], [torch.randn(3, LLM + 1)]])
    with pytest.raises(ValueError, match=r"phrase_hidden\[0\]\[0\] must be \[L_k >= 1"):
        head(images, seg, [[torch.randn(0, LLM)], phrases[1]])
    with pytest.raises(TypeError, match=r"phrase_hidden\[0\] must be a list"):
        head(images, seg, [torch.randn(3, LLM), phrases[1]])
    with pytest.raises(TypeError, match="without phrase_ids"):
        head(images, seg, torch.randn(2, 5, LLM))
    with pytest.raises(ValueError, match=r"phrase_ids must be \[B, L\]"):
        head(images, seg, torch.randn(2, 5, LLM), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="out_channels"):
        SegHead(SegHeadConfig.tiny(), backbone=torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match="SegHeadConfig"):
        SegHead({"hidden_dim": 32})


def test_sam_backbone_with_a_tiny_random_hf_model():
    transformers = pytest.importorskip("transformers")
    sam_cfg = transformers.SamVisionConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                           mlp_dim=64, output_channels=16, image_size=64, patch_size=8,
                                           window_size=4, global_attn_indexes=[2])
    torch.manual_seed(0)
    encoder = transformers.SamVisionModel(sam_cfg)
    backbone = SamBackbone(encoder, hidden_size=32, out_channels=(16, 24, 32))
    feats = backbone(torch.rand(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 16, 16, 16), (2, 24, 8, 8), (2, 32, 4, 4)]
    head = SegHead(SegHeadConfig.tiny(llm_dim=LLM), backbone=backbone)
    images, seg, phrases = inputs(2, size=64)
    out = head(images, seg, phrases)
    assert out["pred_masks"].shape == (2, 8, 16, 16)
    targets = random_targets([1, 2], 1, 64, 64, seed=0)
    SetCriterion(head.config)(out, targets)["loss"].backward()
    for name, p in backbone.connectors.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    from transformers.models.sam.modeling_sam import SamVisionEncoder

    inner = SamBackbone(SamVisionEncoder(sam_cfg), hidden_size=32, layers=(1, 2, 3), out_channels=(8, 8, 8))
    assert [tuple(f.shape) for f in inner(images)] == [(2, 8, 16, 16), (2, 8, 8, 8), (2, 8, 4, 4)]
    with pytest.raises(ValueError, match="out of range"):
        SamBackbone(encoder, hidden_size=32, layers=(0, 1, 9), out_channels=(8, 8, 8))(images)
    with pytest.raises(ValueError, match="scales"):
        SamBackbone(encoder, hidden_size=32, scales=(0.5, 1, 2))


# ---------------------------------------------------------------------------------- matching
def plain_cost(logits, masks, labels, tmasks, cfg):
    """The matching cost written out pair by pair."""
    q, t = logits.shape[0], labels.shape[0]
    probs = logits.softmax(-1)
    up = F.interpolate(masks[:, None], size=tmasks.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cost = torch.zeros(q, t)
    for i in range(q):
        x = up[i].flatten()
        p = torch.sigmoid(x)
        for j in range(t):
            y = tmasks[j].flatten()
            bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
            dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
            cost[i, j] = -cfg.class_weight * probs[i, labels[j]] + cfg.mask_weight * bce + cfg.dice_weight * dice
    return cost


@pytest.mark.parametrize("seed", range(4))
def test_matching_is_optimal_against_brute_force(seed):
    cfg = SegHeadConfig.tiny()
    crit = SetCriterion(cfg)
    q, c = 5, 3
    counts = [1, 2, 3, 5]
    out = random_outputs(len(counts), q, c, 4, 4, seed)
    targets = random_targets(counts, c, 8, 8, seed)
    costs = crit.cost_matrices(out, targets)
    matches = crit.match(out, targets)
    for b, (cost, (rows, cols)) in enumerate(zip(costs, matches)):
        expected = plain_cost(out["pred_logits"][b], out["pred_masks"][b], targets[b]["labels"],
                              targets[b]["masks"], cfg)
        torch.testing.assert_close(cost, expected, rtol=1e-4, atol=1e-4)
        t = counts[b]
        assert sorted(cols.tolist()) == list(range(t)) and len(set(rows.tolist())) == t
        got = float(cost[rows, cols].sum())
        best = min(sum(float(cost[perm[j], j]) for j in range(t)) for perm in itertools.permutations(range(q), t))
        assert got == pytest.approx(best, abs=1e-5)


def test_matching_prefers_the_right_query():
    crit = SetCriterion(SegHeadConfig.tiny())
    masks = torch.full((1, 3, 4, 4), -9.0)
    masks[0, 2, :2] = 9.0                                    # query 2 draws the top half
    masks[0, 0, :, :2] = 9.0                                 # query 0 draws the left half
    out = {"pred_logits": torch.zeros(1, 3, 3), "pred_masks": masks}
    top = torch.zeros(4, 4); top[:2] = 1
    left = torch.zeros(4, 4); left[:, :2] = 1
    (rows, cols), = crit.match(out, [{"labels": torch.tensor([1, 0]), "masks": torch.stack([left, top])}])
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 0, 1: 2}


# ------------------------------------------------------------------------------------ losses
def test_dice_and_bce_against_plain_formulas():
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(4, 50, generator=g)
    y = (torch.rand(4, 50, generator=g) > 0.5).float()
    p = 1 / (1 + torch.exp(-x))
    torch.testing.assert_close(sigmoid_bce_loss(x, y), -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean(1))
    torch.testing.assert_close(dice_loss(x, y), 1 - (2 * (p * y).sum(1) + 1) / (p.sum(1) + y.sum(1) + 1))


def test_criterion_losses_against_plain_formulas():
    cfg = SegHeadConfig.tiny(aux_loss=False)
    crit = SetCriterion(cfg)
    out = random_outputs(2, 4, 2, 4, 4, seed=5)
    out["class_mask"][1, 1] = False                          # sample 1 has one phrase, slot 1 padded
    out["pred_logits"][1, :, 1] = PAD_LOGIT
    targets = [{"labels": torch.tensor([1, 0]), "masks": (torch.rand(2, 8, 8) > 0.5).float()},
               {"labels": torch.tensor([0]), "masks": (torch.rand(1, 8, 8) > 0.5).float()}]
    losses = crit(out, targets)
    matches = crit.match(out, targets)
    num_masks = 3
    bce = dice = 0.0
    target_classes = torch.full((2, 4), 2)
    for b, (rows, cols) in enumerate(matches):
        up = F.interpolate(out["pred_masks"][b, rows][:, None], size=(8, 8), mode="bilinear",
                           align_corners=False)[:, 0].flatten(1)
        y = targets[b]["masks"][cols].flatten(1)
        p = torch.sigmoid(up)
        bce += float((-(y * torch.log(p) + (1 - y) * torch.log(1 - p))).mean(1).sum())
        dice += float((1 - (2 * (p * y).sum(1) + 1) / (p.sum(1) + y.sum(1) + 1)).sum())
        target_classes[b, rows] = targets[b]["labels"][cols]
    logp = out["pred_logits"].log_softmax(-1)
    w = torch.tensor([1.0, 1.0, cfg.no_object_weight])
    nll = -logp.gather(-1, target_classes[..., None])[..., 0]
    ce = float((w[target_classes] * nll).sum() / w[target_classes].sum())
    assert losses["loss_mask"].item() == pytest.approx(bce / num_masks, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(dice / num_masks, rel=1e-5)
    assert losses["loss_ce"].item() == pytest.approx(ce, rel=1e-5)
    assert losses["loss"].item() == pytest.approx(2 * ce + 5 * (bce + dice) / num_masks, rel=1e-5)


def test_aux_losses_cover_every_prediction():
    head, cfg = make_head()
    images, seg, phrases = inputs(2)
    out = head(images, seg, phrases)
    losses = SetCriterion(cfg)(out, random_targets([1, 2], 1, 32, 32, seed=1))
    names = {"loss_ce", "loss_mask", "loss_dice"}
    expected = {"loss"} | names | {f"{n}_{i}" for n in names for i in range(cfg.num_layers)}
    assert set(losses) == expected
    w = {"loss_ce": 2, "loss_mask": 5, "loss_dice": 5}
    total = sum(w[k.rsplit("_", 1)[0] if k[-1].isdigit() else k] * v for k, v in losses.items() if k != "loss")
    torch.testing.assert_close(losses["loss"], total)
    only_last = SetCriterion(SegHeadConfig.tiny(llm_dim=LLM, aux_loss=False))(out, random_targets([1, 2], 1, 32, 32, 1))
    assert set(only_last) == {"loss"} | names


def test_gradients_reach_every_trainable_parameter():
    head, cfg = make_head()
    images, seg, phrases = inputs(2)
    out = head(images, seg, phrases)
    SetCriterion(cfg)(out, random_targets([2, 1], 1, 32, 32, seed=2))["loss"].backward()
    trainable = [(n, p) for n, p in head.named_parameters() if p.requires_grad]
    assert len(trainable) > 50
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, missing
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    assert not bad, bad
    assert head.logit_scale.grad != 0 and head.background.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("num_points", [None, 64])
def test_empty_targets_give_finite_losses(num_points):
    head, cfg = make_head(num_points=num_points)
    images, seg, phrases = inputs(2)
    out = head(images, seg, phrases)
    crit = SetCriterion(cfg)
    empty = {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 32, 32)}
    for targets in ([empty, empty], [empty, random_targets([1], 1, 32, 32, seed=0)[0]]):
        losses = crit(out, targets)
        assert all(torch.isfinite(v) for v in losses.values())
        head.zero_grad()
        losses["loss"].backward(retain_graph=True)
        assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    all_empty = crit(out, [empty, empty])
    assert all_empty["loss_mask"].item() == 0 and all_empty["loss_dice"].item() == 0
    assert all_empty["loss_ce"].item() > 0                  # every query is pushed to the background


def test_target_validation():
    crit = SetCriterion(SegHeadConfig.tiny())
    out = random_outputs(1, 2, 1, 4, 4, seed=0)
    good = {"labels": torch.tensor([0]), "masks": torch.ones(1, 4, 4)}
    with pytest.raises(TypeError, match="sequence of 1 dicts"):
        crit(out, good)
    with pytest.raises(ValueError, match=r"targets\[0\]\['masks'\] must be \[T=1, H, W\]"):
        crit(out, [{"labels": torch.tensor([0]), "masks": torch.ones(2, 4, 4)}])
    with pytest.raises(ValueError, match="binary"):
        crit(out, [{"labels": torch.tensor([0]), "masks": torch.full((1, 4, 4), 0.5)}])
    with pytest.raises(ValueError, match="more than the 2 queries"):
        crit(out, [{"labels": torch.tensor([0, 0, 0]), "masks": torch.ones(3, 4, 4)}])
    with pytest.raises(TypeError, match="1-D integer"):
        crit(out, [{"labels": torch.tensor([0.0]), "masks": torch.ones(1, 4, 4)}])


def test_point_sampling_prefers_uncertain_points():
    cfg = SegHeadConfig.tiny(num_points=400)
    crit = SetCriterion(cfg)
    logits = torch.full((1, 32, 32), 20.0)
    logits[:, :, 8:24] = 0.0                                   # the uncertain band: half the width

    def share_in_band(points):
        return float(((points[0, :, 0] >= 8 / 32) & (points[0, :, 0] < 24 / 32)).float().mean())

    torch.manual_seed(0)
    pts = crit._sample_points(logits)
    assert pts.shape == (1, 400, 2)
    # 75 % chosen by uncertainty (all in the band: 1200 candidates, ~560 of them on it), and
    # about half of the uniform 25 %
    assert share_in_band(pts) > 0.8
    uniform = SetCriterion(SegHeadConfig.tiny(num_points=400, importance_sample_ratio=0.0))._sample_points(logits)
    assert share_in_band(uniform) < 0.65
    # uniformly sampled points estimate the full-resolution losses
    out = random_outputs(1, 3, 1, 8, 8, seed=3)
    m = torch.zeros(2, 32, 32)
    m[0, 4:20, 6:26] = 1
    m[1, 16:, :12] = 1
    targets = [{"labels": torch.tensor([0, 0]), "masks": m}]
    sampled = SetCriterion(SegHeadConfig.tiny(num_points=4096, importance_sample_ratio=0.0))(out, targets)
    exact = SetCriterion(SegHeadConfig.tiny())(out, targets)
    assert sampled["loss_ce"].item() == pytest.approx(exact["loss_ce"].item())
    for name in ("loss_mask", "loss_dice"):
        assert sampled[name].item() == pytest.approx(exact[name].item(), rel=0.1)


# --------------------------------------------------------------------------- post-processing
def handmade_outputs():
    logits = torch.tensor([[[9.0, -9.0, 0.0], [-9.0, 9.0, 0.0], [-9.0, -9.0, 9.0]]])
    masks = torch.full((1, 3, 4, 4), -9.0)
    masks[0, 0, :, :2] = 9.0                                   # query 0 (phrase 0): left half
    masks[0, 1, :2, 2:] = 9.0                                  # query 1 (phrase 1): top right
    masks[0, 2] = 9.0                                          # query 2: background, everywhere
    return {"pred_logits": logits, "pred_masks": masks, "image_size": (8, 8)}


def test_semantic_inference():
    out = handmade_outputs()
    sem = semantic_inference(out)
    assert sem.dtype == np.int64 and sem.shape == (1, 8, 8)
    assert (sem[0, :, :4] == 0).all() and (sem[0, :4, 4:] == 1).all()
    sem = semantic_inference(out, score_threshold=0.5)
    assert (sem[0, 4:, 4:] == -1).all() and (sem[0, :, :4] == 0).all()
    assert semantic_inference(out, (16, 12)).shape == (1, 16, 12)


def test_referring_inference_and_resizing():
    out = handmade_outputs()
    ref = referring_inference(out)
    expected = np.zeros((8, 8), bool); expected[:, :4] = True
    assert ref.dtype == np.bool_ and (ref[0] == expected).all()
    top_right = referring_inference(out, phrase=1)[0]
    assert top_right[:4, 4:].all() and not top_right[4:].any() and not top_right[:, :4].any()
    # padded input: crop the valid 8 x 4 part (the left half), then resize to the original 16 x 8
    cropped = referring_inference(out, (16, 8), valid_size=(8, 4))
    assert cropped.shape == (1, 16, 8) and cropped.all()
    with pytest.raises(ValueError, match="phrase must be"):
        referring_inference(out, phrase=2)
    with pytest.raises(ValueError, match="valid_size"):
        referring_inference(out, valid_size=(9, 4))
    with pytest.raises(TypeError, match="SegHead's dict"):
        referring_inference({"pred_masks": out["pred_masks"]})


def test_panoptic_inference():
    out = handmade_outputs()
    (segments, info), = panoptic_inference(out)
    assert segments.dtype == np.int32 and segments.shape == (8, 8)
    assert [(s["id"], s["label"], s["area"]) for s in info] == [(1, 0, 32), (2, 1, 16)]
    assert (segments[:, :4] == 1).all() and (segments[:4, 4:] == 2).all() and (segments[4:, 4:] == 0).all()
    # two queries of one stuff phrase merge into one segment
    logits = torch.tensor([[[9.0, -9.0], [9.0, -9.0]]])
    masks = torch.full((1, 2, 2, 2), -9.0); masks[0, 0, 0] = 9; masks[0, 1, 1] = 9
    (things, tinfo), = panoptic_inference({"pred_logits": logits, "pred_masks": masks})
    (stuff, sinfo), = panoptic_inference({"pred_logits": logits, "pred_masks": masks}, stuff_labels=[0])
    assert things.tolist() == [[1, 1], [2, 2]] and len(tinfo) == 2
    assert stuff.tolist() == [[1, 1], [1, 1]] and sinfo == [{"id": 1, "label": 0, "score": pytest.approx(1.0),
                                                           "area": 4}]


# ------------------------------------------------------------------------------- text output
def test_masks_to_text_uses_the_core_encoders():
    m = np.zeros((2, 32, 32), bool)
    m[0, 4:20, 2:14] = True
    m[1, 18:30, 16:30] = True
    ids = np.zeros((32, 32), np.int32); ids[m[0]] = 1; ids[m[1]] = 2
    text = masks_to_text(m, ["cat", "dog"], grid_size=8)
    assert text == st.encode_rrle(st.mask_to_grid(ids, grid_size=8), ["others", "cat", "dog"])
    assert masks_to_text(torch.from_numpy(m), ["cat", "dog"], grid_size=8) == text
    label_map = np.full((32, 32), -1); label_map[m[0]] = 0; label_map[m[1]] = 1
    assert masks_to_text(label_map, ["cat", "dog"], grid_size=8) == text
    bsd = masks_to_text(m, ["cat", "dog"], "bsd", resolution=16)
    assert bsd == st.encode_bsd([("cat", m[0]), ("dog", m[1])], (32, 32), resolution=16)
    decoded = st.decode_bsd(bsd, (32, 32), resolution=16)
    assert [o.label for o in decoded.objects] == ["cat", "dog"]
    # two instances of one label share its R-RLE id; empty masks are left out of B-SD
    same = masks_to_text(m, ["dog", "dog"], grid_size=8)
    assert st.decode_rrle(same).labels == ["others", "dog"]
    assert masks_to_text(np.stack([m[0], np.zeros_like(m[0])]), ["cat", "dog"], "bsd", resolution=16) \
        == st.encode_bsd([("cat", m[0])], (32, 32), resolution=16)


def test_masks_to_text_errors():
    m = np.zeros((1, 8, 8), bool)
    with pytest.raises(ValueError, match="encoding"):
        masks_to_text(m, ["cat"], "png")
    with pytest.raises(ValueError, match="1 masks but 2 labels"):
        masks_to_text(m, ["cat", "dog"])
    with pytest.raises(ValueError, match="binary"):
        masks_to_text(np.full((1, 8, 8), 0.5), ["cat"])
    with pytest.raises(ValueError, match=r"\[-1, 1\)"):
        masks_to_text(np.full((8, 8), 3), ["cat"])
    with pytest.raises(TypeError, match="numpy array"):
        masks_to_text([[0, 1]], ["cat"])


# ------------------------------------------------------------------------------------ overfit
def synthetic_shapes(size: int = 64):
    """4 images: a square and a disk drawn together twice (the target differs: only <SEG>
    tells them apart), two rectangles (one target), a diamond."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    square = (yy >= 10) & (yy < 30) & (xx >= 8) & (xx < 28)
    disk = (yy - 44) ** 2 + (xx - 44) ** 2 < 12 ** 2
    rects = ((yy >= 8) & (yy < 24) & (xx >= 6) & (xx < 58)) | ((yy >= 36) & (yy < 56) & (xx >= 20) & (xx < 40))
    diamond = ((yy - 32).abs() + (xx - 30).abs()) < 18
    drawn = [square | disk, square | disk, rects, diamond]
    targets = [square, disk, rects, diamond]
    colours = torch.tensor([[1.0, 0.2, 0.2], [1.0, 0.2, 0.2], [0.2, 0.2, 1.0], [1.0, 1.0, 0.2]])
    g = torch.Generator().manual_seed(1)
    noise = 0.1 * torch.rand(3, size, size, generator=g)
    images = torch.stack([noise + 0.8 * c[:, None, None] * d.float() for c, d in zip(colours, drawn)])
    return images, targets


def test_overfit_four_synthetic_images():
    head, cfg = make_head(seed=0)
    crit = SetCriterion(cfg)
    images, masks = synthetic_shapes()
    g = torch.Generator().manual_seed(2)
    seg = torch.randn(4, LLM, generator=g)                     # a fixed "<SEG>" state per image
    phrases = [[torch.randn(3, LLM, generator=g)] for _ in range(4)]   # "<p> ... </p>": 3 token states
    targets = [{"labels": torch.tensor([0]), "masks": m[None].float()} for m in masks]
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3)
    first = None
    for _ in range(150):
        losses = crit(head(images, seg, phrases), targets)
        first = first if first is not None else losses["loss"].item()
        opt.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        opt.step()
    assert losses["loss"].item() < first / 50
    head.eval()
    with torch.no_grad():
        pred = referring_inference(head(images, seg, phrases))
    ious = [float((p & t.numpy()).sum() / (p | t.numpy()).sum()) for p, t in zip(pred, masks)]
    assert min(ious) >= 0.9, ious
    # the masks go to text and back through the core
    text = masks_to_text(pred[3][None], ["diamond"], grid_size=16)
    back = st.decode_rrle(text, ["others", "diamond"], 16).to_mask((64, 64)).astype(bool)
    assert (back & masks[3].numpy()).sum() / (back | masks[3].numpy()).sum() > 0.85


def test_point_sampled_training_learns():
    head, cfg = make_head(seed=1, num_points=256)
    crit = SetCriterion(cfg)
    images, masks = synthetic_shapes(32)
    g = torch.Generator().manual_seed(3)
    seg = torch.randn(4, LLM, generator=g)
    phrases = [[torch.randn(3, LLM, generator=g)] for _ in range(4)]
    targets = [{"labels": torch.tensor([0]), "masks": m[None].float()} for m in masks]
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3)
    history = []
    for _ in range(40):
        losses = crit(head(images, seg, phrases), targets)
        history.append(losses["loss"].item())
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert np.mean(history[-5:]) < np.mean(history[:5]) / 4
