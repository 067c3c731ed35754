//! Decompressing the records of a batch, for the one place the broker reads records inside
//! compressed batches: log compaction (which must see keys). Produce and fetch never come here.
//!
//! Codecs as Kafka writes them: gzip; snappy in the xerial framing the Java client uses (raw
//! snappy blocks are accepted too, as some clients send them); lz4 in the standard frame
//! format; zstd. Output is bounded by `DECOMPRESSED_BYTES_MAX`, so a small hostile batch
//! cannot make the cleaner allocate without limit.

use std::io::Read;

/// Largest decompressed records section accepted (a batch is at most a segment, 2 GiB, but
/// producers' batches are bounded by `max.message.bytes`; this leaves room for ratio 64).
pub const DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// The codecs of Kafka's batch attributes (bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// 0: records stored as they are.
    None,
    /// 1: gzip.
    Gzip,
    /// 2: snappy (xerial framing).
    Snappy,
    /// 3: lz4 frame.
    Lz4,
    /// 4: zstd.
    Zstd,
}

/// Why records could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressionError {
    /// Attribute bits naming no codec.
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    /// The codec refused the bytes.
    #[error("{codec:?} data is malformed: {reason}")]
    Malformed { codec: Codec, reason: String },
    /// More output than `DECOMPRESSED_BYTES_MAX`.
    #[error("records decompress to more than {DECOMPRESSED_BYTES_MAX} bytes")]
    TooLarge,
}

impl Codec {
    /// The codec of a batch's attributes.
    pub fn from_attributes(attributes: i16) -> Result<Codec, CompressionError> {
        match attributes & 0x07 {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            other => Err(CompressionError::UnknownCodec(other)),
        }
    }
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
/// Xerial header: magic (8), version (4), compatible version (4).
const XERIAL_HEADER_BYTES: usize = 16;

/// Decompresses the records section of a batch compressed with `codec`.
pub fn decompress(codec: Codec, data: &[u8]) -> Result<Vec<u8>, CompressionError> {
    let malformed = |reason: String| CompressionError::Malformed { codec, reason };
    match codec {
        Codec::None => Ok(data.to_vec()),
        Codec::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data), codec),
        Codec::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), codec),
        Codec::Zstd => {
            let d = zstd::stream::read::Decoder::new(data).map_err(|e| malformed(e.to_string()))?;
            read_bounded(d, codec)
        }
        Codec::Snappy if data.starts_with(XERIAL_MAGIC) => xerial_snappy(data),
        Codec::Snappy => snappy_block(data),
    }
}

fn read_bounded(reader: impl Read, codec: Codec) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::new();
    reader
        .take(DECOMPRESSED_BYTES_MAX as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| CompressionError::Malformed {
            codec,
            reason: e.to_string(),
        })?;
    if out.len() > DECOMPRESSED_BYTES_MAX {
        return Err(CompressionError::TooLarge);
    }
    Ok(out)
}

fn snappy_block(data: &[u8]) -> Result<Vec<u8>, CompressionError> {
    let malformed = |reason: String| CompressionError::Malformed {
        codec: Codec::Snappy,
        reason,
    };
    let len = snap::raw::decompress_len(data).map_err(|e| malformed(e.to_string()))?;
    if len > DECOMPRESSED_BYTES_MAX {
        return Err(CompressionError::TooLarge);
    }
    snap::raw::Decoder::new()
        .decompress_vec(data)
        .map_err(|e| malformed(e.to_string()))
}

/// Xerial framing: a 16-byte header, then blocks of `length i32 | raw snappy block`.
fn xerial_snappy(data: &[u8]) -> Result<Vec<u8>, CompressionError> {
    let malformed = |reason: &str| CompressionError::Malformed {
        codec: Codec::Snappy,
        reason: reason.to_string(),
    };
    let mut rest = data
        .get(XERIAL_HEADER_BYTES..)
        .ok_or_else(|| malformed("truncated xerial header"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| malformed("truncated block length"))?;
        let len = i32::from_be_bytes(len_bytes);
        let len = usize::try_from(len).map_err(|_| malformed("negative block length"))?;
        let block = rest
            .get(4..4 + len)
            .ok_or_else(|| malformed("truncated block"))?;
        out.extend_from_slice(&snappy_block(block)?);
        if out.len() > DECOMPRESSED_BYTES_MAX {
            return Err(CompressionError::TooLarge);
        }
        rest = &rest[4 + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> Vec<u8> {
        (0..10_000u32)
            .flat_map(|i| (i % 97).to_be_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        assert_eq!(
            decompress(Codec::Gzip, &gz.finish().unwrap()).unwrap(),
            data
        );
        let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz.write_all(&data).unwrap();
        assert_eq!(decompress(Codec::Lz4, &lz.finish().unwrap()).unwrap(), data);
        let zs = zstd::stream::encode_all(&data[..], 1).unwrap();
        assert_eq!(decompress(Codec::Zstd, &zs).unwrap(), data);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(Codec::Snappy, &raw).unwrap(), data);
        // Xerial framing with the block split in two, as the Java client writes it.
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        for half in data.chunks(data.len() / 2 + 1) {
            let block = snap::raw::Encoder::new().compress_vec(half).unwrap();
            framed.extend_from_slice(&(block.len() as i32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        assert_eq!(decompress(Codec::Snappy, &framed).unwrap(), data);
    }

    #[test]
    fn refuses_garbage_and_unknown_codecs() {
        assert!(matches!(
            decompress(Codec::Gzip, b"not gzip"),
            Err(CompressionError::Malformed { .. })
        ));
        assert!(decompress(
            Codec::Snappy,
            b"\x82SNAPPY\x00\0\0\0\x01\0\0\0\x01\0\0\x10\0ab"
        )
        .is_err());
        assert_eq!(
            Codec::from_attributes(6),
            Err(CompressionError::UnknownCodec(6))
        );
    }

    #[test]
    fn bounds_the_decompressed_size() {
        let zeros = vec![0u8; DECOMPRESSED_BYTES_MAX + 10];
        let zs = zstd::stream::encode_all(&zeros[..], 1).unwrap();
        assert_eq!(
            decompress(Codec::Zstd, &zs),
            Err(CompressionError::TooLarge)
        );
    }
}
