"""Bad input to the report, the study and study-summary: clear CladecErrors (no browser needed)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import warnings
from html import escape as html_escape
from pathlib import Path

import pytest

from cladec import CladecError, ConfigError, DataError, SaveFormatError
from cladec.cli.main import main
from cladec.report._site import script_json
from cladec.report._sources import detect_source
from cladec.report.answers import format_summary, read_answers, summarize_answers
from cladec.report.build import build_report
from cladec.report.study import ANSWER_COLUMNS, build_study, participant_order

# -- sources -------------------------------------------------------------------------------------------


def test_source_that_is_nothing_known(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SaveFormatError) as e:
        build_report(tmp_path, tmp_path.parent / "site-x")
    msg = str(e.value)
    assert "not a cladec run, evaluation, sweep or demo directory" in msg
    assert "run.json" in msg and "metrics.json" in msg and "sweep.json" in msg and "runs/<layer>" in msg
    assert "notes.txt" in msg
    assert not (tmp_path.parent / "site-x").exists()


@pytest.mark.parametrize("what", ["missing", "file"])
def test_source_missing_or_a_file(tmp_path, what):
    p = tmp_path / "src"
    if what == "file":
        p.write_text("x")
    with pytest.raises(SaveFormatError, match="does not exist|is a file"):
        build_report(p, tmp_path / "site")


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("run.json", "{not json", "not a valid JSON"),
        ("run.json", json.dumps([1, 2]), "not a valid JSON object"),
        ("run.json", json.dumps({"format": "cladec-explainer"}), "format 'cladec-explainer', expected 'cladec-run'"),
        (
            "run.json",
            json.dumps({"format": "cladec-run", "layer": "conv2"}),
            "incomplete: it lacks alpha, dataset, classifier",
        ),
        ("metrics.json", json.dumps({"format": "something-else"}), "expected 'cladec-eval'"),
        ("sweep.json", json.dumps({"format": "cladec-run"}), "expected 'cladec-sweep'"),
    ],
)
def test_malformed_marker_files(tmp_path, name, content, match):
    src = tmp_path / "src"
    src.mkdir()
    (src / name).write_text(content)
    with pytest.raises(SaveFormatError, match=match):
        detect_source(src)


def test_run_without_its_cladec_folder(tmp_path):
    src = tmp_path / "run"
    src.mkdir()
    (src / "run.json").write_text(
        json.dumps(
            {
                "format": "cladec-run",
                "layer": "conv2",
                "alpha": 0.001,
                "dataset": {"name": "fashion-mnist"},
                "classifier": {},
            }
        )
    )
    with pytest.raises(SaveFormatError, match="cladec/ folder is missing"):
        build_report(src, tmp_path / "site")


def test_eval_dir_without_a_run_still_reports_its_metrics(tmp_path):
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "metrics.json").write_text(
        json.dumps(
            {
                "format": "cladec-eval",
                "run": str(tmp_path / "gone"),
                "summary": {"mse_cladec": 0.0123, "accuracy_cladec": 0.8},
            }
        )
    )
    (ev / "metrics.csv").write_text("image_set,n,mse,accuracy\noriginal,10,0,0.9\ncladec,10,0.0123,0.8\n")
    index = build_report(ev, tmp_path / "site")
    html = index.read_text()
    assert "the gallery is left out" in html and 'id="gallery"' not in html
    assert "0.0123" in html and "cladec" in html


def test_sweep_without_finished_cells(tmp_path):
    sw = tmp_path / "sweep"
    sw.mkdir()
    (sw / "sweep.json").write_text(
        json.dumps(
            {
                "format": "cladec-sweep",
                "config": {"epochs": 1},
                "cells": [{"layer": "conv2", "alpha": 0.1, "seed": 0, "run": "cells/x", "status": "failed"}],
            }
        )
    )
    html = build_report(sw, tmp_path / "site").read_text()
    assert "1 of 1 sweep cells are not finished" in html and "1 failed" in html


def test_demo_dir_whose_runs_are_broken(tmp_path):
    demo = tmp_path / "demo"
    (demo / "runs" / "conv2").mkdir(parents=True)
    (demo / "runs" / "conv2" / "run.json").write_text("{}")
    html = build_report(demo, tmp_path / "site").read_text()
    assert "runs/conv2 is left out" in html and "No run in runs/ could be read" in html


# -- output folder -------------------------------------------------------------------------------------


def _eval_only(tmp_path: Path) -> Path:
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({"format": "cladec-eval", "summary": {"mse_cladec": 0.01}}))
    return ev


def test_out_refuses_foreign_folders_and_replaces_its_own(tmp_path):
    ev = _eval_only(tmp_path)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="non-empty folder that cladec did not make"):
        build_report(ev, foreign)
    assert (foreign / "thesis.tex").read_text() == "precious"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        build_report(ev, tmp_path / "afile")
    with pytest.raises(ConfigError, match="non-empty folder that cladec did not make"):
        build_report(ev, ev)
    site0 = build_report(ev, tmp_path / "site0").parent
    shutil.copytree(ev, site0 / "inner")
    with pytest.raises(ConfigError, match="contains the input"):
        build_report(site0 / "inner", site0)
    site = tmp_path / "site"
    build_report(ev, site)
    (site / "stale.txt").write_text("old")
    build_report(ev, site)  # an earlier report is replaced as a whole
    assert (site / "index.html").is_file() and not (site / "stale.txt").exists()
    (tmp_path / "empty").mkdir()
    assert build_report(ev, tmp_path / "empty").is_file()


@pytest.mark.parametrize("n", [0, -3, 1001, 2.5, True])
def test_bad_n_images(tmp_path, n):
    with pytest.raises(ConfigError, match="n_images"):
        build_report(_eval_only(tmp_path), tmp_path / "site", n_images=n)


# -- study -------------------------------------------------------------------------------------------


def test_study_needs_a_run_directory(tmp_path):
    with pytest.raises(SaveFormatError, match="not a directory"):
        build_study(tmp_path / "nope", tmp_path / "s")
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps({"format": "cladec-sweep"}))
    with pytest.raises(SaveFormatError, match="no run.json"):
        build_study(tmp_path / "sweep", tmp_path / "s")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.json").write_text(json.dumps({"format": "cladec-eval"}))
    with pytest.raises(SaveFormatError, match="expected 'cladec-run'"):
        build_study(bad, tmp_path / "s")


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"items": 0}, "items"),
        ({"items": 500}, "items"),
        ({"seed": "x"}, "seed"),
        ({"order": "random"}, "order must be one of 'per-participant', 'fixed'"),
    ],
)
def test_study_bad_arguments(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        build_study(tmp_path, tmp_path / "s", **kw)
    if "order" in kw:
        with pytest.raises(ConfigError, match=match):
            participant_order("abc", "P1", ["item-01"], order=kw["order"])


# -- answers and study-summary ---------------------------------------------------------------------


def _row(pid="P1", item="item-01", **kw):
    r = {
        "participant_id": pid,
        "item_id": item,
        "image_id": "fashion-mnist:test:7",
        "true_label": "Coat",
        "uses": "shape;details",
        "ignores": "texture",
        "free_text": "",
        "confidence": "4",
        "seconds_on_item": "12.5",
        "started_at": "2024-01-01T10:00:00.000Z",
        "answered_at": "2024-01-01T10:00:12.500Z",
    }
    r.update(kw)
    return r


def _write_csv(path: Path, rows, columns=ANSWER_COLUMNS):
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def test_summary_counts_concepts_items_and_confidence(tmp_path):
    d = tmp_path / "answers"
    d.mkdir()
    _write_csv(
        d / "p1.csv",
        [
            _row(),
            _row(
                item="item-02", uses="colour", ignores="", confidence="2", true_label="Bag", free_text="likes handles"
            ),
        ],
    )
    (d / "p2.json").write_text(
        json.dumps(
            {
                "format": "cladec-study-answers",
                "answers": [dict(_row(pid="P2"), uses=["shape"], ignores=["background", "texture"], confidence=5)],
            }
        )
    )
    out = tmp_path / "summary.json"
    s = summarize_answers([d], out=out)
    assert json.loads(out.read_text()) == s
    assert s["participants"] == 2 and s["answers"] == 3 and s["items"] == 2
    assert s["concepts"]["shape"] == {"uses": 2, "ignores": 0, "uses_share": round(2 / 3, 4), "ignores_share": 0.0}
    assert s["concepts"]["texture"]["ignores"] == 2 and s["concepts"]["colour"]["uses"] == 1
    assert s["mean_confidence"] == pytest.approx((4 + 2 + 5) / 3, abs=1e-4)
    item1 = next(i for i in s["per_item"] if i["item_id"] == "item-01")
    assert item1["answers"] == 2 and item1["mean_confidence"] == 4.5 and item1["ignores"]["background"] == 1
    item2 = next(i for i in s["per_item"] if i["item_id"] == "item-02")
    assert item2["free_text"] == ["likes handles"] and item2["true_label"] == "Bag"
    text = format_summary(s)
    assert "3 answers from 2 participant(s)" in text and "shape" in text


def test_answers_of_two_studies_are_never_merged(tmp_path):
    # item-01 of a conv4 study and item-01 of a conv2 study are different images: both answers count, per study
    a = _write_csv(tmp_path / "a.csv", [_row(study_id="s-conv4", image_id="fashion-mnist:test:17")])
    (tmp_path / "b.json").write_text(
        json.dumps(
            {
                "format": "cladec-study-answers",
                "study_id": "s-conv2",
                "answers": [
                    dict(
                        _row(image_id="fashion-mnist:test:903", true_label="Bag"),
                        uses=["colour"],
                        ignores=[],
                        confidence=3,
                    )
                ],
            }
        )
    )
    s = summarize_answers([a, tmp_path / "b.json"])
    assert s["answers"] == 2 and s["items"] == 2 and s["studies"] == ["s-conv2", "s-conv4"]
    assert sorted((i["study_id"], i["image_id"]) for i in s["per_item"]) == [
        ("s-conv2", "fashion-mnist:test:903"),
        ("s-conv4", "fashion-mnist:test:17"),
    ]
    assert "answers of 2 studies" in format_summary(s) and "s-conv2/item-01" in format_summary(s)
    # answer files written before the study id was a column still read (as one unknown study)
    old = _write_csv(tmp_path / "old.csv", [_row()], columns=[c for c in ANSWER_COLUMNS if c != "study_id"])
    assert read_answers([old])[0]["study_id"] == ""


def test_repeated_answer_keeps_the_latest(tmp_path):
    a = _write_csv(tmp_path / "a.csv", [_row(confidence="1", answered_at="2024-01-01T10:00:00Z")])
    b = _write_csv(tmp_path / "b.csv", [_row(confidence="5", answered_at="2024-01-01T11:00:00Z")])
    rows = read_answers([a, b])
    assert len(rows) == 1 and rows[0]["confidence"] == 5 and rows[0]["uses"] == ["shape", "details"]


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "is empty"),
        ("participant_id,item_id\nP1,item-01\n", "header lacks image_id, true_label, uses"),
        (None, "confidence 7 is outside 1..5"),
        (None, "confidence 'high' is not a whole number"),
        (None, "confidence '3.7' is not a whole number"),
        (None, "empty participant_id"),
        (None, "more fields than the header"),
        (None, "seconds_on_item 'long' is not a number"),
    ],
)
def test_malformed_answer_csv(tmp_path, content, match):
    p = tmp_path / "bad.csv"
    if content is not None:
        p.write_text(content)
    elif "outside" in match:
        _write_csv(p, [_row(confidence="7")])
    elif "'high'" in match:
        _write_csv(p, [_row(confidence="high")])
    elif "'3.7'" in match:
        _write_csv(p, [_row(confidence="3.7")])
    elif "participant_id" in match:
        _write_csv(p, [_row(pid="")])
    elif "seconds" in match:
        _write_csv(p, [_row(seconds_on_item="long")])
    else:
        _write_csv(p, [_row()])
        fields = ["s", "P1", "item-02"] + ["3"] * (len(ANSWER_COLUMNS) - 3) + ["EXTRA"]  # one field too many
        p.write_text(p.read_text() + ",".join(fields) + "\n")
    with pytest.raises(SaveFormatError, match=match) as e:
        summarize_answers([p])
    assert "bad.csv" in str(e.value)


def test_answers_with_and_without_positions(tmp_path):
    # P1 (CSV with positions): 4 items, confidence falling along the sequence; P3 (JSON with positions): 3 items;
    # P2: an older file with neither the position nor the study_id column
    p1 = _write_csv(
        tmp_path / "p1.csv",
        [
            _row(pid="P1", item=f"item-0{i}", position=str(pos), confidence=str(c))
            for i, pos, c in ((3, 1, 5), (1, 2, 4), (4, 3, 2), (2, 4, 1))
        ],
    )
    (tmp_path / "p3.json").write_text(
        json.dumps(
            {
                "format": "cladec-study-answers",
                "order": "per-participant",
                "answers": [
                    dict(_row(pid="P3", item=f"item-0{i}"), position=pos, confidence=c, uses=[], ignores=[])
                    for i, pos, c in ((1, 1, 3), (2, 2, 3), (3, 3, 1))
                ],
            }
        )
    )
    old = _write_csv(
        tmp_path / "p2.csv",
        [_row(pid="P2", item=f"item-0{i}", confidence="2") for i in (1, 2)],
        columns=[c for c in ANSWER_COLUMNS if c not in ("position", "study_id")],
    )
    assert "position" in ANSWER_COLUMNS and "position" not in old.read_text().splitlines()[0]
    got = {(r["participant_id"], r["item_id"]): r["position"] for r in read_answers([p1, tmp_path / "p3.json", old])}
    assert got[("P1", "item-03")] == 1 and got[("P1", "item-02")] == 4 and got[("P3", "item-03")] == 3
    assert got[("P2", "item-01")] is None and got[("P2", "item-02")] is None

    s = summarize_answers([p1, tmp_path / "p3.json", old])
    assert s["answers"] == 9 and s["items"] == 4
    mean_pos = {i["item_id"]: i["mean_position"] for i in s["per_item"]}  # over the answers that have a position
    assert mean_pos == {"item-01": 1.5, "item-02": 3.0, "item-03": 2.0, "item-04": 3.0}
    parts = {p["participant_id"]: p for p in s["per_participant"]}
    assert (parts["P1"]["first_half_mean_confidence"], parts["P1"]["second_half_mean_confidence"]) == (4.5, 1.5)
    # 3 answers: the first and the last count, the middle one is in neither half
    assert (parts["P3"]["first_half_mean_confidence"], parts["P3"]["second_half_mean_confidence"]) == (3.0, 1.0)
    assert parts["P2"]["first_half_mean_confidence"] is None and parts["P2"]["second_half_mean_confidence"] is None
    assert s["order_effect"] == {
        "participants": 2,
        "answers_per_half": 3,
        "first_half_mean_confidence": 4.0,
        "second_half_mean_confidence": round(4 / 3, 4),
        "difference": round(4 / 3 - 4.0, 4),
    }
    assert "order check: mean confidence 4.0 in the first half" in format_summary(s)

    # only older files: no positions, no order check, and the rest of the summary as before
    s_old = summarize_answers([old])
    assert s_old["answers"] == 2 and s_old["order_effect"] is None
    assert all(i["mean_position"] is None for i in s_old["per_item"])
    assert "order check" not in format_summary(s_old) and "2 answers from 1 participant(s)" in format_summary(s_old)


@pytest.mark.parametrize("position", ["0", "-2", "2.5", "first"])
def test_bad_position(tmp_path, position):
    p = _write_csv(tmp_path / "bad.csv", [_row(position=position)])
    with pytest.raises(SaveFormatError, match=rf"bad.csv, line 2: position '{position}' is not a whole number from 1"):
        read_answers([p])


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"format": "cladec-run"}', "expected 'cladec-study-answers'"),
        ('{"answers": 3}', "expected an object with an 'answers' list"),
        ("{broken", "not valid JSON"),
        ('{"answers": [{"participant_id": "P", "item_id": "i"}]}', "empty confidence"),
    ],
)
def test_malformed_answer_json(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(SaveFormatError, match=match):
        read_answers([p])


def test_answer_files_not_found_or_not_text(tmp_path):
    with pytest.raises(DataError, match="answer file not found"):
        read_answers([tmp_path / "none.csv"])
    with pytest.raises(DataError, match="no answer files match"):
        read_answers([str(tmp_path / "*.csv")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .csv or .json"):
        read_answers([tmp_path / "empty"])
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(SaveFormatError, match="not a UTF-8 text file"):
        read_answers([tmp_path / "bin.csv"])


# -- command line ----------------------------------------------------------------------------------------


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cladec: error:") and "expected one of" in err and "Traceback" not in err
    assert main(["study", str(tmp_path), "--out", str(tmp_path / "s")]) == 2
    assert "no run.json" in capsys.readouterr().err
    bad = _write_csv(tmp_path / "bad.csv", [_row(confidence="9")])
    assert main(["study-summary", str(bad)]) == 2
    assert "outside 1..5" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--out", "x", "--n-images", "0"]) == 2  # argparse refuses


def test_cli_study_summary_and_report(tmp_path, capsys):
    a = _write_csv(tmp_path / "a.csv", [_row(), _row(pid="P2", uses="colour")])
    out = tmp_path / "sum.json"
    assert main(["study-summary", str(a), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 answers from 2 participant(s)" in printed and f"wrote {out}" in printed
    assert json.loads(out.read_text())["concepts"]["colour"]["uses"] == 1
    ev = _eval_only(tmp_path)
    assert main(["report", str(ev), "--out", str(tmp_path / "site")]) == 0
    assert "index.html" in capsys.readouterr().out
    assert issubclass(SaveFormatError, CladecError)


# -- review fixes: page data, inputs that differ, broken runs, leftovers ---------------------------------------


def _report_data(index: Path) -> dict:
    """The JSON the report page's script reads (it must be valid JSON)."""
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', index.read_text(), re.S)
    assert m, "no report-data script in the page"
    return json.loads(m.group(1))


@pytest.mark.parametrize(
    "text", ["<!--<script>", "</script><!--", "a&b <i>\"x\"</i> 'y'", "line\u2028sep\u2029", "plain"]
)
def test_script_json_is_valid_json_that_cannot_end_its_script(text):
    obj = {"classes": [text, "x"], "nested": {text: [1.5, None, True]}}
    out = str(script_json(obj))
    assert json.loads(out) == obj  # JSON.parse on the page gets the original strings back
    assert "<" not in out and ">" not in out and "&" not in out and "\u2028" not in out


@pytest.mark.usefixtures("one_torch_thread")
def test_classifier_with_more_outputs_than_the_data_set_has_classes(folder_run, tmp_path):
    # a 10-class Fashion-MNIST classifier explained on a 3-class image folder
    index = build_report(folder_run, tmp_path / "site", n_images=6)
    g = _report_data(index)["gallery"]
    assert g["classes"] == ["<!--<script>", 'a&b "quoted"', "plain"]  # true labels: the data set's classes
    from cladec.runs import load_run

    clf_classes = load_run(folder_run, device="cpu").classifier_info["dataset"]["classes"]  # Fashion-MNIST's
    assert len(clf_classes) == 10 and g["pred_classes"] == clf_classes  # predictions: the classifier's classes
    items = g["layers"][0]["variants"][0]["items"]
    preds = {it[k] for it in items for k in ("pred_x", "pred_e", "pred_r")}
    assert all(0 <= p < 10 for p in preds)
    html = index.read_text()
    shown = set(re.findall(r'<span class="pred pred-x [a-z]+">([^<]*)</span>', html))
    assert shown and shown <= {html_escape(clf_classes[p], quote=False) for p in preds}
    assert "are not the data set&#39;s" in html


@pytest.mark.usefixtures("one_torch_thread")
def test_study_names_predictions_with_the_classifier_classes(folder_run, tmp_path):
    """A 10-class classifier on a 3-class folder: the study page once crashed (IndexError) on such runs."""
    from cladec.runs import load_run

    index = build_study(folder_run, tmp_path / "study", items=6)
    html = index.read_text()
    data = json.loads(re.search(r'<script type="application/json" id="study-data">(.*?)</script>', html, re.S)[1])
    clf_classes = load_run(folder_run, device="cpu").classifier_info["dataset"]["classes"]
    assert {it["true_label"] for it in data["items"]} <= {"<!--<script>", 'a&b "quoted"', "plain"}
    assert all(it["predicted"] in clf_classes for it in data["items"])
    with pytest.raises(ConfigError, match="--device 'bogus'"):
        build_study(folder_run, tmp_path / "s2", items=2, device="bogus")
    assert not (tmp_path / "s2").exists()


@pytest.mark.parametrize("device", ["bogus", "cuda:99"])
def test_report_and_study_refuse_a_bad_device_clearly(tmp_path, capsys, device):
    with pytest.raises(ConfigError, match=f"--device '{device}'"):
        build_report(_eval_only(tmp_path), tmp_path / "site", device=device)
    assert not (tmp_path / "site").exists()
    for cmd in (
        ["report", str(tmp_path / "ev"), "--out", str(tmp_path / "s1")],
        ["study", str(tmp_path / "ev"), "--out", str(tmp_path / "s2")],
    ):
        assert main([*cmd, "--device", device]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cladec: error: --device '{device}'") and "Traceback" not in err


@pytest.mark.usefixtures("one_torch_thread")
def test_report_never_replaces_a_study_page_nor_the_other_way(run_dir, tmp_path):
    ev = _eval_only(tmp_path)
    study = build_study(run_dir, tmp_path / "study", items=2).parent
    before = sorted(p.name for p in study.rglob("*"))
    with pytest.raises(ConfigError, match="holds a `cladec study` page, which a `cladec report` page would replace"):
        build_report(ev, study)
    assert sorted(p.name for p in study.rglob("*")) == before
    report = build_report(ev, tmp_path / "report").parent
    with pytest.raises(ConfigError, match="holds a `cladec report` page, which a `cladec study` page would replace"):
        build_study(run_dir, report, items=2)
    assert (report / "index.html").is_file()
    assert build_report(ev, report).is_file()  # a report still replaces a report


@pytest.mark.usefixtures("one_torch_thread")
def test_runs_on_another_data_set_are_left_out_of_the_gallery(run_dir, folder_run, tmp_path):
    # the same classifier and image shape (1×28×28), but Fashion-MNIST vs a folder of three classes
    demo = tmp_path / "demo"
    shutil.copytree(run_dir, demo / "runs" / "a_fmnist", ignore=shutil.ignore_patterns("eval"))
    shutil.copytree(folder_run, demo / "runs" / "b_folder")
    index = build_report(demo, tmp_path / "site", n_images=6)
    g = _report_data(index)["gallery"]
    assert [v["run"] for L in g["layers"] for v in L["variants"]] == ["a_fmnist"]
    assert g["classes"][0] == "T-shirt/top"
    html = index.read_text()
    assert "b_folder: it was fitted on data set &#39;imagefolder:" in html and "left out of the gallery" in html


@pytest.mark.usefixtures("one_torch_thread")
def test_a_sweep_cell_with_missing_weights_is_left_out_with_a_note(tiny_sweep, tmp_path):
    sweep = shutil.copytree(tiny_sweep, tmp_path / "sweep")
    (sweep / "cells" / "conv4__a0.5__s0" / "cladec" / "weights.safetensors").unlink()
    index = build_report(sweep, tmp_path / "site", n_images=4)
    g = _report_data(index)["gallery"]
    assert {(L["name"], v["alpha"]) for L in g["layers"] for v in L["variants"]} == {
        ("conv2", 0.001),
        ("conv2", 0.5),
        ("conv4", 0.001),
    }
    html = index.read_text()
    assert "conv4__a0.5__s0: could not be loaded (" in html and "weights file not found" in html


@pytest.mark.usefixtures("one_torch_thread")
def test_missing_image_folder_says_which_folder_must_exist(tiny_sweep, make_image_folder, tmp_path):
    from cladec.runs import fit_run

    folder = make_image_folder(tmp_path / "imgs", {"train": 4, "test": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_run(
            tmp_path / "run",
            classifier_dir=tiny_sweep.parent / "clf",
            dataset=f"imagefolder:{folder}",
            layer="conv2",
            epochs=1,
            device="cpu",
            seed=0,
            refae=False,
            verbose=False,
        )
    folder.rename(tmp_path / "moved")
    with pytest.raises(DataError) as e:
        build_report(tmp_path / "run", tmp_path / "site", n_images=2)
    msg = str(e.value)
    assert f"image folder {folder}" in msg and "must exist" in msg and "run.json" in msg
    assert "pass --data-root" not in msg and "--data-root does not apply" in msg


def _killed_build(out: Path) -> Path:
    """Start a page build of ``out`` in another process and kill it (SIGKILL) in the middle; return its folder."""
    code = (
        "import os, signal, sys\nfrom cladec.report._site import site_dir\n"
        "with site_dir(sys.argv[1], 'report', protect=[]) as tmp:\n"
        "    (tmp / 'img').mkdir(); (tmp / 'img' / 'a.png').write_bytes(b'x' * 1000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    left = list(out.parent.glob(f".{out.name}.*.tmp"))
    assert len(left) == 1 and (left[0] / "img" / "a.png").is_file()
    return left[0]


def test_leftovers_of_killed_builds_are_removed(tmp_path):
    ev = _eval_only(tmp_path)
    out = tmp_path / "site"
    killed = _killed_build(out)
    mine = tmp_path / ".site.notes.tmp"  # not cladec's: no site marker
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    running = tmp_path / ".site.abc123.tmp"  # a build that still runs (this process)
    running.mkdir()
    (running / ".cladec-site").write_text(json.dumps({"kind": "report"}))
    (running / ".cladec-build").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    build_report(ev, out)
    assert not killed.exists()
    assert (mine / "keep.txt").read_text() == "mine" and running.is_dir()
    assert not (out / ".cladec-build").exists() and (out / ".cladec-site").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".site.")) == [
        ".site.abc123.tmp",
        ".site.notes.tmp",
    ]
