"""Four 64 x 64 shapes with edges on 8-pixel cells, and their COCO RLEs, shared by the model tests."""

import numpy as np


def four_shapes() -> list[np.ndarray]:
    """A square, a bar, a corner and a cross (bool masks)."""
    out = []
    for k in range(4):
        m = np.zeros((64, 64), bool)
        if k == 0:
            m[16:48, 16:48] = True
        elif k == 1:
            m[8:56, 24:40] = True
        elif k == 2:
            m[:32, :16] = True
            m[:16, :32] = True
        else:
            m[16:48, :] = True
            m[:, 16:48] = True
        out.append(m)
    return out


def coco_rle(mask: np.ndarray) -> dict:
    """The compressed COCO RLE of a binary mask (``counts`` as ``str``), as records hold it."""
    import pycocotools.mask as pm

    rle = pm.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle
