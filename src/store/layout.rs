//! The store directory: what a Holdfast store looks like on disk, checked before anything in it
//! is opened, so a foreign directory, a newer format or a half-created store is refused without
//! writing a byte.
//!
//! ```text
//! <store>/HOLDFAST   text marker: "holdfast store\nformat <N>\n", written last at creation
//! <store>/keyring    the wrapped keyring (see keyring.rs)
//! <store>/db/        the sled database
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use super::StoreOpenError;
use crate::durable::write_atomically;

/// The on-disk format this build writes and reads; `migrations/` has one file per version.
pub const FORMAT_VERSION: u32 = 1;

const MARKER: &str = "HOLDFAST";
const MARKER_HEADER: &str = "holdfast store";

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

/// What is at the store path before opening.
pub enum Found {
    Nothing,
    Store { format: u32 },
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_owned() }
    }

    pub fn keyring(&self) -> PathBuf {
        self.root.join("keyring")
    }

    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }

    fn marker(&self) -> PathBuf {
        self.root.join(MARKER)
    }

    /// Looks at the path without changing anything.
    pub fn inspect(&self) -> Result<Found, StoreOpenError> {
        let not_a_store = |reason: String| StoreOpenError::NotAStore { path: self.root.clone(), reason };
        let io = |source| StoreOpenError::Io { path: self.root.clone(), source };
        let meta = match fs::metadata(&self.root) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
            Err(e) => return Err(io(e)),
        };
        if !meta.is_dir() {
            return Err(not_a_store("it is a file, not a directory".into()));
        }
        let marker = match fs::read_to_string(self.marker()) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut names = fs::read_dir(&self.root).map_err(io)?;
                return match names.next() {
                    None => Ok(Found::Nothing),
                    Some(_) => Err(not_a_store(
                        "the directory has files but no HOLDFAST marker; if an earlier `holdfast init` was \
                         interrupted, remove the directory and run it again"
                            .into(),
                    )),
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(not_a_store("its HOLDFAST marker is not text".into()));
            }
            Err(e) => return Err(io(e)),
        };
        let mut lines = marker.lines();
        let format = match (lines.next(), lines.next().and_then(|l| l.strip_prefix("format "))) {
            (Some(MARKER_HEADER), Some(n)) => {
                n.trim().parse::<u32>().map_err(|_| not_a_store(format!("its HOLDFAST marker names format `{n}`")))?
            }
            _ => {
                return Err(not_a_store("its HOLDFAST marker is not one Holdfast wrote".into()));
            }
        };
        if format == 0 {
            return Err(not_a_store("its HOLDFAST marker names format 0, which never existed".into()));
        }
        if format > FORMAT_VERSION {
            return Err(StoreOpenError::NewerFormat {
                path: self.root.clone(),
                found: format,
                supported: FORMAT_VERSION,
            });
        }
        Ok(Found::Store { format })
    }

    pub fn create_root(&self) -> Result<(), StoreOpenError> {
        fs::create_dir_all(&self.root).map_err(|source| StoreOpenError::Io { path: self.root.clone(), source })?;
        restrict_permissions(&self.root);
        Ok(())
    }

    /// Written last when a store is created: its presence means the store is complete.
    pub fn write_marker(&self, format: u32) -> Result<(), StoreOpenError> {
        write_atomically(&self.marker(), format!("{MARKER_HEADER}\nformat {format}\n").as_bytes())
            .map_err(|source| StoreOpenError::Io { path: self.marker(), source })
    }
}

/// Keeps other local users out of the store directory (owner-only, like ~/.ssh).
fn restrict_permissions(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
}
