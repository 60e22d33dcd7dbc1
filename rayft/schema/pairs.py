"""`pairs:` of a preference stage: build on-policy pairs inside the pipeline, from the policy the
stage starts from, before it trains (what `rayft data preference --samples N --score S` does by hand)."""

from __future__ import annotations

from pydantic import Field

from rayft.schema.base import Strict


class OnPolicyPairs(Strict):
    samples: int = Field(4, ge=2, description="Answers sampled per prompt; the best and the worst by `score` become "
                         "chosen and rejected.")
    score: str = Field("rouge_l", description="What ranks the answers: `rouge_l` (similarity to the row's reference "
                       "answer), a reward function `module:function`, or `stage:<name>`, an earlier reward stage.")
    greedy: bool = Field(True, description="The policy's greedy answer (what it says when served) is one more "
                         "candidate, so the chosen answer is never worse than the policy's default one.")
    temperature: float = Field(0.8, gt=0, description="Sampling temperature.")
    min_gap: float = Field(0.0, ge=0, description="Skip prompts whose best and worst score differ by this much or "
                           "less (they teach little); about the median gap is a good start.")
    max_new_tokens: int | None = Field(None, ge=1, description="Answer length limit (default: eval.max_new_tokens).")
    limit: int | None = Field(None, ge=1, description="Use only the first N training rows of the stage's data.")
    seed: int = Field(0, description="Sampling seed.")
