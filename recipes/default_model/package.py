"""Package a trained default model into the wheel: fp16 storage, vocabulary, model card.

    python recipes/default_model/package.py --run runs/default_model \
        --corpus runs/default_corpus --name elmokit-small-en

Checks the fp16 copy against the fp32 model on held-out sentences (max abs difference and
per-token cosine similarity) and writes both numbers into the model card.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

import elmokit
from elmokit.io.native import from_pretrained, save_pretrained

PACKAGE_MODELS = Path(__file__).resolve().parents[2] / "src" / "elmokit" / "data" / "models"


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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, default=Path("runs/default_model"))
    parser.add_argument("--corpus", type=Path, default=Path("runs/default_corpus"))
    parser.add_argument("--name", default="elmokit-small-en")
    parser.add_argument("--threads", type=int, default=2, help="threads the run used (card)")
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
    write_card(target, args, bilm, summary, error)
    print(json.dumps({"target": str(target), **error}, indent=2))


def write_card(
    target: Path,
    args: argparse.Namespace,
    bilm: elmokit.BiLM,
    summary: dict[str, float],
    error: dict[str, float],
) -> None:
    config = json.loads((args.run / "train_config.json").read_text())
    sources = json.loads((args.corpus / "sources.json").read_text())
    with (args.run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    valid_rows = [r for r in rows if r.get("valid_ppl_mean")]
    n_params = sum(p.numel() for p in bilm.parameters())
    size_mb = (target / "model.safetensors").stat().st_size / 2**20
    source_lines = "\n".join(
        f"| {name} | {stats['sentences']:,} | {stats['tokens']:,} | {LICENCES[name]} |"
        for name, stats in sources.items()
    )
    curve = "\n".join(
        f"| {int(r['step']):,} | {int(r['tokens']):,} | {float(r['valid_ppl_forward']):.1f} | "
        f"{float(r['valid_ppl_backward']):.1f} | {float(r['valid_ppl_mean']):.1f} |"
        for r in valid_rows
    )
    model = config["model"]
    optim = config["optim"]
    if config["log"].get("eval_max_tokens"):
        curve_note = (
            f"Validation curve. Periodic evaluations used only the first "
            f"{config['log']['eval_max_tokens']:,} held-out tokens, which come from the first "
            "sources in file order: not comparable with the full-split numbers above."
        )
    else:
        curve_note = "Validation curve (full validation split at every evaluation)."
    vocab_size = len((args.run / "vocab.txt").read_text(encoding="utf-8").splitlines())
    train_tokens = json.loads((args.run / "corpus_stats.json").read_text())["tokens"]
    card = f"""# {args.name}: the bundled default English biLM

Trained by elmokit on this project's 2-core CPU machine, only on openly licensed text, so it
can ship inside the package. It is small and trained briefly: use it for trying elmokit,
tests and examples; for research-grade features load a published model (`elmokit.load("original")`).

## Data and licences
| source | sentences | tokens | licence |
| --- | ---: | ---: | --- |
{source_lines}

Built by `recipes/default_model/prepare_corpus.py` from `../shared/data` (sentence split, Moses
tokenisation); every 50th sentence held out for validation. Research-only data sets (PTB,
Brown, SST, CoNLL, SICK) were not used.

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

## Training
- Recipe: `recipes/default_model/train.toml` (`elmokit train --config ...`, one command after
  `prepare_corpus.py`); {optim["optimizer"].capitalize()} lr {optim["lr"]}, dropout {optim["dropout"]}, batch
  {config["data"]["batch_size"]} x unroll {config["data"]["unroll_steps"]}, full softmax, state carried between batches
  (each row's state zeroed with probability {optim.get("state_reset_prob", 0.0)} per batch), {optim.get("precision", "fp32")} matrix products.
- Steps {int(summary["step"]):,}; training tokens seen {int(summary["tokens"]):,}; wall time
  {summary["minutes"]:.0f} minutes with {args.threads} CPU thread(s) on the 2-core development machine
  ({summary["tokens"] / (summary["minutes"] * 60):.0f} tokens/s); that is {summary["tokens"] / train_tokens:.2f} passes over the training text.
- Held-out perplexity (full validation split): forward {summary["valid_ppl_forward"]:.1f},
  backward {summary["valid_ppl_backward"]:.1f}, mean {summary["valid_ppl_mean"]:.1f}.

{args.note}

{curve_note}

| step | tokens | forward | backward | mean |
| ---: | ---: | ---: | ---: | ---: |
{curve}
"""
    (target / "MODEL_CARD.md").write_text(card, encoding="utf-8")


LICENCES = {
    "gutenberg": "public domain (Project Gutenberg)",
    "inaugural": "public domain (US government)",
    "state_union": "public domain (US government)",
    "wikitext2": "CC BY-SA (Wikipedia text, WikiText-2 valid + test)",
}


if __name__ == "__main__":
    main()
