"""The user-study page, completed end to end in headless Chromium; the answers it exports; study-summary."""

from __future__ import annotations

import csv
import io
import json

import pytest

from cladec.study import ANSWER_COLUMNS, build_study, summarize_answers

# one intra-op thread: as fast for these tiny models, and immune to a busy 2-core machine
pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_ITEMS = 5


@pytest.fixture(scope="module")
def study_index(run_dir, tmp_path_factory):
    return build_study(run_dir, tmp_path_factory.mktemp("study") / "study", items=N_ITEMS, seed=3)


def _item_ids(page) -> list[dict]:
    return page.evaluate("JSON.parse(document.getElementById('study-data').textContent).items")


def test_study_order_is_seeded(run_dir, study_index, tmp_path):
    items = json.loads(study_index.read_text().split('id="study-data">')[1].split("</script>")[0])["items"]
    again = build_study(run_dir, tmp_path / "again", items=N_ITEMS, seed=3)
    other = build_study(run_dir, tmp_path / "other", items=N_ITEMS, seed=4)

    def ids(index):
        return [i["image_id"] for i in json.loads(index.read_text().split('id="study-data">')[1].split("</script>")[0])["items"]]

    assert ids(again) == [i["image_id"] for i in items]
    assert ids(other) != ids(again)
    assert len(set(i["true_label"] for i in items)) == N_ITEMS  # class-balanced


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
    items = _item_ids(page)
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
    for k, (row, (uses, ignores, text, conf)) in enumerate(zip(rows, plan)):
        assert row["participant_id"] == "P-test 01"
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
    assert probe.errors == []
