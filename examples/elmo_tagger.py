"""A POS tagger on ELMo: python examples/elmo_tagger.py [MODEL [WEIGHTS]] [--data train.txt]

MODEL is anything elmokit.load accepts (bundled name, model directory, options.json + WEIGHTS).
Trains a BiLSTM on frozen ELMo features for a few steps on CoNLL-2000 sentences.
"""

import argparse
from pathlib import Path

import torch
from torch import nn

from elmokit import batch_to_ids
from elmokit.elmo import Elmo, elmo_layer_weights

SHARED = Path(__file__).resolve().parents[2] / "shared"
parser = argparse.ArgumentParser()
parser.add_argument("model", nargs="?", default=SHARED / "fixtures/allennlp-elmo/options.json")
parser.add_argument("weights", nargs="?", default=SHARED / "fixtures/allennlp-elmo/lm_weights.hdf5")
parser.add_argument("--data", default=SHARED / "data/conll2000/train.txt")
parser.add_argument("--sentences", type=int, default=320)
parser.add_argument("--steps", type=int, default=40)
args = parser.parse_args()
if not Path(args.data).exists():
    parser.error(f"{args.data} not found: pass --data (CoNLL-2000 train.txt, from ../shared/data)")

# CoNLL format: "token POS chunk" per line, a blank line between sentences.
blocks = Path(args.data).read_text().strip().split("\n\n")[: args.sentences]
data = [[line.split()[:2] for line in block.splitlines()] for block in blocks]
tags = sorted({tag for sentence in data for _, tag in sentence})


class Tagger(nn.Module):
    def __init__(self, elmo: Elmo, n_tags: int, hidden: int = 64) -> None:
        super().__init__()
        self.elmo = elmo
        self.lstm = nn.LSTM(elmo.get_output_dim(), hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, n_tags)

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:  # [B, T, 50] -> [B, T, tags]
        features = self.elmo(char_ids)["elmo_representations"][0]
        return self.out(self.lstm(features)[0])


weights = args.weights if str(args.model).endswith(".json") else None
model = Tagger(Elmo(args.model, weights, dropout=0.2, state_policy="reset"), len(tags))
optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
torch.manual_seed(0)
for step in range(args.steps):
    batch = [data[i] for i in torch.randint(len(data), (32,)).tolist()]
    char_ids = batch_to_ids([[word for word, _ in sentence] for sentence in batch])
    gold = torch.full(char_ids.shape[:2], -100)  # -100: padding, ignored by the loss
    for row, sentence in enumerate(batch):
        gold[row, : len(sentence)] = torch.tensor([tags.index(tag) for _, tag in sentence])
    logits = model(char_ids)
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), gold.flatten(), ignore_index=-100)
    optimizer.zero_grad()
    (loss + 1e-3 * model.elmo.l2_penalty()).backward()  # the paper's lambda * ||w||^2
    optimizer.step()
    if step % 5 == 0 or step == args.steps - 1:
        print(f"step {step:3d}  loss {loss.item():.3f}")
print("layer weights:", [[round(w, 3) for w in mix] for mix in elmo_layer_weights(model.elmo)])
