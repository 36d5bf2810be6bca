"""The web UI in headless Chromium (Debian's chromium + chromedriver, driven by Selenium) against a live server.

Logs in, walks every page of the demo and the shop example, follows the lineage links, looks at a skew plot,
creates and revokes a key as admin, is refused as serving, and checks the layout at a phone's width.
A screenshot of each page is saved to tests/output/ui/ (gitignored) for a reviewer to look at.
Without chromium the tests skip, except under CI=true, where they fail.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator
from urllib.parse import urljoin

import pytest
import requests

from tests.required import CI, missing
from tests.server_process import live_process
from tests.ui_demo import http_call, populate_demo, populate_shop

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    if CI:  # CI=true: the browser tests run, never skip
        raise
    pytest.skip("selenium is not installed (requirements-dev.txt)", allow_module_level=True)

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parent / "output" / "ui"
ADMIN_KEY = "ui-browser-admin-key-0123456789"
DESKTOP, PHONE = (1280, 800), (390, 844)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A live service with the demo and the shop registered through its API."""
    root = tmp_path_factory.mktemp("ui-browser")
    with live_process(root / "data", AUTH="on", ADMIN_KEY=ADMIN_KEY, MAX_BODY_BYTES=str(8 * 1024 * 1024)) as live:
        call = http_call(live.base, {"Authorization": f"Bearer {ADMIN_KEY}"})
        yield {"base": live.base, "call": call, "demo": populate_demo(call, root / "demo-repo"),
               "shop": populate_shop(call, root / "shop-repo")}


@pytest.fixture(scope="module")
def browser() -> Iterator["webdriver.Chrome"]:
    """One headless Chromium for the module, at 1280x800."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        missing("Chromium and ChromeDriver",
                f"headless browser tests need {CHROMIUM} and {CHROMEDRIVER} (scripts/test.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(*DESKTOP)
    driver.set_page_load_timeout(60)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # not emptied: pytest-xdist workers may share it
    try:
        yield driver
    finally:
        driver.quit()


def login(driver, base: str, key: str) -> None:
    """Log out (forget the cookie) and log in with `key` through the form, found by its label."""
    driver.delete_all_cookies()
    driver.get(base + "/ui/login")
    field = driver.find_element(By.ID, driver.find_element(By.XPATH, "//label[text()='API key']").get_attribute("for"))
    field.send_keys(key)
    follow(driver, driver.find_element(By.XPATH, "//button[text()='Log in']"))  # home, or the form refusing


def follow(driver, element, keys: str | None = None) -> None:
    """Click `element` (or type `keys` into it) and wait for the page that answers: reading the next page
    before the old one is gone would find the old page's elements."""
    old = driver.find_element(By.TAG_NAME, "html")
    if keys is None:
        element.click()
    else:
        element.send_keys(keys)
    WebDriverWait(driver, 30).until(gone(old))


def gone(element):
    """A wait condition: `element` no longer belongs to the page. Chromium reports a node of a page being
    replaced either as stale or, mid-navigation, with another WebDriverException; both mean it is gone."""
    def check(_driver) -> bool:
        try:
            element.is_enabled()
            return False
        except WebDriverException:
            return True
    return check


def shot(driver, name: str, full: bool = False) -> None:
    """Save a screenshot of the page (`full`: as tall as the page) under tests/output/ui/."""
    width, height = driver.get_window_size()["width"], driver.get_window_size()["height"]
    if full:
        driver.set_window_size(width, min(driver.execute_script("return document.body.scrollHeight") + 120, 4000))
    driver.save_screenshot(str(SCREENSHOTS / f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.png"))
    driver.set_window_size(width, height)


def heading(driver) -> str:
    return driver.find_element(By.TAG_NAME, "h1").text


def refusals(driver) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "[role=alert]")]


def links_in(driver, selector: str) -> list[str]:
    """The absolute URLs of the links matching `selector` (HTML or SVG <a>, read from their href attribute)."""
    return [urljoin(driver.current_url, a.get_dom_attribute("href"))
            for a in driver.find_elements(By.CSS_SELECTOR, selector)]


def test_admin_walks_every_page_of_the_demo_and_the_shop(server, browser):
    login(browser, server["base"], ADMIN_KEY)
    assert heading(browser) == "Feature store" and "admin" in browser.find_element(By.CSS_SELECTOR, ".logout").text
    assert ADMIN_KEY not in browser.current_url
    shot(browser, "home")
    seen = set()
    for listing, expected in (("Sources", 6), ("Queries", 2), ("ETLs", 3), ("Feature sets", 2)):
        follow(browser, browser.find_element(By.LINK_TEXT, listing))
        assert heading(browser) == listing and not refusals(browser)
        shot(browser, listing)
        pages = links_in(browser, "main tbody tr td:first-child a")
        assert len(pages) == expected, listing
        for url in pages:
            browser.get(url)
            assert not refusals(browser), url
            seen.add(heading(browser))
            shot(browser, url.rsplit("/ui/", 1)[1], full=True)
    for name in ("quote_join", "activity", "quote_features", "fitted_features", "customer_features",
                 "users", "page_views", "orders"):
        assert any(name in title for title in seen), (name, seen)
    assert "Feature set shop_activity" in seen and "Feature set conversion" in seen
    follow(browser, browser.find_element(By.CSS_SELECTOR, "a.brand"))
    follow(browser, browser.find_element(By.ID, browser.find_element(By.XPATH, "//label[starts-with(text(), 'Search')]")
                                         .get_attribute("for")), "seconds_on_page\n")
    assert browser.find_element(By.LINK_TEXT, "page_views").is_displayed()
    shot(browser, "search")


def test_lineage_nodes_link_to_their_pages(server, browser):
    login(browser, server["base"], ADMIN_KEY)
    follow(browser, browser.find_element(By.LINK_TEXT, "Lineage"))
    shot(browser, "lineage")
    nodes = browser.find_elements(By.CSS_SELECTOR, "svg.lineage a.node")
    assert len(nodes) == 13 and len(browser.find_elements(By.CSS_SELECTOR, "svg.lineage path.edge")) == 12
    etl = next(n for n in nodes if n.get_attribute("aria-label") == "ETL customer_features")
    follow(browser, etl)  # a click on the drawn box, as a person would
    assert heading(browser) == "ETL customer_features"
    browser.back()
    for node in links_in(browser, "svg.lineage a.node"):
        browser.get(node)
        assert browser.find_element(By.TAG_NAME, "h1").is_displayed() and not refusals(browser), node
    browser.get(f"{server['base']}/ui/queries/{server['shop']['query_id']}")
    follow(browser, browser.find_element(By.LINK_TEXT, "Lineage of this query"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.lineage a.node:not(.dim)")) == 5
    other_query = browser.find_element(By.CSS_SELECTOR, "a.node[aria-label='query quote_join']")
    assert "dim" in other_query.get_attribute("class")
    shot(browser, "lineage-of-a-query")


def test_the_skew_plot_of_a_flagged_feature_is_drawn(server, browser):
    login(browser, server["base"], ADMIN_KEY)
    browser.get(f"{server['base']}/ui/etls/{server['demo']['etl_ids']['quote_features']}")
    figure = browser.find_element(By.CSS_SELECTOR, "figure.flagged#feature-is_mobile")
    plot = figure.find_element(By.CSS_SELECTOR, "svg.plot")
    assert plot.is_displayed() and plot.size["width"] > 200 and plot.size["height"] > 80
    assert len(plot.find_elements(By.CSS_SELECTOR, "rect.bar.train")) == 2  # True, False
    assert len(plot.find_elements(By.CSS_SELECTOR, "rect.bar.serve")) == 2
    assert "flagged: psi" in figure.find_element(By.TAG_NAME, "figcaption").text
    browser.execute_script("arguments[0].scrollIntoView()", figure)
    shot(browser, "skew-plot")


def test_admin_creates_a_key_sees_it_once_and_revokes_it(server, browser):
    login(browser, server["base"], ADMIN_KEY)
    follow(browser, browser.find_element(By.LINK_TEXT, "Keys"))
    browser.find_element(By.ID, "name").send_keys("browser-model")
    Select(browser.find_element(By.ID, "role")).select_by_visible_text("serving")
    follow(browser, browser.find_element(By.XPATH, "//button[text()='Create']"))
    key = browser.find_element(By.CSS_SELECTOR, "[role=status] code").text
    assert requests.post(server["base"] + "/v1.0/query/realtime", json={}, timeout=10,
                         headers={"Authorization": f"Bearer {key}"}).status_code == 400  # known key, bad body
    shot(browser, "keys")
    revoke = browser.find_element(By.CSS_SELECTOR, "button[aria-label='Revoke key browser-model']")
    revoke.click()
    WebDriverWait(browser, 20).until(gone(revoke))  # the page after the POST
    assert key not in browser.page_source  # shown once
    assert not browser.find_elements(By.CSS_SELECTOR, "button[aria-label='Revoke key browser-model']")
    login(browser, server["base"], key)
    assert "unknown or revoked" in " ".join(refusals(browser))


def test_a_serving_key_is_refused_and_sees_no_etl_code(server, browser):
    key = server["call"]("POST", "/v1.0/keys", {"name": "browser-serving", "role": "serving"})["key"]
    login(browser, server["base"], key)
    assert "serving" in browser.find_element(By.CSS_SELECTOR, ".logout").text
    assert not browser.find_elements(By.LINK_TEXT, "Keys")
    browser.get(f"{server['base']}/ui/etls/{server['demo']['etl_ids']['quote_features']}")
    assert "The API refused: 403" in " ".join(refusals(browser))
    assert "MOBILE_DEVICES" not in browser.page_source and "Code at its commit" not in browser.page_source
    shot(browser, "serving-refused")
    browser.get(server["base"] + "/ui/keys")
    assert "The API refused: 403" in " ".join(refusals(browser))


def test_pages_fit_a_phone_width(server, browser):
    login(browser, server["base"], ADMIN_KEY)
    browser.set_window_size(*PHONE)
    try:
        for path in ("/ui/", "/ui/sources/page_views", f"/ui/etls/{server['demo']['etl_ids']['quote_features']}",
                     "/ui/feature-sets/conversion", "/ui/lineage"):
            browser.get(server["base"] + path)
            overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, (path, overflow)  # wide tables and the graph scroll inside their box
            shot(browser, "phone " + path)
    finally:
        browser.set_window_size(*DESKTOP)
