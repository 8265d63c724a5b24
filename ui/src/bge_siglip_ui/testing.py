"""Helpers for the page's tests, its benchmark and its screenshot: the server in a thread, headless Chromium.

``chromium()`` drives the system's Chromium through its chromedriver (Debian: ``apt-get install chromium
chromium-driver``) with Selenium; it never lets Selenium download a browser or a driver.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from typing import Any, Iterator

from .server import bind, make_server, url_of

__all__ = ["running", "chromium", "CHROMIUM_FLAGS", "find_chromium"]

#: Headless, no sandbox (CI runs as root), and no traffic of the browser's own (updates, sync, field trials).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run")


@contextlib.contextmanager
def running(app: Any, host: str = "127.0.0.1", timeout_s: float = 60.0) -> Iterator[str]:
    """Serve ``app`` on a free port of ``host`` in a thread; yields the base URL, stops the server on exit."""
    sock = bind(host, 0)
    server = make_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="bge-siglip-ui-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the page's server did not start")
        time.sleep(0.02)
    try:
        yield url_of(sock).rstrip("/")
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()


def find_chromium() -> tuple[str, str] | None:
    """``(browser, chromedriver)`` paths if both are installed, else ``None``."""
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextlib.contextmanager
def chromium(width: int = 1360, height: int = 900) -> Iterator[Any]:
    """A headless Chromium WebDriver with a fresh profile (removed afterwards)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if found is None:
        raise RuntimeError("chromium and chromedriver are not installed (Debian: apt-get install chromium "
                           "chromium-driver)")
    browser, driver_path = found
    profile = tempfile.mkdtemp(prefix="bge-siglip-ui-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager (which would download one) never runs.
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
