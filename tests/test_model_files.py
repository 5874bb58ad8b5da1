"""Model files: published HDF5 round trip, native safetensors, convert, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import elmokit
from elmokit import batch_to_ids
from elmokit.cli import main
from elmokit.config import BiLMConfig, ConfigError
from elmokit.initialization import random_bilm
from elmokit.io.checkpoint import from_pretrained, save_pretrained
from elmokit.io.weights_hdf5 import WeightFileError, load_bilm, save_bilm


def _datasets(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                found.__setitem__(name, obj[...]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return found


def test_hdf5_round_trip_is_bit_identical(fixture_dir: Path, tmp_path: Path) -> None:
    model = load_bilm(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5")
    save_bilm(model, tmp_path / "options.json", tmp_path / "weights.hdf5")
    original, ours = (
        _datasets(fixture_dir / "lm_weights.hdf5"),
        _datasets(tmp_path / "weights.hdf5"),
    )
    assert set(original) == set(ours)
    for name, array in original.items():
        assert ours[name].dtype == np.float32
        assert ours[name].tobytes() == array.astype(np.float32).tobytes(), name
    with h5py.File(tmp_path / "weights.hdf5", "r") as f:
        assert all(len(f[name].attrs) == 0 for name in ours)
    assert json.loads((tmp_path / "options.json").read_text()) == json.loads(
        (fixture_dir / "options.json").read_text()
    )
    again = load_bilm(tmp_path / "options.json", tmp_path / "weights.hdf5")
    for (name, a), (_, b) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_unknown_option_keys_survive(fixture_dir: Path, tmp_path: Path) -> None:
    options = json.loads((fixture_dir / "options.json").read_text())
    options.update(n_epochs=10, batch_size=128, all_clip_norm_val=10.0)
    options["lstm"]["custom_key"] = "kept"
    config = BiLMConfig.from_options(options)
    assert config.to_options() == options


def test_native_round_trip_and_fp16(fixture_dir: Path, tmp_path: Path) -> None:
    model = load_bilm(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5").eval()
    save_pretrained(model, tmp_path / "native")
    loaded = from_pretrained(tmp_path / "native").eval()
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    save_pretrained(model, tmp_path / "half", dtype=torch.float16)
    half = from_pretrained(tmp_path / "half").eval()
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 0.6 * (
        tmp_path / "native" / "model.safetensors"
    ).stat().st_size
    ids = batch_to_ids([["fp16", "storage", "is", "close", "."]])
    with torch.no_grad():
        assert (model(ids).layers - half(ids).layers).abs().max() < 0.05


def test_convert_command_both_ways(fixture_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "published"
    source.mkdir()
    shutil.copy(fixture_dir / "options.json", source / "options.json")
    shutil.copy(fixture_dir / "lm_weights.hdf5", source / "lm_weights.hdf5")
    assert main(["convert", str(source), str(tmp_path / "native"), "--to", "native"]) == 0
    assert main(["convert", str(tmp_path / "native"), str(tmp_path / "back"), "--to", "hdf5"]) == 0
    original, back = (
        _datasets(fixture_dir / "lm_weights.hdf5"),
        _datasets(tmp_path / "back" / "weights.hdf5"),
    )
    assert all(back[name].tobytes() == original[name].tobytes() for name in original)
    # Refuses to overwrite unless asked.
    assert main(["convert", str(tmp_path / "native"), str(tmp_path / "back"), "--to", "hdf5"]) == 2
    model = elmokit.load(tmp_path / "native")
    assert model.config.lstm_dim == 64


def test_random_model_command(tmp_path: Path) -> None:
    assert main(["random-model", "small", str(tmp_path / "small"), "--seed", "4"]) == 0
    model = elmokit.load(tmp_path / "small")
    assert model.config.lstm_dim == 1024 and model.config.projection_dim == 128
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(13.6e6, rel=0.01)


# -- bad input ------------------------------------------------------------------------------


@pytest.fixture()
def weights_copy(fixture_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    shutil.copy(fixture_dir / "options.json", tmp_path / "options.json")
    shutil.copy(fixture_dir / "lm_weights.hdf5", tmp_path / "weights.hdf5")
    return tmp_path / "options.json", tmp_path / "weights.hdf5"


def test_missing_dataset_is_named(weights_copy: tuple[Path, Path]) -> None:
    options, weights = weights_copy
    with h5py.File(weights, "a") as f:
        del f["CNN_high_1/W_carry"]
    with pytest.raises(
        WeightFileError, match=r"CNN_high_1/W_carry' is missing \(expected shape \(124, 124\)\)"
    ):
        load_bilm(options, weights)


def test_misshapen_dataset_is_named(weights_copy: tuple[Path, Path]) -> None:
    options, weights = weights_copy
    with h5py.File(weights, "a") as f:
        del f["CNN_proj/W_proj"]
        f["CNN_proj/W_proj"] = np.zeros((124, 17), np.float32)
    with pytest.raises(
        WeightFileError, match=r"CNN_proj/W_proj' has shape \(124, 17\), expected \(124, 16\)"
    ):
        load_bilm(options, weights)


def test_options_inconsistent_with_weights(weights_copy: tuple[Path, Path]) -> None:
    options, weights = weights_copy
    data = json.loads(options.read_text())
    data["lstm"]["dim"] = 128
    options.write_text(json.dumps(data))
    with pytest.raises(
        WeightFileError, match=r"LSTMCell/W_0' has shape \(32, 256\), expected \(32, 512\)"
    ):
        load_bilm(options, weights)


def test_options_missing_key(weights_copy: tuple[Path, Path]) -> None:
    options, weights = weights_copy
    data = json.loads(options.read_text())
    del data["char_cnn"]["filters"]
    options.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"missing required key 'char_cnn.filters'"):
        load_bilm(options, weights)


@pytest.mark.parametrize("n_characters", [260, 263])
def test_bad_n_characters(weights_copy: tuple[Path, Path], n_characters: int) -> None:
    options, weights = weights_copy
    data = json.loads(options.read_text())
    data["char_cnn"]["n_characters"] = n_characters
    options.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=f"n_characters is {n_characters}"):
        load_bilm(options, weights)


def test_training_n_characters_261_loads(weights_copy: tuple[Path, Path]) -> None:
    options, weights = weights_copy
    data = json.loads(options.read_text())
    data["char_cnn"]["n_characters"] = 261
    options.write_text(json.dumps(data))
    assert load_bilm(options, weights).config.n_characters == 261


def test_truncated_and_non_hdf5_files(weights_copy: tuple[Path, Path]) -> None:
    options, weights = weights_copy
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match="truncated"):
        load_bilm(options, weights)
    weights.write_text("this is not an HDF5 file")
    with pytest.raises(WeightFileError, match="not a readable HDF5 file"):
        load_bilm(options, weights)
    with pytest.raises(FileNotFoundError, match="weight file not found"):
        load_bilm(options, weights.with_name("absent.hdf5"))


def test_nan_in_weights(weights_copy: tuple[Path, Path]) -> None:
    options, weights = weights_copy
    with h5py.File(weights, "a") as f:
        f["CNN_proj/b_proj"][3] = np.nan
    with pytest.raises(WeightFileError, match=r"'CNN_proj/b_proj' has 1 NaN/inf"):
        load_bilm(options, weights)


def test_bad_token_lists() -> None:
    with pytest.raises(TypeError, match="list of sentences"):
        batch_to_ids("a sentence")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="did you forget to split"):
        batch_to_ids(["a sentence"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="sentence 1, token 2 must be a str"):
        batch_to_ids([["ok"], ["a", "b", 3]])  # type: ignore[list-item]


def test_bad_char_ids_tensor() -> None:
    model = random_bilm(
        BiLMConfig(filters=[(1, 4)], char_embedding_dim=2, lstm_dim=4, projection_dim=3)
    )
    with pytest.raises(ValueError, match=r"shape \[batch, time, 50\]"):
        model(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="batch_to_ids"):
        model([["a"]])  # type: ignore[arg-type]
    gap = batch_to_ids([["a", "b", "c"]])
    gap[0, 1] = 0
    with pytest.raises(ValueError, match="left-aligned"):
        model(gap)


def test_nlpl_zip_loads_in_place(tmp_path: Path, fixture_dir: Path) -> None:
    import zipfile

    archive = tmp_path / "209.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
        out.write(fixture_dir / "options.json", "options.json")
        out.write(fixture_dir / "lm_weights.hdf5", "model.hdf5")
        out.writestr("README", "NLPL repository model 209")
    from_zip = elmokit.load(archive, precision="reference")
    from_files = elmokit.load(fixture_dir / "options.json", weights=fixture_dir / "lm_weights.hdf5")
    for (name, a), (_, b) in zip(
        from_zip.state_dict().items(), from_files.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["209.zip"]  # nothing unpacked
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as out:
        out.writestr("options.json", "{}")
    with pytest.raises(ValueError, match="expected one weights file"):
        elmokit.load(broken)
    no_options = tmp_path / "no_options.zip"
    with zipfile.ZipFile(no_options, "w") as out:
        out.write(fixture_dir / "lm_weights.hdf5", "model.hdf5")
        out.writestr("README", "weights only")
    with pytest.raises(ValueError, match=r"no_options.zip: expected one options file"):
        elmokit.load(no_options)
    (tmp_path / "not.zip").write_bytes(b"plain text")
    with pytest.raises(ValueError, match="not a readable ZIP"):
        elmokit.load(tmp_path / "not.zip")
