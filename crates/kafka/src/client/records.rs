//! Record batches for the command-line tools: lines become one uncompressed batch for Produce,
//! and fetched batches (any codec) become records with offsets, keys, values and headers. The
//! broker itself never does this: it stores and serves batches as sent.

use bytes::{Bytes, BytesMut};
use ferrymq_log::BatchHeader;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::ClientError;

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutRecord {
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<(String, Bytes)>,
    /// Create time, ms since the epoch.
    pub timestamp_ms: i64,
}

/// A fetched record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InRecord {
    /// Its offset.
    pub offset: i64,
    /// Its timestamp, ms.
    pub timestamp_ms: i64,
    /// Key, if any.
    pub key: Option<Bytes>,
    /// Value, if any.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Encodes `records` as one uncompressed v2 batch.
pub fn encode_batch(records: &[OutRecord]) -> Result<Bytes, ClientError> {
    let wire: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut headers = IndexMap::new();
            for (k, v) in &r.headers {
                headers.insert(StrBytes::from_string(k.clone()), Some(v.clone()));
            }
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch wherever `offset - sequence` changes; with
                // sequence = offset - 1 all records share one batch whose base sequence is -1
                // (no idempotent producer).
                sequence: i as i32 - 1,
                timestamp: r.timestamp_ms,
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &wire,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| ClientError::Protocol(format!("encoding records: {e}")))?;
    Ok(buf.freeze())
}

/// Decodes the whole batches of a fetch response's records (a trailing partial batch is left
/// for the next fetch), skipping control records and records before `from`. Also returns the
/// offset to fetch next: after the last whole batch, `from` if there is none.
pub fn decode_batches(records: &Bytes, from: i64) -> Result<(Vec<InRecord>, i64), ClientError> {
    let mut whole = 0;
    let mut next = from;
    while let Ok(h) = BatchHeader::parse(&records[whole..]) {
        if whole + h.total_bytes() > records.len() {
            break;
        }
        whole += h.total_bytes();
        next = next.max(h.next_offset().0);
    }
    let mut buf = records.slice(..whole);
    let sets = RecordBatchDecoder::decode_all(&mut buf)
        .map_err(|e| ClientError::Protocol(format!("decoding records: {e}")))?;
    let decoded = sets
        .into_iter()
        .flat_map(|s| s.records)
        .filter(|r| !r.control && r.offset >= from)
        .map(|r| InRecord {
            offset: r.offset,
            timestamp_ms: r.timestamp,
            key: r.key,
            value: r.value,
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        })
        .collect();
    Ok((decoded, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_a_batch() {
        let out = vec![
            OutRecord {
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"v1")),
                headers: vec![("h".into(), Bytes::from_static(b"x"))],
                timestamp_ms: 1000,
            },
            OutRecord {
                value: Some(Bytes::from_static(b"v2")),
                timestamp_ms: 1001,
                ..Default::default()
            },
        ];
        let batch = encode_batch(&out).unwrap();
        let mut stored = batch.to_vec();
        stored[..8].copy_from_slice(&5i64.to_be_bytes()); // the broker assigns offset 5
        stored.extend_from_slice(&batch[..20]); // a partial batch follows
        assert_eq!(
            BatchHeader::parse(&batch).unwrap().record_count,
            2,
            "one batch"
        );
        assert_eq!(BatchHeader::parse(&batch).unwrap().base_sequence, -1);
        let (back, next) = decode_batches(&Bytes::from(stored), 6).unwrap();
        assert_eq!(next, 7, "after the last whole batch");
        assert_eq!(back.len(), 1, "records before `from` are skipped");
        assert_eq!(back[0].offset, 6);
        assert_eq!(back[0].value.as_deref(), Some(&b"v2"[..]));
        assert_eq!(back[0].timestamp_ms, 1001);
    }
}
