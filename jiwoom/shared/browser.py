"""Starting the headless system Chromium (Debian's ``chromium`` and ``chromedriver``, both paths explicit so
Selenium Manager never runs: it would try to download a browser). The crawler's renderer uses it; with
``proxy_port`` every request the browser makes goes through :mod:`jiwoom.shared.guard_proxy`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

from jiwoom.shared.guard_proxy import browser_args

__all__ = [
    "DEFAULT_CHROMEDRIVER", "DEFAULT_CHROMIUM", "BrowserError", "kill_profile_processes", "launch", "quit_driver",
]

DEFAULT_CHROMIUM = "/usr/bin/chromium"
DEFAULT_CHROMEDRIVER = "/usr/bin/chromedriver"


class BrowserError(RuntimeError):
    """The browser could not be started or could not do what it was asked."""


def launch(*, chromium: str | None = None, chromedriver: str | None = None, window: tuple[int, int] = (1280, 900),
           lang: str = "ko-KR", proxy_port: int | None = None, user_agent: str = "") -> tuple[webdriver.Chrome, str]:
    """A started headless Chromium and its temporary profile directory (remove it with kill_profile_processes
    and rmtree when done). Downloads, notifications and service workers are off."""
    chromium = chromium or os.environ.get("JIWOOM_CHROMIUM") or DEFAULT_CHROMIUM
    chromedriver = chromedriver or os.environ.get("JIWOOM_CHROMEDRIVER") or DEFAULT_CHROMEDRIVER
    for what, path in (("chromium", chromium), ("chromedriver", chromedriver)):
        if not Path(path).is_file():
            raise BrowserError(f"{what} not found at {path} (set JIWOOM_{what.upper()})")
    profile = tempfile.mkdtemp(prefix="jiwoom-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
            "--disable-notifications", "--disable-extensions", "--force-device-scale-factor=1",
            f"--window-size={window[0]},{window[1]}", f"--lang={lang}", f"--user-data-dir={profile}"]
    if proxy_port is not None:
        args += browser_args(proxy_port)
    if user_agent:
        args.append(f"--user-agent={user_agent}")
    for arg in args:
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "download_restrictions": 3,  # block all downloads
        "intl.accept_languages": f"{lang},ko,en",
        "profile.default_content_setting_values.notifications": 2,
    })
    options.page_load_strategy = "normal"
    options.unhandled_prompt_behavior = "dismiss"  # an alert() must not wedge the session
    try:
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    except WebDriverException as exc:
        kill_profile_processes(profile)
        raise BrowserError(f"cannot start chromium: {exc.msg or exc}") from exc
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "deny"})
        driver.execute_cdp_cmd("Network.enable", {})
        # Service workers could answer later navigations from their cache instead of the site.
        driver.execute_cdp_cmd("Network.setBypassServiceWorker", {"bypass": True})
    except WebDriverException:
        quit_driver(driver, profile)
        raise
    return driver, profile


def quit_driver(driver: webdriver.Chrome | None, profile: str | None) -> None:
    """Quit the browser and driver and end what they left behind; safe on a dead driver."""
    if driver is not None:
        try:
            driver.quit()
        except Exception:  # a dead driver cannot quit cleanly; the processes are ended below
            with contextlib.suppress(Exception):
                driver.service.stop()
    if profile is not None:
        kill_profile_processes(profile)


def kill_profile_processes(profile: str) -> None:
    """End the Chromium processes using `profile` (found by their own --user-data-dir) and remove it."""
    marker = f"--user-data-dir={profile}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue
    shutil.rmtree(profile, ignore_errors=True)
