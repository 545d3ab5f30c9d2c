import pytest

from nodeflow.errors import UsageError
from nodeflow.types import BOOL, FLOAT, IMAGE, INT, MASK, STRING, SocketType, is_compatible


def test_exact_and_declared_subtypes():
    assert is_compatible(IMAGE, IMAGE)
    assert is_compatible(INT, FLOAT)  # INT is declared a subtype of FLOAT
    assert not is_compatible(FLOAT, INT)
    assert not is_compatible(BOOL, INT)
    assert not is_compatible(STRING, IMAGE)


def test_unions():
    either = IMAGE | MASK
    assert is_compatible(IMAGE, either)
    assert is_compatible(MASK, either)
    assert not is_compatible(either, IMAGE)  # a MASK might come out
    assert is_compatible(either, MASK | IMAGE | STRING)


def test_subtype_chain_and_unique_names():
    animal = SocketType("TEST_ANIMAL")
    cat = SocketType("TEST_CAT", parents=(animal,))
    kitten = SocketType("TEST_KITTEN", parents=(cat,))
    assert is_compatible(kitten, animal)
    assert not is_compatible(animal, kitten)
    with pytest.raises(UsageError, match="already defined"):
        SocketType("TEST_CAT")
