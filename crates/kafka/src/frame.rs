//! Length-prefixed Kafka frames: a big-endian i32 size, then that many bytes. The size is
//! checked against `request_bytes_max` before anything is allocated, so a client cannot make
//! the broker reserve memory by announcing a huge frame.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a frame could not be read. Every variant ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced size exceeds `socket.request.max.bytes`.
    #[error("frame of {size} bytes exceeds socket.request.max.bytes {max}")]
    TooLarge { size: i64, max: usize },
    /// A negative or too small size.
    #[error("invalid frame size {0}")]
    BadSize(i32),
    /// The peer closed mid-frame or the socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Smallest request: api key, version, correlation id and a null client id.
pub const REQUEST_BYTES_MIN: usize = 10;

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    request_bytes_max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut size_buf = [0u8; 4];
    match reader.read_exact(&mut size_buf).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(size_buf);
    if size < REQUEST_BYTES_MIN as i32 {
        return Err(FrameError::BadSize(size));
    }
    if size as usize > request_bytes_max {
        return Err(FrameError::TooLarge {
            size: size as i64,
            max: request_bytes_max,
        });
    }
    let mut body = BytesMut::zeroed(size as usize);
    reader.read_exact(&mut body).await?;
    Ok(Some(body.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_oversized_frames_before_reading_them() {
        let mut input: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        let err = read_frame(&mut input, 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn reads_a_frame_and_then_a_clean_end() {
        let mut raw = 12i32.to_be_bytes().to_vec();
        raw.extend_from_slice(&[7; 12]);
        let mut input: &[u8] = &raw;
        assert_eq!(
            read_frame(&mut input, 1024).await.unwrap().unwrap().len(),
            12
        );
        assert!(read_frame(&mut input, 1024).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_error() {
        let mut raw = 12i32.to_be_bytes().to_vec();
        raw.extend_from_slice(&[7; 5]);
        let mut input: &[u8] = &raw;
        assert!(read_frame(&mut input, 1024).await.is_err());
        let mut neg: &[u8] = &(-5i32).to_be_bytes();
        assert!(matches!(
            read_frame(&mut neg, 1024).await,
            Err(FrameError::BadSize(-5))
        ));
    }
}
