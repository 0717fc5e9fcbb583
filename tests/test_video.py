"""`cops predict` on videos: a PNG per frame, an overlay video, one id per car, streaming."""

from __future__ import annotations

import inspect
import json
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cops.datasets.class_list import ClassList
from cops.datasets.panoptic_io import read_panoptic_png, write_image
from cops.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from cops.errors import CopsError
from cops.inference.predictor import Predictor
from cops.inference.video import predict_video, sequence_frames, video_frames
from cops.models.model_card import CardSource, ModelCard
from cops.recipes.schema import load_recipe

NAMES = ["road", "sky", "car", "person"]
CATEGORY_IDS = [7, 23, 26, 24]
ISTHING = [False, False, True, True]
COLOURS = [(128, 64, 128), (70, 130, 180), (230, 30, 30), (220, 220, 0)]
HEIGHT, WIDTH, FRAMES, STEP = 96, 192, 12, 3
CARS = ((60, 20, 16, 36), (40, 110, 14, 30))  # top, left, height, width at frame 0
CAR_SPEED = (STEP, -STEP)  # pixels per frame along x


def _frame(t: int) -> np.ndarray:
    """Frame t of the synthetic street: sky over road, two separate cars driving apart."""
    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    image[: HEIGHT // 3] = COLOURS[1]
    image[HEIGHT // 3 :] = COLOURS[0]
    for (top, left, h, w), speed in zip(CARS, CAR_SPEED, strict=True):
        x = left + speed * t
        image[top : top + h, x : x + w] = COLOURS[2]
    return image


def _car_centres(t: int) -> list[tuple[int, int]]:
    return [
        (top + h // 2, left + speed * t + w // 2)
        for (top, left, h, w), speed in zip(CARS, CAR_SPEED, strict=True)
    ]


def _colour_runner(batch: torch.Tensor):
    """A stand-in cost network that segments by colour: node costs are the distance of each
    stride cell's centre to the class colours; edges join cells of one colour, cut others."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    palette = (torch.tensor(COLOURS, dtype=torch.float32) / 255).view(1, 4, 3, 1, 1)
    centres = batch[:, :, 2::4, 2::4] * std + mean  # back to [0, 1] RGB
    distance = ((centres[:, None] - palette) ** 2).sum(dim=2)  # [B, 4, h, w]
    nearest = distance.argmin(dim=1)
    same_down = torch.zeros_like(distance[:, 0])
    same_right = torch.zeros_like(distance[:, 0])
    same_down[:, :-1] = (nearest[:, :-1] == nearest[:, 1:]).float()
    same_right[:, :, :-1] = (nearest[:, :, :-1] == nearest[:, :, 1:]).float()
    edge = torch.stack([same_down, same_right], dim=1) * 4.0 - 2.0  # join +2, cut -2
    return 10.0 * distance, edge, torch.sigmoid(-edge)


@pytest.fixture(scope="module")
def colour_predictor() -> Predictor:
    recipe = load_recipe("synthetic-tiny", ["model.edge_distances=[1]", "eval.thing_min_area=16"])
    classes = ClassList(NAMES, CATEGORY_IDS, ISTHING, [list(c) for c in COLOURS])
    scalars = {"a": 1.0, "b": 0.0, "alpha": [1.0], "beta": [0.0], "edge_distances": [1]}
    card = ModelCard.of(recipe, classes, scalars, CardSource("", 0, "test"))
    return Predictor(_colour_runner, card)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 12-frame street video as an mp4 written by OpenCV."""
    path = tmp_path_factory.mktemp("video") / "street.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (WIDTH, HEIGHT))
    for t in range(FRAMES):
        writer.write(cv2.cvtColor(_frame(t), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _count_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def test_video_gives_a_png_per_frame_an_overlay_video_and_one_id_per_car(
    colour_predictor, video, tmp_path
):
    out = tmp_path / "pred"
    ticks = []
    result = predict_video(
        video, out, colour_predictor, overlay=True, progress=lambda n, total: ticks.append(n)
    )
    assert result.frames == FRAMES and sum(ticks) == FRAMES
    pngs = sorted((out / "panoptic").glob("*.png"))
    assert [p.stem for p in pngs] == [f"frame_{t:06d}" for t in range(FRAMES)]
    data = json.loads((out / "panoptic.json").read_text())
    assert len(data["annotations"]) == FRAMES
    assert result.overlay == out / "overlay.mp4" and _count_frames(result.overlay) == FRAMES

    ids_of_car: list[set[int]] = [set(), set()]
    for t, png in enumerate(pngs):
        ids = read_panoptic_png(png)
        things = {s["id"] for s in data["annotations"][t]["segments_info"] if s["isthing"]}
        for car, (y, x) in enumerate(_car_centres(t)):
            assert ids[y, x] in things, (t, car)
            ids_of_car[car].add(int(ids[y, x]))
    assert [len(s) for s in ids_of_car] == [1, 1], ids_of_car
    assert ids_of_car[0] != ids_of_car[1]
    assert result.tracks == 2


def test_every_max_frames_and_sequences(colour_predictor, video, tmp_path):
    picked = [f.index for f in video_frames(video, every=3, max_frames=3)]
    assert picked == [0, 3, 6]
    frames = tmp_path / "frames"
    for t in range(5):
        write_image(frames / f"f{t:02d}.png", _frame(t))
    assert [f.name for f in sequence_frames(frames, every=2)] == ["f00", "f02", "f04"]
    out = tmp_path / "seq"
    result = predict_video(frames, out, colour_predictor, sequence=True, max_frames=4, overlay=True)
    assert result.frames == 4 and _count_frames(out / "overlay.mp4") == 4
    assert sorted(p.stem for p in (out / "panoptic").glob("*.png")) == ["f00", "f01", "f02", "f03"]
    with pytest.raises(CopsError, match="--sequence"):
        predict_video(frames, tmp_path / "x", colour_predictor)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(CopsError, match="broken.mp4: OpenCV cannot open this video"):
        predict_video(broken, tmp_path / "y", colour_predictor)
    assert not (tmp_path / "y").exists()
    with pytest.raises(CopsError, match="lies inside the input folder"):
        predict_video(frames, frames / "out", colour_predictor, sequence=True)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "overlay.mp4").write_bytes(b"a user's video")
    with pytest.raises(CopsError, match="overlay.mp4: exists and is not an output"):
        predict_video(video, foreign, colour_predictor, max_frames=1, overlay=True)
    assert (foreign / "overlay.mp4").read_bytes() == b"a user's video"
    predict_video(video, out, colour_predictor, max_frames=2, overlay=True)  # its own: replaced
    assert _count_frames(out / "overlay.mp4") == 2


def test_frames_are_streamed_and_memory_stays_flat(colour_predictor, video, tmp_path):
    """Readers are generators, and the traced peak of 12 frames is that of 3 plus a margin far
    below what keeping the extra frames (image + maps) would take."""
    assert inspect.isgeneratorfunction(video_frames)
    assert inspect.isgeneratorfunction(sequence_frames)
    predict_video(video, tmp_path / "warm", colour_predictor, max_frames=2, overlay=True)

    def peak(frames: int) -> int:
        tracemalloc.start()
        predict_video(video, tmp_path / f"m{frames}", colour_predictor, max_frames=frames,
                      overlay=True)  # fmt: skip
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    per_frame = HEIGHT * WIDTH * (3 + 4 + 4 + 1)  # RGB, id map, tracked ids, semantic
    growth = peak(FRAMES) - peak(3)
    assert growth < 2 * per_frame, (growth, per_frame)


def test_cli_predicts_a_video(cops, video, tmp_path):
    from _training import save_net

    from cops.datasets.synthetic import SYNTHETIC_CATEGORIES
    from cops.models.build import build_model

    recipe = load_recipe("synthetic-tiny")
    torch.manual_seed(0)
    net = build_model(recipe.model, len(SYNTHETIC_CATEGORIES), None, restoring=True)
    checkpoint = save_net(net, recipe, tmp_path / "ckpt", 1, "pretrain")
    out = tmp_path / "cli"
    result = cops(
        "predict", str(video), "--checkpoint", str(checkpoint), "--out", str(out), "--overlay",
        "--every", "2", "--max-frames", "4", "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "4 frame(s)" in result.stdout
    assert sorted(p.stem for p in (out / "panoptic").glob("*.png")) == [
        f"frame_{t:06d}" for t in (0, 2, 4, 6)
    ]
    assert _count_frames(out / "overlay.mp4") == 4
