//! Process hardening applied at start-up: secrets held in memory (the passphrase, data keys,
//! decrypted prompts) must not reach a core file or another process of the same user.
//!
//! - `RLIMIT_CORE` 0: a crash writes no core file.
//! - `PR_SET_DUMPABLE` 0 (Linux): no core either way, and `/proc/PID/mem`, `/proc/PID/environ`
//!   and ptrace are closed to other processes of the same user (root excepted). This is also
//!   what keeps environment secrets (`HOLDFAST_PASSPHRASE`, `api_key_env` keys) private:
//!   removing them from the environment would not erase the copy the kernel shows in
//!   `/proc/PID/environ`, and would need unsafe code in a multi-threaded process.
//! - The soft open-file limit is raised to the hard one, so connection caps decide how many
//!   clients are served, not `EMFILE`.

/// What start-up hardening achieved, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardening {
    /// The core-file size limit is 0.
    pub core_dumps_off: bool,
    /// The process is not dumpable (Linux only).
    pub not_dumpable: bool,
    /// The open-file limit now in force, if known.
    pub open_files: Option<u64>,
}

/// Applies every measure it can; none of them failing stops Holdfast (each is logged by the
/// caller from the report).
pub fn apply() -> Hardening {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let core_dumps_off = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) }).is_ok();
    #[cfg(target_os = "linux")]
    let not_dumpable = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable).is_ok();
    #[cfg(not(target_os = "linux"))]
    let not_dumpable = false;
    Hardening { core_dumps_off, not_dumpable, open_files: raise_open_file_limit() }
}

/// Raises the soft open-file limit to the hard one, so connection caps (not EMFILE) decide
/// how many clients are served; returns the limit now in force.
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    match setrlimit(Resource::Nofile, Rlimit { current: current.maximum, maximum: current.maximum }) {
        Ok(()) => current.maximum,
        Err(_) => current.current,
    }
}

impl Hardening {
    pub fn log(&self) {
        if self.core_dumps_off && (self.not_dumpable || !cfg!(target_os = "linux")) {
            tracing::info!(open_files = ?self.open_files, "core dumps off; process not dumpable");
        } else {
            tracing::warn!(
                core_dumps_off = self.core_dumps_off,
                not_dumpable = self.not_dumpable,
                "could not fully disable core dumps: a crash may write secrets to disk"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn core_dumps_are_off_after_apply() {
        let report = super::apply();
        assert!(report.core_dumps_off);
        let core = rustix::process::getrlimit(rustix::process::Resource::Core);
        assert_eq!(core.current, Some(0));
        #[cfg(target_os = "linux")]
        {
            assert!(report.not_dumpable);
            assert_eq!(rustix::process::dumpable_behavior().ok(), Some(rustix::process::DumpableBehavior::NotDumpable));
        }
        let files = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(files.current, files.maximum, "soft open-file limit raised to the hard one");
    }
}
