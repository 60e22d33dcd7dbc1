"""Helpers for the serving tests and benchmark: tiny LoRA adapters trained to answer differently,
and a free local port."""

from __future__ import annotations

import socket
from pathlib import Path

QUESTION = "Say something."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_adapter(model_path: str, answer: str, out: Path, seed: int = 0, steps: int = 60, lr: float = 1e-2) -> Path:
    """A LoRA adapter on `model_path` that answers QUESTION (chat template) with `answer`: a few
    full-batch AdamW steps on that one example, enough for greedy decoding to repeat it. (lr 2e-2 for
    30 steps, used before 2026-12-02, garbled one answer on some CPUs: float rounding differs by
    instruction set and that lr sat on the edge of divergence.)"""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rayft.models.loader import load_tokenizer

    tokenizer = load_tokenizer(model_path)
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path), LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                           add_generation_prompt=True)
    ids = tokenizer(prompt + answer + tokenizer.eos_token, return_tensors="pt", add_special_tokens=False).input_ids
    labels = ids.clone()
    labels[:, :len(tokenizer(prompt, add_special_tokens=False).input_ids)] = -100
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    return out
