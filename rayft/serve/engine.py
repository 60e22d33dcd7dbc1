"""Generation on one base model with many LoRA adapters (no Ray here; one engine per replica).

Adapters are held the way PEFT allows: ONE base model per replica, wrapped in a `PeftModel` once the
first adapter arrives, every adapter loaded onto it by name (`load_adapter`), an evicted one
removed (`delete_adapter`; the wrapper is unloaded with the last one). An adapter costs only its
LoRA weights (a few MB), not a model copy. One generation serves requests for different adapters
and the base together: PEFT's mixed-batch inference (`generate(..., adapter_names=[...])`, one name
per row, `__base__` for the base) runs the base weights once for the whole batch and each
adapter's LoRA product on its own rows.

IA3 adapters cannot share that generation: PEFT's `adapter_names` is implemented for LoRA only,
and for IA3 it silently applies the active adapter to every row. Nor can they load into the LoRA
wrapper (one PEFT type per wrapper). So IA3 adapters live in a second wrapper around one copy of
the base (made when the first IA3 adapter arrives, dropped with the last), and each IA3 adapter's
rows are generated apart, with that adapter active.

Not thread-safe by design: the Serve deployment runs every call of one engine under one lock.
`release_adapter` is the exception: it only marks an adapter, and the deletion happens at the next
locked call, because Serve calls it from a thread pool when it evicts a model.
"""

from __future__ import annotations

import hashlib
import threading
import time
import warnings
from itertools import groupby
from pathlib import Path
from typing import Any, Iterator

from rayft.schema.sections import ModelConfig
from rayft.serve.protocol import GenRequest, GenResult

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch
GREEDY_BELOW = 1e-6  # a temperature under this is greedy decoding, the same as 0


class _StopFlag:
    """A stopping criterion that ends generation when set, and counts generated steps."""

    def __init__(self, prompt_len: int):
        self.event, self.prompt_len, self.new_tokens = threading.Event(), prompt_len, 0

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.new_tokens = input_ids.shape[1] - self.prompt_len
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class GenerationEngine:
    def __init__(self, model_path: str, model_cfg: ModelConfig | None = None, device: str = "cpu",
                 threads: int | None = None):
        import torch
        import transformers

        from rayft.generation.hf import eos_ids
        from rayft.models.loader import load_causal_lm, load_tokenizer

        transformers.utils.logging.set_verbosity_error()  # no load report tables per adapter
        transformers.utils.logging.disable_progress_bar()
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")  # many adapters: intended
        warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")  # eviction: intended
        if threads:
            torch.set_num_threads(threads)
        cfg = model_cfg or ModelConfig(name=model_path)
        self.device = device
        self.tokenizer = load_tokenizer(model_path, cfg.trust_remote_code, cfg)
        self.model = load_causal_lm(model_path, cfg, on_gpu=device.startswith("cuda")).to(device).eval()
        self.eos_ids = eos_ids(self.model, self.tokenizer)
        self._add_bos = adds_bos(self.tokenizer)
        self.peft: Any = None  # the PeftModel around self.model while any LoRA adapter is loaded
        self.side: Any = None  # the PeftModel around a copy of the base while any IA3 adapter is loaded
        self._loaded: dict[str, str] = {}  # PEFT adapter name -> multiplexed key
        self._isolated: set[str] = set()  # names of adapters that cannot join a mixed batch (IA3)
        self._released: set[str] = set()
        self.loads = 0
        self.evictions = 0
        self.load_seconds: list[float] = []

    # ---- adapters -------------------------------------------------------------------------------
    @staticmethod
    def adapter_name(key: str) -> str:
        """PEFT module-dict keys cannot hold '.', so a key (`id@version`) maps to a hashed name."""
        return "a_" + hashlib.sha1(key.encode()).hexdigest()[:16]

    def load_adapter(self, key: str, path: str | Path) -> float:
        """Load `key` from `path` unless held; returns the seconds it took (0 when held)."""
        name = self.adapter_name(key)
        if name in self._released:  # evicted by Serve but not deleted yet: keep it
            self._released.discard(name)
            return 0.0
        if name in self._loaded:
            return 0.0
        started = time.perf_counter()
        from peft import PeftModel

        from rayft.models.adapters import adapter_kind
        from rayft.models.tokens import added_to_base

        added = added_to_base(path, len(self.tokenizer))
        if added:  # its new rows would index past this base's embedding; other adapters share the base
            raise ValueError(f"it was trained with {added} token(s) this base's tokenizer lacks (model.add_special_tokens "
                             "or data.template chatml); serve it merged (`rayft merge ADAPTER --out DIR`, then "
                             "serve.merged_models), or give this serve config the same model.add_special_tokens")

        if adapter_kind(path) not in (None, "LORA"):  # IA3 and the like: apart (module docstring)
            if self.side is None:
                self.side = PeftModel.from_pretrained(self._base_copy(), str(path), adapter_name=name,
                                                      is_trainable=False).eval()
            else:
                self.side.load_adapter(str(path), adapter_name=name, is_trainable=False)
            self._isolated.add(name)
        elif self.peft is None:
            self.peft = PeftModel.from_pretrained(self.model, str(path), adapter_name=name, is_trainable=False).eval()
        else:
            self.peft.load_adapter(str(path), adapter_name=name, is_trainable=False)
        if self.peft is not None and not self.peft.active_adapters:  # mixed batches need an active adapter
            self.peft.set_adapter(name)
        self._loaded[name] = key
        self.loads += 1
        elapsed = time.perf_counter() - started
        self.load_seconds.append(elapsed)
        return elapsed

    def release_adapter(self, key: str) -> None:
        """Mark `key` for deletion at the next engine call (safe from any thread)."""
        self._released.add(self.adapter_name(key))

    def _purge_released(self, keep: set[str] = frozenset()) -> None:
        """Delete the adapters Serve evicted, except those the current call uses."""
        for name in list(self._released - keep):
            if name in self._loaded:
                if name in self._isolated:
                    self._isolated.discard(name)
                    if self._isolated:
                        self.side.delete_adapter(name)
                    else:  # the last IA3 adapter: the base copy goes too
                        self.side = None
                elif len(set(self._loaded) - self._isolated) == 1:  # the last LoRA one: back to the plain base
                    self.model, self.peft = self.peft.unload(), None
                else:
                    self.peft.delete_adapter(name)
                del self._loaded[name]
                self.evictions += 1
            self._released.discard(name)

    def _prepare(self, keys: list[str | None], paths: dict[str, str | Path]) -> list[str]:
        """Load the adapters `keys` name (None: the base) and return each row's PEFT name."""
        for key in dict.fromkeys(k for k in keys if k is not None):
            self.load_adapter(key, paths[key])
        names = [BASE if k is None else self.adapter_name(k) for k in keys]
        self._purge_released(keep=set(names))
        return names

    def held_adapters(self) -> list[str]:
        return sorted(key for name, key in self._loaded.items() if name not in self._released)

    # ---- generation -----------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + int(self._add_bos)

    def generate(self, requests: list[GenRequest], key: str | None = None,
                 path: str | Path | None = None) -> list[GenResult]:
        """Complete every request with adapter `key` (None: the base)."""
        return self.generate_mixed(requests, [key] * len(requests), {key: path} if key is not None else {})

    def generate_mixed(self, requests: list[GenRequest], keys: list[str | None],
                       paths: dict[str, str | Path]) -> list[GenResult]:
        """Complete request i with adapter keys[i] (None: the base; `paths` maps each key to its
        folder), as one generation per sampling setting whatever the adapters."""
        names = self._prepare(keys, paths)
        results: list[GenResult | None] = [None] * len(requests)

        def group_of(i: int) -> tuple[float, float, str]:  # an IA3 adapter's rows form a group of their own
            return requests[i].temperature, requests[i].top_p, names[i] if names[i] in self._isolated else ""

        by_sampling = sorted(range(len(requests)), key=group_of)
        for _, group in groupby(by_sampling, key=group_of):
            indices = list(group)
            rows = [i for i in indices for _ in range(requests[i].n)]
            outputs = self._generate_rows([requests[i] for i in rows], [names[i] for i in rows])
            for i in indices:
                mine = [out for row, out in zip(rows, outputs) if row == i]
                results[i] = GenResult([t for t, _, _ in mine], [r for _, r, _ in mine], sum(n for _, _, n in mine))
        return results  # type: ignore[return-value]

    def _encode(self, prompts: list[str]) -> dict[str, Any]:
        self.tokenizer.padding_side = "left"  # generation continues from the right edge of every row
        texts = [(self.tokenizer.bos_token if self._add_bos else "") + p for p in prompts]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in batch.items()}

    def _sampling(self, req: GenRequest) -> dict[str, Any]:
        # Below GREEDY_BELOW, logits / temperature overflow float32 to inf and sampling fails on NaN
        # probabilities (a request of temperature 1e-300 was a 500); the distribution is argmax by then.
        if req.temperature < GREEDY_BELOW:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": req.temperature, "top_p": req.top_p}

    def _base_copy(self) -> Any:
        """A copy of the base model without any LoRA layer, for the IA3 wrapper."""
        import copy

        if self.peft is None:
            return copy.deepcopy(self.model)
        return copy.deepcopy(self.peft).unload()

    def _generate(self, names: list[str], **kwargs: Any) -> Any:
        """`generate` of the base model, of the LoRA wrapper with each row's adapter, or of the IA3
        wrapper with the one adapter of these rows active."""
        if names and names[0] in self._isolated:
            self.side.set_adapter(names[0])
            return self.side.generate(**kwargs)
        if self.peft is None:
            return self.model.generate(**kwargs)
        return self.peft.generate(**kwargs, adapter_names=names)

    def _generate_rows(self, rows: list[GenRequest], names: list[str]) -> list[tuple[str, str, int]]:
        import torch

        batch = self._encode([r.prompt for r in rows])
        with torch.inference_mode():
            out = self._generate(names, **batch, max_new_tokens=max(r.max_tokens for r in rows),
                                 pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos_ids,
                                 **self._sampling(rows[0]))
        width = batch["input_ids"].shape[1]
        finished = []
        for row, req in enumerate(rows):
            new = out[row, width:width + req.max_tokens].tolist()
            ended = next((k for k, t in enumerate(new) if t in self.eos_ids), None)
            kept = new if ended is None else new[:ended]
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            text, hit_stop = cut_at_stop(text, req.stops)
            reason = "stop" if ended is not None or hit_stop else "length"
            finished.append((text, reason, len(kept)))
        return finished

    def stream(self, req: GenRequest, key: str | None = None, path: str | Path | None = None,
               ) -> Iterator[tuple[str, str | None]]:
        """Yield (text delta, None) as tokens arrive, then ("", finish_reason)."""
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        names = self._prepare([key], {key: path} if key is not None else {})
        batch = self._encode([req.prompt])
        flag = _StopFlag(batch["input_ids"].shape[1])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self._generate(names, **batch, max_new_tokens=req.max_tokens, streamer=streamer,
                                   stopping_criteria=StoppingCriteriaList([flag]), eos_token_id=self.eos_ids,
                                   pad_token_id=self.tokenizer.pad_token_id, **self._sampling(req))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        text, hit_stop = "", False
        try:
            for piece in streamer:
                if hit_stop or not piece:
                    continue
                cut, hit_stop = cut_at_stop(text + piece, req.stops)
                delta, text = cut[len(text):], cut
                if hit_stop:
                    flag.event.set()
                if delta:
                    yield delta, None
        finally:
            flag.event.set()  # also when the client went away
            worker.join()
        if failure:
            raise failure[0]
        yield "", ("stop" if hit_stop or flag.new_tokens < req.max_tokens else "length")


def adds_bos(tokenizer: Any) -> bool:
    """Whether generation starts every prompt with the tokenizer's begin-of-sequence token."""
    return tokenizer.bos_token is not None and bool(getattr(tokenizer, "add_bos_token", False))


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """`text` up to the first stop string, and whether one was found."""
    hits = [text.find(s) for s in stops if s and s in text]
    return (text[:min(hits)], True) if hits else (text, False)
