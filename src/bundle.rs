//! TEMPORARY placeholder with the agreed signatures; replaced by the real module.
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundles are not available yet")]
    NotYet,
}

pub struct BundleWriter;

impl BundleWriter {
    pub fn create(_path: &Path, _passphrase: &[u8]) -> Result<Self, BundleError> {
        Err(BundleError::NotYet)
    }
    pub fn append(&mut self, _frame: &[u8]) -> Result<(), BundleError> {
        Err(BundleError::NotYet)
    }
    pub fn finish(self) -> Result<u64, BundleError> {
        Err(BundleError::NotYet)
    }
}

pub struct BundleReader;

impl BundleReader {
    pub fn open(_path: &Path, _passphrase: &[u8]) -> Result<Self, BundleError> {
        Err(BundleError::NotYet)
    }
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, BundleError> {
        Err(BundleError::NotYet)
    }
}
