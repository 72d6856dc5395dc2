"""Tests for agent/allocator.py: the malloc tuning is safe to call and changes no result."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from agent.allocator import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_tuning_is_accepted_and_can_be_repeated():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True
    # Large arrays still allocate, fill and free as before.
    first = np.arange(40_000_000, dtype=np.float64)
    assert first[-1] == 39_999_999.0
    del first
    second = np.ones((4000, 4000))
    assert second.sum() == 16_000_000.0
