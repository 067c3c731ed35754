//! Reading the records inside a batch, for the few places that need them: a record's own
//! offset or timestamp (ListOffsets by timestamp, the max-timestamp record, on uncompressed
//! batches), and whole records with keys and values (`decode_records`: log compaction and the
//! group coordinator's replay of `__consumer_offsets`, decompressing as needed). The produce
//! and fetch paths never come here.

use bytes::Bytes;
use ferrymq_types::Offset;

use crate::batch::{BatchHeader, HEADER_BYTES};
use crate::builder::RecordHeader;
use crate::compression::{decompress, Codec, CompressionError};

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset.
    pub offset: Offset,
    /// Absolute timestamp.
    pub timestamp: i64,
    /// Key, `None` for null.
    pub key: Option<Bytes>,
    /// Value, `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<RecordHeader>,
}

/// Why a batch's records could not be decoded (its CRC passed: a producer bug or a codec
/// this build cannot read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The records section could not be decompressed.
    #[error(transparent)]
    Compression(#[from] CompressionError),
    /// Record framing does not add up.
    #[error("malformed record {index}: {reason}")]
    Malformed { index: i32, reason: &'static str },
}

/// Every record of a batch, decompressing its records section first if needed.
pub fn decode_records(header: &BatchHeader, batch: &[u8]) -> Result<Vec<Record>, RecordError> {
    let codec = Codec::from_attributes(header.attributes)?;
    let section = batch.get(HEADER_BYTES..).unwrap_or_default();
    let plain;
    let data: &[u8] = if codec == Codec::None {
        section
    } else {
        plain = decompress(codec, section)?;
        &plain
    };
    let count = header.record_count.max(0);
    // Each record takes at least 7 bytes: a bogus count must not size the allocation.
    let mut out = Vec::with_capacity((count as usize).min(data.len() / 7 + 1));
    let mut pos = 0usize;
    for index in 0..count {
        let bad = |reason| RecordError::Malformed { index, reason };
        let len = varint(data, &mut pos).ok_or(bad("truncated length"))?;
        let len = usize::try_from(len).map_err(|_| bad("negative length"))?;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= data.len())
            .ok_or(bad("record past the batch end"))?;
        let rec = &data[..end];
        pos += 1; // attributes
        let ts_delta = varint(rec, &mut pos).ok_or(bad("truncated timestamp"))?;
        let offset_delta = varint(rec, &mut pos).ok_or(bad("truncated offset delta"))?;
        let key = nullable(rec, &mut pos).ok_or(bad("truncated key"))?;
        let value = nullable(rec, &mut pos).ok_or(bad("truncated value"))?;
        let header_count = varint(rec, &mut pos).ok_or(bad("truncated header count"))?;
        let header_count =
            usize::try_from(header_count).map_err(|_| bad("negative header count"))?;
        let mut headers = Vec::with_capacity(header_count.min(len));
        for _ in 0..header_count {
            let key = nullable(rec, &mut pos)
                .ok_or(bad("truncated header key"))?
                .ok_or(bad("null header key"))?;
            let value = nullable(rec, &mut pos).ok_or(bad("truncated header value"))?;
            headers.push(RecordHeader { key, value });
        }
        if pos != end {
            return Err(bad("length does not match its fields"));
        }
        out.push(Record {
            offset: Offset(
                header
                    .base_offset
                    .0
                    .checked_add(offset_delta)
                    .ok_or(bad("offset overflow"))?,
            ),
            timestamp: header
                .base_timestamp
                .checked_add(ts_delta)
                .ok_or(bad("timestamp overflow"))?,
            key,
            value,
            headers,
        });
    }
    Ok(out)
}

/// A length-prefixed byte string; `Some(None)` for length -1.
fn nullable(b: &[u8], pos: &mut usize) -> Option<Option<Bytes>> {
    let len = varint(b, pos)?;
    if len < 0 {
        return Some(None);
    }
    let end = pos.checked_add(usize::try_from(len).ok()?)?;
    let out = Bytes::copy_from_slice(b.get(*pos..end)?);
    *pos = end;
    Some(Some(out))
}

/// Offset delta and timestamp of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPosition {
    /// Offset relative to the batch's base offset.
    pub offset_delta: i32,
    /// Absolute timestamp.
    pub timestamp: i64,
}

fn varint(b: &[u8], pos: &mut usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        raw |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    None
}

/// The records' offset deltas and timestamps of an uncompressed batch, `None` for a compressed
/// batch or malformed record framing (the CRC already passed, so that is a producer bug).
pub fn record_positions(header: &BatchHeader, batch: &[u8]) -> Option<Vec<RecordPosition>> {
    if header.compression() != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(header.record_count.max(0) as usize);
    let mut pos = HEADER_BYTES;
    for _ in 0..header.record_count {
        let len = varint(batch, &mut pos)?;
        let start = pos;
        pos += 1; // attributes
        let ts_delta = varint(batch, &mut pos)?;
        let offset_delta = varint(batch, &mut pos)?;
        out.push(RecordPosition {
            offset_delta: i32::try_from(offset_delta).ok()?,
            timestamp: header.base_timestamp.checked_add(ts_delta)?,
        });
        pos = start.checked_add(usize::try_from(len).ok()?)?;
        if pos > batch.len() {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::testing::batch;

    #[test]
    fn walks_offsets_and_timestamps_of_uncompressed_records() {
        let b = batch(&[b"a", b"bb", b"", b"dddd"], 1000);
        let h = BatchHeader::parse(&b).unwrap();
        let recs = record_positions(&h, &b).unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(
            recs[2],
            RecordPosition {
                offset_delta: 2,
                timestamp: 1002
            }
        );
    }

    #[test]
    fn refuses_truncated_records() {
        let b = batch(&[b"abcdef"], 0);
        let h = BatchHeader::parse(&b).unwrap();
        assert!(record_positions(&h, &b[..b.len() - 3]).is_none());
        assert!(decode_records(&h, &b[..b.len() - 3]).is_err());
    }

    #[test]
    fn decodes_records_of_a_compressed_batch() {
        use std::io::Write;
        let plain = batch(&[b"one", b"two"], 500);
        let h = BatchHeader::parse(&plain).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain[HEADER_BYTES..]).unwrap();
        let mut raw = plain[..HEADER_BYTES].to_vec();
        raw.extend_from_slice(&gz.finish().unwrap());
        raw[21..23].copy_from_slice(&1i16.to_be_bytes()); // gzip
        let len = (raw.len() - 12) as i32;
        raw[8..12].copy_from_slice(&len.to_be_bytes());
        let h2 = BatchHeader { attributes: 1, ..h };
        let recs = decode_records(&h2, &raw).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].value.as_deref(), Some(&b"two"[..]));
        assert_eq!(recs[1].timestamp, 501);
        assert_eq!(recs[1].offset, Offset(1));
    }
}
