//! Walking the records of an uncompressed batch, for the few places that need a record's own
//! offset or timestamp (ListOffsets by timestamp, the max-timestamp record). The produce and
//! fetch paths never come here. Compressed batches are answered at batch granularity until the
//! storage engine learns to decompress (log compaction brings that).

use crate::batch::{BatchHeader, HEADER_BYTES};

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
    }
}
