"""Models on the Hugging Face Hub: `elmokit.load("hf://org/name")` or `"hf://org/name@revision"`
(`pip install elmokit[hub]`). Through huggingface_hub itself, so its cache
(`HF_HUB_CACHE`), `HF_ENDPOINT`, `HF_TOKEN` and offline mode (`HF_HUB_OFFLINE=1`: cached files
or a clear error) behave as users of the Hub expect. A Hub repository holds a native model
directory: `config.json` + `model.safetensors` (+ `vocab.txt` when it has a softmax).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from elmokit.extras import MissingExtraError
from elmokit.io.native import CHARACTERS_NAME, CONFIG_NAME, VOCAB_NAME, WEIGHTS_NAME

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
