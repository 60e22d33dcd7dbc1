"""Added special tokens (`model.add_special_tokens`, `model.pad_token`, `data.template: chatml`): the
tokenizer gets them once per run, the embedding grows, a LoRA adapter trains and saves only the new
rows, and base + adapter folder rebuild the same model in evaluation, merge and serving."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import write_jsonl
from rayft.config.load import load_pipeline
from rayft.core.errors import ConfigError, ModelError
from rayft.schema.sections import AdapterConfig, ModelConfig

TOKENS = ["[SOS]", "[SEP]"]


def _cfg(name: str = "builtin:tiny-random") -> ModelConfig:
    return ModelConfig(name=name, add_special_tokens=TOKENS, pad_token="<pad>")


def _train_a_few_steps(model, tokenizer, steps: int = 4):
    batch = tokenizer(["[SOS] say hi [SEP] hi<pad>", "[SOS] say no [SEP] no"], return_tensors="pt", padding=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(steps):
        model(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return batch


@pytest.fixture(scope="module")
def trained_adapter(tiny_model_path, tmp_path_factory):
    """A LoRA adapter with two added tokens and a new pad token, trained a few steps and saved as
    rayft's worker saves it; with the trained model's logits on a batch using the new tokens."""
    from rayft.models.adapters import apply_adapter
    from rayft.models.loader import load_causal_lm, load_tokenizer
    from rayft.models.tokens import new_token_ids

    cfg = _cfg()
    tokenizer = load_tokenizer(tiny_model_path, False, cfg)
    rows = new_token_ids(tiny_model_path, cfg)
    model = apply_adapter(load_causal_lm(tiny_model_path, cfg), AdapterConfig(r=4), token_rows=rows)
    batch = _train_a_few_steps(model, tokenizer)
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder, save_embedding_layers=False)
    tokenizer.save_pretrained(folder)
    return folder, batch, logits, rows


def test_the_tokens_get_ids_of_their_own_and_a_pad(tiny_model_path):
    from rayft.models.loader import load_tokenizer

    base = load_tokenizer(tiny_model_path)
    tokenizer = load_tokenizer(tiny_model_path, False, _cfg())
    assert len(tokenizer) == len(base) + 3
    ids = tokenizer("[SOS] hello [SEP]", add_special_tokens=False)["input_ids"]
    assert ids[0] == len(base) and ids[-1] == len(base) + 1  # one id each, never split
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id == len(base) + 2
    # Tokens the tokenizer has already are reused, not added again.
    reused = load_tokenizer(tiny_model_path, False, ModelConfig(add_special_tokens=["<|im_start|>"]))
    assert len(reused) == len(base)


def test_base_plus_adapter_folder_rebuilds_the_trained_model(trained_adapter, tiny_model_path):
    """Evaluation's path (load_for_inference) with a config that says nothing of the tokens: the
    folder's tokenizer alone sizes the base; the logits equal the trained model's."""
    from safetensors.torch import load_file

    from rayft.models.adapters import load_for_inference

    folder, batch, logits, rows = trained_adapter
    saved = load_file(str(folder / "adapter_model.safetensors"))
    deltas = [v for k, v in saved.items() if "trainable_tokens_delta" in k]
    assert deltas and deltas[0].shape[0] == len(rows) and deltas[0].abs().sum() > 0  # the new rows trained
    assert not any("base_layer" in k for k in saved)  # not a copy of the whole embedding matrix
    model = load_for_inference(tiny_model_path, ModelConfig(name=tiny_model_path), folder)
    with torch.no_grad():
        again = model(**batch).logits
    assert model.get_input_embeddings().weight.shape[0] == 49152 + 3
    assert torch.allclose(again, logits, atol=1e-5)


def test_merge_keeps_the_rows_and_the_tokenizer(trained_adapter, tiny_model_path, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rayft.serve.merge import merge_adapter

    folder, batch, logits, _ = trained_adapter
    out = merge_adapter(folder, tmp_path / "merged", base=tiny_model_path)
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == 49152 + 3 and tokenizer.pad_token == "<pad>"
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, logits, atol=1e-4)


def test_rayft_s_engine_refuses_an_adapter_whose_tokens_its_base_lacks(trained_adapter, tiny_model_path):
    from rayft.serve.engine import GenerationEngine

    folder, *_ = trained_adapter
    with pytest.raises(ValueError, match=r"trained with 3 token\(s\) .*rayft merge"):
        GenerationEngine(tiny_model_path).load_adapter("tok@1", folder)
    # A serve config with the same tokens gets a base with room for them, and loads it.
    engine = GenerationEngine(tiny_model_path, _cfg(name=tiny_model_path))
    assert engine.load_adapter("tok@1", folder) >= 0


def test_ia3_refuses_added_tokens_naming_what_works(tiny_model_path):
    from rayft.models.adapters import apply_adapter
    from rayft.models.loader import load_causal_lm
    from rayft.models.tokens import new_token_ids

    cfg = _cfg()
    with pytest.raises(ModelError, match="ia3 cannot train the 3 added tokens.*lora or full"):
        apply_adapter(load_causal_lm(tiny_model_path, cfg), AdapterConfig(type="ia3"),
                      token_rows=new_token_ids(tiny_model_path, cfg))


def test_stages_on_trl_s_fused_head_refuse_trained_output_rows_naming_the_way_round(tiny_model_path):
    """DPO / KTO / GRPO (TRL 1.16) read lm_head.bias, which PEFT's trainable-token wrapper lacks on a
    tied output layer: refused before training, naming `rayft merge`; SFT has its own loss path."""
    from rayft.models.adapters import apply_adapter
    from rayft.models.loader import load_causal_lm
    from rayft.models.tokens import check_fused_head, new_token_ids, trains_output_rows

    cfg = _cfg()
    model = apply_adapter(load_causal_lm(tiny_model_path, cfg), AdapterConfig(r=4),
                          token_rows=new_token_ids(tiny_model_path, cfg))
    assert trains_output_rows(model)
    with pytest.raises(ModelError, match="stages.dpo: .*rayft merge RUN --stage sft"):
        check_fused_head("dpo", model)
    check_fused_head("sft", model)
    plain = apply_adapter(load_causal_lm(tiny_model_path, ModelConfig()), AdapterConfig(r=4))
    assert not trains_output_rows(plain)
    check_fused_head("dpo", plain)


def test_chatml_adds_its_tokens_and_renders_one_id_each(tmp_path, tiny_model_path):
    """A base without ChatML: the template's tokens are added to the run's tokenizer; the rendered
    segments keep prompt and answer apart, and the saved tokenizer gets ChatML as its chat template."""
    from transformers import AutoTokenizer

    from rayft.data.templates import render
    from rayft.models.tokens import extend_tokenizer

    loaded = load_pipeline(None, ["data.template=chatml", "model.add_special_tokens=[\"[X]\"]"])
    assert loaded.pipeline.model.add_special_tokens == ["[X]", "<|im_start|>", "<|im_end|>"]
    # A GPT-2-style tokenizer with no chat template and no ChatML tokens, made from the tiny one's files.
    bare = AutoTokenizer.from_pretrained(tiny_model_path)
    bare.chat_template = None
    extend_tokenizer(bare, ModelConfig(add_special_tokens=["<|im_start|>", "<|im_end|>"]))
    assert bare.chat_template is not None
    segments = render({"turns": [("What is 2+2?", "4")], "system": None}, "chatml", bare)
    assert segments == [("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", False),
                        ("4<|im_end|>\n", True)]
    ids = bare(segments[0][0], add_special_tokens=False)["input_ids"]
    assert ids.count(bare.convert_tokens_to_ids("<|im_start|>")) == 2


@pytest.mark.parametrize("override, field", [
    ('model.add_special_tokens=["[A]", "[A]"]', "model.add_special_tokens"),
    ('model.add_special_tokens=[" [A]"]', "model.add_special_tokens"),
    ('model.pad_token=""', "model.pad_token"),
])
def test_bad_token_settings_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_pipeline(None, [override])


@pytest.mark.ray
def test_an_sft_stage_trains_added_tokens_end_to_end(ray_cluster, tmp_path):
    """Through Ray Train and the worker's save: the adapter folder holds the grown tokenizer and the
    trained rows, and the evaluation of the run loads it back (tuned answers generated)."""
    from rayft.train.launch import run_pipeline

    rows = [{"instruction": f"Say {w}", "output": f"{w} {w}"} for w in
            ("red", "blue", "green", "cyan", "pink", "gold", "grey", "teal")] * 3
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    loaded = load_pipeline(None, [
        "model.name=builtin:tiny-random", f"data.path={data}", "data.template=[SOS] {instruction} [SEP] ",
        "model.add_special_tokens=[\"[SOS]\", \"[SEP]\"]", "model.pad_token=<pad>", "data.eval_split=4",
        "training.max_steps=4", "training.batch_size=4", "training.lr=1e-2", f"storage.path={tmp_path}",
        "run_name=tok", "eval.num_examples=2", "eval.max_new_tokens=4", "tracking.tensorboard=false"])
    result = run_pipeline(loaded)
    adapter = result.run_dir / "sft" / "adapter"
    assert json.loads((result.run_dir / "sft" / "summary.json").read_text())["status"] == "completed"
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(adapter)) == 49152 + 3
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["trainable_token_indices"] == [49152, 49153, 49154]
    assert (adapter / "adapter_model.safetensors").stat().st_size < 2_000_000  # deltas, not the matrix
    from rayft.eval.evaluate import evaluate_run

    evaluate_run(loaded, result.run_dir)  # loads base + adapter folder with the run's tokenizer
    metrics = {row["model"]: row for row in json.loads((result.run_dir / "eval.json").read_text())["metrics"]}
    assert set(metrics) == {"base", "sft"} and metrics["sft"]["scored_n"] == metrics["base"]["scored_n"] == 4
    assert metrics["sft"]["loss"] != metrics["base"]["loss"]
