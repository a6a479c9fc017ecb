"""Our JCS encoder against an independent RFC 8785 implementation (the `rfc8785` package)."""

import math

import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from buffer.canonical import Raw, _number_object, canonical, format_number

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


plain_keys = st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True)
edge_floats = st.sampled_from([0.0, -0.0, 1e16, -1e16, 1e21, 1e-5, 1e-6, 1e-7, 5e-324, 123.0, -0.5])


@given(
    st.tuples(plain_keys, finite | edge_floats),
    st.dictionaries(
        plain_keys,
        finite | edge_floats | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1),
        max_size=16,
    ),
)
def test_number_objects_match_rfc8785(first: tuple[str, float], rest: dict[str, object]) -> None:
    value = {first[0]: first[1], **{k: v for k, v in rest.items() if k != first[0]}}
    assert canonical(value) == rfc8785.dumps(value)


def test_number_objects_take_the_fast_path_and_hand_back_what_it_cannot_write() -> None:
    assert _number_object({"voltage_l1_v": 230.1, "frequency_hz": 50.0}) == (
        '{"frequency_hz":50,"voltage_l1_v":230.1}'
    )
    for other in (
        {"a": 1.5, "b": "x"},
        {"a": 1.5, "b": [1.0]},
        {"a": 1.5, "b": None},
        {"a": 1.5, "b": {"c": 1.0}},
        {"a": -0.0},
        {"a": 1e16},
        {"a": 1e-7},
        {"a": math.nan},
        {"a": 1e308, "b": 1e308},
    ):
        assert _number_object(other) is None, other
    try:
        canonical({"a": 1.5, "b": math.nan})
    except ValueError:
        return
    raise AssertionError("NaN in an object of numbers was accepted")


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
