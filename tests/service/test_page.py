"""The page at GET / (service/api/ui.py, service/static/): served files, and the page itself in
a real browser (Debian's chromium, headless, through chromedriver) against the real service
over a socket, serving the committed models: models/mnist/2 (the default, a single network
flagged by predictive entropy) and models/mnist/1 (MIMO, M=3, flagged by mutual information).

Screenshots of every state go to $MIMO_SCREENSHOT_DIR when set, else under pytest's tmp_path.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from fnmatch import fnmatch
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from support import ROOT, SERVICE, Process, free_port, service_env, start_service

from service.main import create_app
from service.settings import Settings

sys.path.insert(0, str(ROOT / "benchmarks"))
from page_drawings import CHROMEDRIVER, CHROMIUM, chromium

STATIC = ROOT / "service" / "static"
MNIST_DIR = Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))
WAIT_S = 15


# --- the files, without a browser ------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> TestClient:
    # No lifespan (no `with`): the page and its files need no model.
    return TestClient(create_app(Settings(repository=ROOT / "models", default_model="mnist")))


def test_page_and_assets_are_served_with_their_types(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>mimo-serve" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    expected = {
        "/static/app.js": "text/javascript; charset=utf-8",
        "/static/style.css": "text/css; charset=utf-8",
        "/static/examples/clear.png": "image/png",
        "/static/examples/ambiguous.png": "image/png",
        "/static/examples/noise.png": "image/png",
        "/static/examples/letter.png": "image/png",
    }
    for url, media_type in expected.items():
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"] == media_type, url
    with Image.open(STATIC / "examples" / "clear.png") as image:
        assert (image.size, image.mode) == ((28, 28), "L")


def test_page_loads_nothing_from_elsewhere(client: TestClient) -> None:
    """Offline: every src/href of the page is served here; no URL in the code leaves it."""
    html = client.get("/").text
    references = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert references
    for ref in references:
        if ref.startswith("data:"):
            continue
        assert ref.startswith("/") and not ref.startswith("//"), ref
        assert client.get(ref).status_code == 200, ref
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC / name).read_text()
        urls = set(re.findall(r"https?://[^\s\"'<>)]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)  # a namespace, never fetched
        assert "@import" not in text and "@font-face" not in text


def test_unknown_files_are_404_json(client: TestClient) -> None:
    for url in ("/static/nope.js", "/static/../main.py", "/static/%2e%2e/main.py", "/static/"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert "error" in response.json()


def test_page_stays_out_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)


def test_static_files_are_package_data() -> None:
    """A non-editable install ships every file of service/static/."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["service"]
    files = [p.relative_to(ROOT / "service").as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert len(files) >= 7
    for name in files:
        assert any(fnmatch(name, pattern) for pattern in patterns), name


# --- the page in a browser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("MIMO_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)
    return tmp_path_factory.mktemp("screenshots")


def start(tmp_path_factory: pytest.TempPathFactory, **env: str) -> tuple[Process, str]:
    port = free_port()
    environment = service_env(
        ROOT / "models", port, MIMO_DEFAULT_MODEL="mnist", MIMO_GRPC_PORT="0", **env
    )
    log = tmp_path_factory.mktemp("page-server") / "server.log"
    return start_service(SERVICE, environment, ROOT, log), f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium and chromium-driver")
    process, url = start(tmp_path_factory)
    yield url
    process.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, server: str) -> Iterator[object]:
    if not CHROMEDRIVER.exists():
        pytest.skip(f"{CHROMEDRIVER} is absent: install Debian's chromium-driver")
    pytest.importorskip("selenium.webdriver")
    profile = tmp_path_factory.mktemp("chromium-profile")
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    with chromium(profile, log) as driver:
        yield driver


@pytest.fixture
def page(browser, server: str, screenshots: Path) -> Iterator[Page]:
    page = Page(browser, server, screenshots)
    page.open()
    yield page
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    # 4xx answers the tests provoke show up as failed resources; script errors must not.
    assert not [e for e in errors if "Failed to load resource" not in e["message"]], errors


class Page:
    """The page in the browser, with explicit waits only."""

    def __init__(self, driver, url: str, screenshots: Path) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.url = url
        self.screenshots = screenshots
        self.by = By
        self.wait = WebDriverWait(driver, WAIT_S)

    def open(self, url: str | None = None) -> None:
        self.driver.get((url or self.url) + "/")
        self.until(
            "the model list",
            lambda d: (
                self.find("#model-info").text != ""
                and not self.find("#model-info").text.startswith("Loading")
            ),
        )

    def find(self, css: str):
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list:
        return self.driver.find_elements(self.by.CSS_SELECTOR, css)

    def until(self, what: str, condition: Callable) -> object:
        return self.wait.until(condition, message=f"waiting for {what}")

    def answer(self) -> str:
        """Wait for the answer (a verdict, or an error) and return the verdict's text."""
        self.until(
            "an answer",
            lambda d: (
                self.find("#status").get_attribute("aria-busy") is None
                and (self.find("#result").is_displayed() or self.find("#error").is_displayed())
            ),
        )
        return self.find("#verdict").text

    def choose(self, model: str) -> None:
        """Pick `name/version` in the model list, as a person would, and wait for its line."""
        from selenium.webdriver.support.ui import Select

        before = self.find("#model-info").text
        Select(self.find("#model")).select_by_value(model)
        if self.find("#model-info").text == before:
            self.until("the model's line", lambda d: self.find("#model-info").text != before)

    def press(self, *keys: str) -> None:
        """Keys to whatever has the focus, as a keyboard would send them."""
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(*keys).perform()

    def upload(self, path: Path) -> str:
        self.find("#file").send_keys(str(path))
        return self.answer()

    def snap(self, name: str) -> Path:
        """A screenshot of the whole page, beyond the window (Chrome DevTools Protocol)."""
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
        )
        path = self.screenshots / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def charts(self) -> list[list[float]]:
        """The heights of the bars of each head's chart."""
        return [
            [
                float(bar.get_attribute("height"))
                for bar in chart.find_elements(self.by.CSS_SELECTOR, "rect.bar")
            ]
            for chart in self.find_all("figure.head-chart")
        ]


def png_file(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels.astype(np.uint8), "L").save(path)
    return path


@pytest.mark.slow
def test_page_loads_with_the_models(page: Page) -> None:
    assert page.driver.title.startswith("mimo-serve")
    select = page.find("#model")
    options = [o.text for o in select.find_elements(page.by.TAG_NAME, "option")]
    assert options == ["mnist, version 1", "mnist, version 2 (default)"]
    assert select.get_attribute("value") == "mnist/2"
    info = page.find("#model-info").text
    assert (
        info.startswith("a single network, 10 classes") and "predictive entropy threshold" in info
    )
    assert page.find("#verdict").text == "No image yet."
    page.snap("01-loaded")
    page.choose("mnist/1")
    assert page.find("#model-info").text.startswith("3 sub-models, 10 classes")


@pytest.mark.slow
def test_upload_a_real_mnist_digit(page: Page, tmp_path: Path) -> None:
    if not MNIST_DIR.is_dir():
        pytest.skip(f"no MNIST files at {MNIST_DIR} (set MNIST_DIR)")
    from training.data import load_dataset

    test = load_dataset("mnist", "test", MNIST_DIR)
    index = 1  # a 2 that every head recognises
    label = int(test.labels[index])
    verdict = page.upload(png_file(tmp_path / "mnist-test-1.png", test.images[index, 0]))
    # The default, a single network: its answer, no sub-models.
    assert verdict == f"The model is sure: this looks like a {label}."
    assert page.find("#status").get_attribute("class") == "status agree"
    assert page.find("#gauge-fill").get_attribute("class") == "gauge-fill below"
    assert page.find("#votes-title").text == "Its answer" and page.charts() == []
    assert len(page.find_all("figure.mean-chart rect.bar")) == 10
    numbers = page.find("#numbers").get_attribute("textContent")
    assert "none: a single network" in numbers and "mutual information" not in numbers
    page.snap("02-mnist-digit-single")

    # MIMO (mnist/1), chosen in the list: the same image again, and each sub-model's vote.
    page.choose("mnist/1")
    page.until("the sub-models' answer", lambda d: len(page.charts()) == 3)
    assert page.find("#verdict").text == f"The three sub-models agree: this looks like a {label}."
    assert page.find("#votes-title").text == "Their votes"
    charts = page.charts()
    assert len(charts) == 3 and all(len(bars) == 10 for bars in charts)
    for bars in charts:  # each head's highest bar is the digit's
        assert int(np.argmax(bars)) == label
    captions = [c.text for c in page.find_all("figure.head-chart figcaption")]
    assert all(c.startswith(f"Sub-model {i + 1} votes {label} ") for i, c in enumerate(captions))
    assert len(page.find_all("figure.mean-chart rect.bar")) == 10
    assert "mnist-test-1.png" in page.find("#sent-caption").text
    page.snap("02-mnist-digit")


@pytest.mark.slow
def test_draw_a_one(page: Page) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    pad = page.find("#pad")
    strokes = ActionChains(page.driver).move_to_element_with_offset(pad, 0, -90).click_and_hold()
    for _ in range(6):
        strokes = strokes.move_by_offset(0, 30)
    strokes.release().perform()
    verdict = page.answer()  # sent by itself when the pen is lifted
    assert "your drawing" in page.find("#sent-caption").text
    assert verdict == "The model is sure: this looks like a 1."
    page.snap("03-drawn-one")

    # Cleared, there is nothing to send: the page says so and asks nothing.
    page.find("#clear").click()
    page.find("#classify-drawing").click()
    page.until("the empty-drawing message", lambda d: page.find("#error").is_displayed())
    assert page.find("#error").text.startswith("Draw a digit first")


def posted_drawing(driver) -> bytes:
    """The body of the page's last POST /predict, from Chromium's network log (DevTools)."""
    ids = [
        message["params"]["requestId"]
        for entry in driver.get_log("performance")
        if (message := json.loads(entry["message"])["message"])["method"]
        == "Network.requestWillBeSent"
        and message["params"]["request"]["url"].split("?")[0].endswith("/predict")
    ]
    sent = driver.execute_cdp_cmd("Network.getRequestPostData", {"requestId": ids[-1]})
    data = sent["postData"]
    return base64.b64decode(data) if sent.get("base64Encoded") else data.encode("latin-1")


@pytest.mark.slow
def test_a_drawing_is_sent_as_training_draws_it(page: Page) -> None:
    """The outliers that teach the model what a drawn non-digit is (training/strokes.py) are
    drawn as the page draws: the same strokes drawn here with the pointer reach the service as
    the same image, to antialiasing (mean difference under 3 % of the pixel range)."""
    from page_drawings import draw

    from service.preprocess import to_input
    from training.glyphs import DIGITS, NON_DIGITS
    from training.strokes import canvas, hand, page_crop

    spec = {"color": "L", "resize": [28, 28], "resample": "bilinear"}
    page.driver.execute_cdp_cmd("Network.enable", {"maxPostDataSize": 1 << 24})
    rng = np.random.default_rng(0)
    for shape in (NON_DIGITS["A"], NON_DIGITS["house"], DIGITS["7"]):
        strokes = hand(shape, rng)
        page.driver.get_log("performance")  # (only this drawing's requests after this)
        answer = draw(page.driver, strokes)
        assert answer["label"] is not None, answer
        with Image.open(io.BytesIO(posted_drawing(page.driver))) as sent:
            mine = page_crop(canvas(strokes))
            assert mine is not None and abs(sent.size[0] - mine.size[0]) <= 2
            difference = np.abs(to_input(sent, spec) - to_input(mine, spec))
        assert difference.mean() < 0.03, difference.mean()


@pytest.mark.slow
def test_noise_is_flagged_uncertain(page: Page, tmp_path: Path) -> None:
    """Worded for the measure that flags it: the default's spread answer (predictive entropy),
    MIMO's disagreeing sub-models (mutual information), never the one for the other."""
    noise = np.random.default_rng(7).integers(0, 256, (28, 28))
    verdict = page.upload(png_file(tmp_path / "noise.png", noise))
    expected = "The model is not sure this is a digit it knows: its answer is spread"
    assert verdict.startswith(expected)
    assert page.find("#status").get_attribute("class") == "status disagree"
    assert page.find("#gauge-fill").get_attribute("class") == "gauge-fill above"
    assert page.find("#gauge-title").text == "How spread the model's answer is"
    assert page.find("#gauge-text").text.startswith("Predictive entropy ")
    assert "above the model's threshold" in page.find("#gauge-text").text
    assert page.find("#gauge-high").text == "spread over many"
    page.snap("04-noise-single")

    page.choose("mnist/1")
    page.until("the sub-models' answer", lambda d: len(page.charts()) == 3)
    verdict = page.find("#verdict").text
    assert verdict == "The sub-models disagree: the model is not sure this is a digit it knows."
    assert page.find("#gauge-title").text == "How much the sub-models disagree"
    assert page.find("#gauge-high").text == "they disagree"
    assert page.find("#gauge-fill").get_attribute("class") == "gauge-fill above"
    page.snap("04-noise-mimo")


@pytest.mark.slow
def test_api_errors_are_shown_in_the_apis_words(page: Page, server: str, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n")
    page.upload(path)
    api = httpx.post(
        f"{server}/predict", content=path.read_bytes(), headers={"content-type": "text/plain"}
    )
    assert api.status_code == 415
    assert page.find("#error").text == f"The service answered 415: {api.json()['error']}"
    assert not page.find("#result").is_displayed()
    page.snap("05-api-error")


@pytest.mark.slow
def test_examples_work_from_the_keyboard(page: Page) -> None:
    from selenium.webdriver.common.keys import Keys

    page.choose("mnist/1")  # its "Their votes" for the ambiguous example
    target = page.find("button.example[data-src$='clear.png']")
    page.find("h1").click()  # the focus starts on the page, not in a control
    for _ in range(40):  # Tab through the page until the example has the focus
        if page.driver.switch_to.active_element == target:
            break
        page.press(Keys.TAB)
    assert page.driver.switch_to.active_element == target, "the example is not reachable by Tab"
    page.press(Keys.ENTER)
    assert page.answer() == "The three sub-models agree: this looks like a 7."
    page.snap("06-example-by-keyboard")

    # The next example, by Tab and Space.
    page.press(Keys.TAB)
    active = page.driver.switch_to.active_element
    assert active.get_attribute("data-src").endswith("ambiguous.png")
    page.press(Keys.SPACE)
    page.until(
        "the ambiguous answer", lambda d: "disagree" in page.find("#status").get_attribute("class")
    )
    assert page.find("#detail").text.startswith("Their votes: ")
    page.snap("07-ambiguous")


@pytest.mark.slow
def test_phone_width(page: Page) -> None:
    size = page.driver.get_window_size()
    page.driver.set_window_size(375, 812)
    try:
        page.open()
        page.find("button.example[data-src$='letter.png']").click()
        page.answer()
        overflow = page.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow} px wider than a phone"
        width = page.find("#pad").rect["width"]
        assert 200 <= width <= 280
        assert len(page.find_all("figure.mean-chart rect.bar")) == 10
        page.snap("08-phone")
    finally:
        page.driver.set_window_size(size["width"], size["height"])


@pytest.mark.slow
def test_api_key_typed_into_the_page(page: Page, tmp_path_factory: pytest.TempPathFactory) -> None:
    from selenium.webdriver.common.keys import Keys

    process, url = start(tmp_path_factory, MIMO_API_KEY="open-sesame")
    try:
        page.open(url)
        assert "answered 401" in page.find("#model-info").text
        assert "Enter the API key" in page.find("#model-info").text
        page.find("#api-key").send_keys("open-sesame", Keys.TAB)  # change event
        page.until("the model list", lambda d: "single network" in page.find("#model-info").text)
        page.find("button.example[data-src$='clear.png']").click()
        assert page.answer() == "The model is sure: this looks like a 7."
        # Kept for the tab's session: a reload still has it.
        page.open(url)
        assert page.find("#api-key").get_attribute("value") == "open-sesame"
        assert "single network" in page.find("#model-info").text
    finally:
        process.stop()


@pytest.mark.slow
def test_a_mimo_model_flagging_by_entropy_is_worded_for_it(
    browser, screenshots: Path, tmp_path: Path
) -> None:
    """Sub-models, but a file that says mimo.uncertain_measure=predictive_entropy: the verdict
    and the gauge speak of the spread answer, never of sub-models that disagree."""
    import shutil

    import onnx

    repo = tmp_path / "models"
    shutil.copytree(ROOT / "models" / "mnist" / "1", repo / "mnist" / "1")
    path = repo / "mnist" / "1" / "model.onnx"
    proto = onnx.load(path)
    proto.metadata_props.add(key="mimo.uncertain_measure", value="predictive_entropy")
    onnx.save(proto, path)
    port = free_port()
    environment = service_env(repo, port, MIMO_DEFAULT_MODEL="mnist", MIMO_GRPC_PORT="0")
    process = start_service(SERVICE, environment, ROOT, tmp_path / "server.log")
    try:
        page = Page(browser, f"http://127.0.0.1:{port}", screenshots)
        page.open()
        info = page.find("#model-info").text
        assert info.startswith("3 sub-models") and "predictive entropy threshold" in info
        noise = np.random.default_rng(7).integers(0, 256, (28, 28))
        verdict = page.upload(png_file(tmp_path / "noise.png", noise))
        expected = "The model is not sure this is a digit it knows: its answer is spread"
        assert verdict.startswith(expected)
        assert page.find("#gauge-title").text == "How spread the model's answer is"
        assert page.find("#gauge-text").text.startswith("Predictive entropy ")
        assert len(page.charts()) == 3  # each sub-model's vote is still shown
        page.snap("09-mimo-entropy-flag")
    finally:
        process.stop()


def test_page_lists_the_formats_the_server_decodes(client: TestClient) -> None:
    """The page's file chooser is filled from service.preprocess, never written by hand."""
    from service.preprocess import IMAGE_FORMATS, MEDIA_TYPES

    for url in ("/", "/static/index.html"):
        text = client.get(url).text
        assert "{{" not in text
        assert f"({', '.join(IMAGE_FORMATS)})" in text
        assert f'accept="{",".join(MEDIA_TYPES)}"' in text


def test_page_revalidates(client: TestClient) -> None:
    first = client.get("/")
    again = client.get("/", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and not again.content
    assert again.headers["etag"] == first.headers["etag"]
