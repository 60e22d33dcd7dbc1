"""Row formats: detect them from columns and check each row, naming file:line on a bad one.

Every format is normalised into `messages`-like *turns* so that one templating step serves all:
a row becomes `{"system": str|None, "turns": [(user_text, assistant_text), ...]}` plus the
original fields (templates such as Alpaca use `instruction` / `input` directly).
"""

from __future__ import annotations

from typing import Any

from rayft.data.readers import Row
from rayft.errors import DataError

# rayft's column names for each format; `data.columns` maps them to a dataset's own names.
FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "preference": ("prompt", "chosen", "rejected"),
    "instruction": ("instruction", "output"),
    "qa": ("question", "answer"),
    "chat": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
OPTIONAL_COLUMNS = {"instruction": ("input", "system"), "qa": ("system",), "prompt_completion": ("system",),
                    "preference": ("system",)}


def detect_format(rows: list[Row], columns: dict[str, str], sample: int = 100) -> str:
    """The format of the first of the leading `sample` rows whose columns fit one (a broken first
    row must not decide the format of the whole file)."""
    seen = [set(rename_columns(row, columns)) for row in rows[:sample]]
    for keys in seen:
        for name, required in FORMAT_COLUMNS.items():
            if set(required) <= keys:
                return name
    raise DataError(
        "data.format: cannot tell the format from the columns "
        f"{sorted(seen[0]) if seen else []}; set data.format (one of {', '.join(FORMAT_COLUMNS)}) and, if your "
        "columns have other names, data.columns (e.g. {question: q, answer: a})"
    )


def rename_columns(row: Row, columns: dict[str, str]) -> dict[str, Any]:
    """The row's fields under rayft's names (`columns` maps rayft name -> dataset name)."""
    data = dict(row.data)
    for ours, theirs in columns.items():
        if theirs in data:
            data[ours] = data.pop(theirs)
    return data


def normalise(data: dict[str, Any], fmt: str, origin: str) -> dict[str, Any]:
    """Check a row of format `fmt` and add its `turns` / `system`; raise DataError naming `origin`."""
    for column in FORMAT_COLUMNS[fmt]:
        if column not in data or data[column] is None:
            raise DataError(f"{origin}: missing field '{column}' required by format '{fmt}' "
                            f"(row has: {', '.join(sorted(data)) or 'nothing'})", reason="missing field")
    if fmt == "preference":
        return _preference(data, origin)
    for column in FORMAT_COLUMNS[fmt] + OPTIONAL_COLUMNS.get(fmt, ()):
        if fmt != "chat" and data.get(column) is not None and not isinstance(data[column], str):
            raise DataError(f"{origin}: field '{column}' must be text, got {type(data[column]).__name__}",
                            reason="wrong type")
    out = dict(data)
    out["system"] = data.get("system") or None
    if fmt == "instruction":
        prompt = data["instruction"] + (f"\n\n{data['input']}" if data.get("input") else "")
        out["turns"] = [(prompt, data["output"])]
    elif fmt == "qa":
        out["turns"] = [(data["question"], data["answer"])]
    elif fmt == "prompt_completion":
        out["turns"] = [(data["prompt"], data["completion"])]
    elif fmt == "chat":
        out["system"], out["turns"] = _chat_turns(data["messages"], origin)
    else:
        out["turns"] = []
        if not data["text"].strip():
            raise DataError(f"{origin}: empty 'text'", reason="empty answer")
    _check_answers(out, origin)
    return out


def _check_answers(example: dict[str, Any], origin: str) -> None:
    for _, answer in example["turns"]:
        if not answer.strip():
            raise DataError(f"{origin}: empty answer (nothing to learn from)", reason="empty answer")


def _chat_turns(messages: Any, origin: str) -> tuple[str | None, list[tuple[str, str]]]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{origin}: 'messages' must be a non-empty list of {{role, content}}", reason="bad messages")
    system, turns, pending = None, [], None
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            raise DataError(f"{origin}: messages[{i}] must be {{role, content}} with text content",
                            reason="bad messages")
        role = msg.get("role")
        if role == "system" and i == 0:
            system = msg["content"]
        elif role == "user" and pending is None:
            pending = msg["content"]
        elif role == "assistant" and pending is not None:
            turns.append((pending, msg["content"]))
            pending = None
        else:
            raise DataError(f"{origin}: messages[{i}] has role '{role}' out of order "
                            "(expected optional system, then user/assistant pairs)", reason="bad messages")
    if not turns or pending is not None:
        raise DataError(f"{origin}: 'messages' must end with an assistant reply", reason="bad messages")
    return system, turns


def _preference(data: dict[str, Any], origin: str) -> dict[str, Any]:
    """Plain (`prompt`, `chosen`, `rejected` strings) or conversational (`prompt` a list of
    messages ending with the user's, `chosen` / `rejected` one assistant message each)."""
    out = dict(data)
    prompt, chosen, rejected = data["prompt"], _reply(data["chosen"], "chosen", origin), \
        _reply(data["rejected"], "rejected", origin)
    if isinstance(prompt, str):
        out["system"], history, user = data.get("system") or None, [], prompt
    elif isinstance(prompt, list) and prompt:
        dialogue = [*prompt, {"role": "assistant", "content": chosen}]
        out["system"], turns = _chat_turns(dialogue, origin)
        history, user = turns[:-1], turns[-1][0]
    else:
        raise DataError(f"{origin}: 'prompt' must be text or a non-empty list of messages", reason="wrong type")
    out["turns"] = [*history, (user, chosen)]
    out["rejected"] = rejected
    return out


def _reply(value: Any, field: str, origin: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) \
            and value[0].get("role") == "assistant" and isinstance(value[0].get("content"), str):
        return value[0]["content"]
    raise DataError(f"{origin}: '{field}' must be text or a one-message list [{{role: assistant, content}}]",
                    reason="wrong type")
