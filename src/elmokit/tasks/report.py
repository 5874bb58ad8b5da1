"""The suite report: a Markdown table of baseline vs ELMo per task, plus plots.

Written to the output directory:
- `report.md`: main table (mean ± sample std over seeds), learned layer weights, scores by
  layer (WSD, POS), extra metrics, notes and timings;
- `results.json`: every number behind it (per seed, per epoch);
- `layer_weights.png`: softmax(w) of each task's learned ScalarMix (the paper's figure 2);
- `learning_curves.png`: dev metric per epoch, per representation and seed;
- `by_layer.png`: WSD F1 and POS accuracy of each layer and of the mix.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from elmokit.tasks.suite import TaskResult

REPRESENTATION_COLUMNS = (
    ("word2vec", "word2vec"),
    ("layer0", "layer0"),
    ("top", "top layer"),
    ("elmo", "ELMo mix alone"),
)


# Peters et al. (2018), Tables 5 and 6: their biLM (2 x 4096 LSTM cells, projection 512,
# trained on the 800M-word 1B Word Benchmark), a linear POS probe on the full WSJ PTB and
# 1-NN WSD on SemCor 3.0 -> ALL (Raganato et al. 2017), per LSTM layer.
PAPER_BY_LAYER = {
    "wsd": {"layer1": 67.4, "layer2": 69.0},
    "pos": {"layer1": 97.3, "layer2": 96.8},
}


def elmo_key(results: TaskResult) -> str:
    """The "+ELMo" representation of a task: the baseline's token vector with the ELMo mix
    beside it (the paper's setting) when it was run, else the mix alone."""
    return "layer0+elmo" if "layer0+elmo" in results.scores else "elmo"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        raise ValueError("no values")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std


def format_score(values: Sequence[float] | None) -> str:
    if not values:
        return "—"
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f}"


def format_delta(results: TaskResult, baseline: str) -> str:
    """+ELMo minus the baseline; against word2vec, [word2vec; ELMo] when it was run."""
    key = elmo_key(results)
    if baseline == "word2vec" and "word2vec+elmo" in results.scores:
        key = "word2vec+elmo"
    if key not in results.scores or baseline not in results.scores:
        return "—"
    delta = mean_std(results.scores[key])[0] - mean_std(results.scores[baseline])[0]
    return f"{delta:+.2f}"


ADAPTED_SUFFIX = " (adapted LM)"  # +ELMo from the biLM fine-tuned on the task (--adapt-lm)


def verdict(results: TaskResult, baseline: str = "layer0", key: str | None = None) -> str:
    """One plain sentence: does +ELMo (or `key`) beat the baseline by more than twice the
    larger seed std (the rule docs/tasks.md states)?"""
    key = key or elmo_key(results)
    if key not in results.scores or baseline not in results.scores:
        return ""
    elmo_mean, elmo_std = mean_std(results.scores[key])
    base_mean, base_std = mean_std(results.scores[baseline])
    delta, spread = elmo_mean - base_mean, max(elmo_std, base_std)
    n = min(len(results.scores[key]), len(results.scores[baseline]))
    if n < 2:
        spread_text = "deterministic, one run each"
        beats = delta > 0
    else:
        spread_text = f"largest seed std {spread:.2f}; the rule: more than twice that"
        beats = delta > 2 * spread
    task = results.task + (" with the adapted LM" if key.endswith(ADAPTED_SUFFIX) else "")
    if beats:
        return f"{task}: yes, by {delta:+.2f} ({spread_text})."
    return f"{task}: **no**, {delta:+.2f} ({spread_text})."


def markdown_report(
    results: Sequence[TaskResult], header: dict[str, str], images: Sequence[str] = ()
) -> str:
    """The report text; `images` are plot file names (next to report.md) to embed."""
    has_w2v = any("word2vec" in r.scores for r in results)
    has_concat = any("layer0+elmo" in r.scores for r in results)
    has_w2v_concat = any("word2vec+elmo" in r.scores for r in results)
    columns = [c for c in REPRESENTATION_COLUMNS if has_w2v or c[0] != "word2vec"]
    if not has_concat:  # the mix alone is then the +ELMo column itself
        columns = [c for c in columns if c[0] != "elmo"]
    if has_w2v_concat:
        columns.append(("word2vec+elmo", "[word2vec; ELMo]"))
    # Other combined representations run (e.g. layer0+elmo+output) get a column each; single
    # layers are in the by-layer table.
    shown = {key for key, _ in columns} | {"layer0+elmo"}
    others = dict.fromkeys(
        name
        for r in results
        for name in r.scores
        if ("+" in name or name.endswith(ADAPTED_SUFFIX)) and name not in shown
    )
    columns += [(name, name) for name in others]
    lines = ["# elmokit downstream tasks", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    lines += [
        "",
        "Scores in percent, mean ± sample std over seeds (folds for CV tasks); each "
        "representation trains the same head with the same budget. Δ = +ELMo minus the "
        "baseline's mean."
        + (
            " +ELMo is [layer0; ELMo]: the context-free token vector with the learned mix of "
            "all layers beside it, as the paper feeds ELMo to a task's input."
            if has_concat
            else " +ELMo is the learned mix of all biLM layers alone."
        ),
        "",
    ]
    head = ["task", "metric", "eval (n)", "trivial"]
    plus = "+ELMo [layer0; mix]" if has_concat else "+ELMo (mix)"
    head += [title for _, title in columns] + [plus, "Δ vs layer0"]
    head += ["Δ vs word2vec"] if has_w2v else []
    head += ["seeds"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        trivial = f"{r.trivial:.2f} ({r.trivial_name})" if r.trivial is not None else "—"
        row = [r.task, r.metric, f"{r.eval_split} ({r.n_eval})", trivial]
        row += [format_score(r.scores.get(key)) for key, _ in columns]
        row += [f"**{format_score(r.scores.get(elmo_key(r)))}**", format_delta(r, "layer0")]
        row += [format_delta(r, "word2vec")] if has_w2v else []
        row += [str(max((len(v) for v in r.scores.values()), default=0))]
        lines.append("| " + " | ".join(row) + " |")

    verdicts = [verdict(r) for r in results]
    verdicts += [
        verdict(r, key=name) for r in results for name in r.scores if name.endswith(ADAPTED_SUFFIX)
    ]
    if any(verdicts):
        lines += ["", "## Does +ELMo beat the context-free layer 0?", ""]
        lines += [f"- {text}" for text in verdicts if text]

    weighted = [r for r in results if r.layer_weights]
    if weighted:
        n_layers = len(weighted[0].layer_weights[0])
        lines += ["", "## Learned layer weights (softmax(w) of the ELMo ScalarMix)", ""]
        lines += ["| task | " + " | ".join(f"layer {k}" for k in range(n_layers)) + " |"]
        lines += ["|---|" + "---|" * n_layers]
        for r in weighted:
            cells = [format_score([w[k] for w in r.layer_weights]) for k in range(n_layers)]
            lines.append(f"| {r.task} | " + " | ".join(cells) + " |")

    layered = [r for r in results if r.by_layer]
    if layered:
        names = list(dict.fromkeys(name for r in layered for name in r.by_layer))
        lines += ["", "## Scores by layer (WSD: 1-NN on sense centroids; POS: linear probe)", ""]
        lines += [
            "| task | metric | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for r in layered:
            cells = [format_score(r.by_layer.get(name)) for name in names]
            lines.append(f"| {r.task} | {r.metric} | " + " | ".join(cells) + " |")
            paper = PAPER_BY_LAYER.get(r.task)
            if paper:
                cells = [f"{paper[name]:.1f}" if name in paper else "—" for name in names]
                lines.append(f"| {r.task}, paper's biLM | {r.metric} | " + " | ".join(cells) + " |")
        if any(r.task in PAPER_BY_LAYER for r in layered):
            lines += [
                "",
                "The paper's rows (Peters et al. 2018, tables 5 and 6) come from a biLM with "
                "2 x 4096 LSTM cells trained on the 800M-word 1B Word Benchmark, and its POS "
                "probe trains on the whole WSJ treebank; compare the shape across layers "
                "more than the level.",
            ]

    extras = [(r, key, values) for r in results for key, values in r.extra.items()]
    if extras:
        lines += ["", "## Other metrics", ""]
        for r, key, values in extras:
            text = ", ".join(f"{rep} {format_score(v)}" for rep, v in values.items())
            lines.append(f"- {r.task} {key.upper()}: {text}")

    notes = [(r.task, note) for r in results for note in r.notes]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {task}: {note}" for task, note in notes]

    lines += ["", "## Runs", "", "| task | description | train (n) | features s | total s |"]
    lines += ["|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r.task} | {r.description} | {r.n_train} | {r.feature_seconds:.0f} | "
            f"{r.seconds:.0f} |"
        )
    for image in images:
        lines += ["", f"![{Path(image).stem.replace('_', ' ')}]({image})"]
    lines.append("")
    return "\n".join(lines)


# -- plots ----------------------------------------------------------------------------------


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt: Any, fig: Any, path: Path, dpi: int) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return True


def plot_layer_weights(results: Sequence[TaskResult], path: Path) -> bool:
    weighted = [r for r in results if r.layer_weights]
    if not weighted:
        return False
    plt = _pyplot()

    n_layers = len(weighted[0].layer_weights[0])
    width = 0.8 / n_layers
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(weighted), 3.5))
    for k in range(n_layers):
        stats = [mean_std([w[k] for w in r.layer_weights]) for r in weighted]
        positions = [i + (k - (n_layers - 1) / 2) * width for i in range(len(weighted))]
        ax.bar(
            positions,
            [m for m, _ in stats],
            width,
            yerr=[s for _, s in stats],
            label=f"layer {k}",
            capsize=2,
        )
    ax.axhline(1 / n_layers, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xticks(range(len(weighted)), [r.task for r in weighted])
    ax.set_ylabel("softmax(w)")
    ax.set_title("Learned ELMo layer weights per task")
    ax.legend(fontsize="small")
    return _save_figure(plt, fig, path, dpi=120)


def plot_learning_curves(results: Sequence[TaskResult], path: Path) -> bool:
    curved = [r for r in results if r.curves]
    if not curved:
        return False
    plt = _pyplot()

    columns = min(3, len(curved))
    rows = (len(curved) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = sorted({name for r in curved for name in r.curves})
    colour = {name: palette[i % len(palette)] for i, name in enumerate(names)}  # same in all
    for ax, r in zip(axes.flat, curved, strict=False):
        for name, curves in sorted(r.curves.items()):
            for s, curve in enumerate(curves):
                ax.plot(
                    range(1, len(curve) + 1),
                    curve,
                    color=colour[name],
                    alpha=0.8,
                    linewidth=1,
                    label=name if s == 0 else None,
                )
        ax.set_title(r.task)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"dev {r.metric}")
        ax.legend(fontsize="x-small")
    for ax in list(axes.flat)[len(curved) :]:
        ax.axis("off")
    return _save_figure(plt, fig, path, dpi=110)


def plot_by_layer(results: Sequence[TaskResult], path: Path) -> bool:
    layered = [r for r in results if r.by_layer]
    if not layered:
        return False
    plt = _pyplot()

    fig, axes = plt.subplots(1, len(layered), figsize=(4 * len(layered), 3.2), squeeze=False)
    for ax, r in zip(axes.flat, layered, strict=True):
        layers = sorted(k for k in r.by_layer if k.startswith("layer"))
        stats = [mean_std(r.by_layer[k]) for k in layers]
        ax.errorbar(
            range(len(layers)),
            [m for m, _ in stats],
            yerr=[s for _, s in stats],
            marker="o",
            label="single layer",
        )
        if "mix" in r.by_layer:
            ax.axhline(mean_std(r.by_layer["mix"])[0], color="C1", linestyle="--", label="mix")
        if r.trivial is not None:
            ax.axhline(r.trivial, color="grey", linestyle=":", label=r.trivial_name)
        ax.set_xticks(range(len(layers)), [k.replace("layer", "") for k in layers])
        ax.set_xlabel("biLM layer")
        ax.set_ylabel(r.metric)
        ax.set_title(r.task)
        ax.legend(fontsize="x-small")
    return _save_figure(plt, fig, path, dpi=110)


def write_report(
    results: Sequence[TaskResult], out_dir: str | Path, header: dict[str, str]
) -> Path:
    """Write report.md, results.json and the plots; returns the path of report.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"header": header, "tasks": [r.to_json() for r in results]}, indent=1)
    )
    plots = {
        "layer_weights.png": plot_layer_weights,
        "learning_curves.png": plot_learning_curves,
        "by_layer.png": plot_by_layer,
    }
    images = [name for name, plot in plots.items() if plot(results, out / name)]
    report = out / "report.md"
    report.write_text(markdown_report(results, header, images))
    return report
