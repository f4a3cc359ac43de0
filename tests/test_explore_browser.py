"""The explorer's page and the evaluation report in a real browser: Debian's chromium, driven by Selenium
through chromium-driver (both installed by `make test` where it can, and by .ci/run).

Without them these tests skip, saying how to enable them; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from browser import chromium_driver, require_browser, wait_for
from helpers import require_package
from test_explore_api import SMALL, loaded, small
from torch import nn

from vaezoo.config import DataConfig
from vaezoo.data import VAEDataModule
from vaezoo.evaluation.evaluate import EvaluationReport, write_report
from vaezoo.explore.server import serving_in_background
from vaezoo.explore.session import Explorer, explorer_from_runs
from vaezoo.images import save_image


def test_a_missing_browser_skips_saying_how_to_install_it_and_fails_under_ci(monkeypatch):
    monkeypatch.setattr("browser.CHROMIUM", Path("/nonexistent/chromium"))
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium chromium-driver"):
        require_browser({})
    with pytest.raises(pytest.fail.Exception, match="/nonexistent/chromium"):
        require_browser({"CI": "true"})


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    require_package("selenium.webdriver", "test")
    driver = chromium_driver()
    yield driver
    driver.quit()


def sensitive(model: nn.Module, gain: float = 40.0) -> nn.Module:
    """``model`` with its last convolution scaled up: an untrained decoder barely answers its latents,
    this one visibly does."""
    last = [module for module in model.modules() if isinstance(module, nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(gain)
    return model


@pytest.fixture(scope="module")
def explorer() -> Explorer:
    data = VAEDataModule(DataConfig(name="dsprites", image_size=32, subset=400), batch_size=16)
    data.setup("fit")
    runs = [
        ("runs/vae", loaded(sensitive(small("VanillaVAE", latent_dim=4))), data),
        ("runs/beta", loaded(sensitive(small("BetaVAE", seed=1, latent_dim=3))), data),
    ]
    return explorer_from_runs(runs, SMALL, gallery_size=12, log=lambda _: None)


@pytest.fixture(scope="module")
def page(browser, explorer) -> Iterator[Any]:
    """The explorer's page, loaded, with its first image explored."""
    with serving_in_background(explorer) as url:
        browser.get(url)
        wait_for(lambda: browser.find_element("tag name", "body").get_attribute("data-ready"), "the page")
        yield browser


def decoded(browser) -> list[str]:
    return [
        image.get_attribute("src") for image in browser.find_elements("css selector", ".model img.decoded")
    ]


def error_text(browser) -> str:
    box = browser.find_element("id", "error")
    return box.text if box.is_displayed() else ""


@pytest.mark.slow
def test_the_page_loads_with_the_gallery_one_view_per_model_and_the_sliders(page):
    assert len(page.find_elements("css selector", "#gallery img")) == 12
    names = [h.text for h in page.find_elements("css selector", ".model h3")]
    assert names == ["VanillaVAE", "BetaVAE"]  # side by side
    sources = decoded(page)
    assert len(sources) == 2 and all(src.startswith("data:image/png;base64,") for src in sources)
    assert len(page.find_elements("css selector", "#sliders tbody tr")) == 4  # the larger latent
    assert page.find_element("id", "factors").is_displayed()  # dSprites: the image's factors
    assert "posX" in page.find_element("id", "factors").text
    assert "ms on the server" in page.find_element("id", "latency").text
    assert float(page.find_element("id", "latency").get_attribute("data-ms")) >= 0
    assert error_text(page) == ""


@pytest.mark.slow
def test_moving_a_slider_changes_every_models_decoded_image(page):
    from selenium.webdriver.common.action_chains import ActionChains

    before = decoded(page)
    slider = page.find_element("css selector", '#sliders input[data-rank="0"]')
    ActionChains(page).click_and_hold(slider).move_by_offset(90, 0).release().perform()  # a real drag
    wait_for(
        lambda: decoded(page)[0] != before[0] and decoded(page)[1] != before[1], "both decodes to change"
    )
    value = float(slider.get_attribute("value"))
    assert value > 0
    assert page.find_element("css selector", '#sliders tr[data-rank="0"] .value').text == f"{value:.2f}"
    page.find_element("id", "reset").click()
    wait_for(lambda: decoded(page) == before, "the reset to bring the reconstructions back")


@pytest.mark.slow
def test_a_bad_upload_shows_the_servers_error(page, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_bytes(b"these bytes are not a picture")
    page.find_element("id", "upload").send_keys(str(fake))
    message = wait_for(lambda: error_text(page), "the error")
    assert "not an image Pillow can read" in message


@pytest.mark.slow
def test_an_upload_is_explored_and_samples_can_be_picked(page, tmp_path):
    picture = tmp_path / "square.png"
    save_image(torch.zeros(1, 40, 40).index_fill_(1, torch.arange(10, 30), 1.0), picture, padding=0)
    before = decoded(page)
    page.find_element("id", "upload").send_keys(str(picture))
    wait_for(lambda: "upload" in page.find_element("id", "chosen").text, "the upload to be chosen")
    wait_for(lambda: decoded(page) != before, "the upload's reconstructions")
    assert error_text(page) == ""
    page.find_element("id", "prior").click()
    strips = wait_for(lambda: page.find_elements("css selector", ".strip"), "the sample strips")
    assert len(strips) == 2 and all(len(s.find_elements("tag name", "img")) == 8 for s in strips)
    shown = decoded(page)
    strips[0].find_elements("tag name", "img")[3].click()  # explore the fourth sample
    wait_for(lambda: decoded(page) != shown, "the picked sample's decodes")


@pytest.mark.slow
def test_the_evaluation_report_opens_from_disk_and_sorts_its_table(browser, tmp_path):
    report = EvaluationReport(info={"model": "VanillaVAE"})
    report.metrics = {"reconstruction": {"mse": 0.5, "psnr": 21.0}, "latent": {"active_units": 3.0}}
    save_image(torch.rand(1, 3, 8, 8), tmp_path / "samples.png")
    report.pictures = {"samples": "samples.png"}
    write_report(report, tmp_path)
    browser.get((tmp_path / "report.html").as_uri())
    table = browser.find_element("css selector", "table.sortable")

    def values() -> list[str]:
        return [
            row.find_elements("tag name", "td")[2].text
            for row in table.find_elements("css selector", "tbody tr")
        ]

    assert values() == ["0.5", "21", "3"]
    header = table.find_elements("tag name", "th")[2]
    header.click()
    assert values() == ["0.5", "3", "21"]
    header.click()
    assert values() == ["21", "3", "0.5"]
    image = browser.find_element("css selector", "figure img")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 0
