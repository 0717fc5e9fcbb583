"""Panoptic prediction for images of any size: resize, normalise, pad, CNN, AMWC, post-process.

A :class:`Predictor` wraps a *runner* (anything mapping a normalised float32 batch ``[B, 3, H, W]``,
``H`` and ``W`` multiples of ``size_divisibility``, to ``(node_costs [B, K, h, w], edge_costs
[B, 2D, h, w], boundary_prob [B, 2D, h, w])``: a :class:`cops.models.CostMapNet` or an export) and
the model card (:mod:`cops.models.model_card`). One forward serves the whole batch; each
image's valid stride grid is then cropped out and solved, images of equal grid size together.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from cops.datasets.class_list import ClassList
from cops.device import resolve_device
from cops.errors import CopsError
from cops.inference.export import load_export
from cops.inference.instance_score import logits_from_costs
from cops.inference.postprocess import postprocess
from cops.inference.result import PanopticPrediction, boundary_map
from cops.models.checkpoint import Checkpoint
from cops.models.model_card import ModelCard
from cops.models.runtime import InferenceNet
from cops.solver import edge_maps_to_costs, grid_graph, solve_amwc, solve_amwc_batch
from cops.solver.checks import validate_local_search

Runner = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
BACKENDS = ("auto", "cpu", "cuda")


def input_size(shape: Sequence[int], resize_shortest_edge: Sequence[int] | None) -> tuple[int, int]:
    """The size an image of `shape` (H, W, ...) enters the CNN at: as it is, or resized so its
    shorter side is ``shortest`` and its longer side at most ``longest`` (rounded as the original
    does: ``int(x + 0.5)``)."""
    height, width = int(shape[0]), int(shape[1])
    if resize_shortest_edge is None:
        return height, width
    shortest, longest = resize_shortest_edge
    scale = shortest / min(height, width)
    if max(height, width) * scale > longest:
        scale = longest / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


@functools.lru_cache(maxsize=8)
def _grid_edges(height: int, width: int, distances: tuple[int, ...]) -> np.ndarray:
    """The grid graph of one stride-grid size, shared by every image of that size (not mutated)."""
    return grid_graph(height, width, distances)


@functools.lru_cache(maxsize=4)
def _device_edges(
    height: int, width: int, distances: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """The grid graph on a GPU, so the GPU solver reads it without a host copy per image."""
    return torch.from_numpy(_grid_edges(height, width, distances)).to(device)


def _check_image(image: Any, index: int) -> np.ndarray:
    """An input image as a uint8 RGB array [H, W, 3], or a ValueError naming its position."""
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
        or min(image.shape[:2]) < 1
    ):
        what = (
            f"{image.dtype} array of shape {image.shape}"
            if isinstance(image, np.ndarray)
            else type(image).__name__
        )
        raise ValueError(f"images[{index}]: expected a uint8 RGB array [H, W, 3], got a {what}")
    return image


def _to_numpy(x: Any) -> np.ndarray:
    """Host numpy copy of a solver output or network map (torch tensor on any device, or numpy)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class Predictor:
    """Images → panoptic predictions with one cost network (checkpoint or export) and its card.

    ``device`` is where input batches are built and the runner runs; ``backend`` is the solver's
    ("auto" solves on the GPU when the costs come back on one and numba can use it), and
    ``local_search`` its local-search effort (checkpoints: the recipe's ``solver.local_search``).
    Post-processing follows the card's ``postprocess`` (the recipe's ``eval.semantic`` and
    ``eval.instance_score``, :func:`postprocess`'s options; with ``eval.solve_padded`` every
    image's AMWC covers the whole padded batch grid, as the original's COCO inference,
    :func:`postprocess`'s ``valid_input``; otherwise only the image's part of it).
    """

    def __init__(
        self,
        runner: Runner,
        card: ModelCard,
        device: str | torch.device = "cpu",
        backend: str = "auto",
        local_search: str = "fast",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        self.local_search = validate_local_search(local_search)
        if not isinstance(card, ModelCard):
            raise TypeError(f"card: expected a ModelCard, got {type(card).__name__}")
        self.card = card
        post = card.postprocess
        self.semantic_from, self.instance_score = post.semantic, post.instance_score
        self.solve_padded = post.solve_padded
        self.runner = runner
        self.device = resolve_device(device)
        self.backend = backend
        self.isthing = np.asarray(card.classes.isthing, dtype=bool)
        self.category_ids = np.asarray(card.classes.category_ids, dtype=np.int64)
        self.edge_distances = tuple(card.edge_distances)
        self.stride = int(card.stride)
        self.size_divisibility = int(card.size_divisibility)
        self.test_size = None if card.test_size is None else tuple(card.test_size)
        resize = card.resize_shortest_edge
        self.resize_shortest_edge = None if resize is None else tuple(resize)
        norm = card.normalization
        self._mean = torch.tensor(norm.mean, dtype=torch.float32).view(3, 1, 1) * 255.0
        self._inv_std = 1.0 / (torch.tensor(norm.std, dtype=torch.float32).view(3, 1, 1) * 255)
        self._mean, self._inv_std = self._mean.to(self.device), self._inv_std.to(self.device)

    @property
    def classes(self) -> ClassList:
        """Class names, category ids, thing flags and colours, in train-id order."""
        return self.card.classes

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path | Checkpoint,
        device: str | torch.device = "auto",
        backend: str = "auto",
        test_size: Sequence[int] | None = None,
        precision: str | None = None,
        runtime: str | None = None,
    ) -> Predictor:
        """The checkpoint's network + cost scalars in eval mode on `device` (a path is loaded),
        run as :class:`~cops.models.runtime.InferenceNet` (channels-last, frozen in fp32).

        ``test_size`` ([H, W]) overrides the recipe's ``eval.test_size``, ``precision`` (fp32 or
        bf16) its ``eval.precision``, ``runtime`` (frozen, compile, eager) its ``eval.runtime``.
        """
        if not isinstance(checkpoint, Checkpoint):
            checkpoint = Checkpoint.load(checkpoint)
        card = checkpoint.card.with_test_size(test_size)
        dev = resolve_device(device)
        recipe = checkpoint.recipe
        runner = InferenceNet(
            checkpoint.cost_net(dev),
            dev,
            precision or recipe.eval.precision,
            runtime or recipe.eval.runtime,
        )
        local_search = recipe.solver.local_search
        return cls(runner, card, device=dev, backend=backend, local_search=local_search)

    @classmethod
    def from_export(
        cls,
        path: str | Path,
        backend: str = "auto",
        test_size: Sequence[int] | None = None,
        precision: str | None = None,
        runtime: str | None = None,
    ) -> Predictor:
        """An exported cost network (ONNX or TorchScript, by suffix) with its model card JSON;
        exports run as exported, in fp32 (``precision`` bf16 and a ``runtime`` are refused)."""
        if precision not in (None, "fp32") or runtime is not None:
            asked = f"--precision {precision}" if runtime is None else f"--runtime {runtime}"
            raise CopsError(
                f"{path}: an export runs as exported, in fp32; {asked} needs a checkpoint"
            )
        model = load_export(path)
        return cls(model, model.card.with_test_size(test_size), device="cpu", backend=backend)

    # -----------------------------------------------------------------------------------------

    def cnn_size(self, shape: Sequence[int]) -> tuple[int, int]:
        """The H×W the CNN sees for an image of `shape` (H, W, ...): its test size, padded to
        the size divisibility (what :meth:`predict` feeds the runner for that image alone)."""
        h, w = self.test_size or input_size(shape[:2], self.resize_shortest_edge)
        div = self.size_divisibility
        return -(-h // div) * div, -(-w // div) * div

    def synchronize(self) -> None:
        """Wait for queued GPU work, so that wall-clock timings are honest."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _batch(self, images: Sequence[np.ndarray], sizes: list[tuple[int, int]]) -> torch.Tensor:
        """Resized, normalised images, padded bottom/right with 0, as one batch on the device."""
        div = self.size_divisibility
        height = -(-max(h for h, _ in sizes) // div) * div
        width = -(-max(w for _, w in sizes) // div) * div
        batch = torch.zeros((len(images), 3, height, width), device=self.device)
        for i, (image, (h, w)) in enumerate(zip(images, sizes, strict=True)):
            if image.shape[:2] != (h, w):
                image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
            pixels = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
            batch[i, :, :h, :w] = (pixels.permute(2, 0, 1).float() - self._mean) * self._inv_std
        return batch

    def _check_outputs(self, outputs: Any, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The runner's three maps, or an error saying how they disagree with the metadata."""
        b, _, height, width = batch.shape
        grid = (height // self.stride, width // self.stride)
        channels = (len(self.isthing), 2 * len(self.edge_distances), 2 * len(self.edge_distances))
        if not isinstance(outputs, tuple | list) or len(outputs) != 3:
            raise CopsError("the cost network must return (node_costs, edge_costs, boundary_prob)")
        names = ("node_costs", "edge_costs", "boundary_prob")
        for name, out, c in zip(names, outputs, channels, strict=True):
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (b, c, *grid):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise CopsError(
                    f"the cost network returned {name} of shape {shape}; the model metadata "
                    f"expects {(b, c, *grid)} for a {height}x{width} batch"
                )
        return tuple(outputs)

    def _solve(
        self, node: torch.Tensor, edge: torch.Tensor, members: list[int], grid: tuple[int, int]
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
        """Solve the images `members` (all of stride grid `grid`); results and solver seconds."""
        h, w = grid
        index = torch.tensor(members, device=node.device)
        costs = node.index_select(0, index)[:, :, :h, :w].flatten(2).transpose(1, 2).contiguous()
        cuts = edge_maps_to_costs(edge.index_select(0, index)[:, :, :h, :w], self.edge_distances)
        cuts = cuts.contiguous()
        if node.is_cuda:
            graph = _device_edges(h, w, self.edge_distances, node.device)
        else:
            graph = _grid_edges(h, w, self.edge_distances)
        self.synchronize()
        start = time.perf_counter()
        if len(members) == 1:
            result = solve_amwc(
                costs[0], graph, cuts[0], self.isthing, self.backend, local_search=self.local_search
            )
            labels, comps = result.labels[None], result.components[None]
        else:
            result = solve_amwc_batch(
                costs, graph, cuts, self.isthing, self.backend, local_search=self.local_search
            )
            labels, comps = result.labels, result.components
        self.synchronize()
        seconds = time.perf_counter() - start
        labels, comps = _to_numpy(labels), _to_numpy(comps)
        return [(labels[j], comps[j]) for j in range(len(members))], seconds

    def _layout(self, size: tuple[int, int], batch: torch.Tensor) -> dict[str, Any]:
        """:func:`postprocess`'s input size: the image's, or the padded batch's with the image as
        its valid part when the whole padded grid is solved."""
        if not self.solve_padded:
            return {"input_size": size}
        return {"input_size": tuple(batch.shape[-2:]), "valid_input": size}

    def _scoring(self, node: torch.Tensor, edge: torch.Tensor) -> dict[str, Any]:
        """:func:`postprocess`'s semantic and score options for one image's cost maps; the
        paper's score gets the logits back from the costs through the card's cost scalars."""
        options: dict[str, Any] = {
            "semantic_from": self.semantic_from,
            "instance_score": self.instance_score,
        }
        if self.instance_score == "paper":
            c = self.card.cost_scalars
            maps = (_to_numpy(node), _to_numpy(edge))
            options["logits"] = logits_from_costs(*maps, c.a, c.b, c.alpha, c.beta)
        return options

    def predict(self, images: Sequence[np.ndarray]) -> list[PanopticPrediction]:
        """Panoptic predictions (at each input's size) for uint8 RGB images [H, W, 3] of any sizes.

        ``timings`` per image: ``cnn`` (the batch forward split evenly), ``solver`` (its group's
        solve split evenly) and ``rest`` (its own resizing, normalisation and post-processing plus
        an even share of the batch's remaining overhead), so they sum to the call's wall time.
        """
        start = time.perf_counter()
        images = [_check_image(im, i) for i, im in enumerate(images)]
        if not images:
            return []
        count = len(images)
        sizes = [
            self.test_size or input_size(im.shape[:2], self.resize_shortest_edge) for im in images
        ]
        grids = [(-(-h // self.stride), -(-w // self.stride)) for h, w in sizes]
        own = np.zeros(count)  # seconds of per-image work (preprocessing, post-processing)
        solver = np.zeros(count)

        tic = time.perf_counter()
        batch = self._batch(images, sizes)
        if self.solve_padded:  # the whole padded grid, as the original (class doc)
            grids = [(batch.shape[-2] // self.stride, batch.shape[-1] // self.stride)] * count
        own += (time.perf_counter() - tic) / count
        self.synchronize()
        tic = time.perf_counter()
        with torch.inference_mode():
            node, edge, prob = self._check_outputs(self.runner(batch), batch)
        self.synchronize()
        cnn = time.perf_counter() - tic

        groups: dict[tuple[int, int], list[int]] = {}
        for i, grid in enumerate(grids):
            groups.setdefault(grid, []).append(i)
        solutions: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for grid, members in groups.items():
            results, seconds = self._solve(node, edge, members, grid)
            solutions.update(zip(members, results, strict=True))
            solver[members] = seconds / len(members)

        predictions = []
        for i, image in enumerate(images):
            tic = time.perf_counter()
            h, w = grids[i]
            labels, comps = solutions[i]
            pred = postprocess(
                labels,
                comps,
                _to_numpy(prob[i, :, :h, :w]),
                edge_distances=self.edge_distances,
                isthing=self.isthing,
                category_ids=self.category_ids,
                thing_min_area=self.card.min_area.thing,
                stuff_min_area=self.card.min_area.stuff,
                output_size=image.shape[:2],
                **self._layout(sizes[i], batch),
                stride=self.stride,
                edges=_grid_edges(h, w, self.edge_distances),
                **self._scoring(node[i, :, :h, :w], edge[i, :, :h, :w]),
            )
            pred.boundary = boundary_map(prob[i, :, :h, :w], self.edge_distances)
            own[i] += time.perf_counter() - tic
            predictions.append(pred)

        total = time.perf_counter() - start
        shared = max(total - cnn - solver.sum() - own.sum(), 0.0) / count
        for i, pred in enumerate(predictions):
            pred.timings = {
                "cnn": cnn / count,
                "solver": float(solver[i]),
                "rest": float(own[i] + shared),
            }
        return predictions
