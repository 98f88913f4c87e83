//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes of JSON.
//!
//! These helpers do no I/O. A reader first reads [`HEADER_LEN`] bytes, calls
//! [`body_len`] (which enforces the maximum *before* anything is allocated), reads that many
//! bytes, and calls [`decode`].

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be produced or read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Encodes `message` as one frame (header and body), refusing one larger than `max`.
pub fn encode<T: Serialize>(message: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; HEADER_LEN];
    serde_json::to_writer(&mut buf, message)?;
    let len = buf.len() - HEADER_LEN;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let len32 = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    buf[..HEADER_LEN].copy_from_slice(&len32.to_be_bytes());
    Ok(buf)
}

/// Reads the body length from a header, refusing empty frames and ones larger than `max`.
pub fn body_len(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes a frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    Ok(serde_json::from_slice(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::Ping;

    #[test]
    fn round_trip() {
        let ping = Ping {
            payload: "hi".into(),
            delay_ms: 5,
        };
        let bytes = encode(&ping, 1024).unwrap();
        let len = body_len(bytes[..HEADER_LEN].try_into().unwrap(), 1024).unwrap();
        assert_eq!(len, bytes.len() - HEADER_LEN);
        let back: Ping = decode(&bytes[HEADER_LEN..]).unwrap();
        assert_eq!(back, ping);
    }

    #[test]
    fn oversized_header_is_refused_before_reading_the_body() {
        let header = (u32::MAX).to_be_bytes();
        assert!(matches!(
            body_len(header, 1024),
            Err(FrameError::TooLarge { len, max: 1024 }) if len == u32::MAX as usize
        ));
    }

    #[test]
    fn empty_frame_is_refused() {
        assert!(matches!(body_len([0; 4], 1024), Err(FrameError::Empty)));
    }

    #[test]
    fn encoding_refuses_a_message_over_the_limit() {
        let ping = Ping {
            payload: "x".repeat(100),
            delay_ms: 0,
        };
        assert!(matches!(
            encode(&ping, 10),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            decode::<Ping>(b"\xff\xfenot json"),
            Err(FrameError::Malformed(_))
        ));
    }
}
