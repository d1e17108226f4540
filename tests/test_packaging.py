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


def test_the_docker_image_installs_every_runtime_dependency_but_the_images_own():
    """docker/Dockerfile installs what docker/runtime_requirements.py prints: pyproject.toml's runtime
    dependencies less torch and transformers (the TensorRT-LLM image's own). The image once lacked
    matplotlib, kept in a second hand-written list, so ``run.py --plot`` was refused there."""
    import importlib.util

    script = PYPROJECT.parent / "docker" / "runtime_requirements.py"
    spec = importlib.util.spec_from_file_location("runtime_requirements", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    printed = module.runtime_requirements()
    expected = [r for r in _project()["dependencies"] if Requirement(r).name not in ("torch", "transformers")]
    assert printed == expected and any(Requirement(r).name == "matplotlib" for r in printed)
    assert [module.requirement_name(r) for r in ("Foo_Bar.baz>=1", "numpy<3", "a ; python_version<'4'")] == [
        "foo-bar-baz", "numpy", "a"]
    dockerfile = (PYPROJECT.parent / "docker" / "Dockerfile").read_text()
    assert "-r /opt/trt-neg-requirements.txt" in dockerfile and "docker/runtime_requirements.py >" in dockerfile
