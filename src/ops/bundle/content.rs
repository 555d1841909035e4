//! What `cache export` puts in a bundle's frames: one [`BundleHeader`], then one [`BundleItem`]
//! a frame. The container (`writer`, `reader`) carries them as opaque bytes; this is what they
//! mean, and what an importer checks before it trusts them.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cache_key::normalize::NORMALIZATION_VERSION;
use crate::store::codec::{self, CodecError};
use crate::store::record::{EntryMeta, Record};

/// The bundle layout `cache export` writes (the header, then one `BundleItem` a frame).
pub const BUNDLE_CONTENT_FORMAT: u32 = 1;

/// Why a bundle's frames, though authentic, are not something this build can import.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("bundle is empty")]
    Empty,
    #[error("bundle header does not decode: {0}")]
    Header(CodecError),
    #[error("bundle content format {found} is not one this build reads ({supported}); upgrade holdfast")]
    Format { found: u32, supported: u32 },
    #[error(
        "bundle requests were normalized by rules v{found}, this build uses v{used}: their addresses would not \
         match; import with the same holdfast version that exported them"
    )]
    Normalization { found: u32, used: u32 },
    #[error("bundle entry does not decode: {0}")]
    Item(CodecError),
}

/// The first frame of an export bundle. Field order is the encoding: do not reorder.
#[derive(Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct BundleHeader {
    /// [`BUNDLE_CONTENT_FORMAT`] when written, so a later build can change what the frames hold
    /// and an older one refuses it rather than misreading it.
    pub format: u32,
    /// Normalization rules the entries' requests were canonicalized under; an importer with
    /// other rules would re-address them into addresses its clients never compute.
    pub normalization: u32,
    /// When the export ran, in milliseconds since the Unix epoch; a record for the operator,
    /// nothing checks it.
    pub exported_ms: u64,
    /// The exporting store's tenant namespace key: tenant entries are addressed under it, so an
    /// empty importing store adopts it and the same tenants find their answers there.
    pub namespace_key: [u8; 32],
}

impl BundleHeader {
    /// The header for an export made now, under this build's rules.
    pub fn new(exported_ms: u64, namespace_key: [u8; 32]) -> Self {
        Self { format: BUNDLE_CONTENT_FORMAT, normalization: NORMALIZATION_VERSION, exported_ms, namespace_key }
    }

    /// The header's frame; wiped when dropped, as it holds the namespace key.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, CodecError> {
        codec::encode(self).map(Zeroizing::new)
    }

    /// The header from a bundle's first frame (`None`: it has no frame at all), checked to be
    /// one this build can import.
    pub fn decode(frame: Option<Vec<u8>>) -> Result<Self, ContentError> {
        let frame = Zeroizing::new(frame.ok_or(ContentError::Empty)?);
        let header: Self = codec::decode(&frame).map_err(ContentError::Header)?;
        if header.format != BUNDLE_CONTENT_FORMAT {
            return Err(ContentError::Format { found: header.format, supported: BUNDLE_CONTENT_FORMAT });
        }
        if header.normalization != NORMALIZATION_VERSION {
            return Err(ContentError::Normalization { found: header.normalization, used: NORMALIZATION_VERSION });
        }
        Ok(header)
    }
}

/// Every later frame: one entry, decrypted (the bundle's own encryption protects it).
#[derive(Serialize, Deserialize)]
pub struct BundleItem {
    /// The entry as stored: request, answer, provider, model and tenant namespace; the importer
    /// seals it under its own keys and addresses it under its own address key.
    pub record: Record,
    /// When it was stored and how often it was served, so the importer keeps it (and evicts
    /// it) as the exporter would have.
    pub meta: EntryMeta,
}

impl BundleItem {
    /// The item in one data frame; the frame is wiped once decoded.
    pub fn decode(frame: Vec<u8>) -> Result<Self, ContentError> {
        codec::decode(&Zeroizing::new(frame)).map_err(ContentError::Item)
    }
}
