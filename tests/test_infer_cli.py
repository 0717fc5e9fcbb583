"""`cops evaluate`, `cops predict` and `cops export` as a user runs them (subprocesses)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from pathlib import Path

from panopticapi.evaluation import pq_compute

from cops.datasets.panoptic_io import read_image, read_panoptic_png, write_image

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_evaluate_writes_metrics_equal_to_panopticapi(cops, tiny_pretrained, tmp_path: Path):
    data, ckpt = tiny_pretrained
    out = tmp_path / "eval"
    result = cops(
        "evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out),
        "--per-image", "--save-predictions", "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "PQ" in result.stdout and "mIoU" in result.stdout and "Per class" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["panoptic"]) == {"all", "things", "stuff", "per_class"}
    assert {"pq", "sq", "rq", "n"} <= set(metrics["panoptic"]["all"])
    assert "miou" in metrics and "ap" in metrics and metrics["split"] == "val"
    with open(out / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"image_id", "pq"} <= set(rows[0])
    with contextlib.redirect_stdout(io.StringIO()):
        reference = pq_compute(
            str(data / "panoptic_val.json"),
            str(out / "predictions.json"),
            gt_folder=str(data / "panoptic" / "val"),
            pred_folder=str(out / "predictions"),
        )
    for ours, theirs in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        for key in ("pq", "sq", "rq"):
            mine = metrics["panoptic"][ours][key]
            assert mine is not None
            assert abs(mine / 100 - reference[theirs][key]) < 1e-9, (ours, key)


def test_predict_folder_skips_bad_files_and_exits_nonzero(cops, tiny_pretrained, tmp_path: Path):
    data, ckpt = tiny_pretrained
    photos = tmp_path / "photos"
    images = sorted((data / "images" / "val").iterdir())
    write_image(photos / "a.png", read_image(images[0]))
    write_image(photos / "sub" / "b.jpg", read_image(images[1])[:61, :97])
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "preds"
    result = cops(
        "predict", str(photos), "--checkpoint", str(ckpt), "--out", str(out), "--overlay",
        "--device", "cpu", "--batch-size", "2",
    )  # fmt: skip
    assert result.returncode == 1
    assert "broken.png" in result.stderr and "notes.txt" not in result.stderr + result.stdout
    listing = json.loads((out / "panoptic.json").read_text())
    names = sorted(a["file_name"] for a in listing["annotations"])
    assert names == ["a.png", "sub/b.png"]
    assert {c["name"] for c in listing["categories"]} >= {"road", "car", "person"}
    assert read_panoptic_png(out / "panoptic" / "sub" / "b.png").shape == (61, 97)
    assert (out / "overlay" / "a.png").is_file() and (out / "overlay" / "sub" / "b.png").is_file()
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temp files left


def test_export_then_predict_from_the_export_matches_the_checkpoint(
    cops, tiny_pretrained, tmp_path: Path
):
    data, ckpt = tiny_pretrained
    photos = data / "images" / "val"
    model = tmp_path / "model.pt"
    result = cops(
        "export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(model)
    )
    assert result.returncode == 0, result.stderr
    meta = json.loads(model.with_name("model.pt.json").read_text())
    assert meta["classes"]["names"][0] == "road" and meta["edge_distances"] == [1, 2, 4, 8]
    runs = {}
    for source in (["--checkpoint", str(ckpt)], ["--model", str(model)]):
        out = tmp_path / source[0].strip("-")
        result = cops("predict", str(photos), *source, "--out", str(out), "--device", "cpu")
        assert result.returncode == 0, result.stderr
        runs[source[0]] = sorted((out / "panoptic").glob("*.png"))
    assert [p.name for p in runs["--checkpoint"]] == [p.name for p in runs["--model"]]
    for a, b in zip(runs["--checkpoint"], runs["--model"], strict=True):
        same = read_panoptic_png(a) == read_panoptic_png(b)
        assert same.mean() >= 0.999


def test_bad_invocations_get_one_clear_line(cops, tiny_pretrained, tmp_path: Path):
    _, ckpt = tiny_pretrained
    missing = cops("evaluate", "--checkpoint", str(tmp_path / "nope.pt"))
    assert missing.returncode == 2 and "nope.pt: file not found" in missing.stderr
    both = cops("predict", str(tmp_path), "--checkpoint", str(ckpt), "--model", "m.onnx")
    assert both.returncode == 2 and "exactly one of --checkpoint" in both.stderr
    empty = cops("predict", str(tmp_path), "--checkpoint", str(ckpt))
    assert empty.returncode == 2 and "no image files found" in empty.stderr
    fmt = cops("export", "--checkpoint", str(ckpt), "--format", "tflite")
    assert fmt.returncode == 2 and "--format 'tflite'" in fmt.stderr
