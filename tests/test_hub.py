"""hf:// models through huggingface_hub against a local server that answers the Hub's file
endpoints (HF_ENDPOINT on 127.0.0.1, never the internet): download, revisions, the cache,
offline mode and the errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import elmokit
from elmokit.config import BiLMConfig
from elmokit.initialization import random_bilm
from tests.hub_server import send_file

pytest.importorskip("huggingface_hub")

COMMITS = {"main": "a" * 40, "v1": "b" * 40}


class HubFiles(BaseHTTPRequestHandler):
    files: dict[tuple[str, str, str], bytes] = {}  # (repo, commit, name) -> bytes
    requests: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, body: bool) -> None:
        self.requests.append(f"{self.command} {self.path}")
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            self.send_response(404)
            self.end_headers()
            return
        repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        commit = COMMITS.get(revision, revision)
        if not any(key[0] == repo for key in self.files):
            self.send_response(401)  # what the Hub answers for a missing (or private) repo
            self.send_header("X-Error-Code", "RepoNotFound")
            self.end_headers()
            return
        if commit not in COMMITS.values():
            self.send_response(404)
            self.send_header("X-Error-Code", "RevisionNotFound")
            self.end_headers()
            return
        data = self.files.get((repo, commit, name))
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        send_file(self, data, commit, body)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, BiLMConfig]]:
    config = BiLMConfig(
        filters=[(1, 4), (2, 4)], char_embedding_dim=4, lstm_dim=8, projection_dim=4
    )
    models = {}
    for revision, seed in (("main", 1), ("v1", 2)):
        folder = tmp_path / f"model-{revision}"
        elmokit.save_pretrained(random_bilm(config, seed=seed), folder)
        for name in ("config.json", "model.safetensors"):
            HubFiles.files[("org/tiny-elmo", COMMITS[revision], name)] = (
                folder / name
            ).read_bytes()
        models[revision] = folder
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubFiles)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield models
    server.shutdown()
    HubFiles.files.clear()
    HubFiles.requests.clear()


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def test_load_by_hub_name_and_revision(hub: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    main = elmokit.load("hf://org/tiny-elmo")
    assert _same(main, elmokit.from_pretrained(hub["main"]))
    old = elmokit.load("hf://org/tiny-elmo@v1")
    assert _same(old, elmokit.from_pretrained(hub["v1"]))
    assert not _same(main, old)
    # Offline: the cache answers, without a request.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seen = len(HubFiles.requests)
    assert _same(elmokit.load("hf://org/tiny-elmo"), main)
    assert len(HubFiles.requests) == seen


def test_hub_errors(hub: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="no Hub model 'org/other'"):
        elmokit.load("hf://org/other")
    with pytest.raises(FileNotFoundError, match="no revision 'v9'"):
        elmokit.load("hf://org/tiny-elmo@v9")
    with pytest.raises(ValueError, match="hf://org/name"):
        elmokit.load("hf://not a repo")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="not in the local cache"):
        elmokit.load("hf://org/tiny-elmo@v1")
