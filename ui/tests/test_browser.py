"""The page in a real browser (headless Chromium through Selenium): type, upload, see the right file first.

One browser for the module (it is slow to start); CI installs chromium and chromium-driver (.ci/run). Elsewhere,
without them, these tests are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from bge_siglip_ui.app import create_app
from bge_siglip_ui.testing import chromium, find_chromium, running

if find_chromium() is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must install chromium and chromium-driver for the browser tests (see .ci/run)")
    pytest.skip("chromium + chromedriver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TIMEOUT_S = 60  # generous: two shared cores


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def _wait(browser, condition, message: str):
    return WebDriverWait(browser, TIMEOUT_S, poll_frequency=0.1).until(lambda d: condition(d), message)


def _tile_names(browser) -> list[str]:
    # Read in one script: the grid is re-rendered by every answer, so element handles go stale.
    return browser.execute_script("return [...document.querySelectorAll('#grid .tile')].map(t => t.dataset.name)")


def _core_ranking(vectorizer, files, query) -> list[str]:
    scores = vectorizer.encode_images(files) @ query
    return [files[i].name for i in np.argsort(-scores, kind="stable")]


def _type(browser, text: str) -> None:
    box = browser.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)


def test_typing_a_query_and_uploading_an_image_show_the_right_files_first(browser, start_state, gallery, tmp_path,
                                                                          bge_siglip_vectorizer):
    files = sorted(gallery.rglob("photo*"))
    state = start_state(folder=str(gallery))
    with running(create_app(state, start=False)) as url:
        browser.get(url)
        _wait(browser, lambda d: "8 images" in d.find_element(By.ID, "status").text, "the status shows the gallery")

        # Text (any language): the page's order is the core's order for that text.
        text = "ein Hund am Strand"
        expected = _core_ranking(bge_siglip_vectorizer, files, bge_siglip_vectorizer.encode_query(text=text))
        _type(browser, text)
        _wait(browser, lambda d: _tile_names(d) == expected, f"the text hits in the core's order {expected}")
        first = browser.find_element(By.CSS_SELECTOR, "#grid .tile img")
        _wait(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", first),
              "the first thumbnail loads")

        # An image (an exact copy of a gallery file, from outside the gallery): that file comes first.
        probe = shutil.copyfile(files[5], tmp_path / "probe.png")
        _type(browser, "")
        browser.find_element(By.ID, "file").send_keys(str(probe))
        _wait(browser, lambda d: _tile_names(d)[:1] == [files[5].name], f"{files[5].name} first for its copy")
        score = browser.find_element(By.CSS_SELECTOR, "#grid .tile .score").text
        assert score == "1.000"
        assert browser.find_element(By.ID, "image-name").text == "probe.png"

        # Text and image together: the slider appears, and the order is the core's composed query (50 / 50).
        _type(browser, "in red")
        composed = bge_siglip_vectorizer.encode_query(text="in red", image=probe.read_bytes(), weights=(0.5, 0.5))
        expected = _core_ranking(bge_siglip_vectorizer, files, composed)
        _wait(browser, lambda d: d.find_element(By.ID, "mix").is_displayed() and _tile_names(d) == expected,
              "the composed hits in the core's order")

        # The full image, then "more like this" from it.
        browser.find_elements(By.CSS_SELECTOR, "#grid .tile .open")[2].click()
        viewer_image = browser.find_element(By.ID, "viewer-img")
        _wait(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                                  viewer_image), "the full image loads in the viewer")
        browser.find_element(By.ID, "viewer-more").click()
        _wait(browser, lambda d: _tile_names(d)[:1] == [expected[2]] and d.find_element(By.ID, "text")
              .get_attribute("value") == "", "more like this: the hit itself first")
        assert browser.find_element(By.ID, "image-name").text == expected[2]

        # A file that is no image: the typed error, as text.
        broken = tmp_path / "broken.png"
        broken.write_bytes(b"\x89PNG but broken")
        browser.find_element(By.ID, "file").send_keys(str(broken))
        message = browser.find_element(By.ID, "message")
        _wait(browser, lambda d: "InvalidImageError" in message.text, "the upload's typed error is shown")
        assert "broken.png" in message.text


def test_the_page_says_when_the_model_is_missing(browser, start_state, gallery, tmp_path):
    state = start_state(vectorizer=None, model=str(tmp_path / "no-model"), folder=str(gallery))
    with running(create_app(state, start=False)) as url:
        browser.get(url)
        message = browser.find_element(By.ID, "message")
        _wait(browser, lambda d: "could not be loaded" in message.text, "the missing model is said")
        assert "ModelLoadError" in message.text and "no-model" in message.text
        assert "no model" in browser.find_element(By.ID, "status").text


def test_scrolling_loads_the_following_pages_in_the_cores_order(browser, start_state, tmp_path, write_image,
                                                                bge_siglip_vectorizer):
    folder = tmp_path / "many"
    files = [write_image(folder / f"img{i:03d}.png", seed=1000 + i, size=(24 + i % 9, 24)) for i in range(110)]
    state = start_state(folder=str(folder))
    with running(create_app(state, start=False)) as url:
        browser.get(url)
        _wait(browser, lambda d: "110 images" in d.find_element(By.ID, "status").text, "the status shows 110 images")
        expected = _core_ranking(bge_siglip_vectorizer, files, bge_siglip_vectorizer.encode_query(text="many"))
        _type(browser, "many")
        _wait(browser, lambda d: len(_tile_names(d)) == 48, "the first page of 48")
        # Scrolled to the end again and again, faster than pages load: the page must keep asking for the next one.
        browser.execute_script("""
            window.__scrolling = setInterval(() => window.scrollTo(0, document.body.scrollHeight), 5);""")
        try:
            _wait(browser, lambda d: len(_tile_names(d)) == 110, "all 110 results after scrolling")
        finally:
            browser.execute_script("clearInterval(window.__scrolling)")
        assert _tile_names(browser) == expected
        assert "Top 110 for" in browser.find_element(By.ID, "summary").text
