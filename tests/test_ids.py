"""Check digits of resident ID numbers (GB 11643) and unified social credit codes (GB 32100)."""

from __future__ import annotations

from datetime import date

import pytest
from catalog_samples import ID_CHECK, USCC_CHARS, credit_code, resident_id, wrong_check

from wx_backend.ids import credit_code_check, resident_id_check
from wx_backend.validators import is_credit_code, is_resident_id

# Published examples: GB 11643-1999's own example number, and the example in GB 32100-2015.
PUBLISHED_ID = "11010519491231002X"
PUBLISHED_USCC = "91350100M000100Y43"


def test_published_examples_are_valid():
    assert is_resident_id(PUBLISHED_ID)
    assert is_resident_id(PUBLISHED_ID.lower())
    assert is_credit_code(PUBLISHED_USCC)
    assert resident_id_check(PUBLISHED_ID[:17]) == "X"
    assert credit_code_check(PUBLISHED_USCC[:17]) == "3"


@pytest.mark.parametrize(
    "first17",
    [
        "41042519850307123",
        "11010119900101001",
        "44030620000229004",
        "65010219751111987",
        "31011519801231000",
    ],
)
def test_resident_ids_built_from_the_weights_are_valid_and_every_other_check_digit_is_not(first17):
    valid = resident_id(first17)
    assert is_resident_id(valid)
    for other in ID_CHECK:
        if other != valid[-1]:
            assert not is_resident_id(first17 + other), first17 + other


@pytest.mark.parametrize(
    "first17",
    [
        "91410425MA44XKQ0D",
        "91110108551385082",
        "12100000400000624",
        "52440300MJL1234X5",
        "93330782MA2ECQ7Y0",
    ],
)
def test_credit_codes_built_from_the_weights_are_valid_and_every_other_check_char_is_not(first17):
    valid = credit_code(first17)
    assert is_credit_code(valid)
    assert is_credit_code(valid.lower())
    for other in USCC_CHARS:
        if other != valid[-1]:
            assert not is_credit_code(first17 + other)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1101051949123100",
        "11010519491231002XX",
        "01010519491231002X",
        "1101051949123100AX",
        resident_id("11010519490230001"),  # 30 February
        resident_id("11010518990101001"),  # before 1900
        resident_id("11010521990101001"),  # born in the future
        None,
        110105194912310021,
    ],
)
def test_malformed_resident_ids_are_refused(value):
    assert not is_resident_id(value, today=date(2026, 2, 26))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "91350100M000100Y4",
        "91350100M000100Y433",
        "91350100M000100I43",
        "9135010AM000100Y43",
        "91350100M0001O0Y43",
        None,
        wrong_check(PUBLISHED_USCC, USCC_CHARS),
    ],
)
def test_malformed_credit_codes_are_refused(value):
    assert not is_credit_code(value)
