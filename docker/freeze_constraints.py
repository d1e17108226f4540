#!/usr/bin/env python3
"""Print a pip constraints file pinning every distribution installed in this Python ("name==version").

Used by docker/Dockerfile so that installing trt-neg's few runtime dependencies can never replace
what NVIDIA's TensorRT-LLM image ships (its CUDA torch, transformers, tensorrt, tensorrt_llm...).
Versions pip could not parse (rare local builds) are left out rather than breaking the install.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions

try:
    from packaging.version import InvalidVersion, Version
except ImportError:  # pragma: no cover - pip always vendors packaging, but be safe
    Version = None


def main() -> int:
    pins: dict[str, str] = {}
    for dist in distributions():
        name, version = dist.metadata.get("Name"), dist.version
        if not name or not version:
            continue
        if Version is not None:
            try:
                Version(version)
            except InvalidVersion:
                print(f"# skipped {name} {version}: not a PEP 440 version", file=sys.stderr)
                continue
        # distributions() lists the copy Python imports first (sys.path order): keep that one
        pins.setdefault(re.sub(r"[-_.]+", "-", name).lower(), version)
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
