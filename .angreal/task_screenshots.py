"""`angreal task screenshots`: re-make the dashboard picture in docs/ from a real example workflow.

Steps, each streamed to the terminal:
1. An interpreter that imports ``cloacina``: ``--python PATH`` when given (nothing is built or
   installed); otherwise a fresh ``target/screenshots/venv`` with maturin, the ``cloacina-sqlite``
   wheel built by ``maturin build --release`` (``build_steps.build_wheel``) and the dispatcher.
2. ``examples/nightly_etl.py`` on a fresh SQLite file in a temporary directory.
3. ``python -m cloacina ui`` on that file, on a free port, until ``/api/health`` answers.
4. ``chromedriver`` (Debian's ``chromium-driver``) on a free port, driving headless ``chromium``
   over the W3C WebDriver protocol with ``urllib`` (no selenium): a fixed 1200x850 viewport, UTC
   and en-US, the execution page opened, then a wait until it shows what the API holds (the status
   badge, one graph node per task, one timeline bar per attempt, fonts loaded), then the PNG.
5. ``optipng`` on the PNG when it is on PATH (optional; lossless).

Whatever happens, the browser session is closed and chromedriver (with the browser it started)
and the dashboard server are stopped by pid: SIGTERM to the process group each was started in,
SIGKILL after a few seconds. Every wait has a deadline.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import angreal

from build_steps import build_env, build_wheel, repo_root, run_step, venv_bin

task = angreal.command_group(name="task", about="Cloacina development tasks")

EXAMPLE = "nightly_etl.py"
WORKFLOW = "nightly_etl"
PICTURE = "dashboard-execution.png"
VIEWPORT = (1200, 850)  # CSS pixels at scale 1, the picture's size: the header, graph and timeline
CHROMIUM = os.environ.get("CLOACINA_SCREENSHOT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CLOACINA_SCREENSHOT_CHROMEDRIVER", "/usr/bin/chromedriver")
DEADLINE = 30.0  # seconds allowed for anything this task waits for
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL

# True once the execution page shows the record the API returned (arguments: status, nodes, bars).
RENDERED = """
const [status, nodes, bars] = arguments;
const badge = document.querySelector('#execution-status .badge');
return document.readyState === 'complete' && document.fonts.status === 'loaded'
  && badge !== null && badge.textContent === status
  && document.querySelectorAll('#graph g.node').length === nodes
  && document.querySelectorAll('#timeline .attempt').length === bars;
"""


class ScreenshotError(Exception):
    """A step failed; the message says which and why."""


# --- processes -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def started(step: str, cmd: List[object], cwd: Path, env: Dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Runs ``cmd`` in its own process group, output to ``log``; on exit stops the group by pid."""
    print(f"\n==> [{step}] {' '.join(str(c) for c in cmd)}", flush=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=str(cwd), env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(step, proc)


def stop_group(step: str, proc: subprocess.Popen) -> None:
    """SIGTERM to the process group led by ``proc`` (its pid), SIGKILL if still there after the grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; children it started (the browser) may linger in the group a moment.
        if not _group_alive(proc.pid, STOP_GRACE):
            break
    if _group_alive(proc.pid, 0.5):
        print(f"==> [{step}] WARNING: process group {proc.pid} still has processes after SIGKILL", flush=True)
    else:
        print(f"==> [{step}] stopped (pid {proc.pid})", flush=True)


def _group_alive(pgid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    return True


def wait_for(condition: Callable[[], Any], what: str, proc: Optional[subprocess.Popen] = None,
             log: Optional[Path] = None) -> Any:
    """``condition()``'s first truthy value, polled until DEADLINE; fails early if ``proc`` exits."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log else ""
            raise ScreenshotError(f"{what}: the process exited with {proc.returncode}\n{tail}")
        if time.monotonic() > deadline:
            raise ScreenshotError(f"{what}: not within {DEADLINE:.0f} s")
        time.sleep(0.1)


# --- HTTP: the dashboard's API and the WebDriver protocol ------------------------------------

def http(method: str, url: str, body: Optional[Dict[str, Any]] = None) -> Any:
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, method=method, data=data,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE) as response:
            return json.loads(response.read().decode("utf-8") or "null")
    except urllib.error.HTTPError as error:
        with error:
            text = error.read().decode("utf-8", errors="replace")
        try:  # WebDriver errors: {"value": {"error": ..., "message": ...}}
            text = json.loads(text)["value"]["message"].splitlines()[0]
        except (ValueError, KeyError, TypeError, IndexError):
            text = text[:300]
        raise ScreenshotError(f"{method} {url}: HTTP {error.code}: {text}") from None


def answers(url: str) -> bool:
    try:
        http("GET", url)
        return True
    except (OSError, ValueError, ScreenshotError):
        return False


class Browser:
    """One headless chromium session driven through chromedriver's W3C WebDriver endpoint."""

    def __init__(self, driver_url: str) -> None:
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", "--force-device-scale-factor=1", "--lang=en-US",
                     f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}"]}}
        created = http("POST", f"{driver_url}/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.url = f"{driver_url}/session/{created['value']['sessionId']}"
        self.call("POST", "/timeouts", {"pageLoad": int(DEADLINE * 1000), "script": int(DEADLINE * 1000)})
        # The picture must not depend on this machine's screen, time zone or language.
        self.cdp("Emulation.setDeviceMetricsOverride",
                 {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False})
        self.cdp("Emulation.setTimezoneOverride", {"timezoneId": "UTC"})
        self.cdp("Emulation.setLocaleOverride", {"locale": "en-US"})

    def call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        return http(method, self.url + path, body)["value"]

    def cdp(self, command: str, params: Dict[str, Any]) -> Any:
        return self.call("POST", "/goog/cdp/execute", {"cmd": command, "params": params})

    def open(self, url: str) -> None:
        self.call("POST", "/url", {"url": url})

    def script(self, source: str, *args: Any) -> Any:
        return self.call("POST", "/execute/sync", {"script": source, "args": list(args)})

    def png(self) -> bytes:
        return base64.b64decode(self.call("GET", "/screenshot"))

    def close(self) -> None:
        try:
            http("DELETE", self.url)
        except (OSError, ValueError) as exc:
            print(f"==> [browser] closing the session failed ({exc}); chromedriver's group is stopped next",
                  flush=True)


@contextmanager
def browser_session(driver_url: str) -> Iterator[Browser]:
    browser = Browser(driver_url)
    try:
        yield browser
    finally:
        browser.close()


# --- steps -----------------------------------------------------------------------------------

def screenshot_venv(root: Path, env: Dict[str, str]) -> Path:
    """target/screenshots/venv, fresh, with the cloacina-sqlite wheel (built here) and the dispatcher."""
    venv = root / "target" / "screenshots" / "venv"
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    python = venv_bin(venv, "python")
    if not (run_step("venv", [sys.executable, "-m", "venv", venv], root, env)
            and run_step("maturin", [python, "-m", "pip", "install", "--quiet", "maturin>=1.9,<2"], root, env)):
        raise ScreenshotError("could not make the virtualenv")
    wheel = build_wheel(root, venv, "sqlite", root / "target" / "screenshots" / "wheels-sqlite", env)
    if wheel is None or not run_step("install", [python, "-m", "pip", "install", "--quiet", "--force-reinstall",
                                                 "--no-deps", wheel, root / "cloacina-dispatcher"], root, env):
        raise ScreenshotError("could not build and install cloacina-sqlite")
    return python


def expected_page(api: str, workflow: str) -> Dict[str, Any]:
    """The newest execution of ``workflow`` and what its page must show once drawn."""
    listed = http("GET", f"{api}executions?workflow={workflow}&limit=1")["executions"]
    if not listed:
        raise ScreenshotError(f"the dashboard lists no execution of {workflow}")
    record = http("GET", f"{api}executions/{listed[0]['execution_id']}")
    tasks = record["task_results"]
    bars = sum(1 for t in tasks for h in t.get("history") or [] if h.get("started_at"))
    return {"id": record["execution_id"], "status": record["status"], "nodes": len(tasks), "bars": bars}


def capture(root: Path, python: Path, env: Dict[str, str], work: Path, picture: Path) -> None:
    database = f"sqlite:///{work / 'nightly_etl.db'}"
    if not run_step("example", [python, root / "examples" / EXAMPLE, database], work, env):
        raise ScreenshotError(f"examples/{EXAMPLE} did not end as expected")

    ui_port, driver_port = free_port(), free_port()
    ui_log, driver_log = work / "ui.log", work / "chromedriver.log"
    ui_cmd: List[object] = [python, "-m", "cloacina", "ui", "--db", database, "--port", ui_port]
    driver_env = dict(env, TZ="UTC", LANG="en_US.UTF-8")
    with started("cloacina ui", ui_cmd, work, env, ui_log) as ui, \
            started("chromedriver", [CHROMEDRIVER, f"--port={driver_port}"], work, driver_env, driver_log) as driver:
        site = f"http://127.0.0.1:{ui_port}"
        wait_for(lambda: answers(f"{site}/api/health"), "the dashboard answering /api/health", ui, ui_log)
        driver_url = f"http://127.0.0.1:{driver_port}"
        wait_for(lambda: answers(f"{driver_url}/status"), "chromedriver answering /status", driver, driver_log)
        page = expected_page(f"{site}/api/", WORKFLOW)
        print(f"==> [browser] execution {page['id']} ({page['status']}, {page['nodes']} tasks, "
              f"{page['bars']} attempts) at {VIEWPORT[0]}x{VIEWPORT[1]}", flush=True)
        with browser_session(driver_url) as browser:
            browser.open(f"{site}/executions/{page['id']}")
            wait_for(lambda: browser.script(RENDERED, page["status"], page["nodes"], page["bars"]),
                     "the execution page drawn")
            picture.write_bytes(browser.png())
    print(f"==> [screenshot] {picture.relative_to(root)} ({picture.stat().st_size} bytes)", flush=True)


def optimise(root: Path, picture: Path, env: Dict[str, str]) -> None:
    optipng = shutil.which("optipng")
    if optipng is None:
        print("==> [optipng] not on PATH: the PNG is left as chromium wrote it", flush=True)
        return
    if run_step("optipng", [optipng, "-quiet", "-o2", "-strip", "all", picture], root, env):
        print(f"==> [optipng] {picture.stat().st_size} bytes", flush=True)


@task()
@angreal.command(name="screenshots", about="Re-make docs/dashboard-execution.png from examples/nightly_etl.py")
@angreal.argument(name="python", long="python", required=False,
                  help="an interpreter that already imports cloacina (skips building the wheel)")
def screenshots(python: Optional[str] = None) -> int:
    root = repo_root()
    env = build_env(root)
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        print(f"screenshots: {' and '.join(missing)} missing (Debian: apt-get install chromium chromium-driver)",
              flush=True)
        return 1
    picture = root / "docs" / PICTURE
    try:
        # Not resolved: a virtualenv's python is a symlink, and the link is what finds the venv.
        interpreter = Path(os.path.abspath(shutil.which(python) or python)) if python else screenshot_venv(root, env)
        if not run_step("cloacina", [interpreter, "-c", "import cloacina; print(cloacina.backend, cloacina.__file__)"],
                        root, env):
            raise ScreenshotError(f"{interpreter} cannot import cloacina")
        with tempfile.TemporaryDirectory(prefix="cloacina-screenshots-") as work:
            capture(root, interpreter, env, Path(work), picture)
        optimise(root, picture, env)
    except (ScreenshotError, OSError, ValueError, KeyError) as exc:
        print(f"\nscreenshots: FAILED: {exc}", flush=True)
        return 1
    return 0
