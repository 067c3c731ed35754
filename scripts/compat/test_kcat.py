"""kcat (the librdkafka command-line client) against the real broker.

kcat's consumer mode without -G assigns partitions itself, which is all the broker supports yet.
"""

import re
import shutil
import subprocess

import pytest

from sample_records import unique_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(
    KCAT is None, reason="kcat is not on PATH (scripts/setup-test-deps.sh installs it as root)"
)

# Upper bound on one kcat run; never an expected duration.
KCAT_TIMEOUT_S = 60


def kcat(broker, *args, stdin=None):
    done = subprocess.run(
        [KCAT, "-b", broker.bootstrap, *args],
        input=stdin, capture_output=True, timeout=KCAT_TIMEOUT_S,
    )
    assert done.returncode == 0, (
        f"kcat {' '.join(args)} exited {done.returncode}:\n{done.stderr.decode(errors='replace')}"
    )
    return done.stdout.decode()


def consume_all(broker, topic, *args):
    return kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", *args)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_lines_produced_with_kcat_are_read_back(broker, codec):
    topic = unique_topic(f"kcat-lines-{codec}")
    lines = [f"line {i} ünïcode" for i in range(50)]
    kcat(broker, "-P", "-t", topic, "-p", "0", "-z", codec, stdin="\n".join(lines).encode())

    out = consume_all(broker, topic, "-f", "%o %s\n")
    assert out.splitlines() == [f"{i} {line}" for i, line in enumerate(lines)]


def test_keys_and_headers_produced_with_kcat_are_read_back(broker):
    topic = unique_topic("kcat-keyed")
    kcat(broker, "-P", "-t", topic, "-p", "0", "-K", ":", "-H", "origin=kcat",
         stdin=b"k1:v1\nk2:v2\nk3:v3\n")

    out = consume_all(broker, topic, "-f", "%k=%s %h\n")
    assert out.splitlines() == [f"k{i}=v{i} origin=kcat" for i in (1, 2, 3)]


def test_metadata_lists_the_broker_and_the_topic(broker):
    topic = unique_topic("kcat-metadata")
    kcat(broker, "-P", "-t", topic, stdin=b"hello\n")

    out = kcat(broker, "-L", "-t", topic)
    assert re.search(r"^ 1 brokers:$", out, re.M), out
    assert re.search(rf"^  broker \d+ at 127\.0\.0\.1:{broker.port}", out, re.M), out
    assert re.search(rf'^  topic "{topic}" with 1 partitions:$', out, re.M), out
    assert re.search(r"^    partition 0, leader \d+, replicas: \d+, isrs: \d+$", out, re.M), out
