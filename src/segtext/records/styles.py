"""Record layouts: what each fine-tuning framework reads.

=====================  ===========================================================================
style                  layout (one JSON object per line)
=====================  ===========================================================================
``messages``           ``{"id", "messages": [{"role": "user", "content": "<image>..."},
                       {"role": "assistant", "content": "..."}], "images": [path], ...}``: read as
                       is by ms-swift, LLaMA-Factory (with :func:`llamafactory_entry`) and TRL's
                       ``SFTTrainer``
``llava``              ``{"id", "image": path, "conversations": [{"from": "human", "value":
                       "<image>\\n..."}, {"from": "gpt", "value": "..."}], ...}``
``prompt-completion``  ``{"id", "prompt": [{"role": "user", ...}], "completion": [{"role":
                       "assistant", ...}], "images": [path], ...}``: TRL, loss on the completion only
``xsam``               the ``llava`` layout with X-SAM's prompt (each phrase as ``<p>...</p>``) and
                       answer (``<SEG>`` per mask), the masks as COCO RLE in ``"segmentation"``
=====================  ===========================================================================

Every record also carries what scoring needs: ``image_id``, ``image_size`` and, for a referring
sample, ``label`` and ``segmentation`` (COCO RLE, ``null`` for no target); for a semantic or
instance sample, ``segments`` (``label`` and ``segmentation`` of each).
"""

from __future__ import annotations

from typing import Any

__all__ = ["STYLES", "llamafactory_entry", "shape"]

STYLES = ("messages", "llava", "prompt-completion", "xsam")


def shape(style: str, record_id: str, image: str, question: str, answer: str, score: dict[str, Any]) -> dict:
    """One record in ``style``: the conversation, then the scoring fields ``score``.

    Example:
        >>> from segtext.records.styles import shape
        >>> shape("llava", "r1", "a.jpg", "Segment it.", "<seg>...</seg>", {"image_id": 1})["conversations"][0]
        {'from': 'human', 'value': '<image>\\nSegment it.'}
    """
    if style == "messages":
        rec = {"id": record_id,
               "messages": [{"role": "user", "content": "<image>" + question},
                            {"role": "assistant", "content": answer}],
               "images": [image]}
    elif style in ("llava", "xsam"):
        rec = {"id": record_id, "image": image,
               "conversations": [{"from": "human", "value": "<image>\n" + question},
                                 {"from": "gpt", "value": answer}]}
    elif style == "prompt-completion":
        rec = {"id": record_id,
               "prompt": [{"role": "user", "content": "<image>" + question}],
               "completion": [{"role": "assistant", "content": answer}],
               "images": [image]}
    else:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    for key, value in score.items():
        rec.setdefault(key, value)
    return rec


def llamafactory_entry(name: str, file_name: str) -> dict:
    """The ``dataset_info.json`` entry with which LLaMA-Factory reads a ``messages`` file.

    Example:
        >>> from segtext.records.styles import llamafactory_entry
        >>> llamafactory_entry("seg", "train.jsonl")["seg"]["formatting"]
        'sharegpt'
    """
    return {name: {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant"},
    }}
