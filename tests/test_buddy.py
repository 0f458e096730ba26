import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from offload.buddy import BuddyAllocator


def test_initial_layout_covers_odd_sizes():
    b = BuddyAllocator(512 * 3 + 7)
    assert b.free_pages == 512 * 3 + 7
    assert b.free_blocks(9) == 3
    assert [b.free_blocks(k) for k in range(3)] == [1, 1, 1]


def test_alloc_is_aligned_and_disjoint():
    b = BuddyAllocator(4096)
    heads = b.alloc(5, 3)
    assert heads.size == 5 and (heads % 8 == 0).all()
    small = b.alloc(20, 0)
    used = np.concatenate([(heads[:, None] + np.arange(8)).ravel(), small])
    assert np.unique(used).size == used.size == 60
    assert b.free_pages == 4096 - 60


def test_exhaustion_returns_fewer_and_loses_nothing():
    b = BuddyAllocator(1024)
    got = b.alloc(3, 9)
    assert got.size == 2 and b.free_pages == 0
    b.free(got, 9)
    assert b.free_pages == 1024 and b.largest_free_order() == 9


def test_fragmentation_blocks_large_but_not_small():
    b = BuddyAllocator(1024)
    pages = b.alloc(1024, 0)
    b.free(pages[::2], 0)  # every other page free: 512 free pages, no pair
    assert b.free_pages == 512
    assert b.alloc(1, 1).size == 0
    assert b.alloc(512, 0).size == 512


def test_free_merges_back_to_max_order():
    b = BuddyAllocator(2048)
    pages = b.alloc(2048, 0)
    b.free(pages[::-1], 0)
    assert b.alloc(4, 9).size == 4


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 9), st.integers(1, 40)), min_size=1, max_size=30),
    st.integers(0, 2**31),
)
def test_random_alloc_free_keeps_accounting(ops, seed):
    rng = np.random.default_rng(seed)
    b = BuddyAllocator(4096 + 512 + 3)
    owned = np.zeros(b.nr_pages, dtype=bool)
    live = []
    for order, n in ops:
        heads = b.alloc(n, order)
        pages = (heads[:, None] + np.arange(1 << order)).ravel()
        assert not owned[pages].any(), "a page was handed out twice"
        assert (heads % (1 << order) == 0).all()
        owned[pages] = True
        live.append((heads, order))
        if live and rng.random() < 0.5:
            h, o = live.pop(int(rng.integers(len(live))))
            owned[(h[:, None] + np.arange(1 << o)).ravel()] = False
            b.free(h, o)
        assert b.free_pages == b.nr_pages - owned.sum()
    for h, o in live:
        b.free(h, o)
    assert b.free_pages == b.nr_pages
    assert b.alloc(8, 9).size == 8


@settings(max_examples=60, deadline=None)
@given(
    layout=st.sampled_from(["fresh", "aged"]),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["alloc", "alloc_one", "free", "coalesce"]),
            st.integers(0, 9),
            st.integers(1, 300),
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_a_search_resumed_where_the_last_ended_takes_what_a_full_search_takes(layout, ops):
    """Each search starts where the last one of its order ended (nothing free before it
    since); the blocks handed out must be those a search from the start hands out."""
    fast = BuddyAllocator(8192, layout=layout, seed=3)
    full = BuddyAllocator(8192, layout=layout, seed=3)
    held: list[tuple[np.ndarray, int]] = []
    for i, (op, order, n) in enumerate(ops):
        full._low = [0] * len(full._low)  # the reference searches from the start
        if op == "alloc":
            a, b = fast.alloc(n, order), full.alloc(n, order)
            assert a.tolist() == b.tolist()
            held.append((a, order))
        elif op == "alloc_one":
            a, b = fast.alloc_one(order), full.alloc_one(order)
            assert a == b
            if a >= 0:
                held.append((np.array([a]), order))
        elif op == "free" and held:
            heads, k = held.pop(n % len(held))
            if heads.size == 1 and n % 2:
                fast.free_one(int(heads[0]), k)
                full.free_one(int(heads[0]), k)
            else:
                fast.free(heads, k)
                full.free(heads, k)
        elif op == "coalesce":
            fast.coalesce()
            full.coalesce()
        assert [x.tobytes() for x in fast._free] == [x.tobytes() for x in full._free], i
        assert fast.free_pages == full.free_pages and fast.check() == []
