"""Shared test helpers: where the real data and reference fixtures live (../shared)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "allennlp-elmo"
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    if not (FIXTURES / "lm_weights.hdf5").exists():
        pytest.skip(f"reference fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch on one thread for a module: its models are small, and on a machine shared with
    busy processes a second OpenMP thread only spin-waits (5 s -> 40 s measured)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
