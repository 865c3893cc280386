"""Every example in the docstrings and in docs/*.md runs as written."""

from __future__ import annotations

import doctest
import importlib
import pathlib
import pkgutil

import pytest

import segtext

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODULES = sorted(m.name for m in pkgutil.walk_packages(segtext.__path__, "segtext.")
                 if m.name != "segtext.__main__")  # subpackages' modules too (segtext.records.*)
DOCS = sorted(p.name for p in (ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("name", ["segtext", *MODULES])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


@pytest.mark.parametrize("name", DOCS)
def test_markdown_examples(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = doctest.testfile(str(ROOT / "docs" / name), module_relative=False,
                              optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_public_functions_have_examples():
    """Each public function and class of the package documents a runnable example."""
    missing = []
    for name in segtext.__all__:
        obj = getattr(segtext, name)
        if callable(obj) and not isinstance(obj, type(segtext)):
            if ">>>" not in (obj.__doc__ or ""):
                missing.append(name)
    assert not missing, f"no example in the docstring of {missing}"
