"""Question and answer templates, chosen per sample with a seeded generator.

A template set has, for each task kind of :data:`TASKS`, a list of questions and a list of
answers. ``{phrase}`` stands for the referring expression (``referring``, ``no_target``,
``multi_target``) and ``{mask}`` for the mask text (the answer of every kind but ``no_target``
must hold it; in the I-SD family it is wrapped in ``<seg>...</seg>`` as Text4Seg does). The
question and the answer of a sample are drawn by a generator seeded with the build's seed and
the sample's id (two numbers read off a BLAKE2b hash of both), so the same inputs and seed give
the same bytes however the work is split.

A user file (JSON) replaces the built-in set for the kinds it names::

    {"referring": {"questions": ["Where is {phrase}?"], "answers": ["Here: {mask}"]}}
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["TASKS", "Templates", "default_templates", "load_templates"]

#: task kinds a template set covers
TASKS = ("referring", "multi_target", "no_target", "semantic", "instances")
_NEEDS_PHRASE = ("referring", "multi_target", "no_target")
_PLACEHOLDER = re.compile(r"\{(phrase|mask)\}")

_DEFAULT: dict[str, dict[str, list[str]]] = {
    "referring": {
        "questions": [
            "Please segment {phrase} in this image.",
            "Can you segment {phrase}?",
            "Where is {phrase}? Answer with its mask.",
            "Give the segmentation mask of {phrase}.",
            "Mark the pixels that belong to {phrase}.",
        ],
        "answers": [
            "Sure, here is the mask of {phrase}:\n{mask}",
            "Here is the segmentation of {phrase}:\n{mask}",
            "{mask}",
            "The mask of {phrase}:\n{mask}",
        ],
    },
    "multi_target": {
        "questions": [
            "Please segment {phrase} in this image.",
            "Segment every object that matches {phrase}.",
            "Which regions are {phrase}? Answer with a mask.",
        ],
        "answers": [
            "Sure, here are all the regions of {phrase}:\n{mask}",
            "Several objects match {phrase}; together they are:\n{mask}",
            "{mask}",
        ],
    },
    "no_target": {
        "questions": [
            "Please segment {phrase} in this image.",
            "Can you segment {phrase}?",
            "Where is {phrase}? Answer with its mask.",
        ],
        "answers": [
            "Nothing in this image matches \"{phrase}\".\n{mask}",
            "I cannot find \"{phrase}\" in this image.\n{mask}",
            "No region of the image fits \"{phrase}\".\n{mask}",
        ],
    },
    "semantic": {
        "questions": [
            "Please segment every object and region in this image by class.",
            "Give the semantic segmentation of this image.",
            "Label each part of the image with its class.",
        ],
        "answers": [
            "Sure, here is the semantic segmentation:\n{mask}",
            "Here is each region with its class:\n{mask}",
            "{mask}",
        ],
    },
    "instances": {
        "questions": [
            "Please segment every object in this image, one by one.",
            "Find each object instance and give its mask.",
            "Segment all the objects in this image separately.",
        ],
        "answers": [
            "Sure, here is every object:\n{mask}",
            "Here are the instances:\n{mask}",
            "{mask}",
        ],
    },
}


def _digest(seed: int, sample_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{sample_id}".encode("utf-8"), digest_size=16).digest()


def _fill(template: str, phrase: str, mask: str) -> str:
    """The template with ``{phrase}`` and ``{mask}`` filled in one pass (a phrase holding the
    text ``{mask}`` stays as it is); every other character is kept literally."""
    if "{" not in phrase:  # the phrase cannot make a placeholder: two plain replacements suffice
        return template.replace("{phrase}", phrase).replace("{mask}", mask)
    return _PLACEHOLDER.sub(lambda m: phrase if m.group(1) == "phrase" else mask, template)


@dataclass(frozen=True)
class Templates:
    """A checked template set: ``questions[task]`` and ``answers[task]`` for each task kind.

    Example:
        >>> from segtext.records import default_templates
        >>> t = default_templates()
        >>> q, a = t.choose("referring", "the dog", "<seg>...</seg>", seed=0, sample_id="x")
        >>> "the dog" in q and "<seg>...</seg>" in a
        True
    """

    questions: dict[str, tuple[str, ...]]
    answers: dict[str, tuple[str, ...]]

    def choose(self, task: str, phrase: str | None, mask: str, seed: int, sample_id: str) -> tuple[str, str]:
        """The question and answer of one sample, drawn from the hash of ``seed`` and ``sample_id``."""
        if task not in self.questions:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        digest = _digest(seed, sample_id)  # two draws from the sample's own hash, no generator built
        qs, ans = self.questions[task], self.answers[task]
        q = qs[int.from_bytes(digest[:8], "big") % len(qs)]
        a = _fill(ans[int.from_bytes(digest[8:], "big") % len(ans)], phrase or "", mask)
        return _fill(q, phrase or "", mask), (a if mask else a.rstrip())  # no mask (no B-SD block): no dangling line


def _checked(data: Any, where: str) -> Templates:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object mapping task kinds to templates, "
                         f"got {type(data).__name__}")
    unknown = sorted(set(data) - set(TASKS))
    if unknown:
        raise ValueError(f"{where}: unknown task kind(s) {unknown}; expected some of {list(TASKS)}")
    merged = {k: dict(v) for k, v in _DEFAULT.items()}
    for task, entry in data.items():
        if not isinstance(entry, dict) or set(entry) - {"questions", "answers"}:
            raise ValueError(f"{where}: {task!r} must be an object with 'questions' and/or 'answers' lists")
        for key, items in entry.items():
            if not isinstance(items, list) or not items or not all(isinstance(s, str) and s for s in items):
                raise ValueError(f"{where}: {task}.{key} must be a non-empty list of non-empty strings")
            for k, s in enumerate(items):
                if key == "answers" and "{mask}" not in s:
                    raise ValueError(f"{where}: {task}.answers[{k}] has no {{mask}}: the answer must "
                                     "hold the mask text")
                if task not in _NEEDS_PHRASE and "{phrase}" in s:
                    raise ValueError(f"{where}: {task}.{key}[{k}] uses {{phrase}}, which a "
                                     f"{task} sample does not have")
            merged[task][key] = items
    return Templates({k: tuple(v["questions"]) for k, v in merged.items()},
                     {k: tuple(v["answers"]) for k, v in merged.items()})


def default_templates() -> Templates:
    """The built-in template set (our own wording; several per task kind).

    Example:
        >>> from segtext.records import default_templates
        >>> len(default_templates().questions["referring"]) >= 3
        True
    """
    return _checked({}, "built-in templates")


def load_templates(source: str | os.PathLike | dict) -> Templates:
    """A template set from a JSON file (or its parsed object); kinds it leaves out keep the
    built-in templates.

    Raises:
        ValueError: bad JSON, an unknown task kind, an answer without ``{mask}``, ``{phrase}``
            in a kind without a phrase, empty lists.
        TypeError: ``source`` neither a path nor a dict.
        OSError: the file cannot be read.

    Example:
        >>> from segtext.records import load_templates
        >>> t = load_templates({"semantic": {"answers": ["Classes:\\n{mask}"]}})
        >>> t.answers["semantic"]
        ('Classes:\\n{mask}',)
    """
    if isinstance(source, dict):
        return _checked(source, "templates")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"templates must be a JSON file path or a dict, got {type(source).__name__}")
    from segtext.records.sources import load_json

    return _checked(*load_json(source, "templates"))
