"""pyproject.toml's promises hold for what it installs: every dependency (as installed, the pins
and ranges resolved) installs on the lowest Python the project declares. ``requires-python``
said ">=3.10" while the pinned transformers 5.23.0 needs 3.11, so on 3.10 the README's set-up
failed in pip ("No matching distribution found for transformers==5.23.0")."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def test_requires_python_is_a_plain_floor():
    assert re.fullmatch(r">=3\.\d+", _project()["requires-python"]), _project()["requires-python"]


def test_every_installed_dependency_supports_the_lowest_declared_python():
    project = _project()
    floor = project["requires-python"].removeprefix(">=") + ".0"
    requirements = [Requirement(r) for r in (*project["dependencies"], *project["optional-dependencies"]["test"])]
    checked, refusing = [], []
    for req in requirements:
        requires_python = metadata.metadata(req.name).get("Requires-Python")
        checked.append(req.name)
        if requires_python and not SpecifierSet(requires_python).contains(floor):
            refusing.append(f"{req.name} {metadata.version(req.name)}: Requires-Python {requires_python}")
    assert "transformers" in checked and "torch" in checked
    assert refusing == [], f"requires-python {project['requires-python']} but: {refusing}"
