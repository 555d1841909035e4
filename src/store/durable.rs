//! Replacing small files so that a crash leaves either the old file or the new one, never a
//! torn one: the keyring, the store's marker, the access trail's head.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Writes `bytes` to a temporary sibling (mode 0600), syncs it, renames it over `path`, and
/// syncs the directory so the rename itself survives a power cut.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // A per-process suffix on the full name: two processes never share a temporary file, and
    // `trail.jsonl.head` keeps its own name instead of losing an "extension".
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // Best effort where directories cannot be opened (some platforms).
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
