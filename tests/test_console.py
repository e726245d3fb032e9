"""The office console in a real headless Chromium (Debian's chromium and chromium-driver, through
Selenium) against central on the real broker, with a gateway on virtual devices behind it: log in;
approve a registration, and the tenant's ID card then opens the door; issue a visitor pass, and its
QR code as the page shows it, held up to the door camera, opens the door; acknowledge the alarm of
a forced door; a staff user cannot export identities, the police liaison can, and the export is in
the audit log. The pages are screenshotted on the way (DOOR_EDGE_SCREENSHOTS=dir keeps them: the
README's pictures are made so)."""

from __future__ import annotations

import base64
import os
import shutil
import time
from datetime import date
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from central import staff
from central.web import WebServer
from rigs import scene
from rigs.ga467 import CHEN_JING
from rigs.rig import QR_CAMERA, IdReaderSpec, wait_until
from tests.conftest import AppThread

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DESK, DOOR = 0, 1
PASSWORDS = {"wang": "staff password 1", "liu": "police password 2", "zhao": "staff password 3"}


@pytest.fixture
def browser(tmp_path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,760", "--lang=zh-CN"):
        opts.add_argument(arg)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
    try:
        driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    except WebDriverException as exc:
        pytest.fail(f"headless Chromium did not start ({exc.msg}); `make dev` installs chromium and chromium-driver")
    driver.downloads = downloads
    yield driver
    driver.quit()


class Shots:
    def __init__(self, driver, folder: Path):
        self.driver, self.folder = driver, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.keep = os.environ.get("DOOR_EDGE_SCREENSHOTS")

    def take(self, name: str) -> None:
        path = self.folder / f"{name}.png"
        self.driver.save_screenshot(str(path))
        if self.keep:
            Path(self.keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(self.keep) / path.name)


def submit(driver, user: str, password: str) -> None:
    """The log-in form, filled in and sent (the page it answers with is loaded when this returns)."""
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    click_through(driver, driver.find_element(By.ID, "submit"))


def click_through(driver, button) -> None:
    """Click a form's button (or a link) and wait until the answer's page has replaced the one it
    was on: the old page is marked, and a new document has no mark (element staleness alone races
    with Chromium's own 'node does not belong to the document' while the page is being replaced)."""
    driver.execute_script("window.__leaving = true")
    button.click()

    def arrived(d) -> bool:
        try:
            return bool(d.execute_script("return document.readyState === 'complete' && !window.__leaving"))
        except WebDriverException:
            return False  # between the two pages

    WebDriverWait(driver, 10).until(arrived)


def log_in(driver, url: str, user: str) -> None:
    driver.get(url + "/login")
    submit(driver, user, PASSWORDS[user])
    wait_until(lambda: driver.current_url.rstrip("/") == url, 10, f"{user} logged in")


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def present(app: AppThread, rig, reader: int, reason: str) -> None:
    before = app.reasons().count(reason)
    rig.ga467[reader].present(CHEN_JING)
    app.wait_event(reason, count=before + 1)
    rig.ga467[reader].take_away()


def test_the_office_console(synced_factory, browser, tmp_path):
    camera = tmp_path / "lobby-cam"
    scene.show(camera, scene.write(tmp_path / "scenes" / "blank", scene.blank(3)))
    s = synced_factory(id_readers=(IdReaderSpec("in", "register"), IdReaderSpec("in")), extra_toml=QR_CAMERA.format(source=camera),
                       sync_extra="ack_timeout_s = 2\n")
    central = s.connect_central()
    central.publish_csv(s.rig.residents_path)
    with central.store.use() as db:
        staff.add(db, "wang", PASSWORDS["wang"], "staff")
        staff.add(db, "liu", PASSWORDS["liu"], "police")
        staff.add(db, "zhao", PASSWORDS["zhao"], "staff")
    web = WebServer(central).start_serving()
    app = AppThread(s.rig.config_path).start()
    shots = Shots(browser, tmp_path / "shots")
    url = web.url
    try:
        # log in (a wrong password first)
        browser.get(url + "/registrations")
        assert browser.current_url.endswith("/login")                  # nothing without logging in
        shots.take("login")
        submit(browser, "wang", "not the password")
        assert browser.find_element(By.ID, "bad-login").is_displayed()
        for _ in range(5):  # someone guessing a colleague's password ...
            submit(browser, "zhao", "a guess at it")
        submit(browser, "zhao", PASSWORDS["zhao"])  # ... locks the name for 15 minutes, even for the right one
        assert browser.find_element(By.ID, "locked").is_displayed() and browser.current_url.endswith("/login")
        log_in(browser, url, "wang")
        wait_until(lambda: central.gateway(s.gw).get("state") == "online", 15, "the gateway online")
        browser.refresh()
        assert s.gw in text(browser, "gateways")
        shots.take("gateways")

        # a registration approved in the console, then the tenant's ID card opens the door
        present(app, s.rig, DESK, "registration_sent")
        wait_until(lambda: len(central.registrations("test")) == 1, 15, "the registration at central")
        (reg,) = central.registrations("test")
        browser.get(url + "/registrations")
        row = browser.find_element(By.ID, f"reg-{reg.id}")
        assert CHEN_JING.name in row.text
        shots.take("registrations")
        approve = row.find_element(By.CSS_SELECTOR, "form.approve")
        approve.find_element(By.NAME, "doors").clear()
        approve.find_element(By.NAME, "doors").send_keys("lobby")
        until = date(date.today().year + 1, 6, 30)
        browser.execute_script("arguments[0].value = arguments[1]", approve.find_element(By.NAME, "until"), until.isoformat())
        approve.find_element(By.NAME, "room").send_keys("1203")
        click_through(browser, approve.find_element(By.TAG_NAME, "button"))
        wait_until(lambda: central.registrations("test", states=("approved",)) != [], 10, "the approval")
        wait_until(lambda: app.app.parts.whitelist.version == central.version, 15, "the approval's delta at the gateway")
        present(app, s.rig, DOOR, "granted")

        # a visitor pass issued in the console; its QR code, as shown, opens the door
        browser.get(url + "/passes")
        Select(browser.find_element(By.ID, "host")).select_by_visible_text("R-0101 Li Wei")
        browser.find_element(By.ID, "doors").send_keys("lobby")
        uses = browser.find_element(By.ID, "uses")
        uses.clear()
        uses.send_keys("1")
        click_through(browser, browser.find_element(By.ID, "issue-pass"))
        src = browser.find_element(By.ID, "qr").get_attribute("src")
        assert src.startswith("data:image/png;base64,")
        shots.take("passes")
        code = scene.png_rgb(base64.b64decode(src.split(",", 1)[1]))
        scene.show(camera, scene.write(tmp_path / "scenes" / "visitor", scene.code_held(code)))
        app.wait_event("visitor_granted", timeout=30)
        scene.show(camera, tmp_path / "scenes" / "blank")

        # a forced door: the alarm in the console, acknowledged
        machine = app.app.parts.controller.machines["lobby"]
        wait_until(lambda: time.monotonic() > machine.authorised_until, 10, "the visitor's grant to lapse")
        s.rig.board.set_input(0, True)
        app.wait_event("forced_open")
        wait_until(lambda: any(a["name"] == "forced_open" for a in central_alarms(central)), 15, "the alarm at central")
        (alarm,) = [a for a in central_alarms(central) if a["name"] == "forced_open"]
        browser.get(url + "/alarms")
        row = browser.find_element(By.ID, f"alarm-{alarm['id']}")
        assert "forced_open" in row.text and row.find_elements(By.CSS_SELECTOR, "td.critical")
        shots.take("alarms")
        click_through(browser, row.find_element(By.CSS_SELECTOR, "button.ack"))
        wait_until(lambda: "wang" in browser.find_element(By.ID, f"alarm-{alarm['id']}").text, 10, "the acknowledgement shown")
        assert next(a for a in central_alarms(central) if a["id"] == alarm["id"])["acked_by"] == "wang"
        s.rig.board.set_input(0, False)

        # a POST without the form's CSRF token is refused
        status = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/alarms/' + arguments[0] + '/ack', {method: 'POST'}).then(r => done(r.status));", alarm["id"])
        assert status == 403

        browser.get(url + "/residents")
        assert "R-0101 Li Wei" in text(browser, "residents") and "04A1B2C3" not in browser.page_source  # counts, never numbers
        shots.take("residents")
        browser.get(url + "/events?door=lobby")
        assert "visitor_granted" in text(browser, "events")
        shots.take("events")

        # identities leave only with the police liaison, and that is audited
        browser.get(url + "/export")
        assert browser.find_element(By.ID, "forbidden").is_displayed()
        click_through(browser, browser.find_element(By.ID, "logout"))
        log_in(browser, url, "liu")
        browser.get(url + "/export")
        browser.find_element(By.ID, "download").click()
        wait_until(lambda: any(p.suffix == ".csv" for p in browser.downloads.iterdir()), 10, "the export downloaded")
        (csv_file,) = [p for p in browser.downloads.iterdir() if p.suffix == ".csv"]
        assert CHEN_JING.idno in csv_file.read_text(encoding="utf-8")
        browser.get(url + "/audit")
        audit = text(browser, "audit")
        assert "registrations_exported" in audit and "export_refused" in audit and "registration_approved" in audit
        shots.take("audit")
        click_through(browser, browser.find_element(By.ID, "lang"))  # the office's other language
        assert browser.find_element(By.TAG_NAME, "h2").text == "Audit log" and browser.current_url.endswith("/audit")
        with central.store.use() as db:
            who = dict(db.execute("SELECT action, who FROM audit WHERE action IN ('registrations_exported', 'export_refused')"))
        assert who == {"registrations_exported": "liu", "export_refused": "wang"}
    finally:
        app.stop()
        web.stop()


def central_alarms(central) -> list[dict]:
    from central.office import Office

    return Office(central).alarms(open_only=False)
