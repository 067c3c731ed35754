"""Consumer groups through confluent-kafka (librdkafka) and kafka-python against the real broker.

Members of one group share a topic's partitions, commit what they processed, and a group resumes
exactly from its committed offsets after the broker stops cleanly or is killed (SIGKILL).
"""

import signal
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import KafkaAdminClient

from sample_records import unique_topic

# Short timeouts so that a test never waits long for the group protocol.
GROUP_SETTINGS = {"group.initial.rebalance.delay.ms": 0, "group.min.session.timeout.ms": 1000}
# Upper bound on waiting for something that must happen; never an expected duration.
DEADLINE_S = 60
REQUEST_TIMEOUT_S = 30


def create_topic(broker, topic, partitions):
    # The client must outlive the futures: a destroyed handle fails them.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for future in futures.values():
        future.result(REQUEST_TIMEOUT_S)


def produce(broker, topic, partitions, per_partition, start=0):
    """Values `<partition>-<n>` for n in start..start+per_partition, to every partition."""
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False, "linger.ms": 5})
    for n in range(start, start + per_partition):
        for part in range(partitions):
            p.produce(topic, value=f"{part}-{n}".encode(), partition=part)
    assert p.flush(REQUEST_TIMEOUT_S) == 0


def ck_consumer(broker, group, topic):
    c = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 300,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([topic])
    return c


def assigned(consumer):
    return {tp.partition for tp in consumer.assignment()}


def test_confluent_group_shares_partitions_and_resumes_after_restart(broker_factory):
    broker = broker_factory.start(GROUP_SETTINGS)
    topic = unique_topic("ck-group")
    group = f"{topic}-g"
    create_topic(broker, topic, 6)
    produce(broker, topic, 6, 20)
    members = [ck_consumer(broker, group, topic) for _ in range(3)]
    seen = set()
    deadline = time.monotonic() + DEADLINE_S
    while True:
        for c in members:
            msg = c.poll(0.05)
            if msg is not None and msg.error() is None:
                seen.add((msg.partition(), msg.offset()))
                # Commit after processing.
                c.commit(message=msg, asynchronous=False)
        sets = [assigned(c) for c in members]
        balanced = all(sets) and sum(map(len, sets)) == 6 and set().union(*sets) == set(range(6))
        if balanced and len(seen) == 120:
            break
        assert time.monotonic() < deadline, f"assignments {sets}, {len(seen)} of 120 processed"
    for c in members:
        c.close()
    assert broker.restart() == 0, "clean exit"
    produce(broker, topic, 6, 5, start=20)
    c = ck_consumer(broker, group, topic)
    got = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < 30:
        msg = c.poll(0.2)
        if msg is not None and msg.error() is None:
            got.append((msg.partition(), msg.offset()))
        assert time.monotonic() < deadline, f"resumed consumer read {got}"
    c.close()
    assert sorted(got) == [(p, o) for p in range(6) for o in range(20, 25)], "exactly from the commits"


def test_kafka_python_group_commits_survive_kill9(broker_factory):
    broker = broker_factory.start(GROUP_SETTINGS)
    topic = unique_topic("kp-group")
    group = f"{topic}-g"
    create_topic(broker, topic, 2)
    produce(broker, topic, 2, 20)

    def consumer():
        return KafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )

    c = consumer()
    got = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < 40:
        for batch in c.poll(timeout_ms=500).values():
            got.extend((m.partition, m.offset) for m in batch)
        assert time.monotonic() < deadline, f"read {len(got)} of 40"
    c.commit()
    committed = c.committed(KafkaTopicPartition(topic, 0))
    assert getattr(committed, "offset", committed) == 20
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    listed = admin.list_consumer_groups()
    assert any(entry[0] == group for entry in listed), listed
    described = admin.describe_consumer_groups([group])[0]
    assert described.state == "Stable" and len(described.members) == 1, described
    admin.close()
    c.close()
    assert broker.stop(signal.SIGKILL) == -signal.SIGKILL
    broker.start()
    produce(broker, topic, 2, 5, start=20)
    c = consumer()
    got = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < 10:
        for batch in c.poll(timeout_ms=500).values():
            got.extend((m.partition, m.offset) for m in batch)
        assert time.monotonic() < deadline, f"resumed consumer read {got}"
    c.close()
    assert sorted(got) == [(p, o) for p in range(2) for o in range(20, 25)], "exactly from the commits"
