"""The package layers of docs/ARCHITECTURE.md are import-linter contracts, and the test rules of CI hold."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def test_an_upward_import_breaks_the_contracts_and_the_tree_keeps_them(tmp_path):
    assert lint(REPO).returncode == 0, lint(REPO).stdout
    shutil.copytree(REPO / "robopolicy", tmp_path / "robopolicy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with open(tmp_path / "robopolicy" / "datasets" / "layout.py", "a") as module:
        module.write("\nfrom robopolicy.robots.interface import Reading  # noqa: E402\n")
    with open(tmp_path / "robopolicy" / "runtime" / "timing.py", "a") as module:
        module.write("\nfrom robopolicy.policies.base import Policy  # noqa: E402\n")
    result = lint(tmp_path)
    assert result.returncode == 1
    assert "The store layer knows no robot, simulator, runtime or trainer BROKEN" in result.stdout
    assert "The runtime runs an artifact without policy, training or simulator code BROKEN" in result.stdout
    assert "robopolicy.datasets.layout -> robopolicy.robots.interface" in result.stdout


MARKED = '''
import pytest

@pytest.mark.ros
def test_marked_and_skipped():
    pytest.skip("no roscore here")

@pytest.mark.sim
def test_marked_and_run():
    assert True

def test_unmarked_and_skipped():
    pytest.skip("data absent")
'''


def test_any_skipped_test_fails_in_ci_and_only_skips_elsewhere(tmp_path):
    (tmp_path / "test_marked.py").write_text(MARKED)
    outcomes = {}
    for ci in ("", "true"):
        env = {**os.environ, "CI": ci}
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
                                 str(tmp_path / "test_marked.py")], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=300)
        outcomes[ci] = (result.returncode, result.stdout.strip().splitlines()[-1])
    assert outcomes[""][0] == 0 and "1 passed, 2 skipped" in outcomes[""][1]
    assert outcomes["true"][0] == 1 and "2 failed, 1 passed" in outcomes["true"][1]
