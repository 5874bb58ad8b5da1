"""Fetch the published AllenNLP ELMo models by name, and only when explicitly asked.

Nothing else in elmokit touches the network: `download_published` is the single entry point
that does, reached by naming a published model (`elmokit.load("original")`, `--model original`
in any command, `elmokit download original`): naming it is the explicit request. Whatever
it fetches is verified before it appears in the cache under its final name, so a file in the
cache that looks complete is complete.

The cache mirrors the server's relative paths, with a `sha256sum`-style sidecar per file:

    <cache>/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_options.json
    <cache>/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_options.json.sha256
    <cache>/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_weights.hdf5
    <cache>/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_weights.hdf5.sha256
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import h5py
from tqdm import tqdm

from elmokit._version import __version__
from elmokit.config import PUBLISHED_SHAPES
from elmokit.io.files import atomic_path

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://allennlp.s3.amazonaws.com/models/elmo"
BASE_URL_ENV = "ELMOKIT_MODEL_BASE_URL"
CACHE_ENV = "ELMOKIT_CACHE"
# Per socket operation (connect, each read), not for the whole transfer: a 374 MB file on a
# slow link may legitimately take far longer than this, a silent server should not hang us.
DEFAULT_TIMEOUT = 30.0
_CHUNK_BYTES = 1 << 20


class ModelDownloadError(OSError):
    """A published model could not be fetched, or what arrived is not the expected ELMo model."""


@dataclass(frozen=True)
class PublishedModel:
    """One of the pre-trained biLMs AllenNLP publishes, with its expected shape.

    The shape fields double as a check: a downloaded options.json that disagrees with them is
    rejected, so a misconfigured mirror cannot silently hand out the wrong model.
    """

    name: str
    options_url: str
    weights_url: str
    params_millions: float  # as AllenNLP's table states it; documentation only
    description: str
    # The expected shape; by default the name's row of config.PUBLISHED_SHAPES (the one table).
    lstm_dim: int = 0  # LSTM cell size ("LSTM hidden size" in AllenNLP's table)
    projection_dim: int = 0  # LSTM output / token vector size; ELMo vectors are twice this
    n_highway: int = 0
    # AllenNLP publishes no checksums for these files; set these if a trusted digest is known.
    options_sha256: str | None = None
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        if not self.lstm_dim:
            lstm_dim, projection_dim, n_highway = PUBLISHED_SHAPES[self.name]
            object.__setattr__(self, "lstm_dim", lstm_dim)
            object.__setattr__(self, "projection_dim", projection_dim)
            object.__setattr__(self, "n_highway", n_highway)
        # Both URLs must sit under the default prefix, because a base-URL override (mirror,
        # test server) works by swapping exactly that prefix.
        for url in (self.options_url, self.weights_url):
            if not url.startswith(DEFAULT_BASE_URL + "/"):
                raise ValueError(f"{self.name}: {url} is not under {DEFAULT_BASE_URL}/")

    @property
    def options_relpath(self) -> str:
        return self.options_url[len(DEFAULT_BASE_URL) + 1 :]

    @property
    def weights_relpath(self) -> str:
        return self.weights_url[len(DEFAULT_BASE_URL) + 1 :]

    @property
    def output_dim(self) -> int:
        return 2 * self.projection_dim


# URLs: the relative paths are those of the "Pre-trained ELMo Models" table on
# https://allennlp.org/elmo (source: github.com/allenai/allennlp-website, elmo.html), which
# links them as https://s3-us-west-2.amazonaws.com/allennlp/models/elmo/...; AllenNLP's later
# tutorials/how_to/elmo.md (github.com/allenai/allennlp) and ElmoTokenEmbedder defaults use the
# same bucket through https://allennlp.s3.amazonaws.com/models/elmo/..., the form used here.
# Sizes and parameter counts are from the same table. No checksums are published there.
PUBLISHED_MODELS: dict[str, PublishedModel] = {
    model.name: model
    for model in (
        PublishedModel(
            name="small",
            options_url="https://allennlp.s3.amazonaws.com/models/elmo/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_options.json",  # noqa: E501
            weights_url="https://allennlp.s3.amazonaws.com/models/elmo/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_weights.hdf5",  # noqa: E501
            params_millions=13.6,
            description="Small: 1B Word Benchmark, 256-d ELMo vectors",
        ),
        PublishedModel(
            name="medium",
            options_url="https://allennlp.s3.amazonaws.com/models/elmo/2x2048_256_2048cnn_1xhighway/elmo_2x2048_256_2048cnn_1xhighway_options.json",  # noqa: E501
            weights_url="https://allennlp.s3.amazonaws.com/models/elmo/2x2048_256_2048cnn_1xhighway/elmo_2x2048_256_2048cnn_1xhighway_weights.hdf5",  # noqa: E501
            params_millions=28.0,
            description="Medium: 1B Word Benchmark, 512-d ELMo vectors",
        ),
        PublishedModel(
            name="original",
            options_url="https://allennlp.s3.amazonaws.com/models/elmo/2x4096_512_2048cnn_2xhighway/elmo_2x4096_512_2048cnn_2xhighway_options.json",  # noqa: E501
            weights_url="https://allennlp.s3.amazonaws.com/models/elmo/2x4096_512_2048cnn_2xhighway/elmo_2x4096_512_2048cnn_2xhighway_weights.hdf5",  # noqa: E501
            params_millions=93.6,
            description="Original: 1B Word Benchmark, 1024-d ELMo vectors (the paper's model)",
        ),
        PublishedModel(
            name="original-5.5b",
            options_url="https://allennlp.s3.amazonaws.com/models/elmo/2x4096_512_2048cnn_2xhighway_5.5B/elmo_2x4096_512_2048cnn_2xhighway_5.5B_options.json",  # noqa: E501
            weights_url="https://allennlp.s3.amazonaws.com/models/elmo/2x4096_512_2048cnn_2xhighway_5.5B/elmo_2x4096_512_2048cnn_2xhighway_5.5B_weights.hdf5",  # noqa: E501
            params_millions=93.6,
            description="Original (5.5B): Wikipedia + WMT news 2008-2012, 1024-d ELMo vectors",
        ),
    )
}


def cache_dir() -> Path:
    """Where downloaded models live: $ELMOKIT_CACHE, else $XDG_CACHE_HOME/elmokit, else
    ~/.cache/elmokit."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "elmokit"
    return Path.home() / ".cache" / "elmokit"


def download_published(
    name: str,
    cache: Path | None = None,
    force: bool = False,
    base_url_override: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[Path, Path]:
    """Make sure the published model `name` is in the cache; return (options_path, weights_path).

    A cached copy whose sha256 still matches the one recorded at download time is returned
    without any network access. Otherwise each file is streamed to a temporary file next to its
    final place, verified (options.json parses and matches the registry's shape; the HDF5 has
    `char_embed` and a `CNN_proj/W_proj` of the options' projection size) and only then renamed
    into place. `force` re-downloads even a good cached copy. `base_url_override` (or
    $ELMOKIT_MODEL_BASE_URL) replaces https://allennlp.s3.amazonaws.com/models/elmo, for mirrors.

    Raises ValueError for an unknown name and ModelDownloadError (an OSError) when the files
    cannot be fetched or fail verification.
    """
    model = PUBLISHED_MODELS.get(name)
    if model is None:
        known = ", ".join(sorted(PUBLISHED_MODELS))
        raise ValueError(f"unknown published ELMo model {name!r}; known models: {known}")

    root = Path(cache).expanduser() if cache is not None else cache_dir()
    base_url = (base_url_override or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    options_path = root / model.options_relpath
    weights_path = root / model.weights_relpath
    hint = _manual_download_hint(model, options_path, weights_path)

    def check_options(path: Path, source: str) -> None:
        _check_options(path, model, source)

    _ensure_file(
        f"{base_url}/{model.options_relpath}",
        options_path,
        check_options,
        model.options_sha256,
        force=force,
        progress=progress,
        timeout=timeout,
        hint=hint,
    )
    options = _check_options(options_path, model, str(options_path))
    projection_dim = int(options["lstm"]["projection_dim"])

    def check_weights(path: Path, source: str) -> None:
        _check_weights(path, projection_dim, source)

    _ensure_file(
        f"{base_url}/{model.weights_relpath}",
        weights_path,
        check_weights,
        model.weights_sha256,
        force=force,
        progress=progress,
        timeout=timeout,
        hint=hint,
    )
    return options_path, weights_path


# --- cache -------------------------------------------------------------------------------------


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_sidecar(path: Path) -> str | None:
    try:
        text = _sidecar(path).read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    fields = text.split()
    return fields[0].lower() if fields else None


def _write_sidecar(path: Path, digest: str) -> None:
    # Same atomic write as the data files: a half-written digest would read as corruption.
    with atomic_path(_sidecar(path), suffix=".part") as temporary:
        temporary.write_text(f"{digest}  {path.name}\n", encoding="utf-8")  # sha256sum -c


def _sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()


def _ensure_file(
    url: str,
    target: Path,
    verify: Callable[[Path, str], None],
    published_sha256: str | None,
    *,
    force: bool,
    progress: bool,
    timeout: float,
    hint: str,
) -> None:
    if not force and target.exists():
        recorded = _read_sidecar(target)
        if recorded is not None:
            actual = _sha256_file(target)
            if actual == recorded and published_sha256 in (None, actual):
                return
            logger.warning(
                "cached %s no longer matches the sha256 recorded when it was downloaded "
                "(corrupted?); removing it and downloading it again",
                target,
            )
            _discard(target)
        else:
            # No digest: copied in by hand (as the manual-download hint suggests), or a crash
            # between the rename and the sidecar write. Adopt it if it passes the same checks.
            try:
                verify(target, str(target))
                digest = _sha256_file(target)
                if published_sha256 not in (None, digest):
                    raise ModelDownloadError(
                        f"{target} has sha256 {digest}, expected {published_sha256}"
                    )
            except ModelDownloadError as error:
                logger.warning("cached file is not usable (%s); downloading it again", error)
                _discard(target)
            else:
                _write_sidecar(target, digest)
                return
    _download_verified(url, target, verify, published_sha256, progress, timeout, hint)


def _discard(target: Path) -> None:
    target.unlink(missing_ok=True)
    _sidecar(target).unlink(missing_ok=True)


# --- download ----------------------------------------------------------------------------------


def _download_verified(
    url: str,
    target: Path,
    verify: Callable[[Path, str], None],
    published_sha256: str | None,
    progress: bool,
    timeout: float,
    hint: str,
) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as the target so os.replace is an atomic rename, never a cross-device copy;
    # the hidden ".part" name cannot be mistaken for the finished file.
    # Also on KeyboardInterrupt: an interrupted download leaves nothing behind.
    with atomic_path(target, suffix=".part") as tmp:
        with tmp.open("wb") as out:
            digest = _stream(url, out, target.name, progress, timeout, hint)
        if published_sha256 is not None and digest != published_sha256:
            raise ModelDownloadError(
                f"downloaded {url} but its sha256 is {digest}, not the published "
                f"{published_sha256}. {hint}"
            )
        verify(tmp, url)
    _write_sidecar(target, digest)


def _stream(url: str, out: IO[bytes], label: str, progress: bool, timeout: float, hint: str) -> str:
    """Copy `url` into `out` chunk by chunk; return the sha256 of what was received."""
    request = urllib.request.Request(url, headers={"User-Agent": f"elmokit/{__version__}"})
    hasher = hashlib.sha256()
    received = 0
    expected: int | None = None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            with tqdm(
                total=expected,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress,
            ) as bar:
                while chunk := response.read(_CHUNK_BYTES):
                    out.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        raise ModelDownloadError(
            f"could not download {url}: the server answered HTTP {error.code} {error.reason}. "
            f"{hint}"
        ) from error
    except urllib.error.URLError as error:
        host = urllib.parse.urlsplit(url).netloc or url
        raise ModelDownloadError(
            f"could not download {url}: cannot reach {host} ({error.reason}); you may be "
            f"offline, or a firewall or proxy blocks the connection. {hint}"
        ) from error
    except TimeoutError as error:
        raise ModelDownloadError(
            f"could not download {url}: no data for {timeout:g} s (timed out); the connection "
            f"may be down or very slow. {hint}"
        ) from error
    except (http.client.HTTPException, ConnectionError) as error:
        raise ModelDownloadError(
            f"could not download {url}: the connection broke off ({error!r}). {hint}"
        ) from error
    # http.client does not raise when the server closes early; it just stops returning data.
    if expected is not None and received != expected:
        raise ModelDownloadError(
            f"could not download {url}: the transfer was cut short ({received} of {expected} "
            f"bytes). Try again. {hint}"
        )
    return hasher.hexdigest()


def _manual_download_hint(model: PublishedModel, options_path: Path, weights_path: Path) -> str:
    return (
        "(elmokit only downloads a published model when it is named: elmokit.load(name), "
        "--model name, or `elmokit download name`.) To get it by hand, fetch on any machine "
        "with internet access\n"
        f"  {model.options_url}\n  {model.weights_url}\n"
        "and pass the two local file paths (options.json and weights.hdf5) to elmokit instead "
        "of the model name, or copy them to\n"
        f"  {options_path}\n  {weights_path}\n"
        f"where `elmokit download {model.name}` will verify and use them. A mirror with the same "
        f"layout can be used by setting {BASE_URL_ENV}."
    )


# --- structural verification -------------------------------------------------------------------


def _check_options(path: Path, model: PublishedModel, source: str) -> dict[str, Any]:
    try:
        options = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelDownloadError(f"{source} is not a valid options.json: {error}") from error
    if not isinstance(options, dict):
        raise ModelDownloadError(f"{source} is not a valid options.json: not a JSON object")
    missing = [key for key in ("lstm", "char_cnn") if not isinstance(options.get(key), dict)]
    if missing:
        raise ModelDownloadError(
            f"{source} is not an ELMo options.json: no {' / '.join(missing)} section"
        )
    expected = {
        ("lstm", "dim"): model.lstm_dim,
        ("lstm", "projection_dim"): model.projection_dim,
        ("char_cnn", "n_highway"): model.n_highway,
    }
    for (section, key), want in expected.items():
        got = options[section].get(key)
        if got != want:
            raise ModelDownloadError(
                f"{source} has {section}.{key} = {got!r}, but the published {model.name!r} "
                f"model has {want}; the server returned a different model"
            )
    return options


def _check_weights(path: Path, projection_dim: int, source: str) -> None:
    try:
        handle = h5py.File(path, "r")
    except OSError as error:  # h5py's way of saying "not HDF5" or "truncated"
        raise ModelDownloadError(f"{source} is not a readable HDF5 file ({error})") from error
    with handle:
        problem = _weights_problem(handle, projection_dim)
    if problem:
        raise ModelDownloadError(f"{source} is not the expected ELMo weight file: {problem}")


def _weights_problem(handle: h5py.File, projection_dim: int) -> str | None:
    char_embed = handle.get("char_embed")
    if not isinstance(char_embed, h5py.Dataset):
        return "no char_embed dataset"
    w_proj = handle.get("CNN_proj/W_proj")
    if not isinstance(w_proj, h5py.Dataset) or len(w_proj.shape) != 2:
        return "no 2-d CNN_proj/W_proj dataset"
    if w_proj.shape[1] != projection_dim:
        return (
            f"CNN_proj/W_proj has shape {tuple(w_proj.shape)}, but options.json says "
            f"lstm.projection_dim = {projection_dim}"
        )
    return None
