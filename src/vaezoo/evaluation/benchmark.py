"""``vaezoo benchmark``: train a suite of (model, config) pairs on one dataset with one budget and
seed, evaluate each, and write ``results.md``, ``results.json`` and a plot.

A suite is a YAML file (see ``benchmarks/``)::

    name: dsprites
    output: benchmarks/results/dsprites      # results, runs and reports go here
    seed: 1265
    data:  {name: dsprites, subset: 40000}   # merged over every config's data section
    train: {max_epochs: 3}                   # the budget, merged over every config's train section
    evaluate: {fid_samples: 0, disentanglement_train: 10000}   # EvaluationSettings fields
    udr: {points: 10000, correlation: lasso}   # optional: a UDR column across the suite's runs
    models:
      - {label: VAE, config: configs/vae.yaml}
      - {label: BetaVAE-B, config: configs/bbvae.yaml, overrides: {model.latent_dim: 10}}

With ``udr``, every unconditional entry is also scored by UDR (Duan et al. 2020) against the
other entries of the suite trained so far (they share the data): the median similarity of its
codes to theirs, recomputed whenever the suite runs.

Each finished entry is stored in results.json at once, so an interrupted suite resumes where it
stopped; ``--force`` retrains.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch

from vaezoo.config import ConfigError, from_dict, load_yaml, set_dotted
from vaezoo.evaluation.evaluate import EvaluationSettings, evaluate, format_value, report_pictures
from vaezoo.evaluation.html_report import (
    Cell,
    Table,
    embedded_picture,
    escape,
    markdown_table,
    number_cell,
    page,
    picture_gallery,
    sortable_table,
)
from vaezoo.fileio import atomic_path, atomic_write_text

SUITE_KEYS = {
    "name",
    "description",
    "output",
    "seed",
    "data",
    "train",
    "logging",
    "evaluate",
    "models",
    "udr",
}
UDR_KEYS = {"points", "correlation"}


@dataclass
class SuiteEntry:
    label: str
    config: Path
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return slugify(self.label)


def slugify(label: str) -> str:
    """The name of an entry's run and report folders: its label in file-name characters."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")


@dataclass
class Suite:
    name: str
    source: Path
    output: Path
    seed: int
    data: dict[str, Any]
    train: dict[str, Any]
    logging: dict[str, Any]
    evaluate: dict[str, Any]
    models: list[SuiteEntry]
    description: str = ""
    udr: dict[str, Any] | None = None  # {points, correlation}: a UDR column across the entries


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file; errors name the file and the key."""
    path = Path(path)
    raw = load_yaml(path)
    unknown = set(raw) - SUITE_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; a suite has {sorted(SUITE_KEYS)}")
    if not raw.get("models"):
        raise ConfigError(f"{path}: 'models' must list at least one entry with 'label' and 'config'")
    settings = {f.name for f in fields(EvaluationSettings)}
    bad = set(raw.get("evaluate") or {}) - settings
    if bad:
        raise ConfigError(f"{path}: unknown evaluate key(s) {sorted(bad)}; valid: {sorted(settings)}")
    entries = []
    for i, item in enumerate(raw["models"]):
        if not isinstance(item, dict) or "config" not in item:
            raise ConfigError(f"{path}: models[{i}] needs a 'config' (a YAML under configs/), got {item!r}")
        config = Path(item["config"])
        if not config.is_file():
            raise ConfigError(f"{path}: models[{i}].config {config} does not exist")
        entries.append(
            SuiteEntry(str(item.get("label", config.stem)), config, dict(item.get("overrides") or {}))
        )
    udr = raw.get("udr")
    if udr is not None and (not isinstance(udr, dict) or set(udr) - UDR_KEYS):
        raise ConfigError(f"{path}: udr must be a mapping with keys among {sorted(UDR_KEYS)}, got {udr!r}")
    labels = [entry.slug for entry in entries]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{path}: model labels must be unique, got {labels}")
    name = str(raw.get("name", path.stem))
    return Suite(
        name=name,
        source=path,
        output=Path(raw.get("output", Path("benchmarks") / "results" / name)),
        seed=int(raw.get("seed", 1265)),
        data=dict(raw.get("data") or {}),
        train=dict(raw.get("train") or {}),
        logging=dict(raw.get("logging") or {}),
        evaluate=dict(raw.get("evaluate") or {}),
        models=entries,
        description=str(raw.get("description", "")),
        udr=dict(udr) if udr is not None else None,
    )


def entry_config(suite: Suite, entry: SuiteEntry, runs_dir: Path) -> Any:
    """The entry's config with the suite's data, budget, seed and run folder laid over it."""
    raw = copy.deepcopy(load_yaml(entry.config))
    for section in ("data", "train", "logging"):
        raw.setdefault(section, {}).update(copy.deepcopy(getattr(suite, section)))
    raw["train"]["seed"] = suite.seed
    raw["logging"].update(save_dir=str(runs_dir), name=entry.slug)
    for key, value in entry.overrides.items():
        set_dotted(raw, key, value)
    return from_dict(raw, source=f"{suite.source}: {entry.label} ({entry.config})")


def run_entry(suite: Suite, entry: SuiteEntry, output: Path) -> dict[str, Any]:
    """Train one entry from scratch, evaluate it, and return its row of results."""
    from vaezoo.io import load_run
    from vaezoo.training.run import train

    config = entry_config(suite, entry, output / "runs")
    start = time.perf_counter()
    run_dir = train(config)
    train_seconds = time.perf_counter() - start
    run = load_run(run_dir / "checkpoints" / "last.ckpt")
    summary = json.loads((run_dir / "summary.json").read_text())
    # A pair model's batch of B pairs holds 2B images.
    images_seen = run.global_step * config.train.batch_size * (2 if run.model.trains_on_pairs else 1)
    row = {
        "label": entry.label,
        "model": type(run.model).__name__,
        "config": str(entry.config),
        "overrides": entry.overrides,
        "run_dir": str(run_dir),
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "steps": run.global_step,
        "train_seconds": round(train_seconds, 1),
        "train_images_per_second": round(images_seen / train_seconds, 1),
        "val_metrics": summary.get("val_metrics", {}),
    }
    return {**row, **evaluate_entry(suite, entry, output, run_dir)}


def evaluate_entry(suite: Suite, entry: SuiteEntry, output: Path, run_dir: Path) -> dict[str, Any]:
    """Evaluate an entry's trained run with the suite's settings: the evaluation part of its row."""
    from vaezoo.data import VAEDataModule
    from vaezoo.io import load_run

    config = entry_config(suite, entry, output / "runs")
    run = load_run(Path(run_dir) / "checkpoints" / "last.ckpt")
    datamodule = VAEDataModule(config.data, batch_size=config.train.batch_size)
    datamodule.prepare_data()
    datamodule.setup("fit")
    settings = EvaluationSettings(**{**suite.evaluate, "progress": False})
    info = {
        "model": type(run.model).__name__,
        "checkpoint": str(run.checkpoint),
        "global_step": run.global_step,
        "data": config.data.name,
    }
    start = time.perf_counter()
    report = evaluate(run.model, datamodule, settings, output / "reports" / entry.slug, info=info)
    return {
        "report": str(output / "reports" / entry.slug / "report.md"),
        "evaluate_seconds": round(time.perf_counter() - start, 1),
        "metrics": report.flat(),
        "not_applicable": report.not_applicable,
    }


def read_results(results_file: Path) -> dict[str, Any]:
    """results.json ({} if absent); a damaged one is an error naming it, never silently overwritten
    (it holds every finished entry)."""
    if not results_file.is_file():
        return {}
    try:
        results = json.loads(results_file.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{results_file} is damaged ({err}); repair or remove it (its entries are trained again)"
        ) from None
    if not isinstance(results, dict) or not isinstance(results.get("rows", {}), dict):
        raise ConfigError(f"{results_file} is not a benchmark results file (no 'rows' table)")
    return results


def save_row(results_file: Path, suite: Suite, slug: str, row: dict[str, Any]) -> dict[str, Any]:
    """Store one row in results.json, re-read first so that suites run in parallel with
    different ``--only`` entries do not drop each other's rows; returns the whole file."""
    results = read_results(results_file)
    results.setdefault("suite", suite.name)
    results.setdefault("rows", {})[slug] = row
    atomic_write_text(results_file, json.dumps(results, indent=2) + "\n")
    return results


def run_suite(
    suite: Suite,
    output: str | Path | None = None,
    only: list[str] | None = None,
    force: bool = False,
    reevaluate: bool = False,
) -> Path:
    """Run every entry not yet in results.json (all with ``force``; with ``reevaluate``, finished
    entries are evaluated again without retraining); write results.md and the plot."""
    output = Path(output) if output else suite.output
    output.mkdir(parents=True, exist_ok=True)
    results_file = output / "results.json"
    done = read_results(results_file).get("rows", {})
    wanted = suite.models
    if only:
        missing = set(only) - {e.label for e in suite.models}
        if missing:
            raise ConfigError(
                f"--only {sorted(missing)}: not in {suite.source} ({[e.label for e in suite.models]})"
            )
        wanted = [e for e in suite.models if e.label in only]
    for entry in wanted:
        if entry.slug in done and not force:
            if not reevaluate:
                print(f"benchmark: {entry.label} already done (see {results_file}); --force to rerun")
                continue
            print(f"benchmark: evaluating {entry.label} again ...")
            row = {**done[entry.slug], **evaluate_entry(suite, entry, output, done[entry.slug]["run_dir"])}
        else:
            print(f"benchmark: training and evaluating {entry.label} ...")
            row = run_entry(suite, entry, output)
        done = save_row(results_file, suite, entry.slug, row)["rows"]
    if suite.udr is not None:
        scores = suite_udr(suite, output, done)
        for slug in list(done):
            metrics = done[slug].setdefault("metrics", {})
            if slug in scores:
                metrics["disentanglement/udr"] = scores[slug]
            elif metrics.pop("disentanglement/udr", None) is None:
                continue  # UDR is relative to the set of models: a score from another set would mislead
            done = save_row(results_file, suite, slug, done[slug])["rows"]
    rows = [done[e.slug] for e in suite.models if e.slug in done]
    atomic_write_text(output / "results.md", render_results(suite, rows))
    if rows:
        plot_results(rows, output / "results.png")
    atomic_write_text(output / "report.html", render_results_html(suite, rows, output))
    return output / "results.md"


def suite_udr(suite: Suite, output: Path, done: dict[str, Any]) -> dict[str, float]:
    """UDR of each finished unconditional entry against the others, on observations of the suite's
    data ({} for fewer than two such entries)."""
    from vaezoo.data import VAEDataModule
    from vaezoo.evaluation.disentanglement import check_ground_truth, udr
    from vaezoo.evaluation.disentanglement.udr import model_representation_and_kl
    from vaezoo.io import load_run

    entries = [entry for entry in suite.models if entry.slug in done]
    checkpoints = {e.slug: Path(done[e.slug]["run_dir"]) / "checkpoints" / "last.ckpt" for e in entries}
    for slug in [slug for slug, checkpoint in checkpoints.items() if not checkpoint.is_file()]:
        print(f"benchmark: UDR leaves out {slug}: its run {checkpoints.pop(slug)} is not here")
    runs = {slug: load_run(checkpoint) for slug, checkpoint in checkpoints.items()}
    runs = {slug: run for slug, run in runs.items() if not run.model.is_conditional}
    if len(runs) < 2:
        return {}
    config = entry_config(suite, entries[0], output / "runs")
    datamodule = VAEDataModule(config.data, batch_size=config.train.batch_size)
    datamodule.prepare_data()
    datamodule.setup("fit")
    pairs = [model_representation_and_kl(run.model) for run in runs.values()]
    result = udr(
        check_ground_truth(datamodule.ground_truth, config.data.name),
        [represent for represent, _ in pairs],
        [kl for _, kl in pairs],
        num_train=int(suite.udr.get("points", 10_000)) if suite.udr else 10_000,
        correlation=str(suite.udr.get("correlation", "lasso")) if suite.udr else "lasso",
        random_state=suite.seed,
    )
    return {slug: float(score) for slug, score in zip(runs, result.model_scores, strict=True)}


# --------------------------------------------------------------------------- the table and the plot

COLUMNS = (  # (header, metric key) in the order of the table; a column is shown if any row has it
    ("ELBO (nats)", "likelihood/elbo"),
    ("IWAE bound (nats)", "likelihood/iwae_bound"),
    ("NLL (nats)", "likelihood/nll"),
    ("bits/dim", "likelihood/bits_per_dim"),
    ("recon MSE", "reconstruction/mse"),
    ("PSNR", "reconstruction/psnr"),
    ("SSIM", "reconstruction/ssim"),
    ("active units", "latent/active_units"),
    ("KL (nats)", "latent/kl"),
    ("BetaVAE", "disentanglement/beta_vae_score"),
    ("FactorVAE", "disentanglement/factor_vae_score"),
    ("MIG", "disentanglement/mig"),
    ("DCI dis.", "disentanglement/dci_disentanglement"),
    ("SAP", "disentanglement/sap"),
    ("Modularity", "disentanglement/modularity"),
    ("UDR", "disentanglement/udr"),
    ("FID", "sample_quality/fid"),
    ("rFID", "sample_quality/recon_fid"),
)
MORE_DISENTANGLEMENT = (  # a second table, so that the first stays readable
    ("IRS", "disentanglement/irs"),
    ("DCIMIG", "disentanglement/dcimig"),
    ("DCI compl.", "disentanglement/dci_completeness"),
    ("DCI inf. (test)", "disentanglement/dci_informativeness_test"),
    ("Gaussian TC", "disentanglement/gaussian_total_correlation"),
    ("Wasserstein corr. (norm.)", "disentanglement/gaussian_wasserstein_correlation_norm"),
    ("MI score", "disentanglement/mutual_info_score"),
    ("flatness", "disentanglement/flatness"),
    ("axis ratio", "disentanglement/linearity_axis_ratio"),
    ("fairness", "disentanglement/mean_fairness_mean_pred_mean_sens"),
    # downstream accuracies are keyed by their training size N: the largest N a row has is shown
    ("logreg acc.", "disentanglement/downstream_logreg_*_mean_test_accuracy"),
    ("GBT acc.", "disentanglement/downstream_gbt_*_mean_test_accuracy"),
)


def metric_value(metrics: dict[str, float], key: str) -> float | None:
    """``metrics[key]``; for a key with ``*`` (a number, e.g. a training size), the value of the
    matching key with the largest number; None if there is none."""
    if "*" not in key:
        return metrics.get(key)
    pattern = re.compile(re.escape(key).replace(r"\*", r"(\d+)") + "$")
    found = [(int(m.group(1)), value) for name, value in metrics.items() if (m := pattern.match(name))]
    return max(found)[1] if found else None


PROVENANCE = (
    "Produced by {command} with {threads} torch thread(s) on {cores} CPU core(s); "
    "runs, per-model reports and results.json are beside this file."
)
MORE_TITLE = "More disentanglement scores (definitions in the per-model reports):"
NOT_SHOWN = "– : not applicable (the reports say why) or not computed."


def provenance(suite: Suite, code: Callable[[str], str]) -> str:
    """How the results were made; ``code`` marks up the command (markdown backticks, HTML <code>)."""
    command = code(f"vaezoo benchmark -c {suite.source}")
    return PROVENANCE.format(command=command, threads=torch.get_num_threads(), cores=os.cpu_count())


def results_tables(rows: list[dict[str, Any]]) -> tuple[Table, Table | None]:
    """The headline table and the second disentanglement table (None if no row has its scores)."""
    more = _table(rows, MORE_DISENTANGLEMENT, with_training=False)
    return _table(rows, COLUMNS, with_training=True), more if len(more.headers) > 1 else None


def render_results(suite: Suite, rows: list[dict[str, Any]]) -> str:
    main, more = results_tables(rows)
    lines = [f"# Benchmark: {suite.name}", "", suite.description.strip(), ""]
    lines += [provenance(suite, lambda command: f"`{command}`"), ""]
    lines += markdown_table(main)
    if more is not None:
        lines += ["", MORE_TITLE, "", *markdown_table(more)]
    lines += ["", NOT_SHOWN, ""]
    lines += ["![results](results.png)", ""]
    return "\n".join(lines)


def render_results_html(suite: Suite, rows: list[dict[str, Any]], output: Path) -> str:
    """report.html of a suite: the tables of results.md, sortable, the plot and, per entry, a
    collapsible section with its evaluation pictures and a link to its own report."""
    main, more = results_tables(rows)
    parts = [f"<p>{escape(suite.description.strip())}</p>"] if suite.description.strip() else []
    parts += [f"<p>{provenance(suite, lambda command: f'<code>{escape(command)}</code>')}</p>"]
    parts += ["<h2>Results</h2>", sortable_table(main)]
    if more is not None:
        parts += [f"<h2>{escape(MORE_TITLE.rstrip(':'))}</h2>", sortable_table(more)]
    parts += [f'<p class="note">{escape(NOT_SHOWN)}</p>', embedded_picture("results", output / "results.png")]
    parts += ["<h2>Models</h2>", *(entry_section(row, output) for row in rows)]
    return page(f"Benchmark: {suite.name}", "\n".join(parts))


def entry_section(row: dict[str, Any], output: Path) -> str:
    """A ``<details>`` section of one entry: a link to its report and the pictures of its evaluation
    report folder (``output/reports/<slug>``, as :func:`evaluate_entry` writes it)."""
    slug = slugify(row["label"])
    folder = output / "reports" / slug
    reports = [f"reports/{slug}/{name}" for name in ("report.html", "report.md") if (folder / name).is_file()]
    link = f'<p class="note">no evaluation report in reports/{escape(slug)}</p>'
    if reports:  # relative, so that the folder can move as a whole
        link = f'<p>Its evaluation report: <a href="{escape(quote(reports[0]))}">{escape(reports[0])}</a></p>'
    pictures = report_pictures(folder)
    gallery = picture_gallery(pictures, folder) if pictures else '<p class="note">no evaluation pictures</p>'
    return f"<details>\n<summary>{escape(row['label'])}</summary>\n{link}\n{gallery}\n</details>"


def _table(rows: list[dict[str, Any]], columns: tuple[tuple[str, str], ...], with_training: bool) -> Table:
    """The table of the columns any row has, one row per model, each number kept with its text so
    that both renderings show and sort the same."""
    present = [(h, k) for h, k in columns if any(metric_value(row["metrics"], k) is not None for row in rows)]
    head = [
        "model",
        *(["params", "train img/s", "val loss"] if with_training else []),
        *[h for h, _ in present],
    ]
    table = Table(head)
    for row in rows:
        cells = [Cell(row["label"])]
        if with_training:
            cells += [
                number_cell(row["parameters"], lambda count: f"{count / 1e6:.2f}M"),
                number_cell(row["train_images_per_second"], lambda speed: f"{speed:.0f}"),
                number_cell(row["val_metrics"].get("val/loss"), format_value),
            ]
        cells += [number_cell(metric_value(row["metrics"], k), format_value) for _, k in present]
        table.rows.append(cells)
    return table


def plot_results(rows: list[dict[str, Any]], path: Path) -> None:
    """One bar chart per headline metric present, models side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [(h, k) for h, k in COLUMNS if sum(k in row["metrics"] for row in rows) >= 1][:8]
    if not shown:
        return
    figure = Figure(figsize=(3.2 * len(shown), 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    labels = [row["label"] for row in rows]
    for i, (header, key) in enumerate(shown):
        axis = figure.add_subplot(1, len(shown), i + 1)
        values = [row["metrics"].get(key, float("nan")) for row in rows]
        axis.bar(range(len(rows)), values, color="tab:blue")
        axis.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
        axis.set_title(header, fontsize=9)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
