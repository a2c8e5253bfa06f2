"""Shared fixtures: real English text from this machine, and the repo root on sys.path."""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from generators.text import man_page_text  # noqa: E402  (after the repo root is on sys.path)

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Test modules that share the session's two-node cluster (tests/pipeline/conftest.py: two_nodes): under
# pytest-xdist they run on one worker, so only one such cluster is ever started.
TWO_NODE_MODULES = ("tests/pipeline/test_submit.py", "tests/pipeline/test_multinode.py")
# Modules whose tests each run a long subprocess and share nothing: under pytest-xdist each test is a unit
# of its own, so both workers share them (make test-bench: one bench script a test).
PER_TEST_MODULES = ("tests/bench/test_bench_quick.py",)


def pytest_configure(config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n 2``), each worker process and everything it starts
    (its Ray instance, the actors, `litho` subprocesses) runs on cores of its own.

    Without this, two workers' torch threads (as many as the machine has cores, in each) and their Ray
    instances compete for every core: on 2 cores, two unpinned workers kept the CPU busy for 1,773 s against
    a serial run's 1,301 s and finished in 929 s against its 957 s (2026-12-07; threads waiting on a core
    the other worker holds are the likely cause). Pinned: 1,388 s and 717 s. On its worker's core a model
    uses one thread (generators.teachers.models.usable_cpus)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2 or not hasattr(os, "sched_getaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    index = int(worker[2:])
    share = max(1, len(cores) // count)
    mine = cores[(index * share) % len(cores) :][:share]
    os.sched_setaffinity(0, mine)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items: list) -> None:
    """Under pytest-xdist, the modules of slow tests first, those with the most slow tests (and the
    two-node cluster's) at the head: the workers hand out whole modules in this order, and a long module
    handed out last would leave one worker running it alone at the end."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        slow[module] = slow.get(module, 0) + (item.get_closest_marker("slow") is not None)
    for module in TWO_NODE_MODULES:
        slow[module] = len(items)  # one scope of its own (below), and the longest: first
    first = {module: i for i, module in enumerate(slow)}  # stable: otherwise in collection order
    items.sort(key=lambda item: (-slow[item.nodeid.split("::", 1)[0]], first[item.nodeid.split("::", 1)[0]]))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Whole test modules go to one worker, in collection order (above), so a module's shared runs
    (module-scoped fixtures) are made once; the two-node cluster's modules go to the same one; the tests of
    PER_TEST_MODULES go one by one."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module in PER_TEST_MODULES:
                return nodeid
            return "two_nodes" if module in TWO_NODE_MODULES else module

    config.option.loadscopereorder = False  # xdist would put the modules with the most tests first
    return ModuleScheduling(config, log)


def _man_page_text(limit: int = 20) -> list[str]:
    """Plain text of a few man pages (roff requests stripped); nobody here wrote these."""
    texts = []
    for path in sorted(Path("/usr/share/man/man1").glob("*.gz"))[:200]:
        text = man_page_text(gzip.decompress(path.read_bytes()).decode("utf-8", "replace"), " ")
        if len(text.split()) > 150:
            texts.append(text)
        if len(texts) >= limit:
            break
    return texts


@pytest.fixture(scope="session")
def real_texts() -> list[str]:
    """Real English paragraphs: Python's pydoc topics, then man pages."""
    from pydoc_data.topics import topics

    texts = [topics[k] for k in sorted(topics) if len(topics[k].split()) > 150][:20]
    texts += _man_page_text()
    assert len(texts) >= 10, "expected pydoc_data and man pages on this machine"
    return texts


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one torch thread, above all on a shared, busy machine; modules of
    tiny-model tests use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
