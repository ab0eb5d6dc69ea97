"""The outbox's partitioner is aiokafka's (and the Java client's) murmur2 partitioner."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given
from hypothesis import strategies as st

from databite_stream.stream.outbox import partition_for


@given(key=st.binary(max_size=300), partitions=st.integers(min_value=1, max_value=1024))
def test_partition_for_matches_aiokafkas_default_partitioner(key: bytes, partitions: int) -> None:
    every = list(range(partitions))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, every, every)


@given(key=st.text(max_size=80))
def test_the_hash_is_aiokafkas_murmur2(key: str) -> None:
    data = key.encode()
    # every bit that picks a partition, over a count that uses all 31 of them
    assert partition_for(data, 2**31) == murmur2(data) & 0x7FFFFFFF


def test_known_keys_land_where_the_java_client_puts_them() -> None:
    # murmur2 values of the Java client's Utils.murmur2 (kafka-clients UtilsTest)
    assert partition_for(b"21", 2**31) == -973932308 & 0x7FFFFFFF
    assert partition_for(b"foobar", 2**31) == -790332482 & 0x7FFFFFFF
    assert partition_for(b"a-little-bit-long-string", 2**31) == -985981536 & 0x7FFFFFFF
    assert partition_for(b"abc", 2**31) == 479470107
