"""The README's Python example runs as written, and every `cladec.x.y` name the README mentions exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_example() -> str:
    text = README.read_text()
    m = re.search(r"<!-- --8<-- \[start:python\] -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no Python example in its python section"
    return m.group(1)


def _resolve(dotted: str) -> object:
    """The object a dotted name names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_cladec_name_in_the_readme_exists():
    text = README.read_text()
    dotted = set(re.findall(r"(?<![\w/.-])cladec(?:\.[A-Za-z_]\w*)+", text))
    for mod, names in re.findall(r"from (cladec[\w.]*) import ([\w, ]+)", text):
        dotted |= {f"{mod}.{n.strip()}" for n in names.split(",") if n.strip()}
    # file names that look like dotted names (cladec.json) are not Python names
    dotted = {d for d in dotted if d.rsplit(".", 1)[1] not in {"json", "png", "safetensors", "csv", "md", "py"}}
    assert len(dotted) >= 10, dotted  # the scan finds the README's names
    missing = []
    for d in sorted(dotted):
        try:
            _resolve(d)
        except (ImportError, AttributeError) as e:
            missing.append(f"{d}: {e}")
    assert not missing, "names in README.md that do not exist:\n" + "\n".join(missing)


@pytest.mark.slow
def test_the_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """About a minute on 2 idle cores: it trains a classifier and fits a ClaDec and a RefAE (the suite turns a
    collapsed decoder into an error, so the fits must give real reconstructions)."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(_python_example(), str(README), "exec"), namespace)
    exp, ref, e = namespace["exp"], namespace["ref"], namespace["e"]
    assert not exp.collapsed and not ref.collapsed  # type: ignore[attr-defined]
    summary = e.summary()  # type: ignore[attr-defined]
    assert summary["n"] == 24 and summary["layer"] == "conv4"
    assert (tmp_path / "triplets.png").stat().st_size > 1000
    assert (tmp_path / "conv4-cladec" / "cladec.json").is_file()
    x_hat, x = namespace["x_hat"], namespace["x"]
    assert x_hat.shape == x[:8].shape and 0 <= float(x_hat.min()) and float(x_hat.max()) <= 1  # type: ignore[attr-defined]
    printed = capsys.readouterr().out
    assert "conv4" in printed and "mse_cladec" in printed  # list_layers and the summary were printed


def _cli_lines() -> list[str]:
    """Every `cladec ...` command in the README's bash blocks (continuation lines joined, comments dropped)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = cmd.split(" #", 1)[0].strip()
            if cmd.startswith("cladec "):
                lines.append(cmd)
    return lines


def test_every_command_line_in_the_readme_parses(capsys):
    """The README's commands (also "Explain a pretrained model", whose --pretrained downloads are not run here)
    name only options the parser knows, with valid values."""
    import shlex

    from cladec.cli.main import build_parser

    lines = _cli_lines()
    assert len(lines) >= 15 and any("torchvision:resnet50" in c and "--lazy" in c for c in lines), lines
    parser, bad = build_parser(), []
    for cmd in lines:
        try:
            parser.parse_args(shlex.split(cmd)[1:])
        except SystemExit:
            bad.append(f"{cmd}\n    {capsys.readouterr().err.strip().splitlines()[-1]}")
    assert not bad, "README commands the parser refuses:\n" + "\n".join(bad)
