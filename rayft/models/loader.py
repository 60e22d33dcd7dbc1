"""Resolve `model.name` to a local folder, and load models and tokenizers from it.

Resolution happens once on the driver (so a builtin is converted once, before workers start);
workers receive the resolved local path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rayft.schema.sections import ModelConfig
from rayft.core.errors import ModelError
from rayft.models.builtin import builtin_path

BUILTIN_PREFIX = "builtin:"
log = logging.getLogger(__name__)


def resolve_model(name: str, revision: str | None = None) -> str:
    """A local folder for `name`: a builtin, an existing directory, or a hub id."""
    if name.startswith(BUILTIN_PREFIX):
        return str(builtin_path(name[len(BUILTIN_PREFIX):]))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model.name: {path} is a directory but has no config.json "
                             "(expected a Hugging Face model folder)")
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model.name: {name}: no such model directory")
    return _from_hub(name, revision)


def local_model_path(name: str, revision: str | None = None) -> str | None:
    """The model's folder if it is on this machine already (a builtin built before, a folder, the
    hub cache), without building or downloading anything; None otherwise."""
    if name.startswith(BUILTIN_PREFIX):
        from rayft.models.builtin import built_path

        built = built_path(name[len(BUILTIN_PREFIX):])
        return str(built) if built else None
    try:
        return resolve_model(name, revision)
    except ModelError:
        return None


def _from_hub(repo_id: str, revision: str | None) -> str:
    from huggingface_hub import snapshot_download

    try:  # already in the local hub cache: no network needed
        return snapshot_download(repo_id, revision=revision, local_files_only=True)
    except (OSError, ValueError) as exc:  # not cached (LocalEntryNotFoundError), or an id the hub refuses
        log.info("model.name: '%s' is not in the local hub cache (%s); trying the hub", repo_id, exc)
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelError(f"model.name: '{repo_id}' is not in the local hub cache and HF_HUB_OFFLINE=1")
    try:
        return snapshot_download(repo_id, revision=revision, etag_timeout=10)
    except (OSError, ValueError) as exc:  # network, auth, not-found, a bad id: all a user problem (hub errors are OSErrors)
        raise ModelError(
            f"model.name: cannot fetch '{repo_id}' from the Hugging Face hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Without a reachable hub, "
            "use `builtin:smollm2-135m-instruct` or a local model directory."
        ) from exc


def torch_dtype(cfg: ModelConfig, on_gpu: bool):
    import torch

    if cfg.dtype == "auto":
        if on_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, cfg.dtype)


def load_tokenizer(path: str, trust_remote_code: bool = False, model_cfg: ModelConfig | None = None):
    """The tokenizer at `path`; with `model_cfg`, the run's added tokens and pad token too
    (rayft.models.tokens), so that every stage, the evaluation and the merge agree on the ids."""
    from transformers import AutoTokenizer

    from rayft.models.tokens import extend_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if model_cfg is not None:
        extend_tokenizer(tokenizer, model_cfg)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str, cfg: ModelConfig, on_gpu: bool = False):
    from transformers import AutoModelForCausalLM

    from rayft.models.quantization import quantized_load_kwargs

    from rayft.models.tokens import fit_to_config

    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype(cfg, on_gpu), attn_implementation=cfg.attn_implementation,
            trust_remote_code=cfg.trust_remote_code, **quantized_load_kwargs(cfg, on_gpu),
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.name: cannot load a causal LM from {path}: {exc}") from exc
    return fit_to_config(model, path, cfg)  # room for model.add_special_tokens / pad_token
