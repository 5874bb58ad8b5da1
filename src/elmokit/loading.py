"""`elmokit.load`: one entry point for every way a biLM arrives.

- a bundled model name (shipped inside the package, no download), e.g. "elmokit-small-en";
- a native model directory (config.json + model.safetensors);
- a directory or options.json path of a published-format model (options.json + weights.hdf5);
- an NLPL repository ZIP holding that pair (read in place, see elmokit.io.nlpl);
- an ELMoForManyLangs model directory (config.json, char.dic, *.pkl; see elmokit.io.efml);
- "hf://org/name[@revision]", a native model on the Hugging Face Hub (elmokit.io.hub);
- a published model name ("small", "medium", "original", "original-5.5b", "pubmed",
  "portuguese", "portuguese-brwac", "japanese", "german"; docs/models.md) or "nlpl:ID" (an
  NLPL repository ZIP): naming it is the explicit request to download it once into the cache
  (see elmokit.io.download).
"""

from __future__ import annotations

from pathlib import Path

import torch

from elmokit.bilm import BiLM, StatePolicy
from elmokit.devices import resolve_device
from elmokit.io.native import CONFIG_NAME, WEIGHTS_NAME, from_pretrained
from elmokit.io.weights_hdf5 import load_bilm
from elmokit.modules.fast_inference import InferenceMode

BUNDLED_DIR = Path(__file__).resolve().parent / "data" / "models"


def bundled_models() -> list[str]:
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / CONFIG_NAME).exists())


def native_directory(name_or_path: str | Path) -> Path | None:
    """The native model directory behind a bundled name or a path, else None."""
    name = str(name_or_path)
    if name in bundled_models():
        return BUNDLED_DIR / name
    path = Path(name_or_path)
    if path.is_dir() and (path / WEIGHTS_NAME).exists():
        return path
    return None


def resolve_published_pair(path: Path) -> tuple[Path, Path] | None:
    """(options, weights) for a published-format directory or options file, else None."""
    if path.is_file() and path.suffix == ".json":
        candidates = sorted(path.parent.glob("*.hdf5")) + sorted(path.parent.glob("*.h5"))
        if len(candidates) != 1:
            raise ValueError(
                f"cannot tell which weight file goes with {path}: found "
                f"{[c.name for c in candidates] or 'none'}; pass weights explicitly"
            )
        return path, candidates[0]
    if path.is_dir():
        options = sorted(path.glob("*options*.json"))
        weights = sorted(path.glob("*.hdf5")) + sorted(path.glob("*.h5"))
        if len(options) == 1 and len(weights) == 1:
            return options[0], weights[0]
    return None


def load(
    name_or_path: str | Path,
    weights: str | Path | None = None,
    state_policy: StatePolicy = "reset",
    device: str | torch.device = "cpu",
    *,
    precision: InferenceMode | None = None,
) -> BiLM:
    """Load a biLM (eval mode) by bundled name, path or published name; see module doc.

    precision: the arithmetic without gradients ("fp32" fast path by default, "reference"
    for the exact autograd path, "bf16", "int8"; BiLM.optimize_for_inference)."""
    model = _load(name_or_path, weights, state_policy, resolve_device(device))
    return model.optimize_for_inference(precision) if precision is not None else model


def _load(
    name_or_path: str | Path,
    weights: str | Path | None,
    state_policy: StatePolicy,
    device: torch.device,
) -> BiLM:
    if weights is not None:
        return load_bilm(name_or_path, weights, state_policy=state_policy).to(device).eval()
    if isinstance(name_or_path, str) and name_or_path.startswith("hf://"):
        from elmokit.io.hub import download_hub_model

        return from_pretrained(download_hub_model(name_or_path), state_policy, device).eval()
    native = native_directory(name_or_path)
    if native is not None:
        return from_pretrained(native, state_policy, device).eval()
    name, path = str(name_or_path), Path(name_or_path)
    if path.is_file() and path.suffix.lower() == ".zip":
        from elmokit.io.nlpl import load_zip

        return load_zip(path, state_policy=state_policy).to(device).eval()
    from elmokit.io.efml import is_efml_directory, load_efml

    if is_efml_directory(path):
        return load_efml(path, state_policy=state_policy).to(device).eval()
    if path.exists():
        pair = resolve_published_pair(path)
        if pair is None:
            raise ValueError(
                f"{path} is neither an elmokit model directory ({CONFIG_NAME} + {WEIGHTS_NAME}), "
                "a published model (one *options*.json + one .hdf5) nor an ELMoForManyLangs "
                "model (config.json + encoder.pkl + token_embedder.pkl)"
            )
        return load_bilm(*pair, state_policy=state_policy).to(device).eval()
    from elmokit.io.download import NLPL_PREFIX, PUBLISHED_MODELS, download_nlpl, download_published

    if name.startswith(NLPL_PREFIX):
        from elmokit.io.nlpl import load_zip

        return load_zip(download_nlpl(name), state_policy=state_policy).to(device).eval()

    if name in PUBLISHED_MODELS:
        options_path, weights_path = download_published(name)
        return load_bilm(options_path, weights_path, state_policy=state_policy).to(device).eval()
    known = bundled_models() + sorted(PUBLISHED_MODELS)
    raise FileNotFoundError(
        f"no model at {name!r}: not a path, and not a known name ({', '.join(known)}, or nlpl:ID)"
    )
