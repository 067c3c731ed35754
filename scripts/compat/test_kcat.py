"""kcat (the librdkafka command-line client) against the real broker.

kcat's consumer mode without -G assigns partitions itself, which is all the broker supports yet.
"""

import re
import shutil
import subprocess

import pytest

import raw_requests
from sample_records import unique_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(
    KCAT is None, reason="kcat is not on PATH (scripts/setup-test-deps.sh installs it as root)"
)

# Upper bound on one kcat run; never an expected duration.
KCAT_TIMEOUT_S = 30


def kcat(broker, *args, stdin=None):
    done = subprocess.run(
        [KCAT, "-b", broker.bootstrap, *args],
        input=stdin, capture_output=True, timeout=KCAT_TIMEOUT_S,
    )
    assert done.returncode == 0, (
        f"kcat {' '.join(args)} exited {done.returncode}:\n{done.stderr.decode(errors='replace')}"
    )
    return done.stdout.decode()


def consume(broker, topic, count, *args):
    """Reads `count` records of partition 0 from the start; exits after them (-c) or at the end
    of the partition (-e), whichever comes first."""
    return kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-c", str(count),
                "-e", "-q", *args)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_lines_produced_with_kcat_are_read_back(broker, codec):
    topic = unique_topic(f"kcat-lines-{codec}")
    # Repetitive lines in one batch (long linger): librdkafka sends a batch uncompressed when
    # compressing does not shrink it, which tiny batches on a loaded machine would trigger.
    lines = [f"line {i} " + "ünïcode " * 20 for i in range(50)]
    kcat(broker, "-P", "-t", topic, "-p", "0", "-z", codec, "-X", "linger.ms=200",
         stdin="\n".join(lines).encode())

    out = consume(broker, topic, len(lines), "-f", "%o %s\n")
    assert out.splitlines() == [f"{i} {line}" for i, line in enumerate(lines)]

    stored = raw_requests.fetch_batches(broker.bootstrap, topic)
    assert {b.compression_type for b in stored} == {raw_requests.CODEC_IDS.get(codec, 0)}


def test_keys_and_headers_produced_with_kcat_are_read_back(broker):
    topic = unique_topic("kcat-keyed")
    kcat(broker, "-P", "-t", topic, "-p", "0", "-K", ":", "-H", "origin=kcat",
         stdin=b"k1:v1\nk2:v2\nk3:v3\n")

    out = consume(broker, topic, 3, "-f", "%k=%s %h\n")
    assert out.splitlines() == [f"k{i}=v{i} origin=kcat" for i in (1, 2, 3)]


def test_consumer_exits_at_the_end_of_the_partition(broker):
    topic = unique_topic("kcat-eof")
    kcat(broker, "-P", "-t", topic, "-p", "0", stdin=b"one\ntwo\n")

    # Without -c, only the end-of-partition signal ends kcat: librdkafka raises it when a Fetch
    # at the high watermark comes back with an empty record set (a null one fails to parse).
    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q")
    assert out.splitlines() == ["one", "two"]


def test_metadata_lists_the_broker_and_the_topic(broker):
    topic = unique_topic("kcat-metadata")
    kcat(broker, "-P", "-t", topic, stdin=b"hello\n")

    out = kcat(broker, "-L", "-t", topic)
    assert re.search(r"^ 1 brokers:$", out, re.M), out
    assert re.search(rf"^  broker \d+ at 127\.0\.0\.1:{broker.port}", out, re.M), out
    assert re.search(rf'^  topic "{topic}" with 1 partitions:$', out, re.M), out
    assert re.search(r"^    partition 0, leader \d+, replicas: \d+, isrs: \d+$", out, re.M), out
