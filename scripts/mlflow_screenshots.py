"""Screenshots of the MLflow UI over a tracking store, taken in headless Chromium: what a user sees in a browser.

    python scripts/mlflow_screenshots.py --store results/mlflow.db --experiment demo --out docs/figures

Starts `mlflow server` on 127.0.0.1 over the store (a sqlite file) and drives Chromium (Debian's `chromium`, not a
dependency of the project) through its DevTools protocol on a pipe, so no browser-automation package is needed.
It saves, for the experiment's latest Snakemake invocation:
- mlflow_runs.png: the runs list, the invocation's run expanded to its rule runs, with the Dataset and Models columns;
- mlflow_train_run.png: a trained model's run page: its parent run, datasets, metrics (linked to its model),
  parameters and logged model;
- mlflow_train_datasets.png: the same run's datasets drawer: each input's digest, source path, rows and schema;
- mlflow_compare.png: the compare view of the invocation's train runs, showing only what differs.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--remote-debugging-pipe")  # fmt: skip


class Chromium:
    """One headless Chromium page driven over --remote-debugging-pipe (commands on fd 3, replies on fd 4)."""

    def __init__(self, executable: str, width: int, height: int):
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        commands, self._commands = os.pipe()
        self._replies, replies = os.pipe()

        def use_pipes() -> None:  # in the child: its fds 3 and 4 become the two pipes
            first, second = os.dup(commands), os.dup(replies)
            os.dup2(first, 3)
            os.dup2(second, 4)

        self.process = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                        preexec_fn=use_pipes, close_fds=False, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip
        os.close(commands)
        os.close(replies)
        self._next_id = 0
        self._buffer = b""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.resize(width, height)

    def resize(self, width: int, height: int) -> None:
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip

    def send(self, method: str, session: bool = False, **params) -> dict:
        """Send one command and return its result (events that arrive meanwhile are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._replies, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium exited during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def type(self, text: str, key: str = "Enter") -> None:
        """Type `text` into the focused field, then press `key`."""
        self.send("Input.insertText", session=True, text=text)
        time.sleep(0.5)  # the picker filters its options
        codes = {"Enter": 13, "Escape": 27}
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", session=True, type=kind, key=key, code=key,
                      windowsVirtualKeyCode=codes[key])  # fmt: skip

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)  # fmt: skip
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60.0) -> None:
        """Poll a JavaScript condition until it holds: the MLflow UI renders after its API calls return."""
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never satisfied: {expression}")
            time.sleep(0.5)

    def open(self, url: str | None, ready: str) -> None:
        """Go to `url` (None: reload the page, so the app reads its stored view again) and wait until `ready`."""
        if url is None:
            self.send("Page.reload", session=True)
            time.sleep(1.0)  # the old document is still there until the reload starts
        else:
            self.send("Page.navigate", session=True, url=url)
        self.wait_for(ready)
        time.sleep(2.0)  # charts and column layouts settle after the data arrives

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"mlflow_screenshots: wrote {path}", flush=True)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except RuntimeError:
            pass
        self.process.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: Path, port: int) -> subprocess.Popen:
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{store.resolve()}",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(1)
    server.terminate()
    raise TimeoutError(f"mlflow server on port {port} did not answer in 120 s")


def latest_invocation(client, experiment_id: str):
    """The latest Snakemake invocation's run and its train runs, by name."""
    found = client.search_runs([experiment_id], "tags.rule = 'snakemake'", order_by=["attributes.start_time DESC"],
                               max_results=1)  # fmt: skip
    if not found:
        sys.exit("mlflow_screenshots: no Snakemake invocation in the experiment (run the workflow first)")
    trained = client.search_runs([experiment_id], f"tags.rule = 'train' and tags.mlflow.parentRunId = "
                                 f"'{found[0].info.run_id}'", order_by=["attributes.run_name ASC"])  # fmt: skip
    if not trained:
        sys.exit(f"mlflow_screenshots: the latest invocation {found[0].info.run_name!r} trained nothing")
    return found[0], trained


# The UI's model-training views (not GenAI's traces and judges) in its sidebar and pages.
MODEL_TRAINING = "workflowType=machine_learning"
# The runs list keeps its view in localStorage: expand the invocation's run to its rule runs, widen the run names
# and datasets, keep the assistant panel closed. Only keys the UI itself wrote are changed.
RUNS_VIEW = """(() => {
  localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
  const suffix = 'ExperimentPage-[' + JSON.stringify(%(experiment)s) + ']-ReactComponentState';
  const key = Object.keys(localStorage).find(k => k.endsWith(suffix));
  if (!key) return false;
  const state = JSON.parse(localStorage.getItem(key));
  state.runsExpanded = {[%(run)s]: true};
  // Stored widths apply to the columns of a stored order: the order shown now, with two columns widened.
  state.columnOrder = [...document.querySelectorAll('.ag-header-cell[col-id]')].map(h => h.getAttribute('col-id'));
  state.columnWidths = {...state.columnWidths, 'attributes.`Run Name`': 300, 'attributes.`Dataset`': 520};
  localStorage.setItem(key, JSON.stringify(state));
  return true;
})()"""
# Opens the run page's datasets drawer by clicking the first dataset.
OPEN_DATASETS = """(() => {
  const chip = [...document.querySelectorAll('[role=button]')].find(e => e.innerText.includes(%s));
  if (chip) chip.click();
  return Boolean(chip);
})()"""
# Turns on every "Show diff only" switch of the compare view (parameters, metrics, tags).
DIFF_ONLY = """(() => {
  const labels = [...document.querySelectorAll('label')].filter(l => l.innerText.trim() === 'Show diff only');
  labels.forEach(l => document.getElementById(l.htmlFor).click());
  return labels.length;
})()"""


# Empties the parallel-coordinates plot's parameter and metric pickers (the UI's defaults are the differing
# parameters against the training loss) and focuses the metric picker.
CLEAR_PLOT = """(() => {
  let remove;
  while ((remove = document.querySelector('.du-bois-light-select-selection-item-remove'))) remove.click();
  const pickers = document.querySelectorAll('input[type=search]');
  if (pickers.length < 2) return false;
  pickers[1].focus();
  return true;
})()"""


def has_text(text: str) -> str:
    return f"document.body.innerText.includes({json.dumps(text)})"


def shrink(path: Path) -> None:
    """A 256-colour palette: the UI's flat colours survive it, the file shrinks to about a third."""
    from PIL import Image

    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=256).save(path, optimize=True)


def take(browser: Chromium, path: Path) -> None:
    browser.screenshot(path)
    shrink(path)


def screenshots(browser: Chromium, url: str, experiment_id: str, parent, trained, out: Path, width: int,
                plot_metrics: list[str]) -> None:  # fmt: skip
    """The four views, from the UI at `url`; the compare view plots `plot_metrics` (those the runs logged)."""
    base = f"{url}/#/experiments/{experiment_id}"
    browser.resize(width, 1000)
    browser.open(f"{base}/runs?{MODEL_TRAINING}", ready=has_text(parent.info.run_name))
    view = {"experiment": json.dumps(experiment_id), "run": json.dumps(parent.info.run_id)}
    if not browser.evaluate(RUNS_VIEW % view):
        raise RuntimeError("the MLflow UI stored no view of the runs list: its layout changed")
    browser.open(None, ready=has_text(trained[0].info.run_name))
    take(browser, out / "mlflow_runs.png")

    run = next((r for r in trained if r.info.run_name == "train-basic"), trained[0])
    first_input = run.inputs.dataset_inputs[0].dataset.name
    browser.resize(width, 1750)  # down to the run's logged model, below its metrics and parameters
    browser.open(f"{base}/runs/{run.info.run_id}?{MODEL_TRAINING}", ready=has_text("Logged models"))
    take(browser, out / "mlflow_train_run.png")
    browser.resize(width, 1000)
    browser.open(f"{base}/runs/{run.info.run_id}?{MODEL_TRAINING}", ready=has_text(first_input))
    if not browser.evaluate(OPEN_DATASETS % json.dumps(first_input)):
        raise RuntimeError(f"no dataset {first_input!r} to click on the run page")
    browser.wait_for(has_text("datasets used"))
    time.sleep(1.0)
    take(browser, out / "mlflow_train_datasets.png")

    ids = urllib.parse.quote(json.dumps([r.info.run_id for r in trained]))
    browser.resize(width, 1640)  # down to the metrics that differ
    browser.open(f"{url}/#/compare-runs?runs={ids}&experiments={urllib.parse.quote(json.dumps([experiment_id]))}"
                 f"&{MODEL_TRAINING}", ready=has_text(trained[-1].info.run_name))  # fmt: skip
    if not browser.evaluate(DIFF_ONLY):
        raise RuntimeError("no 'Show diff only' switch on the compare view")
    logged = set().union(*(run.data.metrics for run in trained))
    if not browser.evaluate(CLEAR_PLOT):
        raise RuntimeError("no parameter and metric pickers on the compare view")
    for metric in [m for m in plot_metrics if m in logged]:
        browser.type(metric)
    browser.type("", key="Escape")
    browser.evaluate("document.activeElement.blur()")
    time.sleep(1.0)
    take(browser, out / "mlflow_compare.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="the sqlite store (results/mlflow.db)")
    parser.add_argument("--experiment", required=True, help="the MLflow experiment (the config's `experiment`)")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--plot-metrics", nargs="+", help="metrics the compare view plots across the train runs",
                        default=["train_pairs", "eval_tuxpaint.mean_recall_at_1",
                                 "eval_shapes.caption_selection_accuracy"])  # fmt: skip
    args = parser.parse_args(argv)

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{args.store.resolve()}")
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        sys.exit(f"mlflow_screenshots: {args.store}: no experiment {args.experiment!r}")
    parent, trained = latest_invocation(client, experiment.experiment_id)
    trained = [client.get_run(run.info.run_id) for run in trained]  # with their inputs
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = start_server(args.store, port)
    try:
        browser = Chromium(args.chromium, args.width, 1000)
        try:
            screenshots(browser, f"http://127.0.0.1:{port}", experiment.experiment_id, parent, trained, args.out,
                        args.width, args.plot_metrics)  # fmt: skip
        finally:
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
