"""Root conftest: lets the doctests in ebooklet/ find their folder, and names the Hypothesis
profiles (here, so that they exist before ``--hypothesis-profile`` is read)."""

import os

from hypothesis import settings

# "ci" replays the same examples on every run, so that a failure in CI reproduces from the
# commit alone; it is the default when CI is set, as it is where .ci/run runs. "dev", the
# default elsewhere, draws new examples each run and keeps failing ones in .hypothesis/.
# "long" draws twenty times as many (docs/testing.rst): --hypothesis-profile=long.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.register_profile("long", max_examples=2000, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker more than the machine has cores. The tests spend much of their
    time waiting for servers and child processes (measured on 2 cores: the quick subset took
    3 min 6 s with 2 workers, 2 min 36 s with 3, 2 min 33 s with 4)."""
    return (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(items: list) -> None:
    """The slow tests first: each takes a worker for a minute or more, so started last they
    would leave the other worker idle at the end (pytest-xdist hands tests out in this order)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
