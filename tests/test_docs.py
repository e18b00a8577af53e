"""The README's set-up commands stay the ones CI runs, and the docs' examples run."""

from __future__ import annotations

import doctest
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = (ROOT / "README.rst").read_text()
    assert f"  {ci}\n" in readme


@pytest.mark.parametrize("page", ["README.rst", "docs/usage.rst", "docs/scaling.rst"])
def test_the_examples_run(page):
    failures, tried = doctest.testfile(str(ROOT / page), module_relative=False)
    assert tried > 5 and failures == 0


def test_the_multiprocessing_example_of_scaling_out_runs(tmp_path):
    """The script in docs/scaling.rst (With ``multiprocessing``) runs as it is written."""
    page = (ROOT / "docs" / "scaling.rst").read_text()
    start = page.index(".. code-block:: python", page.index("With ``multiprocessing``"))
    body = page[start:].split("\n\n", 1)[1]
    lines = []
    for line in body.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    script = tmp_path / "example.py"
    script.write_text(textwrap.dedent("\n".join(lines)))
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "commit 2: 4000 keys"
