"""Teacher-forced scores of a model on held-out rows: answer loss and perplexity (SFT rows), and
on preference pairs the implicit DPO reward against the base and a reward model's accuracy."""

from __future__ import annotations

import math
from typing import Any, Sequence


def answer_loss(model: Any, rows: Any, batch_size: int = 8, pad_token_id: int = 0) -> dict[str, float]:
    """Mean cross-entropy over answer tokens (labels != -100) of tokenized rows, and its exp.

    `rows` has `input_ids` and `labels` columns (rayft's prepared eval set), so the loss is over the
    same tokens training optimised: the answer, not the prompt.
    """
    import torch

    total, count = 0.0, 0
    row_means: list[float] = []  # per row: its mean token loss, weighted by its answer tokens below
    row_tokens: list[int] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        ids, labels = chunk["input_ids"], chunk["labels"]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        target = torch.full((len(ids), width), -100, dtype=torch.long)
        for i, (x, y) in enumerate(zip(ids, labels)):
            input_ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
            target[i, :len(y)] = torch.tensor(y)
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        shift_logits, shift_target = logits[:, :-1], target[:, 1:].to(logits.device)
        loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]),
                                                 shift_target.reshape(-1), ignore_index=-100, reduction="none")
        per_token = loss.view(shift_target.shape)
        tokens = (shift_target != -100).sum(dim=1)
        for row_sum, row_count in zip(per_token.sum(dim=1).tolist(), tokens.tolist()):
            row_means.append(row_sum / row_count if row_count else 0.0)
            row_tokens.append(int(row_count))
        total += float(per_token.sum())
        count += int(tokens.sum())
    if count == 0:
        return {"loss": float("nan"), "perplexity": float("nan"), "answer_tokens": 0, "n": len(row_means)}
    mean = total / count
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "answer_tokens": count, "n": len(row_means),
            "loss_interval": _interval(row_means, row_tokens)}


def completion_logprobs(model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str],
                        batch_size: int = 8) -> list[float]:
    """Sum of log p(completion tokens | prompt) per pair, the quantity DPO's implicit reward uses."""
    import torch

    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        ps, cs = prompts[start:start + batch_size], completions[start:start + batch_size]
        encoded = [(tokenizer(p, add_special_tokens=False)["input_ids"],
                    tokenizer(c, add_special_tokens=False)["input_ids"]) for p, c in zip(ps, cs)]
        width = max(len(p) + len(c) for p, c in encoded)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        target = torch.full_like(input_ids, -100)
        for i, (p, c) in enumerate(encoded):
            seq = p + c
            input_ids[i, :len(seq)] = torch.tensor(seq)
            mask[i, :len(seq)] = 1
            target[i, len(p):len(seq)] = torch.tensor(c)
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tgt = target[:, 1:].to(logp.device)
        picked = logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (tgt != -100)
        out.extend(picked.sum(-1).tolist())
    return out


def implicit_dpo_rewards(beta: float, policy_chosen: Sequence[float], policy_rejected: Sequence[float],
                         ref_chosen: Sequence[float], ref_rejected: Sequence[float]) -> dict[str, Any]:
    """DPO's implicit reward r = beta * (log p_policy - log p_ref) on chosen and rejected answers:
    accuracy (share of pairs with r_chosen > r_rejected) and the mean margin r_chosen - r_rejected."""
    chosen = [beta * (p - r) for p, r in zip(policy_chosen, ref_chosen)]
    rejected = [beta * (p - r) for p, r in zip(policy_rejected, ref_rejected)]
    margins = [c - r for c, r in zip(chosen, rejected)]
    n = len(margins)
    if n == 0:
        return {"accuracy": float("nan"), "margin": float("nan"), "chosen": float("nan"), "rejected": float("nan"), "n": 0}
    return {"accuracy": sum(m > 0 for m in margins) / n, "margin": sum(margins) / n,
            "chosen": sum(chosen) / n, "rejected": sum(rejected) / n, "n": n,
            "accuracy_interval": _interval([float(m > 0) for m in margins]), "margin_interval": _interval(margins)}


def pairwise_accuracy(chosen_scores: Sequence[float], rejected_scores: Sequence[float]) -> dict[str, Any]:
    """Share of pairs a reward model scores chosen above rejected, and the mean score margin."""
    margins = [c - r for c, r in zip(chosen_scores, rejected_scores)]
    n = len(margins)
    if n == 0:
        return {"accuracy": float("nan"), "margin": float("nan"), "n": 0}
    return {"accuracy": sum(m > 0 for m in margins) / n, "margin": sum(margins) / n, "n": n,
            "accuracy_interval": _interval([float(m > 0) for m in margins]), "margin_interval": _interval(margins)}


def _interval(values: Sequence[float], weights: Sequence[float] | None = None) -> list[float | None]:
    """[low, high] of the 95% bootstrap interval of the (weighted) mean."""
    from rayft.metrics.text import bootstrap_interval

    found = bootstrap_interval(list(values), list(weights) if weights is not None else None)
    return [found["low"], found["high"]]
