"""The shape of the code base: the layer contract, file sizes, and scripts using public names only."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400
# Files allowed past MAX_LINES, each with the reason.
ALLOWED_OVER_400 = {}


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_layer_contract_holds() -> None:
    """``lint-imports`` with the contract of pyproject.toml: a module imports only from layers below."""
    pytest.importorskip("importlinter")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-logo",
            "--no-cache",
            "pyproject.toml",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"layer contract broken:\n{run.stdout}\n{run.stderr}"
    assert "0 broken" in run.stdout


def test_no_source_file_is_too_long() -> None:
    too_long = {}
    for path in _python_files("persam", "apps", "eval"):
        rel = path.relative_to(ROOT).as_posix()
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES and rel not in ALLOWED_OVER_400:
            too_long[rel] = n
    assert not too_long, f"over {MAX_LINES} lines (split them by component): {too_long}"


def _private_imports(path: Path) -> list[str]:
    """``module`` or ``module.name`` of every import of persam in ``path`` that reaches a private
    module or name (a dotted part starting with ``_``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            if parts[0] == "persam" and any(p.startswith("_") for p in parts[1:]):
                found.append(target)
    return found


def test_scripts_and_apps_use_public_names_only() -> None:
    offenders = {}
    for path in _python_files("eval", "apps"):
        private = _private_imports(path)
        if private:
            offenders[path.relative_to(ROOT).as_posix()] = private
    assert not offenders, f"imports of private persam modules or names: {offenders}"


def test_private_import_check_finds_private_modules_and_names(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "import persam.cli._common\n"
        "from persam.weights import _fetch, download\n"
        "from persam.registry import build_model\n"
        "from . import _local\n"
        "import os._x\n"
    )
    assert _private_imports(script) == ["persam.cli._common", "persam.weights._fetch"]
