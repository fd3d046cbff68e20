from __future__ import annotations

import pytest

from consumer.notifications import NEEDED, missing_flags


def test_we_need_keyevents_expired_string_and_generic() -> None:
    assert set(NEEDED) == set("Ex$g")


@pytest.mark.parametrize(
    ("current", "missing"),
    [
        ("", "Ex$g"),
        ("Ex", "$g"),
        ("E", "x$g"),
        ("Kx$g", "E"),
        ("AKE", ""),  # A stands for g$lshzxet…: covers $, g and x
        ("KEA", ""),
        ("AE", ""),
        ("A", "E"),
        ("Ex$g", ""),
        ("g$xE", ""),
        ("Elg", "x$"),
        ("KEx", "$g"),
        ("Exe", "$g"),
        ("Exm", "$g"),
        ("Kg$lshzxe", "E"),
    ],
)
def test_missing_flags(current: str, missing: str) -> None:
    assert missing_flags(current) == missing


@pytest.mark.parametrize("current", ["", "Ex", "Elg", "K", "A", "Kx"])
def test_adding_the_missing_flags_is_enough(current: str) -> None:
    assert missing_flags(current + missing_flags(current)) == ""
