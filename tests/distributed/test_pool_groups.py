"""The pool's placement groups (pool.groups): a trial asks a fixed number of workers for their load at any pool
size (the power of two choices), every worker still reachable when the first groups are full."""
import random

from sjc_dist.distributed.pool import PROBE, groups


def test_small_pools_are_asked_whole_and_in_order():
    assert groups(1) == [[0]]
    assert groups(PROBE) == [list(range(PROBE))]


def test_large_pools_are_asked_a_random_group_at_a_time_covering_all():
    cut = groups(1000, probe=4, rng=random.Random(0))
    assert len(cut) == 250 and all(len(g) == 4 for g in cut)
    assert sorted(i for g in cut for i in g) == list(range(1000))  # each worker once, so none is never tried
    assert cut[0] != [0, 1, 2, 3] and groups(1000, probe=4, rng=random.Random(1))[0] != cut[0]
    assert [len(g) for g in groups(10, probe=4, rng=random.Random(0))] == [4, 4, 2]
