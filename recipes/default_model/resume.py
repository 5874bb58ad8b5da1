"""Carry the default-model training run from one machine to the next through git.

The run is longer than one working session and `runs/` is not committed, so its latest full
checkpoint (weights, optimizer state, data position, RNG and carried LSTM state) lives in
`recipes/default_model/resume/`, one copy, replaced each time:

    python recipes/default_model/resume.py save      # latest checkpoint of the run -> resume/
    python recipes/default_model/resume.py restore   # resume/ -> the run folder, then
    OMP_NUM_THREADS=2 elmokit train --config recipes/default_model/train.toml --resume

`save` records the sha256 of the training corpus; `restore` refuses a rebuilt corpus that
differs, since the saved data position points into exactly that file.

Tensor files are stored byte-shuffled and xz-compressed (`*.safetensors.xz`): float32 values
grouped by byte position compress to ~84% (116 MB of weights and Adam moments -> 99 MB; plain
xz or gzip gain ~5%). The transform is lossless: `restore` checks every file's sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import shutil
import sys
from pathlib import Path

import numpy as np

from elmokit.training.checkpoint import latest_checkpoint
from elmokit.training.config import TrainConfig

HERE = Path(__file__).resolve().parent
RESUME_DIR = HERE / "resume"
# Files of the run folder that a resumed run continues (metrics.csv keeps the whole curve).
RUN_FILES = ("vocab.txt", "metrics.csv")
LIMIT_BYTES = 100 * 1024 * 1024


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(source: Path, target: Path) -> None:
    """Byte-shuffle (the 4 bytes of each float32 apart) and xz-compress a file."""
    data = source.read_bytes()
    padded = np.frombuffer(data + b"\0" * (-len(data) % 4), dtype=np.uint8)
    shuffled = np.ascontiguousarray(padded.reshape(-1, 4).T).tobytes()
    target.write_bytes(lzma.compress(shuffled, preset=0))


def unpack(source: Path, target: Path, size: int) -> None:
    shuffled = np.frombuffer(lzma.decompress(source.read_bytes()), dtype=np.uint8)
    target.write_bytes(np.ascontiguousarray(shuffled.reshape(4, -1).T).tobytes()[:size])


def corpus_fingerprint(config: TrainConfig) -> dict[str, str]:
    return {Path(p).name: sha256_of(Path(p)) for p in config.data.train}


def save(config: TrainConfig) -> None:
    run_dir = Path(config.output_dir)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        sys.exit(f"no complete checkpoint in {run_dir / 'checkpoints'}")
    staging = RESUME_DIR.with_name(RESUME_DIR.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    stored = staging / "checkpoints" / checkpoint.name
    stored.mkdir(parents=True)
    files = {}
    for path in sorted(checkpoint.iterdir()):
        files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
        if path.suffix == ".safetensors":
            pack(path, stored / (path.name + ".xz"))
        else:
            shutil.copy2(path, stored / path.name)
    for name in RUN_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, staging / name)
    size = sum(f.stat().st_size for f in staging.rglob("*") if f.is_file())
    if size > LIMIT_BYTES:
        shutil.rmtree(staging)
        sys.exit(f"{checkpoint} stores as {size / 2**20:.1f} MiB, over the 100 MiB limit")
    manifest = {
        "checkpoint": checkpoint.name,
        "files": files,
        "corpus_sha256": corpus_fingerprint(config),
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(RESUME_DIR, ignore_errors=True)
    staging.rename(RESUME_DIR)
    print(f"saved {checkpoint.name} ({size / 2**20:.1f} MiB stored) to {RESUME_DIR}")


def restore(config: TrainConfig) -> None:
    manifest_path = RESUME_DIR / "manifest.json"
    if not manifest_path.exists():
        sys.exit(f"nothing to restore: {manifest_path} does not exist")
    manifest = json.loads(manifest_path.read_text())
    missing = [p for p in config.data.train if not Path(p).exists()]
    if missing:
        sys.exit(f"build the corpus first (prepare_corpus.py): {', '.join(missing)} missing")
    if corpus_fingerprint(config) != manifest["corpus_sha256"]:
        sys.exit(
            "the training corpus differs from the one the checkpoint was trained on "
            f"(sha256 {manifest['corpus_sha256']}); rebuild it with the same prepare_corpus.py "
            "and ../shared/data"
        )
    run_dir = Path(config.output_dir)
    target = run_dir / "checkpoints" / manifest["checkpoint"]
    if target.exists():
        sys.exit(f"{target} exists already: the run folder is ahead of or equal to resume/")
    run_dir.mkdir(parents=True, exist_ok=True)
    staging = target.with_name("." + target.name + ".restoring")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    stored = RESUME_DIR / "checkpoints" / manifest["checkpoint"]
    for name, meta in manifest["files"].items():
        packed = stored / (name + ".xz")
        if packed.exists():
            unpack(packed, staging / name, meta["bytes"])
        else:
            shutil.copy2(stored / name, staging / name)
        if sha256_of(staging / name) != meta["sha256"]:
            shutil.rmtree(staging)
            sys.exit(f"{name} does not restore to the saved bytes (sha256 differs)")
    staging.rename(target)
    for name in RUN_FILES:
        if (RESUME_DIR / name).exists():
            shutil.copy2(RESUME_DIR / name, run_dir / name)
    print(f"restored {manifest['checkpoint']} into {run_dir}; now train with --resume")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=("save", "restore"))
    parser.add_argument("--config", type=Path, default=HERE / "train.toml")
    args = parser.parse_args()
    config = TrainConfig.from_toml(args.config)
    save(config) if args.action == "save" else restore(config)


if __name__ == "__main__":
    main()
