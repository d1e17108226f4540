#!/usr/bin/env python3
"""Print trt-neg's runtime requirements from pyproject.toml, one per line, less the ones NVIDIA's
TensorRT-LLM image provides itself (its CUDA torch and the transformers tensorrt_llm pins).

docker/Dockerfile installs these under the image's constraints, so pyproject.toml stays the one list
of the package's dependencies (a dependency added there reaches the image too)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement  # transformers needs it, so every image has it
from packaging.utils import canonicalize_name

PROVIDED_BY_IMAGE = frozenset({"torch", "transformers"})
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirement_name(requirement: str) -> str:
    """The distribution name of a PEP 508 requirement, normalised ("Foo_Bar>=1" -> "foo-bar")."""
    return canonicalize_name(Requirement(requirement).name)


def runtime_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [r for r in dependencies if requirement_name(r) not in PROVIDED_BY_IMAGE]


def main() -> int:
    sys.stdout.write("".join(r + "\n" for r in runtime_requirements()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
