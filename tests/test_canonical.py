"""Our JCS encoder against an independent RFC 8785 implementation (the `rfc8785` package)."""

import math

import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from buffer.canonical import Raw, canonical, format_number

finite = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | finite | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(finite)
def test_numbers_match_ecmascript_formatting(value: float) -> None:
    assert format_number(value) == rfc8785.dumps(value).decode()


@given(json_values)
def test_any_json_value_matches_rfc8785(value: object) -> None:
    assert canonical(value) == rfc8785.dumps(value)


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    value = {"\U0001f600": 1, "\uff61": 2, "a": 3}
    assert canonical(value) == rfc8785.dumps(value)
    assert canonical(value).index("\U0001f600".encode()) < canonical(value).index("\uff61".encode())


def test_raw_fragments_are_inserted_verbatim() -> None:
    record = canonical({"b": 1.5, "a": "x"})
    assert canonical({"records": [Raw(record)]}) == rfc8785.dumps(
        {"records": [{"a": "x", "b": 1.5}]}
    )


def test_non_finite_and_unsafe_integers_are_refused() -> None:
    for bad in (math.nan, math.inf, 2**53):
        try:
            canonical(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
