"""The user-study page, completed end to end in headless Chromium; the answers it exports; study-summary;
each participant's own item order."""

from __future__ import annotations

import csv
import io
import json

import pytest

from cladec.report.answers import read_answers, summarize_answers
from cladec.report.study import ANSWER_COLUMNS, build_study, participant_order

# one intra-op thread: as fast for these tiny models, and immune to a busy 2-core machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_ITEMS = 5


@pytest.fixture(scope="module")
def study_index(run_dir, tmp_path_factory):
    return build_study(run_dir, tmp_path_factory.mktemp("study") / "study", items=N_ITEMS, seed=3)


def _study_data(page) -> dict:
    return page.evaluate("JSON.parse(document.getElementById('study-data').textContent)")


def _item_ids(page) -> list[dict]:
    return _study_data(page)["items"]


def _start(page, participant: str) -> None:
    page.fill("#participant-id", participant)
    page.check("#consent")
    page.click("#start")


def _shown_item(page, items: list[dict]) -> str:
    """The item_id of the item on screen, found from the original image it shows (once its images loaded)."""
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=10_000)
    assert page.evaluate("Array.from(document.images).every(i => !i.getAttribute('src') || i.naturalWidth > 0)")
    src = page.get_attribute("#img-original", "src")
    (hit,) = [it["item_id"] for it in items if it["original"] == src]
    return hit


def _answer_rest(page, items: list[dict], shown: list[str]) -> list[str]:
    """Answer items (confidence 3) until the done screen, appending each shown item_id to ``shown``."""
    while page.is_visible("#screen-item"):
        assert page.inner_text("#progress-text") == f"Item {len(shown) + 1} of {len(items)}"
        shown.append(_shown_item(page, items))
        page.check('input[name="confidence"][value="3"]')
        page.click("#next")
    assert page.is_visible("#screen-done")
    return shown


def test_study_order_is_seeded(run_dir, study_index, tmp_path):
    items = json.loads(study_index.read_text().split('id="study-data">')[1].split("</script>")[0])["items"]
    again = build_study(run_dir, tmp_path / "again", items=N_ITEMS, seed=3)
    other = build_study(run_dir, tmp_path / "other", items=N_ITEMS, seed=4)

    def ids(index):
        return [
            i["image_id"]
            for i in json.loads(index.read_text().split('id="study-data">')[1].split("</script>")[0])["items"]
        ]

    assert ids(again) == [i["image_id"] for i in items]
    assert ids(other) != ids(again)
    assert len({i["true_label"] for i in items}) == N_ITEMS  # class-balanced


def test_study_end_to_end(browser, study_index, probe, artifacts, tmp_path):
    page = probe.page
    probe.open(study_index)
    assert probe.broken_images() == []
    assert page.is_visible("#screen-welcome") and not page.is_visible("#screen-item")
    assert page.is_disabled("#start")
    page.fill("#participant-id", "P-test 01")
    page.screenshot(path=str(artifacts / "study-welcome.png"), full_page=True)
    page.check("#consent")
    assert page.is_enabled("#start")
    page.click("#start")
    data = _study_data(page)
    assert data["order"] == "per-participant"
    by_id = {it["item_id"]: it for it in data["items"]}
    # the items in the order this participant sees them: their own, reconstructable from the ids
    order = page.evaluate("window.cladecStudy.order()")
    assert order == participant_order(data["study_id"], "P-test 01", list(by_id))
    items = [by_id[i] for i in order]
    assert len(items) == N_ITEMS

    plan = [  # (uses, ignores, text, confidence) per item
        (["shape"], ["texture", "details"], "keeps the outline, loses the print", 4),
        (["shape", "background"], ["colour"], 'said "dress", with a comma, and quotes', 3),
        ([], ["texture"], "", 2),
        (["details"], [], "handles: yes\nsecond line", 5),
        (["shape", "texture"], ["background"], "ünïcode ✓", 1),
    ]
    for k, (uses, ignores, text, conf) in enumerate(plan):
        assert page.is_visible("#screen-item")
        assert page.inner_text("#progress-text") == f"Item {k + 1} of {N_ITEMS}"
        assert page.get_attribute("#img-original", "src") == items[k]["original"]
        assert page.inner_text("#item-true") == items[k]["true_label"]
        assert probe.broken_images() == []
        for c in uses:
            page.check(f'input[name="uses"][value="{c}"]')
        for c in ignores:
            page.check(f'input[name="ignores"][value="{c}"]')
        if text:
            page.fill("#free-text", text)
        if k == 0:
            # a concept is used or ignored, not both
            page.check('input[name="ignores"][value="shape"]')
            assert not page.is_checked('input[name="uses"][value="shape"]')
            page.check('input[name="uses"][value="shape"]')
            assert not page.is_checked('input[name="ignores"][value="shape"]')
            # no confidence yet: Next refuses and says why
            page.click("#next")
            assert "confident" in page.inner_text("#item-error")
            assert page.inner_text("#progress-text") == f"Item 1 of {N_ITEMS}"
        page.check(f'input[name="confidence"][value="{conf}"]')
        if k == 1:
            page.screenshot(path=str(artifacts / "study-item.png"), full_page=True)
            # a reload loses nothing: same item, same answers
            page.reload(wait_until="load")
            assert page.is_visible("#screen-item")
            assert page.inner_text("#progress-text") == f"Item 2 of {N_ITEMS}"
            assert page.is_checked('input[name="uses"][value="background"]')
            assert page.is_checked('input[name="ignores"][value="colour"]')
            assert page.input_value("#free-text") == text
            assert page.is_checked(f'input[name="confidence"][value="{conf}"]')
            # back to item 1 and forward again keeps item 1's answers
            page.click("#back")
            assert page.inner_text("#progress-text") == f"Item 1 of {N_ITEMS}"
            assert page.is_checked('input[name="ignores"][value="details"]')
            assert page.input_value("#free-text") == plan[0][2]
            page.click("#next")
        page.wait_for_timeout(60)
        page.click("#next")

    assert page.is_visible("#screen-done")
    assert f"{N_ITEMS} of {N_ITEMS}" in page.inner_text("#done-text")
    assert page.get_attribute("#progress-bar", "aria-valuenow") == str(N_ITEMS)
    page.wait_for_timeout(300)  # let the progress bar's transition finish before the screenshot
    page.screenshot(path=str(artifacts / "study-done.png"), full_page=True)

    with page.expect_download() as d:
        page.click("#download-csv")
    csv_path = tmp_path / "answers" / "p1.csv"
    csv_path.parent.mkdir()
    d.value.save_as(csv_path)
    assert d.value.suggested_filename.endswith(".csv")
    with page.expect_download() as d:
        page.click("#download-json")
    json_path = tmp_path / "p1.json"
    d.value.save_as(json_path)

    rows = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8"))))
    assert list(rows[0].keys()) == ANSWER_COLUMNS
    assert len(rows) == N_ITEMS
    for k, (row, (uses, ignores, text, conf)) in enumerate(zip(rows, plan, strict=True)):
        assert row["participant_id"] == "P-test 01"
        assert row["position"] == str(k + 1)  # the place in this participant's sequence where it was shown
        assert row["item_id"] == items[k]["item_id"] and row["image_id"] == items[k]["image_id"]
        assert row["true_label"] == items[k]["true_label"]
        assert sorted(row["uses"].split(";") if row["uses"] else []) == sorted(uses)
        assert sorted(row["ignores"].split(";") if row["ignores"] else []) == sorted(ignores)
        assert row["free_text"] == text.replace("\n", "\r\n") or row["free_text"] == text
        assert int(row["confidence"]) == conf
        assert float(row["seconds_on_item"]) > 0
        assert row["started_at"] <= row["answered_at"] and row["answered_at"].endswith("Z")
    exported = json.loads(json_path.read_text())
    assert exported["format"] == "cladec-study-answers" and exported["participant_id"] == "P-test 01"
    assert [a["item_id"] for a in exported["answers"]] == [r["item_id"] for r in rows]
    assert [a["position"] for a in exported["answers"]] == list(range(1, N_ITEMS + 1))
    assert exported["order"] == "per-participant" and exported["item_order"] == order
    assert {r["item_id"]: r["position"] for r in read_answers([csv_path])} == {i: k + 1 for k, i in enumerate(order)}

    # the answers survive a reload of the finished study, and aggregate with another participant's
    page.reload(wait_until="load")
    assert page.is_visible("#screen-done")
    other = [dict(r, participant_id="P-2", confidence="3", uses="shape", ignores="") for r in rows]
    with (tmp_path / "answers" / "p2.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=ANSWER_COLUMNS)
        w.writeheader()
        w.writerows(other)
    s = summarize_answers([str(tmp_path / "answers" / "*.csv"), json_path])
    assert s["participants"] == 2 and s["answers"] == 2 * N_ITEMS and s["items"] == N_ITEMS
    assert s["concepts"]["shape"]["uses"] == 3 + N_ITEMS
    assert s["concepts"]["texture"]["ignores"] == 2
    assert s["mean_confidence"] == pytest.approx((sum(p[3] for p in plan) + 3 * N_ITEMS) / (2 * N_ITEMS))
    # both answer sets carry P-test 01's positions: each item's mean position is its place in that sequence
    assert {i["item_id"]: i["mean_position"] for i in s["per_item"]} == {i: k + 1.0 for k, i in enumerate(order)}
    assert s["order_effect"]["answers_per_half"] == 2 * (N_ITEMS // 2)
    assert probe.errors == []


def test_each_participant_sees_an_own_order(browser, study_index, probe):
    page = probe.page
    probe.open(study_index)
    data = _study_data(page)
    items = data["items"]
    ids = [it["item_id"] for it in items]

    _start(page, "P-A")
    shown_a: list[str] = []
    for _ in range(2):
        shown_a.append(_shown_item(page, items))
        page.check('input[name="confidence"][value="4"]')
        page.click("#next")
    third = _shown_item(page, items)
    # a reload mid-study keeps the participant's order: the same third item, the first two already answered
    page.reload(wait_until="load")
    assert page.inner_text("#progress-text") == f"Item 3 of {N_ITEMS}"
    assert _shown_item(page, items) == third
    _answer_rest(page, items, shown_a)
    assert sorted(shown_a) == sorted(ids) and len(shown_a) == N_ITEMS  # every item exactly once
    assert shown_a == participant_order(data["study_id"], "P-A", ids)

    # the next participant on this browser gets another order, again every item once
    page.click("#reset")
    page.click("#reset")
    assert page.is_visible("#screen-welcome")
    _start(page, "P-B")
    shown_b = _answer_rest(page, items, [])
    assert sorted(shown_b) == sorted(ids)
    assert shown_b != shown_a
    assert shown_b == participant_order(data["study_id"], "P-B", ids)

    # the same id in another browser (its own storage) gets the same order as before: it is derived from the id
    ctx = browser.new_context()
    try:
        other = ctx.new_page()
        other.goto(study_index.resolve().as_uri(), wait_until="load")
        _start(other, "  P-A ")  # surrounding spaces are not part of the id
        assert other.evaluate("window.cladecStudy.order()") == shown_a
        assert _shown_item(other, items) == shown_a[0]
    finally:
        ctx.close()
    assert probe.errors == []


def test_fixed_order_for_a_pilot(run_dir, probe, tmp_path):
    from cladec.cli.main import main

    # through the command line: `cladec study RUN --order fixed`
    assert (
        main(
            [
                "study",
                str(run_dir),
                "--out",
                str(tmp_path / "pilot"),
                "--items",
                str(N_ITEMS),
                "--seed",
                "3",
                "--order",
                "fixed",
            ]
        )
        == 0
    )
    index = tmp_path / "pilot" / "index.html"
    page = probe.page
    probe.open(index)
    data = _study_data(page)
    assert data["order"] == "fixed"
    items = data["items"]
    ids = [it["item_id"] for it in items]
    assert participant_order(data["study_id"], "P-A", ids) != ids  # P-A's own order would differ
    _start(page, "P-A")
    assert _answer_rest(page, items, []) == ids
    rows = page.evaluate("window.cladecStudy.rows()")
    assert [(r["item_id"], r["position"]) for r in rows] == [(i, k + 1) for k, i in enumerate(ids)]
    assert participant_order(data["study_id"], "P-A", ids, order="fixed") == ids
    assert probe.errors == []
