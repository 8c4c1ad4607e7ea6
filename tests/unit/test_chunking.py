"""Windows over a partition: which windows hold used bytes and where, how many windows a size
has, the last one's length, and metadata cut into pieces. Every window edge case is asserted on
exact values (ints, not floats: a window number is also an offset multiplier)."""

from __future__ import annotations

from recovery.chunking import split, used_windows, window_count, window_length

CS = 1000


def windows(ranges, size):
    out = list(used_windows(ranges, size, CS))
    for w, parts in out:
        assert type(w) is int and all(type(a) is int and type(b) is int for a, b in parts), out
    return out


def test_unaligned_ranges_are_cut_at_window_edges_relative_to_each_window():
    assert windows([(250, 1500), (2100, 50), (2990, 20)], 10_000) == [
        (0, [(250, 750)]),
        (1, [(0, 750)]),
        (2, [(100, 50), (990, 10)]),
        (3, [(0, 10)]),
    ]


def test_a_range_ending_on_a_window_edge_makes_no_empty_window():
    assert windows([(0, 2000)], 10_000) == [(0, [(0, 1000)]), (1, [(0, 1000)])]
    assert windows([(1500, 500), (3000, 1)], 10_000) == [(1, [(500, 500)]), (3, [(0, 1)])]


def test_first_used_window_may_be_any_window():
    assert windows([(5000, 10)], 10_000) == [(5, [(0, 10)])]
    assert windows([(1000, 10)], 10_000) == [(1, [(0, 10)])]


def test_ranges_past_the_end_are_clipped_and_empty_input_yields_nothing():
    assert windows([(9500, 5000)], 10_000) == [(9, [(500, 500)])]
    assert windows([(9990, 100)], 9995) == [(9, [(990, 5)])]
    assert windows([(20_000, 10)], 10_000) == []
    assert windows([], 10_000) == []


def test_window_count_rounds_up_to_whole_windows():
    assert [window_count(n, CS) for n in (0, 1, 999, 1000, 1001, 2000, 2001)] == [0, 1, 1, 1, 2, 2, 3]
    assert type(window_count(1001, CS)) is int


def test_window_length_is_whole_except_the_last():
    assert [window_length(w, 2500, CS) for w in (0, 1, 2)] == [1000, 1000, 500]
    assert window_length(2, 3000, CS) == 1000


def test_split_cuts_into_pieces_and_keeps_one_empty_piece_for_nothing():
    assert split(b"abcdefg", 3) == [b"abc", b"def", b"g"]
    assert split(b"abcdef", 3) == [b"abc", b"def"]
    assert split(b"", 3) == [b""]
    assert b"".join(split(bytes(range(200)), 7)) == bytes(range(200))
