"""Numba kernels: every per-pixel, per-cell and per-byte loop of segtext lives in this package.

Private package, one module per format (:mod:`.common` status codes, byte values and cell
geometry; :mod:`.masks`; :mod:`.coco_rle`; :mod:`.rrle`; :mod:`.bricks`; :mod:`.polygons`;
:mod:`.panoptic`; :mod:`.metrics`; :mod:`.constrain` for :mod:`segtext.constrain`). Public
functions in :mod:`segtext.grid`, :mod:`segtext.rrle` and
:mod:`segtext.coco` validate their input, then call these kernels with plain arrays.
Each kernel has a plain Python/numpy counterpart in ``tests/naive.py`` that the tests
compare it against. Batch kernels loop over the per-item kernels serially: on the small
machines this library targets, numba's thread pool gained little (3.4 against 2.9 us per
mask on 2 idle cores), cost ~15 s of extra compilation, and slowed down eightfold when the
other core was busy.

Conventions
-----------
* A *cell index* array maps each pixel row (or column) to its grid row (or column).
  Pixel ``i`` of ``n`` belongs to cell ``(2*i + 1) * m // (2*n)`` of ``m`` (the cell that
  holds the pixel's centre). Index arrays are monotone non-decreasing.
* COCO RLE counts are column-major runs over ``H*W`` pixels, starting with background.
* Label texts are passed as one ``uint8`` buffer of UTF-8 bytes plus ``int64`` offsets
  (``buf[off[i]:off[i+1]]`` is label ``i``).

Editing kernels
---------------
numba's on-disk cache (``cache=True``) checks only the file of the kernel it loads: a kernel
that calls kernels of another module keeps their old machine code after that module changes.
After editing a kernel that other modules' kernels call, delete the cache files
(``find src -name '*.nb[ic]' -delete``) before testing or timing. Fresh installs are unaffected.
"""

from segtext._kernels.common import *  # noqa: F401,F403
from segtext._kernels.masks import *  # noqa: F401,F403
from segtext._kernels.coco_rle import *  # noqa: F401,F403
from segtext._kernels.rrle import *  # noqa: F401,F403
from segtext._kernels.bricks import *  # noqa: F401,F403
from segtext._kernels.polygons import *  # noqa: F401,F403
from segtext._kernels.panoptic import *  # noqa: F401,F403
from segtext._kernels.metrics import *  # noqa: F401,F403
