//! The store against a real sled database in a temp dir.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast::cache_key::address::{Address, Namespace};
use holdfast::secret::StoreSecret;
use holdfast::store::keyring::{Keyring, KeyringError};
use holdfast::store::record::{EntryMeta, ResponseBody};
use holdfast::store::{Backend, SledBackend, Store, StoreError, StoreOpenError, StoreOptions};

use crate::common::*;

#[test]
fn round_trip_and_persistence_across_reopen() {
    let (dir, store) = new_store();
    let (address, request) = chat_request(&store, "What is the capital of France?");
    assert!(store.get(&address).unwrap().is_none());
    let rec = record(request, "Paris.");
    store.put(&address, &rec).unwrap();
    let entry = store.get(&address).unwrap().expect("stored entry");
    assert_eq!(entry.record, rec);
    assert_eq!(entry.meta.times_served, 0);
    store.mark_served(&address).unwrap();
    let path = store.path().to_owned();
    drop(store);

    let store = reopen(&path);
    let entry = store.get(&address).unwrap().expect("entry survives reopen");
    assert_eq!(answer_of(&entry.record), "Paris.");
    assert_eq!(entry.meta.times_served, 1);
    let stats = store.stats();
    assert_eq!((stats.entries, stats.tampered), (1, 0));
    assert!(stats.bytes > 0 && stats.disk_bytes > 0);
    drop(dir);
}

#[test]
fn streamed_record_round_trips_event_by_event() {
    let (_dir, store) = new_store();
    let (address, request) = chat_request(&store, "stream please");
    let mut rec = record(request, "");
    let events: Vec<bytes::Bytes> = vec![
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n".into(),
        "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n".into(),
        "data: [DONE]\n\n".into(),
    ];
    rec.response.body = ResponseBody::Stream(events.clone());
    store.put(&address, &rec).unwrap();
    let got = store.get(&address).unwrap().unwrap().record;
    assert_eq!(got.response.body, ResponseBody::Stream(events));
}

#[test]
fn put_replaces_and_delete_removes() {
    let (_dir, store) = new_store();
    let (address, request) = chat_request(&store, "q");
    store.put(&address, &record(request.clone(), "first")).unwrap();
    store.put(&address, &record(request, "second")).unwrap();
    assert_eq!(answer_of(&store.get(&address).unwrap().unwrap().record), "second");
    assert_eq!(store.stats().entries, 1);
    assert!(store.delete(&address).unwrap());
    assert!(!store.delete(&address).unwrap());
    assert!(store.get(&address).unwrap().is_none());
    assert_eq!(store.stats().entries, 0);
}

/// Opens a store whose backend the test can also reach, to tamper with stored bytes.
fn store_with_backend() -> (tempfile::TempDir, Store, Arc<SledBackend>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(Store::open(&path, &passphrase(), create_options()).unwrap());
    let backend = Arc::new(SledBackend::open(&path.join("db"), 16 << 20).unwrap_or_else(|_| panic!("open db")));
    let keyring = Keyring::unlock(&path.join("keyring"), &passphrase()).unwrap();
    let store = Store::with_backend(&path, backend.clone(), keyring, StoreOptions::default()).unwrap();
    (dir, store, backend)
}

#[test]
fn flipping_any_byte_of_a_stored_value_is_detected() {
    let (_dir, store, backend) = store_with_backend();
    let (address, request) = chat_request(&store, "tamper target");
    store.put(&address, &record(request, "secret answer")).unwrap();
    let raw = address.as_bytes();
    let original = backend.get_value(raw).unwrap().unwrap();
    let meta = backend.get_meta(raw).unwrap().unwrap();
    for i in 0..original.len() {
        let mut bad = original.clone();
        bad[i] ^= 0x80;
        backend.put_entry(raw, &meta, &bad, &backend.get_tally().unwrap().unwrap()).unwrap();
        match store.get(&address) {
            Err(StoreError::Tampered { address: a, .. }) => assert_eq!(a, address),
            other => panic!("flip at byte {i} (of {}) gave {other:?}", original.len()),
        }
    }
    assert_eq!(store.stats().tampered, original.len() as u64);
    backend.put_entry(raw, &meta, &original, &backend.get_tally().unwrap().unwrap()).unwrap();
    assert_eq!(answer_of(&store.get(&address).unwrap().unwrap().record), "secret answer");
}

#[test]
fn value_copied_to_another_address_is_detected() {
    let (_dir, store, backend) = store_with_backend();
    let (a, req_a) = chat_request(&store, "question A");
    let (b, req_b) = chat_request(&store, "question B");
    store.put(&a, &record(req_a, "answer A")).unwrap();
    store.put(&b, &record(req_b, "answer B")).unwrap();
    let value_a = backend.get_value(a.as_bytes()).unwrap().unwrap();
    let meta_b = backend.get_meta(b.as_bytes()).unwrap().unwrap();
    backend.put_entry(b.as_bytes(), &meta_b, &value_a, &backend.get_tally().unwrap().unwrap()).unwrap();
    assert!(matches!(store.get(&b), Err(StoreError::Tampered { .. })));
    assert_eq!(answer_of(&store.get(&a).unwrap().unwrap().record), "answer A");
}

#[test]
fn corrupt_metadata_is_reported_not_returned() {
    let (_dir, store, backend) = store_with_backend();
    let (a, req) = chat_request(&store, "meta");
    store.put(&a, &record(req, "x")).unwrap();
    let value = backend.get_value(a.as_bytes()).unwrap().unwrap();
    backend.put_entry(a.as_bytes(), &[0xFF; 3], &value, &backend.get_tally().unwrap().unwrap()).unwrap();
    assert!(matches!(store.get(&a), Err(StoreError::Tampered { .. })));
    // Scans skip it, but verify names it and counts it as missing.
    let report = store.verify(&|_, _| {});
    assert!(report.failed() && report.bad.iter().any(|(address, _)| *address == a.to_hex()), "{report:?}");
    assert_eq!((report.expected, report.readable, report.missing), (1, 0, 1), "{report:?}");
}

#[test]
fn wrong_passphrase_is_named_and_changes_nothing() {
    let (dir, store) = new_store();
    let (address, request) = chat_request(&store, "q");
    store.put(&address, &record(request, "a")).unwrap();
    let path = store.path().to_owned();
    drop(store);
    let before = read_tree(dir.path());
    let wrong = StoreSecret::passphrase("not the passphrase").unwrap();
    let err = Store::open(&path, &wrong, StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreOpenError::Keyring(KeyringError::WrongSecret { .. })), "{err:?}");
    assert!(err.to_string().starts_with("wrong passphrase or key"), "{err}");
    assert!(!err.to_string().contains("not the passphrase"));
    assert!(read_tree(dir.path()) == before, "a wrong passphrase must leave the store byte-for-byte unchanged");
}

#[test]
fn raw_key_store_opens_with_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let key = StoreSecret::raw_key_base64("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=").unwrap();
    let store = Store::open(&path, &key, create_options()).unwrap();
    let (address, request) = chat_request(&store, "q");
    store.put(&address, &record(request, "a")).unwrap();
    drop(store);
    let err = Store::open(&path, &passphrase(), StoreOptions::default()).unwrap_err();
    assert!(err.to_string().contains("HOLDFAST_KEY"), "{err}");
    let store = Store::open(&path, &key, StoreOptions::default()).unwrap();
    assert!(store.get(&address).unwrap().is_some());
}

#[test]
fn newer_format_foreign_files_and_missing_store_are_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    assert!(matches!(Store::open(&path, &passphrase(), StoreOptions::default()), Err(StoreOpenError::NotFound { .. })));
    assert!(!path.exists(), "opening without create must not create");

    drop(Store::open(&path, &passphrase(), create_options()).unwrap());
    std::fs::write(path.join("HOLDFAST"), "holdfast store\nformat 7\n").unwrap();
    let before = read_tree(dir.path());
    let err = Store::open(&path, &passphrase(), create_options()).unwrap_err();
    assert!(matches!(err, StoreOpenError::NewerFormat { found: 7, supported: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("upgrade holdfast"), "{err}");
    assert!(read_tree(dir.path()) == before, "refusing must not write");

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"hello").unwrap();
    let err = Store::open(&file, &passphrase(), create_options()).unwrap_err();
    assert!(matches!(err, StoreOpenError::NotAStore { .. }), "{err:?}");
    assert_eq!(std::fs::read(&file).unwrap(), b"hello");

    let foreign = dir.path().join("photos");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("cat.jpg"), b"meow").unwrap();
    let err = Store::open(&foreign, &passphrase(), create_options()).unwrap_err();
    assert!(err.to_string().contains("not a Holdfast store"), "{err}");
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1, "nothing may be added to a foreign directory");

    std::fs::write(path.join("HOLDFAST"), "holdfast store\nformat 1\n").unwrap();
    std::fs::write(path.join("keyring"), b"garbage").unwrap();
    let err = Store::open(&path, &passphrase(), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreOpenError::Keyring(KeyringError::Corrupt { .. })), "{err:?}");
}

#[test]
fn a_second_process_is_told_the_store_is_in_use() {
    let (_dir, store) = new_store();
    let err = Store::open(store.path(), &passphrase(), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreOpenError::InUse { .. }), "{err:?}");
    assert!(err.to_string().contains("--server"), "{err}");
}

#[test]
fn no_file_in_the_store_contains_prompt_answer_or_credential() {
    let (dir, store) = new_store();
    let canary = "CANARY-7f3a9c-prompt";
    let answer_canary = "CANARY-answer-51e2";
    let credential = b"Bearer sk-CANARY-credential-0042";
    let namespace = store.addresser().namespace_for_credential(credential);
    for i in 0..50 {
        let (_, request) = chat_request(&store, &format!("{canary} number {i}"));
        let address = store.address(&namespace, &request);
        store.put(&address, &record(request, &format!("{answer_canary} {i}"))).unwrap();
    }
    store.flush().unwrap();
    drop(store);
    for (path, bytes) in read_tree(dir.path()) {
        for needle in [canary.as_bytes(), answer_canary.as_bytes(), b"CANARY-credential", PASSPHRASE.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} contains {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn tenants_never_share_an_address() {
    let (_dir, store) = new_store();
    let (_, request) = chat_request(&store, "same question");
    let alice = store.addresser().namespace_for_credential(b"Bearer sk-alice");
    let bob = store.addresser().namespace_for_credential(b"Bearer sk-bob");
    let a = store.address(&alice, &request);
    store.put(&a, &record(request.clone(), "for alice")).unwrap();
    assert!(store.get(&store.address(&bob, &request)).unwrap().is_none());
    assert!(store.get(&store.address(&Namespace::shared(), &request)).unwrap().is_none());
}

#[test]
fn many_concurrent_readers_and_writers() {
    let (_dir, store) = new_store();
    let store = Arc::new(store);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..150 {
                    // Half the prompts are shared between threads, so writes race on addresses.
                    let prompt = if i % 2 == 0 { format!("shared {}", i % 20) } else { format!("own {t} {i}") };
                    let (address, request) = chat_request(&store, &prompt);
                    store.put(&address, &record(request, &format!("answer to {prompt}"))).unwrap();
                    let got = store.get(&address).unwrap().expect("just written");
                    assert_eq!(answer_of(&got.record), format!("answer to {prompt}"));
                    store.mark_served(&address).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // 10 shared prompts (even i in 0..20) + 8 threads × 75 own prompts.
    let mut count = 0;
    store.for_each_meta(|_, _| count += 1).unwrap();
    assert_eq!(count, 10 + 8 * 75);
    assert_eq!(store.stats().entries, count);
    assert_eq!(store.stats().tampered, 0);
}

#[test]
fn entries_expire_after_retention_and_purge_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { retention: Some(Duration::from_millis(50)), ..create_options() };
    let store = Store::open(&dir.path().join("s"), &passphrase(), options).unwrap();
    let (address, request) = chat_request(&store, "short-lived");
    store.put(&address, &record(request, "a")).unwrap();
    assert!(store.get(&address).unwrap().is_some());
    std::thread::sleep(Duration::from_millis(80));
    assert!(store.get(&address).unwrap().is_none());
    assert_eq!(store.purge_expired().unwrap(), 1);
    assert_eq!(store.stats().entries, 0);
}

/// A store whose size budget holds ten 1,000-character answers, and the size of one.
fn store_with_room_for_ten() -> (tempfile::TempDir, Store, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (_probe_dir, probe) = new_store();
    let (a, req) = chat_request(&probe, "size probe");
    probe.put(&a, &record(req, "x".repeat(1000).as_str())).unwrap();
    let one = probe.stats().bytes;
    drop(probe);
    let options = StoreOptions { max_bytes: Some(one * 10), ..create_options() };
    let store = Store::open(&dir.path().join("s"), &passphrase(), options).unwrap();
    (dir, store, one)
}

#[test]
fn size_budget_evicts_least_recently_served_first() {
    let (_dir, store, one) = store_with_room_for_ten();
    let mut addresses = Vec::new();
    for i in 0..9 {
        let (address, request) = chat_request(&store, &format!("q{i:02}"));
        store.put(&address, &record(request, "x".repeat(1000).as_str())).unwrap();
        addresses.push(address);
        std::thread::sleep(Duration::from_millis(2));
    }
    // The oldest entry is served now, so it is the most recently used when the budget is hit.
    store.mark_served(&addresses[0]).unwrap();
    for i in 9..12 {
        let (address, request) = chat_request(&store, &format!("q{i:02}"));
        store.put(&address, &record(request, "x".repeat(1000).as_str())).unwrap();
        addresses.push(address);
    }
    // Eviction is never done inside `put` (the client is waiting); the store only asks for it.
    assert!(store.over_budget(), "put must not evict on the request path");
    assert!(store.evict_to_budget().unwrap() > 0);
    assert!(store.stats().bytes <= one * 10, "{} > {}", store.stats().bytes, one * 10);
    assert!(store.get(&addresses[0]).unwrap().is_some(), "recently served entry was evicted");
    assert!(store.get(&addresses[1]).unwrap().is_none(), "least recently served entry survived");
    assert!(store.get(&addresses[11]).unwrap().is_some(), "newest entry was evicted");
}

#[test]
fn size_budget_keeps_the_questions_asked_most_often() {
    let (_dir, store, _) = store_with_room_for_ten();
    let mut addresses = Vec::new();
    for i in 0..12 {
        let (address, request) = chat_request(&store, &format!("f{i:02}"));
        store.put(&address, &record(request, "x".repeat(1000).as_str())).unwrap();
        addresses.push(address);
    }
    // The first entry is asked for four times, early; every later one once, afterwards. A
    // least-recently-served policy would evict the first; the frequent question stays.
    for _ in 0..4 {
        store.mark_served(&addresses[0]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(5));
    for address in &addresses[1..] {
        store.mark_served(address).unwrap();
    }
    assert!(store.evict_to_budget().unwrap() > 0);
    assert!(store.get(&addresses[0]).unwrap().is_some(), "the most asked question was evicted");
    let kept = addresses[1..].iter().filter(|a| store.get(a).unwrap().is_some()).count();
    assert!(kept < 11, "nothing else was evicted");
}

#[test]
fn data_key_rotation_keeps_old_records_readable() {
    let (_dir, store) = new_store();
    let (old, req_old) = chat_request(&store, "before rotation");
    store.put(&old, &record(req_old, "old")).unwrap();
    let new_id = store.keyring().rotate().unwrap();
    let (new, req_new) = chat_request(&store, "after rotation");
    store.put(&new, &record(req_new, "new")).unwrap();
    assert_eq!(store.get(&new).unwrap().unwrap().meta.key_id, new_id);
    assert_eq!(answer_of(&store.get(&old).unwrap().unwrap().record), "old");
    let counts = store.count_by_key().unwrap();
    assert_eq!(counts.get(&1), Some(&1));
    assert_eq!(counts.get(&new_id), Some(&1));
    let path = store.path().to_owned();
    drop(store);
    let store = reopen(&path);
    assert_eq!(answer_of(&store.get(&old).unwrap().unwrap().record), "old");
    assert_eq!(answer_of(&store.get(&new).unwrap().unwrap().record), "new");
}

/// The environment variable that turns `crash_child_writer` from a no-op into the writer.
const CRASH_DIR_VAR: &str = "HOLDFAST_TEST_CRASH_DIR";

/// Run by `killed_writer_leaves_a_store_that_reopens_cleanly` in a child process.
#[test]
#[ignore = "helper: runs only as the child of the crash test"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CRASH_DIR_VAR) else {
        return;
    };
    let store = reopen(std::path::Path::new(&dir));
    for i in 0u64.. {
        let (address, request) = chat_request(&store, &format!("crash prompt {i}"));
        store.put(&address, &record(request, &format!("crash answer {i}"))).unwrap();
        if i % 25 == 24 {
            store.flush().unwrap();
            println!("durable {i}");
        }
    }
}

#[test]
fn killed_writer_leaves_a_store_that_reopens_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(Store::open(&path, &passphrase(), create_options()).unwrap());

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["store::crash_child_writer", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR_VAR, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let mut durable = None;
    while let Some(Ok(line)) = lines.next() {
        if let Some(n) = line.strip_prefix("durable ") {
            durable = Some(n.parse::<u64>().unwrap());
            if durable >= Some(300) {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "child made no progress");
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no final flush
    child.wait().unwrap();
    let durable = durable.expect("child reported progress");

    let store = reopen(&path);
    let mut seen = 0;
    let mut reported = 0;
    let mut addresses: Vec<(Address, EntryMeta)> = Vec::new();
    store.for_each_meta(|a, m| addresses.push((a, m))).unwrap();
    for (address, _) in &addresses {
        match store.get(address) {
            Ok(Some(entry)) => {
                let prompt_no = answer_of(&entry.record).strip_prefix("crash answer ").unwrap().to_owned();
                let (expected, _) = chat_request(&store, &format!("crash prompt {prompt_no}"));
                assert_eq!(&expected, address, "entry served under the wrong address");
                seen += 1;
            }
            Ok(None) => panic!("metadata without entry at {address}"),
            Err(StoreError::Tampered { .. }) => reported += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    for i in 0..=durable {
        let (address, _) = chat_request(&store, &format!("crash prompt {i}"));
        assert!(store.get(&address).unwrap().is_some(), "record {i} was flushed before the kill but is gone");
    }
    assert!(seen as u64 > durable, "only {seen} records after the crash; {durable} were durable");
    assert_eq!(reported, 0, "sled's atomic batches should leave no torn entries");
}

#[test]
fn another_stores_keyring_is_refused_by_name_and_writes_nothing_under_it() {
    let (dir_a, store_a) = new_store();
    let (dir_b, store_b) = new_store();
    let (address, request) = chat_request(&store_a, "bound to its keyring");
    store_a.put(&address, &record(request, "only store A can read this")).unwrap();
    let (path_a, path_b) = (store_a.path().to_owned(), store_b.path().to_owned());
    drop(store_a);
    drop(store_b);
    let own = std::fs::read(path_a.join("keyring")).unwrap();
    // Same passphrase, so B's keyring unlocks: only the binding can tell it is foreign.
    std::fs::copy(path_b.join("keyring"), path_a.join("keyring")).unwrap();
    let err = Store::open(&path_a, &passphrase(), StoreOptions::default()).unwrap_err().to_string();
    assert!(err.contains("belongs to another store"), "{err}");
    // Nothing was written under the foreign keys: with its own keyring back, A is whole.
    std::fs::write(path_a.join("keyring"), own).unwrap();
    let store_a = reopen(&path_a);
    assert_eq!(answer_of(&store_a.get(&address).unwrap().unwrap().record), "only store A can read this");
    drop((dir_a, dir_b));
}
