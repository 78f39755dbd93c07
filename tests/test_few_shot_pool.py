"""The few-shot pool's size as labels arrive: every label while the pool is at most k, then steps of
FEW_SHOT_REFRESH (each step a new judge version), never fewer than k, never more than there are."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ml_backend.projects import pool_size


@given(st.integers(0, 5000), st.integers(0, 64), st.integers(0, 100))
def test_the_pool_holds_what_exists_and_at_least_k(labels, k, step):
    size = pool_size(labels, k, step)
    assert 0 <= size <= labels
    assert size >= min(labels, k)
    if labels <= k or step <= 1:
        assert size == labels
    else:
        assert size % step == 0 or size == k


@given(st.integers(0, 500), st.integers(0, 16), st.integers(2, 20))
def test_the_pool_only_grows_as_labels_arrive(labels, k, step):
    assert pool_size(labels + 1, k, step) >= pool_size(labels, k, step)


def versions_after(start: int, added: int, k: int, step: int) -> int:
    """Distinct pools (judge versions) seen while ``added`` labels arrive one at a time after ``start``."""
    return len({pool_size(n, k, step) for n in range(start, start + added + 1)})


def test_seven_corrections_on_the_demo_make_two_versions_not_eight():
    # the demo: 100 ground-truth labels, few_shot_k 2; a reviewer submits seven
    assert versions_after(100, 7, k=2, step=1) == 8  # one version per label, as before
    assert versions_after(100, 7, k=2, step=5) == 2
    # a project starting from nothing with the default k=8: each of the first eight labels teaches
    assert versions_after(0, 8, k=8, step=5) == 9 and versions_after(8, 7, k=8, step=5) == 3
