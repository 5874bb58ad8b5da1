"""Models on the Hugging Face Hub: `elmokit.load("hf://org/name")` or `"hf://org/name@revision"`
(`pip install elmokit[hub]`). Through huggingface_hub itself, so its cache
(`HF_HUB_CACHE`), `HF_ENDPOINT`, `HF_TOKEN` and offline mode (`HF_HUB_OFFLINE=1`: cached files
or a clear error) behave as users of the Hub expect. A Hub repository holds a native model
directory: `config.json` + `model.safetensors` (+ `vocab.txt` when it has a softmax).

Publishing: `push_to_hub(model_or_directory, "org/name")` (also `BiLM.push_to_hub`) uploads
those files, a model card and, on request, the published HDF5 pair, through huggingface_hub.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from types import ModuleType

from elmokit.bilm import BiLM
from elmokit.extras import MissingExtraError, require
from elmokit.io.native import (
    CHARACTERS_NAME,
    CONFIG_NAME,
    VOCAB_NAME,
    WEIGHTS_NAME,
    from_pretrained,
    save_pretrained,
)
from elmokit.io.weights_hdf5 import save_bilm

HUB_PREFIX = "hf://"
_REPO = re.compile(r"^[\w.-]+/[\w.-]+$")


def is_hub_uri(name: str) -> bool:
    return name.startswith(HUB_PREFIX)


def parse_hub_uri(uri: str) -> tuple[str, str | None]:
    """ "hf://org/name@rev" -> ("org/name", "rev")."""
    rest = uri[len(HUB_PREFIX) :]
    repo_id, _, revision = rest.partition("@")
    if not _REPO.match(repo_id):
        raise ValueError(f"{uri!r} is not a Hub model: use hf://org/name or hf://org/name@revision")
    return repo_id, revision or None


def download_hub_model(uri: str) -> Path:
    """The local directory (in huggingface_hub's cache) holding the model's files."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as error:  # pragma: no cover - depends on the extras installed
        raise MissingExtraError(
            f"hf:// models need huggingface_hub: pip install 'elmokit[hub]' ({error})"
        ) from None
    import huggingface_hub.errors as hub_errors

    # Missing file on the Hub; RemoteEntryNotFoundError is its name in huggingface_hub >= 1.
    missing = (
        EntryNotFoundError,
        getattr(hub_errors, "RemoteEntryNotFoundError", EntryNotFoundError),
    )
    repo_id, revision = parse_hub_uri(uri)
    where = f"{repo_id}" + (f" at revision {revision}" if revision else "")
    # Read at each call (huggingface_hub reads them once, at its import).
    endpoint = os.environ.get("HF_ENDPOINT") or None
    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false")

    def fetch(name: str) -> Path:
        path = hf_hub_download(
            repo_id,
            name,
            revision=revision,
            endpoint=endpoint,
            cache_dir=cache_dir,
            local_files_only=offline,
        )
        return Path(str(path))

    paths = []
    try:
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            paths.append(fetch(name))
        # A model without a softmax has no vocabulary (and offline, none may be cached); only
        # models with their own character dictionaries (EFML) have CHARACTERS_NAME.
        for optional in (VOCAB_NAME, CHARACTERS_NAME):
            with contextlib.suppress(*missing):
                fetch(optional)
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"Hub model {where} is not in the local cache and the Hub cannot be reached "
            "(offline, or HF_HUB_OFFLINE=1): download it once with network access"
        ) from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"no Hub model {repo_id!r} (or it is private: set HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise FileNotFoundError(f"Hub model {repo_id!r} has no revision {revision!r}") from None
    except missing:
        raise FileNotFoundError(
            f"Hub model {where} is not an elmokit model: it has no {CONFIG_NAME} and {WEIGHTS_NAME}"
        ) from None
    return paths[0].parent


# --- publishing ---------------------------------------------------------------------------------

MODEL_CARD_NAME = "README.md"  # the Hub shows a repository's README.md as its model card
HDF5_OPTIONS_NAME = "options.json"
HDF5_WEIGHTS_NAME = "weights.hdf5"


def model_card(model: BiLM, repo_id: str, metadata: dict[str, object] | None = None) -> str:
    """A model card for the Hub: YAML metadata, the shape, how to load it, what we know of it."""
    config = model.config
    n_parameters = sum(parameter.numel() for parameter in model.parameters())
    lines = [
        "---",
        "library_name: elmokit",
        "tags:",
        "- elmo",
        "- feature-extraction",
        "- elmokit",
        "---",
        "",
        f"# {repo_id}",
        "",
        "An ELMo biLM (Peters et al., 2018) in elmokit's native format: `config.json` +",
        "`model.safetensors` (no pickle).",
        "",
        "```python",
        "import elmokit",
        "",
        f'bilm = elmokit.load("hf://{repo_id}")',
        'layers = bilm(bilm.batch_to_ids([["The", "bank", "."]])).layers  # [1, L+1, T, 2P]',
        "```",
        "",
        "| | |",
        "| --- | --- |",
        f"| biLM parameters | {n_parameters:,} |",
        f"| LSTM | {config.n_layers} x {config.lstm_dim}, projection {config.projection_dim} |",
        f"| ELMo vector | {config.output_dim} per layer, {config.n_layers + 1} layers |",
        f"| char CNN | filters {[list(f) for f in config.filters]}, {config.n_highway} highway |",
        f"| characters | {config.characters} scheme |",
    ]
    for key, value in (metadata or {}).items():
        lines.append(f"| {key} | {value} |")
    return "\n".join(lines) + "\n"


def push_to_hub(
    model: BiLM | str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload elmokit model",
    card: str | None = None,
    include_hdf5: bool = False,
) -> str:
    """Upload a model to the Hub repository `repo_id` (created if missing); returns the commit
    URL. `model` is a BiLM or a native model directory (its vocabulary and softmax go too).
    The repository gets the native files, a model card (`card`, else `model_card(...)`) and,
    with `include_hdf5`, the published pair `options.json` + `weights.hdf5` for bilm-tf and
    AllenNLP users. Through huggingface_hub: `HF_ENDPOINT`, `HF_TOKEN` apply."""
    if not _REPO.match(repo_id):
        raise ValueError(f"{repo_id!r} is not a Hub repository id (org/name)")
    api_module = _hub_module()
    with tempfile.TemporaryDirectory(prefix="elmokit-hub-") as staging:
        folder = Path(staging)
        bilm = stage_model(model, folder)
        if include_hdf5:
            save_bilm(bilm, folder / HDF5_OPTIONS_NAME, folder / HDF5_WEIGHTS_NAME)
        (folder / MODEL_CARD_NAME).write_text(
            card if card is not None else model_card(bilm, repo_id), encoding="utf-8"
        )
        api = api_module.HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            revision=revision,
            commit_message=commit_message,
        )
    return str(getattr(info, "commit_url", info))


def stage_model(model: BiLM | str | Path, folder: Path) -> BiLM:
    """Write `model`'s native files into `folder`; a directory's own files are copied as they
    are (softmax and vocabulary included). Returns the biLM."""
    if isinstance(model, BiLM):
        save_pretrained(model, folder)
        return model
    source = Path(model)
    if not (source / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{source} is not a native elmokit model directory")
    for name in (CONFIG_NAME, WEIGHTS_NAME, VOCAB_NAME, CHARACTERS_NAME):
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    return from_pretrained(source)


def _hub_module() -> ModuleType:
    return require("huggingface_hub", "hub", "publishing to the Hub")
