"""`cops bench`: each benchmark runs on tiny sizes here, prints its table and writes its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cops.benchmarks import data, finetune, predict, solver, train
from cops.benchmarks import eval as eval_bench
from cops.benchmarks.report import BenchResult
from cops.datasets.synthetic import prepare_synthetic
from cops.models import SemanticBoundaryNet
from cops.models.runtime import cnn_gflop
from cops.recipes.schema import load_recipe

BENCHMARKS = ["solver", "predict", "train", "finetune", "eval", "data", "all"]


def test_help_lists_every_benchmark(cops):
    out = cops("bench", "--help")
    assert out.returncode == 0
    listed = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("│ ")]
    assert [name for name in listed if name in BENCHMARKS] == BENCHMARKS
    for name in BENCHMARKS:
        sub = cops("bench", name, "--help")
        assert sub.returncode == 0 and "--json" in sub.stdout, name


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_all_on_cuda_without_a_gpu_fails_with_one_line(cops):
    out = cops("bench", "all", "--device", "cuda", "--quick")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no CUDA device" in out.stderr


def test_data_table_and_json(cops, tmp_path: Path):
    path = tmp_path / "bench.json"
    args = ["--images", "3", "--height", "64", "--width", "96", "--repeats", "1", "-j", "1"]
    out = cops("bench", "data", *args, "--json", str(path))
    assert out.returncode == 0, out.stderr
    assert "images/s" in out.stdout and "generate scenes" in out.stdout
    figures = json.loads(path.read_text())["data"]["figures"]
    assert figures["images"] == 3 and figures["generate_images_per_s"] > 0


def _check(result: BenchResult, name: str) -> None:
    assert result.name == name and result.rows and result.environment["cpus"]
    assert all(len(row) == len(result.columns) for row in result.rows)
    json.dumps(result.figures)  # machine-readable as it stands


def test_eval_agrees_with_panopticapi():
    result = eval_bench.run(images=4, height=64, width=96, workers=1, repeats=1)
    _check(result, "eval")
    assert result.figures["max_abs_difference"] <= 1e-9


@pytest.mark.slow
def test_predict_splits_seconds_by_stage():
    result = predict.run(recipe="synthetic-tiny", height=64, width=96, images=2, device="cpu")
    _check(result, "predict")
    figures = result.figures
    seconds = figures["seconds_per_image"]
    assert set(seconds) == {"cnn", "solver", "rest", "total"}
    assert seconds["total"] >= seconds["cnn"] > 0
    # the CNN's distance to the machine, and the plain eager fp32 forward beside it
    assert figures["cnn_input"] == [64, 96] and figures["precision"] == "fp32"
    net = SemanticBoundaryNet.from_config(load_recipe("synthetic-tiny").model, 9)
    assert figures["gflop_per_image"] == pytest.approx(cnn_gflop(net, 64, 96), abs=0.01)
    assert figures["cnn_gflops"] == pytest.approx(
        figures["gflop_per_image"] / seconds["cnn"], rel=0.01
    )
    assert figures["cnn_speedup"] == pytest.approx(
        figures["eager_fp32_cnn_seconds"] / seconds["cnn"], rel=0.01
    )


@pytest.mark.slow
def test_train_reports_images_per_second_and_gflop():
    result = train.run(recipe="synthetic-tiny", batch=2, steps=1, classes=5, device="cpu")
    _check(result, "train")
    figures = result.figures
    assert figures["images_per_s"] > 0 and figures["batch"] == 2
    assert figures["memory_format"] == "channels-last"  # the synthetic recipes' setting
    net = SemanticBoundaryNet.from_config(load_recipe("synthetic-tiny").model, 5)
    forward = cnn_gflop(net, *figures["crop"])
    # backward: an input and a weight gradient per convolution, less the stem's input gradient
    assert 2 * forward < figures["gflop_per_image"] < 3 * forward
    achieved = figures["gflop_per_image"] * figures["images_per_s"]
    assert figures["gflop_per_s"] == pytest.approx(achieved, rel=0.01, abs=0.1)


class _Grouped(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.grouped = torch.nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.grouped(self.first(image))}


def test_train_gflop_counts_each_gradient_once_grouped_or_frozen():
    net, per_pixel = _Grouped(), 2 * 3 * 3  # a multiply-add counts 2, a 3×3 kernel
    first, grouped = per_pixel * 8 * 3 * 6 * 10, per_pixel * 8 * 2 * 6 * 10  # on 6×10 crops
    # input images carry no gradient: the first convolution computes its weight gradient only
    assert train.train_gflop(net, 6, 10) * 1e9 == pytest.approx(2 * first + 3 * grouped)
    net.first.requires_grad_(False)  # frozen and first: no backward at all
    assert train.train_gflop(net, 6, 10) * 1e9 == pytest.approx(first + 2 * grouped)


@pytest.mark.slow
def test_finetune_splits_an_iteration(tmp_path: Path):
    prepare_synthetic(tmp_path, preset="tiny", num_train=2, splits=("train",))
    result = finetune.run(
        recipe="synthetic-tiny",
        data=tmp_path,
        steps=1,
        batch=1,
        device="cpu",
        overrides=["solver.num_samples=1"],
    )
    _check(result, "finetune")
    seconds = result.figures["seconds_per_iteration"]
    assert seconds["total"] >= seconds["forward solve"] > 0


def test_data_generator_rates():
    result = data.run(images=2, height=64, width=96, workers=1, repeats=1)
    _check(result, "data")
    assert result.figures["targets_images_per_s"] > 0


def test_solver_efforts_and_gap(cops, tmp_path: Path):
    path = tmp_path / "solver.json"
    args = ["--sizes", "24x32", "--repeats", "1", "--sigmas", "1.5", "--backends", "cpu"]
    out = cops("bench", "solver", *args, "--json", str(path))
    assert out.returncode == 0, out.stderr
    rows = json.loads(path.read_text())["solver"]["figures"]["rows"]
    assert [(r["family"], r["size"], r["backend"]) for r in rows] == [
        ("street", "24x32", "cpu"),
        ("noisy", "24x32", "cpu"),
    ]
    for row in rows:  # local search never makes the greedy result worse
        assert row["objective_full"] <= row["objective_fast"] + 1e-6
        assert row["objective_fast"] <= row["objective_off"] + 1e-6
    bad = cops("bench", "solver", "--efforts", "fastest")
    assert bad.returncode == 2 and "--efforts 'fastest'" in bad.stderr
    result = solver.gap(count=5, seed=1)
    _check(result, "solver-gap")
    assert result.figures["mean_gap"] <= 0.005
