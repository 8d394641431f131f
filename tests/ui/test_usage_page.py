"""The usage page in a real browser (headless Debian chromium through Playwright) over the
whole local stack with the stand-in model: after a tenant's requests end, the page shows what
the ledger has: the balance, the budget levels of `/v1/quota`, each request with its status
and charged tokens, and the tokens over time. Also writes the README's screenshot (to
`QF_UI_SCREENSHOT` when set)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quotaflow import client
from quotaflow.adapters import postgres as db
from quotaflow.adapters import tenant_store as tenants
from quotaflow.devstack.stack import DevStack
from quotaflow.ledger.projection import RedisProjection
from quotaflow.ledger.store import PostgresLedger
from tests.e2e.conftest import start_stack
from tests.ui.browser import browser, chromium_path, expect

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UI_REDIS_DB = 14
GRANT = 160  # tokens: the five requests below spend about a third of it
PROMPTS = ["What is the capital of France?", "Name three colours of the rainbow.",
           "Summarise the plot of Hamlet in one line.", "Translate good morning to Spanish."]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    chromium_path()  # fail before minutes of stack start when there is no browser
    s = start_stack(tmp_path_factory.mktemp("ui-stack"), database="qf_test_ui_page",
                    redis_db=UI_REDIS_DB)
    analytics = None if "analytics" in s.procs else start_analytics(s)
    yield s
    if analytics is not None:
        analytics.terminate()
        analytics.wait(10)
    s.down()


def start_analytics(stack: DevStack) -> subprocess.Popen[bytes]:
    """The usage roll-ups' consumer, for a stack that does not run one itself."""
    env = {**os.environ, **stack.settings.as_env(), **stack.child_env, "PYTHONUNBUFFERED": "1"}
    with (stack.logs / "analytics.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "quotaflow", "analytics", "run"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)


def ledger_balance(stack: DevStack, tenant: str) -> dict[str, Any]:
    with db.connect(stack.settings.postgres_url, autocommit=True) as conn:
        ledger = PostgresLedger(conn)
        period = ledger.current_period(tenant)
        b = ledger.balance(tenant, period)
    return {"period": period, "granted": b.granted, "reserved": b.reserved, "spent": b.spent,
            "remaining": b.remaining}


def usage_total(stack: DevStack, key: str) -> int:
    req = urllib.request.Request(f"{stack.admit_url}/v1/usage?by=minute&group=model",
                                 headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return sum(int(r["charged_tokens"]) for r in json.load(resp))


def quota_levels(stack: DevStack, key: str) -> list[dict[str, Any]]:
    req = urllib.request.Request(f"{stack.admit_url}/v1/quota",
                                 headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return list(json.load(resp)["levels"])


def run_requests(stack: DevStack) -> tuple[str, str, list[dict[str, Any]]]:
    tenant = f"ui-{uuid.uuid4().hex[:8]}"
    with db.connect(stack.settings.postgres_url, autocommit=True) as conn:
        key = tenants.create_tenant(conn, tenant, GRANT)
        RedisProjection.connect(stack.settings.redis_url).catch_up(PostgresLedger(conn))
    model = stack.settings.model_name
    data = [{"model": model, "prompt": p, "max_tokens": 6 + 4 * i}
            for i, p in enumerate(PROMPTS)]
    # Passes admit's pre-check (max_tokens + 1 fits) but not the ledger: prompt + max_tokens
    # is more than the grant, so it ends `rejected`, charged nothing.
    data.insert(2, {"model": model, "prompt": " ".join(["word"] * GRANT), "max_tokens": 8})
    ids = [str(client.submit(stack.admit_url, key, d)["request_id"]) for d in data]
    ended = [client.wait(stack.admit_url, key, rid, timeout_s=60) for rid in ids]
    return tenant, key, ended


def test_the_usage_page_shows_what_the_ledger_has(stack: DevStack, tmp_path: Path) -> None:
    tenant, key, ended = run_requests(stack)
    assert [r["status"] for r in ended] == ["completed"] * 2 + ["rejected"] + ["completed"] * 2
    balance = ledger_balance(stack, tenant)
    assert balance["spent"] == sum(r["usage"]["charged_tokens"] for r in ended) > 0
    deadline = time.monotonic() + 60  # the analytics consumer rolls up asynchronously
    while usage_total(stack, key) != balance["spent"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert usage_total(stack, key) == balance["spent"]

    with browser() as b:
        page = b.new_page(viewport={"width": 1280, "height": 860}, locale="en-US",
                          timezone_id="UTC")
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{stack.admit_url}/ui/")

        page.fill("#api-key", "qf_not-a-key")
        page.click("button[type=submit]")
        page.wait_for_selector("#error:not([hidden])")
        assert "not valid" in page.inner_text("#error")
        assert page.is_visible("#sign-in")
        problems.clear()  # the browser logs the refused calls' 401s

        page.fill("#api-key", key)
        page.click("button[type=submit]")
        page.wait_for_selector("#dashboard[data-loaded=true]")
        expect(page.locator("#requests tbody tr")).to_have_count(len(ended))

        assert page.inner_text("#tenant") == tenant
        assert page.inner_text("#period") == balance["period"]
        for name in ("granted", "reserved", "spent", "remaining"):
            assert page.get_attribute(f"#{name}", "data-value") == str(balance[name]), name
        rows = page.query_selector_all("#requests tbody tr")
        shown = {r.get_attribute("data-request-id"): (
            r.query_selector("[data-status]").get_attribute("data-status"),
            r.query_selector("[data-charged]").get_attribute("data-charged")) for r in rows}
        assert shown == {r["request_id"]: (r["status"], str(r["usage"]["charged_tokens"]))
                         for r in ended}
        assert [r.get_attribute("data-request-id") for r in rows] == \
            [r["request_id"] for r in reversed(ended)]
        levels = quota_levels(stack, key)
        assert [lv["scope"] for lv in levels] == ["key", "tenant"]
        shown_levels = [(r.get_attribute("data-scope"), r.get_attribute("data-unit"),
                         r.query_selector("[data-spent]").get_attribute("data-spent"),
                         r.query_selector("[data-limit]").get_attribute("data-limit"))
                        for r in page.query_selector_all("#levels tbody tr")]
        assert shown_levels == [(lv["scope"], unit, str(lv[unit]["spent"]),
                                 "" if lv[unit]["limit"] is None else str(lv[unit]["limit"]))
                                for lv in levels for unit in ("tokens", "usd")]
        assert ("tenant", "tokens", str(balance["spent"]), str(balance["granted"])) in \
            shown_levels
        assert page.get_attribute("#chart", "data-total") == str(balance["spent"])
        assert page.query_selector("#chart canvas") is not None
        assert page.is_hidden("#error"), page.inner_text("#error")
        assert "refreshes every 5 s" in page.inner_text("#updated")
        assert problems == []

        shot = tmp_path / "usage-page.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("QF_UI_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["QF_UI_SCREENSHOT"])

        # On a phone's width the page reflows into one column: nothing runs off the side
        # (the requests table scrolls within its own box).
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(500)  # the chart follows its box's new width
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert page.evaluate("document.querySelector('#chart canvas').clientWidth") <= 390
        page.screenshot(path=str(tmp_path / "usage-page-narrow.png"), full_page=True)
        assert problems == []
