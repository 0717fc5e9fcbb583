"""Recipe schema: built-ins, inheritance, overrides and error messages."""

from pathlib import Path

import pytest

from cops.errors import RecipeError
from cops.recipes.schema import (
    Recipe,
    builtin_recipes,
    load_recipe,
    recipe_from_dict,
    recipe_with_overrides,
)


def test_builtin_recipes_all_load():
    names = builtin_recipes()
    assert {"synthetic-tiny", "synthetic", "cityscapes-r50", "coco-r50"} <= set(names)
    for name in names:
        assert isinstance(load_recipe(name), Recipe)


def test_paper_values_in_cityscapes_recipe():
    r = load_recipe("cityscapes-r50")
    assert r.model.backbone == "resnet50"
    assert r.model.edge_distances == [1, 4, 16, 32, 64]
    assert r.data.crop_size == [512, 1024]
    assert (r.train.lr, r.train.iterations, r.train.batch_size) == (1e-4, 50000, 12)
    assert r.loss.boundary_weight == 0.25 and r.loss.thing_weight == 4.0
    assert (r.finetune.lr, r.finetune.iterations, r.finetune.batch_size) == (1e-3, 20000, 24)
    assert r.finetune.pq_weight == 10.0 and r.finetune.pixel_loss_weight == 0.0
    assert (r.solver.lambda_min, r.solver.lambda_max, r.solver.num_samples) == (1.0, 5000.0, 5)


def test_base_inheritance_merges_sections():
    coco = load_recipe("coco-r50")
    assert coco.model.edge_distances == [1, 4, 16, 32]  # overridden
    assert coco.train.lr == 1e-4  # inherited from cityscapes-r50
    tiny = load_recipe("synthetic-tiny")
    assert tiny.model.backbone == "resnet18" and tiny.data.synthetic.preset == "tiny"


def test_user_recipe_with_relative_base(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("model:\n  backbone: resnet34\ntrain:\n  lr: 0.01\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\ntrain:\n  iterations: 7\n")
    r = load_recipe(str(tmp_path / "child.yaml"))
    assert (r.model.backbone, r.train.lr, r.train.iterations) == ("resnet34", 0.01, 7)


def test_inheritance_loop_is_reported(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(RecipeError, match="loops"):
        load_recipe(str(tmp_path / "a.yaml"))


def test_overrides_are_typed_by_schema():
    r = load_recipe(
        "synthetic-tiny",
        [
            "model.backbone=resnet50",
            "solver.lambda_max=5000",
            "train.lr=1e-4",
            "data.crop_size=[48, 96]",
            "eval.test_size=null",
            "seed=3",
        ],
    )
    assert r.model.backbone == "resnet50"
    assert r.solver.lambda_max == 5000.0 and isinstance(r.solver.lambda_max, float)
    assert r.train.lr == pytest.approx(1e-4)
    assert r.data.crop_size == [48, 96] and r.eval.test_size is None and r.seed == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.backbon=resnet18", "did you mean 'model.backbone'"),
        ("trian.lr=1", "did you mean 'train'"),
        ("train.lr=fast", "train.lr: expected a number"),
        ("train.iterations=1.5", "train.iterations: expected an integer"),
        ("model.backbone=resnet19", "model.backbone: expected one of"),
        ("data.crop_size=[1, x]", r"data.crop_size\[1\]: expected an integer"),
        ("model.sync_bn=3", "model.sync_bn: expected true/false"),
        ("data.crop_size=[0, 5]", "data.crop_size: expected two positive"),
        ("nokey", "expected key=value"),
        ("model.backbone.depth=3", "'backbone' is not a section"),
        ("train.amp_dtype=fp8", "train.amp_dtype: expected one of 'bfloat16', 'float16'"),
        ("train.keep_checkpoints=-1", "train.keep_checkpoints: expected a non-negative"),
        ("train.val_images=0", "train.val_images: expected a positive integer or null"),
        ("train.val_every=-5", "train.val_every: expected a non-negative integer"),
        ("train.log_every=0", "train.log_every: expected a positive integer"),
        ("train.warmup_iters=-1", "train.warmup_iters: expected a non-negative integer"),
        ("train.momentum=1.0", r"train.momentum: expected a number in \[0, 1\)"),
        ("train.optimizer=lamb", "train.optimizer: expected one of 'adam', 'sgd'"),
        ("train.channels_last=cuda", "train.channels_last: expected one of 'auto' or true/false"),
        ("seed=-1", "seed: expected a non-negative integer"),
    ],
)
def test_bad_overrides_name_the_key(override: str, message: str):
    with pytest.raises(RecipeError, match=message):
        load_recipe("synthetic", [override])


def test_unknown_key_in_file_names_dotted_key(tmp_path: Path):
    path = tmp_path / "r.yaml"
    path.write_text("_base_: synthetic\nloss:\n  boundary_topk: 0.3\n")
    with pytest.raises(
        RecipeError, match="'loss.boundary_topk'; did you mean 'loss.boundary_top_k'"
    ):
        load_recipe(str(path))


def test_unknown_recipe_name_suggests_builtin():
    with pytest.raises(RecipeError, match="did you mean 'synthetic'"):
        load_recipe("synthetc")


def test_malformed_yaml_names_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="bad.yaml: invalid YAML"):
        load_recipe(str(path))


def test_recipe_with_overrides_leaves_its_input_alone():
    stored = load_recipe("synthetic-tiny").to_dict()
    resumed = recipe_with_overrides(stored, ["train.iterations=40"])
    assert resumed.train.iterations == 40 and stored["train"]["iterations"] == 20
    with pytest.raises(RecipeError, match="did you mean 'train.iterations'"):
        recipe_with_overrides(stored, ["train.iteration=40"])


def test_round_trip_through_dict():
    r = load_recipe("coco-r50", ["seed=5"])
    assert recipe_from_dict(r.to_dict()) == r


def test_edge_distances_must_fit_the_training_crop():
    """At a distance as long as the crop's stride-4 map the boundary head trains on padding only."""
    with pytest.raises(RecipeError, match=r"model.edge_distances: 32 does not fit .* 128×256"):
        load_recipe("synthetic", ["model.edge_distances=[1,4,16,32]"])
    recipe = load_recipe(
        "synthetic", ["model.edge_distances=[1,4,16,32]", "data.crop_size=[192,256]"]
    )
    assert recipe.model.edge_distances == [1, 4, 16, 32]
