"""README.rst's install command, run as a new user runs it: in a fresh copy of the checkout,
a new virtual environment, from nothing (the package's dependencies come from the package
index as on any machine). It installs this project under its own distribution name, never the
published project called ``ebooklet`` (docs/from-0.5.rst, "Installing")."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

#: What a checkout holds that a fresh clone would not.
NOT_IN_A_CLONE = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "build", "dist",
                                        ".hypothesis", ".pytest_cache", ".ruff_cache")


def setup_commands() -> list[str]:
    """The README's set-up commands: the literal blocks of its "Installing" section."""
    readme = (ROOT / "README.rst").read_text()
    section = readme.split("Installing\n----------\n", 1)[1].split("\n------", 1)[0]
    return re.findall(r"::\n\n  (\S.*)\n", section)


def test_the_readme_sets_up_with_two_commands_demo_and_tests():
    demo, tests = setup_commands()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert demo.endswith(".venv/bin/ebooklet demo") and "pip install . " in demo
    assert tests == ci
    for page in [ROOT / "README.rst", *ROOT.glob("docs/*.rst")]:
        # As a command (in a literal block), "pip install ebooklet" installs the other project.
        assert not re.search(r"^ +(\S*/)?pip install (-\S+ )*[\"']?ebooklet\b", page.read_text(), re.M), page


@pytest.mark.slow
def test_the_readme_install_command_works_in_a_fresh_copy(tmp_path):
    checkout = tmp_path / "ebooklet"
    shutil.copytree(ROOT, checkout, ignore=NOT_IN_A_CLONE)
    demo = setup_commands()[0]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    run = subprocess.run(["bash", "-c", demo], cwd=checkout, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "commit 4: 1 key written" in run.stdout and "\nDone." in run.stdout, run.stdout

    venv = checkout / ".venv" / "bin"
    shown = subprocess.run([venv / "pip", "show", "ebooklet-sync"], capture_output=True, text=True, env=env)
    assert re.search(r"^Version: 0\.6\.0$", shown.stdout, re.M), shown.stdout + shown.stderr
    other = subprocess.run([venv / "pip", "show", "ebooklet"], capture_output=True, text=True, env=env)
    assert other.returncode != 0  # the published project of that name is not installed
    version = subprocess.run([venv / "ebooklet", "--version"], capture_output=True, text=True, env=env)
    assert version.stdout.strip() == "ebooklet 0.6.0 (ebooklet-sync)"


def _model_settings(env: dict[str, str], *options: str) -> list[str]:
    """The settings the model check runs with, as pytest would load them (conftest.py first)."""
    code = (
        "import sys, conftest\n"
        "from hypothesis import settings\n"
        "if len(sys.argv) > 1: settings.load_profile(sys.argv[1])\n"
        "from tests import test_model as m\n"
        "s = m.TwoClients.TestCase.settings\n"
        "print(s.derandomize, s.database is None, s.max_examples)\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    out = subprocess.run([sys.executable, "-c", code, *options], cwd=ROOT, env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_ci_replays_the_same_examples_and_a_long_profile_explores_more() -> None:
    assert _model_settings({"CI": "true"}) == ["True", "True", "100"]  # derandomised, no database
    assert _model_settings({}) == ["False", "False", "100"]  # a developer's run: random, remembered
    assert _model_settings({}, "long") == ["False", "False", "2000"]


def test_the_slow_tests_are_marked_and_handed_out_first() -> None:
    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-n0", "-p",
                             "no:cacheprovider", "tests/test_readers.py", "tests/test_model.py",
                             "tests/test_campaign.py"], cwd=ROOT, capture_output=True, text=True)
    ids = [line for line in listed.stdout.splitlines() if "::" in line]
    slow = ["tests/test_campaign.py::test_a_short_fault_campaign_loses_and_resurrects_nothing",
            "tests/test_model.py::test_two_clients_match_a_plain_dict_model::runTest"]
    assert sorted(ids[:2]) == slow and len(ids) > 5
