"""What the local Hub test servers share: answering a file request as the Hub does."""

from __future__ import annotations

import hashlib
from http.server import BaseHTTPRequestHandler


def send_file(handler: BaseHTTPRequestHandler, data: bytes, commit: str, body: bool) -> None:
    """200 with the headers huggingface_hub reads (commit, ETag, length); the bytes on GET."""
    handler.send_response(200)
    handler.send_header("X-Repo-Commit", commit)
    handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if body:
        handler.wfile.write(data)
