"""One sentence of 20 tokens, the serving case (issue #13, item 7): how long, cold and warm?

Cold: a fresh process per model, timing `import elmokit`, `elmokit.load`, and the first
`Embedder.embed_sentence` (which also prepares the fast path's weights). Warm: the median of
`--calls` further calls of
- "bare model (reference)": `model(model.batch_to_ids([tokens]))` under inference_mode;
- "Embedder.embed_sentence": the library path (windows, dedupe, buckets, numpy out);
- "Embedder.encode": the sentence vector (mean over tokens of the layer average).

    python benchmarks/latency.py --model elmokit-small-en --threads 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SENTENCE = (
    "The bank raised its interest rates again on Monday , and the markets fell sharply as a "
    "result of it ."
).split()

CHILD = """
import json, statistics, sys, time
start = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[3]))
import elmokit
from elmokit.embedder import Embedder
imported = time.perf_counter()
model = elmokit.load(sys.argv[1], weights=sys.argv[2] or None)
loaded = time.perf_counter()
embedder = Embedder(model)
tokens = json.loads(sys.argv[4])
embedder.embed_sentence(tokens)
first = time.perf_counter()
def median_ms(call, n):
    times = []
    for _ in range(n):
        t = time.perf_counter(); call(); times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)
ids = model.batch_to_ids([tokens])
def bare():
    with torch.inference_mode():
        model(ids)
n = int(sys.argv[5])
print(json.dumps({
    "import_s": imported - start, "load_s": loaded - imported, "first_call_s": first - loaded,
    "bare_ms": median_ms(bare, n),
    "embed_sentence_ms": median_ms(lambda: embedder.embed_sentence(tokens), n),
    "encode_ms": median_ms(lambda: embedder.encode([tokens]), n),
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="elmokit-small-en")
    parser.add_argument("--weights", default="")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, args.model, args.weights, str(args.threads),
         json.dumps(SENTENCE), str(args.calls)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    wall = time.perf_counter() - started
    print(f"{args.model}, {len(SENTENCE)} tokens, {args.threads} thread(s), "
          f"median of {args.calls} warm calls")  # fmt: skip
    print("| | ms |\n| --- | ---: |")
    cold = 1000 * (result["import_s"] + result["load_s"] + result["first_call_s"])
    print(f"| cold: import + load + first call (process start not included) | {cold:,.0f} |")
    print(f"| of which the first call | {1000 * result['first_call_s']:,.0f} |")
    for key, name in (
        ("bare_ms", "warm: bare model (reference)"),
        ("embed_sentence_ms", "warm: Embedder.embed_sentence"),
        ("encode_ms", "warm: Embedder.encode"),
    ):
        print(f"| {name} | {result[key]:.1f} |")
    print(f"(whole child process, start included: {wall:.1f} s)")


if __name__ == "__main__":
    main()
