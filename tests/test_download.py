"""download_published / `elmokit download` against a local HTTP server on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import shutil
import socket
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from elmokit import cli
from elmokit.io import download
from elmokit.io.download import (
    PUBLISHED_MODELS,
    ModelDownloadError,
    cache_dir,
    download_published,
)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "allennlp-elmo"

pytestmark = pytest.mark.skipif(
    not (FIXTURES / "lm_weights.hdf5").is_file() or not (FIXTURES / "options.json").is_file(),
    reason=f"tiny AllenNLP ELMo fixture not found in {FIXTURES}",
)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the directory; `server.mode` switches on the failure being tested."""

    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        self.server.requests.append(self.path)
        if self.server.mode == "404":
            self.send_error(404, "Not Found")
        elif self.server.mode == "truncate":
            body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        else:
            super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep pytest output clean


class _Server(http.server.ThreadingHTTPServer):
    requests: list[str]
    mode: str


@contextlib.contextmanager
def _serving(directory: Path) -> Iterator[tuple[_Server, str]]:
    """A local HTTP server for `directory`: (server, its base address)."""
    server = _Server(("127.0.0.1", 0), partial(_Handler, directory=str(directory)))
    server.requests, server.mode = [], "ok"
    # A short poll interval keeps shutdown() (and so each test's teardown) fast.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclasses.dataclass
class Mirror:
    root: Path  # directory served; laid out like the real bucket under /models/elmo
    server: _Server
    base_url: str

    @property
    def requests(self) -> list[str]:
        return self.server.requests


@pytest.fixture(autouse=True)
def _no_proxy_no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A configured proxy would route even 127.0.0.1 traffic elsewhere; and the user's own
    # cache / mirror settings must not leak into the tests.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    for var in (download.CACHE_ENV, download.BASE_URL_ENV, "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def tiny_small(monkeypatch: pytest.MonkeyPatch) -> download.PublishedModel:
    """The registry's "small" entry, with the tiny fixture's shape so it passes verification."""
    # The tiny fixture's shape, as its options.json states it.
    model = dataclasses.replace(
        PUBLISHED_MODELS["small"], lstm_dim=64, projection_dim=16, n_highway=2
    )
    monkeypatch.setitem(PUBLISHED_MODELS, "small", model)
    return model


@pytest.fixture
def mirror(tmp_path: Path, tiny_small: download.PublishedModel) -> Iterator[Mirror]:
    root = tmp_path / "served"
    for relpath, fixture in (
        (tiny_small.options_relpath, "options.json"),
        (tiny_small.weights_relpath, "lm_weights.hdf5"),
    ):
        target = root / "models" / "elmo" / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURES / fixture, target)
    with _serving(root) as (server, base):
        yield Mirror(root, server, f"{base}/models/elmo")


def _leftovers(cache: Path) -> list[Path]:
    return [path for path in cache.rglob("*") if path.is_file()]


def test_registry_urls_are_allennlps() -> None:
    expected = {
        "small": "2x1024_128_2048cnn_1xhighway",
        "medium": "2x2048_256_2048cnn_1xhighway",
        "original": "2x4096_512_2048cnn_2xhighway",
        "original-5.5b": "2x4096_512_2048cnn_2xhighway_5.5B",
    }
    contributed = {"pubmed", "portuguese", "portuguese-brwac", "japanese", "german"}
    assert set(PUBLISHED_MODELS) == set(expected) | contributed
    for name, stem in expected.items():
        model = PUBLISHED_MODELS[name]
        prefix = f"https://allennlp.s3.amazonaws.com/models/elmo/{stem}/elmo_{stem}"
        assert model.options_url == prefix + "_options.json"
        assert model.weights_url == prefix + "_weights.hdf5"
        assert f"{model.lstm_dim}_{model.projection_dim}_" in stem
        assert f"{model.n_highway}xhighway" in stem


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "elmokit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "elmokit"
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"


def test_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="original-5.5b") as info:
        download_published("huge", cache=tmp_path, base_url_override="http://127.0.0.1:9")
    assert "small" in str(info.value) and "medium" in str(info.value)


def test_download_then_cache_hit_without_network(mirror: Mirror, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    options, weights = download_published(
        "small", cache=cache, base_url_override=mirror.base_url, progress=True
    )
    assert len(mirror.requests) == 2
    assert options.read_bytes() == (FIXTURES / "options.json").read_bytes()
    assert weights.read_bytes() == (FIXTURES / "lm_weights.hdf5").read_bytes()
    assert weights == cache / PUBLISHED_MODELS["small"].weights_relpath
    assert (weights.parent / (weights.name + ".sha256")).is_file()
    assert not [p for p in _leftovers(cache) if p.name.endswith(".part")]

    again = download_published("small", cache=cache, base_url_override=mirror.base_url)
    assert again == (options, weights)
    assert len(mirror.requests) == 2  # verified cache: no request at all

    download_published("small", cache=cache, base_url_override=mirror.base_url, force=True)
    assert len(mirror.requests) == 4


def test_base_url_and_cache_from_environment(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(download.BASE_URL_ENV, mirror.base_url + "/")
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "envcache"))
    options, weights = download_published("small", progress=False)
    assert options.is_relative_to(tmp_path / "envcache") and weights.is_file()
    assert len(mirror.requests) == 2


def test_corrupted_cache_is_detected_and_downloaded_again(mirror: Mirror, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _, weights = download_published(
        "small", cache=cache, base_url_override=mirror.base_url, progress=False
    )
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit-pattern in the last byte: still "a file", wrong content
    weights.write_bytes(bytes(data))

    _, again = download_published(
        "small", cache=cache, base_url_override=mirror.base_url, progress=False
    )
    assert mirror.requests[2:] == ["/models/elmo/" + PUBLISHED_MODELS["small"].weights_relpath]
    assert again.read_bytes() == (FIXTURES / "lm_weights.hdf5").read_bytes()


def test_hand_copied_files_are_verified_and_adopted(tmp_path: Path, tiny_small: Any) -> None:
    cache = tmp_path / "cache"
    for relpath, fixture in (
        (tiny_small.options_relpath, "options.json"),
        (tiny_small.weights_relpath, "lm_weights.hdf5"),
    ):
        (cache / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURES / fixture, cache / relpath)
    # A port nothing listens on: any network attempt would fail the test.
    options, weights = download_published(
        "small", cache=cache, base_url_override=f"http://127.0.0.1:{_closed_port()}"
    )
    assert weights.with_name(weights.name + ".sha256").is_file()
    assert options.with_name(options.name + ".sha256").is_file()


def test_http_404_names_the_url(mirror: Mirror, tmp_path: Path) -> None:
    mirror.server.mode = "404"
    with pytest.raises(ModelDownloadError) as info:
        download_published(
            "small", cache=tmp_path / "c", base_url_override=mirror.base_url, progress=False
        )
    message = str(info.value)
    assert f"{mirror.base_url}/{PUBLISHED_MODELS['small'].options_relpath}" in message
    assert "404" in message
    assert "only downloads" in message and PUBLISHED_MODELS["small"].options_url in message
    assert not _leftovers(tmp_path / "c")


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_host_says_offline(tmp_path: Path, tiny_small: Any) -> None:
    base = f"http://127.0.0.1:{_closed_port()}/models/elmo"
    with pytest.raises(ModelDownloadError, match="offline") as info:
        download_published("small", cache=tmp_path / "c", base_url_override=base, progress=False)
    assert isinstance(info.value, OSError)
    assert base in str(info.value)
    assert not _leftovers(tmp_path / "c")


def test_truncated_transfer_leaves_nothing(mirror: Mirror, tmp_path: Path) -> None:
    mirror.server.mode = "truncate"
    cache = tmp_path / "c"
    with pytest.raises(ModelDownloadError, match="cut short"):
        download_published("small", cache=cache, base_url_override=mirror.base_url, progress=False)
    assert not _leftovers(cache)


def test_non_hdf5_weights_are_rejected(mirror: Mirror, tmp_path: Path) -> None:
    served = mirror.root / "models" / "elmo" / PUBLISHED_MODELS["small"].weights_relpath
    served.write_bytes(b"<html>Access Denied</html>" * 100)
    cache = tmp_path / "c"
    with pytest.raises(ModelDownloadError, match="not a readable HDF5 file"):
        download_published("small", cache=cache, base_url_override=mirror.base_url, progress=False)
    # The verified options may stay; the weights must not exist under any name.
    names = [path.name for path in _leftovers(cache)]
    assert not [name for name in names if "weights" in name]


def test_projection_mismatch_is_rejected(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Options claiming projection 32 with weights of projection 16: structurally inconsistent.
    served = mirror.root / "models" / "elmo" / PUBLISHED_MODELS["small"].options_relpath
    served.write_text(served.read_text().replace('"projection_dim": 16', '"projection_dim": 32'))
    monkeypatch.setitem(
        PUBLISHED_MODELS, "small", dataclasses.replace(PUBLISHED_MODELS["small"], projection_dim=32)
    )
    with pytest.raises(ModelDownloadError, match="W_proj"):
        download_published(
            "small", cache=tmp_path / "c", base_url_override=mirror.base_url, progress=False
        )


def test_wrong_model_from_mirror_is_rejected(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real registry shape (1024/128) against the tiny files the mirror serves.
    monkeypatch.setitem(
        PUBLISHED_MODELS, "small", dataclasses.replace(PUBLISHED_MODELS["small"], lstm_dim=1024)
    )
    cache = tmp_path / "c"
    with pytest.raises(ModelDownloadError, match="lstm.dim"):
        download_published("small", cache=cache, base_url_override=mirror.base_url, progress=False)
    assert not _leftovers(cache)


def test_cli_download(
    mirror: Mirror,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Only this command: the sibling command modules are not under test here.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("download",))
    monkeypatch.setenv(download.BASE_URL_ENV, mirror.base_url)
    cache = tmp_path / "cache"

    assert cli.main(["download", "small", "--cache-dir", str(cache)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        str(cache / PUBLISHED_MODELS["small"].options_relpath),
        str(cache / PUBLISHED_MODELS["small"].weights_relpath),
    ]
    assert len(mirror.requests) == 2

    assert cli.main(["download", "small", "--cache-dir", str(cache), "--force"]) == 0
    assert len(mirror.requests) == 4

    assert cli.main(["download", "nope", "--cache-dir", str(cache)]) == 2
    assert "known models" in capsys.readouterr().err

    mirror.server.mode = "404"
    assert cli.main(["download", "small", "--cache-dir", str(tmp_path / "c2")]) == 2
    assert "HTTP 404" in capsys.readouterr().err


def _tiny(model: download.PublishedModel, **changes: Any) -> download.PublishedModel:
    """A registry entry with the tiny fixture's shape where it states a shape."""
    shape = {"lstm_dim": 64, "projection_dim": 16, "n_highway": 2} if model.lstm_dim else {}
    return dataclasses.replace(model, **shape, **changes)


def _split_tarball(tmp_path: Path, n_parts: int) -> tuple[list[bytes], bytes]:
    """A .tgz like the German model's (a folder with the pair, a vocabulary and a checkpoint),
    cut into n_parts pieces."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for source, name in (
            (FIXTURES / "options.json", "bilm-output-result/options.json"),
            (FIXTURES / "lm_weights.hdf5", "bilm-output-result/weights.hdf5"),
        ):
            tar.add(source, arcname=name)
        extra = tmp_path / "model.ckpt-1.data-00000-of-00001"
        extra.write_bytes(bytes(range(256)) * 64)
        tar.add(extra, arcname="bilm-output-result/" + extra.name)
    whole = buffer.getvalue()
    size = -(-len(whole) // n_parts)
    return [whole[i : i + size] for i in range(0, len(whole), size)], whole


def _digests(data: bytes) -> tuple[str, str]:
    import hashlib

    return hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest()


def test_every_registry_entry_downloads_into_its_cache_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """name -> the model's own address -> the cached file, for every entry, each model's base
    address pointed at a local server (so the per-model hosts are what is exercised)."""
    root = tmp_path / "served"
    root.mkdir()
    with _serving(root) as (server, local):
        for name, model in list(PUBLISHED_MODELS.items()):
            host = f"{local}/{name}-host"

            def moved(url: str, model: download.PublishedModel = model, host: str = host) -> str:
                return host + url[len(model.base_url) :]

            archive = model.archive
            if archive is not None:
                pieces, whole = _split_tarball(tmp_path, len(archive.parts))
                parts = []
                for part, piece in zip(archive.parts, pieces, strict=True):
                    served = root / moved(part.url)[len(local) + 1 :]
                    served.parent.mkdir(parents=True, exist_ok=True)
                    served.write_bytes(piece)
                    parts.append(download.ArchivePart(moved(part.url), *_digests(piece)))
                md5, sha1 = _digests(whole)
                archive = dataclasses.replace(archive, parts=tuple(parts), md5=md5, sha1=sha1)
            else:
                for url, fixture in (
                    (model.options_url, "options.json"),
                    (model.weights_url, "lm_weights.hdf5"),
                ):
                    served = root / moved(url)[len(local) + 1 :]
                    served.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(FIXTURES / fixture, served)
            tiny = _tiny(
                model,
                base_url=host,
                options_url=moved(model.options_url),
                weights_url=moved(model.weights_url),
                archive=archive,
            )
            monkeypatch.setitem(PUBLISHED_MODELS, name, tiny)
            cache = tmp_path / "cache"
            options, weights = download_published(name, cache=cache, progress=False)
            assert options == cache / model.options_relpath, name
            assert weights == cache / model.weights_relpath, name
            assert options.read_bytes() == (FIXTURES / "options.json").read_bytes(), name
            assert weights.read_bytes() == (FIXTURES / "lm_weights.hdf5").read_bytes(), name
            assert (weights.parent / (weights.name + ".sha256")).is_file(), name
            if archive is not None:  # the parts (checkpoints included) are gone
                leftovers = [p.name for p in _leftovers(cache) if "part-" in p.name]
                assert leftovers == [], leftovers
            requests = len(server.requests)
            assert download_published(name, cache=cache) == (options, weights)
            assert len(server.requests) == requests, name  # cache hit, no request


def test_split_tarball_parts_are_checked_against_published_digests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    german = PUBLISHED_MODELS["german"]
    assert german.archive is not None and len(german.archive.parts) == 4
    pieces, whole = _split_tarball(tmp_path, 4)
    mirror = tmp_path / "mirror"
    parts = []
    for part, piece in zip(german.archive.parts, pieces, strict=True):
        served = mirror / german.relpath(part.url)
        served.parent.mkdir(parents=True, exist_ok=True)
        served.write_bytes(piece)
        parts.append(download.ArchivePart(part.url, *_digests(piece)))
    bad = dataclasses.replace(parts[2], md5="0" * 32)
    archive = dataclasses.replace(german.archive, parts=(*parts[:2], bad, parts[3]))
    monkeypatch.setitem(PUBLISHED_MODELS, "german", dataclasses.replace(german, archive=archive))
    with _serving(mirror) as (_, base):
        with pytest.raises(ModelDownloadError, match="part-02 does not have the published MD5"):
            download_published("german", cache=tmp_path / "cache", base_url_override=base)
        assert not (tmp_path / "cache" / german.options_relpath).exists()
        md5, sha1 = _digests(whole)
        good = dataclasses.replace(archive, parts=tuple(parts), md5="1" * 32, sha1=sha1)
        monkeypatch.setitem(PUBLISHED_MODELS, "german", dataclasses.replace(german, archive=good))
        with pytest.raises(ModelDownloadError, match="joined parts of german"):
            download_published("german", cache=tmp_path / "cache", base_url_override=base)
        assert not (tmp_path / "cache" / german.options_relpath).exists()


def test_nlpl_ids_download_once_and_only_elmo_zips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zipfile

    import elmokit

    mirror = tmp_path / "mirror" / "nlpl"
    mirror.mkdir(parents=True)
    with zipfile.ZipFile(mirror / "209.zip", "w") as out:
        out.write(FIXTURES / "options.json", "options.json")
        out.write(FIXTURES / "lm_weights.hdf5", "model.hdf5")
    with zipfile.ZipFile(mirror / "5.zip", "w") as out:  # a word2vec model, as NLPL has many
        out.writestr("model.bin", b"\x00" * 64)
        out.writestr("meta.json", "{}")
    with _serving(tmp_path / "mirror") as (server, base):
        monkeypatch.setenv(download.BASE_URL_ENV, base)
        monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
        model = elmokit.load("nlpl:209")
        assert model.config.projection_dim == 16
        assert (tmp_path / "cache" / "nlpl" / "209.zip.sha256").is_file()
        elmokit.load("nlpl:209")
        assert server.requests == ["/nlpl/209.zip"]  # the second load is a cache hit
        assert cli.main(["download", "nlpl:209"]) == 0  # the command: the cached ZIP's path
        assert server.requests == ["/nlpl/209.zip"]
        with pytest.raises(ModelDownloadError, match="not an ELMo model"):
            elmokit.load("nlpl:5")
        assert not (tmp_path / "cache" / "nlpl" / "5.zip").exists()
        with pytest.raises(ValueError, match="nlpl:<number>"):
            download.download_nlpl("nlpl:abc")
