"""push_to_hub through huggingface_hub's own client against a local server that answers the
Hub's repository, upload and file endpoints (HF_ENDPOINT on 127.0.0.1, never the internet),
then the pushed model read back with elmokit.load("hf://...")."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import pytest
import torch

import elmokit
from elmokit.config import BiLMConfig
from elmokit.initialization import random_bilm
from elmokit.io.efml import load_efml
from elmokit.io.hub import push_to_hub
from elmokit.io.weights_hdf5 import WeightFileError
from tests.conftest import SHARED
from tests.hub_server import send_file

pytest.importorskip("huggingface_hub")


class HubRepos(BaseHTTPRequestHandler):
    """Repositories as {repo: {"commits": [{"oid", "files": {path: bytes}}], ...}}."""

    repos: dict[str, list[dict[str, bytes]]] = {}
    seen: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        self.seen.append(f"POST {path}")
        body = self._body()
        if path == "/api/repos/create":
            request = json.loads(body)
            repo = f"{request['organization']}/{request['name']}"
            self.repos.setdefault(repo, [])
            self._json(200, {"url": f"http://{self.headers['Host']}/{repo}", "name": repo})
        elif path == "/api/validate-yaml":
            self._json(200, {})
        elif "/preupload/" in path:
            files = json.loads(body)["files"]
            answer = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
            ]
            self._json(200, {"files": answer})
        elif "/commit/" in path:
            repo = "/".join(path.split("/")[3:5])
            files = dict(self.repos[repo][-1]) if self.repos.get(repo) else {}
            for line in body.decode().splitlines():
                entry = json.loads(line)
                if entry["key"] == "file":
                    value = entry["value"]
                    files[value["path"]] = base64.b64decode(value["content"])
            self.repos[repo].append(files)
            oid = hashlib.sha1(
                repr(sorted(files)).encode() + bytes(len(self.repos[repo]))
            ).hexdigest()
            files["__oid__"] = oid.encode()
            url = f"http://{self.headers['Host']}/{repo}/commit/{oid}"
            self._json(200, {"commitUrl": url, "commitOid": oid})
        else:
            self._json(404, {"error": f"not served here: {path}"})

    def _file(self, body: bool) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        self.seen.append(f"{self.command} {self.path}")
        if len(parts) < 5 or parts[2] != "resolve" or not self.repos.get("/".join(parts[:2])):
            self.send_response(401)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.end_headers()
            return
        files = self.repos["/".join(parts[:2])][-1]
        data = files.get("/".join(parts[4:]))
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        send_file(self, data, files["__oid__"].decode(), body)

    def do_HEAD(self) -> None:  # noqa: N802
        self._file(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._file(body=True)


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[HubRepos]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubRepos)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield HubRepos
    server.shutdown()
    HubRepos.repos.clear()
    HubRepos.seen.clear()


TINY = BiLMConfig(filters=[(1, 4), (2, 4)], char_embedding_dim=4, lstm_dim=8, projection_dim=4)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def test_push_then_load_back(hub: type[HubRepos], tmp_path: Path) -> None:
    model = random_bilm(TINY, seed=3)
    url = model.push_to_hub("org/pushed-elmo", include_hdf5=True)
    assert "org/pushed-elmo/commit/" in url
    files = hub.repos["org/pushed-elmo"][-1]
    assert {"config.json", "model.safetensors", "README.md", "options.json", "weights.hdf5"} <= set(
        files
    )
    card = files["README.md"].decode()
    assert (
        card.startswith("---\nlibrary_name: elmokit")
        and 'elmokit.load("hf://org/pushed-elmo")' in card
    )
    assert _same(elmokit.load("hf://org/pushed-elmo"), model)
    # The HDF5 pair is the published layout: it loads as bilm-tf files do.
    (tmp_path / "options.json").write_bytes(files["options.json"])
    (tmp_path / "weights.hdf5").write_bytes(files["weights.hdf5"])
    with h5py.File(tmp_path / "weights.hdf5", "r") as weights:
        assert "char_embed" in weights
    assert _same(elmokit.load(tmp_path / "options.json", weights=tmp_path / "weights.hdf5"), model)
    # A second push is a new commit on the same repository; load follows main.
    other = random_bilm(TINY, seed=4)
    push_to_hub(other, "org/pushed-elmo", commit_message="retrained")
    assert len(hub.repos["org/pushed-elmo"]) == 2
    assert _same(elmokit.load("hf://org/pushed-elmo"), other)


def test_push_a_directory_keeps_its_vocabulary_and_dictionaries(
    hub: type[HubRepos], tmp_path: Path
) -> None:
    efml = SHARED / "fixtures" / "efml" / "efml-tiny-cnn-word"
    if not efml.is_dir():
        pytest.skip("EFML fixture missing")
    model = load_efml(efml)
    elmokit.save_pretrained(model, tmp_path / "native")
    (tmp_path / "native" / "vocab.txt").write_text("<S>\n</S>\n<UNK>\nbank\n")
    push_to_hub(tmp_path / "native", "org/zh-elmo", card="# my card\n")
    files = hub.repos["org/zh-elmo"][-1]
    assert files["README.md"] == b"# my card\n"
    assert {"characters.json", "vocab.txt"} <= set(files)
    again = elmokit.load("hf://org/zh-elmo")
    assert again.characters.kind == "dictionary" and _same(again, model)
    with pytest.raises(WeightFileError, match="cannot be written in the bilm-tf HDF5 layout"):
        push_to_hub(model, "org/zh-elmo-2", include_hdf5=True)
    with pytest.raises(ValueError, match="not a Hub repository id"):
        push_to_hub(model, "no-slash")
