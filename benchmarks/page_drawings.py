"""Drawings made with a pointer on the web page, in a real browser, as a person makes them: the
share of drawn digits answered right and not flagged, and of drawn non-digits flagged.

Starts the service on one model (`--model`, a model.onnx, served alone as mnist/1), opens the
page in headless Chromium (Debian's chromium and chromium-driver, through Selenium), and draws
each shape of training/strokes.py (`DIGITS`, the `NON_DIGITS` trained on as outliers by a
model trained with `pen_strokes`, the `HELD_OUT` that no model trains on) `--hands` times with
the pointer: press, move, lift, stroke after stroke. The page sends the drawing by itself when
the pen stays up, as it does for a person; the verdict is read off the page.

    python -m benchmarks.page_drawings --model models/mnist/2/model.onnx --out drawn-page.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from training.drawn import GROUPS, summary_line
from training.glyphs import Shape
from training.strokes import CANVAS, hand

ROOT = Path(__file__).resolve().parents[1]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Without the background-networking flags chromium keeps calling home, which a closed network
# refuses.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)
LOOKS_LIKE = re.compile(r"looks like a (\S+)\.$")
BEST_GUESS = re.compile(r"Best guess (\S+),")
WAIT_S = 15


@contextmanager
def chromium(profile: Path, log: Path) -> Iterator[Any]:
    """Headless Chromium driven by chromedriver (Selenium)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    # the console (errors) and the network log (what the page posted: the tests read it)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(
        options=options, service=Service(str(CHROMEDRIVER), log_output=str(log))
    )
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def draw(driver: Any, shape: Shape) -> dict[str, Any]:
    """Draw `shape` (canvas pixels) on the page's pad with the pointer and read the answer."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    pad = driver.find_element(By.ID, "pad")
    rect = pad.rect
    scale = rect["width"] / CANVAS

    def offset(x: float, y: float) -> tuple[int, int]:  # from the pad's centre, CSS px
        return round((x - CANVAS / 2) * scale), round((y - CANVAS / 2) * scale)

    driver.execute_script("document.getElementById('clear').click()")
    status = driver.find_element(By.ID, "status")
    # (emptied, so that the wait below sees this drawing's answer, not the last one's)
    driver.execute_script("document.getElementById('verdict').textContent = ''")
    actions = ActionChains(driver, duration=5)  # (the page sends 350 ms after the pen lifts)
    for stroke in shape:
        actions.move_to_element_with_offset(pad, *offset(*stroke[0])).click_and_hold()
        for x, y in stroke[1:]:
            actions.move_to_element_with_offset(pad, *offset(x, y))
        actions.release()
    actions.perform()
    WebDriverWait(driver, WAIT_S).until(
        lambda d: (
            status.get_attribute("aria-busy") is None
            and d.find_element(By.ID, "verdict").text != ""
            and d.find_element(By.ID, "result").is_displayed()
        ),
        message="waiting for the page's answer",
    )
    verdict = driver.find_element(By.ID, "verdict").text
    detail = driver.find_element(By.ID, "detail").text
    flagged = "disagree" in (status.get_attribute("class") or "")
    found = (BEST_GUESS.search(detail) if flagged else LOOKS_LIKE.search(verdict)) or None
    return {"flagged": flagged, "label": found.group(1) if found else None, "verdict": verdict}


def measure(model: Path, hands: int, seed: int) -> dict[str, Any]:
    # The tests' way of starting the service; `tests` is found from the repository root, where
    # `python -m benchmarks.page_drawings` runs.
    from tests.support import SERVICE, free_port, service_env, start_service

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder) / "models"
        (repo / "mnist" / "1").mkdir(parents=True)
        shutil.copy(model, repo / "mnist" / "1" / "model.onnx")
        port = free_port()
        env = service_env(repo, port, MIMO_DEFAULT_MODEL="mnist")
        process = start_service(SERVICE, env, ROOT, Path(folder) / "server.log")
        try:
            with chromium(Path(folder) / "profile", Path(folder) / "chromedriver.log") as driver:
                driver.get(f"http://127.0.0.1:{port}/")
                from selenium.webdriver.common.by import By
                from selenium.webdriver.support.ui import WebDriverWait

                WebDriverWait(driver, WAIT_S).until(  # the model's line: "3 sub-models, ..."
                    lambda d: " classes (" in d.find_element(By.ID, "model-info").text
                )
                out: dict[str, Any] = {"model": str(model), "hands_per_shape": hands, "seed": seed}
                for group, shapes in GROUPS.items():
                    rows = []
                    for name in sorted(shapes):
                        for _ in range(hands):
                            answer = draw(driver, hand(shapes[name], rng))
                            rows.append({"shape": name, **answer})
                    out[group] = summarize(group, rows)
                    rates = {k: v for k, v in out[group].items() if k != "drawings"}
                    print(f"{group}: {json.dumps(rates)}", flush=True)
                return out
        finally:
            process.stop()


def summarize(group: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    flagged = [r["flagged"] for r in rows]
    summary: dict[str, Any] = {
        "drawings": rows,
        "count": len(rows),
        "flagged": float(np.mean(flagged)),
    }
    if group == "digits":
        right = [r["label"] == r["shape"] for r in rows]
        summary["right"] = float(np.mean(right))
        summary["right_unflagged"] = float(
            np.mean([ok and not f for ok, f in zip(right, flagged, strict=True)])
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=ROOT / "models" / "mnist" / "2" / "model.onnx"
    )
    parser.add_argument("--hands", type=int, default=3, help="drawings of each shape")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    for program in (CHROMIUM, CHROMEDRIVER):
        if not program.exists():
            parser.error(f"{program} is absent: apt-get install chromium chromium-driver")
    started = time.monotonic()
    result = measure(args.model, args.hands, args.seed)
    result["seconds"] = round(time.monotonic() - started, 1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.model}, through the page: {summary_line(result)} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
