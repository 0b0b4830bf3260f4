"""Samplers: source balance, and the patient-bag structure with guaranteed events."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from tumorscope.data.samplers import BalancedSampler, PatientBagSampler, balanced_weights


def test_balanced_weights_give_equal_group_mass() -> None:
    w = balanced_weights([0] * 90 + [1] * 10)
    assert w[:90].sum() == pytest.approx(0.5) and w[90:].sum() == pytest.approx(0.5)


def test_balanced_sampler_balances_and_is_deterministic() -> None:
    indices = np.arange(100, 200)
    groups = np.array([0] * 90 + [1] * 10)
    s = BalancedSampler(indices, groups, seed=5)
    draws = s.draw(4000)
    assert draws.shape == (4000,) and draws.dtype == np.int64
    assert set(draws.tolist()) <= set(indices.tolist())
    minority = int((draws >= 190).sum())
    assert binomtest(minority, 4000, 0.5).pvalue > 1e-3
    again = BalancedSampler(indices, groups, seed=5)
    np.testing.assert_array_equal(draws, np.concatenate([again.draw(1000), again.draw(3000)]))
    assert not np.array_equal(draws, s.draw(4000))  # the next draw continues the stream


def test_balanced_sampler_empty() -> None:
    s = BalancedSampler([], [], seed=0)
    assert s.draw(3).size == 0 and s.draw(0).size == 0
    assert BalancedSampler([4, 5], [0, 1], seed=0).draw(0).size == 0
    with pytest.raises(ValueError, match="1 groups for 2 indices"):
        BalancedSampler([4, 5], [0], seed=0)


def bag_setup() -> tuple[list[str], np.ndarray, dict[str, bool]]:
    # 8 patients; P0 has only 2 slices; events for P1 and P5 only
    pats, items = [], []
    nxt = 0
    for p in range(8):
        n = 2 if p == 0 else 6
        pats += [f"P{p}"] * n
        items += list(range(nxt, nxt + n))
        nxt += n + 3  # gaps: items are dataset indices, not positions
    events = {f"P{p}": p in (1, 5) for p in range(8)}
    return pats, np.array(items), events


def test_patient_bags_structure_and_events() -> None:
    pats, items, events = bag_setup()
    owner = dict(zip(items.tolist(), pats, strict=True))
    s = PatientBagSampler(pats, events, items=items, bag_patients=3, bag_slices=4, seed=1)
    batches = [s.next_batch() for _ in range(60)]
    seen = set()
    for b in batches:
        assert len(b) == 12
        owners = [owner[i] for i in b]
        bags = [owners[j : j + 4] for j in range(0, 12, 4)]
        assert all(len(set(g)) == 1 for g in bags)  # contiguous k slices per patient
        assert len({g[0] for g in bags}) == 3  # m distinct patients
        assert sum(events[g[0]] for g in bags) >= 2
        for g, j in zip(bags, range(0, 12, 4), strict=True):
            if g[0] != "P0":
                assert len(set(b[j : j + 4])) == 4  # no repeats when the patient has enough slices
        seen.update(owners)
    assert seen == set(pats)


def test_patient_bags_repeat_short_patients_and_are_deterministic() -> None:
    pats, items, events = bag_setup()
    a = PatientBagSampler(pats, events, items=items, bag_patients=8, bag_slices=3, seed=4)
    b = PatientBagSampler(pats, events, items=items, bag_patients=8, bag_slices=3, seed=4)
    first = a.next_batch()
    assert first == b.next_batch()
    assert a.next_batch() == b.next_batch()
    p0 = [i for i in first if i in (0, 1)]
    assert len(p0) == 3 and set(p0) == {0, 1}


def test_patient_bags_with_one_event_and_fill() -> None:
    pats, items, events = bag_setup()
    one = {p: p == "P5" for p in events}
    fill = BalancedSampler(np.arange(1000, 1010), np.zeros(10), seed=0)
    s = PatientBagSampler(
        pats, one, items=items, bag_patients=2, bag_slices=2, seed=0, fill=fill, batch_size=7
    )
    owner = dict(zip(items.tolist(), pats, strict=True))
    for _ in range(10):
        b = s.next_batch()
        assert len(b) == 7 and all(i >= 1000 for i in b[4:])
        assert "P5" in {owner[i] for i in b[:4]}
    none = PatientBagSampler(pats, {}, items=items, bag_patients=2, bag_slices=2, seed=0)
    assert len(none.next_batch()) == 4
    assert PatientBagSampler([], {}, bag_patients=2, bag_slices=2).next_batch() == []


def test_share_counts_split_exactly_by_largest_remainder() -> None:
    from tumorscope.data.samplers import share_counts

    assert share_counts(16, [0.75, 0.25]) == [12, 4]
    assert share_counts(10, [1, 1, 1]) == [4, 3, 3]
    assert share_counts(7, [0.0, 1.0]) == [0, 7]
    assert sum(share_counts(23, [0.3, 0.7])) == 23


def test_share_sampler_puts_the_same_share_in_every_draw() -> None:
    from tumorscope.data.samplers import ShareSampler

    def make() -> ShareSampler:
        volume = BalancedSampler(np.arange(0, 100), np.zeros(100, dtype=int), seed=1)
        images = BalancedSampler(np.arange(100, 120), np.zeros(20, dtype=int), seed=2)
        return ShareSampler([volume, images], [0.75, 0.25], seed=3)

    sampler = make()
    draws = [sampler.draw(16) for _ in range(20)]
    for batch in draws:
        assert batch.shape == (16,) and int((batch >= 100).sum()) == 4
    assert len({int(i) for b in draws for i in b if i >= 100}) > 10  # the images vary
    again = make()  # same seeds, same stream
    for batch in draws[:3]:
        np.testing.assert_array_equal(batch, again.draw(16))
    with pytest.raises(ValueError, match="pools"):
        ShareSampler([make()], [0.5, 0.5])  # type: ignore[list-item]
