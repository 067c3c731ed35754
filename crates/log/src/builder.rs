//! Building record batches (magic 2, uncompressed) inside the broker: the group coordinator
//! writes its offsets and group metadata as ordinary batches, and compaction rewrites a batch
//! that lost some of its records. Everything else stores batches exactly as producers sent them.
//!
//! The layout is Kafka's `DefaultRecordBatch` (see `batch`); each record is
//! `length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
//! keyLength varint | key | valueLength varint | value | headerCount varint | headers`, with
//! -1 lengths for a null key or value (a tombstone).

use bytes::Bytes;

use crate::batch::{ValidatedBatch, HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_V2};

/// Byte at which the CRC-covered region starts (attributes), and where the CRC sits.
const ATTRIBUTES_AT: usize = 21;
const CRC_AT: usize = 17;

/// One record header: a key and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header key (Kafka's is a string; kept as bytes).
    pub key: Bytes,
    /// Header value, `None` for null.
    pub value: Option<Bytes>,
}

/// A record to put into a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpec {
    /// Offset relative to the batch's base offset (compaction keeps the original ones).
    pub offset_delta: i32,
    /// Absolute timestamp in milliseconds.
    pub timestamp: i64,
    /// Key, `None` for null.
    pub key: Option<Bytes>,
    /// Value, `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<RecordHeader>,
}

/// The batch-level fields of a built batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchFields {
    /// Offset of the batch's first offset (the leader replaces it on append).
    pub base_offset: i64,
    /// Leader epoch stamped on the batch (the leader replaces it on append).
    pub partition_leader_epoch: i32,
    /// Attributes without the codec bits (timestamp type, transactional, control flags).
    pub attributes: i16,
    /// Offset delta of the last offset the batch spans; `None` takes the last record's. A
    /// compacted batch keeps its original span so producer sequence numbers stay meaningful.
    pub last_offset_delta: Option<i32>,
    /// Timestamp the record deltas are relative to; `None` takes the first record's.
    pub base_timestamp: Option<i64>,
    /// Idempotent producer id, -1 for none.
    pub producer_id: i64,
    /// Idempotent producer epoch, -1 for none.
    pub producer_epoch: i16,
    /// Sequence of the first record, -1 for none.
    pub base_sequence: i32,
}

impl Default for BatchFields {
    fn default() -> Self {
        BatchFields {
            base_offset: 0,
            partition_leader_epoch: -1,
            attributes: 0,
            last_offset_delta: None,
            base_timestamp: None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn put_nullable(out: &mut Vec<u8>, b: &Option<Bytes>) {
    match b {
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varint(out, -1),
    }
}

/// Encodes `records` (at least one, offset deltas increasing) into one uncompressed batch.
pub fn build_batch(fields: BatchFields, records: &[RecordSpec]) -> Bytes {
    assert!(!records.is_empty(), "a batch holds at least one record");
    for w in records.windows(2) {
        assert!(
            w[0].offset_delta < w[1].offset_delta,
            "offset deltas must increase: {} then {}",
            w[0].offset_delta,
            w[1].offset_delta
        );
    }
    let last_record_delta = records.last().expect("non-empty").offset_delta;
    let last_offset_delta = fields.last_offset_delta.unwrap_or(last_record_delta);
    assert!(
        last_offset_delta >= last_record_delta,
        "last offset delta {last_offset_delta} below the last record's {last_record_delta}"
    );
    let base_timestamp = fields.base_timestamp.unwrap_or(records[0].timestamp);
    let max_timestamp = records
        .iter()
        .map(|r| r.timestamp)
        .max()
        .expect("non-empty");
    let mut body = Vec::new();
    let mut encoded = Vec::new();
    for r in records {
        body.clear();
        body.push(0u8); // record attributes: unused in magic 2
        put_varint(&mut body, r.timestamp - base_timestamp);
        put_varint(&mut body, r.offset_delta as i64);
        put_nullable(&mut body, &r.key);
        put_nullable(&mut body, &r.value);
        put_varint(&mut body, r.headers.len() as i64);
        for h in &r.headers {
            put_varint(&mut body, h.key.len() as i64);
            body.extend_from_slice(&h.key);
            put_nullable(&mut body, &h.value);
        }
        put_varint(&mut encoded, body.len() as i64);
        encoded.extend_from_slice(&body);
    }
    let mut b = Vec::with_capacity(HEADER_BYTES + encoded.len());
    b.extend_from_slice(&fields.base_offset.to_be_bytes());
    b.extend_from_slice(
        &((HEADER_BYTES - LOG_OVERHEAD_BYTES + encoded.len()) as i32).to_be_bytes(),
    );
    b.extend_from_slice(&fields.partition_leader_epoch.to_be_bytes());
    b.push(MAGIC_V2);
    b.extend_from_slice(&[0; 4]); // CRC, filled below
    b.extend_from_slice(&(fields.attributes & !0x07).to_be_bytes());
    b.extend_from_slice(&last_offset_delta.to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&max_timestamp.to_be_bytes());
    b.extend_from_slice(&fields.producer_id.to_be_bytes());
    b.extend_from_slice(&fields.producer_epoch.to_be_bytes());
    b.extend_from_slice(&fields.base_sequence.to_be_bytes());
    b.extend_from_slice(&(records.len() as i32).to_be_bytes());
    b.extend_from_slice(&encoded);
    let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// Builds a batch of key/value records with consecutive offsets, all stamped `timestamp`,
/// validated as a producer's batch: what the group coordinator appends.
pub fn key_value_batch(records: &[(Bytes, Option<Bytes>)], timestamp: i64) -> ValidatedBatch {
    let specs: Vec<RecordSpec> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| RecordSpec {
            offset_delta: i as i32,
            timestamp,
            key: Some(k.clone()),
            value: v.clone(),
            headers: Vec::new(),
        })
        .collect();
    ValidatedBatch::from_producer(build_batch(BatchFields::default(), &specs))
        .expect("a batch built here is well-formed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchHeader;
    use crate::records::decode_records;

    #[test]
    fn built_batch_validates_and_decodes_back() {
        let specs = vec![
            RecordSpec {
                offset_delta: 0,
                timestamp: 100,
                key: Some(Bytes::from_static(b"k1")),
                value: Some(Bytes::from_static(b"v1")),
                headers: vec![RecordHeader {
                    key: Bytes::from_static(b"h"),
                    value: None,
                }],
            },
            RecordSpec {
                offset_delta: 3,
                timestamp: 90,
                key: None,
                value: None,
                headers: vec![],
            },
        ];
        let fields = BatchFields {
            base_offset: 40,
            last_offset_delta: Some(5),
            ..BatchFields::default()
        };
        let b = ValidatedBatch::from_stored(build_batch(fields, &specs)).unwrap();
        let h: BatchHeader = *b.header();
        assert_eq!(h.record_count, 2);
        assert_eq!(h.last_offset_delta, 5);
        assert_eq!(h.max_timestamp, 100);
        let recs = decode_records(&h, b.bytes()).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].offset.0, 40);
        assert_eq!(recs[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(recs[0].headers, specs[0].headers);
        assert_eq!(recs[1].offset.0, 43);
        assert_eq!(recs[1].timestamp, 90);
        assert!(recs[1].key.is_none() && recs[1].value.is_none());
    }

    #[test]
    fn key_value_batch_is_a_valid_producer_batch() {
        let b = key_value_batch(
            &[
                (Bytes::from_static(b"a"), Some(Bytes::from_static(b"1"))),
                (Bytes::from_static(b"b"), None),
            ],
            7,
        );
        assert_eq!(b.header().record_count, 2);
        assert_eq!(b.header().last_offset_delta, 1);
        assert_eq!(b.header().base_timestamp, 7);
    }
}
