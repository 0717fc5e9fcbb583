"""`cops evaluate --report`: one self-contained HTML page to look at an evaluation.

``OUT/report.html`` embeds every picture as a data URI and uses no network, so it opens from disk
in any browser and can be mailed as one file. It shows the headline metrics with the run's
provenance and seconds per image, per-class PQ/SQ/RQ (a chart and a sortable table with TP, FP,
FN), PQ by COCO segment-size range, the classes overlapping segments were confused with, the
lowest-PQ images (image | ground truth | prediction | boundary probability, misses and false
positives outlined) and, when the checkpoint's run folder has ``metrics.jsonl``, the training
curve. Every number shown is one of ``metrics.json``'s, carried exactly in a ``data-value``
attribute beside its rounded text (which is what the tests compare).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cops.evaluation import report_plots
from cops.evaluation.report_data import ReportCollector, WorstImage
from cops.evaluation.report_panels import FN_COLOUR, FP_COLOUR
from cops.files import atomic_write_text

REPORT_NAME = "report.html"
_PICTURES = (
    ("image", "image"),
    ("truth", "ground truth (missed: outlined)"),
    ("prediction", "prediction (false positives: outlined)"),
    ("boundary", "predicted boundary probability (0 black … 1 yellow)"),
)
_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232b;
background:#f4f6f8}main{max-width:1380px;margin:0 auto;padding:18px 28px 40px}
h1{font-size:24px;margin:6px 0 2px}h2{font-size:18px;margin:30px 0 10px;border-bottom:2px solid
#d8dee5;padding-bottom:4px}.sub{color:#5b6672;margin:0 0 14px}
section,.card{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:14px 18px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}.card{min-width:120px;text-align:center}
.card .v{font-size:28px;font-weight:600;color:#2a5da8}.card .k{color:#5b6672;font-size:12px;
text-transform:uppercase;letter-spacing:.05em}.row{display:flex;gap:22px;flex-wrap:wrap;
align-items:flex-start}table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #e5e9ee;text-align:right}th{background:#eef2f6;
position:sticky;top:0}td.l,th.l{text-align:left}table.sortable th{cursor:pointer;user-select:none}
table.sortable th:hover{background:#dde6f0}img.plot{max-width:100%;height:auto}
.worst{margin:14px 0 22px}.worst h3{font-size:15px;margin:0 0 6px}.pics{display:grid;
grid-template-columns:repeat(4,1fr);gap:6px}.pics figure{margin:0}.pics img{width:100%;
display:block;border-radius:3px}.pics figcaption{font-size:12px;color:#5b6672}
.key{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px}
.none{color:#8a949e}
"""
_SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], up = th.dataset.dir !== 'up';
    th.dataset.dir = up ? 'up' : 'down';
    var key = function (row) {
      var cell = row.cells[col], v = cell.dataset.value;
      return v === undefined ? cell.textContent : (v === '' ? -Infinity : parseFloat(v));
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
    }).forEach(function (row) { body.appendChild(row); });
  });
});
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _value(value: Any, metric: Sequence[str] | None, spec: str) -> tuple[str, str]:
    """Attributes and text of a shown number: the rounded value as text, the exact one in
    ``data-value`` and its key path in ``metrics.json`` in ``data-metric``."""
    where = "" if metric is None else f' data-metric="{_esc(json.dumps(list(metric)))}"'
    if value is None:
        return f' data-value=""{where} class="none"', "–"
    text = format(value, spec) if isinstance(value, float) else str(value)
    return f' data-value="{_esc(repr(value))}"{where}', text


def _num(value: Any, metric: Sequence[str] | None = None, spec: str = ".1f") -> str:
    """A table cell holding a number (see :func:`_value`)."""
    attrs, text = _value(value, metric, spec)
    return f"<td{attrs}>{text}</td>"


def _image(data: bytes, mime: str, alt: str, css: str = "plot") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img class="{css}" alt="{_esc(alt)}" src="data:{mime};base64,{encoded}">'


def _table(head: Sequence[str], rows: Sequence[str], sortable: bool = False) -> str:
    cells = "".join(
        f'<th class="l">{_esc(h)}</th>' if i == 0 else f"<th>{_esc(h)}</th>"
        for i, h in enumerate(head)
    )
    css = ' class="sortable"' if sortable else ""
    body = "".join(f"<tr>{row}</tr>" for row in rows)
    return f"<table{css}><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _headline(metrics: Mapping[str, Any], provenance: Mapping[str, Any]) -> str:
    """Cards for PQ / mIoU / AP, the all-things-stuff table, provenance and timings."""
    panoptic = metrics["panoptic"]
    cards = [
        ("PQ", panoptic["all"]["pq"], ["panoptic", "all", "pq"]),
        ("PQ things", panoptic["things"]["pq"], ["panoptic", "things", "pq"]),
        ("PQ stuff", panoptic["stuff"]["pq"], ["panoptic", "stuff", "pq"]),
        ("mIoU", metrics.get("miou"), ["miou"]),
        ("mask AP", metrics.get("ap"), ["ap"]),
    ]
    card_html = "".join(
        '<div class="card"><div class="v"{}>{}</div>'.format(*_value(v, path, ".1f"))
        + f'<div class="k">{_esc(k)}</div></div>'
        for k, v, path in cards
    )
    rows = [
        f'<td class="l">{group}</td>'
        + "".join(
            _num(panoptic[group][key], ["panoptic", group, key]) for key in ("pq", "sq", "rq")
        )
        + _num(panoptic[group]["n"], ["panoptic", group, "n"])
        for group in ("all", "things", "stuff")
    ]
    rows.append('<td class="l">mIoU</td>' + _num(metrics.get("miou"), ["miou"]) + "<td></td>" * 3)
    for key, label in (("ap", "mask AP"), ("ap50", "AP50"), ("ap75", "AP75")):
        rows.append(f'<td class="l">{label}</td>' + _num(metrics.get(key), [key]) + "<td></td>" * 3)
    seconds = metrics.get("seconds_per_image", {})
    facts = [(k, v) for k, v in provenance.items() if v not in (None, "")]
    fact_rows = [f'<td class="l">{_esc(k)}</td><td class="l">{_esc(v)}</td>' for k, v in facts]
    time_rows = [
        f'<td class="l">{_esc(stage)}</td>' + _num(value, ["seconds_per_image", stage], ".3f")
        for stage, value in seconds.items()
    ]
    time_rows.append(
        f'<td class="l">total</td><td data-value="{sum(seconds.values())!r}">'
        f"{sum(seconds.values()):.3f}</td>"
    )
    return (
        f'<div class="cards">{card_html}</div><div class="row"><section>'
        f"{_table(['', 'PQ', 'SQ', 'RQ', '#classes'], rows)}</section>"
        f"<section>{_table(['run', ''], fact_rows)}</section>"
        f"<section>{_table(['seconds per image', ''], time_rows)}</section></div>"
    )


def _per_class(metrics: Mapping[str, Any], isthing: Mapping[str, bool]) -> str:
    """The per-class bar chart and a sortable table (PQ, SQ, RQ, TP, FP, FN, IoU, AP)."""
    per_class = metrics["panoptic"]["per_class"]
    ious = metrics.get("iou_per_class") or {}
    aps = metrics.get("ap_per_class") or {}
    rows = []
    for name, row in per_class.items():
        base = ["panoptic", "per_class", name]
        cells = "".join(_num(row.get(k), [*base, k]) for k in ("pq", "sq", "rq", "tp", "fp", "fn"))
        iou = _num(ious.get(name), ["iou_per_class", name])
        ap = _num(aps.get(name), ["ap_per_class", name]) if name in aps else _num(None)
        kind = "thing" if isthing.get(name) else "stuff"
        rows.append(f'<td class="l">{_esc(name)}</td><td class="l">{kind}</td>{cells}{iou}{ap}')
    head = ["class", "kind", "PQ", "SQ", "RQ", "TP", "FP", "FN", "IoU", "AP"]
    chart = report_plots.per_class_bars(per_class)
    plot = _image(chart, "image/png", "per-class PQ, SQ, RQ") if chart else ""
    return (
        f'<h2>Per class</h2><div class="row"><section>{plot}</section><section>'
        f'<p class="sub">Click a column to sort.</p>{_table(head, rows, sortable=True)}'
        "</section></div>"
    )


def _by_size(by_size: Mapping[str, Any]) -> str:
    """PQ per COCO size range, as a chart and a table."""
    rows = []
    for name, rng in by_size.items():
        base = ["panoptic_by_size", name]
        low, high = rng["area"]
        cells = "".join(_num(rng["all"][k], [*base, "all", k]) for k in ("pq", "sq", "rq", "n"))
        cells += _num(rng["things"]["pq"], [*base, "things", "pq"])
        cells += _num(rng["stuff"]["pq"], [*base, "stuff", "pq"])
        rows.append(f'<td class="l">{name}</td><td>{low} – {high or "∞"}</td>{cells}')
    head = ["size", "area (px)", "PQ", "SQ", "RQ", "#classes", "PQ things", "PQ stuff"]
    plot = _image(report_plots.size_bars(by_size), "image/png", "PQ by segment size")
    note = (
        "COCO's area ranges at the evaluation resolution; a match or a miss counts in its "
        "ground-truth segment's range, a false positive in its own."
    )
    return (
        f'<h2>PQ by segment size</h2><p class="sub">{note}</p><div class="row">'
        f"<section>{plot}</section><section>{_table(head, rows)}</section></div>"
    )


def _confusion(confusion: Mapping[str, Any]) -> str:
    """The confused class pairs: a heat map and the most frequent pairs."""
    pairs = confusion["pairs"]
    note = (
        "Ground-truth segments that a prediction overlaps with IoU &gt; 0.5 but with another "
        "class (each is a false negative and a false positive in PQ)."
    )
    if not pairs:
        return f'<h2>Class confusion</h2><p class="sub">{note} None in this split.</p>'
    rows = []
    for i, pair in enumerate(pairs[:20]):
        path = ["class_confusion", "pairs", str(i), "count"]
        rows.append(
            f'<td class="l">{_esc(pair["truth"])}</td><td class="l">{_esc(pair["predicted"])}</td>'
            + _num(pair["count"], path)
        )
    chart = report_plots.confusion_heatmap(confusion)
    plot = _image(chart, "image/png", "class confusion") if chart else ""
    return (
        f'<h2>Class confusion</h2><p class="sub">{note}</p><div class="row">'
        f"<section>{plot}</section><section>"
        f"{_table(['ground truth', 'predicted as', 'segments'], rows)}</section></div>"
    )


def _worst(images: Sequence[WorstImage]) -> str:
    """The lowest-PQ images, each as four pictures with its PQ."""
    fn, fp = ("rgb({},{},{})".format(*c) for c in (FN_COLOUR, FP_COLOUR))
    legend = (
        f'<span class="key" style="background:{fn}"></span> missed ground truth (FN) &nbsp; '
        f'<span class="key" style="background:{fp}"></span> false positive (FP)'
    )
    parts = [f'<h2>Lowest PQ images ({len(images)})</h2><p class="sub">{legend}</p>']
    for entry in images:
        figures = "".join(
            "<figure>"
            + _image(entry.pictures[key], "image/jpeg", f"{entry.file_name}: {cap}", "pic")
            + f"<figcaption>{_esc(cap)}</figcaption></figure>"
            for key, cap in _PICTURES
        )
        sq = "–" if entry.sq is None else f"{entry.sq:.1f}"
        rq = "–" if entry.rq is None else f"{entry.rq:.1f}"
        parts.append(
            f'<section class="worst"><h3>{_esc(entry.file_name)} — PQ {entry.pq:.1f} '
            f"(SQ {sq}, RQ {rq}; TP {entry.tp}, FP {entry.fp}, FN {entry.fn})</h3>"
            f'<div class="pics">{figures}</div></section>'
        )
    return "".join(parts)


def _curve(run_log: Path | None, iteration: int | None) -> str:
    """The training curve of the checkpoint's run, when its metrics.jsonl exists."""
    if run_log is None or not run_log.is_file():
        return ""
    entries = []
    for line in run_log.read_text("utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    chart = report_plots.training_curve(entries, iteration)
    if chart is None:
        return ""
    return (
        f'<h2>Training</h2><p class="sub">{_esc(run_log)}</p>'
        f"<section>{_image(chart, 'image/png', 'training loss and PQ')}</section>"
    )


def provenance(
    checkpoint: Path, ckpt: Mapping[str, Any], data: Path, split: str, images: int
) -> dict[str, Any]:
    """What the report says about the run: checkpoint, its iteration and phase, the recipe's
    dataset, backbone and edge distances, the data folder, split, image count and date (UTC)."""
    recipe = ckpt.get("recipe") or {}
    model, source = recipe.get("model") or {}, recipe.get("data") or {}
    return {
        "checkpoint": str(checkpoint),
        "iteration": ckpt.get("iteration"),
        "phase": ckpt.get("phase"),
        "recipe": f"{source.get('dataset', '?')} classes, {model.get('backbone', '?')}, "
        f"edge distances {model.get('edge_distances', '?')}",
        "data": str(data),
        "split": split,
        "images": images,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_report(
    out: Path,
    metrics: Mapping[str, Any],
    collector: ReportCollector,
    provenance: Mapping[str, Any],
    run_log: Path | None = None,
) -> Path:
    """Write ``OUT/report.html`` (atomically) from ``metrics.json``'s dict and the collector.

    `metrics` must hold ``panoptic_by_size`` and ``class_confusion`` (the collector's
    summary); `provenance` is shown as is (checkpoint, recipe, data, split, date, …).
    """
    isthing = dict(zip(collector.names, collector.isthing, strict=True))
    title = f"COPS evaluation — {provenance.get('checkpoint', '')}"
    body = (
        f"<h1>COPS evaluation report</h1><p class='sub'>{_esc(provenance.get('checkpoint', ''))}"
        f" on {_esc(provenance.get('split', ''))}, {_esc(provenance.get('date', ''))}</p>"
        + _headline(metrics, provenance)
        + _per_class(metrics, isthing)
        + _by_size(metrics["panoptic_by_size"])
        + _confusion(metrics["class_confusion"])
        + _worst(collector.worst_images())
        + _curve(run_log, metrics.get("iteration"))
    )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main><script>{_SORT_SCRIPT}</script></body></html>\n"
    )
    path = Path(out) / REPORT_NAME
    atomic_write_text(path, page)
    return path
