"""Recipe schema and loader: typed YAML recipes with `_base_` inheritance and `--set` overrides.

A recipe is one YAML file whose top-level sections mirror the dataclasses below. Every key has
a type and a default, so a recipe only states what differs. Built-in recipes ship in the
`cops.recipes` package and resolve by name (``synthetic-tiny``); anything else is a path.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from cops.errors import RecipeError

BASE_KEY = "_base_"
MAX_SEED = 2**63 - 1
"""The largest seed torch, numpy and Python's generators all accept."""
T = typing.TypeVar("T")


@dataclass
class SyntheticConfig:
    """How the embedded synthetic dataset is generated when it is missing."""

    preset: Literal["tiny", "default"] = "default"
    num_train: int | None = None
    num_val: int | None = None
    height: int | None = None
    width: int | None = None
    seed: int = 0


CITYSCAPES_SHORTEST_EDGES = (
    *(512, 640, 704, 832, 896, 1024, 1152, 1216),
    *(1344, 1408, 1536, 1664, 1728, 1856, 1920, 2048),
)
"""The original's Cityscapes training sizes (MIN_SIZE_TRAIN): 16 shorter sides, 512…2048."""


@dataclass
class DataConfig:
    """Where the prepared dataset lives and how training crops are drawn.

    ``scale``: ``shortest_edge`` (the paper) resizes the shorter side to one of
    ``shortest_edges`` at random, the longer to at most ``max_size`` (per phase:
    ``train.shortest_edges`` / ``finetune.shortest_edges`` replace the list); ``range`` scales by
    a factor drawn uniformly from ``scale_range``. ``crop``: ``clip`` (the paper) takes
    ``min(crop_size, image)`` at a random offset and pads bottom/right to
    ``model.size_divisibility`` (boundary weight 1 in the padding); ``pad`` takes ``crop_size``
    at a random offset, void (weight 0) where it overhangs any side.
    """

    dataset: Literal["synthetic", "cityscapes", "coco"] = "synthetic"
    root: str = "data/synthetic"
    train_split: str = "train"
    val_split: str = "val"
    crop_size: list[int] = field(default_factory=lambda: [512, 1024])
    scale: Literal["shortest_edge", "range"] = "shortest_edge"
    shortest_edges: list[int] = field(default_factory=lambda: list(CITYSCAPES_SHORTEST_EDGES))
    max_size: int = 4096
    crop: Literal["clip", "pad"] = "clip"
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    flip: bool = True
    num_workers: int = 2
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class ModelConfig:
    """The paper's network: backbone depth, decoder width, ASPP and the stride-4 edge distances.

    ``aspp_pool_size`` is the ASPP image-pooling window [h, w] on the stride-``output_stride``
    map, the training crop divided by the output stride in the original (null: global pooling).
    ``size_divisibility`` pads inputs bottom/right to multiples of it (after normalisation).
    ``backbone_weights`` is a backbone file (from ``cops import-checkpoint --backbone-only``, or a
    torchvision ResNet state dict) or ``torchvision:TAG`` (e.g. ``torchvision:IMAGENET1K_V2``,
    downloaded by torch); without one the backbone starts from random weights. ``stem``: the
    paper's ``deeplab`` stem (three 3×3 convs) or ``torchvision``'s 7×7 one, which torchvision
    weights need (``reinit_stem: true`` loads them into the other stem, starting it anew).
    ``multi_grid``: dilation multipliers of the last stage's blocks (paper [1, 2, 4]);
    ``dilation_style: torchvision`` keeps a dilated stage's first block at the previous rate, as
    torchvision's ``replace_stride_with_dilation`` does.
    """

    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = "resnet50"
    output_stride: Literal[8, 16] = 16
    backbone_weights: str | None = None
    stem: Literal["deeplab", "torchvision"] = "deeplab"
    multi_grid: list[int] = field(default_factory=lambda: [1, 2, 4])
    dilation_style: Literal["deeplab", "torchvision"] = "deeplab"
    reinit_stem: bool = False
    edge_distances: list[int] = field(default_factory=lambda: [1, 4, 16, 32, 64])
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18])
    aspp_pool_size: list[int] | None = None
    decoder_channels: int = 256
    size_divisibility: int = 32
    sync_bn: bool = False
    aspp_dropout: float = 0.1
    """Dropout on both decoders' ASPP outputs in train mode (the paper's ASPP_DROPOUT)."""


@dataclass
class LossConfig:
    """Per-pixel pretraining losses and the per-pixel weights built into the targets.

    Defaults are the paper's (DESIGN §4). ``semantic_resolution``: ``full`` upsamples the stride-4
    logits to the input resolution for the cross-entropy (the paper), ``stride4`` scores the
    stride-4 samples. ``semantic_thing_weighting``: whether thing pixels weigh ``thing_weight`` in
    the semantic loss too (the paper weighs only small instances there). ``boundary_terms``:
    ``per_map`` is one hard-mined BCE per (distance, direction), each with its own top-k, summed
    (the paper); ``pooled`` mines all edge maps together as one term. ``boundary_weights``:
    ``pixel`` gives an edge the larger of its two end pixels' weights (thing × ``thing_weight``,
    small instance × ``small_instance_weight``, the paper); ``binary`` gives every supervised
    edge weight 1. ``top_k_over``: ``all`` mines the top-k fraction of every position, ignored
    and padded ones included (``k = int(top_k · numel)``, detectron2's DeepLabCE, the paper);
    ``valid`` only of the supervised ones. ``crowd_weight``: semantic weight of crowd pixels,
    which keep their class (1 in the paper; 0 ignores them); crowd regions are never ground-truth
    segments and their edges never supervised. ``small_instance_area_in``: an instance is small
    by its pixel count in the augmented crop (``crop``, the paper) or its annotated area.
    """

    semantic_weight: float = 1.0
    semantic_top_k: float = 0.2
    boundary_weight: float = 0.25
    boundary_top_k: float = 0.25
    thing_weight: float = 4.0
    small_instance_area: int = 4096
    small_instance_weight: float = 3.0
    semantic_resolution: Literal["full", "stride4"] = "full"
    semantic_thing_weighting: bool = False
    boundary_terms: Literal["per_map", "pooled"] = "per_map"
    boundary_weights: Literal["pixel", "binary"] = "pixel"
    top_k_over: Literal["all", "valid"] = "all"
    crowd_weight: float = 1.0
    small_instance_area_in: Literal["crop", "annotation"] = "crop"


@dataclass
class ParamGroupConfig:
    """One learning-rate group: parameters whose name matches a pattern train at ``lr_scale``·lr.

    A pattern is a dotted module or parameter name (``semantic_head.classifier``), optionally with
    ``*`` wildcards (``boundary_head.classifiers.*.2``); it matches the parameter itself and
    everything below it.
    """

    name: str = "group"
    modules: list[str] = field(default_factory=list)
    lr_scale: float = 1.0


@dataclass
class TrainConfig:
    """Optimisation of the pretraining phase.

    ``batch_size`` is the global batch: images per optimizer step summed over all processes and
    accumulation steps, so a recipe means the same training whatever the number of GPUs.
    The defaults are the paper's pretraining: fp32 (``amp`` false), a linear warm-up over 1000
    steps from ``warmup_factor`` 0.001 of the rate (detectron2's WarmupPolyLR; null: ours,
    ``(step + 1) / warmup_iters``), then polynomial decay.
    """

    iterations: int = 50000
    batch_size: int = 12
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9
    warmup_iters: int = 1000
    warmup_factor: float | None = 0.001
    poly_power: float = 0.9
    grad_accum: int = 1
    amp: bool = False
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    compile: bool = False
    channels_last: Literal["auto"] | bool = "auto"
    """Train the network and its input images in channels-last memory (same results to float
    rounding; fine-tuning too); ``auto``: on CUDA only (BENCHMARKS.md, "training")."""
    checkpoint_every: int = 1000
    keep_checkpoints: int = 0
    log_every: int = 20
    val_every: int = 1000
    val_images: int | None = None
    frozen: list[str] = field(default_factory=list)
    """Parameter-name patterns (as in :class:`ParamGroupConfig`) that do not train at all."""
    param_groups: list[ParamGroupConfig] = field(default_factory=list)
    """Learning-rate groups; the first matching group wins, unmatched parameters train at lr."""
    shortest_edges: list[int] | None = None
    """Pretraining sizes (``data.scale: shortest_edge``); null: ``data.shortest_edges``."""


@dataclass
class SolverConfig:
    """AMWC solver backend and the perturbation used to differentiate through it."""

    backend: Literal["auto", "cpu", "cuda"] = "auto"
    local_search: Literal["off", "fast", "full"] | bool = "fast"
    """Local search after the greedy contraction: "off", "fast" (bounded, about 1.5x the greedy
    time at most) or "full" (until nothing improves; slow on noisy costs). YAML reads a bare
    ``off`` as false, so false means "off" (and true "fast"), as in ``solve_amwc``."""
    lambda_min: float = 1.0
    lambda_max: float = 5000.0
    num_samples: int = 5
    backward: Literal["paper", "resolve"] = "paper"
    """Perturbation gradient: ``paper`` (the original: every channel, unmatched ground truths
    included, a multiway-cut label; differences against the forward AMWC solution) or
    ``resolve`` (ours: differences against a re-solved λ = 0 multiway cut, a tie pin for the
    forward segments, worse perturbed solutions rejected, all-zero gradients skipped)."""
    lambda_per: Literal["batch", "image"] = "batch"
    """``batch``: the same λ samples for every image of a batch (the original), ``image``: own
    draws per image; drawn afresh at every step from the run's seeded generator."""


def _paper_frozen() -> list[str]:
    """What the paper's fine-tuning freezes: the backbone and both decoders (ASPP + fusion)."""
    return ["backbone", "semantic_decoder", "boundary_decoder"]


def _paper_param_groups() -> list[ParamGroupConfig]:
    """The paper's fine-tuning rates (LEARNING_RATE_REDUCTION_PER_STAGE 20): each stage further
    from the costs trains 20 times slower; the cost scalars train at the full rate."""
    return [
        ParamGroupConfig("semantic_head", ["semantic_head.convs"], 1 / 40),
        ParamGroupConfig("semantic_predictor", ["semantic_head.classifier"], 1 / 20),
        ParamGroupConfig("boundary_head", ["boundary_head.trunk"], 1 / 60),
        ParamGroupConfig("boundary_predictor_last", ["boundary_head.classifiers.*.2"], 1 / 20),
        ParamGroupConfig("boundary_predictor", ["boundary_head.classifiers"], 1 / 40),
        ParamGroupConfig("costs", ["costs"], 1.0),
    ]


@dataclass
class FinetuneConfig:
    """End-to-end fine-tuning on the smooth panoptic-quality loss (DESIGN §6).

    Defaults are the paper's. ``frozen``/``param_groups`` become the training engine's (see
    :class:`TrainConfig`); empty lists train everything at ``lr`` (``--set finetune.frozen=[]
    --set finetune.param_groups=[]``). ``amp``: bf16/fp16 autocast on CUDA (the paper trains in
    fp32). ``weights``: ``binary`` gives the PQ loss and the solver's gradient weight 0 on void
    and crowd, 1 elsewhere (the paper); ``pixel`` uses the pretraining pixel weights (thing ×4,
    small instances heavier). ``surrogate``: ``paper`` is the original PQ surrogate (batch-pooled
    per class, smoothed by 0.1; :mod:`cops.models.pq_loss`), ``exact`` ours, whose hard limit is
    the exact PQ of each image. ``cost_dropout`` drops edge costs, ``node_dropout`` whole nodes
    (every class cost of a pixel) while training.
    """

    iterations: int = 20000
    batch_size: int = 24
    lr: float = 1e-3
    warmup_iters: int = 500
    pq_weight: float = 10.0
    pixel_loss_weight: float = 0.0
    beta: float = 4.0
    freeze_bn: bool = True
    cost_dropout: float = 0.1
    """Dropout rate on the edge costs fed to the solver during fine-tuning (0 = off)."""
    node_dropout: float = 0.1
    """Dropout rate on whole nodes (all class costs of a pixel set to 0) during fine-tuning."""
    amp: bool = False
    weights: Literal["binary", "pixel"] = "binary"
    surrogate: Literal["paper", "exact"] = "paper"
    min_thing_nodes: int = 3
    """Thing components under this many stride-4 nodes are no segment in the loss, the matching
    or the backward (the original's IGNORE_INSTANCE_SIZE_AMC 12 // 4); 0 keeps every one."""
    stuff_area_factor: float = 4.0
    """The paper surrogate's stuff minimum area is ``eval.stuff_min_area / 4 / factor`` nodes
    (the original's STUFF_AREA_DOWNSAMPLING_FACTOR_TRAIN for training crops: 2048 → 128); things
    use ``eval.thing_min_area / 4`` (200 → 50): the original divides by the stride, not its
    square."""
    frozen: list[str] = field(default_factory=_paper_frozen)
    param_groups: list[ParamGroupConfig] = field(default_factory=_paper_param_groups)
    shortest_edges: list[int] | None = None
    """Fine-tuning's training sizes (COCO: 448…768); null: ``data.shortest_edges``."""


@dataclass
class EvalConfig:
    """Evaluation split and post-processing of the solver's components."""

    split: str = "val"
    batch_size: int = 1
    thing_min_area: int = 200
    stuff_min_area: int = 2048
    test_size: list[int] | None = None
    resize_shortest_edge: list[int] | None = None
    """[shortest, longest]: resize each test image so its shorter side is `shortest` and its
    longer side at most `longest` (the original's ResizeShortestEdge; COCO [640, 640]); null keeps
    the input size. ``test_size`` (one fixed size) takes precedence."""
    semantic: Literal["nodes", "segments"] = "nodes"
    """Where mIoU's semantic map comes from: every node's solver label, before small segments
    are dropped (``nodes``, the original's ``sem_seg``), or the kept segments only (void
    elsewhere)."""
    instance_score: Literal["paper", "contrast"] = "paper"
    """Mask-AP confidence of an instance: the original's (mean semantic logit of its class in the
    mask plus, per distance, mean(logit·cut) − mean(logit·join)) or ours (boundary contrast)."""
    solve_padded: bool = True
    """Solve the whole padded input's grid and measure the minimum areas there, padding included
    (the original's COCO inference; true), or only the image's part of it (ours)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """The CNN's arithmetic at prediction and evaluation: fp32 (a frozen channels-last graph with
    the eager network's outputs) or bf16 autocast where the device runs bf16 natively (faster on
    CPUs with AVX-512 bf16, other costs: BENCHMARKS.md "The CNN on a CPU")."""
    runtime: Literal["frozen", "compile", "eager"] = "frozen"
    """How the CNN runs at prediction and evaluation: a frozen channels-last TorchScript graph,
    ``torch.compile`` (fastest per image; every new input size compiles anew, minutes for
    ResNet-50) or the eager module as trained (cops.models.runtime.InferenceNet)."""


@dataclass
class Recipe:
    """A complete, typed recipe."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON/checkpoint friendly)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The resolved recipe as YAML."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


# ---------------------------------------------------------------------------------------------
# Typed conversion of plain YAML data into the dataclasses above.


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, "null" if tp is type(None) else str(tp)
    )


def _convert(value: Any, tp: Any, key: str, what: str = "recipe") -> Any:
    """Check `value` against the annotation `tp`; return it converted (int -> float, dicts).

    `what` names the kind of file in unknown-key errors ("recipe", "model card")."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key, what)
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, key, what)
            except RecipeError:
                continue
    elif origin is list:
        if isinstance(value, list | tuple):
            (item,) = typing.get_args(tp)
            return [_convert(v, item, f"{key}[{i}]", what) for i, v in enumerate(value)]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads '1e-4' (no dot) as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is not None:
            if not math.isfinite(number):
                raise RecipeError(f"{key}: expected a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    raise RecipeError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _unknown_key(key: str, name: str, known: Sequence[str], what: str) -> RecipeError:
    close = difflib.get_close_matches(name, known, n=1)
    parent = key[: -len(name)]
    hint = f"; did you mean '{parent}{close[0]}'?" if close else f"; known: {', '.join(known)}"
    return RecipeError(f"unknown {what} key '{key}'{hint}")


def _build(cls: type, data: dict[str, Any], prefix: str = "", what: str = "recipe") -> Any:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in names:
            raise _unknown_key(key, str(name), names, what)
        kwargs[name] = _convert(value, hints[name], key, what)
    for f in fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in kwargs:
            raise RecipeError(f"{prefix + '.' if prefix else ''}{f.name}: missing")
    return cls(**kwargs)


def typed_from_dict(cls: type[T], data: Any, what: str) -> T:
    """Plain data (JSON, a checkpoint entry) checked against dataclass `cls`'s type hints, key by
    key, as recipes are; a RecipeError names the dotted key (`what`: the kind of file)."""
    if not isinstance(data, dict):
        raise RecipeError(f"a {what} must be a mapping, got {type(data).__name__}")
    return _build(cls, data, "", what)


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Validate a plain nested dict (e.g. from a checkpoint) into a `Recipe`."""
    return _build(Recipe, data)


# ---------------------------------------------------------------------------------------------
# Loading: built-in names, paths, inheritance and overrides.


def builtin_recipes() -> list[str]:
    """Names of the recipes shipped with the package."""
    files = resources.files("cops.recipes").iterdir()
    return sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key given twice in one mapping (plain YAML keeps the
    last silently, so a recipe could set a value the user does not see taking effect)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (line and column, 1-based)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{exc.problem}{where}"
    return " ".join(str(exc).split())


def _read_yaml(name_or_path: str, relative_to: Path | None) -> tuple[dict[str, Any], Path | None]:
    """Return (data, folder for relative `_base_` paths); built-ins are tried for bare names."""
    path = Path(name_or_path).expanduser()
    if relative_to is not None and not path.is_absolute():
        path = relative_to / path
    if path.is_file():
        try:
            text, folder, label = path.read_text(encoding="utf-8"), path.parent, str(path)
        except UnicodeDecodeError as exc:
            raise RecipeError(
                f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
            ) from exc
    else:
        builtin = resources.files("cops.recipes") / f"{name_or_path}.yaml"
        if not builtin.is_file():
            close = difflib.get_close_matches(name_or_path, builtin_recipes(), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise RecipeError(
                f"recipe '{name_or_path}' is neither a file nor a built-in recipe "
                f"({', '.join(builtin_recipes())}){hint}"
            )
        text, folder, label = (
            builtin.read_text(encoding="utf-8"),
            None,
            f"built-in '{name_or_path}'",
        )
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise RecipeError(f"{label}: invalid YAML ({yaml_problem(exc)})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(
            f"{label}: a recipe must be a mapping of sections, got {type(data).__name__}"
        )
    return data, folder


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `top` over `base` (mappings merge key by key; everything else replaces)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve(name_or_path: str, relative_to: Path | None, chain: tuple[str, ...]) -> dict[str, Any]:
    if name_or_path in chain:
        raise RecipeError(f"recipe inheritance loops: {' -> '.join((*chain, name_or_path))}")
    data, folder = _read_yaml(name_or_path, relative_to)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(
            f"{name_or_path}: {BASE_KEY} must be a recipe name/path or a list of them"
        )
    merged: dict[str, Any] = {}
    for base in bases:
        merged = _merge(merged, _resolve(base, folder, (*chain, name_or_path)))
    return _merge(merged, data)


def _apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` override; the value is parsed as YAML, typed later."""
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set '{override}': expected key=value, e.g. model.backbone=resnet18")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise RecipeError(
            f"--set '{override}': value is not valid YAML ({yaml_problem(exc)})"
        ) from exc
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"--set '{override}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def recipe_with_overrides(data: dict[str, Any], overrides: Sequence[str] = ()) -> Recipe:
    """Validate a plain recipe dict after applying ``key=value`` overrides (input not modified).

    Used for recipes stored in checkpoints, which `--set` can amend on `--resume`.
    """
    data = copy.deepcopy(data)
    for override in overrides:
        _apply_override(data, override)
    recipe = recipe_from_dict(data)
    _check_values(recipe)
    return recipe


def load_recipe(name_or_path: str, overrides: Sequence[str] = ()) -> Recipe:
    """Load a recipe by built-in name or path, apply `_base_` inheritance and `--set` overrides."""
    return recipe_with_overrides(_resolve(name_or_path, None, ()), overrides)


def recipe_name(name_or_path: str) -> str:
    """Short name of a recipe: the built-in name, or a file's stem (``runs/<name>`` defaults)."""
    return Path(name_or_path).name.removesuffix(".yaml").removesuffix(".yml")


def _data_model_checks(recipe: Recipe) -> list[tuple[bool, str, str]]:
    """(holds, key, what is expected) for the seed, data and model sections."""
    return [
        (0 <= recipe.seed <= MAX_SEED, "seed", "a non-negative integer (at most 2**63 - 1)"),
        (
            len(recipe.data.crop_size) == 2 and min(recipe.data.crop_size) > 0,
            "data.crop_size",
            "two positive integers [height, width]",
        ),
        (
            len(recipe.data.scale_range) == 2
            and 0 < recipe.data.scale_range[0] <= recipe.data.scale_range[1],
            "data.scale_range",
            "[min, max] with 0 < min <= max",
        ),
        (
            len(recipe.model.edge_distances) > 0
            and min(recipe.model.edge_distances) > 0
            and len(set(recipe.model.edge_distances)) == len(recipe.model.edge_distances),
            "model.edge_distances",
            "a non-empty list of distinct positive integers "
            f"(got {recipe.model.edge_distances}; each distance is one set of boundary maps)",
        ),
        (
            len(recipe.model.multi_grid) > 0 and min(recipe.model.multi_grid) > 0,
            "model.multi_grid",
            "a non-empty list of positive integers, e.g. [1, 2, 4]",
        ),
        (
            recipe.model.aspp_pool_size is None
            or (len(recipe.model.aspp_pool_size) == 2 and min(recipe.model.aspp_pool_size) > 0),
            "model.aspp_pool_size",
            "[h, w] of positive integers, or null (global pooling)",
        ),
        (
            recipe.model.decoder_channels >= 8 and recipe.model.decoder_channels % 8 == 0,
            "model.decoder_channels",
            "a positive multiple of 8",
        ),
        (
            recipe.model.size_divisibility > 0 and recipe.model.size_divisibility % 4 == 0,
            "model.size_divisibility",
            "a positive multiple of 4 (the stride of the cost maps)",
        ),
    ]


def _training_checks(recipe: Recipe) -> list[tuple[bool, str, str]]:
    """(holds, key, what is expected) for the loss and train sections."""
    return [
        (0 < recipe.loss.semantic_top_k <= 1, "loss.semantic_top_k", "a fraction in (0, 1]"),
        (0 < recipe.loss.boundary_top_k <= 1, "loss.boundary_top_k", "a fraction in (0, 1]"),
        (recipe.train.iterations > 0, "train.iterations", "a positive integer"),
        (recipe.train.batch_size > 0, "train.batch_size", "a positive integer"),
        (recipe.train.lr > 0, "train.lr", "a positive number"),
        (recipe.train.grad_accum > 0, "train.grad_accum", "a positive integer"),
        (recipe.train.checkpoint_every > 0, "train.checkpoint_every", "a positive integer"),
        (recipe.train.keep_checkpoints >= 0, "train.keep_checkpoints", "a non-negative integer"),
        (recipe.train.log_every > 0, "train.log_every", "a positive integer"),
        (recipe.train.val_every >= 0, "train.val_every", "a non-negative integer (0: never)"),
        (
            recipe.train.val_images is None or recipe.train.val_images > 0,
            "train.val_images",
            "a positive integer or null (all)",
        ),
        (recipe.train.warmup_iters >= 0, "train.warmup_iters", "a non-negative integer"),
        (recipe.train.poly_power >= 0, "train.poly_power", "a non-negative number"),
        (recipe.train.weight_decay >= 0, "train.weight_decay", "a non-negative number"),
        (0 <= recipe.train.momentum < 1, "train.momentum", "a number in [0, 1)"),
    ]


def _solver_finetune_checks(recipe: Recipe) -> list[tuple[bool, str, str]]:
    """(holds, key, what is expected) for the solver, finetune, data loading and eval sections."""
    return [
        (
            0 < recipe.solver.lambda_min <= recipe.solver.lambda_max,
            "solver.lambda_min/lambda_max",
            "0 < lambda_min <= lambda_max",
        ),
        (recipe.solver.num_samples > 0, "solver.num_samples", "a positive integer"),
        (
            recipe.solver.local_search in ("off", "fast", "full", True, False),
            "solver.local_search",
            "one of off, fast, full (or true/false)",
        ),
        (recipe.finetune.iterations > 0, "finetune.iterations", "a positive integer"),
        (recipe.finetune.batch_size > 0, "finetune.batch_size", "a positive integer"),
        (recipe.finetune.lr > 0, "finetune.lr", "a positive number"),
        (recipe.finetune.beta > 0, "finetune.beta", "a positive number"),
        (0 <= recipe.finetune.cost_dropout < 1, "finetune.cost_dropout", "a number in [0, 1)"),
        (0 <= recipe.finetune.node_dropout < 1, "finetune.node_dropout", "a number in [0, 1)"),
        (
            all(g.lr_scale > 0 for g in recipe.train.param_groups + recipe.finetune.param_groups),
            "train/finetune.param_groups[].lr_scale",
            "positive numbers",
        ),
        (
            recipe.finetune.pq_weight >= 0 and recipe.finetune.pixel_loss_weight >= 0,
            "finetune.pq_weight/pixel_loss_weight",
            "non-negative numbers",
        ),
        (recipe.data.num_workers >= 0, "data.num_workers", "a non-negative integer"),
        (
            recipe.eval.resize_shortest_edge is None
            or (
                len(recipe.eval.resize_shortest_edge) == 2
                and 0 < recipe.eval.resize_shortest_edge[0] <= recipe.eval.resize_shortest_edge[1]
            ),
            "eval.resize_shortest_edge",
            "[shortest, longest] with 0 < shortest <= longest, or null",
        ),
    ]


def _check_values(recipe: Recipe) -> None:
    """Range checks that types alone cannot express, section by section."""
    checks = _data_model_checks(recipe) + _training_checks(recipe)
    for ok, key, expected in checks + _solver_finetune_checks(recipe):
        if not ok:
            raise RecipeError(f"{key}: expected {expected}")
    _check_distances_fit_crop(recipe)
    _check_training_data(recipe)
    _check_param_groups(recipe)


def _check_param_groups(recipe: Recipe) -> None:
    """Every learning-rate group names at least one module: an empty one would hold no
    parameter and vanish silently from the optimizer."""
    for section in ("train", "finetune"):
        for i, group in enumerate(getattr(recipe, section).param_groups):
            if not group.modules:
                raise RecipeError(
                    f"{section}.param_groups[{i}].modules: expected a non-empty list of module "
                    f"names (group '{group.name}' has none, so it would hold no parameter)"
                )


def _check_training_data(recipe: Recipe) -> None:
    """Scale-augmentation sizes and the crowd weight (the paper's data rules, issue 17)."""
    sizes = [
        ("data.shortest_edges", recipe.data.shortest_edges),
        ("train.shortest_edges", recipe.train.shortest_edges),
        ("finetune.shortest_edges", recipe.finetune.shortest_edges),
    ]
    for key, value in sizes:
        if value is not None and (not value or min(value) < 1):
            raise RecipeError(f"{key}: expected a non-empty list of positive sizes, got {value}")
    factor = recipe.train.warmup_factor
    if factor is not None and not 0 < factor <= 1:
        raise RecipeError(f"train.warmup_factor: expected a number in (0, 1] or null, got {factor}")
    if not 0 <= recipe.model.aspp_dropout < 1:
        raise RecipeError(
            f"model.aspp_dropout: expected a number in [0, 1), got {recipe.model.aspp_dropout}"
        )
    if recipe.data.max_size < 1:
        raise RecipeError(f"data.max_size: expected a positive size, got {recipe.data.max_size}")
    if recipe.loss.crowd_weight < 0:
        raise RecipeError(
            f"loss.crowd_weight: expected a number >= 0, got {recipe.loss.crowd_weight}"
        )


def _check_distances_fit_crop(recipe: Recipe) -> None:
    """Every edge distance must be shorter than the training crop's stride-4 map on both sides.

    The boundary head sees the feature difference between an edge's two ends; at a distance as
    long as the crop's map, every such difference is zero padding in training, so that branch
    learns nothing and its BatchNorm statistics (variance ~0) blow its outputs up at test time.
    """
    rows, cols = (-(-side // 4) for side in recipe.data.crop_size)
    too_long = [d for d in recipe.model.edge_distances if d >= min(rows, cols)]
    if too_long:
        crop = "×".join(str(s) for s in recipe.data.crop_size)
        raise RecipeError(
            f"model.edge_distances: {too_long[0]} does not fit the training crop {crop} (a "
            f"{rows}×{cols} stride-4 map): every distance must be below {min(rows, cols)}, or "
            "the boundary head learns nothing for it and misbehaves at test time; use a larger "
            "data.crop_size or shorter distances"
        )
