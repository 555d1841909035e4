//! The store directory: what a Holdfast store looks like on disk, checked before anything in it
//! is opened, so a foreign directory, a newer format or a half-created store is refused without
//! writing a byte.
//!
//! ```text
//! <store>/HOLDFAST   text marker: "holdfast store\nformat <N>\n[engine <name>\n]", written last
//! <store>/keyring    the wrapped keyring (see keyring/file.rs)
//! <store>/keyring-identity  hex of the keyring's identity, read before unlocking (store/open.rs)
//! <store>/tally      the sealed integrity record's copy beside the database (integrity.rs)
//! <store>/db/        the sled database (engine `sled`, the default)
//! <store>/redb/      the redb database, one file `store.redb` (engine `redb`)
//! <store>/fjall/     the fjall keyspace directory (engine `fjall`)
//! ```
//!
//! The engine is recorded in the marker so a store is always opened with the engine that
//! wrote it: a sled store's marker has no `engine` line (it is byte-for-byte the marker of
//! stores made before engines were selectable), any other engine's has one. Each engine has a
//! directory of its own, so an older build that does not know the line finds no `db/` and
//! refuses the store instead of creating an empty sled database beside the real one.

use std::fs;
use std::path::{Path, PathBuf};

use super::engine::Engine;
use super::error::StoreOpenError;
use crate::store::durable::write_atomically;

/// The on-disk format this build writes and reads; `migrations/` has one file per version.
pub const FORMAT_VERSION: u32 = 1;

const MARKER: &str = "HOLDFAST";
const MARKER_HEADER: &str = "holdfast store";

#[derive(Debug, Clone)]
pub struct Layout {
    /// The store directory: the marker, keyring and engine directories are inside it.
    pub root: PathBuf,
}

/// What is at the store path before opening.
pub enum Found {
    Nothing,
    Store { format: u32, engine: Engine },
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_owned() }
    }

    pub fn keyring(&self) -> PathBuf {
        self.root.join("keyring")
    }

    /// The directory of the database written by `engine`.
    pub fn db(&self, engine: Engine) -> PathBuf {
        self.root.join(engine.dir_name())
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
        let engine = match lines.next().map(|l| l.strip_prefix("engine ")) {
            None => Engine::Sled,
            Some(Some(name)) => Engine::from_name(name.trim()).ok_or_else(|| {
                not_a_store(format!(
                    "its HOLDFAST marker names the storage engine `{}`, which this build does not know",
                    name.trim()
                ))
            })?,
            Some(None) => return Err(not_a_store("its HOLDFAST marker has an unexpected third line".into())),
        };
        Ok(Found::Store { format, engine })
    }

    pub fn create_root(&self) -> Result<(), StoreOpenError> {
        fs::create_dir_all(&self.root).map_err(|source| StoreOpenError::Io { path: self.root.clone(), source })?;
        restrict_permissions(&self.root);
        Ok(())
    }

    /// Written last when a store is created: its presence means the store is complete.
    pub fn write_marker(&self, format: u32, engine: Engine) -> Result<(), StoreOpenError> {
        let engine_line = match engine {
            Engine::Sled => String::new(),
            other => format!("engine {other}\n"),
        };
        write_atomically(&self.marker(), format!("{MARKER_HEADER}\nformat {format}\n{engine_line}").as_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect(marker: &str) -> Result<Found, StoreOpenError> {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MARKER), marker).unwrap();
        Layout::new(dir.path()).inspect()
    }

    #[test]
    fn a_marker_without_an_engine_line_is_a_sled_store_and_names_its_engine_otherwise() {
        assert!(matches!(inspect("holdfast store\nformat 1\n"), Ok(Found::Store { format: 1, engine: Engine::Sled })));
        assert!(matches!(
            inspect("holdfast store\nformat 1\nengine redb\n"),
            Ok(Found::Store { engine: Engine::Redb, .. })
        ));
        let unknown = inspect("holdfast store\nformat 1\nengine rocksdb\n").err().unwrap().to_string();
        assert!(unknown.contains("`rocksdb`"), "{unknown}");
        assert!(inspect("holdfast store\nformat 1\nsomething else\n").is_err());
    }

    #[test]
    fn the_marker_written_for_each_engine_reads_back_as_that_engine() {
        for engine in Engine::ALL {
            let dir = tempfile::tempdir().unwrap();
            let layout = Layout::new(dir.path());
            layout.write_marker(FORMAT_VERSION, engine).unwrap();
            assert!(matches!(layout.inspect(), Ok(Found::Store { engine: e, .. }) if e == engine));
        }
        // A sled store's marker is the one written before engines were selectable.
        let dir = tempfile::tempdir().unwrap();
        Layout::new(dir.path()).write_marker(1, Engine::Sled).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join(MARKER)).unwrap(), "holdfast store\nformat 1\n");
    }
}
