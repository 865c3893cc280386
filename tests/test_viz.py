"""Pictures: overlays (fill, grid lines, GT outline, boxes, legend) and the worst-samples page."""

import doctest

import numpy as np
import pytest
from PIL import Image

import segtext as st
from segtext import viz


def px(img, x, y):
    return tuple(img.getpixel((x, y)))


def arr(img):
    return np.asarray(img)


def blend(under, over, alpha):
    a = round(alpha * 255)
    return np.array([(o * a + u * (255 - a)) / 255 for u, o in zip(under, over)])


def square(H=64, W=80, y=(16, 40), x=(20, 50)):
    m = np.zeros((H, W), bool)
    m[y[0]:y[1], x[0]:x[1]] = True
    return m


# --------------------------------------------------------------------------- size, mode, fill


def test_size_and_mode_blank_canvas():
    img = viz.overlay(square())
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB" and img.size == (80, 64)


def test_fill_inside_differs_and_far_pixels_are_the_canvas():
    m = square()
    a = arr(viz.overlay(m))
    blank = np.array(viz.BLANK_COLOUR)
    inside = a[m]
    assert (inside != blank).any(axis=1).all()
    assert np.abs(inside[0] - blend(viz.BLANK_COLOUR, viz.label_colour(1), 0.5)).max() <= 1
    assert (a[~m] == blank).all()  # no grid, outline or box: everything else is untouched


def test_fill_over_an_image_keeps_background_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    m = square()
    a = arr(viz.overlay(m, image=image))
    assert (a[~m] == image[~m]).all()
    assert (a[m] != image[m]).any(axis=1).mean() > 0.95


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_alpha_extremes(alpha):
    m = square()
    a = arr(viz.overlay(m, alpha=alpha))
    expected = viz.label_colour(1) if alpha == 1.0 else viz.BLANK_COLOUR
    assert (a[m] == np.array(expected)).all()


def test_label_map_one_colour_per_id_background_unfilled():
    pred = np.zeros((30, 60), np.int64)
    pred[:, 20:40] = 1
    pred[:, 40:] = 12  # cycles through the palette
    a = arr(viz.overlay(pred, alpha=1.0))
    assert (a[:, :20] == np.array(viz.BLANK_COLOUR)).all()
    assert (a[:, 20:40] == np.array(viz.label_colour(1))).all()
    assert (a[:, 40:] == np.array(viz.label_colour(12))).all()
    assert viz.label_colour(12) == viz.PALETTE[11 % len(viz.PALETTE)]


def test_palette_is_distinct_and_avoids_outline_colours():
    assert len(set(viz.PALETTE)) == len(viz.PALETTE) >= 20
    assert viz.GT_COLOUR not in viz.PALETTE and viz.GRID_COLOUR not in viz.PALETTE
    assert [viz.label_colour(i) for i in range(1, 30)] == [viz.label_colour(i) for i in range(1, 30)]
    with pytest.raises(ValueError):
        viz.label_colour(0)


def test_image_as_pil_and_as_path(tmp_path):
    image = np.full((20, 30, 3), 100, np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    m = np.zeros((20, 30), bool)
    for src in (Image.fromarray(image), path, str(path), image[:, :, 0]):
        assert (arr(viz.overlay(m, image=src)) == 100).all()


# --------------------------------------------------------------------------- grid lines


@pytest.mark.parametrize("H, W, h, w", [(37, 53, 4, 5), (64, 64, 16, 16), (10, 7, 10, 7),
                                        (100, 33, 3, 16), (480, 640, 16, 16)])
def test_grid_lines_sit_on_the_first_pixel_of_each_cell(H, W, h, w):
    a = arr(viz.overlay(np.zeros((H, W), bool), grid_size=(h, w)))
    grid = np.array(viz.GRID_COLOUR)
    ci_y, ci_x = st.cell_index(H, h), st.cell_index(W, w)
    # the geometry the brief states: pixel row y is in grid row (2y+1)h // 2H
    assert (ci_y == (2 * np.arange(H) + 1) * h // (2 * H)).all()
    rows = [y for y in range(1, H) if ci_y[y] != ci_y[y - 1]]
    cols = [x for x in range(1, W) if ci_x[x] != ci_x[x - 1]]
    assert len(rows) == h - 1 and len(cols) == w - 1
    is_grid = (a == grid).all(axis=2)
    expected = np.zeros((H, W), bool)
    expected[rows, :] = True
    expected[:, cols] = True
    assert (is_grid == expected).all()


def test_grid_lines_drawn_over_the_fill():
    m = np.ones((32, 32), bool)
    a = arr(viz.overlay(m, grid_size=4))
    assert (a[8] == np.array(viz.GRID_COLOUR)).all()
    assert (a[9, 1:8] != np.array(viz.GRID_COLOUR)).any(axis=1).all()


# --------------------------------------------------------------------------- ground truth


def boundary_reference(gt):
    """gt pixels with a 4-neighbour outside gt or outside the image."""
    p = np.pad(gt, 1)
    inner = p[1:-1, 1:-1]
    return inner & ~(p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:])


def test_gt_outline_pixels_are_coloured():
    H, W = 60, 70
    yy, xx = np.mgrid[:H, :W]
    gt = (yy - 30) ** 2 + (xx - 35) ** 2 < 20 ** 2
    gt[:5, 10:20] = True  # touches the top border
    a = arr(viz.overlay(np.zeros((H, W), bool), gt=gt, outline_width=1))
    ring = boundary_reference(gt)
    is_gt = (a == np.array(viz.GT_COLOUR)).all(axis=2)
    assert ring.sum() > 100
    assert (is_gt == ring).all()
    assert is_gt[0, 10:20].all()  # closed along the image border


def test_gt_outline_drawn_over_the_prediction_and_thickened():
    gt = square()
    a = arr(viz.overlay(gt, gt=gt, outline_width=3))
    is_gt = (a == np.array(viz.GT_COLOUR)).all(axis=2)
    assert is_gt[16:19, 20:50].all() and is_gt[16:40, 47:50].all()
    assert not is_gt[19:37, 23:47].any() and not is_gt[~gt].any()


def test_gt_default_outline_width_grows_with_the_image():
    gt = square(600, 600, (100, 500), (100, 500))
    a = arr(viz.overlay(np.zeros_like(gt), gt=gt))
    is_gt = (a == np.array(viz.GT_COLOUR)).all(axis=2)
    assert is_gt[100:103, 300].all() and not is_gt[104, 300]


# --------------------------------------------------------------------------- legend


def test_legend_present_with_label_colours():
    pred = np.zeros((64, 64), np.int32)
    pred[:20, :20] = 1
    pred[40:, 40:] = 2
    plain = viz.overlay(pred)
    img = viz.overlay(pred, labels=["others", "cat", "dog", "bird"])
    assert img.width > plain.width and img.height >= 64
    panel = arr(img)[:, 64:]
    for i in (1, 2):
        hits = (panel == np.array(viz.label_colour(i))).all(axis=2)
        assert hits.sum() >= 25  # a solid swatch, not a stray pixel
    # "bird" (id 3) is not in the picture, so it has no swatch
    assert not (panel == np.array(viz.label_colour(3))).all(axis=2).any()
    assert (arr(img)[:64, :64] == arr(plain)).all()  # the picture itself is unchanged


def test_legend_for_a_bool_mask_and_for_box_labels():
    img = viz.overlay(square(), labels=["others", "cat"])
    panel = arr(img)[:, 80:]
    assert (panel == np.array(viz.label_colour(1))).all(axis=2).sum() >= 25
    img = viz.overlay(np.zeros((64, 80), bool), labels=["others", "cat", "dog"],
                      boxes=[(5, 20, 30, 40, "dog")])
    panel = arr(img)[:, 80:]
    assert (panel == np.array(viz.label_colour(2))).all(axis=2).sum() >= 25


def test_no_legend_without_labels():
    assert viz.overlay(np.zeros((10, 10), np.int32) + 3).size == (10, 10)


# --------------------------------------------------------------------------- boxes


def test_box_edges_at_pixel_edges():
    H, W = 60, 80
    x1, y1, x2, y2 = 10, 30, 50, 55
    a = arr(viz.overlay(np.zeros((H, W), bool), boxes=[(x1, y1, x2, y2)], outline_width=1))
    colour = np.array(viz.label_colour(1))  # first box, no label: colour of position 1
    is_box = (a == colour).all(axis=2)
    expected = np.zeros((H, W), bool)
    expected[y1, x1:x2] = expected[y2 - 1, x1:x2] = True
    expected[y1:y2, x1] = expected[y1:y2, x2 - 1] = True
    assert (is_box == expected).all()


def test_box_with_label_takes_the_label_colour_and_a_tag():
    H, W = 120, 160
    box = (40, 50, 120, 110, "dog")
    a = arr(viz.overlay(np.zeros((H, W), bool), labels=["others", "cat", "dog"],
                        boxes=[box], outline_width=2))[:, :W]
    colour = np.array(viz.label_colour(2))
    is_box = (a == colour).all(axis=2)
    assert is_box[109, 40:120].all() and is_box[108, 40:120].all() and not is_box[110].any()
    assert is_box[60:110, 119].all() and is_box[60:110, 118].all() and not is_box[:, 120:].any()
    assert is_box[60:110, 40].all()
    assert is_box[:50, 40:60].sum() > 20  # the tag above the box
    assert not is_box[50:, :40].any()
    # an int label id names labels[id]; the second box gets its own colour
    a2 = arr(viz.overlay(np.zeros((H, W), bool), labels=["others", "cat", "dog"],
                         boxes=[(0, 0, 20, 20, 1), (30, 30, 60, 60)], outline_width=1))[:, :W]
    assert (a2[19, 0:20] == np.array(viz.label_colour(1))).all()
    assert (a2[59, 30:60] == np.array(viz.label_colour(2))).all()


def test_box_touching_the_top_puts_its_tag_inside():
    a = arr(viz.overlay(np.zeros((40, 60), bool), boxes=[(0, 0, 60, 40, "thing")]))
    assert (a[0, :60] == np.array(viz.label_colour(1))).all()


def test_bsd_decoded_boxes_draw():
    mask = square()
    text = st.encode_bsd([("cat", mask)], image_size=mask.shape)
    res = st.decode_bsd(text, image_size=mask.shape)
    boxes = [(*o.box, o.label) for o in res.objects]
    img = viz.overlay(res.mask(), labels=["others", "cat"], boxes=boxes)
    x1, y1, x2, y2 = res.objects[0].box
    assert (x1, y1, x2, y2) == (20, 16, 50, 40)
    assert px(img, x2 - 1, y2 - 1) == viz.label_colour(1)


# --------------------------------------------------------------------------- worst page


def test_worst_page_layout():
    gt = square()
    samples = [{"pred": np.roll(gt, k, axis=1), "gt": gt, "title": f"s{k}"} for k in range(5)]
    page = viz.worst_page(samples, columns=2, tile_size=128)
    tiles = page.info["segtext_tiles"]
    assert page.mode == "RGB" and len(tiles) == 5
    xs = sorted({t[0] for t in tiles})
    ys = sorted({t[1] for t in tiles})
    assert len(xs) == 2 and len(ys) == 3
    # row-major order
    assert [t[1] for t in tiles] == [ys[0], ys[0], ys[1], ys[1], ys[2]]
    assert [t[0] for t in tiles] == [xs[0], xs[1], xs[0], xs[1], xs[0]]
    for x0, y0, x1, y1 in tiles:
        assert max(x1 - x0, y1 - y0) == 128  # scaled to the common tile size
        assert x1 <= page.width and y1 <= page.height
    wide = viz.worst_page(samples, columns=8, tile_size=128)
    assert len({t[1] for t in wide.info["segtext_tiles"]}) == 1 and wide.width > page.width


def test_worst_page_tiles_show_fill_and_outline():
    gt = square(40, 40, (10, 30), (10, 30))
    pred = np.ones((40, 40), bool)
    page = viz.worst_page([{"pred": pred, "gt": gt}, {"pred": gt, "gt": gt}], tile_size=160)
    a = arr(page)
    fill = blend(viz.BLANK_COLOUR, viz.label_colour(1), 0.5)
    for x0, y0, x1, y1 in page.info["segtext_tiles"]:
        tile = a[y0:y1, x0:x1]
        assert (tile == np.array(viz.GT_COLOUR)).all(axis=2).sum() > 100
    x0, y0, x1, y1 = page.info["segtext_tiles"][0]
    assert np.abs(a[y0 + 4, x0 + 4] - fill).max() <= 2  # pred full there
    x0, y0, x1, y1 = page.info["segtext_tiles"][1]
    assert (a[y0 + 4, x0 + 4] == np.array(viz.BLANK_COLOUR)).all()  # pred empty there


def test_worst_page_mixed_sizes_and_images():
    image = np.full((30, 90, 3), 50, np.uint8)
    samples = [
        {"pred": np.zeros((30, 90), bool), "gt": np.zeros((30, 90), bool), "image": image},
        {"pred": np.zeros((300, 100), bool), "gt": np.zeros((300, 100), bool)},
    ]
    page = viz.worst_page(samples, columns=4, title="two", tile_size=90)
    (a0, b0, a1, b1), (c0, d0, c1, d1) = page.info["segtext_tiles"]
    assert (a1 - a0, b1 - b0) == (90, 30)
    assert (c1 - c0, d1 - d0) == (30, 90)
    assert tuple(arr(page)[b0 + 5, a0 + 5]) == (50, 50, 50)


def test_worst_page_empty():
    page = viz.worst_page([])
    assert page.mode == "RGB" and page.info["segtext_tiles"] == []
    assert page.width < 600 and page.height < 200
    assert (arr(page) != 255).any()  # it says something


def test_worst_page_bad_samples_name_the_index():
    gt = square()
    with pytest.raises(ValueError, match=r"samples\[1\].*'gt'"):
        viz.worst_page([{"pred": gt, "gt": gt}, {"pred": gt}])
    with pytest.raises(ValueError, match=r"samples\[0\]: gt has shape"):
        viz.worst_page([{"pred": gt, "gt": gt[:10]}])
    with pytest.raises(TypeError, match=r"samples\[0\]"):
        viz.worst_page([gt])
    with pytest.raises(ValueError, match="columns"):
        viz.worst_page([{"pred": gt, "gt": gt}], columns=0)
    with pytest.raises(TypeError):
        viz.worst_page({"pred": gt, "gt": gt})


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"pred": np.zeros((4, 4, 1), bool)}, ValueError, "2-D"),
    ({"pred": np.zeros(16, bool)}, ValueError, "2-D"),
    ({"pred": np.zeros((0, 4), bool)}, ValueError, "empty"),
    ({"pred": "mask"}, TypeError, "numpy"),
    ({"pred": np.full((4, 4), 0.5)}, ValueError, "non-integer"),
    ({"pred": -np.ones((4, 4), np.int32)}, ValueError, "negative"),
    ({"image": np.zeros((10, 8, 3), np.uint8)}, ValueError, "must match"),
    ({"image": Image.new("RGB", (8, 8))}, ValueError, "must match"),
    ({"image": np.zeros((8, 10, 3), np.float32)}, TypeError, "uint8"),
    ({"image": np.zeros((8, 10, 2), np.uint8)}, ValueError, "H, W, 3"),
    ({"gt": np.zeros((10, 8), bool)}, ValueError, "must match"),
    ({"gt": np.full((8, 10), 2)}, ValueError, "binary"),
    ({"grid_size": (0, 4)}, ValueError, "positive"),
    ({"grid_size": (9, 4)}, ValueError, "larger than the image"),
    ({"grid_size": "4x4"}, TypeError, "grid_size"),
    ({"boxes": [(1, 2, 3)]}, ValueError, "has 3 values"),
    ({"boxes": [(1, 2, 3, 4, "a", "b")]}, ValueError, "has 6 values"),
    ({"boxes": [(0, 0, 11, 4)]}, ValueError, "not inside"),
    ({"boxes": [(5, 0, 2, 4)]}, ValueError, "not inside"),
    ({"boxes": [(0.5, 0, 2, 4)]}, TypeError, "ints"),
    ({"boxes": (1, 2, 3, 4)}, TypeError, "boxes"),
    ({"alpha": 1.5}, ValueError, "alpha"),
    ({"labels": "others"}, TypeError, "labels"),
    ({"pred": np.full((8, 10), 3), "labels": ["others", "cat"]}, ValueError, "only 2 entries"),
    ({"outline_width": 0}, ValueError, "outline_width"),
])
def test_bad_input(kwargs, exc, match):
    args = {"pred": np.zeros((8, 10), bool)}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        viz.overlay(**args)


# --------------------------------------------------------------------------- misc


def test_torch_tensor_pred():
    torch = pytest.importorskip("torch")
    m = square()
    assert arr(viz.overlay(torch.from_numpy(m))).tolist() == arr(viz.overlay(m)).tolist()


def test_save(tmp_path):
    out = viz.save(viz.overlay(square()), tmp_path / "sub" / "x.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (80, 64)


def test_docstring_examples():
    result = doctest.testmod(viz, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


# --------------------------------------------------------------------------- palette, captions, legend


def _lab(rgb):
    from skimage.color import rgb2lab
    return rgb2lab(np.asarray(rgb, float).reshape(-1, 1, 3) / 255).reshape(-1, 3)


def test_palette_has_20_colours_far_apart_in_cielab():
    # stated threshold: CIE76 delta E >= 20 between any two palette colours and between a
    # palette colour and the GT outline, grid lines or blank canvas
    assert len(viz.PALETTE) >= 20
    lab = _lab(viz.PALETTE)
    d = np.sqrt(((lab[:, None] - lab[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 20
    other = _lab([viz.GT_COLOUR, viz.GRID_COLOUR, viz.BLANK_COLOUR])
    assert np.sqrt(((lab[:, None] - other[None]) ** 2).sum(-1)).min() >= 20


@pytest.mark.parametrize("ids", [list(range(1, 21)), [1, 23, 45, 2, 24] + list(range(3, 18))])
def test_20_labels_in_one_picture_get_20_distinct_colours(ids):
    pred = np.zeros((64, 10 * (len(ids) + 1)), np.int64)  # column block 0 stays background
    for k, i in enumerate(ids):
        pred[:, 10 * (k + 1):10 * (k + 2)] = i
    names = ["others"] + [f"label {i}" for i in range(1, max(ids) + 1)]
    img = viz.overlay(pred, labels=names, alpha=1.0)
    a = arr(img)[:64, :pred.shape[1]]
    colours = {tuple(a[5, 10 * (k + 1) + 5]) for k in range(len(ids))}
    assert len(colours) == 20
    assert (a[:, :10] == np.array(viz.BLANK_COLOUR)).all()  # background stays unfilled
    assert tuple(a[5, 15]) == viz.label_colour(ids[0])  # the first id keeps its own colour
    # every legend swatch is the colour used in the picture
    panel = arr(img)[:, pred.shape[1]:]
    for c in colours:
        assert (panel == np.array(c)).all(axis=2).sum() >= 25


def _close_boxes(n, H=120, W=160):
    rng = np.random.default_rng(1)
    boxes = []
    for k in range(n):
        x1, y1 = int(rng.integers(40, 70)), int(rng.integers(40, 70))
        boxes.append((x1, y1, x1 + 30, y1 + 25, f"object number {k}"))
    return boxes, (H, W)


@pytest.mark.parametrize("n", [2, 3, 12, 40])
def test_box_captions_never_overlap_or_fall_back_to_numbers(n):
    boxes, (H, W) = _close_boxes(n)
    img = viz.overlay(np.zeros((H, W), bool), boxes=boxes)
    caps = img.info["segtext_captions"]
    assert len(caps) == n
    rects = [c[:4] for c in caps]
    overlap = any(viz._intersects(rects[i], rects[j]) for i in range(n) for j in range(i))
    texts = [c[4] for c in caps]
    for x0, y0, x1, y1, _ in caps:
        assert 0 <= x0 <= x1 < W and 0 <= y0 <= y1 < H
    if texts == [b[4] for b in boxes]:
        assert not overlap
    else:  # numbered: the legend names every box
        assert texts == [str(k + 1) for k in range(n)]
        legend = img.info["segtext_legend"]
        assert img.width > W
        for k, b in enumerate(boxes):
            assert f"{k + 1}  {b[4]}" in legend or any("more" in t for t in legend)
        if n <= 3:
            assert not overlap


def test_box_captions_numbered_on_the_label_lines():
    boxes, (H, W) = _close_boxes(12)
    labels = ["others"] + [b[4] for b in boxes]
    boxes = [(*b[:4], k + 1) for k, b in enumerate(boxes)]
    img = viz.overlay(np.zeros((H, W), bool), labels=labels, boxes=boxes)
    assert [c[4] for c in img.info["segtext_captions"]] == [str(k + 1) for k in range(12)]
    assert img.info["segtext_legend"][1:] == [f"{k + 1}  {labels[k + 1]}" for k in range(12)]


def test_two_apart_boxes_keep_their_names():
    img = viz.overlay(np.zeros((100, 200), bool),
                      boxes=[(10, 30, 60, 90, "cat"), (120, 30, 190, 90, "dog")])
    assert [c[4] for c in img.info["segtext_captions"]] == ["cat", "dog"]
    assert img.size == (200, 100)  # no legend needed


def test_legend_in_columns_never_doubles_the_height():
    H = W = 64
    pred = np.arange(H * W).reshape(H, W) % 61  # ids 0..60
    labels = ["others"] + [f"l{i}" for i in range(1, 61)]
    img = viz.overlay(pred, labels=labels)
    assert img.height < 2 * H
    legend = img.info["segtext_legend"]
    more = [t for t in legend if t.startswith("+") and t.endswith(" more")]
    if more:
        shown = len(legend) - 2  # minus background and the "+N more" line
        assert more == [f"+{60 - shown} more"] and legend[-1] == more[0]
        assert legend[1:-1] == labels[1:shown + 1]
    else:
        assert legend[1:] == labels[1:]


def test_legend_of_a_large_picture_stays_within_its_height():
    H, W = 480, 640
    pred = np.arange(H * W).reshape(H, W) % 61
    img = viz.overlay(pred, labels=["others"] + [f"label {i}" for i in range(1, 61)])
    assert img.height == H
    assert img.info["segtext_legend"][1:] == [f"label {i}" for i in range(1, 61)]
