"""The README's screenshots: `vaezoo explore` on two runs side by side, and an evaluation's report.html.

    python scripts/screenshots.py RUN_A RUN_B --report RUN_A/evaluation/last

Needs Debian's chromium and chromium-driver (`make browser`) and the test extras (selenium). Writes
docs/images/explore.png and docs/images/report.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' chromium set-up

from browser import chromium_driver, wait_for  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402

from vaezoo.cli import _run_data  # noqa: E402
from vaezoo.explore.server import serving_in_background  # noqa: E402
from vaezoo.explore.session import explorer_from_runs  # noqa: E402
from vaezoo.io import load_run  # noqa: E402

IMAGES = REPO / "docs" / "images"


def explore_screenshot(runs: list[str], path: Path) -> None:
    loaded = [
        (source, run := load_run(source), _run_data(run.model, run.config, None, [], source, "shot"))
        for source in runs
    ]
    explorer = explorer_from_runs(loaded, gallery_size=36)
    driver = chromium_driver(1400, 1100)
    try:
        with serving_in_background(explorer) as url:
            driver.get(url)
            wait_for(lambda: driver.find_element("tag name", "body").get_attribute("data-ready"), "the page")
            for index in (7, 20):  # B, then A
                driver.find_elements("css selector", "#gallery img")[index].click()
                time.sleep(0.5)
            driver.find_element("id", "gmm").click()
            wait_for(
                lambda: driver.find_elements("css selector", ".strip img"), "the GMM samples", timeout=120
            )
            slider = driver.find_element("css selector", '#sliders input[data-rank="0"]')
            ActionChains(driver).click_and_hold(slider).move_by_offset(60, 0).release().perform()
            time.sleep(1.0)
            driver.save_screenshot(str(path))
    finally:
        driver.quit()
    print(f"wrote {path}")


def report_screenshot(report_dir: Path, path: Path) -> None:
    driver = chromium_driver(720, 1250)
    try:
        driver.get((report_dir / "report.html").resolve().as_uri())
        group = driver.find_elements("css selector", "table.sortable th")[0]
        group.click()  # sorted by group: the arrow shows
        driver.execute_script("document.body.style.zoom = '0.55'")  # the table and the first pictures
        time.sleep(0.5)
        driver.save_screenshot(str(path))
    finally:
        driver.quit()
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="runs to explore side by side")
    parser.add_argument("--report", type=Path, required=True, help="an evaluation folder holding report.html")
    args = parser.parse_args()
    IMAGES.mkdir(parents=True, exist_ok=True)
    explore_screenshot(args.runs, IMAGES / "explore.png")
    report_screenshot(args.report, IMAGES / "report.png")


if __name__ == "__main__":
    main()
