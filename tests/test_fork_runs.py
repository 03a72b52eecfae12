"""How a forked run's work is cut into runs (`_fork.tapering`): every item once, in order;
runs of equal size first, then smaller ones, so the workers finish close together."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core._fork import tapering


@given(
    items=st.integers(0, 20_000),
    workers=st.integers(1, 64),
    parts=st.integers(1, 512),
    smallest=st.integers(1, 100),
)
def test_runs_cover_every_item_in_order_and_only_shrink(
    items: int, workers: int, parts: int, smallest: int
) -> None:
    runs = tapering(list(range(items)), workers, parts, smallest)
    assert [i for run in runs for i in run] == list(range(items))
    sizes = [len(run) for run in runs]
    assert all(sizes)
    assert sizes == sorted(sizes, reverse=True)
    if items:
        assert sizes[0] <= -(-items // parts)  # no run above the equal share
        # each run is at most a quarter of what was left for two workers (or the smallest)
        for index, size in enumerate(sizes):
            left = items - sum(sizes[:index])
            assert size <= max(smallest, -(-left // (2 * workers)))


def test_ten_thousand_sites_on_two_cores_end_in_runs_of_a_few_dozen() -> None:
    sizes = [len(run) for run in tapering(list(range(10_000)), 2, 16, 25)]
    assert sizes[:13] == [625] * 13  # the equal share (10,000 / 16)
    assert sizes[-4:] == [25, 25, 25, 3]
    assert sum(sizes) == 10_000
