"""Training records: from the datasets people use to records every fine-tuning framework reads.

A **source reader** turns upstream annotation files, read as they are shipped, into
:class:`Sample` objects (one image, what to segment, and the target masks as COCO RLE or
polygons, not yet rasterised); :func:`make_record` turns a sample into one record (a question,
an answer holding the mask as text, and what is needed to score it later); :func:`build`
writes the records of many samples to a JSON Lines file, in order, resumably, on several
processes if asked, with the same bytes for the same inputs and seed.

Sources (:mod:`segtext.records.sources`): COCO instances (:func:`read_coco`), RefCOCO /
RefCOCO+ / RefCOCOg (:func:`read_refcoco`), gRefCOCO (:func:`read_grefcoco`), COCO panoptic
(:func:`read_panoptic`) and folders of semantic label maps (:func:`read_semantic`).

Record styles (:data:`STYLES`): ``messages`` (ms-swift, LLaMA-Factory, TRL), ``llava``,
``prompt-completion`` (TRL) and ``xsam`` (X-SAM's ``<p>...</p>`` prompts and ``<SEG>``
answers, with the target masks in the record). Every record carries ``id``, ``image_id``,
``image_size`` and, for one phrase, ``label`` and ``segmentation`` (the target as COCO RLE,
``null`` for no target), so that ``segtext eval --ground-truth records.jsonl`` scores
predictions against it.

Example:
    >>> import segtext as st
    >>> from segtext import records
    >>> sample = records.Sample("s1", "referring", "img.jpg", 7, (2, 4),
    ...                         [records.Target("dog", {"size": [2, 4], "counts": [4, 4]})], phrase="dog")
    >>> rec = records.make_record(sample, records.Options(grid_size=(2, 4)), seed=0)
    >>> rec["messages"][1]["content"].split("<seg>")[1]
    'others *2| dog *2\\n others *2| dog *2\\n</seg>'
"""

from segtext.records.builder import BuildSummary, Options, build, encode_sample, make_record
from segtext.records.prompts import TASKS, Templates, default_templates, load_templates
from segtext.records.sources import (
    Sample,
    Target,
    dataset_classes,
    read_class_names,
    read_coco,
    read_grefcoco,
    read_label_png,
    read_panoptic,
    read_refcoco,
    read_semantic,
    sample_from_dict,
    sample_to_dict,
)
from segtext.records.styles import STYLES

__all__ = [
    "STYLES",
    "TASKS",
    "BuildSummary",
    "Options",
    "Sample",
    "Target",
    "Templates",
    "build",
    "dataset_classes",
    "default_templates",
    "encode_sample",
    "load_templates",
    "make_record",
    "read_class_names",
    "read_coco",
    "read_grefcoco",
    "read_label_png",
    "read_panoptic",
    "read_refcoco",
    "read_semantic",
    "sample_from_dict",
    "sample_to_dict",
]
