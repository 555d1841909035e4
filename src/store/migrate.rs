//! `holdfast migrate`: bringing a store of an older on-disk format to the current one, one
//! numbered step at a time, following `migrations/NNNN_*.md`.
//!
//! Format 1 is the first format, so no step exists yet; the command still checks what is at
//! the path and reports, so operators can run it as part of every upgrade.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::StoreOpenError;
use super::layout::{FORMAT_VERSION, Found, Layout};

/// What `migrate` found and did.
pub struct MigrationReport {
    /// The store directory migrated.
    pub path: PathBuf,
    /// The format version the store had.
    pub found: u32,
    /// The format version this build writes.
    pub current: u32,
    /// Nothing was changed: `steps` lists what would be applied.
    pub dry_run: bool,
    /// Steps applied (or, in a dry run, that would be), as `NNNN_name`.
    pub steps: Vec<&'static str>,
}

impl fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() {
            return writeln!(
                f,
                "store at {} is at format {}, the current format; nothing to do",
                self.path.display(),
                self.found
            );
        }
        let verb = if self.dry_run { "would apply" } else { "applied" };
        writeln!(f, "store at {}: format {} → {}", self.path.display(), self.found, self.current)?;
        for step in &self.steps {
            writeln!(f, "  {verb} {step}")?;
        }
        Ok(())
    }
}

/// Steps from format N to N+1, in order: (target format, migrations/ file, action).
type Step = (u32, &'static str, fn(&Layout) -> Result<(), StoreOpenError>);
const STEPS: &[Step] = &[];

/// Upgrades the store at `path` to `FORMAT_VERSION` (or, with `dry_run`, says how).
pub fn migrate(path: &Path, dry_run: bool) -> Result<MigrationReport, StoreOpenError> {
    let layout = Layout::new(path);
    let (found, engine) = match layout.inspect()? {
        Found::Nothing => return Err(StoreOpenError::NotFound { path: path.to_owned() }),
        Found::Store { format, engine } => (format, engine),
    };
    let mut report =
        MigrationReport { path: path.to_owned(), found, current: FORMAT_VERSION, dry_run, steps: Vec::new() };
    for (target, name, apply) in STEPS.iter().filter(|(target, ..)| *target > found) {
        if !dry_run {
            apply(&layout)?;
            layout.write_marker(*target, engine)?;
        }
        report.steps.push(name);
    }
    Ok(report)
}
