//! A backend that can be closed and opened again while the store stays up.
//!
//! sled 0.34 makes an I/O error during a write sticky: once a flush failed (a full disk, a
//! failing device), every later write and some reads of that open database fail until it is
//! reopened. `Reopenable` notes such a failure, and the committer thread calls `try_reopen`
//! about once a second: it swaps in a closed placeholder, waits for calls in flight to finish,
//! drops the failed database (releasing its file lock) and opens it again. Until that
//! succeeds, calls fail with a clear error and /readyz says so; no restart is needed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::{Backend, BackendError, MetaUpdate, RawAddress, Result};

/// Opens the backend again; the error says why it could not.
pub type Opener = Box<dyn Fn() -> Result<Arc<dyn Backend>, String> + Send + Sync>;

pub struct Reopenable {
    /// The open backend (`None` while reopening: calls fail with a clear error meanwhile).
    current: RwLock<Option<Arc<dyn Backend>>>,
    /// How to open the database again.
    open: Opener,
    /// A write or flush failed with an I/O error since the last (re)open.
    failed: AtomicBool,
    /// Set by a successful reopen; the store then reloads its counters from the database.
    reopened: AtomicBool,
}

impl Reopenable {
    pub fn new(backend: Arc<dyn Backend>, open: Opener) -> Self {
        Self {
            current: RwLock::new(Some(backend)),
            open,
            failed: AtomicBool::new(false),
            reopened: AtomicBool::new(false),
        }
    }

    fn backend(&self) -> Result<Arc<dyn Backend>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        current.ok_or_else(|| {
            BackendError::Io("the database is being reopened after a write failure; retrying every second".into())
        })
    }

    /// Passes a result through, noting an I/O failure of a write.
    fn noted<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(BackendError::Io(_)) = &result {
            self.failed.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Whether a write failed and the database is not reopened yet.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Whether the store must reload what it keeps in memory (true once after a reopen).
    pub fn take_reopened(&self) -> bool {
        self.reopened.swap(false, Ordering::AcqRel)
    }

    /// If a write failed, closes and reopens the database. `Ok(true)` if it was reopened.
    pub fn try_reopen(&self) -> Result<bool, String> {
        if !self.failed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let old = self.current.write().unwrap_or_else(|e| e.into_inner()).take();
        // Calls in flight hold clones; the file lock goes only with the last one.
        let deadline = Instant::now() + Duration::from_secs(5);
        while old.as_ref().is_some_and(|old| Arc::strong_count(old) > 1) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(old);
        let fresh = (self.open)()?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh);
        self.failed.store(false, Ordering::Relaxed);
        self.reopened.store(true, Ordering::Release);
        Ok(true)
    }
}

impl Backend for Reopenable {
    fn get_value(&self, address: &RawAddress) -> Result<Option<Vec<u8>>> {
        self.backend()?.get_value(address)
    }
    fn get_meta(&self, address: &RawAddress) -> Result<Option<Vec<u8>>> {
        self.backend()?.get_meta(address)
    }
    fn put_entry(&self, address: &RawAddress, meta: &[u8], value: &[u8], tally: &[u8]) -> Result<Option<Vec<u8>>> {
        self.noted(self.backend().and_then(|b| b.put_entry(address, meta, value, tally)))
    }
    fn replace_entry(&self, address: &RawAddress, expected: &[u8], meta: &[u8], value: &[u8]) -> Result<bool> {
        self.noted(self.backend().and_then(|b| b.replace_entry(address, expected, meta, value)))
    }
    fn update_meta(&self, address: &RawAddress, update: MetaUpdate<'_>) -> Result<()> {
        self.noted(self.backend().and_then(|b| b.update_meta(address, update)))
    }
    fn delete_entry(&self, address: &RawAddress, tally: &[u8]) -> Result<Option<Vec<u8>>> {
        self.noted(self.backend().and_then(|b| b.delete_entry(address, tally)))
    }
    fn get_tally(&self) -> Result<Option<Vec<u8>>> {
        self.backend()?.get_tally()
    }
    fn put_tally(&self, tally: &[u8]) -> Result<()> {
        self.noted(self.backend().and_then(|b| b.put_tally(tally)))
    }
    fn scan_values(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<RawAddress>> {
        self.backend()?.scan_values(after, limit)
    }
    fn scan_meta(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<(RawAddress, Vec<u8>)>> {
        self.backend()?.scan_meta(after, limit)
    }
    fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.backend()?.get_setting(name)
    }
    fn put_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        self.noted(self.backend().and_then(|b| b.put_setting(name, value)))
    }
    fn flush(&self) -> Result<()> {
        self.noted(self.backend().and_then(|b| b.flush()))
    }
    fn size_on_disk(&self) -> Result<u64> {
        self.backend()?.size_on_disk()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Flushes fail while `broken` is set, as a sled database poisoned by a full disk does.
    struct Flaky {
        broken: Arc<AtomicBool>,
    }

    impl Backend for Flaky {
        fn get_value(&self, _: &RawAddress) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn get_meta(&self, _: &RawAddress) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn put_entry(&self, _: &RawAddress, _: &[u8], _: &[u8], _: &[u8]) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn replace_entry(&self, _: &RawAddress, _: &[u8], _: &[u8], _: &[u8]) -> Result<bool> {
            Ok(false)
        }
        fn update_meta(&self, _: &RawAddress, _: MetaUpdate<'_>) -> Result<()> {
            Ok(())
        }
        fn delete_entry(&self, _: &RawAddress, _: &[u8]) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn get_tally(&self) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn put_tally(&self, _: &[u8]) -> Result<()> {
            Ok(())
        }
        fn scan_values(&self, _: Option<&RawAddress>, _: usize) -> Result<Vec<RawAddress>> {
            Ok(Vec::new())
        }
        fn scan_meta(&self, _: Option<&RawAddress>, _: usize) -> Result<Vec<(RawAddress, Vec<u8>)>> {
            Ok(Vec::new())
        }
        fn get_setting(&self, _: &str) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn put_setting(&self, _: &str, _: &[u8]) -> Result<()> {
            Ok(())
        }
        fn flush(&self) -> Result<()> {
            if self.broken.load(Ordering::Relaxed) {
                Err(BackendError::Io("No space left on device".into()))
            } else {
                Ok(())
            }
        }
        fn size_on_disk(&self) -> Result<u64> {
            Ok(0)
        }
    }

    #[test]
    fn a_failed_flush_is_healed_by_reopening_once_the_cause_is_gone() {
        let broken = Arc::new(AtomicBool::new(true));
        let opens = Arc::new(AtomicUsize::new(0));
        let (b, o) = (broken.clone(), opens.clone());
        let open: Opener = Box::new(move || {
            o.fetch_add(1, Ordering::Relaxed);
            if b.load(Ordering::Relaxed) {
                return Err("No space left on device".into());
            }
            Ok(Arc::new(Flaky { broken: b.clone() }) as Arc<dyn Backend>)
        });
        let backend = Reopenable::new(Arc::new(Flaky { broken: broken.clone() }), open);
        assert_eq!(backend.try_reopen(), Ok(false), "nothing failed yet: no reopen");
        assert!(backend.flush().is_err());
        assert!(backend.try_reopen().is_err(), "still full: the reopen fails and is retried later");
        assert!(backend.get_value(&[0; 32]).is_err(), "closed while it cannot reopen");
        broken.store(false, Ordering::Relaxed);
        assert_eq!(backend.try_reopen(), Ok(true));
        assert!(backend.take_reopened() && !backend.take_reopened());
        assert!(backend.flush().is_ok() && backend.get_value(&[0; 32]).is_ok());
        assert_eq!(opens.load(Ordering::Relaxed), 2);
    }
}
