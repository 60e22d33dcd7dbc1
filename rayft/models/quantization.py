"""A bitsandbytes-quantized base for QLoRA (`model.quantization`): 4-bit NF4/FP4 with optional
double quantization and a compute dtype, or 8-bit LLM.int8. Runs on CUDA and, slowly, on CPU
(bitsandbytes' CPU backend), which is how the tests exercise it."""

from __future__ import annotations

from typing import Any

from rayft.core.errors import ModelError


def compute_dtype(quant: Any, on_gpu: bool):
    import torch

    if quant.compute_dtype == "auto":
        return torch.bfloat16 if on_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported() \
            else torch.float32
    return getattr(torch, quant.compute_dtype)


def bnb_config(quant: Any, on_gpu: bool):
    """transformers' BitsAndBytesConfig for `model.quantization`."""
    from transformers import BitsAndBytesConfig

    if quant.mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant.quant_type,
                              bnb_4bit_use_double_quant=quant.double_quant,
                              bnb_4bit_compute_dtype=compute_dtype(quant, on_gpu))


def quantized_load_kwargs(model_cfg: Any, on_gpu: bool) -> dict[str, Any]:
    """Extra `from_pretrained` keywords: none for an unquantized base. A quantized model cannot be
    moved after loading, so it is loaded straight onto this worker's device."""
    quant = model_cfg.quantization
    if quant is None:
        return {}
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError("model.quantization: needs the bitsandbytes package (pip install bitsandbytes)") from None
    return {"quantization_config": bnb_config(quant, on_gpu), "device_map": {"": _device(on_gpu)}}


def is_quantized(model: Any) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def prepare_for_kbit_training(model: Any) -> Any:
    """PEFT's preparation of a quantized base (norms in fp32, input grads for checkpointing);
    gradient checkpointing itself stays the Trainer's call (training.gradient_checkpointing)."""
    if not is_quantized(model):
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def _device(on_gpu: bool):
    import torch

    if not on_gpu or not torch.cuda.is_available():
        return "cpu"
    try:  # inside a Ray Train worker: the GPU Ray assigned to this worker
        from ray.train.torch import get_device

        return get_device()
    except Exception:  # noqa: BLE001 - outside Ray Train (e.g. `rayft eval`): the current device
        return torch.device("cuda", torch.cuda.current_device())
