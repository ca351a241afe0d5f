"""End to end in a real headless Chromium: label with mouse and keyboard, kill the server mid-task,
restart it on the same database, reload, and check nothing was lost and the task resumes.

Set ``DIFFENVS_LABEL_SCREENSHOT=docs/images/label_app.png`` to also save the screenshot used in
the docs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("playwright", reason="install the dev extras: pip install -e '.[dev]'")
from playwright.sync_api import Page, expect, sync_playwright

from diffenvs.cli import main
from diffenvs.label.demo import write_demo_tasks
from diffenvs.label.sorting import dense_ranks

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "no Chromium binary (install it: apt-get install -y chromium)", allow_module_level=True
    )
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
N_IMAGES = 5
# The scripted preference: a lower image index is better, except images 1 and 2, which tie.
SCORE = [0, -1, -1, -3, -4]


def preferred(left: int, right: int) -> str:
    if SCORE[left] == SCORE[right]:
        return "tie"
    return "left" if SCORE[left] > SCORE[right] else "right"


class Server:
    """``diffenvs label serve`` in a subprocess, as a person would run it."""

    def __init__(self, tasks: Path | None, db: Path, port: int, log: Path) -> None:
        cmd = [sys.executable, "-m", "diffenvs.cli", "label", "serve"]
        cmd += [str(tasks)] if tasks else []
        cmd += ["--db", str(db), "--port", str(port)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.log = log.open("a")
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # wait for the "labeling N tasks at URL" line
            if line.startswith("labeling "):
                self.url = line.split(" at ")[1].split()[0]
                return
        raise AssertionError(f"the server did not start; see {log}:\n{log.read_text()}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # a crash, not a clean stop: nothing may be lost
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def pair(page: Page) -> tuple[int, int]:
    left = page.get_attribute("#left-img", "data-index")
    right = page.get_attribute("#right-img", "data-index")
    assert left is not None and right is not None
    return int(left), int(right)


def answered(page: Page, n: int) -> None:
    expect(page.locator("#comparisons-done")).to_have_text(str(n))


def answer_by_mouse(page: Page, n_before: int) -> None:
    outcome = preferred(*pair(page))
    if outcome == "tie":
        page.click("#tie")
    elif n_before % 2:
        page.click(f"#{outcome}-img")  # clicking the image itself also chooses it
    else:
        page.click(f"#{outcome} button")
    answered(page, n_before + 1)


KEYS = {
    "left": ["ArrowLeft", "1"],
    "tie": ["ArrowDown", "Space", "2"],
    "right": ["ArrowRight", "3"],
}


def answer_by_key(page: Page, n_before: int) -> None:
    options = KEYS[preferred(*pair(page))]
    page.keyboard.press(options[n_before % len(options)])
    answered(page, n_before + 1)


def test_label_restart_resume_and_export(browser, tmp_path):
    tasks = write_demo_tasks(tmp_path / "tasks", n_tasks=2, images_per_task=N_IMAGES)
    db, log = tmp_path / "labels.sqlite", tmp_path / "server.log"
    server = Server(tasks, db, 0, log)
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    page = browser.new_page(viewport={"width": 1400, "height": 820})
    try:
        page.goto(server.url)
        expect(page.locator("#login")).to_be_visible()
        page.fill("#login-name", "e2e")
        page.keyboard.press("Enter")
        expect(page.locator("#login")).to_be_hidden()
        expect(page.locator("#task-id")).to_have_text("task t0000")
        expect(page.locator("#prompt")).not_to_have_text("Loading…")

        # Two answers with the mouse, two with the keyboard.
        answer_by_mouse(page, 0)
        answer_by_mouse(page, 1)
        answer_by_key(page, 2)
        answer_by_key(page, 3)
        # Undo by key and by button: the same question comes back each time; answer it again.
        asked = pair(page)
        page.keyboard.press("Backspace")
        answered(page, 3)
        undone = pair(page)
        answer_by_key(page, 3)
        page.keyboard.press("u")
        answered(page, 3)
        assert pair(page) == undone
        answer_by_mouse(page, 3)
        assert pair(page) == asked
        expect(page.locator("#eta")).not_to_have_text("–")  # a pace is known after a few answers

        expected_pair = pair(page)
        expected_order = page.get_attribute("#order", "data-order")
        shot = os.environ.get("DIFFENVS_LABEL_SCREENSHOT")
        if shot:
            page.wait_for_timeout(300)  # let the "chosen" flash fade
            page.screenshot(path=shot)

        # Crash the server; a key press while it is down stores nothing and says so.
        server.kill()
        page.keyboard.press("1")
        expect(page.locator("#message")).to_contain_text("Cannot reach the server")

        server = Server(None, db, port, log)  # same port, same DB, no tasks dir: resume from DB
        page.reload()
        expect(page.locator("#login")).to_be_hidden()  # the name was kept in localStorage
        answered(page, 4)
        expect(page.locator("#labeler-name")).to_have_text("e2e")
        assert pair(page) == expected_pair
        assert page.get_attribute("#order", "data-order") == expected_order

        # Finish both tasks, alternating keyboard and mouse.
        n = 4
        while page.locator("#all-done").is_hidden():
            (answer_by_key if n % 3 else answer_by_mouse)(page, n)
            n += 1
            assert n < 40, "far more answers than binary insertion sort needs"
        expect(page.locator("#tasks-done")).to_have_text("2")
        expect(page.locator("#comparisons-left")).to_have_text("0")
    finally:
        page.close()
        server.kill()

    out = tmp_path / "labels.jsonl"
    main(["label", "export", "--db", str(db), "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["t0000", "t0001"]
    for r in rows:
        assert r["ranks"] == dense_ranks(SCORE) == [0, 1, 1, 2, 3]
        assert r["labeler"] == "e2e"
        assert r["images"] == [f"images/{r['task_id']}_{k}.png" for k in range(N_IMAGES)]
    assert sum(r["n_comparisons"] for r in rows) == n  # every answer given is in the export
