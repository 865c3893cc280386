"""segtext: segmentation masks as text a multimodal LLM can write, and back.

The formats are Text4Seg's image-wise semantic descriptors (I-SD) on a label grid, their
row-wise run-length encoding (R-RLE) and image-wise RLE (I-RLE) (:mod:`segtext.rrle`), and
Text4Seg++'s box-wise descriptors with semantic bricks (B-SD, :mod:`segtext.bricks`). All
per-pixel and per-cell work runs in numba-compiled kernels.

Example:
    >>> import numpy as np, segtext as st
    >>> mask = np.zeros((64, 64), bool); mask[:32, 32:] = True
    >>> grid = st.mask_to_grid(mask, grid_size=(4, 4))
    >>> text = st.encode_rrle(grid, ["others", "cat"])
    >>> text
    'others *2| cat *2\\n others *2| cat *2\\n others *4\\n others *4\\n'
    >>> bool((st.decode_rrle(text).to_mask((64, 64)) == mask).all())
    True
"""

from segtext import coco, evaluation, limits, metrics, records, viz
from segtext.bricks import (
    BOX_FORMATS,
    BsdObject,
    BsdSpelling,
    DecodedObjects,
    box_from_mask,
    bsd_spelling,
    decode_bsd,
    dequantize_box,
    encode_bsd,
    merge_objects,
    quantize_box,
)
from segtext.grid import (
    POLICIES,
    cell_index,
    grid_to_mask,
    mask_to_grid,
    pillow_nearest_index,
    rle_to_grid,
    rles_to_grids,
)
from segtext.labels import check_label, check_labels, nearest_label
from segtext.repairs import REPAIR_KINDS, DecodeError, Repair
from segtext.rrle import (
    FORMATS,
    DecodedGrid,
    decode_rrle,
    encode_irle,
    encode_isd,
    encode_rrle,
    rle_to_text,
    rles_to_texts,
)

__version__ = "0.1.0"

__all__ = [
    "BOX_FORMATS",
    "BsdObject",
    "BsdSpelling",
    "DecodedObjects",
    "box_from_mask",
    "bsd_spelling",
    "decode_bsd",
    "dequantize_box",
    "encode_bsd",
    "merge_objects",
    "quantize_box",
    "POLICIES",
    "REPAIR_KINDS",
    "FORMATS",
    "DecodeError",
    "DecodedGrid",
    "Repair",
    "cell_index",
    "check_label",
    "check_labels",
    "coco",
    "evaluation",
    "limits",
    "metrics",
    "records",
    "viz",
    "decode_rrle",
    "encode_irle",
    "encode_isd",
    "encode_rrle",
    "grid_to_mask",
    "mask_to_grid",
    "nearest_label",
    "pillow_nearest_index",
    "rle_to_grid",
    "rle_to_text",
    "rles_to_grids",
    "rles_to_texts",
]
