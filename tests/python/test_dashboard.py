"""The aggregator's web dashboard in a real browser.

Headless Chromium (Debian's `chromium` and `chromium-driver`, which
scripts/test installs when missing), driven with Selenium, against a real
`veil aggregator serve` holding the `flu` study of two sites, `north` and
`south`, each half of the Synthea sample's patients, uploaded with
`veil upload`. The test signs in with an API key, picks the study and a
count table, stratifies by site and filters by sex, and checks that every
number the chart and the table show is the number the chart API gives for
the same question, that every cell the API leaves out is drawn as
suppressed (never as zero), and that the page restores the same chart from
its address, works from the keyboard and prints without its controls.
Screenshots and a printed PDF go to target/ci-artifacts/.
"""
import base64
import json
import os
import shutil
import subprocess
import tempfile
import unittest
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import Select, WebDriverWait

from flu_export import ROOT, VEIL, flu_sites, listen, veil

SITES = ["north", "south"]
MIN_CELL = 10
ARTIFACTS = os.path.join(ROOT, "target", "ci-artifacts")
PACKAGE = "flu__count_vaccinated__001"
FILTER = "sex:strEq:female"


def key_of(value):
    """The page's data-* key for a value: JSON, as JavaScript writes it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("VEIL_CHROMIUM", "/usr/bin/chromium")
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400",
                 "--disable-gpu", "--no-first-run", "--disable-extensions"]:
        options.add_argument(flag)
    # Debian's driver, matching Debian's browser: nothing is downloaded.
    service = Service(executable_path=os.environ.get("VEIL_CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def screenshot(driver, path):
    """The whole page, not only the window."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, height + 120)
    driver.save_screenshot(path)
    driver.set_window_size(1280, 1400)


class Dashboard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="veil-dashboard-tests-")
        data_paths = flu_sites(cls.tmp, SITES)
        db = os.path.join(cls.tmp, "aggregator.db")
        secrets = {s: veil("aggregator", "site", "add", s, "--studies", "flu", "--db", db).stdout.strip() for s in SITES}
        cls.key = veil("aggregator", "key", "add", "--name", "dashboard-test", "--db", db).stdout.strip()
        cls.log = open(os.path.join(cls.tmp, "serve.log"), "w+")
        cls.server, cls.url = listen("aggregator", "serve", "--db", db, "--dir", os.path.join(cls.tmp, "archive"),
                                     "--min-cell", str(MIN_CELL), log=cls.log)
        for site in SITES:
            env = dict(os.environ, CUMULUS_AGGREGATOR_USER=site, CUMULUS_AGGREGATOR_ID=secrets[site],
                       CUMULUS_AGGREGATOR_URL=cls.url + "/")
            subprocess.run([VEIL, "upload", "flu", "--data-path", data_paths[site]], env=env, check=True,
                           capture_output=True, timeout=300)
        os.makedirs(ARTIFACTS, exist_ok=True)
        cls.driver = browser()
        # The page redraws the chart by replacing its nodes: an element found
        # just before a redraw goes stale, and the wait looks again.
        cls.wait = WebDriverWait(cls.driver, 20, ignored_exceptions=(StaleElementReferenceException,))

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        cls.server.terminate()
        cls.server.wait()
        cls.log.close()
        shutil.rmtree(cls.tmp, True)

    def api(self, path):
        request = urllib.request.Request(self.url + path, headers={"x-api-key": self.key})
        with urllib.request.urlopen(request) as r:
            return json.load(r)

    def expected(self, stratifier, filters):
        """The chart API's answer as {(series key, x key): count}, and the
        cells it leaves out: every series × every year the study has."""
        query = [("column", "year")] + ([("stratifier", stratifier)] if stratifier else []) + [("filter", f) for f in filters]
        chart = self.api(f"/data-packages/{PACKAGE}/chart?{urllib.parse.urlencode(query)}")
        cells = {(key_of(d.get("stratifier")), key_of(x)): n for d in chart["data"] for x, n in d["rows"]}
        series = {key_of(d.get("stratifier")) for d in chart["data"]}
        # The x values are those of the answer and of the column over
        # everything (the filters here are on other columns).
        everything = self.api(f"/data-packages/{PACKAGE}/chart?column=year")
        xs = {key_of(x) for c in (chart, everything) for d in c["data"] for x, _ in d["rows"]}
        missing = {(s, x) for s in series for x in xs} - set(cells)
        return cells, missing

    def shown(self, scope):
        """What the page shows under `scope`: ({(series, x): value}, {(series, x) drawn as suppressed})."""
        values, suppressed = {}, set()
        for e in self.driver.find_elements(By.CSS_SELECTOR, f"{scope} [data-x]"):
            cell = (e.get_attribute("data-series"), e.get_attribute("data-x"))
            if e.get_attribute("data-suppressed") == "true":
                suppressed.add(cell)
            else:
                values[cell] = int(e.get_attribute("data-value"))
        return values, suppressed

    def marked_partial(self, scope):
        return {(e.get_attribute("data-series"), e.get_attribute("data-x"))
                for e in self.driver.find_elements(By.CSS_SELECTOR, f"{scope} [data-partial=true]")}

    def sign_in(self):
        # A new tab's session: no key kept from an earlier test.
        self.driver.get(self.url + "/dashboard")
        self.driver.execute_script("sessionStorage.clear()")
        self.driver.get(self.url + "/")  # GET / sends a browser to the dashboard
        self.assertTrue(self.driver.current_url.endswith("/dashboard"))
        key = self.wait.until(ready.visibility_of_element_located((By.ID, "api-key")))
        key.send_keys(self.key, Keys.ENTER)
        self.wait.until(ready.visibility_of_element_located((By.ID, "app")))
        self.wait.until(lambda d: Select(d.find_element(By.ID, "study")).options)

    def test_1_a_wrong_key_is_refused_on_the_page(self):
        self.driver.get(self.url + "/dashboard")
        key = self.wait.until(ready.visibility_of_element_located((By.ID, "api-key")))
        key.send_keys("not-a-key", Keys.ENTER)
        error = self.wait.until(ready.visibility_of_element_located((By.ID, "error")))
        self.assertIn("refused", error.text)
        self.assertFalse(self.driver.find_element(By.ID, "app").is_displayed())

    def test_2_the_chart_shows_the_api_numbers(self):
        d = self.driver
        self.sign_in()
        Select(d.find_element(By.ID, "study")).select_by_value("flu")
        # The study overview: both sites, their last upload accepted, their periods.
        sites = d.find_element(By.ID, "sites").text
        for site in SITES:
            self.assertIn(site, sites)
        self.assertEqual(sites.count("accepted"), len(SITES))
        periods = self.api("/study-periods")
        self.assertIn(periods["north"]["flu"]["001"]["earliest_date"], sites)
        packages = d.find_element(By.ID, "packages").text
        self.assertIn("count_vaccinated", packages)
        self.assertIn(str(self.api(f"/data-packages/{PACKAGE}")["total"]), packages)

        Select(d.find_element(By.ID, "package")).select_by_value(PACKAGE)
        Select(d.find_element(By.ID, "column")).select_by_value("year")
        Select(d.find_element(By.ID, "stratifier")).select_by_value("site")
        d.find_element(By.ID, "filters").send_keys(FILTER)
        # Submitted from the keyboard: Enter on the focused Show button.
        show = d.find_element(By.CSS_SELECTOR, "#chart-form button[type=submit]")
        d.execute_script("arguments[0].focus()", show)
        d.switch_to.active_element.send_keys(Keys.ENTER)
        self.wait.until(lambda d: "female" in d.find_element(By.ID, "chart-caption").text)
        self.wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#chart-svg .value")))

        cells, missing = self.expected("site", [FILTER])
        self.assertGreater(len(cells), 5)
        self.assertEqual({s for s, _ in cells}, {key_of(s) for s in SITES})
        drawn, drawn_suppressed = self.shown("#chart-svg")
        self.assertEqual(drawn, cells, "every point is the API's number")
        self.assertEqual(drawn_suppressed, missing, "every cell the API leaves out is drawn as suppressed")
        listed, listed_suppressed = self.shown("#numbers")
        self.assertEqual(listed, cells, "the table holds the API's numbers")
        self.assertEqual(listed_suppressed, missing)
        for td in d.find_elements(By.CSS_SELECTOR, "#numbers td[data-suppressed]"):
            self.assertEqual(td.text, "suppressed", "a suppressed cell never reads as a number")
        self.assertNotIn(0, drawn.values())
        screenshot(d, os.path.join(ARTIFACTS, "dashboard.png"))

        # A bar chart of the same question draws the same numbers.
        d.find_element(By.CSS_SELECTOR, "input[name=kind][value=bar]").click()
        d.find_element(By.CSS_SELECTOR, "#chart-form button[type=submit]").click()
        self.wait.until(lambda d: d.find_element(By.ID, "chart-svg").get_attribute("data-kind") == "bar")
        self.assertEqual(self.shown("#chart-svg"), (cells, missing))
        self.assertEqual(len(d.find_elements(By.CSS_SELECTOR, "#chart-svg rect.value")), len(cells))

        # The address holds the question: opening it again shows the same chart.
        address = d.current_url
        self.assertIn("stratifier=site", address)
        d.get("about:blank")
        d.get(address)
        self.wait.until(lambda d: "female" in d.find_element(By.ID, "chart-caption").text)
        self.wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#chart-svg .value")))
        self.assertEqual(self.shown("#chart-svg"), (cells, missing))

        # Printed, the controls go and the chart and the numbers stay.
        d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        self.assertFalse(d.find_element(By.ID, "chart-form").is_displayed())
        self.assertTrue(d.find_element(By.ID, "chart-svg").is_displayed())
        self.assertTrue(d.find_element(By.ID, "numbers").is_displayed())
        d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
        with open(os.path.join(ARTIFACTS, "dashboard.pdf"), "wb") as f:
            f.write(base64.b64decode(d.print_page()))

    def test_3_one_series_over_all_sites(self):
        d = self.driver
        self.sign_in()
        Select(d.find_element(By.ID, "package")).select_by_value(PACKAGE)
        Select(d.find_element(By.ID, "column")).select_by_value("year")
        Select(d.find_element(By.ID, "stratifier")).select_by_value("")
        d.find_element(By.ID, "filters").clear()
        d.find_element(By.CSS_SELECTOR, "#chart-form button[type=submit]").click()
        self.wait.until(lambda d: "where" not in d.find_element(By.ID, "chart-caption").text
                        and d.find_elements(By.CSS_SELECTOR, "#chart-svg .value"))
        cells, missing = self.expected(None, [])
        self.assertEqual(self.shown("#chart-svg"), (cells, missing))
        # The combined counts are the sums of the two sites' own.
        by_site, _ = self.expected("site", [])
        for (_, x), n in cells.items():
            self.assertEqual(n, sum(v for (s, x2), v in by_site.items() if x2 == x))

        # Women over both sites: where one site suppressed a year, the sum is
        # a lower bound, marked as such (the API's `partial`), and only there.
        d.find_element(By.ID, "filters").send_keys(FILTER)
        d.find_element(By.CSS_SELECTOR, "#chart-form button[type=submit]").click()
        self.wait.until(lambda d: "female" in d.find_element(By.ID, "chart-caption").text)
        women, _ = self.expected(None, [FILTER])
        women_by_site, _ = self.expected("site", [FILTER])
        lower_bounds = {("null", x) for (_, x) in women if any((key_of(s), x) not in women_by_site for s in SITES)}
        self.assertTrue(lower_bounds, "the sample has years one site suppressed")
        self.assertEqual(self.shown("#chart-svg")[0], women)
        self.assertEqual(self.marked_partial("#chart-svg"), lower_bounds)
        self.assertEqual(self.marked_partial("#numbers"), lower_bounds)
        for td in d.find_elements(By.CSS_SELECTOR, "#numbers td[data-partial=true]"):
            self.assertTrue(td.text.startswith("≥ "), td.text)
        d.find_element(By.ID, "filters").clear()

        # A filter on the charted column leaves years out; they are not suppressed.
        d.find_element(By.ID, "filters").send_keys("year:afterYear:2015-01-01")
        Select(d.find_element(By.ID, "stratifier")).select_by_value("site")
        d.find_element(By.CSS_SELECTOR, "#chart-form button[type=submit]").click()
        self.wait.until(lambda d: "afterYear" in d.find_element(By.ID, "chart-caption").text)
        values, suppressed = self.shown("#chart-svg")
        query = "column=year&stratifier=site&filter=year%3AafterYear%3A2015-01-01"
        chart = self.api(f"/data-packages/{PACKAGE}/chart?{query}")
        self.assertEqual(values, {(key_of(s["stratifier"]), key_of(x)): n for s in chart["data"] for x, n in s["rows"]})
        years = {x for _, x in values} | {x for _, x in suppressed}
        self.assertTrue(years and all(json.loads(x) > "2015" for x in years), years)


if __name__ == "__main__":
    unittest.main()
