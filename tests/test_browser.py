"""The web page in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; no browser
download): enroll two people, identify a group photo, see the names, forget one, see it gone."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .test_service import Server

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is needed for the browser tests: apt-get install chromium (make test does)")
    server = Server(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # the forget confirmation
        page.goto(server.url + "/")
        page.fill("#key-input", server.token)
        page.click("#key-save")
        page.wait_for_selector("#status:has-text('key saved')")
        try:
            yield page
        finally:
            if page.context:
                page.screenshot(path=str(tmp_path / "last.png"))
            browser.close()
            server.stop()


def test_enroll_identify_forget_in_the_browser(page, data, tmp_path):
    page.click("#tab-gallery")
    for name in ("obama", "biden"):
        photo = sorted((data / "identities" / f"facerecognition-{name}").glob("*.jpg"))[0]
        page.fill("#enroll-name", name)
        page.set_input_files("#enroll-files", str(photo))
        page.click("#enroll-submit")
        page.wait_for_selector(f"#people li[data-name='{name}']")
    cards = page.locator("#people li")
    assert cards.count() == 2
    assert page.locator("#people li[data-name='obama'] img").count() == 1  # thumbnail fetched with the key

    group = tmp_path / "obama_and_biden.jpg"
    shutil.copy(data / "groups/face_recognition__obama_and_biden.jpg", group)
    page.click("#tab-identify")
    page.set_input_files("#identify-file", str(group))
    page.wait_for_selector("#identify-results li")
    names = sorted(page.locator("#identify-results li").evaluate_all("els => els.map(e => e.dataset.identity)"))
    assert names == ["biden", "obama", "unknown"], names  # the photo's third person was never enrolled
    assert page.locator("#identify-canvas").evaluate("c => c.width") > 0

    page.click("#tab-gallery")
    page.wait_for_selector("#people li[data-name='obama']")
    page.click("#people li[data-name='obama'] button.forget")
    # expect() polls from the driver: the page's CSP forbids the string evaluation wait_for_function needs
    expect(page.locator("#people li")).to_have_count(1)
    expect(page.locator("#people li[data-name='biden']")).to_have_count(1)
    assert "forgot obama" in page.inner_text("#status")

    page.click("#tab-identify")
    page.set_input_files("#identify-file", [])
    page.set_input_files("#identify-file", str(group))
    expect(page.locator("#identify-results li.unknown")).to_have_count(2)
    names = sorted(page.locator("#identify-results li").evaluate_all("els => els.map(e => e.dataset.identity)"))
    assert names == ["biden", "unknown", "unknown"], names


def test_clusters_tab_merge_and_name(tmp_path, data, analyzer):
    from playwright.sync_api import sync_playwright

    from facelens.cluster import Collection

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("obama", "biden"):
        for src in sorted((data / "identities" / f"facerecognition-{name}").glob("*.jpg"))[:3]:
            shutil.copy(src, photos / f"{name}-{src.name}")
    collection = Collection(tmp_path / "collection", analyzer)
    collection.scan(photos)
    collection.cluster()
    collection.close()
    server = Server(tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
            page = browser.new_page()
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(server.url + "/")
            page.fill("#key-input", server.token)
            page.click("#key-save")
            page.click("#tab-clusters")
            page.wait_for_selector("#cluster-list li")
            assert page.locator("#cluster-list li").count() == 2
            assert page.locator("#cluster-list li .faces img").count() >= 5
            page.check("#cluster-list li:nth-child(1) input.pick")
            page.check("#cluster-list li:nth-child(2) input.pick")
            page.click("#merge-selected")
            expect(page.locator("#cluster-list li")).to_have_count(1)
            page.fill("#cluster-list li input[placeholder='name']", "the two")
            page.click("#cluster-list li button")
            page.wait_for_selector("#cluster-list li strong:has-text('the two')")
            page.screenshot(path=str(tmp_path / "clusters.png"))
            browser.close()
    finally:
        server.stop()


@pytest.fixture
def camera_page(tmp_path):
    """The page in Chromium with its fake camera (a test pattern, no face), the key already saved."""
    from playwright.sync_api import sync_playwright

    server = Server(tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
                "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
            page = browser.new_page()
            page.goto(server.url + "/")
            page.fill("#key-input", server.token)
            page.click("#key-save")
            yield page
            browser.close()
    finally:
        server.stop()


def test_webcam_capture_reaches_the_api(camera_page):
    """Chromium's fake camera (a test pattern, no face): capture sends the frame to the enroll endpoint,
    and the page shows the API's answer."""
    page = camera_page
    page.click("#tab-gallery")
    page.fill("#enroll-name", "camera person")
    page.click("#webcam-start")
    video = page.locator("#webcam-video")
    deadline = time.time() + 30
    while video.evaluate("v => v.videoWidth") == 0 and time.time() < deadline:
        time.sleep(0.1)
    page.click("#webcam-capture")
    page.wait_for_selector("#status.error")
    assert "no face" in page.inner_text("#status")
    # the person was created, with no face: nothing half-enrolled
    page.wait_for_selector("#people li[data-name='camera person']")
    assert "0 face(s)" in page.inner_text("#people li[data-name='camera person']")


def test_liveness_tab_records_and_gets_a_verdict(camera_page):
    """Chromium's fake camera (a test pattern, no face): the page opens a session, shows the server's
    challenge, records a clip with MediaRecorder, uploads it, and shows the (failed) verdict."""
    page = camera_page
    page.click("#tab-liveness")
    page.click("#liveness-start")
    page.wait_for_selector("#liveness-actions li")
    assert 2 <= page.locator("#liveness-actions li").count() <= 4
    page.wait_for_selector("#liveness-verdict[data-passed]", timeout=90_000)
    assert page.get_attribute("#liveness-verdict", "data-passed") == "false"
    assert "face was seen in 0 of" in page.inner_text("#liveness-verdict")


def test_video_tab_draws_the_timeline(page, data):
    clip = data.parent / "videos" / "grid_pwij3p.mpg"
    if not clip.exists():
        pytest.fail(f"{clip}: the shared test videos are missing")
    page.click("#tab-video")
    page.set_input_files("#video-file", str(clip))
    page.fill("#video-fps", "5")
    page.click("#video-submit")
    expect(page.locator("#video-timeline .row")).to_have_count(1, timeout=120_000)
    row = page.locator("#video-timeline .row")
    assert "unknown" in row.inner_text()  # nobody is enrolled on this server
    assert row.locator("img").evaluate("img => img.naturalWidth") == 128  # the track's best face, a data: JPEG
    assert row.locator(".span").evaluate("el => el.getBoundingClientRect().width") > 0
    assert "1 track(s)" in page.inner_text("#video-summary")


def test_anonymize_tab_shows_the_covered_photo_and_the_check(page, data):
    page.click("#tab-anonymize")
    page.set_input_files("#anonymize-file", str(data / "groups/face_recognition__obama_and_biden.jpg"))
    page.click("#anonymize-submit")
    expect(page.locator("#anonymize-summary")).to_contain_text("face(s) covered", timeout=60_000)
    summary = page.inner_text("#anonymize-summary")
    assert "face(s) covered" in summary and "re-identified 0 of" in summary, summary
    assert page.locator("#anonymize-result").evaluate("img => img.naturalWidth") > 100
