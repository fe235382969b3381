"""The packaged tokenizer corpus of `kotune model tiny` is the checkout's data/samples, byte for byte."""

from kotune.models.tiny import DEFAULT_CORPUS
from kotune_test_paths import SAMPLES


def test_tiny_corpus_copies_equal_the_samples():
    assert DEFAULT_CORPUS
    for path in DEFAULT_CORPUS:
        assert path.read_bytes() == (SAMPLES / path.name).read_bytes(), f"{path} differs from data/samples; copy it again"
