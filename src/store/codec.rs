//! The one place that knows the binary encoding of records, keyrings and entry metadata.
//!
//! bincode 2.0.x (standard config: little-endian, varint integers) through serde. Keeping it here
//! means a future change of encoding is one module plus a format version, not a hunt.

use serde::{Serialize, de::DeserializeOwned};

/// Largest value the decoder will materialize. Records are bounded by the proxy's body limit
/// (10 MiB by default); this only stops a corrupt length prefix from asking for gigabytes.
const DECODE_LIMIT: usize = 512 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode value: {0}")]
    Encode(String),
    #[error("cannot decode value: {0}")]
    Decode(String),
    #[error("value has {0} trailing bytes after its end")]
    TrailingBytes(usize),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a whole buffer; bytes left over mean the buffer is not what we think it is.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}
