"""bench/gpu_training.py: the FLOPs / MFU arithmetic on known numbers, and its CPU smoke mode end to end
(a tiny random Llama, one real rayft SFT run on a local Ray, JSON and docs section in temporary files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from rayft.compute.flops import matmul_params, model_flops_utilisation, peak_flops, training_flops_per_token
from rayft.compute.memory import ModelShape

# TinyLlama-1.1B: 22 layers, hidden 2048, MLP 5632, 4 KV heads of 64, vocab 32000, untied LM head.
TINYLLAMA = ModelShape("TinyLlama-1.1B", 32000, 2048, 22, 5632, 256, False)


def test_flops_per_token_on_tinyllama():
    # Linear weights per block: q, o 2048^2; k, v 2048*256; gate, up, down 2048*5632.
    per_block = 2 * 2048 * 2048 + 2 * 2048 * 256 + 3 * 2048 * 5632
    assert per_block == 44_040_192
    n = 22 * per_block + 32000 * 2048  # + the LM head; the input embedding is a lookup
    assert matmul_params(TINYLLAMA) == n == 1_034_420_224
    assert TINYLLAMA.params() == 1_100_048_384  # TinyLlama's published count
    attention = 12 * 22 * 2048 * 2048  # 12 * L * d * T at T = 2048
    assert training_flops_per_token(TINYLLAMA, 2048, "full") == 6 * n + attention == 7_313_817_600
    lora = 22 * 16 * (4096 + 2304 + 2304 + 4096 + 3 * 7680)  # r * (in + out) of the 7 linears, r = 16
    assert TINYLLAMA.lora_params(16) == lora == 12_615_680
    assert training_flops_per_token(TINYLLAMA, 2048, "qlora") == 4 * n + 6 * lora + attention == 5_320_671_232
    assert training_flops_per_token(TINYLLAMA, 2048, "lora") == training_flops_per_token(TINYLLAMA, 2048, "qlora")
    with pytest.raises(ValueError, match="method"):
        training_flops_per_token(TINYLLAMA, 2048, "dora")


def test_mfu_and_peak_table():
    assert model_flops_utilisation(6e9, 50_000, 1e15, devices=2) == pytest.approx(0.15)
    # 7.31 GFLOPs/token at 50k tokens/s on one H200 (989 TFLOP/s): 36.98%.
    mfu = model_flops_utilisation(7_313_817_600, 50_000, peak_flops("NVIDIA H200"))
    assert mfu == pytest.approx(0.369758, abs=1e-6)
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("Some Future GPU") is None
    with pytest.raises(ValueError):
        model_flops_utilisation(1e9, 1.0, 0.0)


@pytest.mark.ray
def test_cpu_smoke_writes_json_and_docs_section(tmp_path):
    docs, results = tmp_path / "benchmarks.md", tmp_path / "gpu_training.json"
    args = ["--model-size", "tiny", "--methods", "qlora-bf16", "--steps", "2", "--batch-size", "1",
            "--max-length", "32", "--docs", str(docs), "--results", str(results)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # RAYFT_HOME: conftest's private one
    run = subprocess.run([sys.executable, "bench/gpu_training.py", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(results.read_text())
    (row,) = result["rows"]
    assert row["method"] == "qlora-bf16" and row["global_step"] == 2
    assert row["tokens_per_s"] > 0 and row["steady_tokens_per_s"] > 0
    assert row["num_tokens"] == 2 * 1 * 32  # steps x batch x max_length: every row is full, no padding
    assert row["mfu"] is None and result["gpu"] is False  # no GPU here
    text = docs.read_text()
    section = text.split("<!-- BEGIN gpu_training -->", 1)[1].split("<!-- END gpu_training -->", 1)[0]
    assert "Command: `RAYFT_HOME=... python bench/gpu_training.py " + " ".join(args) + "`" in section
    assert "| qlora-bf16 |" in section
