"""Package the trained default model into the wheel: fp16 storage, vocabulary, model card.

    python recipes/default_model/package.py --run runs/default_model_v2 --corpus runs/corpus_v2 \
        --perplexity reports/elmokit-small-en-v2/perplexity \
        --report reports/elmokit-small-en-v2/tasks --machine "2-core Intel Xeon (AMX), CPU"

Checks the fp16 copy against the fp32 model on held-out sentences (max abs difference and
per-token cosine similarity) and writes both numbers into the model card, with the data and
their licences, the training cost, the perplexities that `text_perplexity.py` measured on the
packaged model (--perplexity) and the downstream table of an `elmokit task report` (--report).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

import elmokit
from elmokit.io.native import from_pretrained, save_pretrained

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_MODELS = ROOT / "src" / "elmokit" / "data" / "models"
V1_PERPLEXITY = ROOT / "reports" / "elmokit-small-en-2026-11-24" / "out_of_domain"

# Every source prepare_corpus.py reads, as ../shared/data/README.md states its licence.
LICENCES = {
    "wikipedia_en_2015": "CC BY-SA 3.0 (Wikipedia article text)",
    "gutenberg_rcdm": "public domain in the USA (Project Gutenberg e-texts; text between the "
    "PG START/END markers only)",
    "wikinews_en_2022": "CC BY 2.5 (Wikinews; public domain before 2005-09-25)",
    "gutenberg_nltk": "public domain (Project Gutenberg, NLTK selection)",
    "inaugural_nltk": "public domain (US government)",
    "state_union_nltk": "public domain (US government)",
}
PERPLEXITY_TEXTS = {
    "heldout": "held-out split of its own corpus (by document)",
    "wikitext2_test": "WikiText-2 test (Wikipedia; not trained on)",
    "conll2003_dev": "CoNLL-2003 dev (Reuters news, NER)",
    "sst_test": "SST test (movie reviews)",
    "sick_test": "SICK test (image captions)",
}


def fp16_error(fp32_dir: Path, fp16_dir: Path, sentences: list[list[str]]) -> dict[str, float]:
    exact, half = from_pretrained(fp32_dir).eval(), from_pretrained(fp16_dir).eval()
    worst, cosines = 0.0, []
    with torch.no_grad():
        for start in range(0, len(sentences), 32):
            ids = elmokit.batch_to_ids(sentences[start : start + 32])
            a, b = exact(ids), half(ids)
            mask = a.mask
            worst = max(worst, float((a.layers - b.layers).abs().max()))
            for layer in range(a.layers.shape[1]):
                x, y = a.layers[:, layer][mask], b.layers[:, layer][mask]
                cosines.append(torch.nn.functional.cosine_similarity(x, y, dim=-1))
    cosine = torch.cat(cosines)
    return {
        "max_abs_diff": worst,
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default_model_v2"))
    parser.add_argument("--corpus", type=Path, default=Path("runs/corpus_v2"))
    parser.add_argument("--name", default="elmokit-small-en")
    parser.add_argument("--threads", type=int, default=2, help="threads the run used (card)")
    parser.add_argument("--machine", default="2-core CPU", help="where it trained (card)")
    parser.add_argument("--perplexity", type=Path, help="text_perplexity.py's --out folder")
    parser.add_argument("--report", type=Path, help="an `elmokit task report` --out folder")
    parser.add_argument("--note", default="", help="a paragraph for the card's Training section")
    args = parser.parse_args()

    model_dir = args.run / "model"
    target = PACKAGE_MODELS / args.name
    bilm = from_pretrained(model_dir)
    tensors = load_file(str(model_dir / "model.safetensors"))
    softmax = {k: v for k, v in tensors.items() if k.startswith("softmax.")}
    summary = json.loads((args.run / "summary.json").read_text())
    save_pretrained(
        bilm,
        target,
        extra_tensors=softmax,
        dtype=torch.float16,
        metadata={"name": args.name, "storage": "float16", **summary},
    )
    shutil.copyfile(args.run / "vocab.txt", target / "vocab.txt")

    held_out = (args.corpus / "valid.txt").read_text(encoding="utf-8").splitlines()[:256]
    error = fp16_error(model_dir, target, [line.split() for line in held_out])
    (target / "MODEL_CARD.md").write_text(model_card(args, bilm, summary, error), encoding="utf-8")
    print(json.dumps({"target": str(target), **error}, indent=2))


def model_card(
    args: argparse.Namespace, bilm: elmokit.BiLM, summary: dict[str, Any], error: dict[str, float]
) -> str:
    config = json.loads((args.run / "train_config.json").read_text())
    corpus = json.loads((args.corpus / "sources.json").read_text())
    model, optim = config["model"], config["optim"]
    n_params = sum(p.numel() for p in bilm.parameters())
    size_mb = (PACKAGE_MODELS / args.name / "model.safetensors").stat().st_size / 2**20
    vocab_size = len((args.run / "vocab.txt").read_text(encoding="utf-8").splitlines())
    train_tokens = corpus["totals"]["train_tokens"]
    hours = summary["minutes"] / 60
    return f"""# {args.name}: the bundled default English biLM

Trained by elmokit on this project's {args.machine} machine, only on openly licensed text, so
it can ship inside the package. It is small (the published "small" shape) and read far less
text than the published models: use it to try elmokit, for tests and examples, and as a
baseline; for research-grade features load a published model (`elmokit.load("original")`).
**Part of its training text is CC BY-SA (Wikipedia)**; see the licences below.

## Data and licences
Built by `recipes/default_model/prepare_corpus.py` from `../shared/data`: sentence split,
Moses tokenisation, Gutenberg books cut to the text between the PG START/END markers, exact
duplicates of 5+ tokens dropped, globally shuffled, and about 2% of the documents (whole
documents, chosen by a hash of their names) held out and never trained on. Research-only
data sets (PTB, Brown, SST, CoNLL, SICK) were not used.

| source | training documents | training sentences | training tokens | held-out tokens | licence |
| --- | ---: | ---: | ---: | ---: | --- |
{source_rows(corpus["sources"])}
| all | | {corpus["totals"]["train_sentences"]:,} | {train_tokens:,} | {corpus["totals"]["heldout_tokens"]:,} | |

## Model
- char CNN filters {model["char_cnn"]["filters"]} (char dim {model["char_cnn"]["embedding"]["dim"]}),
  {model["char_cnn"]["n_highway"]} highway layer, LSTM {model["lstm"]["n_layers"]} x {model["lstm"]["dim"]}
  with projection {model["lstm"]["projection_dim"]} (ELMo vectors of {2 * model["lstm"]["projection_dim"]} dims),
  cell/projection clip 3, residual between layers 1 and 2.
- {n_params / 1e6:.2f}M biLM parameters plus a {vocab_size:,}-word
  softmax (kept for `elmokit evaluate` and fine-tuning); stored as float16: {size_mb:.1f} MB.
- fp16 storage vs the fp32 weights on 256 held-out sentences (all 3 layers): max abs
  difference {error["max_abs_diff"]:.2e}, per-token cosine min {error["min_cosine"]:.6f},
  mean {error["mean_cosine"]:.7f}. Loading casts to float32.

## Training and its cost
- Recipe: `recipes/default_model/train.toml` (`elmokit train --config ...` after
  `prepare_corpus.py`); {optim["optimizer"].capitalize()} lr {optim["lr"]} with {optim.get("warmup_steps", 0)} warm-up steps and a
  {optim.get("lr_schedule", "constant")} decay to {optim.get("min_lr", 0)}, dropout {optim["dropout"]}, batch {config["data"]["batch_size"]} x unroll
  {config["data"]["unroll_steps"]}, full softmax, state carried between batches (each row's state zeroed with
  probability {optim.get("state_reset_prob", 0.0)} per batch), {optim.get("precision", "fp32")} matrix products.
- **Cost**: {int(summary["step"]):,} steps, {int(summary["tokens"]):,} training tokens
  ({summary["tokens"] / train_tokens:.2f} passes over the training text), **{hours:.1f} hours** of training
  with {args.threads} CPU threads on a {args.machine} ({summary["tokens"] / (summary["minutes"] * 60):.0f} tokens/s on average), spread
  over several working sessions and resumed exactly from checkpoints.

{args.note}

## Perplexity
{perplexity_table(args.perplexity)}

Validation curve during training (`valid.txt`: every 10th held-out sentence):

| step | tokens | forward | backward | mean |
| ---: | ---: | ---: | ---: | ---: |
{curve_rows(args.run / "metrics.csv")}

## Downstream
{downstream_section(args.report)}
"""


def source_rows(sources: dict[str, dict[str, int]]) -> str:
    return "\n".join(
        f"| {name} | {stats['train_documents']:,} | {stats['train_sentences']:,} | "
        f"{stats['train_tokens']:,} | {stats['heldout_tokens']:,} | {LICENCES[name]} |"
        for name, stats in sources.items()
    )


def curve_rows(metrics: Path) -> str:
    with metrics.open() as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("valid_ppl_mean")]
    return "\n".join(
        f"| {int(r['step']):,} | {int(r['tokens']):,} | {float(r['valid_ppl_forward']):.1f} | "
        f"{float(r['valid_ppl_backward']):.1f} | {float(r['valid_ppl_mean']):.1f} |"
        for r in rows
    )


def perplexity_table(folder: Path | None) -> str:
    """This model's perplexities beside v1's where v1 was measured on the same text. The two
    have different 16k-word vocabularies: out-of-vocabulary words are one easy `<UNK>`
    target, so the model with fewer of them faces the harder task."""
    if folder is None:
        return "(not measured: run text_perplexity.py and pass --perplexity)"
    lines = [
        "Mean of the two directions; each direction's in the JSON files of the report. v1 is",
        "the model this one replaced (3.2M tokens, one pass).",
        "",
        "| text | this model | v1 |",
        "| --- | ---: | ---: |",
    ]
    for name, label in PERPLEXITY_TEXTS.items():
        path = folder / f"{name}.json"
        if not path.exists():
            continue
        mean = json.loads(path.read_text())["test_ppl_mean"]
        v1_path = V1_PERPLEXITY / f"{name}.json"
        v1 = f"{json.loads(v1_path.read_text())['test_ppl_mean']:.1f}" if v1_path.exists() else "-"
        lines.append(f"| {label} | {mean:.1f} | {v1} |")
    return "\n".join(lines)


def downstream_section(report: Path | None) -> str:
    """The score table and verdicts of an `elmokit task report`, as it wrote them."""
    if report is None:
        return "(not measured: run `elmokit task report` and pass --report)"
    text = (report / "report.md").read_text(encoding="utf-8")
    header, _, rest = text.partition("\n| task |")
    setting_lines = [line for line in header.splitlines() if line.startswith("- ")]
    table, _, after = ("| task |" + rest).partition("\n\n")
    verdicts = after.split("\n\n## ", 1)[0]
    return "\n".join(
        [f"From `{report}` (`elmokit task report`):", "", *setting_lines, "", table, "", verdicts]
    )


if __name__ == "__main__":
    main()
