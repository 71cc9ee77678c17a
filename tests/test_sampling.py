"""Frame sampling, trimming and windows against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from vtr.data.sampling import (
    effective_length,
    sample_frame_indices,
    segment_windows,
    window_to_frame_range,
)


def test_middle_vlen100_n8() -> None:
    # edges = linspace(0, 100, 9) = [0, 12.5, 25, 37.5, 50, 62.5, 75, 87.5, 100] -> astype(int)
    #       = [0, 12, 25, 37, 50, 62, 75, 87, 100]
    # segments [0,11] [12,24] [25,36] [37,49] [50,61] [62,74] [75,86] [87,99]
    # (start+end)//2: 11//2=5, 36//2=18, 61//2=30, 86//2=43, 111//2=55, 136//2=68, 161//2=80, 186//2=93
    assert sample_frame_indices(8, 100, "middle") == [5, 18, 30, 43, 55, 68, 80, 93]


def test_middle_short_video_is_padded_with_last_index() -> None:
    # vlen=5 < 8: acc = 5 segments of one frame each -> [0..4], then padded with 4 to 8 entries
    assert sample_frame_indices(8, 5, "middle") == [0, 1, 2, 3, 4, 4, 4, 4]
    assert sample_frame_indices(8, 1, "middle") == [0] * 8


def test_middle_exact_and_slightly_longer() -> None:
    assert sample_frame_indices(8, 8, "middle") == list(range(8))
    # vlen=10: edges = int(linspace(0, 10, 9)) = [0, 1, 2, 3, 5, 6, 7, 8, 10]
    # segments [0,0] [1,1] [2,2] [3,4] [5,5] [6,6] [7,7] [8,9] -> middles 0 1 2 3 5 6 7 8
    assert sample_frame_indices(8, 10, "middle") == [0, 1, 2, 3, 5, 6, 7, 8]


def test_middle_is_the_default_and_needs_no_rng() -> None:
    assert sample_frame_indices(4, 40) == sample_frame_indices(4, 40, "middle") == [4, 14, 24, 34]


def test_rand_lies_in_segment_and_is_seeded() -> None:
    edges = [0, 12, 25, 37, 50, 62, 75, 87, 100]
    seen = set()
    for seed in range(20):
        a = sample_frame_indices(8, 100, "rand", np.random.default_rng(seed))
        b = sample_frame_indices(8, 100, "rand", np.random.default_rng(seed))
        assert a == b
        for i, idx in enumerate(a):
            # official: random.choice(range(start, end)) with end = edges[i+1]-1, so idx in [start, end-1]
            assert edges[i] <= idx <= edges[i + 1] - 2
        seen.add(tuple(a))
    assert len(seen) > 10


def test_rand_with_single_frame_segments_falls_back_to_sorted_subset() -> None:
    # vlen=10, n=8: some segments hold one frame -> official fallback: sorted distinct random subset
    for seed in range(10):
        idx = sample_frame_indices(8, 10, "rand", np.random.default_rng(seed))
        assert idx == sorted(idx) and len(set(idx)) == 8 and all(0 <= i < 10 for i in idx)
    # vlen=5 < 8: the subset is every frame, then padded
    assert sample_frame_indices(8, 5, "rand", np.random.default_rng(0)) == [0, 1, 2, 3, 4, 4, 4, 4]


def test_uniform_includes_both_ends() -> None:
    # linspace(0, 99, 8) = 0, 14.14, 28.29, 42.43, 56.57, 70.71, 84.86, 99 -> rounded
    assert sample_frame_indices(8, 100, "uniform") == [0, 14, 28, 42, 57, 71, 85, 99]
    assert sample_frame_indices(3, 2, "uniform") == [0, 0, 1]  # round(0.5) = 0 (half to even)


@pytest.mark.parametrize(
    ("num_frames", "vlen", "strategy"), [(0, 10, "middle"), (8, 0, "middle"), (8, 10, "bogus")]
)
def test_invalid_arguments(num_frames: int, vlen: int, strategy: str) -> None:
    with pytest.raises(ValueError):
        sample_frame_indices(num_frames, vlen, strategy)


def test_effective_length() -> None:
    assert effective_length(3000, 30.0, 30) == 900  # 100 s -> first 30 s
    assert effective_length(600, 30.0, 30) == 600  # 20 s: unchanged
    assert effective_length(900, 30.0, 30) == 900  # exactly 30 s: unchanged
    assert effective_length(3000, 30.0, None) == 3000
    assert effective_length(1000, 29.97, 30) == 899  # int(30 * 29.97) = int(899.1)


def test_segment_windows() -> None:
    assert segment_windows(100, 30, 30) == [(0, 30), (30, 60), (60, 90), (90, 100)]
    assert segment_windows(100, 30, 15) == [(0, 30), (15, 45), (30, 60), (45, 75), (60, 90), (75, 100)]
    assert segment_windows(20, 30, 10) == [(0, 20)]  # shorter than a window
    assert segment_windows(60, 30, 30) == [(0, 30), (30, 60)]  # no empty trailing window
    assert segment_windows(40, 30, 10) == [(0, 30), (10, 40)]  # (20, 40) would be inside (10, 40)
    assert len(segment_windows(0.9, 0.3, 0.3)) == 3  # float round-off adds no sliver window
    assert segment_windows(0, 30, 10) == [(0, 0)]


def test_segment_windows_cover_the_video() -> None:
    for duration, window, stride in [(123.4, 10, 4), (7.5, 2.5, 2.5), (61, 8, 8), (5, 8, 3)]:
        windows = segment_windows(duration, window, stride)
        assert windows[0][0] == 0 and windows[-1][1] == pytest.approx(duration)
        for (_s0, e0), (s1, e1) in zip(windows, windows[1:], strict=False):
            assert s1 <= e0 and e1 > e0  # contiguous or overlapping, always progressing
        assert all(e - s <= window + 1e-9 for s, e in windows)


def test_segment_windows_rejects_gaps() -> None:
    with pytest.raises(ValueError):
        segment_windows(100, 10, 20)
    with pytest.raises(ValueError):
        segment_windows(100, 0, 0)


def test_window_to_frame_range() -> None:
    assert window_to_frame_range((2.0, 4.0), 16, 160) == (32, 64)
    assert window_to_frame_range((0.0, 0.01), 30, 100) == (0, 1)  # narrower than a frame: one frame
    assert window_to_frame_range((9.99, 12.0), 16, 160) == (159, 160)  # clipped to the video
    assert window_to_frame_range((20.0, 30.0), 16, 160) == (159, 160)  # past the end: the last frame
    assert window_to_frame_range((0.1, 0.2), 30, 100) == (3, 6)  # 0.1*30 = 3.0000000000000004 -> 3
    with pytest.raises(ValueError):
        window_to_frame_range((2.0, 1.0), 16, 160)
