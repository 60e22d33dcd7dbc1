"""Memory per worker: a measured high-water mark (each Ray worker reports its own) and the
textbook estimate of what training state costs per method (full / LoRA / QLoRA) and strategy
(DDP / ZeRO-1/2/3), used for the table in docs/scaling.md.

The estimate counts model state only (weights, gradients, optimizer states), not activations,
which grow with batch x sequence length and are what gradient checkpointing trades for compute.
Accounting, per trained parameter, mixed precision with AdamW (the ZeRO paper's): 2 bytes bf16
weights + 2 bytes bf16 gradients + 12 bytes fp32 master copy, momentum and variance. LoRA adapter
weights stay fp32 (PEFT's default): 4 + 4 + 8 bytes. A frozen base costs 2 bytes per parameter in
bf16; QLoRA's 4-bit NF4 base 0.5 bytes plus its quantization constants (double quant: about
0.127 bits per parameter), with embeddings and the LM head left in bf16 as bitsandbytes does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GIB = 1024 ** 3
FULL_BYTES = {"weights": 2.0, "grads": 2.0, "optimizer": 12.0}
LORA_BYTES = {"weights": 4.0, "grads": 4.0, "optimizer": 8.0}
NF4_BYTES_DOUBLE_QUANT = 0.5 + 0.127 / 8
NF4_BYTES = 0.5 + 0.5 / 8  # one fp32 absmax per block of 64
SHARDED = {  # which state each strategy divides among the workers
    "ddp": (), "zero1": ("optimizer",), "zero2": ("optimizer", "grads"), "zero3": ("optimizer", "grads", "weights"),
}


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only (Llama-style) transformer's sizes: enough to count its parameters."""

    name: str
    vocab: int
    hidden: int
    layers: int
    intermediate: int
    kv_dim: int  # key/value projection width (grouped-query attention makes it < hidden)
    tied_embeddings: bool
    heads: int = 0  # attention heads (0: unknown)

    @classmethod
    def from_hf_config(cls, config: Any, name: str = "model") -> "ModelShape":
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(name, config.vocab_size, config.hidden_size, config.num_hidden_layers,
                   config.intermediate_size, kv_heads * head_dim, bool(getattr(config, "tie_word_embeddings", False)),
                   heads)

    def _linears(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer in one decoder block: q, k, v, o, gate, up, down."""
        h, kv, f = self.hidden, self.kv_dim, self.intermediate
        return [(h, h), (h, kv), (h, kv), (h, h), (h, f), (h, f), (f, h)]

    def linear_params(self) -> int:
        return self.layers * sum(i * o for i, o in self._linears())

    def other_params(self) -> int:
        """Embeddings, the LM head (unless tied) and the norms: left unquantized by bitsandbytes."""
        embed = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return embed + (2 * self.layers + 1) * self.hidden

    def params(self) -> int:
        return self.linear_params() + self.other_params()

    def lora_params(self, r: int) -> int:
        """LoRA with `target_modules: all-linear` (the LM head excluded, as PEFT does)."""
        return self.layers * sum(r * (i + o) for i, o in self._linears())


# Public configs of real models of each size (Llama architecture).
SHAPES = {
    "135M": ModelShape("SmolLM2-135M", 49152, 576, 30, 1536, 192, True, 9),
    "1B": ModelShape("Llama-3.2-1B", 128256, 2048, 16, 8192, 512, True, 32),
    "7B": ModelShape("Llama-2-7B", 32000, 4096, 32, 11008, 4096, False, 32),
    "70B": ModelShape("Llama-3-70B", 128256, 8192, 80, 28672, 1024, False, 64),
}


def estimate_gib(shape: ModelShape, method: str, strategy: str, workers: int, lora_r: int = 16) -> dict[str, float]:
    """Model-state memory per worker in GiB: weights, grads, optimizer and total.
    `method`: full | lora | qlora; `strategy`: ddp | zero1 | zero2 | zero3."""
    if method not in ("full", "lora", "qlora"):
        raise ValueError(f"method: expected full, lora or qlora, got {method!r}")
    if strategy not in SHARDED:
        raise ValueError(f"strategy: expected one of {', '.join(SHARDED)}, got {strategy!r}")
    if method == "full":
        parts = {k: shape.params() * b for k, b in FULL_BYTES.items()}
    else:
        lora = shape.lora_params(lora_r)
        base = shape.params() * 2.0 if method == "lora" else \
            shape.linear_params() * NF4_BYTES_DOUBLE_QUANT + shape.other_params() * 2.0
        parts = {k: lora * b for k, b in LORA_BYTES.items()}
        parts["weights"] += base
    for key in SHARDED[strategy]:
        parts[key] /= workers
    out = {k: v / GIB for k, v in parts.items()}
    out["total"] = sum(out.values())
    return out


def estimate_table(workers: int = 8, lora_r: int = 16) -> str:
    """The Markdown table of docs/scaling.md: total GiB per worker by size, method and strategy."""
    strategies = ("ddp", "zero2", "zero3")
    head = "| model | params | method | " + " | ".join(f"{s.upper() if s == 'ddp' else 'ZeRO-' + s[-1]}"
                                                        for s in strategies) + " |"
    lines = [head, "|" + "---|" * (3 + len(strategies))]
    for size, shape in SHAPES.items():
        for method in ("full", "lora", "qlora"):
            cells = []
            for strategy in strategies:
                if method == "qlora" and strategy == "zero3":
                    cells.append("n/a")  # rayft rejects ZeRO-3 with a quantized base
                    continue
                total = estimate_gib(shape, method, strategy, workers, lora_r)["total"]
                cells.append(f"{total:.2f}" if total < 10 else f"{total:.1f}")
            lines.append(f"| {size} ({shape.name}) | {shape.params() / 1e9:.2f}B | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def breakdown_table(size: str = "7B", workers: int = 8, lora_r: int = 16) -> str:
    """Weights / gradients / optimizer states per worker (GiB) for one model size."""
    shape = SHAPES[size]
    lines = [f"| {size} ({shape.name}), {workers} workers | weights | gradients | optimizer states | total |",
             "|---|---|---|---|---|"]
    for method in ("full", "lora", "qlora"):
        for strategy in ("ddp", "zero1", "zero2", "zero3"):
            if method == "qlora" and strategy == "zero3":
                continue
            e = estimate_gib(shape, method, strategy, workers, lora_r)
            label = "DDP" if strategy == "ddp" else f"ZeRO-{strategy[-1]}"
            lines.append(f"| {method}, {label} | " + " | ".join(f"{e[k]:.2f}" for k in
                                                              ("weights", "grads", "optimizer", "total")) + " |")
    return "\n".join(lines)


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark (Linux reports KiB)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def gather_peak_memory(on_gpu: bool) -> dict[str, Any]:
    """Every worker's peak RSS (and peak allocated GPU memory), gathered in rank order. A collective:
    every rank must call it."""
    import torch
    import torch.distributed as dist

    mine = {"rss": peak_rss_mib(), "gpu": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None}
    everyone = [mine]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
    figures: dict[str, Any] = {"peak_rss_mib_per_worker": [round(f["rss"], 1) for f in everyone]}
    if on_gpu:
        figures["peak_gpu_mem_mib_per_worker"] = [round(f["gpu"], 1) for f in everyone]
    return figures


if __name__ == "__main__":  # the tables of docs/scaling.md
    print(estimate_table(), end="\n\n")
    print(breakdown_table())
