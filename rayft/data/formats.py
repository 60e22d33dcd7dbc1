"""Row formats: detect them from columns and check each row, naming file:line on a bad one.

Every format is normalised into `messages`-like *turns* so that one templating step serves all:
a row becomes `{"system": str|None, "turns": [(user_text, assistant_text), ...]}` plus the
original fields (templates such as Alpaca use `instruction` / `input` directly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rayft.data.readers import Row
from rayft.errors import DataError

@dataclass(frozen=True)
class RowFormat:
    """One row format: rayft's names of its required and optional columns (`data.columns` maps them
    to a dataset's own names) and its normaliser, which turns a row that has the required columns
    into the row plus `system` and `turns`. `text_columns`: the columns must hold text."""

    name: str
    columns: tuple[str, ...]
    to_example: Callable[[dict[str, Any], str], dict[str, Any]]
    optional: tuple[str, ...] = ()
    text_columns: bool = True


# Registered formats, in detection order (the first whose required columns a row has wins).
FORMATS: dict[str, RowFormat] = {}


def register_format(fmt: RowFormat) -> RowFormat:
    FORMATS[fmt.name] = fmt
    return fmt


def detect_format(rows: list[Row], columns: dict[str, str], sample: int = 100) -> str:
    """The format of the first of the leading `sample` rows whose columns fit one (a broken first
    row must not decide the format of the whole file)."""
    seen = [set(rename_columns(row, columns)) for row in rows[:sample]]
    for keys in seen:
        for fmt in FORMATS.values():
            if set(fmt.columns) <= keys:
                return fmt.name
    raise DataError(
        "data.format: cannot tell the format from the columns "
        f"{sorted(seen[0]) if seen else []}; set data.format (one of {', '.join(FORMATS)}) and, if your "
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
    spec = FORMATS[fmt]
    for column in spec.columns:
        if column not in data or data[column] is None:
            raise DataError(f"{origin}: missing field '{column}' required by format '{fmt}' "
                            f"(row has: {', '.join(sorted(data)) or 'nothing'})", reason="missing field")
    if spec.text_columns:
        for column in spec.columns + spec.optional:
            if data.get(column) is not None and not isinstance(data[column], str):
                raise DataError(f"{origin}: field '{column}' must be text, got {type(data[column]).__name__}",
                                reason="wrong type")
    return spec.to_example(data, origin)


def _one_turn(prompt_of: Callable[[dict[str, Any]], str], answer: str):
    """The normaliser of a single-turn format: the prompt built from the row, the answer column."""
    def to_example(data: dict[str, Any], origin: str) -> dict[str, Any]:
        example = {**data, "system": data.get("system") or None, "turns": [(prompt_of(data), data[answer])]}
        _check_answers(example, origin)
        return example

    return to_example


def _chat(data: dict[str, Any], origin: str) -> dict[str, Any]:
    system, turns = _chat_turns(data["messages"], origin)
    example = {**data, "system": system, "turns": turns}
    _check_answers(example, origin)
    return example


def _text(data: dict[str, Any], origin: str) -> dict[str, Any]:
    if not data["text"].strip():
        raise DataError(f"{origin}: empty 'text'", reason="empty answer")
    return {**data, "system": data.get("system") or None, "turns": []}


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


def _instruction_prompt(data: dict[str, Any]) -> str:
    return data["instruction"] + (f"\n\n{data['input']}" if data.get("input") else "")


register_format(RowFormat("preference", ("prompt", "chosen", "rejected"), _preference, ("system",), text_columns=False))
register_format(RowFormat("instruction", ("instruction", "output"), _one_turn(_instruction_prompt, "output"),
                          ("input", "system")))
register_format(RowFormat("qa", ("question", "answer"), _one_turn(lambda d: d["question"], "answer"), ("system",)))
register_format(RowFormat("chat", ("messages",), _chat, text_columns=False))
register_format(RowFormat("prompt_completion", ("prompt", "completion"), _one_turn(lambda d: d["prompt"], "completion"),
                          ("system",)))
register_format(RowFormat("text", ("text",), _text))
