//! Writing a bundle: the header, then each frame sealed under the passphrase's frame key.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use super::{
    BUNDLE_FORMAT, BundleError, CHECKED_LEN, FrameCipher, HEADER_LEN, KIND_DATA, KIND_END, MAGIC, MAX_FRAME,
    MAX_FRAMES, NONCE_LEN, SALT_LEN, TAG_LEN, derive_keys, key_check,
};
use crate::secret::fill_random;
use crate::store::keyring::KdfParams;

/// Writes a bundle. Call [`BundleWriter::finish`]: a bundle without its end frame is rejected on
/// import (and a writer dropped without it leaves such a file behind).
pub struct BundleWriter {
    /// Where the bundle is written, for error messages.
    path: PathBuf,
    /// The new file, buffered: frames are written in several small pieces.
    out: BufWriter<File>,
    /// Seals each frame under the passphrase's frame key, bound to this bundle's header.
    cipher: FrameCipher,
    /// Data frames written so far: the next frame's index, and the count the end frame carries.
    frames: u64,
    /// Reused for every frame; encryption happens in place, so plaintext does not linger in it.
    buf: Vec<u8>,
    /// Set when a write failed part-way: the file is incomplete, so every later call refuses.
    failed: bool,
}

impl fmt::Debug for BundleWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BundleWriter({}, {} frames, *****)", self.path.display(), self.frames)
    }
}

impl BundleWriter {
    /// Creates a new bundle at `path`, refusing to overwrite an existing file.
    pub fn create(path: &Path, passphrase: &[u8]) -> Result<Self, BundleError> {
        Self::create_with_cost(path, passphrase, KdfParams::DEFAULT)
    }

    /// As [`BundleWriter::create`], with an Argon2 cost of the caller's (the tests' cheap one).
    pub(super) fn create_with_cost(path: &Path, passphrase: &[u8], cost: KdfParams) -> Result<Self, BundleError> {
        if passphrase.is_empty() {
            return Err(BundleError::EmptyPassphrase);
        }
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt);
        let keys = derive_keys(passphrase, &salt, cost).map_err(BundleError::Kdf)?;

        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&BUNDLE_FORMAT.to_be_bytes());
        for v in [cost.memory_kib, cost.iterations, cost.parallelism] {
            header.extend_from_slice(&v.to_be_bytes());
        }
        header.extend_from_slice(&salt);
        debug_assert_eq!(header.len(), CHECKED_LEN);
        header.extend_from_slice(key_check(&keys.check, &header).as_bytes());
        let checksum = blake3::hash(&header);
        header.extend_from_slice(checksum.as_bytes());
        debug_assert_eq!(header.len(), HEADER_LEN);

        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => BundleError::Exists { path: path.to_owned() },
            _ => BundleError::Io { action: "create", path: path.to_owned(), source },
        })?;
        let mut out = BufWriter::new(file);
        out.write_all(&header).map_err(|source| BundleError::Io { action: "write", path: path.to_owned(), source })?;
        Ok(Self {
            path: path.to_owned(),
            out,
            cipher: FrameCipher::new(&keys, &header),
            frames: 0,
            buf: Vec::new(),
            failed: false,
        })
    }

    /// Appends one frame (at most [`MAX_FRAME`] bytes).
    pub fn append(&mut self, frame: &[u8]) -> Result<(), BundleError> {
        self.check_usable()?;
        if frame.len() > MAX_FRAME {
            return Err(BundleError::FrameTooLarge { len: frame.len(), max: MAX_FRAME });
        }
        // One nonce is kept back for the end frame.
        if self.frames >= MAX_FRAMES - 1 {
            return Err(BundleError::TooManyFrames { path: self.path.clone(), max: MAX_FRAMES - 1 });
        }
        self.buf.clear();
        self.buf.reserve(frame.len() + 1);
        self.buf.extend_from_slice(frame);
        self.buf.push(KIND_DATA);
        self.seal_and_write(self.frames)?;
        self.frames += 1;
        Ok(())
    }

    /// Writes the end frame, flushes and fsyncs the file, and returns the number of frames.
    pub fn finish(mut self) -> Result<u64, BundleError> {
        self.check_usable()?;
        self.buf.clear();
        self.buf.extend_from_slice(&self.frames.to_be_bytes());
        self.buf.push(KIND_END);
        self.seal_and_write(self.frames)?;
        let path = self.path;
        let io_err = |source| BundleError::Io { action: "write", path: path.clone(), source };
        let file = self.out.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
        if let Some(dir) = path.parent()
            && let Ok(d) = File::open(dir)
        {
            // Makes the new directory entry durable; best effort where directories cannot be opened.
            let _ = d.sync_all();
        }
        Ok(self.frames)
    }

    fn check_usable(&self) -> Result<(), BundleError> {
        if self.failed { Err(BundleError::WriteFailed { path: self.path.clone() }) } else { Ok(()) }
    }

    /// Encrypts `buf` in place as frame `index` and writes the frame.
    fn seal_and_write(&mut self, index: u64) -> Result<(), BundleError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let tag = self
            .cipher
            .seal(index, nonce, &mut self.buf)
            // GCM refuses only plaintexts over 64 GiB; frames are capped far below that.
            .map_err(|_| BundleError::FrameTooLarge { len: self.buf.len(), max: MAX_FRAME })?;
        // At most MAX_FRAME + 1 + TAG_LEN bytes, well within u32.
        let len = ((self.buf.len() + TAG_LEN) as u32).to_be_bytes();
        let written = self
            .out
            .write_all(&len)
            .and_then(|()| self.out.write_all(&nonce))
            .and_then(|()| self.out.write_all(&self.buf))
            .and_then(|()| self.out.write_all(tag.as_slice()));
        if let Err(source) = written {
            self.failed = true;
            return Err(BundleError::Io { action: "write", path: self.path.clone(), source });
        }
        Ok(())
    }
}
