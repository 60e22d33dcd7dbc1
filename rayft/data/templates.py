"""Prompt templates. A rendered example is a list of `(text, trainable)` segments, so the prompt
and the answer stay separable and the loss can be put on the answer only.

Templates: `alpaca` (with and without input), `qa` ("### Question: / ### Answer:"), `chat` (the
tokenizer's own chat template), `chatml` (ChatML whatever the tokenizer's template; its tokens are
added to the run's tokenizer by rayft.config.pipeline + rayft.models.tokens), `none` (prompt and
answer as they are), or any string with `{field}` placeholders for the row's fields (the answer
follows the rendered string).
"""

from __future__ import annotations

import string
from typing import Any

from rayft.core.errors import DataError

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
QA = "### Question:\n{question}\n\n### Answer:\n"
NAMED = ("alpaca", "qa", "chat", "chatml", "none")
AUTO = {"instruction": "alpaca", "qa": "qa", "chat": "chat", "sharegpt": "chat", "prompt_completion": "none", "text": "none",
        "preference": "chat", "preference_implicit": "chat"}

Segments = list[tuple[str, bool]]


def resolve_template(name: str, fmt: str, tokenizer: Any) -> str:
    """The concrete template for `data.template` (`auto` picks one from the format)."""
    template = AUTO[fmt] if name == "auto" else name
    if name == "auto" and fmt in ("preference", "preference_implicit") and not getattr(tokenizer, "chat_template", None):
        template = "none"
    if template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise DataError("data.template: 'chat' needs a tokenizer with a chat template; this "
                        "model's tokenizer has none (use alpaca, qa, none or a template string)")
    if template not in NAMED:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        except ValueError as exc:
            raise DataError(f"data.template: not a valid template string ({exc})") from None
        if not fields:
            raise DataError(f"data.template: '{name}' is neither a known template ({', '.join(NAMED)}) "
                            "nor a string with {field} placeholders")
    return template


def render(example: dict[str, Any], template: str, tokenizer: Any) -> Segments:
    """Segments for one normalized example (see rayft.data.formats)."""
    if not example["turns"]:  # raw text: all of it is trained on
        return [(example["text"], True)]
    if template == "chat":
        return _render_chat(example, tokenizer)
    if template == "chatml":  # its tokens are in the tokenizer (rayft.models.tokens): one id each
        from rayft.models.tokens import CHATML_TEMPLATE

        return _render_chat(example, tokenizer, CHATML_TEMPLATE)
    segments: Segments = []
    if example.get("system") and template in ("alpaca", "qa"):
        segments.append((example["system"] + "\n\n", False))
    for i, (user, answer) in enumerate(example["turns"]):
        segments.append((_prompt(example, template, user, first=i == 0), False))
        segments.append((answer, True))
    return segments


def _prompt(example: dict[str, Any], template: str, user: str, first: bool) -> str:
    if template == "alpaca":
        if first and "instruction" in example:
            if example.get("input"):
                return ALPACA_WITH_INPUT.format(instruction=example["instruction"], input=example["input"])
            return ALPACA_NO_INPUT.format(instruction=example["instruction"])
        return ALPACA_NO_INPUT.format(instruction=user)
    if template == "qa":
        # Some datasets (e.g. the Lamini docs set) already carry the template in the question.
        if user.lstrip().startswith("### Question:") and user.rstrip().endswith("### Answer:"):
            return user.rstrip() + "\n"
        return QA.format(question=user)
    if template == "none":
        return user
    try:
        return template.format_map({k: v for k, v in example.items() if isinstance(v, str)})
    except KeyError as exc:
        raise DataError(f"{example.get('_origin', 'row')}: template field {exc} is not in the row") from None


def _render_chat(example: dict[str, Any], tokenizer: Any, chat_template: str | None = None) -> Segments:
    """Each turn's text is the difference between the chat template rendered up to it and up to
    the turn before, so the segments always concatenate to the template's own full rendering."""
    messages = [{"role": "system", "content": example["system"]}] if example.get("system") else []
    segments: Segments = []
    rendered = ""
    for user, answer in example["turns"]:
        messages.append({"role": "user", "content": user})
        with_prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                    chat_template=chat_template)
        messages.append({"role": "assistant", "content": answer})
        full = tokenizer.apply_chat_template(messages, tokenize=False, chat_template=chat_template)
        if not (with_prompt.startswith(rendered) and full.startswith(with_prompt)):
            raise DataError("data.template: this tokenizer's chat template is not prefix-stable, so "
                            "prompt and answer cannot be separated; use another template")
        segments.append((with_prompt[len(rendered):], False))
        segments.append((full[len(with_prompt):], True))
        rendered = full
    return segments


def last_turn_only(segments: Segments) -> Segments:
    """The same segments with only the last answer trainable (`data.train_on: last_turn`)."""
    last = max(i for i, (_, trainable) in enumerate(segments) if trainable)
    return [(text, trainable and i == last) for i, (text, trainable) in enumerate(segments)]


def prompt_for_generation(segments: Segments) -> str:
    """Everything before the last answer: what the model sees when asked to answer."""
    last = max(i for i, (_, trainable) in enumerate(segments) if trainable)
    return "".join(text for text, _ in segments[:last])
