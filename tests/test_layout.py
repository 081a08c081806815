"""The layout: the import contracts of pyproject.toml (import-linter), and a `pantau` without the
developer tools, as the production image installs it."""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pantau", "ingest", "api", "alerts", "simulators")


def test_import_contracts_are_kept() -> None:
    """The core imports no service, CLI or tooling; services none of each other; no cycles."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports) if lint_imports.exists() else "lint-imports", "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def without_tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages as the production image has them: no pantau/tools."""
    tree = tmp_path_factory.mktemp("without-tools")
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package,
            tree / package,
            ignore=shutil.ignore_patterns("__pycache__", "tools")
            if package == "pantau"
            else shutil.ignore_patterns("__pycache__"),
        )
    assert not (tree / "pantau" / "tools").exists()
    return tree


# `python -m pantau` from the copy alone: an editable install of the project would find the
# work tree's pantau.tools, so its finder is taken out first (and the run refused if it still can).
_WITHOUT_EDITABLE = """
import importlib.util, runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
if importlib.util.find_spec("pantau.tools") is not None:
    sys.exit("pantau.tools is still importable")
runpy.run_module("pantau", run_name="__main__", alter_sys=True)
"""


def _pantau(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"}
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_EDITABLE, *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "command"), [(["up"], "pantau up"), (["bench", "ingest"], "pantau bench")]
)
def test_the_tools_missing_is_one_line(without_tools: Path, args: list[str], command: str) -> None:
    result = _pantau(without_tools, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert command in line and "pip install 'pantau[tools]'" in line


def test_the_rest_runs_without_the_tools(without_tools: Path) -> None:
    for args in (["--help"], ["config"], ["ingest", "--help"], ["simulate", "--help"]):
        result = _pantau(without_tools, *args)
        assert result.returncode == 0, (args, result.stdout + result.stderr)
        assert "pantau.tools" not in result.stderr


def test_every_core_module_is_under_the_contract() -> None:
    """A new module of pantau is core (and listed in the contract) unless it is CLI or tooling."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (core,) = [
        contract
        for contract in pyproject["tool"]["importlinter"]["contracts"]
        if contract["name"].startswith("The shared core")
    ]
    modules = {
        f"pantau.{info.name}"
        for info in pkgutil.iter_modules([str(ROOT / "pantau")])
        if info.name not in {"cli", "tools", "__main__"}
    }
    assert modules == set(core["source_modules"])
