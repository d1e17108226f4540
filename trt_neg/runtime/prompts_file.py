"""Request inputs of ``run.py``: text prompts, chat messages and token ids, from the command
line or a prompts file (UTF-8 JSONL, one request a line).  Errors are ``click.BadParameter``
naming ``file:line`` (and the request's "id" when it has one)."""

from __future__ import annotations

import json

import click

from .. import strict_json

PROMPTS_FILE_HELP = ('UTF-8 JSONL file, one request per line: a JSON string (the prompt) or an object with one of '
                     '"prompt" (text), "messages" ([{"role": ..., "content": ...}, ...]) or "token_ids" ([ints]), '
                     'optionally with "id", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "mode", '
                     '"stop".')


class PromptSpec:
    """One request's input. ``label`` is its id in the output; ``where`` names it in errors
    (``file:line`` for a prompts-file line, plus its "id" when it has one); ``line`` is that
    ``file:line`` (None for a command-line prompt)."""

    def __init__(self, label: str, text: str | None = None, messages: list | None = None,
                 token_ids: list[int] | None = None, overrides: dict | None = None, where: str | None = None):
        self.label, self.text, self.messages, self.token_ids = label, text, messages, token_ids
        self.overrides = overrides or {}
        self.line = where
        if where is None:
            where = label
        elif label != where:
            where = f"{where} (id {label!r})"
        self.where = where

    @property
    def given_id(self) -> str | None:
        """The "id" its prompts-file line gives it (None without one)."""
        return self.label if self.line is not None and self.label != self.line else None


OVERRIDES = {"max_new_tokens", "temperature", "top_k", "top_p", "seed", "mode", "stop"}
# Request fields a prompts-file line sets under another name.
LINE_KEYS = {"neg_mode": "mode", "prompt_token_ids": "token_ids"}


def request_error(spec: PromptSpec, exc: ValueError) -> click.BadParameter:
    """A request refused for one of its own values ("field: problem"): a prompts-file line's names the key the
    line wrote; a command-line prompt's (its tokens) names the prompt."""
    if spec.line is None:
        return click.BadParameter(f"{spec.where}: {exc}", param_hint="prompt")
    name, sep, problem = str(exc).partition(": ")
    key = LINE_KEYS.get(name, name)
    if key == "token_ids" and spec.token_ids is None:  # tokens of a "prompt" or "messages" line
        key = name
    message = f"{key}: {problem}" if sep else str(exc)
    return click.BadParameter(f"{spec.where}: {message}", param_hint="--prompts-file")


def parse_token_ids(value: str) -> list[int]:
    try:
        ids = [int(x) for x in value.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint="--token-ids") from None
    if not ids:
        raise click.BadParameter("empty list of token ids", param_hint="--token-ids")
    return ids


def check_messages(messages, where: str, hint: str) -> None:
    """Chat messages: a non-empty list of objects with string "role" and "content"."""
    if not isinstance(messages, list) or not messages:
        raise click.BadParameter(f"{where}: 'messages' must be a non-empty list of "
                                 '{"role": ..., "content": ...} objects', param_hint=hint)
    for k, message in enumerate(messages):
        if not isinstance(message, dict):
            raise click.BadParameter(f"{where}: messages[{k}] must be an object with string 'role' and 'content', "
                                     f"got {json.dumps(message)[:60]}", param_hint=hint)
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                problem = ("is missing" if key not in message
                           else f"must be a string, got {json.dumps(message[key])[:60]}")
                raise click.BadParameter(f"{where}: messages[{k}]: '{key}' {problem}", param_hint=hint)


def check_unique_ids(specs: list[PromptSpec]) -> None:
    """Every request's id (its output "id") is unique: a prompts-file id may repeat neither another
    line's nor a command-line prompt's (arg0, ..., ids0, ...)."""
    first: dict[str, PromptSpec] = {}
    for spec in specs:
        other = first.setdefault(spec.label, spec)
        if other is spec:
            continue
        earlier, later = (other, spec) if spec.line is not None else (spec, other)  # name a prompts-file line
        used_by = earlier.line if earlier.line is not None else "a command-line prompt"
        raise click.BadParameter(f"{later.line}: id {spec.label!r} is already used by {used_by}",
                                 param_hint="--prompts-file")


def request_id(obj: dict, where: str, hint: str) -> str:
    """A line's "id" (a string or an integer) as its label, or ``where`` without one."""
    if "id" not in obj:
        return where
    ident = obj["id"]
    if isinstance(ident, bool) or not isinstance(ident, (str, int)):
        raise click.BadParameter(f"{where}: 'id' must be a string or an integer, got {json.dumps(ident)[:60]}",
                                 param_hint=hint)
    return str(ident)


def read_prompts_file(path: str) -> list[PromptSpec]:
    specs = []
    hint = "--prompts-file"
    try:
        handle = open(path, "rb")  # decoded line by line: a bad byte is reported with its line
    except OSError as exc:
        raise click.BadParameter(f"{path}: cannot read ({exc.strerror or exc})", param_hint=hint) from None
    with handle:
        for lineno, raw in enumerate(handle, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a leading BOM is allowed
            except UnicodeDecodeError as exc:
                raise click.BadParameter(f"{where}: not UTF-8 ({exc.reason}: byte 0x{raw[exc.start]:02x} at "
                                         f"column {exc.start + 1}); save the file as UTF-8", param_hint=hint) from None
            if not line.strip():
                continue
            try:
                obj = strict_json.loads(line)
            except strict_json.JsonError as exc:
                raise click.BadParameter(f"{where}: {exc}", param_hint=hint) from None
            if isinstance(obj, str):
                specs.append(PromptSpec(where, text=obj, where=where))
                continue
            if not isinstance(obj, dict):
                raise click.BadParameter(f"{where}: expected a JSON string or object", param_hint=hint)
            inputs = [k for k in ("prompt", "messages", "token_ids") if k in obj]
            if len(inputs) != 1:
                raise click.BadParameter(f"{where}: needs exactly one of 'prompt', 'messages', 'token_ids'",
                                         param_hint=hint)
            unknown = sorted(set(obj) - OVERRIDES - {"id", "prompt", "messages", "token_ids"})
            if unknown:
                raise click.BadParameter(f"{where}: unknown field '{unknown[0]}'", param_hint=hint)
            label = request_id(obj, where, hint)
            overrides = {k: obj[k] for k in OVERRIDES if k in obj}
            if "prompt" in obj:
                if not isinstance(obj["prompt"], str):
                    raise click.BadParameter(f"{where}: 'prompt' must be a string", param_hint=hint)
                specs.append(PromptSpec(label, text=obj["prompt"], overrides=overrides, where=where))
            elif "messages" in obj:
                check_messages(obj["messages"], where, hint)
                specs.append(PromptSpec(label, messages=obj["messages"], overrides=overrides, where=where))
            else:
                specs.append(PromptSpec(label, token_ids=obj["token_ids"], overrides=overrides, where=where))
    return specs
