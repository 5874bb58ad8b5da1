"""Bad inputs a new user hits, each run as the user runs it (the command in a subprocess): a
non-zero exit, a message naming the problem, no traceback, and nothing of the input or of
earlier output lost. Test names give the item of the issue that reported it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "allennlp-elmo"


def elmokit(*args: str | Path, cwd: Path | None = None, umask: int | None = None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ELMOKIT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "elmokit.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
        timeout=300,
    )


def assert_refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in message, message


@pytest.fixture(scope="module")
def model_args(fixture_dir: Path) -> list[str]:
    return [
        "--model",
        str(fixture_dir / "options.json"),
        "--weights",
        str(fixture_dir / "lm_weights.hdf5"),
    ]


# -- item 1: a NUL character ----------------------------------------------------------------


def test_item1_nul_in_embed_input_keeps_the_lines_before_it(
    tmp_path: Path, model_args: list[str]
) -> None:
    source, output = tmp_path / "in.txt", tmp_path / "out.hdf5"
    source.write_bytes(b"The cat sat .\nA dog ran .\nbinary \x00 junk\nLast line .\n")
    result = elmokit("embed", source, output, *model_args, "--checkpoint-every", "1")
    assert_refused(result, "line 3", "NUL")
    assert not output.exists() and Path(f"{output}.partial").exists()
    source.write_bytes(b"The cat sat .\nA dog ran .\nclean now\nLast line .\n")
    resumed = elmokit("embed", source, output, *model_args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    with h5py.File(output, "r") as handle:
        assert {"0", "1", "2", "3"} <= set(handle.keys())
    source.write_bytes(b"binary \x00 junk\n")
    replaced = elmokit("embed", source, tmp_path / "r.hdf5", *model_args, "--errors", "replace")
    assert replaced.returncode == 0, replaced.stderr


def test_item5_a_bad_line_keeps_every_line_before_it(tmp_path: Path, model_args: list[str]) -> None:
    """The bad line falls in the second look-ahead window: the 38 lines read before it in that
    window are embedded and kept too, and the message says how to continue."""
    good = [f"sentence {i} is fine ." for i in range(600)]
    source, output = tmp_path / "in.txt", tmp_path / "out.hdf5"
    broken = [*good[:550], "bad \udcff byte"]
    source.write_bytes(
        "\n".join(broken).encode("utf-8", "surrogateescape")
        + b"\n"
        + "\n".join(good[551:]).encode()
    )
    options = [*model_args, "--batch-size", "32", "--top"]
    result = elmokit("embed", source, output, *options)
    assert_refused(result, "line 551", "not valid UTF-8", "--resume")
    with h5py.File(f"{output}.partial", "r") as partial:
        assert int(partial["_elmokit_progress"].attrs["completed_lines"]) == 550
        assert partial["_elmokit_progress"]["index"].shape[0] == 550
    source.write_text("\n".join(good) + "\n")
    assert elmokit("embed", source, output, *options, "--resume").returncode == 0
    with h5py.File(output, "r") as handle:
        assert len([k for k in handle if k.isdigit()]) == 600


# -- item 2: the input given as the output --------------------------------------------------


def test_item2_embed_refuses_to_write_over_its_input(tmp_path: Path, model_args: list[str]) -> None:
    source = tmp_path / "in.txt"
    source.write_text("The cat sat .\n")
    result = elmokit("embed", source, source, *model_args, "--overwrite")
    assert_refused(result, "is the input file")
    assert source.read_text() == "The cat sat .\n"
    link = tmp_path / "link.txt"
    link.symlink_to(source)
    assert_refused(elmokit("embed", source, link, *model_args, "--overwrite"), "is the input file")
    assert source.read_text() == "The cat sat .\n"


# -- item 3: rerunning a training run ---------------------------------------------------------


def _train_config(tmp_path: Path, **optim: object) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat .\na dog ran in the park .\n" * 20)
    lines = [
        'output_dir = "run"',
        "[model]",
        "lstm_dim = 16",
        "projection_dim = 8",
        "filters = [[1, 4], [2, 4]]",
        "char_embedding_dim = 4",
        "[data]",
        'train = ["corpus.txt"]',
        "batch_size = 4",
        "unroll_steps = 5",
        "[optim]",
        "max_steps = 2",
        *(f"{key} = {json.dumps(value)}" for key, value in optim.items()),
        "[log]",
        "tensorboard = false",
        "log_every = 1",
    ]
    path = tmp_path / "train.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_item3_train_never_silently_restarts_a_run(tmp_path: Path) -> None:
    config = _train_config(tmp_path)
    first = elmokit("train", "--config", config)
    assert first.returncode == 0, first.stderr
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    metrics = (tmp_path / "run" / "metrics.csv").read_text()
    assert_refused(elmokit("train", "--config", config), "already holds a run", "--resume")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == checkpoints
    assert (tmp_path / "run" / "metrics.csv").read_text() == metrics
    again = elmokit("train", "--config", config, "--overwrite")
    assert again.returncode == 0, again.stderr


def test_item3_resume_drops_metrics_rows_after_the_checkpoint(tmp_path: Path) -> None:
    config = _train_config(tmp_path)
    assert elmokit("train", "--config", config).returncode == 0
    run = tmp_path / "run"
    # A run killed after logging step 7 but before its next checkpoint (step 2 here).
    with (run / "metrics.csv").open("a") as handle:
        handle.write(
            "7"
            + "," * (len((run / "metrics.csv").read_text().splitlines()[0].split(",")) - 1)
            + "\n"
        )
    resumed = elmokit("train", "--config", config, "--resume", "--max-steps", "3")
    assert resumed.returncode == 0, resumed.stderr
    steps = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert 7 not in steps and steps == sorted(steps)


# -- item 4: file modes ---------------------------------------------------------------------


def test_item4_model_files_follow_the_umask(tmp_path: Path) -> None:
    options = tmp_path / "options.json"
    options.write_text((FIXTURES / "options.json").read_text())
    for form in ("native", "hdf5"):
        result = elmokit("random-model", options, tmp_path / form, "--format", form, umask=0o022)
        assert result.returncode == 0, result.stderr
        for path in (tmp_path / form).iterdir():
            assert path.stat().st_mode & 0o777 == 0o644, (path, oct(path.stat().st_mode))


# -- item 6: devices and configs ------------------------------------------------------------


@pytest.mark.parametrize(
    "device, words", [("cuda", ["--device", "CPU-only"]), ("gpu0", ["not a device"])]
)
def test_item6_bad_devices(
    tmp_path: Path, model_args: list[str], device: str, words: list[str]
) -> None:
    if device == "cuda":
        import torch

        if torch.backends.cuda.is_built():
            pytest.skip("this torch has CUDA")
    source = tmp_path / "in.txt"
    source.write_text("The cat sat .\n")
    assert_refused(
        elmokit("embed", source, tmp_path / "o.hdf5", *model_args, "--device", device), *words
    )
    assert_refused(
        elmokit("train", "--config", _train_config(tmp_path), "--device", device), *words
    )
    assert_refused(elmokit("evaluate", "elmokit-small-en", source, "--device", device), *words)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\n")
    assert_refused(
        elmokit("cache-vocab", vocab, tmp_path / "c.hdf5", *model_args, "--device", device), *words
    )


@pytest.mark.parametrize(
    "optim, words",
    [
        ({"lr": "0.1"}, ["[optim] lr", "number"]),
        ({"clip_norm": -1}, ["[optim] clip_norm", ">= 0"]),
        ({"dropout": 1.5}, ["dropout"]),
    ],
)
def test_item6_training_config_mistakes(tmp_path: Path, optim: dict, words: list[str]) -> None:
    assert_refused(elmokit("train", "--config", _train_config(tmp_path, **optim)), *words)


def test_item6_more_config_mistakes(tmp_path: Path) -> None:
    config = _train_config(tmp_path)
    text = config.read_text()
    config.write_text(text.replace("batch_size = 4", "batch_size = 0"))
    assert_refused(elmokit("train", "--config", config), "[data] batch_size", ">= 1")
    config.write_text(text.replace("lstm_dim = 16", "lstm_size = 16"))
    assert_refused(elmokit("train", "--config", config), "unknown keys in [model]", "lstm_dim")
    config.write_text(text)
    (tmp_path / "corpus.txt").write_text("\n\n")
    assert_refused(elmokit("train", "--config", config), "no sentences")


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda o: o["lstm"].update(n_layers=2.5), ["lstm.n_layers", "whole number"]),
        (lambda o: o["lstm"].update(dim="1024"), ["lstm.dim", "whole number"]),
        (lambda o: o["char_cnn"]["filters"].__setitem__(0, [1, "32"]), ["char_cnn.filters"]),
    ],
)
def test_item6_options_json_types(tmp_path: Path, edit, words: list[str]) -> None:
    options = json.loads((FIXTURES / "options.json").read_text())
    edit(options)
    (tmp_path / "options.json").write_text(json.dumps(options))
    result = elmokit("convert", tmp_path / "options.json", tmp_path / "out", "--to", "native",
                     "--weights", FIXTURES / "lm_weights.hdf5")  # fmt: skip
    assert_refused(result, *words)


# -- item 7: one output policy, --version -----------------------------------------------------


def test_item7_outputs_are_never_silently_replaced(tmp_path: Path) -> None:
    corpus, vocab = tmp_path / "corpus.txt", tmp_path / "vocab.txt"
    corpus.write_text("a b c\n")
    vocab.write_text("keep me\n")
    assert_refused(elmokit("vocab", corpus, "-o", vocab), "exists", "--overwrite")
    assert vocab.read_text() == "keep me\n"
    assert elmokit("vocab", corpus, "-o", vocab, "--overwrite").returncode == 0
    options = tmp_path / "options.json"
    options.write_text((FIXTURES / "options.json").read_text())
    assert elmokit("random-model", options, tmp_path / "m").returncode == 0
    before = (tmp_path / "m" / "weights.hdf5").read_bytes()
    assert_refused(elmokit("random-model", options, tmp_path / "m", "--seed", "3"), "--overwrite")
    assert (tmp_path / "m" / "weights.hdf5").read_bytes() == before


def test_item7_version_and_no_progress_bars_in_logs(tmp_path: Path) -> None:
    version = elmokit("--version")
    assert version.returncode == 0 and version.stdout.startswith("elmokit ")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c\n" * 10)
    result = elmokit("vocab", corpus, "-o", tmp_path / "v.txt")  # stderr is a pipe, not a tty
    assert "\r" not in result.stderr


# -- item 5: interruptions --------------------------------------------------------------------


def test_item5_checkpoints_are_time_bounded(tmp_path: Path, fixture_dir: Path) -> None:
    import elmokit
    from elmokit.embedder import Embedder

    source = tmp_path / "in.txt"
    source.write_text("".join(f"sentence number {i} .\n" for i in range(30)))
    model = elmokit.load(fixture_dir / "options.json", weights=fixture_dir / "lm_weights.hdf5")
    seen: list[int] = []
    Embedder(model).embed_file(
        source,
        tmp_path / "out.hdf5",
        checkpoint_every=10_000,
        checkpoint_seconds=0.0,
        on_checkpoint=seen.append,
    )
    assert seen == list(range(1, 31))  # by time (every line here), not only every 10,000 lines


def test_item5_an_interruption_loses_at_most_the_running_batch(
    tmp_path: Path, fixture_dir: Path
) -> None:
    """What an interruption costs is the work computed but not kept. Lines used to be written
    only when their whole look-ahead window (16 batches) was done."""
    import elmokit
    from elmokit.embedder import Embedder

    source = tmp_path / "in.txt"
    source.write_text("".join(f"line {i} " + "word " * (i % 23) + ".\n" for i in range(1500)))
    model = elmokit.load(fixture_dir / "options.json", weights=fixture_dir / "lm_weights.hdf5")
    embedder = Embedder(model, batch_size=32)
    computed: list[int] = []
    forward = embedder._forward

    def counting(sentences: list[list[str]]):  # type: ignore[no-untyped-def]
        computed.append(len(sentences))
        return forward(sentences)

    embedder._forward = counting  # type: ignore[method-assign]

    def interrupt(lines: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embedder.embed_file(source, tmp_path / "out.hdf5", checkpoint_every=40,
                            on_checkpoint=interrupt)  # fmt: skip
    with h5py.File(tmp_path / "out.hdf5.partial", "r") as partial:
        kept = partial["_elmokit_progress"]["index"].shape[0]
    assert kept >= 40
    assert sum(computed) - kept <= 32, (sum(computed), kept)


def test_item5_ctrl_c_keeps_the_lines_of_the_unfinished_window(
    tmp_path: Path, model_args: list[str]
) -> None:
    """One look-ahead window here is 16 batches of 32 = 512 lines; a Ctrl-C inside the first
    one used to keep nothing. Every line written before it must be in the partial file, and
    the resumed file must equal an uninterrupted run."""
    import signal

    import numpy as np

    lines = [f"line {i} " + "word " * (i % 23) + "." for i in range(1500)]
    source, output = tmp_path / "in.txt", tmp_path / "out.hdf5"
    source.write_text("\n".join(lines) + "\n")
    options = [*model_args, "--top", "--batch-size", "32", "--checkpoint-every", "40"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "elmokit.cli", "embed", str(source), str(output), *options]
    process = subprocess.Popen([*command, "-v"], stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("checkpoint:"):
            process.send_signal(signal.SIGINT)
            break
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in rest, rest
    assert "interrupted" in rest and "--resume" in rest
    with h5py.File(f"{output}.partial", "r") as partial:
        kept = partial["_elmokit_progress"]["index"][:]
        assert 40 <= len(kept) < 512  # inside the first window, and kept
        assert all(str(index) in partial for index in kept)
    assert elmokit("embed", source, output, *options, "--resume").returncode == 0
    straight = tmp_path / "straight.hdf5"
    assert elmokit("embed", source, straight, *options).returncode == 0
    with h5py.File(output, "r") as a, h5py.File(straight, "r") as b:
        keys = [k for k in b if k.isdigit()]
        assert sorted(k for k in a if k.isdigit()) == sorted(keys) and len(keys) == 1500
        assert all(np.array_equal(a[k][()], b[k][()]) for k in keys)


def test_item5_sigterm_keeps_the_work_and_says_how_to_continue(
    tmp_path: Path, model_args: list[str]
) -> None:
    import signal
    import time

    source, output = tmp_path / "in.txt", tmp_path / "out.hdf5"
    source.write_text("".join(f"line {i} of a longer text to embed here .\n" for i in range(20000)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "elmokit.cli", "embed", str(source), str(output), *model_args]
    command += ["--checkpoint-seconds", "0.2", "--batch-size", "16"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    partial = Path(f"{output}.partial")
    deadline = time.monotonic() + 120
    while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0 or (process.returncode == -signal.SIGTERM and not partial.exists()):
        # Finished first, or SIGTERM landed after the output was complete, while the
        # interpreter was exiting with the default handler back in place.
        pytest.skip("the run finished before SIGTERM arrived")
    assert process.returncode == 143 and "Traceback" not in stderr, stderr
    assert "terminated (SIGTERM)" in stderr and "--resume" in stderr
    resumed = elmokit("embed", source, output, *model_args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    with h5py.File(output, "r") as handle:
        assert len([k for k in handle if k.isdigit()]) == 20000


def test_item7_embed_reads_gzip_and_stdin(tmp_path: Path, model_args: list[str]) -> None:
    import gzip

    text = "The cat sat .\nA dog ran .\n"
    plain, packed = tmp_path / "in.txt", tmp_path / "in.txt.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    assert elmokit("embed", plain, tmp_path / "plain.hdf5", *model_args).returncode == 0
    assert elmokit("embed", packed, tmp_path / "gz.hdf5", *model_args).returncode == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "elmokit.cli", "embed", "-", str(tmp_path / "stdin.hdf5")]
    piped = subprocess.run(
        [*command, *model_args], input=text, capture_output=True, text=True, env=env, timeout=300
    )
    assert piped.returncode == 0, piped.stderr
    with (
        h5py.File(tmp_path / "plain.hdf5") as a,
        h5py.File(tmp_path / "gz.hdf5") as b,
        h5py.File(tmp_path / "stdin.hdf5") as c,
    ):
        for key in ("0", "1"):
            assert (a[key][...] == b[key][...]).all() and (a[key][...] == c[key][...]).all()
