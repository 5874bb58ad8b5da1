"""Load test of `elmokit serve`: throughput and latency at 1, 8 and 64 concurrent clients, with
micro-batching (the default 5 ms window) against one request at a time (`--max-wait-ms 0`:
each biLM call takes only the request at the head of the queue). Bounded: every client sends
`--requests` requests of one sentence; the servers run on 127.0.0.1 and are stopped at the end.

    python benchmarks/serve_load.py --model elmokit-small-en --requests 40

Prints one row per (mode, clients): requests/s, p50 and p99 latency in ms, the server's peak
RSS (MB, from /proc) and how many biLM calls served the requests. The "reference" row of each
client count is the one-at-a-time server.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

SENTENCES = [
    "The bank raised its interest rates again on Monday .",
    "We sat on the river bank and watched the boats go by .",
    "Rates rose .",
    "It was the best of times , it was the worst of times .",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(args: argparse.Namespace, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "elmokit.cli", "serve", "--port", str(port)]
    command += ["--model", args.model, "--max-wait-ms", str(max_wait_ms)]
    command += ["--threads", str(args.threads)]
    if args.weights:
        command += ["--weights", args.weights]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("the server did not start")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_clients(url: str, clients: int, requests: int) -> tuple[float, list[float]]:
    def client(index: int) -> list[float]:
        latencies = []
        with httpx.Client(timeout=120) as session:
            for k in range(requests):
                body = {"sentences": [SENTENCES[(index + k) % len(SENTENCES)]], "output": "top"}
                start = time.perf_counter()
                session.post(f"{url}/embed", json=body).raise_for_status()
                latencies.append(time.perf_counter() - start)
        return latencies

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        latencies = [x for result in pool.map(client, range(clients)) for x in result]
    return time.perf_counter() - start, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="elmokit-small-en")
    parser.add_argument("--weights")
    parser.add_argument("--requests", type=int, default=40, help="per client")
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    print("| server | clients | requests/s | p50 ms | p99 ms | biLM calls | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, wait_ms in (("one at a time (reference)", 0.0), ("micro-batched, 5 ms", 5.0)):
        process, url = start_server(args, wait_ms)
        try:
            for clients in (int(c) for c in args.clients.split(",")):
                before = httpx.get(f"{url}/healthz").json()["batches"]
                seconds, latencies = run_clients(url, clients, args.requests)
                calls = httpx.get(f"{url}/healthz").json()["batches"] - before
                cuts = statistics.quantiles(latencies, n=100)
                print(
                    f"| {name} | {clients} | {len(latencies) / seconds:.1f} | "
                    f"{1000 * cuts[49]:.1f} | {1000 * cuts[98]:.1f} | {calls} | "
                    f"{peak_rss_mb(process.pid):.0f} |"
                )
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
