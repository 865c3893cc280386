"""Hugging Face ``datasets`` paths: samples as a :class:`datasets.Dataset`, and a batch function
for ``Dataset.map(batched=True, num_proc=N)`` that turns them into records.

``datasets`` is an optional extra (``pip install datasets``); ``import segtext`` never needs it.
The records are those :func:`segtext.records.build` writes, line for line: the ``record``
column holds each one as the same JSON text, and the conversation columns of the style
(``messages`` and ``images``; ``image`` and ``conversations``; ``prompt``, ``completion`` and
``images``) are there to train on directly.

Example:
    >>> from segtext import records
    >>> from segtext.records.hf import records_batch
    >>> s = records.Sample("s", "referring", "a.jpg", 1, (2, 4),
    ...                    [records.Target("cat", {"size": [2, 4], "counts": [4, 4]})], "cat")
    >>> import json
    >>> out = records_batch({"sample": [json.dumps(records.sample_to_dict(s))]}, records.Options(grid_size=(1, 2)))
    >>> out["id"], out["images"]
    (['s'], [['a.jpg']])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from segtext.records.builder import Options, record_line
from segtext.records.sources import Sample, sample_from_dict, sample_to_dict

__all__ = ["records_batch", "to_hf_dataset"]

_COLUMNS = {"messages": ("messages", "images"), "llava": ("image", "conversations"),
            "xsam": ("image", "conversations"), "prompt-completion": ("prompt", "completion", "images")}


def to_hf_dataset(samples: Sequence[Sample]) -> Any:
    """A :class:`datasets.Dataset` of samples: columns ``id`` and ``sample`` (the sample as JSON
    text, see :func:`segtext.records.sample_to_dict`), in order.

    Raises:
        ValueError: ``datasets`` is not installed.
    """
    try:
        from datasets import Dataset
    except ImportError:
        raise ValueError("to_hf_dataset needs the datasets package (pip install datasets)") from None
    return Dataset.from_dict({"id": [s.id for s in samples],
                              "sample": [json.dumps(sample_to_dict(s), ensure_ascii=False) for s in samples]})


def records_batch(batch: dict[str, list], options: Options = Options(), seed: int = 0,
                  skip_invalid: bool = False) -> dict[str, list]:
    """``Dataset.map(records_batch, batched=True, fn_kwargs={...})``: a batch with a ``sample``
    column in, records out: ``id``, ``record`` (the JSON line :func:`~segtext.records.build`
    writes) and the style's conversation columns.

    With ``skip_invalid`` an invalid sample gives ``record`` ``None`` and ``problem`` its reason
    (filter them out with ``.filter(lambda r: r["record"] is not None)``); without, it raises.

    Raises:
        ValueError: an invalid sample (without ``skip_invalid``), a batch without ``sample``.
    """
    if "sample" not in batch:
        raise ValueError("records_batch needs a 'sample' column (see to_hf_dataset)")
    cols = _COLUMNS[options.style]
    out: dict[str, list] = {"id": [], "record": [], "problem": [], **{c: [] for c in cols}}
    for text in batch["sample"]:
        sample = sample_from_dict(json.loads(text))
        line, problem = record_line(sample, options, seed, skip_invalid)
        rec = json.loads(line) if line is not None else {}
        out["id"].append(sample.id)
        out["record"].append(line)
        out["problem"].append(problem)
        for c in cols:
            out[c].append(rec.get(c))
    return out
