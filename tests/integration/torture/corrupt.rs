//! Corruption sweep: damage every file of a store in many ways; `cache verify` must report
//! every loss (exit 3, or a clear error naming the damage) and nothing may ever panic.

use std::path::Path;

use holdfast::cache_key::address::Address;
use holdfast::store::{Store, StoreOptions};

use super::{copy_tree, files_under, holdfast, is_database, soak};
use crate::common::{chat_request, create_options, engine_config_line, passphrase, record};

/// Entries in the store under test.
const ENTRIES: usize = 10;

/// One way of damaging a file.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Flip one bit at this fraction of the file.
    Flip(f64),
    /// Overwrite 64 bytes with 0xA5 from this fraction.
    Overwrite(f64),
    /// Cut the file to this fraction of its length.
    Truncate(f64),
}

fn apply(path: &Path, damage: Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    if bytes.is_empty() {
        return;
    }
    let at = |f: f64| ((bytes.len() as f64 * f) as usize).min(bytes.len() - 1);
    match damage {
        Damage::Flip(f) => {
            let i = at(f);
            bytes[i] ^= 0x10;
        }
        Damage::Overwrite(f) => {
            let i = at(f);
            let end = (i + 64).min(bytes.len());
            bytes[i..end].fill(0xA5);
        }
        Damage::Truncate(f) => bytes.truncate(at(f)),
    }
    std::fs::write(path, bytes).unwrap();
}

fn cases(file_len: usize, is_database: bool) -> Vec<Damage> {
    let points = match (is_database, soak()) {
        (true, true) => 96,
        (true, false) => 20,
        (false, true) => 16,
        (false, false) => 3,
    };
    let mut out: Vec<Damage> = (0..points).map(|i| Damage::Flip((i as f64 + 0.5) / points as f64)).collect();
    if file_len > 0 {
        out.extend([0.1, 0.5, 0.9].map(Damage::Overwrite));
        out.extend([0.1, 0.5, 0.9, 0.99].map(Damage::Truncate));
    }
    out
}

#[test]
fn every_corruption_is_reported_by_verify_and_none_panics() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    let mut addresses: Vec<Address> = Vec::new();
    {
        let store = Store::open(&pristine, &passphrase(), create_options()).unwrap();
        for i in 0..ENTRIES {
            let (address, request) = chat_request(&store, &format!("corruption sweep prompt {i}"));
            store.put(&address, &record(request, &format!("answer {i} {}", "x".repeat(200 * i)))).unwrap();
            addresses.push(address);
        }
    }
    let (mut total, mut reported, mut errors, mut harmless, mut silent) = (0, 0, 0, 0, Vec::new());
    for file in files_under(&pristine) {
        let relative = file.strip_prefix(&pristine).unwrap().to_owned();
        let len = std::fs::metadata(&file).unwrap().len() as usize;
        let is_database = is_database(&relative);
        for damage in cases(len, is_database) {
            total += 1;
            let case = dir.path().join(format!("case-{total}"));
            copy_tree(&pristine, &case);
            apply(&case.join(&relative), damage);
            let config = dir.path().join(format!("case-{total}.toml"));
            std::fs::write(&config, format!("[store]\npath = \"{}\"\n{}", case.display(), engine_config_line()))
                .unwrap();
            let out = holdfast(dir.path()).arg("--config").arg(&config).args(["cache", "verify"]).output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let what = format!("{} {damage:?}", relative.display());
            // `HOLDFAST_SWEEP_VERBOSE=1` prints what verify said about every case.
            if std::env::var_os("HOLDFAST_SWEEP_VERBOSE").is_some() {
                eprintln!(
                    "{what}: {:?} {} {}",
                    out.status.code(),
                    stdout.lines().filter(|l| !l.starts_with("TAMPERED")).collect::<Vec<_>>().join(" / "),
                    stderr.lines().last().unwrap_or("")
                );
            }
            assert_ne!(out.status.code(), Some(101), "{what}: verify panicked\n{stderr}");
            assert!(out.status.code().is_some(), "{what}: verify died on a signal\n{stderr}");
            match out.status.code() {
                Some(3) => {
                    assert!(
                        stdout.contains("missing") || stdout.contains("TAMPERED") || stderr.contains("damaged"),
                        "{what}: exit 3 must say what is wrong\n{stdout}{stderr}"
                    );
                    reported += 1;
                }
                Some(0) => {
                    // "Nothing wrong" must be true: every stored entry opens.
                    let readable = readable_entries(&case, &addresses);
                    if readable < ENTRIES {
                        silent.push(format!("{what}: exit 0 but {readable} of {ENTRIES} open\n{stdout}"));
                    }
                    harmless += 1;
                }
                Some(1) => {
                    // A store that cannot be unlocked at all (keyring, marker): a clear refusal.
                    assert!(stderr.contains("holdfast: error:"), "{what}: {stderr}");
                    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
                    errors += 1;
                }
                other => panic!("{what}: unexpected exit {other:?}\n{stdout}\n{stderr}"),
            }
            std::fs::remove_dir_all(&case).unwrap();
        }
    }
    eprintln!(
        "corruption sweep: {total} cases, {reported} reported (exit 3), {errors} refused to open (exit 1), \
         {harmless} harmless (exit 0, all {ENTRIES} entries open), {} silent losses, 0 panics",
        silent.len()
    );
    assert!(silent.is_empty(), "silent losses:\n{}", silent.join("\n"));
    assert!(reported > 0, "the sweep found no damage at all; it is not reaching the database");
}

/// How many of `addresses` open in the store at `path`, as the next `serve` would see it.
fn readable_entries(path: &Path, addresses: &[Address]) -> usize {
    let options = StoreOptions { accept_damage: true, ..StoreOptions::default() };
    let Ok(store) = Store::open(path, &passphrase(), options) else { return 0 };
    addresses.iter().filter(|a| matches!(store.get(a), Ok(Some(_)))).count()
}

#[test]
fn serve_refuses_a_store_that_lost_entries_until_repair_says_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    {
        let store = Store::open(&pristine, &passphrase(), create_options()).unwrap();
        for i in 0..ENTRIES {
            let (address, request) = chat_request(&store, &format!("repair prompt {i}"));
            store.put(&address, &record(request, &format!("answer {i}"))).unwrap();
        }
    }
    let store_path = dir.path().join("store");
    let config = dir.path().join("holdfast.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n{}", store_path.display(), engine_config_line()),
    )
    .unwrap();
    let run = |args: &[&str]| holdfast(dir.path()).arg("--config").arg(&config).args(args).output().unwrap();

    // Cut a database file in half, biggest first, until the store has lost entries that
    // verify can name (which file holds the entries differs per engine: sled's log, redb's
    // one file, fjall's journal or tables).
    let mut files: Vec<_> = files_under(&pristine)
        .into_iter()
        .filter(|f| is_database(f.strip_prefix(&pristine).unwrap()))
        .map(|f| (std::fs::metadata(&f).unwrap().len(), f))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut tried = Vec::new();
    let damaged = files.iter().find(|(_, file)| {
        let _ = std::fs::remove_dir_all(&store_path);
        copy_tree(&pristine, &store_path);
        let relative = file.strip_prefix(&pristine).unwrap();
        apply(&store_path.join(relative), Damage::Truncate(0.5));
        let verify = run(&["cache", "verify"]);
        let said = String::from_utf8_lossy(&verify.stderr);
        tried.push(format!(
            "{}: verify exit {:?}: {}",
            relative.display(),
            verify.status.code(),
            said.lines().last().unwrap_or("")
        ));
        verify.status.code() == Some(3) && String::from_utf8_lossy(&verify.stdout).contains("missing")
    });
    assert!(
        damaged.is_some(),
        "no truncation of a database file left a store whose lost entries verify names (so `cache repair` \
         has nothing to work on):\n{}",
        tried.join("\n")
    );

    // Bounded: a serve that starts on this store is the failure, not a hang.
    let mut serve = holdfast(dir.path())
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while serve.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = serve.kill();
            let _ = serve.wait();
            panic!("serve started on a store that lost entries");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let serve = serve.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert_eq!(serve.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has lost entries") && stderr.contains("holdfast cache repair"), "{stderr}");

    let repair = run(&["cache", "repair", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&repair.stdout).unwrap();
    assert_eq!(repair.status.code(), Some(0), "{report}");
    let (kept, lost) = (report["kept"].as_u64().unwrap(), report["lost"].as_u64().unwrap());
    assert!(lost > 0 && kept + lost == ENTRIES as u64, "{report}");

    let verify = run(&["cache", "verify"]);
    assert_eq!(verify.status.code(), Some(0), "after repair: {}", String::from_utf8_lossy(&verify.stdout));
    let server = super::Server::start(dir.path(), &config).expect("a repaired store serves");
    server.kill9();
}
