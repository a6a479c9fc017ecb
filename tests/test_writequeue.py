"""The bounded queue of writes that wait while another process locks the database."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.writequeue import Write, WriteQueue


def write(n: int, tag: int = 0) -> Write:
    return Write("readings", [b"%d:%d" % (tag, i) for i in range(n)])


@given(st.integers(1, 50), st.lists(st.integers(0, 30), max_size=40))
def test_drops_the_oldest_beyond_the_bound_and_counts_every_record(
    bound: int, sizes: list[int]
) -> None:
    queue = WriteQueue(bound)
    dropped = 0
    for tag, size in enumerate(sizes):
        dropped += queue.put(write(size, tag))
        assert queue.records <= bound or len(queue.first().records) == queue.records
    kept = []
    while queue:
        kept.append(queue.first())
        queue.done()
    assert queue.records == 0
    assert dropped + sum(len(w.records) for w in kept) == sum(sizes)
    # what is kept is the newest writes, in the order they came, the last one always
    expected = [write(size, tag) for tag, size in enumerate(sizes)][len(sizes) - len(kept) :]
    assert kept == expected


def test_a_single_write_larger_than_the_bound_is_kept() -> None:
    queue = WriteQueue(10)
    assert queue.put(write(4)) == 0
    assert queue.put(write(25, 1)) == 4
    assert queue.records == 25 and queue.first() == write(25, 1)
