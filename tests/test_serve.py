"""`elmokit serve` as a user runs it: a real uvicorn server in a subprocess on 127.0.0.1,
concurrent HTTP requests, vectors equal to the library's, limits answered 413 / 422."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import elmokit
from elmokit.embedder import Embedder

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

SENTENCES = [
    ["The", "bank", "raised", "rates", "."],
    ["We", "sat", "by", "the", "river", "bank"],
    ["Rates", "rose"],
    ["It", "was", "the", "best", "of", "times"],
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(fixture_dir: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "elmokit.cli", "serve", "--port", str(port)]
    command += ["--model", str(fixture_dir / "options.json")]
    command += ["--weights", str(fixture_dir / "lm_weights.hdf5"), "--max-wait-ms", "50"]
    command += ["--max-request-tokens", "64", "--max-request-bytes", "20000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"elmokit serve did not come up: {output[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_concurrent_requests_get_the_library_vectors(server: str, fixture_dir: Path) -> None:
    model = elmokit.load(fixture_dir / "options.json", weights=fixture_dir / "lm_weights.hdf5")
    embedder = Embedder(model)
    expected = [embedder.embed_sentence(s) for s in SENTENCES]
    before = httpx.get(f"{server}/healthz").json()
    assert before["status"] == "ok" and before["dim"] == 32 and before["precision"] == "fp32"

    def ask(index: int) -> tuple[int, list]:
        body = {"sentences": [SENTENCES[index % 4]], "output": "all"}
        return index, httpx.post(f"{server}/embed", json=body, timeout=60).json()["vectors"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, range(16)))
    for index, vectors in answers:
        np.testing.assert_allclose(np.array(vectors[0]), expected[index % 4], atol=1e-5)
    after = httpx.get(f"{server}/healthz").json()
    assert after["batches"] - before["batches"] < 16  # concurrent requests shared biLM calls

    top = httpx.post(f"{server}/embed", json={"sentences": ["Rates rose"], "output": "top"})
    np.testing.assert_allclose(np.array(top.json()["vectors"][0]), expected[2][-1], atol=1e-5)
    pooled = httpx.post(f"{server}/embed", json={"sentences": [SENTENCES[0]], "output": "sentence"})
    mean = expected[0].mean(axis=0).mean(axis=0)
    np.testing.assert_allclose(np.array(pooled.json()["vectors"][0]), mean, atol=1e-5)


def test_limits_and_bad_requests(server: str) -> None:
    too_many = httpx.post(f"{server}/embed", json={"sentences": [["word"] * 65]})
    assert too_many.status_code == 413 and "limit is 64" in too_many.json()["detail"]
    too_big = httpx.post(f"{server}/embed", json={"sentences": ["x " * 15000]})
    assert too_big.status_code == 413 and "bytes" in too_big.json()["detail"]
    for body in (
        {},
        {"sentences": []},
        {"sentences": [[1, 2]]},
        {"sentences": ["a"], "output": "x"},
    ):
        assert httpx.post(f"{server}/embed", json=body).status_code == 422
    assert httpx.post(f"{server}/embed", content=b"not json").status_code == 422
    headers = {"content-type": "application/json"}
    bad_utf8 = httpx.post(f"{server}/embed", content=b'{"sentences": ["\xff\xfe"]}',
                          headers=headers)  # fmt: skip
    assert 400 <= bad_utf8.status_code < 500
    huge = httpx.post(f"{server}/embed", json={"sentences": [["w"] * 100_000]}, timeout=60)
    assert huge.status_code == 413
    ten_mb = httpx.post(f"{server}/embed", content=b"{" + b" " * 10_000_000 + b"}",
                        headers=headers, timeout=60)  # fmt: skip
    assert ten_mb.status_code == 413
    # ... and the server keeps serving.
    assert httpx.get(f"{server}/healthz").status_code == 200
    assert httpx.post(f"{server}/embed", json={"sentences": ["Rates rose"]}).status_code == 200
