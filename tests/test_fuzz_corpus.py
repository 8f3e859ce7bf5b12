"""Replays the checked-in fuzz corpus (tests/fuzz/corpus/<target>/*) through its targets: each input is
refused cleanly (ValueError and the like) or processed; none crashes or raises anything else. The
coverage-guided runs that grow the corpus are bench/fuzz.sh."""

import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ))
import targets  # noqa: E402

CORPUS = FUZZ / "corpus"


def test_every_target_has_a_corpus():
    assert sorted(p.name for p in CORPUS.iterdir() if p.is_dir()) == sorted(targets.TARGETS)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_corpus_replays_cleanly(name):
    files = sorted(p for p in (CORPUS / name).iterdir() if p.is_file())
    assert files, f"no corpus for {name}"
    for path in files:
        try:
            targets.run(name, path.read_bytes())
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"{name}: {path.name} raised {type(e).__name__}: {e}") from e


def test_the_two_crash_inputs_are_refused_with_value_error():
    for name, seed, match in (("op_nms", "seed-minus-inf-box", "boxes contains NaN or infinite values"),
                              ("op_process_mask", "seed-nan-box", "boxes contains NaN or infinite values")):
        with pytest.raises(ValueError, match=match):
            targets.TARGETS[name]((CORPUS / name / seed).read_bytes())
