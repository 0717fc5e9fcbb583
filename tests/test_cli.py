"""The `cops` command as a user runs it: a subprocess, its exit status and what it prints."""

import json
import re
from pathlib import Path

import pytest

from cops import __version__
from cops.datasets.panoptic_io import read_panoptic_png


def test_help_lists_only_working_commands(cops):
    out = cops("--help")
    assert out.returncode == 0
    assert "prepare-data" in out.stdout and "recipes" in out.stdout
    commands = re.findall(r"^│ (\S+) ", out.stdout.split("Commands")[1], re.MULTILINE)
    assert commands == [
        "pretrain",
        "finetune-pq",
        "evaluate",
        "predict",
        "export",
        "import-checkpoint",
        "check-data",
        "prepare-data",
        "recipes",
        "bench",
    ]
    for sub in ("synthetic", "cityscapes", "coco", "masks"):
        help_out = cops("prepare-data", sub, "--help")
        assert help_out.returncode == 0 and "--out" in help_out.stdout
    for command in commands:
        help_out = cops(command, "--help")
        assert help_out.returncode == 0 and "--" in help_out.stdout, command


def test_version(cops):
    out = cops("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"cops {__version__}"


@pytest.fixture(scope="module")
def tiny_dataset(cops, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "s"
    result = cops(
        "prepare-data",
        "synthetic",
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--num-train",
        "8",
        "--num-val",
        "4",
        "--seed",
        "3",
        "--workers",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert "Prepared dataset" in result.stdout and "car" in result.stdout
    return out


def test_prepare_synthetic_writes_prepared_layout(tiny_dataset: Path):
    train = json.loads((tiny_dataset / "panoptic_train.json").read_text())
    val = json.loads((tiny_dataset / "panoptic_val.json").read_text())
    assert len(train["images"]) == 8 and len(val["images"]) == 4
    summary = json.loads((tiny_dataset / "summary.json").read_text())
    assert summary["train"]["images"] == 8 and summary["val"]["images"] == 4
    ann = train["annotations"][0]
    ids = read_panoptic_png(tiny_dataset / "panoptic" / "train" / ann["file_name"])
    assert {s["id"] for s in ann["segments_info"]} == set(ids[ids > 0].tolist())


def test_prepared_dataset_is_a_valid_coco_source(cops, tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "c"
    result = cops("prepare-data", "coco", str(tiny_dataset), "--out", str(out), "--link", "copy")
    assert result.returncode == 0, result.stderr
    src = json.loads((tiny_dataset / "panoptic_val.json").read_text())
    dst = json.loads((out / "panoptic_val.json").read_text())
    assert [a["segments_info"] for a in dst["annotations"]] == [
        a["segments_info"] for a in src["annotations"]
    ]


def test_quiet_prints_no_table(cops, tmp_path: Path):
    result = cops(
        "--quiet",
        "prepare-data",
        "synthetic",
        "--out",
        str(tmp_path / "q"),
        "--preset",
        "tiny",
        "--num-train",
        "1",
        "--num-val",
        "1",
    )
    assert result.returncode == 0 and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("prepare-data", "synthetic", "--preset", "huge"), "preset"),
        (("prepare-data", "cityscapes", "{missing}"), "missing"),
        (("prepare-data", "coco", "{missing}"), "missing"),
        (("prepare-data", "coco", "{tmp}", "--link", "teleport"), "--link"),
        (("recipes", "show", "synthetic", "--set", "model.backbon=resnet18"), "model.backbone"),
    ],
)
def test_bad_input_gives_one_clear_line(cops, tmp_path: Path, args: tuple[str, ...], needle: str):
    args = tuple(a.format(missing=tmp_path / "missing", tmp=tmp_path) for a in args)
    result = cops(*args, "--out", str(tmp_path / "o")) if args[0] == "prepare-data" else cops(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_verbose_shows_traceback(cops, tmp_path: Path):
    result = cops("-v", "prepare-data", "synthetic", "--preset", "huge", "--out", str(tmp_path))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "DatasetError" in result.stderr
