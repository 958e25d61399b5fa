"""`pip install .` gives one `matcv` namespace: the wheel, installed into a fresh venv and imported from
another folder, has every module, the task YAMLs and the official fold manifests, and no generic
top-level package (`import benchmarks` must fail there)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """A venv with only the built wheel (dependencies come from this environment's site-packages, put on
    PYTHONPATH: a path entry, so this environment's editable-install hook, a .pth file, is not run)."""
    work = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the sources: setuptools builds in-tree, and a build/ folder left in the checkout
    # would carry modules that have since moved into the next wheel.
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "runs", "results", ".cache", "__pycache__", "*.egg-info", "tests", "lightning_logs"))
    # No build isolation: the build backend is the one installed here, no package index needed.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(work / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next((work / "dist").glob("matcv-*.whl"))
    venv.EnvBuilder(with_pip=True).create(work / "venv")
    python = work / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return python


def run_installed(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"], "PYTHONNOUSERSITE": "1"}
    return subprocess.run([str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_wheel_holds_one_namespace_with_every_module(installed_wheel, tmp_path):
    code = """
import importlib, json, pkgutil
import matcv.datamodules, matcv.lightning_modules, matcv.benchmarks, matcv.leaderboard
from matcv.datamodules.core.config import available_tasks, TaskConfig
from matcv.datamodules.core.submission_format import read_official_index
names = [m.name for p in (matcv.datamodules, matcv.lightning_modules, matcv.benchmarks, matcv.leaderboard)
         for m in pkgutil.walk_packages(p.__path__, p.__name__ + ".")]
for name in names:
    importlib.import_module(name)
tasks = available_tasks()
for task in tasks:
    TaskConfig.load(task)
print(json.dumps({"file": matcv.datamodules.__file__, "modules": len(names), "tasks": tasks,
                  "official": len(read_official_index()["benchmarks"])}))
"""
    result = run_installed(installed_wheel, code, tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert str(installed_wheel.parents[1]) in found["file"]  # the wheel's copy, not this checkout
    shipped = sum(1 for folder in ("datamodules", "lightning_modules", "benchmarks", "leaderboard")
                  for path in (ROOT / folder).rglob("*.py") if "__pycache__" not in path.parts
                  and path.name != "__init__.py")
    assert found["modules"] >= shipped  # a sub-package missing from pyproject's list would be missing here
    assert {"segmentation", "rating", "localization", "microstructure", "alloygan"} <= set(found["tasks"])
    assert found["official"] > 0  # the committed official fold manifests ship as package data


@pytest.mark.parametrize("generic", ["benchmarks", "leaderboard", "datamodules", "lightning_modules"])
def test_no_generic_top_level_package_is_installed(installed_wheel, tmp_path, generic):
    result = run_installed(installed_wheel, f"import {generic}", tmp_path)
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr


def test_the_matcv_command_runs_from_the_wheel(installed_wheel, tmp_path):
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"], "PYTHONNOUSERSITE": "1"}
    result = subprocess.run([str(installed_wheel.parent / "matcv"), "bench", "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "--task" in result.stdout
