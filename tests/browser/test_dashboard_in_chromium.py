"""The dashboard in a real browser (Debian's chromium driven by Playwright) over the stack
`framewire run` starts: sign in with a token, every page without a console error, a camera
added in the page whose frames then show on it, and what a viewer and another origin may not
do. Screenshots of each page go to test-artifacts/dashboard/ (git-ignored)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import pytest

from tests.fixtures.common import (
    ensure_debian_packages,
    free_port,
    progress,
    unavailable,
    wait_until,
)

pytestmark = pytest.mark.integration

ARTEFACTS = Path(__file__).parents[2] / "test-artifacts" / "dashboard"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@dataclass
class Stack:
    """`framewire run` in a subprocess: its home, the gateway's URL and its tokens."""

    home: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    def framewire(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "framewire.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=60, check=True)
        return done.stdout

    def get(self, path: str, role: str = "admin") -> Any:
        request = urllib.request.Request(f"{self.url}{path}", headers={
            "Authorization": f"Bearer {self.tokens[role]}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("dashboard") / "home"
    home.mkdir()
    env = {**os.environ, "FRAMEWIRE_HOME": str(home),
           "FRAMEWIRE_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
           "FRAMEWIRE_PARTITIONS": "2", "FRAMEWIRE_DEMO_CAMERAS": "1",
           # inference on a shared CPU keeps up with this, so a new camera's frames queue
           # behind no backlog
           "FRAMEWIRE_DEMO_FPS": "2",
           "FRAMEWIRE_HEARTBEAT_INTERVAL_S": "0.5",
        "FRAMEWIRE_CAMERA_STALL_S": "2",  # a camera that ends shows stalled soon
           "FRAMEWIRE_GATEWAY__PORT": "0"}  # a free port: another run may hold 8080
    with (home / "run.out").open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "framewire.cli", "run"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    site = Stack(home, process, env)
    try:
        url_file = home / "gateway.url"
        wait_until(lambda: process.poll() is not None or url_file.exists(), 90,
                   "the gateway of `framewire run` to listen")
        assert process.poll() is None, (home / "run.out").read_text()[-3000:]
        site.url = url_file.read_text().strip()
        for role in ("admin", "viewer"):
            site.tokens[role] = site.framewire("token", "create", "--role", role, "--name",
                                               f"browser-{role}").strip().splitlines()[-1]
        yield site
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    ensure_debian_packages(request.config, {"chromium": "chromium"})
    executable = shutil.which("chromium")
    if executable is None:
        unavailable("Debian's chromium is not installed: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Console:
    """The console errors and uncaught exceptions of a page, as they come."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(
            f"{m.text} ({m.location.get('url')})"))
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))


@pytest.fixture(scope="module")
def admin(stack: Stack, browser: Any) -> Iterator[tuple[Any, Console]]:
    """A page signed in as admin through the login form."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    console = Console(page)
    page.goto(f"{stack.url}/")
    assert page.url.startswith(f"{stack.url}/login?next=")
    page.fill("input[name=token]", stack.tokens["admin"])
    page.click("button[type=submit]")
    page.wait_for_selector("h1:text('Overview')")
    yield page, console
    context.close()


def screenshot(page: Any, name: str, config: pytest.Config) -> Path:
    """Save the page, whole, as test-artifacts/dashboard/NAME.png and say where."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    progress(config, "dashboard", f"screenshot {path}")
    return path


def test_run_prints_the_dashboard_url_and_the_admin_token_hint(stack: Stack):
    out = wait_until(lambda: "dashboard " in (text := (stack.home / "run.out").read_text())
                     and text, 30, "framewire run to print the dashboard line")
    line = next(x for x in out.splitlines() if x.startswith("dashboard "))
    assert "framewire token create --role admin" in line


def test_every_page_loads_signed_in_without_console_errors(stack: Stack, admin, pytestconfig):
    page, console = admin
    results = wait_until(lambda: [r for r in stack.get("/api/v1/results?limit=50")
                                  if r["frame_url"]], 60, "a demo result with a stored frame")
    frame_id = results[0]["frame_id"]
    pages = {"overview": "/", "cameras": "/cameras", "detections": "/detections",
             "trace": f"/traces/{frame_id}", "deadletters": "/deadletters", "model": "/model",
             "jobs": "/jobs"}
    for name, path in pages.items():
        answer = page.goto(f"{stack.url}{path}")
        assert answer.status == 200, (path, answer.status)
        page.wait_for_load_state("load")
        if name == "detections":  # the gallery's thumbnails drawn, boxes and all
            page.wait_for_selector(".gallery canvas[data-frame-id]")
        if name == "trace":
            page.wait_for_selector(f".result canvas[data-frame-id='{frame_id}']")
            assert page.locator(".waterfall .span").count() >= 3
        if name == "cameras":
            page.wait_for_selector("article[data-camera] canvas[data-frame-id]")
        if name == "model" and page.locator(".model-now").count():  # the model route served
            page.wait_for_selector(".model-now dt:text('model') + dd:not(:text('…'))")
        if name == "jobs" or name == "model":
            page.wait_for_function("document.querySelector('[data-jobs] tbody td, "
                                   ".model-now dd')?.textContent !== '…'")
        screenshot(page, name, pytestconfig)
        assert console.errors == [], (path, console.errors)
    assert page.locator("nav a").count() == 6


def test_a_camera_added_in_the_page_shows_its_frames(stack: Stack, admin, tmp_path: Path,
                                                      pytestconfig):
    from skimage import data

    page, console = admin
    folder = tmp_path / "frames"
    folder.mkdir()
    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    for i in range(3):  # a face the default model finds, so frames are stored and boxed
        shifted = cv2.resize(face, (320, 320))[:, ::(1 if i % 2 else -1)]
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), shifted)
    page.goto(f"{stack.url}/cameras")
    page.fill("input[name=camera_id]", "browser-cam")
    page.fill("input[name=url]", str(folder))
    page.fill("input[name=fps]", "4")
    page.check("input[name=loop]")
    page.click("form.camera-form button[type=submit]")
    page.wait_for_url(f"{stack.url}/cameras")
    card = "article[data-camera='browser-cam']"
    page.wait_for_selector(f"{card} canvas[data-frame-id]", timeout=60_000)
    # the frame itself is drawn (many colours), not the empty placeholder
    colours = page.eval_on_selector(f"{card} canvas", """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length; i += 4 * 97) seen.add(d[i] << 16 | d[i+1] << 8 | d[i+2]);
        return seen.size; }""")
    assert colours > 50
    page.wait_for_function(f"document.querySelector(\"{card} .fps\").textContent !== '–'")
    screenshot(page, "cameras-added", pytestconfig)
    # its frames in the gallery, searched by camera and time
    page.goto(f"{stack.url}/detections?camera=browser-cam&since=10m&until=")
    page.wait_for_selector(".gallery canvas[data-frame-id]")
    assert set(page.locator(".shot span").all_inner_texts()) <= {
        "browser-cam · 1 detection(s)", "browser-cam · 0 detection(s)"}
    # edited (same id, new settings: no loop, so its three frames end and it stalls)
    page.goto(f"{stack.url}/cameras?edit=browser-cam")
    assert page.input_value("input[name=url]") == str(folder)
    page.fill("input[name=fps]", "2")
    page.uncheck("input[name=loop]")
    page.click("form.camera-form button[type=submit]")
    page.wait_for_selector(f"{card} dd:text('fps 2.0 (topic)')")
    wait_until(lambda: page.reload() and page.locator(f"{card} .badge:text('stalled')").count(),
               30, "the page to flag browser-cam stalled", interval_s=1.0)
    screenshot(page, "cameras-stalled", pytestconfig)
    # then removed
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"{card} button.danger")
    page.wait_for_url(f"{stack.url}/cameras")
    assert page.locator(card).count() == 0 or "topic" not in page.inner_text(card)
    assert console.errors == []
    audit = (stack.home / "logs" / "audit.log").read_text()
    assert '"action": "camera.add"' in audit and '"action": "camera.remove"' in audit
    assert '"via": "dashboard"' in audit


def test_a_viewer_gets_no_controls_and_a_cookie_from_another_origin_changes_nothing(
        stack: Stack, browser: Any):
    context = browser.new_context()
    page = context.new_page()
    console = Console(page)
    page.goto(f"{stack.url}/deadletters")
    page.fill("input[name=token]", "fw_nothing_known")
    page.click("button[type=submit]")
    assert page.locator("p.error").inner_text().startswith("unknown or revoked token")
    assert [e for e in console.errors if "401" in e and "/login" in e] == console.errors != []
    console.errors.clear()  # the refused sign-in answers 401, as it should
    page.fill("input[name=token]", stack.tokens["viewer"])
    page.click("button[type=submit]")
    page.wait_for_selector("h1:text('Dead letters')")  # back where it was sent from
    for path in ("/deadletters", "/cameras", "/model"):
        page.goto(f"{stack.url}{path}")
        assert page.locator("main form button").count() == 0, path
    origin = {"Origin": stack.url}
    refused = context.request.post(f"{stack.url}/cameras", headers=origin,
                                   form={"camera_id": "nope", "url": "/tmp"})
    assert refused.status == 403  # a viewer
    replay = f"{stack.url}/api/v1/deadletters/replay"
    assert context.request.post(replay, data={"dry_run": True}, headers=origin).status == 403
    assert context.request.get(f"{stack.url}/api/v1/status").status == 200  # the cookie reads
    # an admin's cookie from another origin (another port of the host is the same site)
    context.add_cookies([{"name": "framewire_token", "value": stack.tokens["admin"],
                          "url": stack.url}])
    elsewhere = {"Origin": "http://127.0.0.1:1"}
    assert context.request.post(replay, data={"dry_run": True}, headers=elsewhere).status == 403
    assert context.request.post(f"{stack.url}/cameras", headers=elsewhere,
                                form={"camera_id": "nope", "url": "/tmp"}).status == 403
    assert context.request.post(replay, data={"dry_run": True}, headers=origin).status == 200
    page.click("header form button")
    page.wait_for_url(f"{stack.url}/login")
    assert context.request.get(f"{stack.url}/api/v1/status").status == 401
    assert console.errors == []
    context.close()


def test_the_cameras_page_draws_a_cameras_zones_and_lines_with_its_counts_and_alerts(
        stack: Stack, admin, pytestconfig):
    from datetime import UTC, datetime, timedelta

    from framewire.analytics.records import Alert, AnalyticsEvent, WindowCount
    from framewire.store.analytics import store_alerts, store_events
    from framewire.store.db import open_database

    page, console = admin
    camera = wait_until(lambda: stack.get("/api/v1/results?limit=1"), 60,
                        "a demo result")[0]["camera_id"]
    settings = {"lines": [{"name": "door", "points": [[160, 0], [160, 240]]}],
                "zones": [{"name": "bay", "points": [[0, 120], [150, 120], [150, 240],
                                                     [0, 240]]}],
                "alerts": [{"when": "zone_count", "zone": "bay", "above": 1}]}
    put = urllib.request.Request(
        f"{stack.url}/api/v1/cameras/{camera}/analytics", data=json.dumps(settings).encode(),
        method="PUT", headers={"Authorization": f"Bearer {stack.tokens['admin']}",
                               "Content-Type": "application/json"})
    with urllib.request.urlopen(put, timeout=10) as answer:
        assert answer.status == 200
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    alert = {"alert_id": "browser-alert", "camera_id": camera, "rule": "zone_count:bay:1",
             "when": "zone_count", "zone": "bay", "above": 1, "for_s": 0.0,
             "started_at": end, "emitted_at": end, "frame_id": "f", "peak": 2}
    db = open_database(f"sqlite:///{(stack.home / 'framewire.db').resolve()}")
    try:  # as the storage stages store what the analytics service publishes
        store_events(db, [AnalyticsEvent(
            event_id="browser-window", camera_id=camera, type="window_count", name="door",
            at=end, emitted_at=end, window=WindowCount(
                "tumbling", end - timedelta(minutes=1), end, "line_cross", 3, "in"))])
        store_alerts(db, [Alert(**alert, state="firing", at=end, value=2)])
        page.goto(f"{stack.url}/cameras")
        card = f"article[data-camera='{camera}']"
        page.wait_for_selector(f"{card} svg.zones polygon.zone")
        assert page.locator(f"{card} svg.zones line.line").count() == 1
        assert page.locator(f"{card} svg.zones text").all_text_contents() == ["bay", "door"]
        page.wait_for_selector(f"{card} .counts li:text('door line_cross in: 3')")
        page.wait_for_selector(f"{card} .alerts li.firing")
        # stored while the page is open: it comes through the alerts' stream
        store_alerts(db, [Alert(**alert, state="resolved", at=end + timedelta(seconds=5),
                                value=0)])
        page.wait_for_selector(f"{card} .alerts li.resolved", timeout=15_000)
    finally:
        db.close()
    screenshot(page, "cameras-analytics", pytestconfig)
    assert console.errors == []
