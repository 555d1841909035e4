//! Encrypted, portable export bundles: `holdfast cache export` writes every stored entry into a
//! bundle file, and another replica imports it.
//!
//! A bundle is encrypted under a key derived with Argon2id (m = 19 MiB, t = 2, p = 1, a fresh
//! 16-byte salt per bundle) from a passphrase the operator gives, so it can travel over untrusted
//! channels and be opened on a replica whose store keys are different. It carries opaque frames:
//! the caller serializes each entry into one frame.
//!
//! ```text
//! header
//! offset  size  field
//! 0       8     magic "HFBUNDLE"
//! 8       2     bundle format version, big-endian (1)
//! 10      4     Argon2id memory cost in KiB, big-endian
//! 14      4     Argon2id time cost, big-endian
//! 18      4     Argon2id parallelism, big-endian
//! 22      16    Argon2id salt
//! 38      32    key check: keyed BLAKE3 of bytes 0..38 under the check key
//! 70      32    BLAKE3 of bytes 0..70
//! 102           first frame
//!
//! frame i (i = 0, 1, 2, ...)
//! 0       4     n: length of the ciphertext including its 16-byte tag, big-endian
//! 4       12    nonce (random)
//! 16      n     AES-256-GCM under the frame key of (payload ‖ kind),
//!               associated data = i as u64 big-endian ‖ BLAKE3 of header bytes 0..102
//!
//! kind 0: a data frame; the payload is the caller's frame (at most 256 MiB).
//! kind 1: the end frame; the payload is the number of data frames, u64 big-endian. It is last:
//!         no byte may follow it.
//! ```
//!
//! The Argon2id output is never used directly: BLAKE3 `derive_key` turns it into a frame key
//! (AES-256-GCM) and a check key (the header's key check), so no key serves two algorithms.
//!
//! Why each part is there:
//! - The header checksum tells a damaged header (`Corrupt`) from a wrong passphrase; the key
//!   check then tells a wrong passphrase (`WrongPassphrase`) before any frame is read. Neither
//!   is a security boundary; the frames' tags are.
//! - The frame index in the associated data means frames cannot be reordered or dropped; the
//!   header hash (which covers the random salt) means they cannot be moved between bundles.
//! - The end frame is authenticated and carries the count, so a bundle cut short at a frame
//!   boundary is an error rather than a smaller export. A reader returns `None` only after it.
//! - Frames are capped at 256 MiB on read, so a damaged length cannot make a reader allocate
//!   gigabytes; Argon2 costs in a header are bounded for the same reason.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write as _};
use std::path::{Path, PathBuf};

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};

use crate::secret::{SecretKey, fill_random};
use crate::store::keyring::KdfParams;

const MAGIC: &[u8; 8] = b"HFBUNDLE";
pub const BUNDLE_FORMAT: u16 = 1;
/// Bytes 0..CHECKED_LEN are covered by the key check.
const CHECKED_LEN: usize = 38;
const CHECKSUM_AT: usize = CHECKED_LEN + 32;
const HEADER_LEN: usize = CHECKSUM_AT + 32;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KIND_DATA: u8 = 0;
const KIND_END: u8 = 1;
/// The largest frame a bundle carries. Stored entries are far smaller; the cap keeps a damaged
/// length field from making a reader allocate gigabytes.
pub const MAX_FRAME: usize = 256 * 1024 * 1024;
/// AES-GCM with random 96-bit nonces stays within NIST's collision bound up to 2^32 messages per
/// key; each bundle has its own key, so that bounds the frames of one bundle (end frame included).
pub const MAX_FRAMES: u64 = (1 << 32) - 1;
const FRAME_KEY_CONTEXT: &str = "holdfast 2026-11 bundle frames v1";
const CHECK_KEY_CONTEXT: &str = "holdfast 2026-11 bundle key check v1";
const READ_BUFFER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path} already exists; give a new file name for the bundle (an existing file is never overwritten)")]
    Exists { path: PathBuf },
    #[error("the bundle passphrase is empty; give a non-empty passphrase (a long random one is best)")]
    EmptyPassphrase,
    #[error("wrong passphrase for bundle {path}; give the passphrase that was used when it was exported")]
    WrongPassphrase { path: PathBuf },
    #[error("bundle {path} is damaged ({reason}); copy it again from the exporting replica, or export a new one")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "bundle {path} is incomplete ({reason}); copy it again in full, or export a new one (an export that \
         did not finish also leaves an incomplete bundle)"
    )]
    Truncated { path: PathBuf, reason: String },
    #[error("bundle {path} has format {found}, newer than this build reads ({supported}); upgrade holdfast here")]
    NewerFormat { path: PathBuf, found: u16, supported: u16 },
    #[error("a frame of {len} bytes is larger than a bundle carries ({max} bytes); this entry cannot be exported")]
    FrameTooLarge { len: usize, max: usize },
    #[error("bundle {path} already holds {max} frames, the most one bundle may; split the export into several")]
    TooManyFrames { path: PathBuf, max: u64 },
    #[error("cannot {action} bundle {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("Argon2 parameters rejected: {0}")]
    Kdf(String),
    #[error("an earlier write to bundle {path} failed, so it is incomplete; delete it and export again")]
    WriteFailed { path: PathBuf },
}

/// The two keys derived from the passphrase.
struct BundleKeys {
    frame: SecretKey,
    check: SecretKey,
}

fn derive_keys(passphrase: &[u8], salt: &[u8], cost: KdfParams) -> Result<BundleKeys, String> {
    let master = crate::store::keyring::argon2id(passphrase, salt, cost)?;
    Ok(BundleKeys {
        frame: SecretKey::from_bytes(blake3::derive_key(FRAME_KEY_CONTEXT, master.as_ref())),
        check: SecretKey::from_bytes(blake3::derive_key(CHECK_KEY_CONTEXT, master.as_ref())),
    })
}

fn key_check(key: &SecretKey, checked: &[u8]) -> blake3::Hash {
    blake3::keyed_hash(key.expose(), checked)
}

fn associated_data(index: u64, header_hash: &[u8; 32]) -> [u8; 8 + 32] {
    let mut aad = [0u8; 8 + 32];
    aad[..8].copy_from_slice(&index.to_be_bytes());
    aad[8..].copy_from_slice(header_hash);
    aad
}

/// Writes a bundle. Call [`BundleWriter::finish`]: a bundle without its end frame is rejected on
/// import (and a writer dropped without it leaves such a file behind).
pub struct BundleWriter {
    path: PathBuf,
    out: BufWriter<File>,
    cipher: Aes256Gcm,
    header_hash: [u8; 32],
    frames: u64,
    /// Reused for every frame; encryption happens in place, so plaintext does not linger in it.
    buf: Vec<u8>,
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

    fn create_with_cost(path: &Path, passphrase: &[u8], cost: KdfParams) -> Result<Self, BundleError> {
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
            cipher: Aes256Gcm::new(keys.frame.expose().into()),
            header_hash: *blake3::hash(&header).as_bytes(),
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
        let aad = associated_data(index, &self.header_hash);
        let tag = self
            .cipher
            .encrypt_inout_detached(&Nonce::from(nonce), &aad, self.buf.as_mut_slice().into())
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Frames,
    Ended,
    Failed,
}

/// Reads a bundle frame by frame, verifying each.
pub struct BundleReader {
    path: PathBuf,
    input: BufReader<File>,
    cipher: Aes256Gcm,
    header_hash: [u8; 32],
    /// Index of the next frame.
    index: u64,
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
            cipher: Aes256Gcm::new(keys.frame.expose().into()),
            header_hash: *blake3::hash(&header).as_bytes(),
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
        let nonce = Nonce::from(array::<12>(&prefix[4..]));
        let aad = associated_data(index, &self.header_hash);
        let sealed = body.get_mut(..tag_at).ok_or_else(no_tag)?;
        self.cipher.decrypt_inout_detached(&nonce, &aad, sealed.into(), &tag).map_err(|_| {
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

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(array(b))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// Cheap Argon2 cost for the tests that open a bundle hundreds of times.
    const FAST: KdfParams = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };

    fn write_bundle(path: &Path, pass: &[u8], cost: KdfParams, frames: &[Vec<u8>]) -> u64 {
        let mut w = BundleWriter::create_with_cost(path, pass, cost).unwrap();
        for f in frames {
            w.append(f).unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(path: &Path, pass: &[u8]) -> Result<Vec<Vec<u8>>, BundleError> {
        let mut r = BundleReader::open(path, pass)?;
        let mut out = Vec::new();
        while let Some(f) = r.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    /// Byte ranges of each frame record (length, nonce, ciphertext), end frame included.
    fn frame_spans(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
        let mut spans = Vec::new();
        let mut at = HEADER_LEN;
        while at < bytes.len() {
            let end = at + 4 + NONCE_LEN + be_u32(&bytes[at..]) as usize;
            spans.push(at..end);
            at = end;
        }
        spans
    }

    fn sample_frames(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| (0..(i * 37) % 5000).map(|b| (b ^ i) as u8).collect()).collect()
    }

    #[test]
    fn round_trip_of_0_1_and_1000_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut thousand = sample_frames(1000);
        thousand[500] = vec![0xA5; 300_000];
        thousand[501] = Vec::new();
        for (name, frames) in [("zero", Vec::new()), ("one", vec![b"only frame".to_vec()]), ("many", thousand)] {
            let path = dir.path().join(name);
            assert_eq!(write_bundle(&path, b"export pass", KdfParams::DEFAULT, &frames), frames.len() as u64);
            let mut r = BundleReader::open(&path, b"export pass").unwrap();
            for (i, expected) in frames.iter().enumerate() {
                assert_eq!(r.next_frame().unwrap().as_ref(), Some(expected), "{name} frame {i}");
            }
            assert_eq!(r.next_frame().unwrap(), None);
            assert_eq!(r.next_frame().unwrap(), None, "stays at the end");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            }
        }
    }

    #[test]
    fn wrong_passphrase_is_told_apart_from_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        write_bundle(&path, b"right", KdfParams::DEFAULT, &sample_frames(3));
        assert!(matches!(BundleReader::open(&path, b"wrong"), Err(BundleError::WrongPassphrase { .. })));
        assert!(matches!(BundleReader::open(&path, b""), Err(BundleError::WrongPassphrase { .. })));
        let mut bytes = fs::read(&path).unwrap();
        bytes[25] ^= 1; // in the salt
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(BundleReader::open(&path, b"right"), Err(BundleError::Corrupt { .. })));
        fs::write(&path, b"hello").unwrap();
        assert!(matches!(BundleReader::open(&path, b"right"), Err(BundleError::Corrupt { .. })));
        assert!(matches!(BundleWriter::create(&dir.path().join("c"), b""), Err(BundleError::EmptyPassphrase)));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        write_bundle(&path, b"pw", FAST, &[b"abc".to_vec(), Vec::new(), b"defgh".to_vec()]);
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            fs::write(&path, &bad).unwrap();
            match read_all(&path, b"pw") {
                Ok(frames) => panic!("flip at byte {i} went unnoticed: {frames:?}"),
                Err(BundleError::WrongPassphrase { .. }) => panic!("flip at byte {i} read as a wrong passphrase"),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn truncation_at_every_offset_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let frames = vec![b"abc".to_vec(), Vec::new(), b"defgh".to_vec()];
        write_bundle(&path, b"pw", FAST, &frames);
        let good = fs::read(&path).unwrap();
        assert_eq!(read_all(&path, b"pw").unwrap(), frames);
        for len in 0..good.len() {
            fs::write(&path, &good[..len]).unwrap();
            let err = read_all(&path, b"pw").expect_err(&format!("truncation to {len} bytes went unnoticed"));
            assert!(!matches!(err, BundleError::WrongPassphrase { .. }), "{len}: {err}");
        }
        // Cut exactly after the last data frame: the missing end frame is what gives it away.
        let spans = frame_spans(&good);
        fs::write(&path, &good[..spans[spans.len() - 1].start]).unwrap();
        let err = read_all(&path, b"pw").unwrap_err();
        assert!(matches!(err, BundleError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("without its end frame"), "{err}");
        // And bytes after the end frame are refused too.
        let mut longer = good.clone();
        longer.push(0);
        fs::write(&path, &longer).unwrap();
        assert!(matches!(read_all(&path, b"pw"), Err(BundleError::Corrupt { .. })));
    }

    #[test]
    fn swapped_or_dropped_frames_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        write_bundle(&path, b"pw", FAST, &sample_frames(4));
        let good = fs::read(&path).unwrap();
        let spans = frame_spans(&good);
        assert_eq!(spans.len(), 5);

        let mut swapped = good[..HEADER_LEN].to_vec();
        for i in [0, 2, 1, 3, 4] {
            swapped.extend_from_slice(&good[spans[i].clone()]);
        }
        fs::write(&path, &swapped).unwrap();
        let mut r = BundleReader::open(&path, b"pw").unwrap();
        assert!(r.next_frame().unwrap().is_some());
        assert!(matches!(r.next_frame(), Err(BundleError::Corrupt { .. })));
        assert!(r.next_frame().is_err(), "no reading past an error");

        let mut dropped = good[..spans[1].start].to_vec();
        dropped.extend_from_slice(&good[spans[2].start..]);
        fs::write(&path, &dropped).unwrap();
        assert!(matches!(read_all(&path, b"pw"), Err(BundleError::Corrupt { .. })));
    }

    #[test]
    fn a_frame_from_another_bundle_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let frames = vec![b"same".to_vec(), b"size".to_vec()];
        write_bundle(&a, b"pw", FAST, &frames);
        write_bundle(&b, b"pw", FAST, &frames);
        let (bytes_a, bytes_b) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
        let (spans_a, spans_b) = (frame_spans(&bytes_a), frame_spans(&bytes_b));
        for i in 0..spans_a.len() {
            let mut mixed = bytes_a.clone();
            mixed[spans_a[i].clone()].copy_from_slice(&bytes_b[spans_b[i].clone()]);
            fs::write(&a, &mixed).unwrap();
            assert!(matches!(read_all(&a, b"pw"), Err(BundleError::Corrupt { .. })), "frame {i}");
        }
    }

    #[test]
    fn existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        fs::write(&path, b"precious").unwrap();
        let err = BundleWriter::create_with_cost(&path, b"pw", FAST).unwrap_err();
        assert!(matches!(err, BundleError::Exists { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn crafted_costs_and_lengths_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        write_bundle(&path, b"pw", FAST, &[b"x".to_vec()]);
        let good = fs::read(&path).unwrap();

        // A header asking for 64 GiB of Argon2 memory, with a checksum that matches.
        let mut greedy = good.clone();
        greedy[10..14].copy_from_slice(&(64 * 1024 * 1024u32).to_be_bytes());
        let sum = *blake3::hash(&greedy[..CHECKSUM_AT]).as_bytes();
        greedy[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&sum);
        fs::write(&path, &greedy).unwrap();
        let err = BundleReader::open(&path, b"pw").unwrap_err();
        assert!(err.to_string().contains("implausible"), "{err}");

        // A frame claiming 4 GiB.
        let mut huge = good.clone();
        huge[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        fs::write(&path, &huge).unwrap();
        let err = read_all(&path, b"pw").unwrap_err();
        assert!(err.to_string().contains("impossible length"), "{err}");

        // A newer format, with a checksum that matches.
        let mut newer = good.clone();
        newer[8..10].copy_from_slice(&2u16.to_be_bytes());
        let sum = *blake3::hash(&newer[..CHECKSUM_AT]).as_bytes();
        newer[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&sum);
        fs::write(&path, &newer).unwrap();
        assert!(matches!(BundleReader::open(&path, b"pw"), Err(BundleError::NewerFormat { found: 2, .. })));
    }

    #[test]
    fn oversized_frames_are_refused_when_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = BundleWriter::create_with_cost(&dir.path().join("b"), b"pw", FAST).unwrap();
        let big = vec![0u8; MAX_FRAME + 1];
        assert!(matches!(w.append(&big), Err(BundleError::FrameTooLarge { .. })));
        w.append(b"fine").unwrap();
        assert_eq!(w.finish().unwrap(), 1);
    }
}
