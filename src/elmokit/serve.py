"""`elmokit serve`: ELMo vectors over HTTP (FastAPI + uvicorn; `pip install elmokit[serve]`).

    POST /embed   {"sentences": [["The", "cat"], "raw text, tokenised by the server"],
                   "output": "all" | "top" | "average" | "sentence", "pooling": "mean"}
               -> {"vectors": [...], "dim": 2P, "n_layers": L+1}
    GET  /healthz -> {"status": "ok", "model": ..., "dim": ..., "precision": ...}

Stateless: the biLM runs with the "reset" policy, so a sentence's vectors do not depend on the
other requests it was batched with. Concurrent requests are micro-batched: the first request
opens a batch, joined by every request already waiting and, when requests have been arriving
together, by those arriving within `max_wait_ms`, up to `max_batch_tokens` tokens; it runs on
one worker thread (the model is used by one call at a time). `max_wait_ms` 0 turns batching
off (one request per biLM call). Limits: `max_request_bytes`
(413), `max_request_tokens` (413), malformed requests (422), each with a message saying which.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from elmokit.embedder import Embedder

Output = Literal["all", "top", "average", "sentence"]


class EmbedRequest(BaseModel):
    """The body of POST /embed (validated by FastAPI: anything else is a 422)."""

    sentences: list[list[str] | str] = Field(min_length=1)
    output: Output = "all"
    pooling: Literal["mean", "max"] = "mean"


@dataclass
class ServeLimits:
    max_wait_ms: float = 5.0
    max_batch_tokens: int = 4096
    max_request_tokens: int = 2048
    max_request_bytes: int = 1_000_000


@dataclass
class _Pending:
    sentences: list[list[str]]
    future: asyncio.Future[list[np.ndarray]]
    tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = sum(len(s) for s in self.sentences)


class MicroBatcher:
    """Collects concurrent requests into one biLM call (see the module docstring)."""

    def __init__(self, embedder: Embedder, limits: ServeLimits) -> None:
        self.embedder, self.limits = embedder, limits
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="elmokit-model")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # biLM calls made, for /healthz and the load test
        self._concurrent = False  # did the last batch hold several requests?

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def embed(self, sentences: list[list[str]]) -> list[np.ndarray]:
        assert self._queue is not None, "start() first"
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(sentences, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            if self.limits.max_wait_ms > 0:
                await self._gather(batch)
            self._concurrent = len(batch) > 1
            sentences = [s for pending in batch for s in pending.sentences]
            try:
                arrays = await loop.run_in_executor(self._worker, self._compute, sentences)
            except Exception as error:  # handed to every waiting request
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            self.batches += 1
            start = 0
            for pending in batch:
                end = start + len(pending.sentences)
                if not pending.future.done():
                    pending.future.set_result(arrays[start:end])
                start = end

    async def _gather(self, batch: list[_Pending]) -> None:
        """Add waiting requests to `batch`, up to the token budget: all those already queued
        (under load they pile up during the previous call), then, only when requests have
        been arriving together (the last batch held several), those arriving within
        max_wait_ms. A lone client so pays no window: measured, waking from the window's
        sleep on a busy machine cost far more than the window itself."""
        assert self._queue is not None
        budget = self.limits.max_batch_tokens
        tokens = sum(pending.tokens for pending in batch)
        while tokens < budget and not self._queue.empty():
            batch.append(self._queue.get_nowait())
            tokens += batch[-1].tokens
        if not self._concurrent:
            return
        deadline = time.monotonic() + self.limits.max_wait_ms / 1000.0
        while tokens < budget:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                pending = await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                break
            batch.append(pending)
            tokens += pending.tokens

    def _compute(self, sentences: list[list[str]]) -> list[np.ndarray]:
        return list(self.embedder.embed_sentences(sentences))


def reduce_output(layers: np.ndarray, output: Output, pooling: str) -> np.ndarray:
    """[L+1, T, D] -> what the request asked for."""
    if output == "all":
        return layers
    if output == "top":
        return layers[-1]
    average = layers.mean(axis=0)  # [T, D]
    if output == "average":
        return average
    if average.shape[0] == 0:
        return np.zeros(average.shape[1], dtype=np.float32)
    pooled = {"mean": average.mean(axis=0), "max": average.max(axis=0)}
    return pooled.get(pooling, average.mean(axis=0))


def create_app(embedder: Embedder, limits: ServeLimits | None = None, model_name: str = "") -> Any:
    """The FastAPI application around one Embedder."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException, Request

    limits = limits or ServeLimits()
    batcher = MicroBatcher(embedder, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="elmokit", lifespan=lifespan)

    @app.middleware("http")
    async def limit_size(request: Request, call_next: Any) -> Any:
        from fastapi.responses import JSONResponse

        declared = request.headers.get("content-length")
        if declared is not None and int(declared) > limits.max_request_bytes:
            return JSONResponse(
                status_code=413,
                content={"detail": f"request body over {limits.max_request_bytes} bytes"},
            )
        return await call_next(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name,
            "dim": embedder.dim,
            "n_layers": embedder.n_layers,
            "precision": embedder.model.inference_mode,
            "batches": batcher.batches,
        }

    @app.post("/embed")
    async def embed(body: EmbedRequest) -> dict[str, Any]:
        sentences = [embedder.tokenize(s) for s in body.sentences]
        n_tokens = sum(len(s) for s in sentences)
        if n_tokens > limits.max_request_tokens:
            raise HTTPException(
                status_code=413,
                detail=f"{n_tokens} tokens in this request; the limit is "
                f"{limits.max_request_tokens} (send fewer sentences per request)",
            )
        arrays = await batcher.embed(sentences)
        vectors = [reduce_output(a, body.output, body.pooling).tolist() for a in arrays]
        return {"vectors": vectors, "dim": embedder.dim, "n_layers": embedder.n_layers}

    return app


def serve(
    embedder: Embedder,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServeLimits | None = None,
    model_name: str = "",
) -> None:
    """Run the app with uvicorn until stopped (Ctrl-C / SIGTERM)."""
    import uvicorn

    uvicorn.run(create_app(embedder, limits, model_name), host=host, port=port, log_level="info")
