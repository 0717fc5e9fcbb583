"""The pretrain → finetune-pq study on synthetic data (issue 6): several seeds, PQ before/after.

For each seed: ``cops pretrain``, then ``cops finetune-pq`` from its last checkpoint (keeping a
checkpoint every ``--eval-every`` iterations), then ``cops evaluate`` on the validation split for
the pretrained model and every kept fine-tuning checkpoint. The same-budget control continues the
pretraining instead, for as many iterations with the fine-tuning learning rate and warm-up, so
that "fine-tuning helps" is measured against "more training helps". Prints a mean ± std table,
writes ``OUT/study.json`` and a plot of PQ against fine-tuning iterations
(``OUT/pq_vs_iterations.png``). Every step is a plain CLI call, printed before it runs, so the
study can be redone by hand.

    python scripts/finetune_study.py --seeds 0 1 2 --out runs/study

``--variants`` fine-tunes the same pretrained model several ways (issue 12: the paper's
fine-tuning against ours): ``recipe`` is the recipe as it is (folder ``finetune``), every other
name one of :data:`VARIANTS` (folder ``finetune-NAME``), each a list of ``--set`` overrides on
top of the recipe. ``--no-control`` skips the same-budget control.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from cops.recipes.schema import FinetuneConfig, SolverConfig, load_recipe

KEYS = ("pq", "pq_th", "pq_st", "miou", "ap")


def _paper_finetune_sets(pixel_loss_weight: float) -> list[str]:
    """``--set`` overrides giving a recipe the paper's fine-tuning (the schema's defaults), at the
    paper's base lr 1e-3, on the recipe's schedule and data, with the paper's backward pass."""
    paper = FinetuneConfig()  # JSON is YAML: each value reads back as --set parses it
    keys = ("lr", "weights", "surrogate", "node_dropout", "cost_dropout", "amp", "frozen")
    keys += ("min_thing_nodes", "stuff_area_factor")
    sets = [f"finetune.{key}={json.dumps(getattr(paper, key))}" for key in keys]
    solver = SolverConfig()
    sets += [
        f"solver.{key}={json.dumps(getattr(solver, key))}" for key in ("backward", "lambda_per")
    ]
    groups = json.dumps([dataclasses.asdict(g) for g in paper.param_groups])
    return [
        *sets,
        f"finetune.param_groups={groups}",
        f"finetune.pixel_loss_weight={pixel_loss_weight}",
    ]


VARIANTS: dict[str, list[str]] = {
    "paper": _paper_finetune_sets(0.0),
    "paper-pixel": _paper_finetune_sets(1.0),
    "paper-resolve": [
        *_paper_finetune_sets(0.0),
        'solver.backward="resolve"',
        'solver.lambda_per="image"',
    ],
    "paper-surrogate": ["finetune.surrogate=paper", "finetune.weights=binary"],
    "paper-trainable": [
        s
        for s in _paper_finetune_sets(1.0)
        if s.startswith(("finetune.lr=", "finetune.frozen=", "finetune.param_groups="))
    ],
}
"""Fine-tuning variants: ``paper`` is the original's fine-tuning exactly (PQ loss alone),
``paper-pixel`` the same with the per-pixel losses at weight 1 beside it, ``paper-resolve`` the
same with our backward pass (a re-solved λ = 0 reference, λ per image); ``paper-surrogate``
and ``paper-trainable`` change one row of issue 12 each (the surrogate with its 0/1 weights;
what trains at which rate) on top of the recipe."""


def run(args: list[str]) -> None:
    """Run one cops command, echoing it; stop the study when it fails."""
    print("$", shlex.join(["cops", *args]), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run([sys.executable, "-m", "cops.cli", "-q", *args], check=True, env=env)


def evaluate(checkpoint: Path, out: Path, extra: list[str]) -> dict[str, float | None]:
    """`cops evaluate` a checkpoint (reusing an earlier result) and pick the study's numbers."""
    metrics_path = out / "metrics.json"
    if not metrics_path.is_file():
        run(["evaluate", "--checkpoint", str(checkpoint), "--out", str(out), *extra])
    metrics = json.loads(metrics_path.read_text())
    panoptic = metrics["panoptic"]
    return {
        "pq": panoptic["all"]["pq"],
        "pq_th": panoptic["things"]["pq"],
        "pq_st": panoptic["stuff"]["pq"],
        "miou": metrics["miou"],
        "ap": metrics["ap"],
    }


def seed_study(seed: int, args: argparse.Namespace) -> dict[str, object]:
    """Pretrain, fine-tune (each variant) and evaluate one seed: metrics and PQ curves."""
    root = args.out / f"seed{seed}"
    pre = root / "pretrain"
    sets = [item for pair in args.set for item in ("--set", pair)]
    if not (pre / "last.pt").is_file():
        run(["pretrain", "--recipe", args.recipe, "--seed", str(seed), "--out", str(pre), *sets])
    extra = ["--device", "cpu"] if args.cpu else []
    before = evaluate(pre / "last.pt", root / "eval-pretrain", extra)
    result: dict[str, object] = {"seed": seed, "before": before}
    for variant in args.variants:
        suffix = "" if variant == "recipe" else f"-{variant}"
        ft = root / f"finetune{suffix}"
        variant_sets = [x for v in VARIANTS.get(variant, []) for x in ("--set", v)]
        if not (ft / "last.pt").is_file():
            run(
                [
                    "finetune-pq", "--recipe", args.recipe, "--seed", str(seed),
                    "--weights", str(pre / "last.pt"), "--out", str(ft), *sets, *variant_sets,
                    "--set", f"train.checkpoint_every={args.eval_every}",
                    "--set", "train.keep_checkpoints=1000",
                    "--set", f"finetune.iterations={args.iterations}",
                ]
            )  # fmt: skip
        curve = [(0, before["pq"])]
        after = before
        for ckpt in sorted(ft.glob("ckpt_*.pt")):
            iteration = int(ckpt.stem.split("_")[1])
            after = evaluate(ckpt, root / f"eval-ft{suffix}-{iteration:07d}", extra)
            curve.append((iteration, after["pq"]))
        result[f"after{suffix}"] = after
        result[f"curve{suffix}"] = curve
    if args.control:
        more = root / "pretrain-more"
        if not (more / "last.pt").is_file():
            ft_cfg = load_recipe(args.recipe, args.set).finetune
            run(
                [
                    "pretrain", "--recipe", args.recipe, "--seed", str(seed),
                    "--weights", str(pre / "last.pt"), "--out", str(more), *sets,
                    "--set", f"train.iterations={args.iterations}",
                    "--set", f"train.lr={ft_cfg.lr}",
                    "--set", f"train.warmup_iters={ft_cfg.warmup_iters}",
                ]
            )  # fmt: skip
        result["control"] = evaluate(more / "last.pt", root / "eval-pretrain-more", extra)
    return result


def mean_std(values: list[float | None]) -> str:
    """``mean ± std`` of the defined values (std over seeds, sample)."""
    clean = [v for v in values if v is not None]
    if not clean:
        return "–"
    std = statistics.stdev(clean) if len(clean) > 1 else 0.0
    return f"{statistics.mean(clean):.1f} ± {std:.1f}"


def plot(results: list[dict[str, object]], path: Path) -> None:
    """PQ on the validation split against fine-tuning iterations, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for result in results:
        if "curve" not in result:
            continue
        its, pqs = zip(*result["curve"], strict=True)
        ax.plot(its, pqs, marker="o", label=f"seed {result['seed']}")
    ax.set_xlabel("fine-tuning iteration (0 = pretrained)")
    ax.set_ylabel("PQ on val (%)")
    ax.set_title("cops finetune-pq on synthetic data")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="synthetic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=200, help="fine-tuning iterations")
    parser.add_argument("--eval-every", type=int, default=50, help="evaluate every N iterations")
    parser.add_argument("--set", action="append", default=[], help="recipe override (every run)")
    parser.add_argument("--cpu", action="store_true", help="evaluate on the CPU")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["recipe"],
        choices=["recipe", *VARIANTS],
        help="fine-tuning variants, all from the same pretrained model (module doc)",
    )
    parser.add_argument(
        "--no-control", dest="control", action="store_false", help="skip the control run"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    args = parser.parse_args()
    results = [seed_study(seed, args) for seed in args.seeds]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "study.json").write_text(json.dumps(results, indent=2))
    if "recipe" in args.variants:
        plot(results, args.out / "pq_vs_iterations.png")
    print(f"\n| model | {' | '.join(KEYS)} |\n|---|{'---|' * len(KEYS)}")
    labels = {"before": "pretrained"}
    for variant in args.variants:
        key = "after" if variant == "recipe" else f"after-{variant}"
        labels[key] = f"fine-tuned through the solver ({variant})"
    if args.control:
        labels["control"] = "control: pretrained + as many more pretraining steps"
    for stage, label in labels.items():
        cells = [mean_std([r[stage][k] for r in results]) for k in KEYS]
        print(f"| {label} | {' | '.join(cells)} |")
    for r in results:
        trio = " / ".join(f"{r[stage]['pq']:.1f}" for stage in labels)
        print(f"seed {r['seed']}: PQ {' / '.join(labels.values())} = {trio}")


if __name__ == "__main__":
    main()
