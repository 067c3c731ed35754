"""confluent-kafka (librdkafka) against the real broker.

Consumers here are assigned partitions at explicit offsets and never subscribe or commit
(librdkafka still wants a `group.id` to be set); consumer groups are tested in
test_consumer_groups.py. Producers turn idempotence off because InitProducerId is not supported.
"""

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

import raw_requests
from sample_records import Record, records, unique_topic

# Upper bounds on waiting for answers that must come; never an expected duration.
REQUEST_TIMEOUT_S = 30
CONSUME_DEADLINE_S = 60


def producer(broker, **config):
    settings = {
        "bootstrap.servers": broker.bootstrap,
        "enable.idempotence": False,
        "linger.ms": 5,
    }
    settings.update(config)
    return Producer(settings)


def consumer(broker):
    return Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": "ferrymq-compat-never-joined",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
    })


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def produce_all(client, topic, batch, timestamps_ms=None):
    """Sends every record to partition 0 and returns the acknowledged offsets, in send order."""
    results = [None] * len(batch)

    def delivered(index):
        def report(err, msg):
            results[index] = err if err is not None else msg.offset()
        return report

    for index, rec in enumerate(batch):
        extra = {} if timestamps_ms is None else {"timestamp": timestamps_ms[index]}
        while True:
            try:
                client.produce(
                    topic, value=rec.value, key=rec.key, headers=list(rec.headers),
                    partition=0, on_delivery=delivered(index), **extra,
                )
                break
            except BufferError:
                client.poll(0.1)
        client.poll(0)
    assert client.flush(REQUEST_TIMEOUT_S) == 0, "records still undelivered after flush"
    errors = [r for r in results if isinstance(r, KafkaError)]
    assert not errors, f"{len(errors)} records failed, first: {errors[0]}"
    return results


def consume_from(client, topic, offset, count):
    """Reads `count` records of partition 0 from `offset` (assign, never subscribe)."""
    client.assign([TopicPartition(topic, 0, offset)])
    got = []
    polls_max = CONSUME_DEADLINE_S * 2
    for _ in range(polls_max):
        for msg in client.consume(num_messages=1000, timeout=0.5):
            assert msg.error() is None, f"consume {topic}[0]: {msg.error()}"
            got.append(msg)
        if len(got) >= count:
            break
    assert len(got) == count, f"read {len(got)} of {count} records from {topic}[0]@{offset}"
    return got


def assert_same_records(got, expected, first_offset=0):
    assert [m.offset() for m in got] == list(range(first_offset, first_offset + len(expected)))
    for consumed, sent in zip(got, expected):
        back = Record(key=consumed.key(), value=consumed.value(),
                      headers=tuple(consumed.headers() or ()))
        assert back == sent, f"offset {consumed.offset()}"


def wait_all(futures):
    return {key: future.result(timeout=REQUEST_TIMEOUT_S) for key, future in futures.items()}


@pytest.mark.parametrize("acks", ["1", "all"])
def test_records_round_trip_with_keys_headers_and_offsets(broker, acks):
    topic = unique_topic(f"ck-roundtrip-acks{acks}")
    batch = records(5000)
    assert produce_all(producer(broker, acks=acks), topic, batch) == list(range(len(batch)))

    read = consumer(broker)
    try:
        assert_same_records(consume_from(read, topic, 0, len(batch)), batch)
    finally:
        read.close()


@pytest.mark.parametrize("codec", sorted(raw_requests.CODEC_IDS))
def test_each_codec_round_trips_and_is_stored_as_produced(broker, codec):
    topic = unique_topic(f"ck-codec-{codec}")
    batch = records(1000)
    send = producer(broker, acks="1", **{"compression.type": codec})
    assert produce_all(send, topic, batch) == list(range(len(batch)))

    read = consumer(broker)
    try:
        assert_same_records(consume_from(read, topic, 0, len(batch)), batch)
    finally:
        read.close()

    # The broker passes batches through untouched, so they come back in librdkafka's codec.
    # librdkafka sends lz4 batches uncompressed ("Broker does not support compression type lz4")
    # unless the broker's ApiVersions lists FindCoordinator: its LZ4 feature check keys on that.
    stored = raw_requests.fetch_batches(broker.bootstrap, topic)
    assert stored, "raw fetch returned no batches"
    # librdkafka sends a batch uncompressed when compressing does not shrink it (a small first
    # batch under load), so the largest batch is the one that must carry the codec.
    codec_id = raw_requests.CODEC_IDS[codec]
    assert {b.compression_type for b in stored} <= {0, codec_id}
    largest = max(stored, key=lambda b: b.records_count)
    assert largest.compression_type == codec_id


def topic_configs(client, topic):
    (entries,) = wait_all(client.describe_configs([ConfigResource("topic", topic)])).values()
    return {name: entry.value for name, entry in entries.items()}


def partition_count(client, topic):
    listed = client.list_topics(topic=topic, timeout=REQUEST_TIMEOUT_S).topics[topic]
    assert listed.error is None, listed.error
    return len(listed.partitions)


def test_admin_creates_describes_alters_grows_and_deletes_a_topic(broker):
    topic = unique_topic("ck-admin")
    client = admin(broker)
    wait_all(client.create_topics([NewTopic(topic, 3, 1, config={"retention.ms": "3600000"})]))
    assert topic in client.list_topics(timeout=REQUEST_TIMEOUT_S).topics
    assert partition_count(client, topic) == 3
    assert topic_configs(client, topic)["retention.ms"] == "3600000"

    change = ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)
    wait_all(client.incremental_alter_configs(
        [ConfigResource("topic", topic, incremental_configs=[change])]
    ))
    assert topic_configs(client, topic)["retention.ms"] == "7200000"

    wait_all(client.create_partitions([NewPartitions(topic, 5)]))
    assert partition_count(client, topic) == 5

    wait_all(client.delete_topics([topic]))
    assert topic not in client.list_topics(timeout=REQUEST_TIMEOUT_S).topics


def test_describe_cluster_names_the_single_broker(broker):
    client = admin(broker)
    cluster = client.describe_cluster().result(timeout=REQUEST_TIMEOUT_S)
    assert [(n.host, n.port) for n in cluster.nodes] == [("127.0.0.1", broker.port)]
    assert cluster.controller is not None
    assert cluster.controller.id == cluster.nodes[0].id
    assert cluster.cluster_id


def test_list_offsets_earliest_latest_and_by_timestamp(broker):
    topic = unique_topic("ck-offsets")
    base_ms = 1_700_000_000_000
    timestamps_ms = [base_ms + 1000 * i for i in range(10)]
    send = producer(broker, acks="all")
    assert produce_all(send, topic, records(10), timestamps_ms) == list(range(10))

    tp = TopicPartition(topic, 0)
    client = admin(broker)
    specs = {
        "earliest": OffsetSpec.earliest(),
        "latest": OffsetSpec.latest(),
        "exact": OffsetSpec.for_timestamp(base_ms + 4000),
        "between": OffsetSpec.for_timestamp(base_ms + 6500),
        "max_timestamp": OffsetSpec.max_timestamp(),
    }
    answers = {
        name: client.list_offsets({tp: spec})[tp].result(timeout=REQUEST_TIMEOUT_S)
        for name, spec in specs.items()
    }
    # By timestamp: the first record (not batch) whose timestamp is >= the one asked for.
    assert answers["earliest"].offset == 0
    assert answers["latest"].offset == 10
    assert (answers["exact"].offset, answers["exact"].timestamp) == (4, base_ms + 4000)
    assert (answers["between"].offset, answers["between"].timestamp) == (7, base_ms + 7000)
    assert (answers["max_timestamp"].offset, answers["max_timestamp"].timestamp) == (
        9, base_ms + 9000)

    read = consumer(broker)
    try:
        assert read.get_watermark_offsets(tp, timeout=REQUEST_TIMEOUT_S, cached=False) == (0, 10)
        (found,) = read.offsets_for_times(
            [TopicPartition(topic, 0, base_ms + 2500)], timeout=REQUEST_TIMEOUT_S)
        assert found.offset == 3
    finally:
        read.close()


def test_delete_records_moves_the_earliest_offset(broker):
    topic = unique_topic("ck-delete-records")
    batch = records(20)
    assert produce_all(producer(broker, acks="all"), topic, batch) == list(range(20))

    client = admin(broker)
    (deleted,) = wait_all(client.delete_records([TopicPartition(topic, 0, 12)])).values()
    assert deleted.low_watermark == 12

    read = consumer(broker)
    try:
        tp = TopicPartition(topic, 0)
        assert read.get_watermark_offsets(tp, timeout=REQUEST_TIMEOUT_S, cached=False) == (12, 20)
        assert_same_records(consume_from(read, topic, 12, 8), batch[12:], first_offset=12)
    finally:
        read.close()


def test_records_survive_a_sigterm_restart(broker_factory):
    node = broker_factory.start()
    topic = unique_topic("ck-restart")
    batch = records(2000)
    assert produce_all(producer(node, acks="all"), topic, batch[:1500]) == list(range(1500))

    assert node.restart() == 0, "SIGTERM must stop the broker cleanly (exit code 0)"

    resumed = produce_all(producer(node, acks="all"), topic, batch[1500:])
    assert resumed == list(range(1500, 2000))
    read = consumer(node)
    try:
        assert_same_records(consume_from(read, topic, 0, len(batch)), batch)
    finally:
        read.close()


def test_creating_a_topic_with_an_invalid_name_fails(broker):
    client = admin(broker)
    (future,) = client.create_topics([NewTopic("bad name!", 1, 1)]).values()
    with pytest.raises(KafkaException) as raised:
        future.result(timeout=REQUEST_TIMEOUT_S)
    assert raised.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    assert "bad name!" not in client.list_topics(timeout=REQUEST_TIMEOUT_S).topics


def test_producing_to_a_missing_partition_fails(broker):
    topic = unique_topic("ck-missing-partition")
    client = admin(broker)
    wait_all(client.create_topics([NewTopic(topic, 2, 1)]))

    send = producer(broker, acks="1", **{"message.timeout.ms": 10_000})
    outcome = []
    try:
        send.produce(topic, value=b"x", partition=2,
                     on_delivery=lambda err, msg: outcome.append(err))
    except KafkaException as refused:
        outcome.append(refused.args[0])
    send.flush(REQUEST_TIMEOUT_S)
    assert len(outcome) == 1
    assert outcome[0] is not None, "a record for partition 2 of a 2-partition topic was accepted"
    assert outcome[0].code() == KafkaError._UNKNOWN_PARTITION
