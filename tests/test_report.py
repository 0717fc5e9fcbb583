"""`cops evaluate --report` end to end: the HTML parses, its numbers are metrics.json's, its
pictures decode, nothing is fetched, and headless Chromium renders it."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest


class _Page(HTMLParser):
    """Image sources and every number cell (``data-metric`` path → ``data-value``, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.numbers: list[tuple[list[str], str]] = []
        self.scripts: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.sources.append(found["src"] or "")
        if "data-metric" in found:
            self.numbers.append((json.loads(found["data-metric"]), found["data-value"]))
        if tag == "script" and found.get("src"):
            self.scripts.append(found["src"])
        if tag == "link" and found.get("href"):
            self.links.append(found["href"])


def _lookup(metrics: dict[str, Any], path: list[str]) -> Any:
    value: Any = metrics
    for key in path:
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


@pytest.fixture(scope="module")
def report(cops, tiny_pretrained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`cops evaluate --report` of a 2-iteration synthetic-tiny model on 2 validation images."""
    data, ckpt = tiny_pretrained
    out = tmp_path_factory.mktemp("report") / "eval"
    result = cops(
        "evaluate", "--checkpoint", str(ckpt), "--data", str(data),
        "--out", str(out), "--device", "cpu", "--workers", "0", "--report",
        "--report-images", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"Report: {out / 'report.html'}" in result.stdout.replace("\n", "")
    return out


def test_report_numbers_equal_metrics_json_and_pictures_decode(report: Path):
    metrics = json.loads((report / "metrics.json").read_text())
    page = _Page()
    page.feed((report / "report.html").read_text("utf-8"))
    page.close()
    assert not page.scripts and not page.links  # nothing fetched: inline script and style only
    shown = {tuple(path) for path, _ in page.numbers}
    names = list(metrics["panoptic"]["per_class"])
    required = {("panoptic", g, k) for g in ("all", "things", "stuff") for k in ("pq", "sq", "rq")}
    required |= {("panoptic", "per_class", n, k) for n in names for k in ("pq", "tp", "fp", "fn")}
    required |= {("panoptic_by_size", s, "all", "pq") for s in ("small", "medium", "large")}
    required |= {("miou",), ("ap",), *(("seconds_per_image", s) for s in ("cnn", "solver"))}
    assert required <= shown, required - shown
    for path, value in page.numbers:
        expected = _lookup(metrics, path)
        if expected is None:
            assert value == "", path
        else:
            assert float(value) == expected, (path, value, expected)
    assert metrics["class_confusion"]["classes"] == names
    for src in page.sources:
        if src.startswith("data:"):
            data = base64.b64decode(src.split(",", 1)[1], validate=True)
        else:
            assert not src.startswith(("http:", "https:", "//")), src
            data = (report / src).read_bytes()
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    # charts (per class, size, training curve) and one worst image of four pictures
    assert len(page.sources) >= 3 + 4
    html = (report / "report.html").read_text("utf-8")
    assert "Lowest PQ images (1)" in html and "Training" in html


def test_evaluate_without_report_is_unchanged(cops, tiny_pretrained, report: Path, tmp_path: Path):
    data, checkpoint = tiny_pretrained
    out = tmp_path / "plain"
    result = cops(
        "evaluate", "--checkpoint", str(checkpoint), "--data", str(data),
        "--out", str(out), "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    plain = json.loads((out / "metrics.json").read_text())
    full = json.loads((report / "metrics.json").read_text())
    assert set(full) - set(plain) == {"panoptic_by_size", "class_confusion"}
    assert plain["panoptic"] == full["panoptic"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
@pytest.mark.slow
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path):
    shot = tmp_path / "report.png"
    profile = tempfile.mkdtemp(dir=tmp_path)
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", f"--screenshot={shot}",
         "--window-size=1200,1600", (report / "report.html").as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    picture = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape[:2] == (1600, 1200)
    # a blank page is one colour; this one has text, tables, plots and pictures
    not_background = np.abs(picture.astype(int) - picture[5, 5].astype(int)).sum(axis=2) > 30
    assert not_background.mean() > 0.02
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 200 and picture.std() > 10
