import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` (the README's command) runs two workers on a 2-core machine: one torch
    # thread each, and in every CLI process a test starts, or they fight over the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
# ../shared/data beside the checkout (from a worktree such as /work/wt/x it is two levels up)
SHARED_DATA = next((p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()),
                   ROOT.parent / "shared" / "data")
HH_FILE = SHARED_DATA / "hh-harmless-1500.jsonl"


def pytest_collection_modifyitems(config, items):
    """Files with `slow` tests (minutes on the real models) first: under `pytest -n 2 --dist
    loadfile` each worker then starts on a long file and the short ones fill in at the end,
    instead of one worker grinding a long file alone while the other sits idle."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)   # stable: order kept within


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """Folder of a 2-layer Llama + word-level tokenizer with a ChatML template."""
    from tiny_models import tiny_causal_lm
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory) -> Path:
    """Like ``tiny_lm`` but initialised at a larger scale, so a LoRA adapter can move its
    logits far enough to learn (policy training tests)."""
    from tiny_models import tiny_causal_lm
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny-policy"), init_std=0.2)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    from tiny_models import tiny_encoder
    return tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and the machine is shared (use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def db(tmp_path):
    """A fresh, empty store in a real DuckDB file."""
    from annotate import store
    s = store.Store(tmp_path / "test.duckdb")
    yield s
    s.close()


@pytest.fixture
def hh_file() -> Path:
    if not HH_FILE.exists():
        pytest.skip("../shared/data/hh-harmless-1500.jsonl is not present")
    return HH_FILE
