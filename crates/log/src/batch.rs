//! Record batch (magic 2) headers: parsing, validation and the two fields the broker rewrites.
//!
//! A batch is stored exactly as the producer sent it. The broker reads only the fixed 61-byte
//! header, checks it and the CRC-32C, and on append rewrites the base offset and the partition
//! leader epoch — both lie before the CRC-covered region, so the CRC stays valid and no record is
//! ever decoded here.
//!
//! Layout (big-endian), Kafka's `DefaultRecordBatch`:
//! ```text
//! 0  baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8
//! 17 crc u32 (CRC-32C of bytes 21..end) | 21 attributes i16 | 23 lastOffsetDelta i32
//! 27 baseTimestamp i64 | 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16
//! 53 baseSequence i32 | 57 recordCount i32 | 61 records...
//! ```

use bytes::Bytes;
use ferrymq_types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};

/// Bytes before the batch length field's payload: base offset (8) and length (4).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Size of the fixed batch header, records excluded.
pub const HEADER_BYTES: usize = 61;
/// The only record format FerryMQ stores.
pub const MAGIC_V2: u8 = 2;

const LENGTH_AT: usize = 8;
const EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

/// Why a batch was refused. The Kafka front end maps these to `CORRUPT_MESSAGE` (CRC, framing)
/// or `INVALID_RECORD` (well-framed but inconsistent), as a Kafka broker does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than a header, or a length field pointing past the buffer.
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    /// The length field is smaller than a header.
    #[error("batch length {length} is below the header size")]
    BadLength { length: i32 },
    /// A record format other than magic 2.
    #[error("unsupported magic {magic}")]
    BadMagic { magic: u8 },
    /// The stored CRC does not match the bytes.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    /// `recordCount` disagrees with `lastOffsetDelta + 1`, or is not positive.
    #[error("record count {record_count} does not match last offset delta {last_offset_delta}")]
    BadCounts {
        record_count: i32,
        last_offset_delta: i32,
    },
    /// A stored batch whose offsets cannot be: a negative base offset or last offset delta, or
    /// a last offset past `i64::MAX - 1`. The base offset lies outside the CRC, so only this
    /// check stops a damaged one from reaching offset arithmetic.
    #[error("batch offsets out of range: base offset {base_offset}, last offset delta {last_offset_delta}")]
    BadOffsets {
        base_offset: i64,
        last_offset_delta: i32,
    },
    /// A produce carried zero or several batches where exactly one is allowed.
    #[error("expected exactly one batch, found {count}")]
    NotOneBatch { count: usize },
}

impl BatchError {
    /// True for errors that mean the bytes were damaged (Kafka's `CorruptRecordException`),
    /// false for a well-formed but invalid batch (`InvalidRecordException`).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            BatchError::Truncated { .. } | BatchError::BadLength { .. } | BatchError::BadCrc { .. }
        )
    }
}

/// The decoded fixed header of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (as stored; producers send 0).
    pub base_offset: Offset,
    /// Bytes after the length field: total size is `length + 12`.
    pub length: i32,
    /// Epoch of the leader that appended the batch.
    pub leader_epoch: LeaderEpoch,
    /// Record format version.
    pub magic: u8,
    /// CRC-32C over bytes 21..end.
    pub crc: u32,
    /// Compression codec, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record relative to the base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 if none.
    pub producer_id: ProducerId,
    /// Idempotent producer epoch, -1 if none.
    pub producer_epoch: ProducerEpoch,
    /// Sequence number of the first record, -1 if none.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8-byte slice"))
}

impl BatchHeader {
    /// Parses the fixed header from the first `HEADER_BYTES` of `b`, checking only that the
    /// bytes are there and the length field is plausible.
    pub fn parse(b: &[u8]) -> Result<BatchHeader, BatchError> {
        if b.len() < HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: HEADER_BYTES,
                available: b.len(),
            });
        }
        let length = i32_at(b, LENGTH_AT);
        if (length as i64) < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i64 {
            return Err(BatchError::BadLength { length });
        }
        Ok(BatchHeader {
            base_offset: Offset(i64_at(b, 0)),
            length,
            leader_epoch: LeaderEpoch(i32_at(b, EPOCH_AT)),
            magic: b[MAGIC_AT],
            crc: u32::from_be_bytes(b[CRC_AT..CRC_AT + 4].try_into().expect("4-byte slice")),
            attributes: i16_at(b, ATTRIBUTES_AT),
            last_offset_delta: i32_at(b, LAST_OFFSET_DELTA_AT),
            base_timestamp: i64_at(b, BASE_TIMESTAMP_AT),
            max_timestamp: i64_at(b, MAX_TIMESTAMP_AT),
            producer_id: ProducerId(i64_at(b, PRODUCER_ID_AT)),
            producer_epoch: ProducerEpoch(i16_at(b, PRODUCER_EPOCH_AT)),
            base_sequence: i32_at(b, BASE_SEQUENCE_AT),
            record_count: i32_at(b, RECORD_COUNT_AT),
        })
    }

    /// Checks that the offsets are usable: base offset and last offset delta not negative, and
    /// the offset after the batch representable. Every header read from disk or a replica goes
    /// through this before `last_offset`/`next_offset` are called on it.
    pub fn check_offsets(&self) -> Result<(), BatchError> {
        let fits = self.base_offset.0 >= 0
            && self.last_offset_delta >= 0
            && self
                .base_offset
                .0
                .checked_add(self.last_offset_delta as i64 + 1)
                .is_some();
        if !fits {
            return Err(BatchError::BadOffsets {
                base_offset: self.base_offset.0,
                last_offset_delta: self.last_offset_delta,
            });
        }
        Ok(())
    }

    /// Total bytes of the batch on disk or on the wire.
    pub fn total_bytes(&self) -> usize {
        self.length as usize + LOG_OVERHEAD_BYTES
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> Offset {
        self.base_offset.plus(self.last_offset_delta as i64)
    }

    /// The offset after the batch.
    pub fn next_offset(&self) -> Offset {
        self.last_offset().next()
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    /// True for batches of a transactional producer.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    /// True for transaction markers and other control batches.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    /// True when the batch carries an idempotent producer id.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id.0 >= 0
    }
}

/// Checks the magic and the CRC of one complete batch `b` (exactly `header.total_bytes()` long).
pub fn check_integrity(header: &BatchHeader, b: &[u8]) -> Result<(), BatchError> {
    if header.magic != MAGIC_V2 {
        return Err(BatchError::BadMagic {
            magic: header.magic,
        });
    }
    debug_assert_eq!(b.len(), header.total_bytes());
    let computed = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
    if computed != header.crc {
        return Err(BatchError::BadCrc {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// A batch whose header and CRC were checked; the only thing `Log::append*` accepts.
#[derive(Debug, Clone)]
pub struct ValidatedBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl ValidatedBatch {
    /// Validates a batch as a producer sends it: one complete magic-2 batch, CRC intact,
    /// `recordCount == lastOffsetDelta + 1`. The base offset is not looked at: the leader
    /// replaces it.
    pub fn from_producer(bytes: Bytes) -> Result<ValidatedBatch, BatchError> {
        let batch = Self::framed(bytes)?;
        let h = batch.header;
        if h.record_count <= 0 || h.last_offset_delta.checked_add(1) != Some(h.record_count) {
            return Err(BatchError::BadCounts {
                record_count: h.record_count,
                last_offset_delta: h.last_offset_delta,
            });
        }
        Ok(batch)
    }

    /// Validates one complete batch as read from a log (a replica's or our own): compacted
    /// batches may hold fewer records than their offset span, so counts are not compared, but
    /// the offsets it carries must be usable (`BatchHeader::check_offsets`).
    pub fn from_stored(bytes: Bytes) -> Result<ValidatedBatch, BatchError> {
        let batch = Self::framed(bytes)?;
        batch.header.check_offsets()?;
        Ok(batch)
    }

    /// One complete batch: length matching the buffer, magic 2, CRC intact.
    fn framed(bytes: Bytes) -> Result<ValidatedBatch, BatchError> {
        let header = BatchHeader::parse(&bytes)?;
        if header.total_bytes() != bytes.len() {
            return Err(BatchError::Truncated {
                needed: header.total_bytes(),
                available: bytes.len(),
            });
        }
        check_integrity(&header, &bytes)?;
        Ok(ValidatedBatch { header, bytes })
    }

    /// The parsed header (base offset and epoch as received).
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch bytes as received.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The 17 bytes that precede the CRC, with the base offset and leader epoch replaced:
    /// written in front of `self.tail()` so the payload is never copied to rewrite it.
    pub fn rewritten_prefix(&self, base_offset: Offset, epoch: LeaderEpoch) -> [u8; CRC_AT] {
        let mut prefix = [0u8; CRC_AT];
        prefix.copy_from_slice(&self.bytes[..CRC_AT]);
        prefix[..8].copy_from_slice(&base_offset.0.to_be_bytes());
        prefix[EPOCH_AT..EPOCH_AT + 4].copy_from_slice(&epoch.0.to_be_bytes());
        prefix
    }

    /// The bytes from the CRC to the end: unchanged by the broker.
    pub fn tail(&self) -> &[u8] {
        &self.bytes[CRC_AT..]
    }

    /// Total size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a validated batch has at least a header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Splits a buffer holding back-to-back batches (a produce's `records`, a fetch response) into
/// validated batches. A trailing partial batch is an error here: callers that accept partial
/// tails (consumers) do not use this.
pub fn split_batches(mut bytes: Bytes) -> Result<Vec<ValidatedBatch>, BatchError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let total = next_batch_bytes(&bytes)?;
        out.push(ValidatedBatch::from_stored(bytes.split_to(total))?);
    }
    Ok(out)
}

/// Validates a produce request's records for one partition: exactly one batch (Kafka requires
/// this from Produce v3 on), well-formed as a producer sends it.
pub fn validate_produce_records(bytes: Bytes) -> Result<ValidatedBatch, BatchError> {
    let mut batches = split_produced(bytes)?;
    if batches.len() != 1 {
        return Err(BatchError::NotOneBatch {
            count: batches.len(),
        });
    }
    let batch = batches.pop().expect("exactly one batch");
    ValidatedBatch::from_producer(batch.bytes)
}

/// Splits a produce's records like `split_batches`, without the offset checks of a stored
/// batch (a producer's base offset is replaced on append).
fn split_produced(mut bytes: Bytes) -> Result<Vec<ValidatedBatch>, BatchError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let total = next_batch_bytes(&bytes)?;
        out.push(ValidatedBatch::framed(bytes.split_to(total))?);
    }
    Ok(out)
}

/// The size of the batch at the front of `bytes`, checked against what is there.
fn next_batch_bytes(bytes: &[u8]) -> Result<usize, BatchError> {
    if bytes.len() < LOG_OVERHEAD_BYTES {
        return Err(BatchError::Truncated {
            needed: LOG_OVERHEAD_BYTES,
            available: bytes.len(),
        });
    }
    let length = i32_at(bytes, LENGTH_AT);
    if (length as i64) < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i64 {
        return Err(BatchError::BadLength { length });
    }
    let total = length as usize + LOG_OVERHEAD_BYTES;
    if total > bytes.len() {
        return Err(BatchError::Truncated {
            needed: total,
            available: bytes.len(),
        });
    }
    Ok(total)
}

/// Test support: builds a well-formed uncompressed batch of `count` records with the given
/// values, so storage tests need no Kafka client. Records carry no key and no headers.
pub mod testing {
    use super::*;
    use crate::builder::{build_batch, BatchFields, RecordSpec};

    /// A batch of records with these values, timestamps `base_timestamp + i`.
    pub fn batch(values: &[&[u8]], base_timestamp: i64) -> Bytes {
        batch_with_producer(values, base_timestamp, -1, -1, -1)
    }

    /// Like `batch`, with idempotent-producer fields set.
    pub fn batch_with_producer(
        values: &[&[u8]],
        base_timestamp: i64,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Bytes {
        let records: Vec<RecordSpec> = values
            .iter()
            .enumerate()
            .map(|(i, v)| RecordSpec {
                offset_delta: i as i32,
                timestamp: base_timestamp + i as i64,
                key: None,
                value: Some(Bytes::copy_from_slice(v)),
                headers: Vec::new(),
            })
            .collect();
        let fields = BatchFields {
            producer_id,
            producer_epoch,
            base_sequence,
            ..BatchFields::default()
        };
        build_batch(fields, &records)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::batch;
    use super::*;

    #[test]
    fn accepts_a_well_formed_batch() {
        let b = validate_produce_records(batch(&[b"a", b"bb", b"ccc"], 1000)).unwrap();
        assert_eq!(b.header().record_count, 3);
        assert_eq!(b.header().last_offset_delta, 2);
        assert_eq!(b.header().max_timestamp, 1002);
    }

    #[test]
    fn rejects_a_flipped_byte_by_crc() {
        let mut raw = batch(&[b"hello"], 0).to_vec();
        let last = raw.len() - 2;
        raw[last] ^= 0x40;
        let err = validate_produce_records(Bytes::from(raw)).unwrap_err();
        assert!(matches!(err, BatchError::BadCrc { .. }), "{err}");
        assert!(err.is_corruption());
    }

    #[test]
    fn rejects_bad_magic() {
        let mut raw = batch(&[b"x"], 0).to_vec();
        raw[MAGIC_AT] = 1;
        let err = validate_produce_records(Bytes::from(raw)).unwrap_err();
        assert_eq!(err, BatchError::BadMagic { magic: 1 });
        assert!(!err.is_corruption());
    }

    #[test]
    fn rejects_inconsistent_counts() {
        let mut raw = batch(&[b"x", b"y"], 0).to_vec();
        raw[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&5i32.to_be_bytes());
        // The count lies inside the CRC-covered region: fix the CRC so only the count is wrong.
        let crc = crc32c::crc32c(&raw[ATTRIBUTES_AT..]);
        raw[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let err = validate_produce_records(Bytes::from(raw)).unwrap_err();
        assert!(matches!(
            err,
            BatchError::BadCounts {
                record_count: 5,
                ..
            }
        ));
    }

    #[test]
    fn rejects_truncated_and_multiple_batches() {
        let one = batch(&[b"x"], 0);
        let err = validate_produce_records(one.slice(..one.len() - 1)).unwrap_err();
        assert!(matches!(err, BatchError::Truncated { .. }));
        let mut two = one.to_vec();
        two.extend_from_slice(&one);
        let err = validate_produce_records(Bytes::from(two)).unwrap_err();
        assert_eq!(err, BatchError::NotOneBatch { count: 2 });
        let err = validate_produce_records(Bytes::new()).unwrap_err();
        assert_eq!(err, BatchError::NotOneBatch { count: 0 });
    }

    #[test]
    fn producer_base_offset_is_ignored_but_stored_offsets_must_be_usable() {
        let mut raw = batch(&[b"x", b"y"], 0).to_vec();
        raw[..8].copy_from_slice(&i64::MAX.to_be_bytes());
        // A producer's base offset is replaced on append, whatever it says.
        validate_produce_records(Bytes::from(raw.clone())).unwrap();
        // A stored batch ending past i64::MAX would overflow offset arithmetic.
        let err = ValidatedBatch::from_stored(Bytes::from(raw.clone())).unwrap_err();
        assert_eq!(
            err,
            BatchError::BadOffsets {
                base_offset: i64::MAX,
                last_offset_delta: 1
            }
        );
        raw[..8].copy_from_slice(&(-5i64).to_be_bytes());
        assert!(matches!(
            ValidatedBatch::from_stored(Bytes::from(raw)),
            Err(BatchError::BadOffsets {
                base_offset: -5,
                ..
            })
        ));
        // A negative delta is inside the CRC: fix the CRC so only the delta is wrong.
        let mut raw = batch(&[b"x"], 0).to_vec();
        raw[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&(-3i32).to_be_bytes());
        let crc = crc32c::crc32c(&raw[ATTRIBUTES_AT..]);
        raw[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            ValidatedBatch::from_stored(Bytes::from(raw)),
            Err(BatchError::BadOffsets {
                last_offset_delta: -3,
                ..
            })
        ));
    }

    #[test]
    fn rewriting_offset_and_epoch_keeps_crc_valid() {
        let b = validate_produce_records(batch(&[b"x", b"y"], 7)).unwrap();
        let mut stored = b.rewritten_prefix(Offset(42), LeaderEpoch(3)).to_vec();
        stored.extend_from_slice(b.tail());
        let again = ValidatedBatch::from_stored(Bytes::from(stored)).unwrap();
        assert_eq!(again.header().base_offset, Offset(42));
        assert_eq!(again.header().leader_epoch, LeaderEpoch(3));
        assert_eq!(again.header().last_offset(), Offset(43));
    }
}
