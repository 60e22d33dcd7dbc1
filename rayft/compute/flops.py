"""Training FLOPs per token and model FLOPs utilisation (MFU) of a decoder-only (Llama-style) model.

The standard estimate (Kaplan et al. 2020; PaLM, Chowdhery et al. 2022, appendix B), counting
matmuls only, 2 FLOPs per multiply-add:

- forward: 2 * N per token, N = the parameters that take part in a matmul (every linear layer of
  the blocks plus the LM head; the input embedding is a lookup, not a matmul), plus attention's
  scores and weighted sum, 4 * L * d * T per token (L layers, d = heads x head size, T the
  sequence length; causal masking not discounted, by the usual convention);
- backward: twice the forward: gradients with respect to the activations (2 * N) and to the
  weights (2 * N); attention has no weights, so its backward is 8 * L * d * T.

A full fine-tune therefore costs 6 * N + 12 * L * d * T per token. LoRA and QLoRA freeze the base:
it still runs forward (2 * N) and gradients still flow back through it to the adapters of earlier
layers (2 * N), but no weight gradients are formed, so 4 * N + 12 * L * d * T, plus 6 FLOPs per
adapter parameter. QLoRA's de-quantization and gradient checkpointing's recomputation are not
model FLOPs (MFU counts the work the model needs, not the work the kernels happen to do).

MFU = FLOPs per token x tokens/s / (peak dense FLOP/s of one device x devices).
"""

from __future__ import annotations

from rayft.compute.memory import ModelShape

# Dense (not sparse) bf16 tensor-core peaks from NVIDIA's data sheets, in TFLOP/s, keyed by a
# substring of torch.cuda.get_device_name(); the first match wins, so specific names come first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989.0),  # same compute as H100 SXM, more and faster memory (GH200 matches here too)
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)

METHODS = ("full", "lora", "qlora")


def matmul_params(shape: ModelShape) -> int:
    """Parameters used in matmuls per token: the blocks' linear layers and the LM head (tied or not)."""
    return shape.linear_params() + shape.vocab * shape.hidden


def training_flops_per_token(shape: ModelShape, seq_len: int, method: str, lora_r: int = 16) -> float:
    """Model FLOPs of one trained token (forward + backward) for `method`: full | lora | qlora."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    attention = 12.0 * shape.layers * shape.hidden * seq_len
    n = matmul_params(shape)
    if method == "full":
        return 6.0 * n + attention
    return 4.0 * n + 6.0 * shape.lora_params(lora_r) + attention


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak FLOP/s of a GPU from its name, or None when it is not in the table."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


def model_flops_utilisation(flops_per_token: float, tokens_per_s: float, peak_flops_per_device: float,
                            devices: int = 1) -> float:
    """The share of the devices' peak that the model's own FLOPs used (0..1)."""
    if peak_flops_per_device <= 0 or devices < 1:
        raise ValueError("peak_flops_per_device must be > 0 and devices >= 1")
    return flops_per_token * tokens_per_s / (peak_flops_per_device * devices)
