"""kafka-python (pure-Python client) against the real broker.

Consumers here use manual assignment with no group id; consumer groups are tested in
test_consumer_groups.py.
"""

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions, NewTopic
from kafka.errors import InvalidTopicError, UnknownTopicOrPartitionError

import raw_requests
from sample_records import Record, records, unique_topic

# Upper bounds on waiting for answers that must come; never an expected duration.
CONSUME_DEADLINE_MS = 60_000
FLUSH_TIMEOUT_S = 60


def producer(broker, **config):
    return KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5, **config)


def consumer(broker):
    return KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


def admin(broker):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap)


def produce_all(client, topic, batch, timestamps_ms=None):
    """Sends every record to partition 0 and returns the acknowledged offsets, in send order."""
    futures = []
    for index, rec in enumerate(batch):
        futures.append(client.send(
            topic,
            key=rec.key,
            value=rec.value,
            headers=list(rec.headers),
            partition=0,
            timestamp_ms=None if timestamps_ms is None else timestamps_ms[index],
        ))
    client.flush(timeout=FLUSH_TIMEOUT_S)
    return [future.get(timeout=FLUSH_TIMEOUT_S).offset for future in futures]


def consume_from(client, topic, offset, count):
    """Reads `count` records of partition 0 from `offset` (manual assignment, no group)."""
    tp = TopicPartition(topic, 0)
    client.assign([tp])
    client.seek(tp, offset)
    got = []
    polls_max = CONSUME_DEADLINE_MS // 500
    for _ in range(polls_max):
        for batch in client.poll(timeout_ms=500).values():
            got.extend(batch)
        if len(got) >= count:
            break
    assert len(got) == count, f"read {len(got)} of {count} records from {topic}[0]@{offset}"
    return got


def assert_same_records(got, expected, first_offset=0):
    assert [r.offset for r in got] == list(range(first_offset, first_offset + len(expected)))
    for consumed, sent in zip(got, expected):
        back = Record(key=consumed.key, value=consumed.value, headers=tuple(consumed.headers))
        assert back == sent, f"offset {consumed.offset}"


@pytest.mark.parametrize("acks", [1, "all"])
def test_records_round_trip_with_keys_headers_and_offsets(broker, acks):
    topic = unique_topic(f"kp-roundtrip-acks{acks}")
    batch = records(5000)
    send = producer(broker, acks=acks)
    try:
        offsets = produce_all(send, topic, batch)
    finally:
        send.close()
    assert offsets == list(range(len(batch)))

    read = consumer(broker)
    try:
        assert_same_records(consume_from(read, topic, 0, len(batch)), batch)
    finally:
        read.close()


@pytest.mark.parametrize("codec", sorted(raw_requests.CODEC_IDS))
def test_each_codec_round_trips_and_is_stored_as_produced(broker, codec):
    topic = unique_topic(f"kp-codec-{codec}")
    batch = records(1000)
    send = producer(broker, acks=1, compression_type=codec)
    try:
        assert produce_all(send, topic, batch) == list(range(len(batch)))
    finally:
        send.close()

    read = consumer(broker)
    try:
        assert_same_records(consume_from(read, topic, 0, len(batch)), batch)
    finally:
        read.close()

    # The broker passes batches through untouched, so they come back in the producer's codec.
    stored = raw_requests.fetch_batches(broker.bootstrap, topic)
    assert stored, "raw fetch returned no batches"
    assert {b.compression_type for b in stored} == {raw_requests.CODEC_IDS[codec]}


def topic_configs(client, topic):
    (response,) = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    (resource,) = response.to_object()["resources"]
    assert resource["error_code"] == 0, resource
    return {entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]}


def partition_count(client, topic):
    (described,) = client.describe_topics([topic])
    assert described["error_code"] == 0, described
    return len(described["partitions"])


def test_admin_creates_describes_alters_grows_and_deletes_a_topic(broker):
    topic = unique_topic("kp-admin")
    client = admin(broker)
    try:
        client.create_topics([NewTopic(
            topic, num_partitions=3, replication_factor=1,
            topic_configs={"retention.ms": "3600000"},
        )])
        # The admin client asks Metadata v8 for authorized operations and decodes the bitfield.
        assert topic in client.list_topics()
        assert partition_count(client, topic) == 3
        assert topic_configs(client, topic)["retention.ms"] == "3600000"

        altered = client.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={"retention.ms": "7200000"},
        )])
        assert [r[0] for r in altered.resources] == [0], altered
        assert topic_configs(client, topic)["retention.ms"] == "7200000"

        client.create_partitions({topic: NewPartitions(total_count=5)})
        assert partition_count(client, topic) == 5

        client.delete_topics([topic])
        assert topic not in client.list_topics()
    finally:
        client.close()


def test_list_offsets_earliest_latest_and_by_timestamp(broker):
    topic = unique_topic("kp-offsets")
    base_ms = 1_700_000_000_000
    timestamps_ms = [base_ms + 1000 * i for i in range(10)]
    send = producer(broker, acks="all")
    try:
        assert produce_all(send, topic, records(10), timestamps_ms) == list(range(10))
    finally:
        send.close()

    tp = TopicPartition(topic, 0)
    read = consumer(broker)
    try:
        assert read.beginning_offsets([tp]) == {tp: 0}
        assert read.end_offsets([tp]) == {tp: 10}
        # The first record (not batch) whose timestamp is >= the one asked for.
        exact = read.offsets_for_times({tp: base_ms + 4000})[tp]
        assert (exact.offset, exact.timestamp) == (4, base_ms + 4000)
        between = read.offsets_for_times({tp: base_ms + 6500})[tp]
        assert (between.offset, between.timestamp) == (7, base_ms + 7000)
        assert read.offsets_for_times({tp: base_ms})[tp].offset == 0
        assert read.offsets_for_times({tp: base_ms + 60_000})[tp] is None
    finally:
        read.close()


def test_delete_records_moves_the_earliest_offset(broker):
    topic = unique_topic("kp-delete-records")
    batch = records(20)
    send = producer(broker, acks="all")
    try:
        assert produce_all(send, topic, batch) == list(range(20))
    finally:
        send.close()

    tp = TopicPartition(topic, 0)
    client = admin(broker)
    try:
        # The leader is given so that the admin client skips its own metadata lookup, which
        # test_admin_creates_describes_alters_grows_and_deletes_a_topic covers.
        leader = raw_requests.leader_of(broker.bootstrap, topic, 0)
        result = client.delete_records({tp: 12}, partition_leader_id=leader)
        assert result[tp]["low_watermark"] == 12
    finally:
        client.close()

    read = consumer(broker)
    try:
        assert read.beginning_offsets([tp]) == {tp: 12}
        assert read.end_offsets([tp]) == {tp: 20}
        assert_same_records(consume_from(read, topic, 12, 8), batch[12:], first_offset=12)
    finally:
        read.close()


def test_records_survive_a_sigterm_restart(broker_factory):
    node = broker_factory.start()
    topic = unique_topic("kp-restart")
    batch = records(2000)
    send = producer(node, acks="all")
    try:
        assert produce_all(send, topic, batch[:1500]) == list(range(1500))
    finally:
        send.close()

    assert node.restart() == 0, "SIGTERM must stop the broker cleanly (exit code 0)"

    send = producer(node, acks="all")
    try:
        assert produce_all(send, topic, batch[1500:]) == list(range(1500, 2000))
    finally:
        send.close()
    read = consumer(node)
    try:
        assert_same_records(consume_from(read, topic, 0, len(batch)), batch)
    finally:
        read.close()


def test_creating_a_topic_with_an_invalid_name_fails(broker):
    client = admin(broker)
    try:
        with pytest.raises(InvalidTopicError):
            client.create_topics([NewTopic("bad name!", num_partitions=1, replication_factor=1)])
    finally:
        client.close()
    read = consumer(broker)
    try:
        assert "bad name!" not in read.topics()
    finally:
        read.close()


def test_producing_to_a_missing_partition_fails(broker):
    topic = unique_topic("kp-missing-partition")
    client = admin(broker)
    try:
        client.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])

        # The client refuses on its own, from the metadata the broker gave it.
        send = producer(broker, acks=1, max_block_ms=10_000)
        try:
            with pytest.raises(AssertionError, match="Unrecognized partition"):
                send.send(topic, value=b"x", partition=2)
        finally:
            send.close()

        # The broker must refuse too when a request names the partition anyway.
        error_code = raw_requests.produce_one(broker.bootstrap, topic, partition=2)
        assert error_code == UnknownTopicOrPartitionError.errno
    finally:
        client.close()
