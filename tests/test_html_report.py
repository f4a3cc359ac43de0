"""report.html of `vaezoo evaluate` and `vaezoo benchmark`: one self-contained, escaped, sortable page."""

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from vaezoo.evaluation.benchmark import Suite, SuiteEntry, render_results, run_suite
from vaezoo.evaluation.evaluate import EvaluationReport, write_report
from vaezoo.evaluation.html_report import Cell, Table, markdown_table, number_cell, sort_key, sortable_table
from vaezoo.images import save_gif, save_image

HOSTILE = "<script>alert(1)</script>"


class Parsed(HTMLParser):
    """The tags of a page with their attributes, and its tables as rows of (text, data-value) cells."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: list[list[list[tuple[str, str | None]]]] = []
        self.scripts: list[str] = []
        self._cell: list[str] | None = None
        self._value: str | None = None
        self._in_script = False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell, self._value = [], dict(attrs).get("data-value")
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(("".join(self._cell).strip(), self._value))
            self._cell = None
        self._in_script = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_script:
            self.scripts.append(data)

    def attributes(self, tag: str, name: str) -> list[str]:
        return [attrs[name] or "" for t, attrs in self.tags if t == tag and name in attrs]


def assert_self_contained(page: str) -> Parsed:
    parsed = Parsed(page)
    links = [attrs[key] or "" for _, attrs in parsed.tags for key in ("src", "href") if key in attrs]
    assert not [link for link in links if link.startswith(("http:", "https:", "//", "file:"))]
    assert "http://" not in page and "https://" not in page
    assert all(src.startswith("data:image/") for src in parsed.attributes("img", "src"))
    assert not [t for t, _ in parsed.tags if t == "link"]  # no stylesheet or font files
    assert not parsed.attributes("script", "src")  # the sorting script is inline
    return parsed


@pytest.fixture
def report_dir(tmp_path) -> Path:
    """An evaluation report folder: two PNGs (one the KL bar chart), a traversal GIF, and hostile text."""
    from vaezoo.evaluation.pictures import kl_bar_chart

    folder = tmp_path / "report"
    folder.mkdir()
    save_image(torch.rand(4, 1, 8, 8), folder / "reconstructions.png")
    save_image(kl_bar_chart([2.0, 0.5, 0.001]), folder / "kl_per_dim.png", padding=0)
    save_gif(torch.rand(3, 1, 8, 8), folder / "traversals_animation.gif")
    report = EvaluationReport(
        info={"model": "Beta&VAE", "checkpoint": "runs/a/last.ckpt", "global_step": 7, "data": "dsprites"},
        metrics={"reconstruction": {"mse": 0.000123456789, "psnr": 21.5}, "latent": {"active_units": 3.0}},
        not_applicable={"sample_quality": HOSTILE, "likelihood/nll": "a | b"},
        pictures={
            "reconstructions": "reconstructions.png",
            "traversals_animation": "traversals_animation.gif",
            "kl_per_dim": "kl_per_dim.png",
        },
        seconds={"reconstruction": 1.25, "pictures": 2.0},
    )
    write_report(report, folder)
    return folder


def test_evaluate_writes_a_self_contained_report_html_with_every_picture(report_dir):
    assert {"metrics.json", "report.md", "report.html"} <= {p.name for p in report_dir.iterdir()}
    page = (report_dir / "report.html").read_text()
    parsed = assert_self_contained(page)
    headings = [part.split("</h3>")[0] for part in page.split("<h3>")[1:]]
    assert headings == [
        "reconstructions",
        "traversals_animation",
        "kl_per_dim",
    ]
    sources = parsed.attributes("img", "src")
    assert len(sources) == 3 and sum(src.startswith("data:image/png;base64,") for src in sources) == 2
    (gif,) = [src for src in sources if src.startswith("data:image/gif;base64,")]  # by its bytes, not name
    assert base64.b64decode(gif.split(",", 1)[1]) == (report_dir / "traversals_animation.gif").read_bytes()
    assert "runs/a/last.ckpt" in page and "Time: 3.2 s" in page
    metrics, reasons = parsed.tables
    assert metrics[0] == [("group", None), ("metric", None), ("value", None)]
    assert ("psnr", None) in metrics[2] and ("active_units", None) in metrics[3]
    assert reasons[2] == [("likelihood/nll", None), ("a | b", None)]  # shown as it is; markdown says a / b
    assert "| likelihood/nll | a / b |" in (report_dir / "report.md").read_text()


def test_hostile_text_is_escaped(report_dir):
    page = (report_dir / "report.html").read_text()
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script") == 1  # the sorting script, nothing from the report
    assert "Evaluation of Beta&amp;VAE" in page and "Beta&VAE" not in page
    assert Parsed(page).tables[1][1][1][0] == HOSTILE  # the reader sees the reason as written


def test_numeric_sort_keys_are_the_raw_numbers(report_dir):
    metrics = Parsed((report_dir / "report.html").read_text()).tables[0]
    assert metrics[1][2] == ("1.235e-04", "0.000123456789")  # shown rounded, sorted by the exact value
    assert metrics[3][2] == ("3", "3.0")
    assert [sort_key(v) for v in (float("nan"), float("inf"), -float("inf"), 1234567)] == [
        None,
        "Infinity",
        "-Infinity",
        "1234567",
    ]


def test_a_table_is_one_structure_with_two_renderings():
    table = Table(["model", "FID"])
    table.rows += [
        [Cell("A|B <x>"), number_cell(12.5, lambda v: f"{v:.0f}")],
        [Cell("C"), number_cell(None, str)],
        [Cell("D"), number_cell(float("nan"), str)],
    ]
    assert markdown_table(table) == [
        "| model | FID |",
        "|---|---|",
        "| A/B <x> | 12 |",
        "| C | – |",
        "| D | nan |",
    ]
    html = sortable_table(table)
    rows = Parsed(html).tables[0]
    assert rows[1:] == [
        [("A|B <x>", None), ("12", "12.5")],
        [("C", None), ("–", None)],
        [("D", None), ("nan", None)],
    ]
    assert (
        '<th scope="col">model</th><th scope="col" data-numeric>FID</th>' in html
    )  # numbers sort as numbers


def test_a_missing_or_foreign_picture_file_is_a_note(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    report = EvaluationReport(info={}, pictures={"gone": "gone.png", "fake": "notes.png"})
    write_report(report, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "<img" not in page
    assert "gone.png: not shown" in page and "notes.png: not shown" in page


def benchmark_row(label: str, metrics: dict[str, float]) -> dict:
    return {
        "label": label,
        "parameters": 1_234_567,
        "train_images_per_second": 250.4,
        "val_metrics": {"val/loss": 81.25},
        "metrics": metrics,
        "run_dir": "unused",
    }


def test_benchmark_report_html_has_both_tables_the_plot_and_a_section_per_entry(tmp_path, report_dir):
    output = tmp_path / "results"
    (output / "reports").mkdir(parents=True)
    report_dir.rename(output / "reports" / "VAE")  # VAE's evaluation report; "IWAE <k=2>" has none
    rows = {
        "VAE": benchmark_row("VAE", {"disentanglement/mig": 0.25, "disentanglement/irs": 0.5}),
        "IWAE_k_2": benchmark_row("IWAE <k=2>", {"disentanglement/mig": 0.125}),
    }
    (output / "results.json").write_text(json.dumps({"suite": "s", "rows": rows}))
    entries = [SuiteEntry("VAE", Path("unused.yaml")), SuiteEntry("IWAE <k=2>", Path("unused.yaml"))]
    suite = Suite("s&t", Path("s.yaml"), output, 0, {}, {}, {}, {}, entries)
    assert run_suite(suite) == output / "results.md"  # both entries are done: nothing is trained
    page = (output / "report.html").read_text()
    parsed = assert_self_contained(page)

    main, more = parsed.tables
    assert [text for text, _ in main[0]] == ["model", "params", "train img/s", "val loss", "MIG"]
    assert main[1] == [
        ("VAE", None),
        ("1.23M", "1234567"),
        ("250", "250.4"),
        ("81.25", "81.25"),
        ("0.25", "0.25"),
    ]
    assert [text for text, _ in more[0]] == ["model", "IRS"] and more[2] == [
        ("IWAE <k=2>", None),
        ("–", None),
    ]
    markdown = render_results(suite, list(rows.values()))  # the same rows, as results.md has them
    for table in (main, more):
        for cells in table:
            assert "| " + " | ".join(text for text, _ in cells) + " |" in markdown
    assert (output / "results.md").read_text() == markdown

    assert "<h3>results</h3>" in page and "Benchmark: s&amp;t" in page and "IWAE &lt;k=2&gt;" in page
    plot = parsed.attributes("img", "alt").index("results")
    assert (
        base64.b64decode(parsed.attributes("img", "src")[plot].split(",", 1)[1])
        == (output / "results.png").read_bytes()
    )
    vae, iwae = page.split("<details>")[1:]
    assert vae.count("<img") == 3 and "data:image/gif;base64," in vae and "<h3>kl_per_dim</h3>" in vae
    assert 'href="reports/VAE/report.html"' in vae
    assert "<img" not in iwae and "no evaluation pictures" in iwae and "no evaluation report" in iwae
    assert parsed.attributes("a", "href") == ["reports/VAE/report.html"]  # relative: opens from disk
