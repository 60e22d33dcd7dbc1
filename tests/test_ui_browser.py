"""`rayft ui` in a real browser: the page served by `rayft ui` on 127.0.0.1 (joined to the session's Ray), driven
by headless Chromium from Debian's package through Playwright. The tests assert what a person sees:
a bad field's error, a run started from the page reaching `completed` with its loss curve, the
runs table listing runs, and answers streamed from a real Serve app for the base model and the
run's adapter side by side. Screenshots are kept under the test's tmp dir (`screenshots/`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import DEMO_DATA
from serve_helpers import LoggedProcess, free_port

pytestmark = [pytest.mark.ui, pytest.mark.ray, pytest.mark.embedded]

CHROMIUM = Path("/usr/bin/chromium")
# As the workplace's probe starts it: without the background-networking flags Chromium keeps trying
# hosts a closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _skip_reason() -> str | None:
    if not CHROMIUM.is_file():
        return f"no {CHROMIUM} (Debian's chromium package; `make test` installs it when run as root)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


if _skip_reason():
    pytestmark.append(pytest.mark.skip(reason=_skip_reason()))


class UI(LoggedProcess):
    def __init__(self, root: Path, address: str):
        self.root = root
        self.storage, self.data = root / "runs", root / "data"
        self.data.mkdir(parents=True)
        self.dataset = self.data / "orders.jsonl"
        shutil.copyfile(DEMO_DATA, self.dataset)
        self.dataset_hash = hashlib.sha256(self.dataset.read_bytes()).hexdigest()
        self.port, self.serve_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.shots = root / "screenshots"
        self.shots.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
        super().__init__(
            [sys.executable, "-m", "rayft", "ui", "--port", str(self.port), "--storage", str(self.storage),
             "--data-dir", str(self.data), "--serve-url", f"http://127.0.0.1:{self.serve_port}",
             "--address", address], root, env, root / "ui.log")

    def wait_up(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"rayft ui exited {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(1)
        raise AssertionError(f"rayft ui did not answer in {timeout} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 6000) -> str:
        return super().log_tail(chars)


@pytest.fixture(scope="module")
def ui(ray_cluster, tmp_path_factory):
    """`rayft ui` joined to the session's Ray (a second local Ray on one machine cannot start its job
    agent while the first holds the agent's port)."""
    server = UI(tmp_path_factory.mktemp("ui"), ray_cluster.get_runtime_context().gcs_address)
    try:
        server.wait_up()
        yield server
    finally:
        server.stop()
    print(f"rayft ui screenshots: {server.shots}")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(ui, browser):
    tab = browser.new_page(viewport={"width": 1400, "height": 1000})
    tab.goto(ui.url)
    tab.wait_for_selector("#config-yaml", timeout=60_000)
    yield tab
    tab.close()


def field(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def type_into(page, elem_id: str, value: str) -> None:
    box = field(page, elem_id)
    box.fill(value)
    box.blur()


def wait_text(page, elem_id: str, text: str, timeout_s: float = 60) -> str:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "([id, text]) => (document.querySelector('#' + id)?.innerText || '').includes(text)",
            arg=[elem_id, text], timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        shown = {e: page.locator(f"#{e}").inner_text(timeout=1000) for e in
                 ("config-status", "start-status", "run-info", "run-action", "serve-status", "chat-status")
                 if page.locator(f"#{e}").count()}  # a tab not shown yet is not in the page
        raise AssertionError(f"#{elem_id} did not show {text!r} in {timeout_s} s; the page shows {shown}") from None
    return page.locator(f"#{elem_id}").inner_text()


def test_bad_fields_show_their_error_in_the_page(ui, page):
    assert "valid config" in wait_text(page, "config-status", "valid config", 30)
    type_into(page, "field-lr", "-1")
    shown = wait_text(page, "config-status", "training.lr", 30)
    assert "greater than 0" in shown and "Traceback" not in shown
    page.screenshot(path=str(ui.shots / "new_run_bad_field.png"), full_page=True)
    type_into(page, "field-lr", "1e-3")
    wait_text(page, "config-status", "valid config", 30)
    # A data file outside the folders the page was given is refused, named by its field.
    page.locator("#config-yaml .cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text("model: {name: 'builtin:tiny-random'}\ndata: {path: /etc/passwd}\n")
    shown = wait_text(page, "config-status", "data.path", 30)
    assert "outside the data folders" in shown
    page.locator("#start-run").click()
    assert "outside the data folders" in wait_text(page, "start-status", "Error", 30)
    assert not any((ui.storage).glob("ui-*")), "a refused config must not start a run"


def test_a_run_started_from_the_page_completes_and_its_curve_has_points(ui, page):
    # The embedded model on the page's data folder copy of the demo task, a short run.
    dataset = field(page, "dataset")
    dataset.fill(str(ui.dataset))
    dataset.press("Enter")
    for elem_id, value in (("field-max-steps", "8"), ("field-eval-steps", "4"), ("field-max-length", "128")):
        type_into(page, elem_id, value)
    page.locator("#field-eval input").uncheck()
    page.wait_for_function("document.querySelector('#config-yaml').innerText.includes('max_steps: 8')")
    assert "valid config" in wait_text(page, "config-status", "valid config", 30)
    type_into(page, "run-name", "from-the-page")
    page.locator("#start-run").click()
    assert "from-the-page" in wait_text(page, "start-status", "Started", 60)
    # The page switches to the Runs tab and follows the run until it completes.
    info = wait_text(page, "run-info", "completed", 420)
    assert "from-the-page" in info
    summary = json.loads((ui.storage / "from-the-page" / "sft" / "summary.json").read_text())
    read = summary["data"]["accounting"]["rows read"]
    # The run's data counts, as `rayft data inspect` words them: every row read in one line.
    counts = wait_text(page, "run-info", "rows read", 30)
    assert f"data of sft: {read} rows read" in counts and "trained on" in counts, counts
    curve = wait_text(page, "curve-info", "train/loss", 30)
    assert "train/loss: 8 points" in curve and "eval/loss: 2 points" in curve, curve
    page.wait_for_selector("#run-curve img", timeout=30_000)  # the plot of those points
    table = page.locator("#runs-table").inner_text()
    assert "from-the-page" in table and "completed" in table and "8/8" in table
    page.screenshot(path=str(ui.shots / "runs.png"), full_page=True)
    summary = json.loads((ui.storage / "from-the-page" / "sft" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 8
    assert (ui.storage / ".ui" / "configs" / "from-the-page.yaml").is_file()
    assert hashlib.sha256(ui.dataset.read_bytes()).hexdigest() == ui.dataset_hash  # input never modified


def test_runs_table_lists_a_run_not_started_from_the_page(ui, page):
    """A run directory that `rayft train` wrote elsewhere (here a copy of the page's run) is listed
    with the status its files give."""
    source = ui.storage / "from-the-page"
    if not (source / "sft" / "summary.json").is_file():
        pytest.skip("needs the run of the previous test")
    shutil.copytree(source, ui.storage / "copied-run")
    page.get_by_role("tab", name="Runs").click()
    cells = wait_text(page, "runs-table", "copied-run", 30).split()
    row = cells[cells.index("copied-run"):][:8]  # run, status, stage (2 words), step, loss, ...
    assert row[1] == "completed" and "8/8" in row, cells


def test_a_run_is_stopped_from_the_page(ui, page):
    """A long run of the tiny model, stopped with the button: its Ray job stops and the table says so."""
    model = field(page, "field-model")
    model.fill("builtin:tiny-random")
    model.press("Enter")
    type_into(page, "field-max-steps", "5000")
    page.locator("#field-eval input").uncheck()
    page.wait_for_function("document.querySelector('#config-yaml').innerText.includes('max_steps: 5000')")
    type_into(page, "run-name", "to-stop")
    page.locator("#start-run").click()
    wait_text(page, "start-status", "Started", 60)
    page.wait_for_function(  # training, not just submitted: a step is on record
        "() => /to-stop · running/.test(document.querySelector('#run-info')?.innerText || '')", timeout=180_000)
    wait_text(page, "runs-table", "/5000", 180)
    page.locator("#stop-run").click()
    assert "stop requested" in wait_text(page, "run-action", "stop", 30)
    page.wait_for_function(
        "() => /to-stop · (stopped|interrupted)/.test(document.querySelector('#run-info')?.innerText || '')",
        timeout=120_000)
    cells = page.locator("#runs-table").inner_text().split()
    assert cells[cells.index("to-stop") + 1] in ("stopped", "interrupted"), cells


def test_chat_streams_answers_from_the_base_model_and_the_adapter_side_by_side(ui, page):
    if not (ui.storage / "from-the-page" / "sft" / "adapter").is_dir():
        pytest.skip("needs the run of the earlier test")
    page.get_by_role("tab", name="Runs").click()
    picker = field(page, "run-select")
    picker.fill("from-the-page")
    picker.press("Enter")
    wait_text(page, "run-info", "from-the-page", 30)
    type_into(page, "adapter-id", "orders")
    page.locator("#register").click()
    assert "registered 'orders'" in wait_text(page, "run-action", "registered", 30)

    page.get_by_role("tab", name="Chat").click()
    page.locator("#start-serve").click()
    status = wait_text(page, "serve-status", "Serve is up", 240)
    assert "2 model(s)" in status, status
    model_b = field(page, "model-b")
    model_b.fill("orders")
    model_b.press("Enter")
    assert field(page, "model-a").input_value() == "smollm2-135m-instruct"
    # As the demo's rows reach the model in training: the instruction, a blank line, the message.
    instruction = json.loads(DEMO_DATA.read_text().splitlines()[0])["instruction"]
    type_into(page, "chat-prompt", f"{instruction}\n\nPlease send 3 red mugs to Oslo by Tuesday. Thanks, Ines")
    page.locator("#chat-send").click()
    assert "answers complete" in wait_text(page, "chat-status", "answers complete", 240)
    answers = {which: page.locator(f"#chat-{which} .bot").last.inner_text().strip() for which in "ab"}
    assert all(answers.values()) and not any("(error" in a for a in answers.values()), answers
    page.screenshot(path=str(ui.shots / "chat.png"), full_page=True)
    # Both answers came from the Serve app the page started: the page's own OpenAI client logs each
    # request it made there and the answer's status. (Not the replicas' access log: Ray forwards
    # worker logs to the driver asynchronously, and a streamed request's line can come late or not.)
    log = ui.log_tail(400_000)
    served = re.search(r"rayft serve: app 'rayft' at (http://\S+)/v1", log)
    assert served, log[-4000:]
    asked = log.count(f'POST {served.group(1)}/v1/chat/completions "HTTP/1.1 200 OK"')
    assert asked >= 2, log[-4000:]
