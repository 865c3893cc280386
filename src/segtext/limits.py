"""The bounds every reader and decoder of segtext works within.

segtext reads model outputs and third-party annotation files, so nothing it is given may make
it crash, hang or allocate without a bound. Each limit below is checked *before* anything of
that size is allocated; going past one is a ``ValueError`` naming the limit (for arguments and
annotation files), a :class:`~segtext.DecodeError` in strict mode, or a reported repair in
repair mode (for a model's text). The limits are far above anything the formats are used for:
COCO images are at most 640 pixels a side, Text4Seg's grids 32 x 32 and Text4Seg++'s
resolutions 32 to 80.

=====================  ==============  ===============================================================
name                   value           what it bounds
=====================  ==============  ===============================================================
``MAX_IMAGE_SIDE``     65,536          ``H`` and ``W`` of an image, a mask or an RLE's ``size``
``MAX_IMAGE_AREA``     2**30           ``H * W`` (a 32,768 x 32,768 image; 1 GiB as a uint8 mask)
``MAX_GRID_CELLS``     2**22           ``h * w`` of a grid, given or inferred from a text
``MAX_COUNT``          2**22           a run's count in a grid text (no run is longer than a grid)
``MAX_RESOLUTION``     1,024           B-SD bricks per side ``S``
``MAX_TEXT_LENGTH``    2**20           characters of a model's text a decoder reads
``MAX_BRICK_CELLS``    2**26           brick cells one B-SD text decodes to (16,384 objects at S = 64)
``MAX_POLYGON_STEPS``  2**22           a polygon's outline in pixels (the sum of ``max(|dx|, |dy|)``
                                       over its edges), after clipping to the image and a margin
=====================  ==============  ===============================================================

A count above ``MAX_COUNT`` (or above what the given grid holds) is clipped with a
``count_too_large`` repair; a text longer than ``MAX_TEXT_LENGTH`` is read up to the limit
with a ``text_too_long`` repair; an inferred grid of more than ``MAX_GRID_CELLS`` cells is cut
to the limit with a ``grid_too_large`` repair; the B-SD blocks past ``MAX_BRICK_CELLS`` are
dropped with an ``objects_too_many`` repair. In strict mode each of these raises. A polygon
reaching more than one image size beyond the image is clipped to that margin before
pycocotools rasterises it (a polygon within the margin is rasterised unchanged).

Example:
    >>> import segtext as st
    >>> st.limits.MAX_IMAGE_SIDE, st.limits.MAX_GRID_CELLS
    (65536, 4194304)
"""

from __future__ import annotations

__all__ = [
    "MAX_BRICK_CELLS",
    "MAX_COUNT",
    "MAX_GRID_CELLS",
    "MAX_IMAGE_AREA",
    "MAX_IMAGE_SIDE",
    "MAX_POLYGON_STEPS",
    "MAX_RESOLUTION",
    "MAX_TEXT_LENGTH",
]

MAX_IMAGE_SIDE: int = 1 << 16
MAX_IMAGE_AREA: int = 1 << 30
MAX_GRID_CELLS: int = 1 << 22
MAX_COUNT: int = MAX_GRID_CELLS
MAX_RESOLUTION: int = 1024
MAX_TEXT_LENGTH: int = 1 << 20
MAX_BRICK_CELLS: int = 1 << 26
MAX_POLYGON_STEPS: int = 1 << 22
