"""An independent, slow, obviously-correct ELMo biLM in float64 numpy.

It reads the published HDF5 file directly and follows FORMATS.md line by line: one
sentence, one direction, one time step at a time. It shares no code with elmokit's modules
(only the character table, which has its own tests).
"""

from __future__ import annotations

import h5py
import numpy as np

BOS = [259, 257, 260] + [261] * 47
EOS = [259, 258, 260] + [261] * 47


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class OracleBiLM:
    def __init__(self, options: dict, weights_path: str) -> None:
        self.options = options
        with h5py.File(weights_path, "r") as f:
            self.w = {}
            f.visititems(
                lambda name, obj: (
                    self.w.__setitem__(name, obj[...].astype(np.float64))
                    if isinstance(obj, h5py.Dataset)
                    else None
                )
            )
        self.cell_log: list[np.ndarray] = []  # every unclipped cell state, for clip statistics

    def char_ids(self, token: str) -> list[int]:
        if token == "<S>":
            return BOS
        if token == "</S>":
            return EOS
        raw = token.encode("utf-8", "ignore")[:48]
        ids = [259] + [b + 1 for b in raw] + [260]
        return ids + [261] * (50 - len(ids))

    def token_vector(self, token: str) -> np.ndarray:
        cnn = self.options["char_cnn"]
        table = np.vstack([np.zeros((1, self.w["char_embed"].shape[1])), self.w["char_embed"]])
        chars = table[self.char_ids(token)]  # [50, dim]
        features = []
        for i, (width, count) in enumerate(cnn["filters"]):
            kernel = self.w[f"CNN/W_cnn_{i}"][0]  # [width, dim, count]
            best = np.full(count, -np.inf)
            for start in range(50 - width + 1):
                value = np.einsum("wd,wdc->c", chars[start : start + width], kernel)
                best = np.maximum(best, value + self.w[f"CNN/b_cnn_{i}"])
            features.append(best)
        x = np.concatenate(features)
        x = np.maximum(x, 0) if cnn["activation"] == "relu" else np.tanh(x)
        for k in range(cnn["n_highway"]):
            gate = sigmoid(x @ self.w[f"CNN_high_{k}/W_carry"] + self.w[f"CNN_high_{k}/b_carry"])
            transform = np.maximum(
                x @ self.w[f"CNN_high_{k}/W_transform"] + self.w[f"CNN_high_{k}/b_transform"], 0
            )
            x = gate * transform + (1 - gate) * x
        if "CNN_proj/W_proj" in self.w:
            x = x @ self.w["CNN_proj/W_proj"] + self.w["CNN_proj/b_proj"]
        return x

    def run_direction(
        self,
        inputs: list[np.ndarray],
        direction: int,
        layer: int,
        h: np.ndarray | None = None,
        c: np.ndarray | None = None,
    ):
        lstm = self.options["lstm"]
        prefix = f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"
        W, B, WP = self.w[prefix + "/W_0"], self.w[prefix + "/B"], self.w[prefix + "/W_P_0"]
        hidden = lstm["dim"]
        h = np.zeros(WP.shape[1]) if h is None else h
        c = np.zeros(hidden) if c is None else c
        outputs = []
        for x in inputs:
            gates = np.concatenate([x, h]) @ W + B
            i, j, f, o = (gates[k * hidden : (k + 1) * hidden] for k in range(4))
            c = sigmoid(f + 1.0) * c + sigmoid(i) * np.tanh(j)
            self.cell_log.append(c.copy())
            if lstm.get("cell_clip"):
                c = np.clip(c, -lstm["cell_clip"], lstm["cell_clip"])
            h = (sigmoid(o) * np.tanh(c)) @ WP
            if lstm.get("proj_clip"):
                h = np.clip(h, -lstm["proj_clip"], lstm["proj_clip"])
            outputs.append(h)
        return outputs, h, c

    def embed(self, tokens: list[str]) -> np.ndarray:
        """All layers of one sentence from zero state: [n_layers + 1, len(tokens), 2P]."""
        lstm = self.options["lstm"]
        vectors = [self.token_vector(t) for t in ["<S>", *tokens, "</S>"]]
        layers = [np.concatenate([np.array(vectors), np.array(vectors)], axis=1)]
        fwd_in, bwd_in = vectors, vectors[::-1]
        for layer in range(lstm["n_layers"]):
            fwd_out, _, _ = self.run_direction(fwd_in, 0, layer)
            bwd_out, _, _ = self.run_direction(bwd_in, 1, layer)
            if layer > 0 and lstm.get("use_skip_connections"):
                fwd_out = [a + b for a, b in zip(fwd_out, fwd_in, strict=True)]
                bwd_out = [a + b for a, b in zip(bwd_out, bwd_in, strict=True)]
            layers.append(np.concatenate([np.array(fwd_out), np.array(bwd_out[::-1])], axis=1))
            fwd_in, bwd_in = fwd_out, bwd_out
        return np.stack(layers)[:, 1:-1]
