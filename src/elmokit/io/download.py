"""Fetch the published ELMo models by name, and only when explicitly asked.

Nothing else in elmokit touches the network: `download_published` is the single entry point
that does, reached by naming a published model (`elmokit.load("original")`, `--model original`
in any command, `elmokit download original`): naming it is the explicit request. Whatever
it fetches is verified before it appears in the cache under its final name, so a file in the
cache that looks complete is complete.

The cache mirrors the server's relative paths, with a `sha256sum`-style sidecar per file that
records the sha256 of the first download (checked again at every later use):

    <cache>/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_options.json
    <cache>/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_options.json.sha256
    <cache>/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_weights.hdf5
    <cache>/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_weights.hdf5.sha256

Models live on several hosts (each entry has its own `base_url`); those not on AllenNLP's get a
folder of their own (`cache_prefix`). A mirror ($ELMOKIT_MODEL_BASE_URL) serves every model
under the same relative paths as the cache. A model published as a split tarball (the German
one) is downloaded part by part, each checked against the publisher's MD5 and SHA1, and only
its options.json and weights.hdf5 are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
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
class ArchivePart:
    """One piece of a split tarball, with the digests its publisher gives."""

    url: str
    md5: str
    sha1: str


@dataclass(frozen=True)
class SplitTarball:
    """A model published as a .tgz cut into parts (cat part-* > x.tgz): the parts in order,
    the digests of the whole, and the names of the two files elmokit keeps from it."""

    parts: tuple[ArchivePart, ...]
    md5: str
    sha1: str
    options_member: str = "options.json"  # matched by file name anywhere in the archive
    weights_member: str = "weights.hdf5"


@dataclass(frozen=True)
class PublishedModel:
    """One published pre-trained biLM: where it lives, what it is, its expected shape.

    The shape fields double as a check: a downloaded options.json that disagrees with them is
    rejected, so a misconfigured mirror cannot silently hand out the wrong model. `None`
    shape fields (a model whose shape the publisher does not state) are not checked; the
    structural checks (options.json sections, weights matching it) always run.
    """

    name: str
    options_url: str
    weights_url: str
    params_millions: float | None  # as the publisher states it; documentation only
    description: str
    # The expected shape; 0 means the name's row of config.PUBLISHED_SHAPES (the one table).
    lstm_dim: int | None = 0  # LSTM cell size ("LSTM hidden size" in AllenNLP's table)
    projection_dim: int | None = 0  # LSTM output / token vector size; ELMo vectors twice this
    n_highway: int | None = 0
    # Trusted digests where a publisher gives them (AllenNLP gives none).
    options_sha256: str | None = None
    weights_sha256: str | None = None
    base_url: str = DEFAULT_BASE_URL  # the publisher's host; both URLs lie under it
    cache_prefix: str = ""  # the model's folder in the cache and on a mirror ("" for AllenNLP)
    language: str = "en"
    source_page: str = "https://allennlp.org/elmo"
    licence: str = ""
    archive: SplitTarball | None = None  # set when the files come inside a split tarball

    def __post_init__(self) -> None:
        if self.lstm_dim == 0:
            lstm_dim, projection_dim, n_highway = PUBLISHED_SHAPES[self.name]
            object.__setattr__(self, "lstm_dim", lstm_dim)
            object.__setattr__(self, "projection_dim", projection_dim)
            object.__setattr__(self, "n_highway", n_highway)
        # Every URL must sit under the model's base address: a mirror works by swapping it.
        urls = [self.options_url, self.weights_url]
        urls += [part.url for part in self.archive.parts] if self.archive else []
        for url in urls:
            if not url.startswith(self.base_url + "/"):
                raise ValueError(f"{self.name}: {url} is not under {self.base_url}/")

    def relpath(self, url: str) -> str:
        """Where `url` lives in the cache and on a mirror."""
        return self.cache_prefix + url[len(self.base_url) + 1 :]

    @property
    def options_relpath(self) -> str:
        return self.relpath(self.options_url)

    @property
    def weights_relpath(self) -> str:
        return self.relpath(self.weights_url)

    @property
    def output_dim(self) -> int | None:
        return 2 * self.projection_dim if self.projection_dim else None


_ALLENNLP = DEFAULT_BASE_URL
_GERMAN = "https://github.com/t-systems-on-site-services-gmbh/german-elmo-model/releases/download"
_JAPANESE = "https://exawizardsallenlp.blob.core.windows.net/data"
# A publisher that states no shape: the structural checks still run (module doc).
_SHAPE_NOT_STATED: dict[str, Any] = {"lstm_dim": None, "projection_dim": None, "n_highway": None}
_CONTRIBUTED = (
    'contributed on https://allennlp.org/elmo ("Contributed ELMo Models"); the page states '
    "no licence"
)

# The models AllenNLP's ELMo page lists, and the contributed ones it links. The URLs of the
# four English models are those of its "Pre-trained ELMo Models" table (source:
# github.com/allenai/allennlp-website, elmo.html), which links them as
# https://s3-us-west-2.amazonaws.com/allennlp/models/elmo/...; AllenNLP's later
# tutorials/how_to/elmo.md and ElmoTokenEmbedder defaults use the same bucket through
# https://allennlp.s3.amazonaws.com/models/elmo/..., the form used here. The contributed URLs
# are those AllenNLP's page links and flair's ELMoEmbeddings used; the brWaC weights' file name
# is the one users of that model load (elmo_pt_weights_dgx1.hdf5), not checked against the
# server from here. Parameter counts from the same table. docs/models.md lists them all.
PUBLISHED_MODELS: dict[str, PublishedModel] = {
    model.name: model
    for model in (
        PublishedModel(
            name="small",
            options_url=f"{_ALLENNLP}/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_options.json",  # noqa: E501
            weights_url=f"{_ALLENNLP}/2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway_weights.hdf5",  # noqa: E501
            params_millions=13.6,
            description="Small: 1B Word Benchmark, 256-d ELMo vectors",
        ),
        PublishedModel(
            name="medium",
            options_url=f"{_ALLENNLP}/2x2048_256_2048cnn_1xhighway/elmo_2x2048_256_2048cnn_1xhighway_options.json",  # noqa: E501
            weights_url=f"{_ALLENNLP}/2x2048_256_2048cnn_1xhighway/elmo_2x2048_256_2048cnn_1xhighway_weights.hdf5",  # noqa: E501
            params_millions=28.0,
            description="Medium: 1B Word Benchmark, 512-d ELMo vectors",
        ),
        PublishedModel(
            name="original",
            options_url=f"{_ALLENNLP}/2x4096_512_2048cnn_2xhighway/elmo_2x4096_512_2048cnn_2xhighway_options.json",  # noqa: E501
            weights_url=f"{_ALLENNLP}/2x4096_512_2048cnn_2xhighway/elmo_2x4096_512_2048cnn_2xhighway_weights.hdf5",  # noqa: E501
            params_millions=93.6,
            description="Original: 1B Word Benchmark, 1024-d ELMo vectors (the paper's model)",
        ),
        PublishedModel(
            name="original-5.5b",
            options_url=f"{_ALLENNLP}/2x4096_512_2048cnn_2xhighway_5.5B/elmo_2x4096_512_2048cnn_2xhighway_5.5B_options.json",  # noqa: E501
            weights_url=f"{_ALLENNLP}/2x4096_512_2048cnn_2xhighway_5.5B/elmo_2x4096_512_2048cnn_2xhighway_5.5B_weights.hdf5",  # noqa: E501
            params_millions=93.6,
            description="Original (5.5B): Wikipedia + WMT news 2008-2012, 1024-d ELMo vectors",
        ),
        PublishedModel(
            name="pubmed",
            options_url=f"{_ALLENNLP}/contributed/pubmed/elmo_2x4096_512_2048cnn_2xhighway_options.json",  # noqa: E501
            weights_url=f"{_ALLENNLP}/contributed/pubmed/elmo_2x4096_512_2048cnn_2xhighway_weights_PubMed_only.hdf5",  # noqa: E501
            params_millions=None,
            description="PubMed: biomedical abstracts (about 800M tokens), the original shape",
            lstm_dim=4096,
            projection_dim=512,
            n_highway=2,
            licence=_CONTRIBUTED,
        ),
        PublishedModel(
            name="portuguese",
            options_url=f"{_ALLENNLP}/contributed/pt/wikipedia/options.json",
            weights_url=f"{_ALLENNLP}/contributed/pt/wikipedia/elmo_pt_weights.hdf5",
            params_millions=None,
            description="Portuguese: Portuguese Wikipedia",
            **_SHAPE_NOT_STATED,
            language="pt",
            licence=_CONTRIBUTED,
        ),
        PublishedModel(
            name="portuguese-brwac",
            options_url=f"{_ALLENNLP}/contributed/pt/brwac/options.json",
            weights_url=f"{_ALLENNLP}/contributed/pt/brwac/elmo_pt_weights_dgx1.hdf5",
            params_millions=None,
            description="Portuguese: the brWaC web corpus",
            **_SHAPE_NOT_STATED,
            language="pt",
            licence=_CONTRIBUTED,
        ),
        PublishedModel(
            name="japanese",
            options_url=f"{_JAPANESE}/options.json",
            weights_url=f"{_JAPANESE}/weights.hdf5",
            params_millions=None,
            description="Japanese (ExaWizards), linked from AllenNLP's page",
            **_SHAPE_NOT_STATED,
            base_url=_JAPANESE,
            cache_prefix="japanese-exawizards/",
            language="ja",
            licence=_CONTRIBUTED,
        ),
        PublishedModel(
            name="german",
            options_url=f"{_GERMAN}/files_1/options.json",
            weights_url=f"{_GERMAN}/files_1/weights.hdf5",
            params_millions=None,
            description="German: German Wikipedia, articles and comments (962M tokens, T-Systems)",
            **_SHAPE_NOT_STATED,
            base_url=_GERMAN,
            cache_prefix="german-t-systems/",
            language="de",
            source_page="https://github.com/t-systems-on-site-services-gmbh/german-elmo-model",
            licence="BSD-2-Clause (the repository's LICENSE)",
            # Digests as the model's README publishes them.
            archive=SplitTarball(
                parts=tuple(
                    ArchivePart(
                        f"{_GERMAN}/files_1/bilm-output-result.tgz.part-0{index}", md5, sha1
                    )
                    for index, (md5, sha1) in enumerate(
                        (
                            (
                                "755379908885a6fa6fb5b68e4806eae0",
                                "39b16d8eaeaa6ff8c161d092fd223704cc3963e6",
                            ),  # noqa: E501
                            (
                                "0a6544017c64cda91a2b209ecbdc5f2c",
                                "4647c43037b01a67e6c206c9748c5e5b8ab936f8",
                            ),  # noqa: E501
                            (
                                "f316774e8bd12d078bd5e869c64be14b",
                                "10530cb852cf26f6340c2b4d1cfbeb882f44692b",
                            ),  # noqa: E501
                            (
                                "ae44a2d3cf95795edacba690b77a4e7b",
                                "c54bcdc27d769e2c5a077d7ab342ee34dd1f3ec2",
                            ),  # noqa: E501
                        )
                    )
                ),
                md5="2aa41bbc32d42eae052a7ddf37909443",
                sha1="9af7efbdd480a919c45e11188625d59a5943f9b9",
            ),
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
    $ELMOKIT_MODEL_BASE_URL) is a mirror serving every model at its cache path.

    Raises ValueError for an unknown name and ModelDownloadError (an OSError) when the files
    cannot be fetched or fail verification.
    """
    model = PUBLISHED_MODELS.get(name)
    if model is None:
        known = ", ".join(sorted(PUBLISHED_MODELS))
        raise ValueError(f"unknown published ELMo model {name!r}; known models: {known}")

    root = Path(cache).expanduser() if cache is not None else cache_dir()
    mirror = (base_url_override or os.environ.get(BASE_URL_ENV) or "").rstrip("/")

    def address(url: str) -> str:
        return f"{mirror}/{model.relpath(url)}" if mirror else url

    options_path = root / model.options_relpath
    weights_path = root / model.weights_relpath
    hint = _manual_download_hint(model, options_path, weights_path)
    if model.archive is not None:
        if force or not (_intact(options_path) and _intact(weights_path)):
            _fetch_from_archive(model, model.archive, root, address, progress, timeout, hint)
        return options_path, weights_path

    def check_options(path: Path, source: str) -> None:
        _check_options(path, model, source)

    _ensure_file(
        address(model.options_url),
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
        address(model.weights_url),
        weights_path,
        check_weights,
        model.weights_sha256,
        force=force,
        progress=progress,
        timeout=timeout,
        hint=hint,
    )
    return options_path, weights_path


NLPL_BASE_URL = "http://vectors.nlpl.eu/repository/20"
NLPL_PREFIX = "nlpl:"


def download_nlpl(
    name: str,
    cache: Path | None = None,
    force: bool = False,
    base_url_override: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """`nlpl:ID`: the NLPL repository's model ID (http://vectors.nlpl.eu/repository/), fetched
    once into `<cache>/nlpl/ID.zip` and kept only if it is an ELMo ZIP (one options JSON and
    one HDF5 inside); the repository also holds word2vec and fastText models under the same
    numbering. Returns the ZIP's path (elmokit.io.nlpl reads it in place)."""
    repository_id = name[len(NLPL_PREFIX) :] if name.startswith(NLPL_PREFIX) else name
    if not repository_id.isdigit():
        raise ValueError(f"an NLPL model is named nlpl:<number>, e.g. nlpl:209; got {name!r}")
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    mirror = (base_url_override or os.environ.get(BASE_URL_ENV) or "").rstrip("/")
    relpath = f"nlpl/{repository_id}.zip"
    url = f"{mirror}/{relpath}" if mirror else f"{NLPL_BASE_URL}/{repository_id}.zip"
    target = root / relpath
    hint = (
        "(elmokit only downloads a model when it is named.) To get it by hand, fetch "
        f"{NLPL_BASE_URL}/{repository_id}.zip on any machine with internet access and pass "
        "the ZIP's path to elmokit instead."
    )

    def check_zip(path: Path, source: str) -> None:
        from elmokit.io.nlpl import elmo_members

        try:
            elmo_members(path)
        except ValueError as error:
            raise ModelDownloadError(
                f"{source} is not an ELMo model ({error}); NLPL ids also number word2vec and "
                "fastText models"
            ) from None

    _ensure_file(
        url, target, check_zip, None, force=force, progress=progress, timeout=timeout, hint=hint
    )
    return target


# --- split tarballs ----------------------------------------------------------------------------


def _intact(path: Path) -> bool:
    """A cached file whose sha256 still equals the one recorded at its first download."""
    recorded = _read_sidecar(path)
    return recorded is not None and path.is_file() and _sha256_file(path) == recorded


def _digests(path: Path) -> tuple[str, str]:
    md5, sha1 = hashlib.md5(usedforsecurity=False), hashlib.sha1(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            md5.update(chunk)
            sha1.update(chunk)
    return md5.hexdigest(), sha1.hexdigest()


class _Concatenation(io.RawIOBase):
    """The parts read one after another as one stream (cat part-* | ...), hashed on the way."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = list(paths)
        self._handle: IO[bytes] | None = None
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha1 = hashlib.sha1(usedforsecurity=False)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            if self._handle is None:
                if not self._paths:
                    return 0
                self._handle = self._paths.pop(0).open("rb")
            data = self._handle.read(len(buffer))
            if data:
                buffer[: len(data)] = data
                self.md5.update(data)
                self.sha1.update(data)
                return len(data)
            self._handle.close()
            self._handle = None

    def drain(self) -> None:
        while self.read(_CHUNK_BYTES):
            pass

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        super().close()


def _fetch_from_archive(
    model: PublishedModel,
    archive: SplitTarball,
    root: Path,
    address: Callable[[str], str],
    progress: bool,
    timeout: float,
    hint: str,
) -> None:
    """Download the parts (each checked against its published MD5 and SHA1), read the whole
    as one .tgz stream (checked too), keep options.json and weights.hdf5, drop the parts."""
    part_paths = []
    for part in archive.parts:
        target = root / model.relpath(part.url)

        def check_part(path: Path, source: str, part: ArchivePart = part) -> None:
            if _digests(path) != (part.md5, part.sha1):
                raise ModelDownloadError(
                    f"{source} does not have the published MD5 {part.md5} / SHA1 {part.sha1}"
                )

        _ensure_file(
            address(part.url),
            target,
            check_part,
            None,
            force=False,
            progress=progress,
            timeout=timeout,
            hint=hint,
        )
        part_paths.append(target)
    options_path, weights_path = root / model.options_relpath, root / model.weights_relpath
    options_path.parent.mkdir(parents=True, exist_ok=True)
    wanted = {archive.options_member: options_path, archive.weights_member: weights_path}
    stream = _Concatenation(part_paths)
    with contextlib.ExitStack() as stack:
        temporary = {
            name: stack.enter_context(atomic_path(path, suffix=".part"))
            for name, path in wanted.items()
        }
        found: set[str] = set()
        try:
            with tarfile.open(fileobj=stream, mode="r|gz") as tar:
                for member in tar:
                    name = PurePosixPath(member.name).name
                    if member.isfile() and name in wanted and name not in found:
                        source = tar.extractfile(member)
                        assert source is not None  # a regular file always has content
                        with temporary[name].open("wb") as out:
                            shutil.copyfileobj(source, out, _CHUNK_BYTES)
                        found.add(name)
            stream.drain()
        except (tarfile.TarError, EOFError, OSError) as error:
            raise ModelDownloadError(
                f"the parts of {model.name} do not make a readable .tgz ({error}). {hint}"
            ) from error
        if (stream.md5.hexdigest(), stream.sha1.hexdigest()) != (archive.md5, archive.sha1):
            raise ModelDownloadError(
                f"the joined parts of {model.name} do not have the published MD5 "
                f"{archive.md5} / SHA1 {archive.sha1}. {hint}"
            )
        missing = sorted(set(wanted) - found)
        if missing:
            raise ModelDownloadError(f"the {model.name} archive has no {', '.join(missing)}")
        options = _check_options(temporary[archive.options_member], model, archive.options_member)
        _check_weights(
            temporary[archive.weights_member],
            int(options["lstm"]["projection_dim"]),
            archive.weights_member,
        )
    for path in wanted.values():
        _write_sidecar(path, _sha256_file(path))
    for path in part_paths:  # the parts hold training checkpoints too: gigabytes not needed
        _discard(path)


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
    if model.archive is not None:
        parts = "\n".join(f"  {part.url}" for part in model.archive.parts)
        return (
            "(elmokit only downloads a published model when it is named: elmokit.load(name), "
            "--model name, or `elmokit download name`.) To get it by hand, fetch on any machine "
            f"with internet access\n{parts}\njoin them (cat part-* > model.tgz), unpack "
            f"{model.archive.options_member} and {model.archive.weights_member} and pass their "
            "paths to elmokit instead of the model name. A mirror serving the cache layout can "
            f"be used by setting {BASE_URL_ENV}."
        )
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
    if not isinstance(options["lstm"].get("projection_dim"), int):
        raise ModelDownloadError(f"{source} has no whole-number lstm.projection_dim")
    for (section, key), want in expected.items():
        if want is None:  # the publisher does not state it
            continue
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
