"""The arena's judges: a reward model, a `module:function`, or a judge model behind an OpenAI-compatible
API. Each pair is judged in both orders and a disagreement is a tie (as MT-bench does); a reward
model scores each answer alone, so its two orders agree by construction."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

from rayft.core.errors import UserError

# MT-bench's pairwise judge prompt (FastChat, fastchat/llm_judge/data/judge_prompts.jsonl, "pair-v2").
JUDGE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. You should choose the assistant that follows the user's instructions "
    "and answers the user's question better. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by "
    "comparing the two responses and provide a short explanation. Avoid any position biases and ensure that the "
    "order in which the responses were presented does not influence your decision. Do not allow the length of "
    "the responses to influence your evaluation. Do not favor certain names of the assistants. Be as objective "
    "as possible. After providing your explanation, output your final verdict by strictly following this "
    "format: \"[[A]]\" if assistant A is better, \"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie.")
JUDGE_USER = ("[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{first}\n"
              "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{second}\n"
              "[The End of Assistant B's Answer]")
VERDICT = re.compile(r"\[\[([ABC])\]\]")


class Judge:
    """`verdicts(items)`: for each (question, prompt, answer_a, answer_b), "a", "b" or "tie"."""

    name = "judge"
    unparsed = 0  # verdicts a judge model gave in no readable form (counted as ties)

    def order(self, question: str, prompt: str, first: str, second: str) -> str:  # "first" | "second" | "tie"
        raise NotImplementedError

    def verdicts(self, items: list[tuple[str, str, str, str]]) -> list[str]:
        out = []
        for question, prompt, a, b in items:
            one = {"first": "a", "second": "b"}.get(self.order(question, prompt, a, b), "tie")
            two = {"first": "b", "second": "a"}.get(self.order(question, prompt, b, a), "tie")
            out.append(one if one == two else "tie")
        return out


class FunctionJudge(Judge):
    def __init__(self, spec: str):
        from rayft.rl.reward_specs import resolve_reward

        self.name = spec
        self.fn: Callable[..., Any] = resolve_reward(spec, field="eval.arena.judge.function")

    def order(self, question: str, prompt: str, first: str, second: str) -> str:
        found = self.fn(question, first, second)
        if isinstance(found, (int, float)) and not isinstance(found, bool):
            return "first" if found > 0 else "second" if found < 0 else "tie"
        if found in ("first", "second", "tie"):
            return found
        raise UserError(f"eval.arena.judge.function: {self.name} returned {found!r}; expected \"first\", "
                        f"\"second\", \"tie\" or a number")


class RewardJudge(Judge):
    """The answer the reward model scores higher wins; within `tie_margin`, a tie. Scores are computed
    once per answer (prompt + answer, as the reward stage trained)."""

    def __init__(self, folder: str, tie_margin: float, batch_size: int):
        from rayft.models.reward_model import RewardScorer

        if not Path(folder).exists():
            raise UserError(f"eval.arena.judge.reward: {folder}: no such folder")
        self.name = f"reward model {folder}"
        self.scorer = RewardScorer(folder, batch_size=batch_size)
        self.margin = tie_margin
        self.cache: dict[tuple[str, str], float] = {}

    def prepare(self, prompts: list[str], answers: list[str]) -> None:
        todo = [(p, a) for p, a in zip(prompts, answers) if (p, a) not in self.cache]
        if todo:
            scores = self.scorer.score_pairs([p for p, _ in todo], [a for _, a in todo])
            self.cache.update(zip(todo, scores))

    def order(self, question: str, prompt: str, first: str, second: str) -> str:
        self.prepare([prompt, prompt], [first, second])
        diff = self.cache[prompt, first] - self.cache[prompt, second]
        return "tie" if abs(diff) <= self.margin else "first" if diff > 0 else "second"


class ModelJudge(Judge):
    """A judge model behind an OpenAI-compatible API, with MT-bench's pairwise prompt, greedy."""

    def __init__(self, endpoint: str, model: str, api_key_env: str | None):
        from openai import OpenAI

        key = os.environ.get(api_key_env, "") if api_key_env else "none"
        if api_key_env and not key:
            raise UserError(f"eval.arena.judge.api_key_env: {api_key_env} is not set")
        self.name = f"{model} at {endpoint}"
        self.client = OpenAI(base_url=endpoint, api_key=key, max_retries=2, timeout=120)
        self.model = model
        self.unparsed = 0

    def order(self, question: str, prompt: str, first: str, second: str) -> str:
        reply = self.client.chat.completions.create(
            model=self.model, temperature=0, max_tokens=512,
            messages=[{"role": "system", "content": JUDGE_SYSTEM},
                      {"role": "user", "content": JUDGE_USER.format(question=question, first=first, second=second)}])
        found = VERDICT.findall(reply.choices[0].message.content or "")
        if not found:
            self.unparsed += 1
            return "tie"
        return {"A": "first", "B": "second", "C": "tie"}[found[-1]]


def make_judge(cfg: Any, batch_size: int) -> Judge:
    if cfg.reward:
        return RewardJudge(cfg.reward, cfg.tie_margin, batch_size)
    if cfg.function:
        return FunctionJudge(cfg.function)
    return ModelJudge(cfg.endpoint, cfg.model, cfg.api_key_env)
