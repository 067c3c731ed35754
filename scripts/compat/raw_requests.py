"""Kafka requests sent as built, past a client's own checks, through kafka-python's protocol types.

For what a client would not send or would not show: a Produce to a partition that the metadata
does not have, a Fetch whose record batches stay undecoded so their codec can be checked, and a
plain Metadata lookup that does not go through the admin client's response post-processing.
"""

from kafka.admin import KafkaAdminClient
from kafka.protocol.fetch import FetchRequest
from kafka.protocol.metadata import MetadataRequest
from kafka.protocol.produce import ProduceRequest
from kafka.record import MemoryRecords
from kafka.record.memory_records import MemoryRecordsBuilder

FETCH_BYTES_MAX = 16 << 20
# Kafka's compression codec ids, as stored in a record batch's attributes.
CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def _send(bootstrap, request):
    client = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        # With one broker, the client's default node (the least loaded one) is that broker.
        return client.send_request(request)
    finally:
        client.close()


def fetch_batches(bootstrap, topic, partition=0):
    """Record batches of `topic[partition]` from offset 0, as stored (Fetch v4, not decoded)."""
    request = FetchRequest[4](
        replica_id=-1, max_wait_time=100, min_bytes=1, max_bytes=FETCH_BYTES_MAX,
        isolation_level=0, topics=[(topic, [(partition, 0, FETCH_BYTES_MAX)])],
    )
    response = _send(bootstrap, request)
    (_, partitions), = response.topics
    (_, error_code, _, _, _, raw), = partitions
    assert error_code == 0, f"fetch {topic}[{partition}]: error code {error_code}"
    stored = MemoryRecords(raw)
    batches = []
    while stored.has_next():
        batch = stored.next_batch()
        if batch is not None:
            batches.append(batch)
    return batches


def produce_one(bootstrap, topic, partition):
    """Produces one uncompressed record (Produce v3, acks=1); returns the partition's error code."""
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    builder.append(timestamp=None, key=None, value=b"x", headers=[])
    builder.close()
    request = ProduceRequest[3](
        transactional_id=None, required_acks=1, timeout=10_000,
        topics=[(topic, [(partition, builder.buffer())])],
    )
    response = _send(bootstrap, request)
    (_, partitions), = response.topics
    (answered_partition, error_code, *_), = partitions
    assert answered_partition == partition
    return error_code


def leader_of(bootstrap, topic, partition):
    """The node id leading `topic[partition]`, from a Metadata v1 request (no auto-creation)."""
    response = _send(bootstrap, MetadataRequest[1](topics=[topic]))
    (error_code, _, _, partitions), = response.topics
    assert error_code == 0, f"metadata {topic}: error code {error_code}"
    leaders = {index: leader for _, index, leader, _, _ in partitions}
    return leaders[partition]
