"""rayft's PPO loop (TRL 1.16 has none): explicit and readable, one Ray Train worker each.

Per step, every worker: (1) samples completions for its shard of prompts with the policy (the
LoRA adapter on); (2) scores them with the reward functions; (3) computes old log-probs and
values, and reference log-probs with the adapter disabled (no second copy of the weights);
(4) builds KL-shaped per-token rewards, GAE advantages (whitened) and returns; (5) runs
`ppo_epochs` passes of minibatches with clipped policy and value losses, all-reducing gradients
across workers before each optimizer step, so every replica stays identical.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from rayft.rl import ppo_core as core


REF_ADAPTER = "ref"


class ValueHead(torch.nn.Module):
    """The critic: a scalar per position on the policy's last hidden state."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dropout = torch.nn.Dropout(0.0)
        self.summary = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.summary.weight)
        torch.nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(self.dropout(hidden.float())).squeeze(-1)


@dataclass
class Rollout:
    input_ids: torch.Tensor  # [B, P + C] left-padded prompt, right-padded completion
    attention_mask: torch.Tensor
    prompt_len: int
    mask: torch.Tensor  # [B, C] real completion tokens
    completions: list[str]
    scores: torch.Tensor  # [B]


class PPOTrainer:
    def __init__(self, policy, tokenizer, cfg, lr: float, reward_fns: list[Callable], prompts: list[dict[str, Any]],
                 batch_size: int, seed: int, max_grad_norm: float, log: Callable[[dict[str, Any]], None],
                 ref_adapter: str | None = None, ref_model: Any = None, sampler: Any = None):
        self.policy, self.tokenizer, self.cfg = policy, tokenizer, cfg
        # generation.engine vllm: completions come from vLLM engine actors (rayft.generation.rollouts.EngineSampler)
        self.sampler = sampler
        self.ref_model = ref_model.eval().requires_grad_(False) if ref_model is not None else None
        # The reference is the starting policy. From a fresh adapter that is the base: the adapter
        # disabled. From an earlier stage's adapter (SFT -> PPO) it is that adapter, kept frozen as
        # a second, small LoRA adapter: either way there is one copy of the base weights.
        self.ref_adapter = REF_ADAPTER if ref_adapter and ref_model is None else None
        if self.ref_adapter:
            policy.load_adapter(ref_adapter, adapter_name=REF_ADAPTER, is_trainable=False)
            policy.set_adapter("default")
        self.value_head = ValueHead(policy.config.hidden_size)
        params = [p for p in policy.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=lr)
        self.reward_fns, self.prompts, self.batch_size = reward_fns, prompts, batch_size
        self.rng = random.Random(seed)
        self.max_grad_norm, self.log = max_grad_norm, log
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.global_step = 0
        self.kl_coef = float(cfg.kl_coef)  # adapted after each step when cfg.kl_target is set
        # Dropout off throughout: old and new log-probs must come from the same function, so the
        # first PPO epoch starts at ratio 1 (gradients still flow in eval mode).
        self.policy.eval()
        self._broadcast_params()

    def _broadcast_params(self) -> None:
        """Start every replica from rank 0's weights (LoRA A is initialised randomly per process)."""
        if self.world > 1:
            for p in self.params:
                dist.broadcast(p.data, src=0)

    # -- rollout -------------------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self, rows: list[dict[str, Any]]) -> Rollout:
        tok = self.tokenizer
        tok.padding_side = "left"
        batch = tok([r["prompt"] for r in rows], return_tensors="pt", padding=True, add_special_tokens=False)
        prompt_len = batch["input_ids"].shape[1]
        if self.sampler is not None:
            completion = self._sample_on_engines(batch)
        else:
            out = self.policy.generate(**batch, do_sample=True, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                                       max_new_tokens=self.cfg.max_new_tokens, pad_token_id=tok.pad_token_id)
            completion = out[:, prompt_len:]
        ended = (completion == tok.eos_token_id).int().cumsum(1)
        mask = ((ended == 0) | ((ended == 1) & (completion == tok.eos_token_id))).float()  # up to and incl. EOS
        completion = torch.where(mask.bool(), completion, torch.full_like(completion, tok.pad_token_id))
        texts = tok.batch_decode([c[m.bool()] for c, m in zip(completion, mask)], skip_special_tokens=True)
        scores = self._score([r["prompt"] for r in rows], texts, rows)
        input_ids = torch.cat([batch["input_ids"], completion], 1)
        attention_mask = torch.cat([batch["attention_mask"], mask.long()], 1)
        return Rollout(input_ids, attention_mask, prompt_len, mask, texts, scores)

    def _sample_on_engines(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Completions [B, C] from the vLLM engines, sampled from this step's policy (its LoRA
        adapter saved by rank 0), right-padded as HF generate's would be."""
        from rayft.generation.hf import eos_ids

        rank = dist.get_rank() if self.world > 1 else 0
        folder = self.sampler.policy_folder(
            self.global_step, lambda path: self.policy.save_pretrained(path, selected_adapters=["default"]),
            main=rank == 0, barrier=dist.barrier if self.world > 1 else (lambda: None))
        prompts = [ids[m.bool()].tolist() for ids, m in zip(batch["input_ids"], batch["attention_mask"])]
        answers = self.sampler.sample(prompts, folder, self.global_step, eos_ids(self.policy, self.tokenizer))
        width = max(1, max(len(a["ids"]) for a in answers))
        completion = torch.full((len(answers), width), self.tokenizer.pad_token_id, dtype=torch.long)
        for row, answer in enumerate(answers):
            completion[row, :len(answer["ids"])] = torch.tensor(answer["ids"], dtype=torch.long)
        return completion

    def _score(self, prompts: list[str], completions: list[str], rows: list[dict[str, Any]]) -> torch.Tensor:
        extra = {k: [r.get(k) for r in rows] for k in rows[0] if k != "prompt"}
        total = torch.zeros(len(prompts))
        for fn in self.reward_fns:
            total += torch.tensor([float(v) for v in fn(prompts, completions, **extra)])
        return total

    def _forward(self, rollout: Rollout, disable_adapter: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits over the completion positions, the hidden states there (for the value head), and
        the completion tokens. Positions come from the attention mask (prompts are left-padded)."""
        position_ids = (rollout.attention_mask.cumsum(1) - 1).clamp(min=0)
        kwargs = dict(input_ids=rollout.input_ids, attention_mask=rollout.attention_mask,
                      position_ids=position_ids, output_hidden_states=True)
        if disable_adapter and self.ref_model is not None:
            out = self.ref_model(**kwargs)
        elif disable_adapter and self.ref_adapter:
            self.policy.set_adapter(self.ref_adapter)
            try:
                out = self.policy(**kwargs)
            finally:
                self.policy.set_adapter("default")  # also makes only `default` trainable again
        elif disable_adapter:
            with self.policy.disable_adapter():
                out = self.policy(**kwargs)
        else:
            out = self.policy(**kwargs)
        p = rollout.prompt_len
        logits = out.logits[:, p - 1:-1]
        tokens = rollout.input_ids[:, p:]
        return logits, out.hidden_states[-1][:, p - 1:-1], tokens

    # -- one PPO step --------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        t0 = time.time()
        rows = [self.prompts[self.rng.randrange(len(self.prompts))] for _ in range(self.batch_size)]
        rollout = self.rollout(rows)
        gen_s = time.time() - t0
        t1 = time.time()
        mask = rollout.mask
        with torch.no_grad():
            logits, hidden, tokens = self._forward(rollout)
            old_logp = core.token_logprobs(logits, tokens)
            old_values = self.value_head(hidden) * mask
            ref_logits, _, _ = self._forward(rollout, disable_adapter=True)
            ref_logp = core.token_logprobs(ref_logits, tokens)
            rewards, kl = core.kl_shaped_rewards(rollout.scores, old_logp, ref_logp, mask, self.kl_coef)
            advantages, returns = core.gae(rewards, old_values, mask, self.cfg.gamma, self.cfg.lam)
            if self.cfg.whiten_advantages:
                advantages = core.masked_whiten(advantages, mask)
        stats = self._optimise(rollout, old_logp, old_values, advantages, returns)
        train_s = time.time() - t1
        self.global_step += 1
        figures = {"reward": rollout.scores.mean().item(), "kl": (kl.sum(1)).mean().item(),
                   "completion_tokens": mask.sum(1).mean().item(), **stats}
        figures = {k: _all_mean(v) for k, v in figures.items()}
        figures["kl_coef"] = self.kl_coef  # the coefficient this step's rewards were shaped with
        if self.cfg.kl_target is not None:  # every worker sees the same mean KL: the same update
            self.kl_coef = core.adaptive_kl_coef(self.kl_coef, figures["kl"], self.cfg.kl_target,
                                                 self.batch_size * self.world, self.cfg.kl_horizon)
        return {**figures, "replica_drift": self._replica_drift(), "generation_s": gen_s, "training_s": train_s,
                "generation_share": gen_s / max(gen_s + train_s, 1e-9)}

    def _optimise(self, rollout, old_logp, old_values, advantages, returns) -> dict[str, float]:
        n = len(rollout.completions)
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clip_fraction": 0.0}
        count = 0
        for _ in range(self.cfg.ppo_epochs):
            order = list(range(n))
            self.rng.shuffle(order)
            for start in range(0, n, self.cfg.minibatch_size):
                idx = torch.tensor(order[start:start + self.cfg.minibatch_size])
                mb = Rollout(rollout.input_ids[idx], rollout.attention_mask[idx], rollout.prompt_len,
                             rollout.mask[idx], [], rollout.scores[idx])
                logits, hidden, tokens = self._forward(mb)
                logp = core.token_logprobs(logits, tokens)
                values = self.value_head(hidden)
                pg_loss, clipfrac = core.policy_loss(logp, old_logp[idx], advantages[idx], mb.mask, self.cfg.clip_range)
                vf_loss = core.value_loss(values, old_values[idx], returns[idx], mb.mask, self.cfg.clip_range_value)
                loss = pg_loss + self.cfg.vf_coef * vf_loss
                self.optimizer.zero_grad(set_to_none=False)
                loss.backward()
                self._all_reduce_grads()
                torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    ent = core.masked_mean(core.entropy(logits), mb.mask)
                for key, value in (("policy_loss", pg_loss), ("value_loss", vf_loss), ("entropy", ent),
                                   ("clip_fraction", clipfrac)):
                    sums[key] += float(value.detach())
                count += 1
        return {k: v / max(count, 1) for k, v in sums.items()}

    def _replica_drift(self) -> float:
        """Largest difference of a weight checksum between workers: 0 when replicas are in sync."""
        checksum = torch.tensor([sum(float(p.detach().double().sum()) for p in self.params)], dtype=torch.float64)
        if self.world == 1:
            return 0.0
        high, low = checksum.clone(), checksum.clone()
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        return float(high - low)

    def _all_reduce_grads(self) -> None:
        """Average gradients over the workers (each rolled out its own shard of prompts)."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads])  # one collective per step, not one per tensor
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world
        offset = 0
        for p, g in zip(self.params, grads):
            p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
            offset += g.numel()


def _all_mean(value: float) -> float:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item() / dist.get_world_size())
