"""`eval.arena`: many models answer the same prompts, a judge decides each pair, Bradley-Terry
ratings on the Elo scale (docs/evaluation.md)."""

from __future__ import annotations

from typing import Union

from pydantic import Field, model_validator

from rayft.schema.base import Strict


class EndpointModel(Strict):
    endpoint: str = Field(description="Base URL of an OpenAI-compatible API, e.g. `http://127.0.0.1:8000/v1`.")
    model: str = Field(description="The `model` of each request (a served adapter id, or the endpoint's model).")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key (none: no key).")


class ArenaJudge(Strict):
    reward: str | None = Field(None, description="A reward stage's folder (or its adapter/model): the answer it "
                               "scores higher wins.")
    function: str | None = Field(None, description="`module:function(question, first, second)` returning "
                                 "\"first\", \"second\" or \"tie\" (or a number: > 0 first, < 0 second, 0 tie).")
    endpoint: str | None = Field(None, description="A judge model behind an OpenAI-compatible API (base URL); its "
                                 "prompt is MT-bench's pairwise prompt (docs/evaluation.md).")
    model: str | None = Field(None, description="With `endpoint`: the judge's model name.")
    api_key_env: str | None = Field(None, description="With `endpoint`: environment variable holding the API key.")
    tie_margin: float = Field(0.0, ge=0, description="With `reward`: a score difference at most this is a tie.")

    @model_validator(mode="after")
    def _one_judge(self) -> "ArenaJudge":
        chosen = [k for k in ("reward", "function", "endpoint") if getattr(self, k)]
        if len(chosen) != 1:
            raise ValueError("set exactly one of reward, function, endpoint")
        if self.endpoint and not self.model:
            raise ValueError("endpoint needs model (the judge's model name)")
        return self


class ArenaConfig(Strict):
    models: dict[str, Union[str, EndpointModel]] = Field(
        description="label -> model: `base` (the config's model.name), a run's stage folder (runs/x/sft), an "
        "adapter folder, a merged / full model folder, or `{endpoint, model}` for an OpenAI-compatible API.")
    judge: ArenaJudge = Field(description="Who decides each pair; every pair is judged in both orders and a "
                              "disagreement counts as a tie.")
    prompts: str | None = Field(None, description="A prompt file (.jsonl with `prompt`, `instruction` or `question`; "
                                ".txt one per line); default: the held-out rows of the first stage.")
    num_prompts: int = Field(50, ge=1, description="Prompts answered by every model.")
    chat_template: bool = Field(True, description="Put a prompt file's prompts through the base model's chat "
                                "template (held-out rows are already templated as in training).")
    anchor: str = Field("base", description="The model rated 1000 (default: base, else the first model).")
    bootstrap: int = Field(200, ge=0, description="Bootstrap resamples of the judged pairs for the 95% intervals.")
    seed: int = Field(0, description="Seed of the bootstrap.")

    @model_validator(mode="after")
    def _enough_models(self) -> "ArenaConfig":
        if len(self.models) < 2:
            raise ValueError("models: an arena needs at least two models")
        return self
