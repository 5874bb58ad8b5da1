"""Shared test helpers: where the real data and reference fixtures live (../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
