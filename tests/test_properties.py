"""Property tests: whatever the blocks, chunk sizes, priorities and chains, the bytes are exact."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bgio

blocks = st.lists(st.binary(max_size=64), max_size=12)
profiles = st.builds(
    bgio.BackgroundIOPriority,
    chain_poll_time=st.just(0.0),
    default_chunk_size=st.integers(1, 50),
    bandwidth_pct=st.sampled_from([100.0, 99.0, 95.0]),
    num_chunks_rate_smoothing=st.integers(1, 6),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=st.lists(st.tuples(blocks, profiles, st.sampled_from(["list", "joined", "iter"])),
                       max_size=6))
def test_writes_to_one_file_are_exact_and_in_order(writes):
    out = io.BytesIO()
    handles = []
    for parts, profile, shape in writes:
        data = {"list": parts, "joined": b"".join(parts), "iter": iter(parts)}[shape]
        handles.append(bgio.bgwrite(out, data, priority=profile))
    for h in handles:
        h.result(timeout=30)
    assert out.getvalue() == b"".join(b"".join(parts) for parts, _, _ in writes)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=300), chunk=st.integers(1, 400), priority=st.integers(1, 10))
def test_bgwrite_chunk_is_exact_for_any_chunk_size(data, chunk, priority):
    out = io.BytesIO()
    assert bgio.bgwrite_chunk(out, data, chunk, priority=priority).result(timeout=30) == len(data)
    assert out.getvalue() == data


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(st.text(max_size=20), min_size=1, max_size=5), n_out=st.integers(1, 3),
       chunk=st.integers(1, 30))
def test_chains_across_destinations_keep_global_order(texts, n_out, chunk):
    # Round-robin over several streams, each write chained after the previous one:
    # a shared log of completions must come out in submission order.
    outs = [io.StringIO() for _ in range(n_out)]
    order: list[int] = []
    previous = None
    for i, text in enumerate(texts):
        previous = bgio.bgwrite_chunk(outs[i % n_out], text, chunk, chain_after=previous,
                                      priority=bgio.BackgroundIOPriority(0, chunk, 100))
        previous.add_done_callback(lambda h, i=i: order.append(i))
    previous.result(timeout=30)
    assert bgio.wait_all(timeout=30)
    assert order == list(range(len(texts)))
    for k, out in enumerate(outs):
        assert out.getvalue() == "".join(texts[k::n_out])
