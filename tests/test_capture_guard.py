"""The evidence browser behind its guard proxy: a captured page's own requests never reach a private address.

A real headless Chromium and a loopback fixture site; 127.0.0.1 is allow-listed, 10.0.0.1 and the cloud-metadata
address are not. No connection to either is ever attempted: the proxy refuses them after resolving, before
connecting, so the test needs no network beyond loopback.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from bench.fixture_site import FixtureSite
from clients.evidence.capture import PNG_SIGNATURE, Browser
from jiwoom.shared.web import FetchPolicy
from tests.conftest import guard_lines

PRIVATE = ("10.0.0.1", "169.254.169.254")
# What the page asks for: its images, its iframes and its script's fetch().
TARGETS = ("http://10.0.0.1/pixel.png", "http://169.254.169.254/latest/meta-data/pixel.png", "http://10.0.0.1/frame",
           "http://169.254.169.254/latest/meta-data/iam/", "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/")
LOOPBACK = FetchPolicy(allow_networks=("127.0.0.0/8",), timeout_s=10)
SSRF_PAGE = b"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>ssrf</title></head><body>
<div id="out">waiting</div>
<img src="http://10.0.0.1/pixel.png" width="300" height="300">
<img src="http://169.254.169.254/latest/meta-data/pixel.png" width="300" height="300">
<iframe src="http://10.0.0.1/frame" width="300" height="300"></iframe>
<iframe src="http://169.254.169.254/latest/meta-data/iam/" width="300" height="300"></iframe>
<script>
const out = document.getElementById('out');
for (const url of ['http://10.0.0.1/', 'http://169.254.169.254/latest/meta-data/']) {
  fetch(url).then((r) => r.text()).then((t) => { out.textContent += ' got ' + t.length; })
    .catch(() => { out.textContent += ' blocked'; });
}
</script></body></html>"""


@pytest.fixture
def guard_log() -> Iterator[list[str]]:
    with guard_lines() as lines:
        yield lines


@pytest.fixture(scope="module")
def site() -> Iterator[FixtureSite]:
    with FixtureSite() as s:
        yield s


def _refusals(lines: list[str], address: str) -> list[str]:
    return [line for line in lines if line.startswith(f"refused {address}:") and f"resolves to {address}" in line]


def _refused(lines: list[str], target: str) -> bool:
    # The proxy's line: "refused <host>: GET <target>: address not allowed: <host> resolves to <address>".
    return any(f": GET {target}: " in line for line in lines)


def test_a_captured_pages_requests_to_private_addresses_are_refused(site: FixtureSite,
                                                                    guard_log: list[str]) -> None:
    site.put("/ssrf", SSRF_PAGE)
    with Browser(policy=LOOPBACK) as browser:
        shot = browser.screenshot(site.url("/ssrf"), timeout_s=15)
        # fetch() settles on its own schedule: give the script's requests a moment past the screenshot.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(_refused(guard_log, t) for t in TARGETS):
            time.sleep(0.1)
        out = browser.driver.execute_script("return document.getElementById('out').textContent;")
        connected = list(browser.proxy.connected)

    # The capture itself succeeded, through the proxy.
    assert shot.png.startswith(PNG_SIGNATURE) and shot.load_complete
    assert shot.title == "ssrf" and shot.final_url == site.url("/ssrf")
    assert site.hits("/ssrf") == 1
    # Every sub-resource aimed at a private address was refused and logged with its host and address: the images,
    # the iframes and the script's fetch().
    for address in PRIVATE:
        assert _refusals(guard_log, address), (address, guard_log)
    for target in TARGETS:
        assert _refused(guard_log, target), (target, guard_log)
    assert out.count("blocked") == 2, out  # both fetch() calls failed: the script read nothing back
    # No connection to either address was ever attempted; the fixture site's was.
    assert not [c for c in connected if c[0] in PRIVATE], connected
    assert ("127.0.0.1", site.port) in connected


def test_the_page_itself_goes_through_the_proxy(site: FixtureSite, guard_log: list[str]) -> None:
    site.put("/not-allowed", b"<html><head><title>reached</title></head><body>reached</body></html>")
    with Browser(policy=FetchPolicy(timeout_s=10)) as browser:  # loopback not allow-listed
        shot = browser.screenshot(site.url("/not-allowed"), timeout_s=10)
        connected = list(browser.proxy.connected)
    assert site.hits("/not-allowed") == 0
    assert shot.title != "reached"
    assert _refusals(guard_log, "127.0.0.1"), guard_log
    assert not [c for c in connected if c[0] == "127.0.0.1"], connected
