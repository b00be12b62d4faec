"""The HTML report, opened from disk in headless Chromium: images, filters, sorting, the α slider, sections."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cladec.report.build import build_report

# one intra-op thread: as fast for these tiny models, and immune to a busy 2-core machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_IMAGES = 24


@pytest.fixture(scope="module")
def run_site(run_dir, tmp_path_factory) -> Path:
    return build_report(run_dir, tmp_path_factory.mktemp("site") / "run", n_images=N_IMAGES)


@pytest.fixture(scope="module")
def sweep_site(tiny_sweep, tmp_path_factory) -> Path:
    return build_report(tiny_sweep, tmp_path_factory.mktemp("site") / "sweep", n_images=N_IMAGES)


def _visible_cards(page) -> list[dict]:
    return page.evaluate("""Array.from(document.querySelectorAll('#gallery-grid .card'))
        .filter(c => !c.hidden).map(c => ({
        j: +c.dataset.j, label: +c.dataset.label,
        predX: c.querySelector('.pred-x').classList.contains('ok'),
        mse: Array.from(c.querySelectorAll('.layer-block'))
            .map(b => parseFloat(b.querySelector('.mse-e').textContent.replace('MSE ', ''))),
        cladec: Array.from(c.querySelectorAll('[data-slot="cladec"] img')).map(i => i.getAttribute('src')),
    }))""")


def _page_data(page) -> dict:
    return page.evaluate("JSON.parse(document.getElementById('report-data').textContent)")


def test_run_report_loads_and_shows_everything(browser, run_site, probe, artifacts):
    probe.open(run_site)
    page = probe.page
    assert page.evaluate("document.documentElement.dataset.reportReady") == "1"
    assert probe.broken_images() == []
    n_img = page.evaluate("document.images.length")
    assert n_img >= 1 + N_IMAGES * 5  # colour bar + original, RefAE, ClaDec and two difference maps per card
    cards = _visible_cards(page)
    assert len(cards) == N_IMAGES
    # the header shows the run's configuration
    chips = page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('.chip')).map("
        "c => [c.querySelector('dt').textContent, c.querySelector('dd').textContent]))"
    )
    assert chips["Model"].startswith("vgg-paper")
    assert chips["Layer"] == "conv2"
    assert chips["α"] == "0.001"
    assert chips["Data set"].startswith("fashion-mnist")
    assert chips["Epochs"] == "1" and chips["Seed"] == "0" and chips["Version"].startswith("cladec ")
    assert chips["Neurons"].startswith("all")
    # every card has true and predicted labels for all three images
    labels = page.evaluate(
        "Array.from(document.querySelectorAll('.card')).map(c => [c.querySelector('.true-label').textContent,"
        " c.querySelectorAll('.pred').length])"
    )
    assert all(t and n == 3 for t, n in labels)
    # the evaluation found in run/eval: metrics and per-class tables, and its plots
    assert page.is_visible("#evaluation")
    tables = page.evaluate("Array.from(document.querySelectorAll('#evaluation h4')).map(h => h.textContent)")
    assert any(t.startswith("Metrics") for t in tables) and any(t.startswith("Per class") for t in tables)
    assert page.evaluate("document.querySelectorAll('#evaluation .figure img').length") >= 1
    page.screenshot(path=str(artifacts / "report-run.png"), full_page=False)
    page.screenshot(path=str(artifacts / "report-run-full.png"), full_page=True)
    assert probe.errors == []


def test_filters_and_sorting_change_what_is_shown(browser, run_site, probe, artifacts):
    probe.open(run_site)
    page = probe.page
    data = _page_data(page)["gallery"]
    items = data["layers"][0]["variants"][0]["items"]
    labels = {im["j"]: im["label"] for im in data["images"]}

    # by class
    target = data["images"][0]["label"]
    page.select_option("#filter-class", str(target))
    cards = _visible_cards(page)
    assert cards and all(c["label"] == target for c in cards)
    assert len(cards) == sum(1 for im in data["images"] if im["label"] == target) < N_IMAGES
    assert page.inner_text("#gallery-count") == f"{len(cards)} of {N_IMAGES} images"
    page.select_option("#filter-class", "all")

    # by correct / incorrect prediction (on the original, and on ClaDec's reconstruction)
    for value, pred in (
        ("x-ok", lambda it, y: it["pred_x"] == y),
        ("x-bad", lambda it, y: it["pred_x"] != y),
        ("e-bad:0", lambda it, y: it["pred_e"] != y),
        ("e-changed:0", lambda it, y: it["pred_e"] != it["pred_x"]),
    ):
        page.select_option("#filter-correct", value)
        shown = {c["j"] for c in _visible_cards(page)}
        assert shown == {j for j, it in enumerate(items) if pred(it, labels[j])}, value
        assert page.is_visible("#gallery-empty") == (not shown)
        if value.startswith("x-"):
            assert all(c["predX"] == (value == "x-ok") for c in _visible_cards(page))
    page.select_option("#filter-correct", "all")

    # sorted by ClaDec's error, highest first, then lowest first
    page.select_option("#sort-by", "e:0:desc")
    mses = [c["mse"][0] for c in _visible_cards(page)]
    assert mses == sorted(mses, reverse=True) and len(mses) == N_IMAGES
    page.select_option("#sort-by", "e:0:asc")
    mses = [c["mse"][0] for c in _visible_cards(page)]
    assert mses == sorted(mses)
    page.select_option("#sort-by", "g:0:desc")
    gaps = [items[c["j"]]["mse_e"] - items[c["j"]]["mse_r"] for c in _visible_cards(page)]
    assert gaps == sorted(gaps, reverse=True)

    # hiding the difference maps, and a combined filter shown in a screenshot
    page.uncheck("#show-diff")
    assert not page.is_visible('.card:not([hidden]) [data-slot="dcladec"] img')
    page.check("#show-diff")
    page.select_option("#sort-by", "e:0:desc")
    page.select_option("#filter-correct", "x-ok")
    page.screenshot(path=str(artifacts / "report-run-filtered.png"))
    assert probe.errors == []


def test_sweep_report_alpha_slider_and_layers_side_by_side(browser, sweep_site, probe, artifacts):
    probe.open(sweep_site)
    page = probe.page
    assert probe.broken_images() == []
    data = _page_data(page)["gallery"]
    assert [L["name"] for L in data["layers"]] == ["conv2", "conv4"]
    assert all([v["alpha"] for v in L["variants"]] == [0.001, 0.5] for L in data["layers"])
    # layers side by side: each card holds a block per layer
    assert page.evaluate(
        "Array.from(document.querySelectorAll('.card')).every(c => c.querySelectorAll('.layer-block').length === 2)"
    )
    # every cell's RefAE is shown (non-reference cells use their layer's shared RefAE)
    assert page.evaluate("document.querySelectorAll('[data-slot=\"refae\"]:not([hidden]) img').length") == 2 * N_IMAGES

    before = _visible_cards(page)
    slider = page.locator('.alpha-slider[data-li="0"]')
    assert slider.count() == 1 and page.locator(".alpha-slider").count() == 2
    assert page.inner_text('.alpha-value[data-li="0"]') == "0.001"
    slider.focus()
    page.keyboard.press("ArrowRight")
    assert page.inner_text('.alpha-value[data-li="0"]') == "0.5"
    after = _visible_cards(page)
    by_j = {c["j"]: c for c in before}
    for c in after:
        assert c["cladec"][0] != by_j[c["j"]]["cladec"][0]  # conv2's ClaDec images moved to α = 0.5
        assert c["cladec"][1] == by_j[c["j"]]["cladec"][1]  # conv4's did not
    assert page.evaluate(
        "Array.from(document.querySelectorAll('.layer-block[data-li=\"0\"] .alpha-now'))"
        ".every(e => e.textContent === '0.5')"
    )
    expected = {j: it["cladec"] for j, it in enumerate(data["layers"][0]["variants"][1]["items"])}
    assert all(c["cladec"][0] == expected[c["j"]] for c in after)
    assert "0.5" in page.inner_text('.variant-stats[data-li="0"]')
    assert probe.broken_images() == []
    # the sweep's own outputs: summary table and trade-off plot
    assert page.is_visible("#sweep")
    assert "tradeoff.png" in page.evaluate(
        "Array.from(document.querySelectorAll('#sweep .figure img')).map(i => i.getAttribute('src')).join(' ')"
    )
    assert page.evaluate("document.querySelectorAll('#sweep table.data tbody tr').length") >= 4
    page.screenshot(path=str(artifacts / "report-sweep.png"))
    page.locator("#gallery").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "report-sweep-full.png"), full_page=True)
    # and back
    page.keyboard.press("ArrowLeft")
    assert page.inner_text('.alpha-value[data-li="0"]') == "0.001"
    assert probe.errors == []


def test_demo_report_with_saliency_comparison(browser, demo_dir, probe, artifacts):
    index = build_report(demo_dir, demo_dir / "report", n_images=12)  # where `cladec demo` writes it
    assert index == demo_dir / "report" / "index.html"
    probe.open(index)
    page = probe.page
    assert probe.broken_images() == []
    assert page.evaluate("document.querySelectorAll('.card').length") == 12
    assert page.evaluate("document.querySelector('.card').querySelectorAll('.layer-block').length") == 2
    assert page.locator(".alpha-slider").count() == 0  # one α per layer: no slider
    # saliency comparison with its map figure and scores table
    assert page.is_visible("#saliency")
    srcs = page.evaluate(
        "Array.from(document.querySelectorAll('#saliency .figure img')).map(i => i.getAttribute('src'))"
    )
    assert any(s.endswith("maps.png") for s in srcs) and srcs[0].endswith("maps.png")
    assert "gradcam" in page.inner_text("#saliency table.data")
    # both layers' evaluations, and the demo's summary text
    assert page.evaluate("document.querySelectorAll('#evaluation .subsection').length") == 2
    assert "test fixture" in page.inner_text("#summary")
    page.screenshot(path=str(artifacts / "report-demo.png"), full_page=True)
    # building again replaces the earlier report
    build_report(demo_dir, demo_dir / "report", n_images=6)
    probe.open(index)
    assert probe.page.evaluate("document.querySelectorAll('.card').length") == 6
    assert probe.errors == []


def test_eval_dir_report_finds_its_run(browser, run_dir, probe, tmp_path, artifacts):
    index = build_report(run_dir / "eval", tmp_path / "site", n_images=8)
    probe.open(index)
    page = probe.page
    assert probe.broken_images() == []
    assert page.evaluate("document.querySelectorAll('.card').length") == 8
    assert page.is_visible("#evaluation")
    assert "Evaluation" in page.inner_text("h1")
    page.screenshot(path=str(artifacts / "report-eval.png"))
    assert probe.errors == []


def test_run_without_refae_hides_its_slots(browser, tiny_sweep, probe, tmp_path):
    # a cell fitted without a RefAE, taken out of its sweep: no RefAE of its own and none shared with it
    cell = next(p for p in (tiny_sweep / "cells").iterdir() if not (p / "refae").exists())
    run = shutil.copytree(cell, tmp_path / "run", ignore=shutil.ignore_patterns("eval"))
    index = build_report(run, tmp_path / "site", n_images=6)
    probe.open(index)
    page = probe.page
    assert probe.broken_images() == []
    assert page.evaluate("document.querySelectorAll('.card').length") == 6
    assert (
        page.evaluate(
            "document.querySelectorAll("
            '\'[data-slot="refae"]:not([hidden]), [data-slot="drefae"]:not([hidden])\').length'
        )
        == 0
    )
    assert page.evaluate(
        "Array.from(document.querySelectorAll('#sort-by option')).every(o => !o.value.startsWith('r:'))"
    )
    # the explanation of how to read the page speaks of the one reconstruction there is
    page.click(".howto summary")
    howto = page.inner_text(".howto")
    assert "with its reconstruction" in howto and "two reconstructions" not in howto and "without a reference" in howto
    assert probe.errors == []


def test_markup_in_class_names_keeps_the_page_working(browser, folder_run, probe):
    # class folders named "<!--<script>", 'a&b "quoted"' and "plain": the page's data must still parse
    index = build_report(folder_run, folder_run.parent / "site", n_images=6)
    probe.open(index)
    page = probe.page
    assert page.evaluate("document.documentElement.dataset.reportReady") == "1"
    data = _page_data(page)["gallery"]
    assert data["classes"] == ["<!--<script>", 'a&b "quoted"', "plain"]
    options = page.evaluate("Array.from(document.querySelectorAll('#filter-class option')).map(o => o.textContent)")
    assert options == ["all classes", *data["classes"]]
    page.select_option("#filter-class", label="<!--<script>")
    cards = _visible_cards(page)
    assert cards and all(c["label"] == 0 for c in cards) and len(cards) < 6
    assert {page.inner_text(f'.card[data-j="{c["j"]}"] .true-label') for c in cards} == {"<!--<script>"}
    # predictions are named by the classifier's own (Fashion-MNIST) classes
    pred = page.inner_text(f'.card[data-j="{cards[0]["j"]}"] .pred-x')
    assert pred == data["pred_classes"][data["layers"][0]["variants"][0]["items"][cards[0]["j"]]["pred_x"]]
    assert len(data["pred_classes"]) == 10
    assert probe.errors == []


def test_runs_of_one_layer_are_told_apart(browser, tiny_sweep, probe, tmp_path):
    # a demo folder holding two runs of the same layer and α: one without a RefAE, one with
    state = json.loads((tiny_sweep / "sweep.json").read_text())
    cell = tiny_sweep / state["refae"]["conv2/s0"]
    demo = tmp_path / "demo"
    shutil.copytree(cell, demo / "runs" / "a_norefae", ignore=shutil.ignore_patterns("eval", "refae"))
    shutil.copytree(cell, demo / "runs" / "b_full", ignore=shutil.ignore_patterns("eval"))
    index = build_report(demo, tmp_path / "site", n_images=6)
    probe.open(index)
    page = probe.page
    assert page.inner_text("h1") == "cladec demo · 1 layer, 2 runs"
    # the slider steps through the runs by name (not through two positions both called "0.001")
    slider = page.locator('.alpha-slider[data-li="0"]')
    assert page.inner_text(".alpha-ctl").startswith("run")
    assert page.evaluate("Array.from(document.querySelectorAll('#alpha-ticks-0 option')).map(o => o.label)") == [
        "a_norefae",
        "b_full",
    ]
    assert page.inner_text('.alpha-value[data-li="0"]') == "a_norefae"
    assert slider.get_attribute("aria-valuetext") == "a_norefae"
    assert "run a_norefae" in page.inner_text('.variant-stats[data-li="0"]')
    # RefAE sorting is offered although the first run has no RefAE
    sorts = page.evaluate("Array.from(document.querySelectorAll('#sort-by option')).map(o => o.value)")
    assert "r:0:desc" in sorts and "g:0:desc" in sorts
    slider.focus()
    page.keyboard.press("ArrowRight")
    assert (
        page.inner_text('.alpha-value[data-li="0"]') == "b_full" and slider.get_attribute("aria-valuetext") == "b_full"
    )
    assert page.evaluate("document.querySelectorAll('.card [data-slot=\"refae\"]:not([hidden])').length") == 6
    page.select_option("#sort-by", "r:0:desc")
    data = _page_data(page)["gallery"]
    items = data["layers"][0]["variants"][1]["items"]
    mse_r = [items[c["j"]]["mse_r"] for c in _visible_cards(page)]
    assert mse_r == sorted(mse_r, reverse=True)
    # the configuration table names each run
    rows = page.evaluate(
        "Array.from(document.querySelectorAll('.config-table tr'))"
        ".map(r => Array.from(r.cells).map(c => c.textContent))"
    )
    assert rows[0][0] == "Run" and [r[0] for r in rows[1:]] == ["a_norefae", "b_full"]
    assert probe.errors == []


def test_alpha_slider_announces_alpha_not_its_position(browser, sweep_site, probe):
    probe.open(sweep_site)
    page = probe.page
    slider = page.locator('.alpha-slider[data-li="0"]')
    assert slider.get_attribute("aria-valuetext") == "0.001"
    # each step's images load before the next key press: on a busy machine the press would otherwise abort the
    # requests for the previous α's images (requestfailed ... net::ERR_ABORTED in probe.errors)
    assert probe.broken_images() == []
    slider.focus()
    page.keyboard.press("ArrowRight")
    assert slider.get_attribute("aria-valuetext") == "0.5"
    assert probe.broken_images() == []
    page.keyboard.press("ArrowLeft")
    assert slider.get_attribute("aria-valuetext") == "0.001"
    assert probe.broken_images() == []
    assert probe.errors == []


def test_figures_with_odd_file_names_load(browser, probe, tmp_path, fake_saliency_png):
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({"format": "cladec-eval", "summary": {"mse_cladec": 0.01}}))
    for name in ("fig #1.png", "q?.png", "100%.png"):
        shutil.copyfile(fake_saliency_png, ev / name)
    probe.open(build_report(ev, tmp_path / "site"))
    page = probe.page
    assert page.evaluate("document.querySelectorAll('#evaluation .figure img').length") == 3
    assert probe.broken_images() == []
    assert sorted(
        page.evaluate(
            "Array.from(document.querySelectorAll('#evaluation .figure figcaption .small')).map(e => e.textContent)"
        )
    ) == ["(100%.png)", "(fig #1.png)", "(q?.png)"]
    assert probe.errors == []


def test_a_sweep_cell_shows_the_same_shared_refae_however_reached(browser, tiny_sweep, sweep_site, probe, tmp_path):
    cell = next(p for p in sorted((tiny_sweep / "cells").iterdir()) if not (p / "refae").exists())
    seen = []
    for src in (cell, cell / "eval"):  # as a run directory and through its evaluation
        probe.open(build_report(src, tmp_path / src.name, n_images=6))
        page = probe.page
        assert page.evaluate("document.querySelectorAll('[data-slot=\"refae\"]:not([hidden])').length") == 6
        items = _page_data(page)["gallery"]["layers"][0]["variants"][0]["items"]
        seen.append([it["mse_r"] for it in items])
        assert "on RefAE (shared)" in page.inner_text('.variant-stats[data-li="0"]')
    assert seen[0] == seen[1] and None not in seen[0]
    # the run directory's configuration labels the RefAE numbers as those of the shared RefAE
    probe.open(tmp_path / cell.name / "index.html")
    stats = probe.page.evaluate("Array.from(document.querySelectorAll('.stat-label')).map(e => e.textContent)")
    assert any(s.startswith("accuracy on RefAE (shared RefAE, fitted in ") for s in stats)
    # the sweep's configuration table: every row has RefAE numbers, those of non-reference cells marked shared
    probe.open(sweep_site)
    page = probe.page
    rows = page.evaluate(
        "Array.from(document.querySelectorAll('.config-table tbody tr'))"
        ".map(r => Array.from(r.cells).map(c => c.textContent))"
    )
    head = page.evaluate("Array.from(document.querySelectorAll('.config-table thead th')).map(c => c.textContent)")
    col = head.index("acc. RefAE")
    assert len(rows) == 4 and all(r[col] != "–" for r in rows)
    assert sorted(r[col].endswith("(shared)") for r in rows) == [False, False, True, True]
    assert "(shared): the run was fitted without a RefAE of its own" in page.inner_text("#config")
    assert probe.errors == []
