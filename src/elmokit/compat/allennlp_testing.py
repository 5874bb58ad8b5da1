"""AllenNLP's test base class, for running tests written against AllenNLP's ELMo code.

`AllenNlpTestCase` gives `FIXTURES_ROOT` (a folder whose `elmo/` holds AllenNLP's ELMo test
fixtures) and `TEST_DIR` (a fresh temporary folder), with both pytest's `setup_method` and
unittest's `setUp` (AllenNLP 2.x and 0.9). The fixtures are found at $ELMOKIT_ALLENNLP_FIXTURES
(the folder that holds options.json, lm_weights.hdf5, ...), else at ../shared/fixtures/
allennlp-elmo beside the repository, as elmokit's own tests lay it out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

FIXTURES_ENV = "ELMOKIT_ALLENNLP_FIXTURES"


def elmo_fixtures() -> Path:
    if os.environ.get(FIXTURES_ENV):
        return Path(os.environ[FIXTURES_ENV])
    return Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "allennlp-elmo"


class AllenNlpTestCase:
    FIXTURES_ROOT: Path
    TEST_DIR: Path

    # pytest calls setup_method; AllenNLP 2.x tests override it and call super(), 0.9 tests
    # override unittest's setUp instead. setup_method goes through setUp so both work.
    def setup_method(self) -> None:
        self.setUp()

    def teardown_method(self) -> None:
        self.tearDown()

    def setUp(self) -> None:  # noqa: N802 - unittest's name (allennlp 0.9)
        fixtures = elmo_fixtures()
        if not (fixtures / "options.json").exists():
            raise FileNotFoundError(
                f"AllenNLP's ELMo fixtures not found at {fixtures}; set {FIXTURES_ENV}"
            )
        self.TEST_DIR = Path(tempfile.mkdtemp(prefix="allennlp_tests_"))
        # AllenNLP's tests read FIXTURES_ROOT / "elmo": a folder with that one entry.
        root = self.TEST_DIR / "fixtures"
        root.mkdir()
        (root / "elmo").symlink_to(fixtures, target_is_directory=True)
        self.FIXTURES_ROOT = root

    def tearDown(self) -> None:  # noqa: N802
        shutil.rmtree(self.TEST_DIR, ignore_errors=True)
