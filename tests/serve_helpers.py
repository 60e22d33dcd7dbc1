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


class LoggedProcess:
    """A command in a subprocess, its stdout and stderr in `log`; `log_tail()` for failure messages,
    `stop()` terminates it (kills it after 120 s)."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], log: Path):
        import subprocess

        self.log_path = log
        self._log = log.open("w")
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        import subprocess

        self.process.terminate()
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


class S3Server(LoggedProcess):
    """moto's S3 server on 127.0.0.1 (from `bin_dir`, e.g. .venv-vllm/bin) with one bucket: the
    object-store adapter store of the vLLM test and benchmark, where no cloud is reachable. `env`
    points boto3 and s3fs at it."""

    def __init__(self, bin_dir: Path, bucket: str, cwd: Path):
        import os
        import time

        import requests

        port = free_port()
        super().__init__([str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], cwd, dict(os.environ),
                         cwd / "moto.log")
        self.env = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "rayft-test",
                    "AWS_SECRET_ACCESS_KEY": "rayft-test", "AWS_DEFAULT_REGION": "us-east-1"}
        for _ in range(60):
            try:
                if requests.put(f"http://127.0.0.1:{port}/{bucket}", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("moto's S3 server did not come up:\n" + self.log_tail())


class ServeProcess(LoggedProcess):
    """`<python> -m rayft serve CONFIG` in a subprocess (used by the vLLM test and the engines
    benchmark). With `ray_cpus`, on a Ray head of its own with that many logical CPUs and token auth
    (as every Ray here): vLLM's CPU engine holds a whole CPU per deployment. `env` is added to the
    environment of the server and of the Ray head (so its workers have it). `stop()` ends both."""

    def __init__(self, python: Path, config: Path, cwd: Path, log: Path, ray_cpus: int | None = None,
                 env: dict[str, str] | None = None):
        import os

        from ray_head import LocalRayHead

        self.env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
        self.env.update(env or {})
        self.env["RAYFT_API_KEYS"] = ""
        command = [str(python), "-m", "rayft", "serve", str(config)]
        self.head = None
        if ray_cpus is not None:
            # A head of its own, stopped by its process group: `ray stop` would stop every Ray on the
            # machine (a benchmark's, another test's).
            self.head = LocalRayHead.start(num_cpus=ray_cpus, env=self.env, bin_dir=python.parent)
            self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.head.token)
            command += ["--address", self.head.gcs_address]
        super().__init__(command, cwd, self.env, log)

    def stop(self) -> None:
        super().stop()
        if self.head:
            self.head.stop()
