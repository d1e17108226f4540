"""pyproject.toml's promises hold: every exactly pinned dependency installs on the lowest Python
the project declares. ``requires-python`` said ">=3.10" while the pinned transformers 5.23.0
needs 3.11, so on 3.10 the README's set-up failed in pip ("No matching distribution found for
transformers==5.23.0"). A range is not held to it: pip resolves it per Python (numpy 2.5 on
3.12 needs 3.12; on 3.11 pip takes a 2.4)."""

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


def _pinned(requirement: Requirement) -> bool:
    specs = list(requirement.specifier)
    return len(specs) == 1 and specs[0].operator == "=="


def test_every_pinned_dependency_supports_the_lowest_declared_python():
    project = _project()
    floor = project["requires-python"].removeprefix(">=") + ".0"
    requirements = [Requirement(r) for r in (*project["dependencies"], *project["optional-dependencies"]["test"])]
    checked, refusing = [], []
    for req in filter(_pinned, requirements):
        assert metadata.version(req.name) == next(iter(req.specifier)).version, f"{req.name}: not the pinned version"
        requires_python = metadata.metadata(req.name).get("Requires-Python")
        checked.append(req.name)
        if requires_python and not SpecifierSet(requires_python).contains(floor):
            refusing.append(f"{req} needs Python {requires_python}")
    assert "transformers" in checked and "pytest" in checked
    assert refusing == [], f"requires-python {project['requires-python']} but: {refusing}"
