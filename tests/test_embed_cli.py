"""`elmokit embed`, `embed-merge` and `cache-vocab` on the real fixture model and real text."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import elmokit
from elmokit import batch_to_ids
from elmokit.bilm import BiLM
from elmokit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_args(fixture_dir: Path) -> list[str]:
    options, weights = fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5"
    return ["--model", str(options), "--weights", str(weights)]


@pytest.fixture(scope="module")
def model(fixture_dir: Path) -> BiLM:
    return elmokit.load(fixture_dir / "options.json", weights=fixture_dir / "lm_weights.hdf5")


@pytest.fixture(scope="module")
def ptb_lines(data_dir: Path) -> list[str]:
    return (data_dir / "ptb_mikolov" / "ptb.valid.txt").read_text(encoding="utf-8").splitlines()


def embed(*args: str) -> int:
    return main(["embed", *args, "--quiet"])


def layers_of(model: BiLM, line: str) -> np.ndarray:
    tokens = line.split()
    with torch.inference_mode():
        return model(batch_to_ids([tokens])).layers[0].numpy()


def datasets(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as file:
        return {key: file[key][()] for key in file}


def assert_same_file(a: Path, b: Path) -> None:
    first, second = datasets(a), datasets(b)
    assert sorted(first) == sorted(second)
    for key, value in first.items():
        assert np.array_equal(value, second[key]), key


def test_all_top_average_equal_the_bilm_layers(
    tmp_path: Path, model_args: list[str], model: BiLM, ptb_lines: list[str]
) -> None:
    lines = [*ptb_lines[:30], ptb_lines[3], "  Café , naïve résumé  "]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for flag in ("--all", "--top", "--average"):
        out = tmp_path / f"{flag[2:]}.h5"
        assert embed(str(source), str(out), *model_args, flag, "--batch-size", "8") == 0
        with h5py.File(out, "r") as file:  # plain h5py, the old AllenNLP layout
            assert sorted(file) == sorted([*map(str, range(len(lines))), "sentence_to_index"])
            for index in (0, 7, 30, 31):
                expected = layers_of(model, lines[index])
                if flag == "--top":
                    expected = expected[-1]
                elif flag == "--average":
                    expected = expected.mean(axis=0)
                stored = file[str(index)]
                assert stored.dtype == np.float32 and stored.shape == expected.shape
                np.testing.assert_allclose(stored[()], expected, rtol=0, atol=1e-6)
            mapping = json.loads(file["sentence_to_index"][0])
    assert file_shape(tmp_path / "all.h5", "0") == (3, len(lines[0].split()), 32)
    assert mapping == {
        line.strip(): str(max(i for i, other in enumerate(lines) if other == line))
        for line in lines
    }
    assert mapping[lines[3].strip()] == "30"  # a repeated line maps to its last occurrence


def file_shape(path: Path, key: str) -> tuple[int, ...]:
    with h5py.File(path, "r") as file:
        return tuple(file[key].shape)


def test_layers_and_mix(
    tmp_path: Path, model_args: list[str], model: BiLM, ptb_lines: list[str]
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(ptb_lines[:5]) + "\n", encoding="utf-8")
    expected = layers_of(model, ptb_lines[2])
    runs = {
        "sel.h5": ["--layers", "0,2"],
        "avg12.h5": ["--average", "--layers", "1,2"],
        "mix.h5": ["--mix", "0.5,-1,2,0.25"],
        "mix2.h5": ["--layers", "1,2", "--mix", "0,1"],
    }
    for name, flags in runs.items():
        assert embed(str(source), str(tmp_path / name), *model_args, *flags) == 0
    stored = {name: datasets(tmp_path / name)["2"] for name in runs}
    np.testing.assert_allclose(stored["sel.h5"], expected[[0, 2]], atol=1e-6)
    np.testing.assert_allclose(stored["avg12.h5"], (expected[1] + expected[2]) / 2, atol=1e-6)
    w = np.exp([0.5, -1.0, 2.0])
    w /= w.sum()
    np.testing.assert_allclose(
        stored["mix.h5"], 0.25 * np.tensordot(w, expected, axes=1), atol=1e-6
    )
    w2 = np.exp([0.0, 1.0]) / np.exp([0.0, 1.0]).sum()
    np.testing.assert_allclose(
        stored["mix2.h5"], w2[0] * expected[1] + w2[1] * expected[2], atol=1e-6
    )
    assert embed(str(source), str(tmp_path / "bad.h5"), *model_args, "--mix", "1,2") == 2
    assert embed(str(source), str(tmp_path / "bad.h5"), *model_args, "--layers", "0,5") == 2
    assert embed(str(source), str(tmp_path / "bad.h5"), *model_args, "--top", "--mix", "0,0,0") == 2


def test_pool_writes_one_vector_per_line(
    tmp_path: Path, model_args: list[str], model: BiLM, ptb_lines: list[str]
) -> None:
    from elmokit.embedder import Embedder

    source = tmp_path / "in.txt"
    lines = [*ptb_lines[:3], "", ptb_lines[3]]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    encoder = Embedder(model)
    for flags, layer, pooling in (
        (["--pool", "mean"], "average", "mean"),
        (["--pool", "max", "--top"], "top", "max"),
        (["--pool", "first"], "average", "first"),
    ):
        out = tmp_path / f"{pooling}.h5"
        assert embed(str(source), str(out), *model_args, *flags) == 0
        stored = datasets(out)
        expected = encoder.encode(lines, pooling=pooling, layer=layer)
        for index in range(len(lines)):
            assert stored[str(index)].shape == (model.config.output_dim,)
            np.testing.assert_allclose(stored[str(index)], expected[index], atol=1e-6)
    assert not datasets(tmp_path / "mean.h5")["3"].any()  # the blank line: zeros
    assert embed(str(source), str(tmp_path / "bad.h5"), *model_args, "--pool", "mean", "--all") == 2


def _embed_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "elmokit.cli", "embed", *args]


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, model_args: list[str], ptb_lines: list[str]
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(ptb_lines[:2000]) + "\n", encoding="utf-8")
    options = ["--batch-size", "32", "--checkpoint-every", "150", "--top", *model_args]
    straight, killed = tmp_path / "straight.h5", tmp_path / "killed.h5"
    assert main(["embed", str(source), str(straight), *options, "--quiet"]) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = _embed_command(str(source), str(killed), *options, "-v")
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("checkpoint:"):
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL
    partial = tmp_path / "killed.h5.partial"
    assert not killed.exists() and partial.exists()
    with h5py.File(partial, "r") as file:
        # Lines finish out of order within a look-ahead window; each one recorded is kept.
        done = file["_elmokit_progress"]["index"].shape[0]
        prefix = int(file["_elmokit_progress"].attrs["completed_lines"])
    assert 150 <= done < 2000 and prefix <= done

    refused = subprocess.run(command, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not partial.exists()
    assert_same_file(straight, killed)
    with h5py.File(straight, "r") as a, h5py.File(killed, "r") as b:
        assert dict(a.attrs) == dict(b.attrs)


def test_precision_is_applied_recorded_and_kept_on_resume(
    tmp_path: Path,
    model_args: list[str],
    fixture_dir: Path,
    ptb_lines: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(ptb_lines[:60]) + "\n", encoding="utf-8")
    reference, fast = tmp_path / "reference.h5", tmp_path / "fp32.h5"
    assert embed(str(source), str(reference), *model_args, "--all", "--precision", "reference") == 0
    assert embed(str(source), str(fast), *model_args, "--all") == 0  # fp32 is the default
    exact, approximate = datasets(reference), datasets(fast)
    worst = max(float(np.abs(exact[str(i)] - approximate[str(i)]).max()) for i in range(60))
    assert worst < 1e-5  # the fp32 fast path: the same numbers up to rounding
    with h5py.File(reference, "r") as a, h5py.File(fast, "r") as b:
        assert a.attrs["elmokit_precision"] == "reference"
        assert b.attrs["elmokit_precision"] == "fp32"

    # Interrupt an fp32 run after its first checkpoint, then resume it in another precision.
    from elmokit.embedder import Embedder

    embedder = Embedder(fixture_dir / "options.json", weights=fixture_dir / "lm_weights.hdf5")
    embedder.model.optimize_for_inference("fp32")
    partial_run = tmp_path / "partial.h5"

    def stop(lines: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embedder.embed_file(
            source,
            partial_run,
            checkpoint_every=20,
            on_checkpoint=stop,
            model_name=str(fixture_dir / "options.json"),  # as the command records it
        )
    assert (tmp_path / "partial.h5.partial").exists()
    resumed = ["--all", "--resume", *model_args]
    assert embed(str(source), str(partial_run), *resumed, "--precision", "bf16") == 2
    assert "elmokit_precision='fp32'" in capsys.readouterr().err
    assert embed(str(source), str(partial_run), *resumed, "--precision", "fp32") == 0
    assert_same_file(fast, partial_run)


def test_blank_lines_keep_their_index_or_are_refused(
    tmp_path: Path, model_args: list[str], ptb_lines: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.txt"
    source.write_text(f"{ptb_lines[0]}\n\n{ptb_lines[1]}\n   \n{ptb_lines[2]}\n", encoding="utf-8")
    out = tmp_path / "out.h5"
    assert embed(str(source), str(out), *model_args) == 0
    stored = datasets(out)
    assert stored["1"].shape == (3, 0, 32) and stored["3"].shape == (3, 0, 32)
    assert stored["4"].shape == (3, len(ptb_lines[2].split()), 32)
    err = capsys.readouterr().err
    assert err.count("is blank") == 1 and "line 2 is blank" in err and "2 blank lines" in err
    assert embed(str(source), str(tmp_path / "strict.h5"), *model_args, "--strict") == 2
    assert "line 2 is blank" in capsys.readouterr().err
    assert not (tmp_path / "strict.h5").exists()


def test_invalid_utf8_stops_with_the_line_number_or_is_replaced(
    tmp_path: Path, model_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"a good line\nanother one\nbad \xff byte here\nlast\n")
    assert embed(str(source), str(tmp_path / "strict.h5"), *model_args) == 2
    err = capsys.readouterr().err
    assert "line 3 is not valid UTF-8" in err and "0xff" in err
    assert not (tmp_path / "strict.h5").exists()
    out = tmp_path / "replaced.h5"
    assert embed(str(source), str(out), *model_args, "--errors", "replace") == 0
    with h5py.File(out, "r") as file:
        assert file["2"].shape == (3, 4, 32)
        assert json.loads(file["sentence_to_index"][0])["bad \ufffd byte here"] == "2"


def test_a_10000_token_line(
    tmp_path: Path, model_args: list[str], data_dir: Path, model: BiLM
) -> None:
    tokens = (data_dir / "wikitext2" / "wiki.valid.tokens").read_text(encoding="utf-8").split()
    long_line = " ".join(tokens[:10_000])
    source = tmp_path / "in.txt"
    source.write_text(f"A short line .\n{long_line}\n", encoding="utf-8")
    out = tmp_path / "out.h5"
    assert embed(str(source), str(out), *model_args, "--top") == 0
    with h5py.File(out, "r") as file:
        top = file["1"][()]
    assert top.shape == (10_000, 32) and np.isfinite(top).all()
    # Explicit splitting: independent 1000-token pieces.
    split = tmp_path / "split.h5"
    assert embed(str(source), str(split), *model_args, "--top", "--max-tokens", "1000") == 0
    with h5py.File(split, "r") as file:
        pieces = file["1"][()]
    assert pieces.shape == (10_000, 32)
    first_piece = layers_of(model, " ".join(tokens[:1000]))[-1]
    np.testing.assert_allclose(pieces[:1000], first_piece, atol=1e-6)
    # Context differs at the piece boundary, so the vectors there differ from the whole line's.
    assert np.abs(pieces[995:1005] - top[995:1005]).max() > 1e-3


def test_existing_output_and_unwritable_paths(
    tmp_path: Path, model_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("one line .\n", encoding="utf-8")
    out = tmp_path / "out.h5"
    out.write_bytes(b"precious")
    assert embed(str(source), str(out), *model_args) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"precious"
    assert embed(str(source), str(out), *model_args, "--overwrite") == 0
    assert datasets(out)["0"].shape == (3, 3, 32)

    for target in (tmp_path / "no" / "such" / "dir.h5", Path("/proc/elmokit-out.h5"), tmp_path):
        assert embed(str(source), str(target), *model_args) == 2
        err = capsys.readouterr().err
        assert err.startswith("elmokit embed: error:") and str(target.parent) in err
    assert embed(str(tmp_path / "missing.txt"), str(tmp_path / "x.h5"), *model_args) == 2
    assert "does not exist" in capsys.readouterr().err


def test_default_model_missing_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.txt"
    source.write_text("one line .\n", encoding="utf-8")
    from elmokit.loading import bundled_models

    if "elmokit-small-en" in bundled_models():
        pytest.skip("the default model is installed")
    assert embed(str(source), str(tmp_path / "out.h5")) == 2
    assert "--model" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_give_the_same_datasets_as_one(
    tmp_path: Path, model_args: list[str], ptb_lines: list[str]
) -> None:
    source = tmp_path / "in.txt"
    lines = [*ptb_lines[:150], "", ptb_lines[7], *ptb_lines[150:200]]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    single, sharded = tmp_path / "single.h5", tmp_path / "sharded.h5"
    assert embed(str(source), str(single), *model_args, "--average") == 0
    command = _embed_command(str(source), str(sharded), *model_args, "--average", "--quiet")
    processes = [
        subprocess.Popen(
            command,
            env={**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "WORLD_SIZE": "2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for rank in range(2)
    ]
    for process in processes:
        _, err = process.communicate()
        assert process.returncode == 0, err
    assert (tmp_path / "sharded.h5.rank0").exists() and (tmp_path / "sharded.h5.rank1").exists()
    with h5py.File(tmp_path / "sharded.h5.rank1", "r") as shard:
        odd = sorted(str(i) for i in range(1, len(lines), 2))
        assert sorted(k for k in shard if k.isdigit()) == odd
    assert main(["embed-merge", str(sharded)]) == 0
    assert not (tmp_path / "sharded.h5.rank0").exists()
    assert_same_file(single, sharded)
    with h5py.File(single, "r") as a, h5py.File(sharded, "r") as b:
        assert a["sentence_to_index"][0] == b["sentence_to_index"][0]  # the same bytes
        assert dict(a.attrs) == dict(b.attrs)


@pytest.mark.slow
def test_torchrun_merges_on_rank_0(
    tmp_path: Path, model_args: list[str], ptb_lines: list[str]
) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to the interpreter")
    source = tmp_path / "in.txt"
    source.write_text("\n".join(ptb_lines[:120]) + "\n", encoding="utf-8")
    single, merged = tmp_path / "single.h5", tmp_path / "merged.h5"
    assert embed(str(source), str(single), *model_args, "--top") == 0
    command = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "elmokit.cli",
        "embed",
        str(source),
        str(merged),
        *model_args,
        "--top",
        "--quiet",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not list(tmp_path.glob("merged.h5.rank*"))
    assert_same_file(single, merged)


def test_cache_vocab_equals_the_reference_token_embeddings(
    tmp_path: Path, model_args: list[str], fixture_dir: Path
) -> None:
    out = tmp_path / "tokens.h5"
    vocab = fixture_dir / "vocab_test.txt"
    assert main(["cache-vocab", str(vocab), str(out), *model_args, "--batch-size", "100"]) == 0
    reference = fixture_dir / "elmo_token_embeddings.hdf5"
    with h5py.File(out, "r") as ours, h5py.File(reference, "r") as ref:
        assert list(ours) == ["embedding"]
        assert ours["embedding"].shape == ref["embedding"].shape == (458, 16)
        assert np.abs(ours["embedding"][()] - ref["embedding"][()]).max() <= 2e-6
    assert main(["cache-vocab", str(vocab), str(out), *model_args]) == 2


def test_the_command_line_does_not_load_torch_dynamo() -> None:
    # torch._dynamo (pulled in by elmo.py's torch.compiler.disable) costs ~70 MB of RSS and
    # seconds of start-up; only users of Elmo should pay for it.
    code = (
        "import sys, elmokit, elmokit.cli, elmokit.embedder, elmokit.commands.embed\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "from elmokit import Elmo\n"
        "assert Elmo.__name__ == 'Elmo' and 'torch._dynamo' in sys.modules\n"
        "try:\n    elmokit.NoSuchName\nexcept AttributeError:\n    print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
