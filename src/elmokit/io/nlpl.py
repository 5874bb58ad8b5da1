"""ELMo models as the NLPL repository distributes them (http://vectors.nlpl.eu/repository/):
one ZIP holding the published pair, an options JSON and an HDF5 weight file (`model.hdf5` +
`options.json`, plus a README and sometimes a vocabulary). Read in place: the weight file is
read from the archive into memory and opened there, nothing is unpacked to disk.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path, PurePosixPath

import h5py

from elmokit.bilm import BiLM, StatePolicy
from elmokit.config import BiLMConfig, ConfigError
from elmokit.io.weights_hdf5 import WeightFileError, copy_weights


def _member(names: list[str], suffixes: tuple[str, ...], kind: str, path: Path) -> str:
    found = [n for n in names if PurePosixPath(n).suffix in suffixes and "__MACOSX" not in n]
    if kind == "options" and len(found) > 1:
        found = [n for n in found if "options" in PurePosixPath(n).name] or found
    if len(found) != 1:
        raise ValueError(
            f"{path}: expected one {kind} file ({', '.join(suffixes)}) in the archive, found "
            f"{found or 'none'} among {names[:10]}"
        )
    return found[0]


def elmo_members(path: str | Path) -> tuple[str, str]:
    """The (options, weights) member names of an NLPL-style ZIP, else a ValueError."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path} is not a readable ZIP archive: {error}") from None
    return (
        _member(names, (".json",), "options", path),
        _member(names, (".hdf5", ".h5"), "weights", path),
    )


def load_zip(path: str | Path, state_policy: StatePolicy = "reset") -> BiLM:
    """The biLM inside an NLPL-style ZIP (options JSON + HDF5 weights)."""
    path = Path(path)
    options_name, weights_name = elmo_members(path)
    with zipfile.ZipFile(path) as archive:
        try:
            config = BiLMConfig.from_options(json.loads(archive.read(options_name)))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}!{options_name} is not valid JSON: {error}") from None
        except ConfigError as error:
            raise ConfigError(f"{path}!{options_name}: {error}") from None
        data = io.BytesIO(archive.read(weights_name))
    model = BiLM(config, state_policy=state_policy)
    source = f"{path}!{weights_name}"
    try:
        weights = h5py.File(data, "r")
    except OSError as error:
        raise WeightFileError(f"{source} is not a readable HDF5 file: {error}") from None
    with weights:
        copy_weights(weights, model, source)
    return model
