"""Row formats: detect them from columns and check each row, naming file:line on a bad one.

Every format is normalized into `messages`-like *turns* so that one templating step serves all:
a row becomes `{"system": str|None, "turns": [(user_text, assistant_text), ...]}` plus the
original fields (templates such as Alpaca use `instruction` / `input` directly).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable

from rayft.data.readers import Row
from rayft.core.errors import DataError

@dataclass(frozen=True)
class RowFormat:
    """One row format: rayft's names of its required and optional columns (`data.columns` maps them
    to a dataset's own names) and its normalizer, which turns a row that has the required columns
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


def normalize(data: dict[str, Any], fmt: str, origin: str) -> dict[str, Any]:
    """Check a row of format `fmt` and add its `turns` / `system`; raise DataError naming `origin`."""
    spec = FORMATS[fmt]
    for column in spec.columns:
        if column not in data or data[column] is None:
            raise DataError(f"{origin}: missing field '{column}' required by format '{fmt}' "
                            f"(row has: {', '.join(sorted(data)) or 'nothing'}){_fitting_format(data)}",
                            reason="missing field")
    if spec.text_columns:
        for column in spec.columns + spec.optional:
            if data.get(column) is not None and not isinstance(data[column], str):
                raise DataError(f"{origin}: field '{column}' must be text, got {type(data[column]).__name__}",
                                reason="wrong type")
    return spec.to_example(data, origin)


def _fitting_format(data: dict[str, Any]) -> str:
    """A hint naming the format whose columns the row does have (the usual cause of a missing field)."""
    keys = {k for k, v in data.items() if v is not None}
    fits = [f.name for f in FORMATS.values() if set(f.columns) <= keys]
    return f"; these columns fit format '{fits[0]}': set data.format: {fits[0]} (or auto)" if fits else ""


def _one_turn(prompt_of: Callable[[dict[str, Any]], str], answer: str):
    """The normalizer of a single-turn format: the prompt built from the row, the answer column."""
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


# ShareGPT speakers (`from`) as chat roles. Tool / function results are context for the next
# assistant reply, so they join the user side of the turn (docs/data.md says why).
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                  "system": "system", "tool": "tool", "function": "tool", "function_call": "assistant",
                  "observation": "tool", "ipython": "tool"}


def _sharegpt(data: dict[str, Any], origin: str) -> dict[str, Any]:
    """`conversations: [{from: human|gpt|system|tool, value}]` (also `role` / `content` keys) onto
    the chat format: system first, user/assistant turns, consecutive user-side messages joined."""
    conversation = data["conversations"]
    if not isinstance(conversation, list) or not conversation:
        raise DataError(f"{origin}: 'conversations' must be a non-empty list of {{from, value}}", reason="bad messages")
    messages: list[dict[str, str]] = []
    for i, msg in enumerate(conversation):
        speaker = msg.get("from", msg.get("role")) if isinstance(msg, dict) else None
        text = msg.get("value", msg.get("content")) if isinstance(msg, dict) else None
        if not isinstance(speaker, str) or not isinstance(text, str):
            raise DataError(f"{origin}: conversations[{i}] must be {{from, value}} (or {{role, content}}) with text",
                            reason="bad messages")
        role = SHAREGPT_ROLES.get(speaker.lower())
        if role is None:
            raise DataError(f"{origin}: conversations[{i}] has an unknown speaker '{speaker}' (known: "
                            f"{', '.join(SHAREGPT_ROLES)})", reason="bad messages")
        if role == "tool":
            role, text = "user", f"[{speaker} result]\n{text}"
        if role == "system" and messages:
            raise DataError(f"{origin}: conversations[{i}]: a system message only comes first", reason="bad messages")
        if messages and messages[-1]["role"] == role and role != "system":
            messages[-1]["content"] += "\n\n" + text
        else:
            messages.append({"role": role, "content": text})
    system, turns = _chat_turns(messages, origin)
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
    messages ending with the user's, `chosen` / `rejected` one assistant message each). When
    `chosen` and `rejected` are whole dialogues (UltraFeedback-style: the user turn repeated in
    both), the dialogues themselves give the prompt, as for implicit-prompt pairs."""
    if _whole_dialogues(data["chosen"], data["rejected"]):
        return _implicit_preference(data, origin)
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


def _whole_dialogues(chosen: Any, rejected: Any) -> bool:
    return isinstance(chosen, list) and isinstance(rejected, list) and (len(chosen) > 1 or len(rejected) > 1)


# A speaker line of a plain-text transcript: "\n\nHuman: ..." / "\n\nAssistant: ..." (Anthropic HH),
# "User: ..." / "Assistant: ...", each at the start of a line.
SPEAKER = re.compile(r"(?:^|\n)[ \t]*(Human|User|Assistant)[ \t]*:[ \t]?")
USER_SPEAKERS = ("Human", "User")


def _implicit_preference(data: dict[str, Any], origin: str) -> dict[str, Any]:
    """`chosen` and `rejected` only: two transcripts (text or message lists) that share every turn
    but the last. The shared part is the prompt, parsed into turns so the stage's template renders
    it like any other prompt; the two last assistant turns are the answers."""
    chosen, rejected = data["chosen"], data["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        system, history, user, answers = _split_transcripts(chosen, rejected, origin)
    elif isinstance(chosen, list) and isinstance(rejected, list):
        system, history, user, answers = _split_dialogues(chosen, rejected, origin)
    else:
        raise DataError(f"{origin}: 'chosen' and 'rejected' must both be text or both be lists of "
                        "{role, content} messages", reason="wrong type")
    for side, answer in zip(("chosen", "rejected"), answers):
        if not answer.strip():
            raise DataError(f"{origin}: empty {side} answer after the shared prompt", reason="empty answer")
    if answers[0] == answers[1]:
        raise DataError(f"{origin}: 'chosen' and 'rejected' are the same answer", reason="identical pair")
    out = {k: v for k, v in data.items() if k not in ("chosen", "rejected")}
    out.update(system=data.get("system") or system, turns=[*history, (user, answers[0])], rejected=answers[1],
               prompt=user, chosen=answers[0])
    return out


def _split_transcripts(chosen: str, rejected: str, origin: str
                       ) -> tuple[str | None, list[tuple[str, str]], str, tuple[str, str]]:
    common = os.path.commonprefix([chosen, rejected])
    speakers = list(SPEAKER.finditer(common))
    last = next((m for m in reversed(speakers) if m.group(1) == "Assistant"), None)
    if last is not None:
        if any(SPEAKER.search(side, last.end()) for side in (chosen, rejected)):
            raise DataError(f"{origin}: 'chosen' and 'rejected' differ before their last assistant turn, so "
                            "they are not two answers to one prompt", reason="diverging transcripts")
        system, turns = _transcript_turns(common[:last.start()], origin)
        if not turns or turns[-1][1] is not None:
            raise DataError(f"{origin}: the shared transcript does not end with a user turn before the "
                            "answers", reason="no shared prompt")
        history = [(u, a) for u, a in turns[:-1]]
        return system, history, turns[-1][0], (chosen[last.end():].strip(), rejected[last.end():].strip())
    # No speaker lines: the prompt is the shared text up to its last line break (else its last space).
    cut = max(common.rfind("\n"), 0) or max(common.rfind(" "), 0)
    if not common[:cut].strip():
        raise DataError(f"{origin}: 'chosen' and 'rejected' share no prompt (they differ from their first "
                        "words); give the prompt in a 'prompt' column", reason="no shared prompt")
    return None, [], common[:cut].strip(), (chosen[cut:].strip(), rejected[cut:].strip())


def _transcript_turns(text: str, origin: str) -> tuple[str | None, list[tuple[str, Any]]]:
    """"Human: a / Assistant: b / Human: c" -> system (text before the first speaker), [(a, b), (c, None)].
    Consecutive lines of one speaker are joined."""
    marks = list(SPEAKER.finditer(text))
    system = text[:marks[0].start()].strip() if marks else text.strip()
    said: list[list[str]] = []  # [speaker role, text]
    for i, mark in enumerate(marks):
        role = "user" if mark.group(1) in USER_SPEAKERS else "assistant"
        body = text[mark.end():marks[i + 1].start() if i + 1 < len(marks) else len(text)].strip()
        if said and said[-1][0] == role:
            said[-1][1] += "\n\n" + body
        else:
            said.append([role, body])
    if said and said[0][0] == "assistant":
        raise DataError(f"{origin}: the transcript starts with the assistant, not the user", reason="no shared prompt")
    turns = [(said[i][1], said[i + 1][1] if i + 1 < len(said) else None) for i in range(0, len(said), 2)]
    return system or None, turns


def _split_dialogues(chosen: list, rejected: list, origin: str
                     ) -> tuple[str | None, list[tuple[str, str]], str, tuple[str, str]]:
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    tails = chosen[shared:], rejected[shared:]
    if not all(len(t) == 1 and isinstance(t[0], dict) and t[0].get("role") == "assistant" for t in tails):
        raise DataError(f"{origin}: 'chosen' and 'rejected' must share every message but a last assistant one "
                        f"(they share {shared} of {len(chosen)} / {len(rejected)})", reason="diverging transcripts")
    answers = tuple(_reply(t, side, origin) for t, side in zip(tails, ("chosen", "rejected")))
    system, turns = _chat_turns([*chosen[:shared], {"role": "assistant", "content": answers[0]}], origin)
    return system, turns[:-1], turns[-1][0], answers  # type: ignore[return-value]


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
register_format(RowFormat("preference_implicit", ("chosen", "rejected"), _implicit_preference, ("system",),
                          text_columns=False))
register_format(RowFormat("instruction", ("instruction", "output"), _one_turn(_instruction_prompt, "output"),
                          ("input", "system")))
register_format(RowFormat("qa", ("question", "answer"), _one_turn(lambda d: d["question"], "answer"), ("system",)))
register_format(RowFormat("chat", ("messages",), _chat, text_columns=False))
register_format(RowFormat("sharegpt", ("conversations",), _sharegpt, text_columns=False))
register_format(RowFormat("prompt_completion", ("prompt", "completion"), _one_turn(lambda d: d["prompt"], "completion"),
                          ("system",)))
register_format(RowFormat("text", ("text",), _text))
