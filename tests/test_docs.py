"""The README's set-up commands stay the ones CI runs, and the docs' examples run."""

from __future__ import annotations

import doctest
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = (ROOT / "README.rst").read_text()
    assert f"  {ci}\n" in readme


@pytest.mark.parametrize("page", ["README.rst", "docs/usage.rst"])
def test_the_examples_run(page):
    failures, tried = doctest.testfile(str(ROOT / page), module_relative=False)
    assert tried > 5 and failures == 0
