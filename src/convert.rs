//! TEMPORARY placeholder with the agreed signatures; replaced by the real module.
use bytes::Bytes;

use crate::sse::StreamKind;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("incomplete: {0}")]
    Incomplete(&'static str),
    #[error("unsupported: {0}")]
    Unsupported(String),
}

pub fn stream_to_json(_kind: StreamKind, _events: &[Bytes]) -> Result<Vec<u8>, ConvertError> {
    Err(ConvertError::Incomplete("placeholder"))
}

pub fn json_to_stream(_kind: StreamKind, _body: &[u8]) -> Result<Vec<Bytes>, ConvertError> {
    Err(ConvertError::Incomplete("placeholder"))
}
