"""The deterministic records that the compatibility tests produce and expect back.

Each record is a function of its index alone, so a consumer can check what it read without the
producer's state: keys (some null), values of varied length and content (some empty, some null,
arbitrary non-UTF-8 bytes), and headers (some records with none, some with a repeated name).
"""

import hashlib
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    """One record as a client gives it to the producer and should get it back from a fetch."""

    key: bytes | None
    value: bytes | None
    # (name, value) pairs in order; Kafka allows repeated names.
    headers: tuple


def record(index):
    digest = hashlib.sha256(index.to_bytes(8, "big")).digest()
    key = None if index % 97 == 13 else f"key-{index}".encode()
    # kafka-python refuses a record whose key and value are both null.
    if index % 499 == 7 and key is not None:
        value = None
    else:
        length = index % 311
        value = (digest * (length // len(digest) + 1))[:length]
    if index % 11 == 5:
        headers = ()
    elif index % 11 == 6:
        headers = (("dup", b"first"), ("dup", b"second"))
    else:
        headers = (("seq", str(index).encode()), ("bin", digest[:8]))
    return Record(key=key, value=value, headers=headers)


def records(count):
    return [record(i) for i in range(count)]


def unique_topic(prefix):
    """A topic name no other test uses, so tests can share one broker."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
