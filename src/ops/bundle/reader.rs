//! Reading a bundle: the header and passphrase check, then each frame verified in order.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use aes_gcm::Tag;

use super::{
    BUNDLE_FORMAT, BundleError, CHECKED_LEN, CHECKSUM_AT, FrameCipher, HEADER_LEN, KIND_DATA, KIND_END, MAGIC,
    MAX_FRAME, NONCE_LEN, READ_BUFFER, TAG_LEN, derive_keys, key_check,
};
use crate::store::keyring::KdfParams;

/// Where a reader is in its bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// Data frames may follow.
    Frames,
    /// The end frame was verified; every later call is `None`.
    Ended,
    /// A frame failed; every later call is an error, so nothing past damage is ever returned.
    Failed,
}

/// Reads a bundle frame by frame, verifying each.
pub struct BundleReader {
    /// The bundle's file, for error messages.
    path: PathBuf,
    /// The file after its header, buffered: frames are read a length prefix at a time.
    input: BufReader<File>,
    /// Opens each frame under the passphrase's frame key, checking it belongs to this header.
    cipher: FrameCipher,
    /// Index of the next frame: in its associated data, so frames cannot be reordered or dropped.
    index: u64,
    /// Whether more frames may come, the end was reached, or reading stopped at an error.
    state: ReadState,
}

impl fmt::Debug for BundleReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BundleReader({}, frame {}, *****)", self.path.display(), self.index)
    }
}

impl BundleReader {
    /// Opens a bundle and checks its header and passphrase. A wrong passphrase is
    /// [`BundleError::WrongPassphrase`], a damaged header [`BundleError::Corrupt`].
    pub fn open(path: &Path, passphrase: &[u8]) -> Result<Self, BundleError> {
        let corrupt = |reason: &str| BundleError::Corrupt { path: path.to_owned(), reason: reason.to_owned() };
        let file =
            File::open(path).map_err(|source| BundleError::Io { action: "open", path: path.to_owned(), source })?;
        let mut input = BufReader::with_capacity(READ_BUFFER, file);
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut input, &mut header).map_err(|source| BundleError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
        if got < MAGIC.len() || header.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
            return Err(corrupt("not a Holdfast bundle"));
        }
        if got < HEADER_LEN {
            return Err(BundleError::Truncated { path: path.to_owned(), reason: "it ends inside its header".into() });
        }
        // Checksum first: a damaged version byte must read as damage, not as "upgrade holdfast".
        if blake3::hash(&header[..CHECKSUM_AT]).as_bytes() != &header[CHECKSUM_AT..] {
            return Err(corrupt("header checksum mismatch"));
        }
        let version = u16::from_be_bytes([header[8], header[9]]);
        if version > BUNDLE_FORMAT {
            return Err(BundleError::NewerFormat { path: path.to_owned(), found: version, supported: BUNDLE_FORMAT });
        }
        if version != BUNDLE_FORMAT {
            return Err(corrupt(&format!("unknown format {version}")));
        }
        let cost = KdfParams {
            memory_kib: be_u32(&header[10..14]),
            iterations: be_u32(&header[14..18]),
            parallelism: be_u32(&header[18..22]),
        };
        cost.check_plausible().map_err(|e| corrupt(&e))?;
        let keys = derive_keys(passphrase, &header[22..CHECKED_LEN], cost).map_err(|e| corrupt(&e))?;
        let stored_check = blake3::Hash::from_bytes(array::<32>(&header[CHECKED_LEN..CHECKSUM_AT]));
        // `Hash` equality is constant-time.
        if key_check(&keys.check, &header[..CHECKED_LEN]) != stored_check {
            return Err(BundleError::WrongPassphrase { path: path.to_owned() });
        }
        Ok(Self {
            path: path.to_owned(),
            input,
            cipher: FrameCipher::new(&keys, &header),
            index: 0,
            state: ReadState::Frames,
        })
    }

    /// The next frame; `None` only after the end frame has been verified (count and position) and
    /// nothing follows it. A truncated, altered, reordered or foreign frame is an error, after
    /// which every call fails.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, BundleError> {
        match self.state {
            ReadState::Ended => return Ok(None),
            ReadState::Failed => {
                return Err(self.corrupt(format!("reading stopped at an earlier error before frame {}", self.index)));
            }
            ReadState::Frames => {}
        }
        let result = self.read_frame();
        match &result {
            Ok(None) => self.state = ReadState::Ended,
            Ok(Some(_)) => self.index += 1,
            Err(_) => self.state = ReadState::Failed,
        }
        result
    }

    fn read_frame(&mut self) -> Result<Option<Vec<u8>>, BundleError> {
        let index = self.index;
        let mut prefix = [0u8; 4 + NONCE_LEN];
        match self.read_full(&mut prefix)? {
            0 => return Err(self.truncated(format!("it ends after {index} frames without its end frame"))),
            n if n < prefix.len() => return Err(self.truncated(format!("frame {index} is cut short"))),
            _ => {}
        }
        let len = be_u32(&prefix[..4]) as usize;
        if !(1 + TAG_LEN..=MAX_FRAME + 1 + TAG_LEN).contains(&len) {
            return Err(self.corrupt(format!("frame {index} claims an impossible length of {len} bytes")));
        }
        let mut body = Vec::new();
        let got = (&mut self.input).take(len as u64).read_to_end(&mut body).map_err(|source| BundleError::Io {
            action: "read",
            path: self.path.clone(),
            source,
        })?;
        if got < len {
            return Err(self.truncated(format!("frame {index} is cut short")));
        }
        let tag_at = len - TAG_LEN;
        let no_tag = || self.corrupt(format!("frame {index} has no tag"));
        let tag = Tag::try_from(body.get(tag_at..).ok_or_else(no_tag)?).map_err(|_| no_tag())?;
        let nonce = array::<NONCE_LEN>(&prefix[4..]);
        let sealed = body.get_mut(..tag_at).ok_or_else(no_tag)?;
        self.cipher.open(index, nonce, sealed, &tag).map_err(|_| {
            self.corrupt(format!(
                "frame {index} failed authentication: the bundle was altered, or frames were reordered, dropped \
                 or taken from another bundle"
            ))
        })?;
        body.truncate(tag_at);
        match body.pop() {
            Some(KIND_DATA) => Ok(Some(body)),
            Some(KIND_END) => {
                let count = (body.len() == 8).then(|| u64::from_be_bytes(array::<8>(&body)));
                if count != Some(index) {
                    return Err(self.corrupt(format!("the end frame does not count the {index} frames before it")));
                }
                let mut extra = [0u8; 1];
                if self.read_full(&mut extra)? != 0 {
                    return Err(self.corrupt("data follows the end frame".into()));
                }
                Ok(None)
            }
            // `len` is at least 1 + TAG_LEN, so the plaintext has at least the kind byte.
            other => Err(self.corrupt(format!("frame {index} has unknown kind {other:?}"))),
        }
    }

    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        read_full(&mut self.input, buf).map_err(|source| BundleError::Io {
            action: "read",
            path: self.path.clone(),
            source,
        })
    }

    fn corrupt(&self, reason: String) -> BundleError {
        BundleError::Corrupt { path: self.path.clone(), reason }
    }

    fn truncated(&self, reason: String) -> BundleError {
        BundleError::Truncated { path: self.path.clone(), reason }
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match input.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The first `N` bytes of `b`; callers pass slices already checked to be long enough, and a
/// short one reads as zeros (which then fails the checksum or authentication) rather than panics.
fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    b.get(..N).and_then(|head| head.try_into().ok()).unwrap_or([0; N])
}

pub(super) fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(array(b))
}
