"""JSON as the files this tool reads must hold it, with one-line reasons for what is wrong.

``json.loads`` alone is looser and less polite than the readers downstream of us (transformers,
the safetensors library, TensorRT-LLM): given bytes it accepts a byte-order mark and UTF-16/32
text; it lets a lone surrogate escape (``"\\ud800"``) through into a ``str`` that cannot be
printed or written as UTF-8; and it raises ``RecursionError`` on deep nesting and a bare
``ValueError`` on integers of more than 4300 digits, neither naming a file. :func:`loads` turns
every one of these into a :class:`JsonError` whose text the caller puts after the file's name.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

# A lone surrogate comes from a \uD800-\uDFFF escape (or, in text handed over as str, the code point
# itself): text without one cannot hold one, and the walk over every string (a safetensors header of
# 100k tensors holds about a million) is skipped.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JsonError(ValueError):
    """Why some JSON text is refused, phrased to follow a file name ("{path}: {reason}")."""


def loads(raw: bytes | str, *, parse_int: Callable[[str], Any] | None = None) -> Any:
    """Parse ``raw`` (bytes must be UTF-8, without a byte-order mark); JsonError if it is not such JSON.
    ``parse_int`` as for json.loads."""
    maybe_surrogates = False
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            raw = bytes(raw).decode("utf-8")  # strict: never yields a surrogate code point
        except UnicodeDecodeError as exc:
            raise JsonError(f"is not UTF-8 ({exc.reason} at byte {exc.start}); JSON files must be UTF-8") from None
    else:
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            maybe_surrogates = True
    if raw.startswith("\ufeff"):
        raise JsonError("starts with a byte-order mark; JSON files must be plain UTF-8")
    try:
        data = json.loads(raw, parse_int=parse_int)
    except json.JSONDecodeError as exc:
        raise JsonError(f"is not valid JSON ({exc})") from None
    except RecursionError:
        raise JsonError("is not valid JSON here (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer literal of more than sys.get_int_max_str_digits() digits
        raise JsonError(f"is not valid JSON here ({exc})") from None
    if maybe_surrogates or _SURROGATE_ESCAPE.search(raw):
        _check_strings(data)
    return data


def _check_strings(data: Any) -> None:
    """Every key and string encodes as UTF-8 (a lone surrogate escape does not). Iterative: the
    parser already accepted the nesting depth, a recursive walk might not."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise JsonError(f"holds a string that is not valid Unicode (a lone surrogate escape, "
                                f"{item[exc.start:exc.end].encode('unicode_escape').decode()})") from None
