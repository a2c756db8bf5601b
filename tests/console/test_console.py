"""The web console in a real browser: Debian's Chromium, driven headless by Playwright,
against `python -m app` serving the real models in `models/`. Every page is used as a
person would (files picked and dropped, forms filled, buttons clicked), and no page may
log an error (a Content-Security-Policy violation included).

With DEEPSERVE_SCREENSHOTS=<folder>, each page's screenshot is saved there
(`make screenshots` refreshes the ones in docs/)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.fraud.features import ALL_FEATURES
from tests.conftest import REPO_ROOT
from tests.server import running_server

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the console tests need the playwright package"
)
expect = playwright_api.expect
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="the console tests need Debian's chromium (apt install chromium)"
)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
ADMIN = "admin-console-key-0123"
ANALYST = "analyst-console-key-0123"
SCREENSHOTS = os.environ.get("DEEPSERVE_SCREENSHOTS")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    keys = f"{ADMIN}:admin:ops,{ANALYST}:analyst:alice"
    with running_server(log_level="warning", grpc_port="0", api_keys=keys) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    """A fresh browser session on the console, signed in with the admin key; fails the
    test on any error the page logs."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(server + "/")
    sign_in(tab, ADMIN)
    yield tab
    context.close()
    # A 4xx the page provoked on purpose is logged by Chromium as a failed resource.
    unexpected = [e for e in errors if "the server responded with a status of 4" not in e]
    assert unexpected == []


def sign_in(tab: Any, key: str, role: str = "admin") -> None:
    tab.fill("#api-key", key)
    tab.click("#key-form button")
    expect(tab.locator("#key-role")).to_contain_text(f"role: {role}")


def api(server: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    answer = httpx.request(method, server + path, headers=headers, timeout=30, **kwargs)
    assert answer.status_code == 200, answer.text
    return answer


def screenshot(tab: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(Path(SCREENSHOTS) / f"console-{name}.png"))


def test_the_page_is_served_with_a_strict_policy_and_under_200_kb(server: str) -> None:
    answer = httpx.get(server + "/")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert answer.headers["cache-control"] == "no-cache"
    asset = httpx.get(server + "/console/js/main.js")
    assert asset.status_code == 200 and "max-age" in asset.headers["cache-control"]
    assert "etag" in asset.headers
    files = [f for f in (REPO / "app" / "console").rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 200_000


def test_the_key_field_says_which_role_the_key_has(page: Any) -> None:
    assert page.inner_text("#key-role") == "role: admin (ops)"
    sign_in(page, ANALYST, "analyst")
    assert page.inner_text("#key-role") == "role: analyst (alice)"


def test_a_dropped_cifar10_image_gets_its_label_first(page: Any) -> None:
    page.wait_for_selector("#image-model option[value=cifar10]", state="attached")
    page.select_option("#image-model", "cifar10")
    encoded = base64.b64encode((DATA / "ship.jpg").read_bytes()).decode()
    page.evaluate(
        """([name, data]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const files = new DataTransfer();
            files.items.add(new File([bytes], name, { type: "image/jpeg" }));
            const drop = document.getElementById("drop");
            const options = { dataTransfer: files, bubbles: true, cancelable: true };
            drop.dispatchEvent(new DragEvent("drop", options));
        }""",
        ["ship.jpg", encoded],
    )
    page.wait_for_selector(".result")
    assert page.inner_text(".result li .label") == "ship"
    assert len(page.query_selector_all(".result li")) == 5
    assert "ms" in page.inner_text("#images-status")
    page.set_input_files("#image-files", [str(DATA / "cat.jpg"), str(DATA / "ship.jpg")])
    expect(page.locator(".result")).to_have_count(2)
    firsts = [e.inner_text() for e in page.query_selector_all(".result li:first-child .label")]
    assert firsts == ["cat", "ship"]
    screenshot(page, "images")


def test_an_api_error_is_shown_in_words(page: Any, tmp_path: Path) -> None:
    page.wait_for_selector("#image-model option[value=cifar10]", state="attached")
    page.select_option("#image-model", "cifar10")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    page.set_input_files("#image-files", str(text))
    page.wait_for_selector("#images-status.error")
    message = page.inner_text("#images-status")
    assert message.startswith("Not classified:") and "image" in message


def test_a_payment_is_scored_with_its_reasons_in_words(page: Any, server: str) -> None:
    for hour in range(10, 16):
        api(server, "POST", "/v1/fraud/transactions", json=_payment(f"p{hour}", 31, 20.0, hour))
    page.goto(page.url.split("#")[0] + "#transactions")
    page.fill("#payment-card", "31")
    page.fill("#payment-amount", "2000")
    page.fill("#payment-time", "2026-12-01T23:30:00")
    page.click("#payment-form button")
    page.wait_for_selector("#payment-reasons")
    assert page.inner_text("#payment-decision") in ("review", "decline")
    assert "times card 31's 30-day average" in page.inner_text("#payment-reasons")
    # Every feature the history computes, the benchmark's 15 and its own 2.
    assert len(page.query_selector_all("#payment-features tbody tr")) == len(ALL_FEATURES)
    page.wait_for_selector("#payment-history td")
    assert "2000.00" in page.inner_text("#payment-history")
    screenshot(page, "transactions")
    # What if: scored, not recorded.
    page.check("#payment-what-if")
    page.fill("#payment-amount", "15")
    page.click("#payment-form button")
    page.wait_for_function(
        "document.getElementById('payment-status').textContent.includes('not recorded')"
    )
    card = api(server, "GET", "/v1/fraud/customers/31").json()
    assert [t["amount"] for t in card["transactions"]][:1] == [2000.0]


def test_resolving_an_alert_freezes_the_card(page: Any, server: str) -> None:
    for hour in range(10, 16):
        api(server, "POST", "/v1/fraud/transactions", json=_payment(f"q{hour}", 42, 20.0, hour))
    big = api(server, "POST", "/v1/fraud/transactions", json=_payment("q-big", 42, 2500.0, 23))
    assert big.json()["results"][0]["decision"] != "approve"
    page.goto(page.url.split("#")[0] + "#alerts")
    row = page.wait_for_selector("#alerts-table tbody tr:has(td:text-is('42'))")
    row.focus()
    page.keyboard.press("Enter")  # keyboard-usable
    page.wait_for_selector("#resolve-note")
    assert "times card 42's 30-day average" in page.inner_text("#alert-detail")
    screenshot(page, "alerts")
    page.fill("#resolve-note", "holder did not pay this")
    page.click("button.fraud")
    page.wait_for_selector("#alert-frozen")
    assert "Resolved fraud by ops" in page.inner_text("#alert-resolution")
    page.wait_for_selector("#frozen-table tr[data-card='42']")
    frozen = api(server, "GET", "/v1/fraud/frozen").json()["frozen"]
    assert any(f["customer_id"] == 42 and f["by"] == "ops" for f in frozen)
    page.click("#frozen-table tr[data-card='42'] button")
    page.wait_for_selector("#frozen-table tr[data-card='42']", state="detached")


def test_the_models_page_shows_versions_and_states(page: Any) -> None:
    page.goto(page.url.split("#")[0] + "#models")
    page.wait_for_selector("#model-fraud")
    text = page.inner_text("#models-list")
    assert "fraud" in text and "cifar10" in text and "ready" in text
    assert "test_auc_roc" in text  # metrics from the card
    # The committed fraud model: the newest on the history's set, an older one on the 15.
    newest = max(
        int(v.name) for v in (REPO_ROOT / "models" / "fraud").iterdir() if v.name.isdigit()
    )
    card = json.loads((REPO_ROOT / "models" / "fraud" / str(newest) / "model.json").read_text())
    assert f"serving version {newest}" in text
    assert "version 7 where clients send the features" in text
    assert card["tabular"]["feature_set"] in text and "benchmark-15" in text
    assert page.query_selector("button:text('Unload version 7')") is not None  # admin
    screenshot(page, "models")


def test_the_live_charts_move_under_load(page: Any, server: str) -> None:
    page.goto(page.url.split("#")[0] + "#live")
    stop = threading.Event()

    def load() -> None:
        body = (DATA / "transaction.json").read_bytes()
        headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
        with httpx.Client(base_url=server, headers=headers) as client:
            while not stop.is_set():
                client.post("/v1/fraud/score", content=body)

    sender = threading.Thread(target=load)
    sender.start()
    try:
        # "fraud: 0.0" until the load shows: then at least 1 request/s.
        rps = page.locator("[data-chart=rps] .now")
        expect(rps).to_have_text(
            re.compile(r"fraud: ([1-9][0-9]*|[0-9]*\.[0-9]*[1-9])"), timeout=20_000
        )
        time.sleep(12 if SCREENSHOTS else 2.5)  # more points on the charts
        screenshot(page, "live")
    finally:
        stop.set()
        sender.join()
    assert "fraud" in page.inner_text("[data-chart=p99] .now")


@pytest.mark.parametrize("name", ["images", "transactions", "alerts", "models", "live"])
def test_each_page_fits_360_px_without_scrolling_sideways(
    browser: Any, server: str, name: str
) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740})
    tab = context.new_page()
    tab.goto(f"{server}/#{name}")
    sign_in(tab, ADMIN)
    tab.wait_for_timeout(500)  # the page's data
    assert tab.evaluate("document.documentElement.scrollWidth") <= 360
    context.close()


def _payment(tid: str, card: int, amount: float, hour: int) -> dict[str, Any]:
    return {
        "transaction_id": tid,
        "customer_id": card,
        "terminal_id": 8,
        "amount": amount,
        "timestamp": f"2026-12-01T{hour:02d}:30:00",
    }
