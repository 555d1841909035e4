//! TEMPORARY placeholder with the agreed signatures; replaced by the real module.
use bytes::Bytes;
use serde_json::Value;

use crate::normalize::Dialect;
use crate::sse::SseEvent;

#[derive(Debug, thiserror::Error)]
pub enum Untranslatable {
    #[error("translation is not available yet")]
    NotYet,
}

pub fn request(_from: Dialect, _to: Dialect, _body: &Value, _model: &str) -> Result<Value, Untranslatable> {
    Err(Untranslatable::NotYet)
}

pub fn response(_from: Dialect, _to: Dialect, _body: &Value) -> Result<Value, Untranslatable> {
    Err(Untranslatable::NotYet)
}

pub struct StreamTranslator;

impl StreamTranslator {
    pub fn new(_from: Dialect, _to: Dialect) -> Self {
        Self
    }
    pub fn push(&mut self, _event: &SseEvent) -> Result<Vec<Bytes>, Untranslatable> {
        Err(Untranslatable::NotYet)
    }
    pub fn finished(&self) -> bool {
        false
    }
}
