//! Every admin command through the built binary, against a real store in a temp dir; and key
//! rotation through a running server while clients are served.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use holdfast::ops::admin::{Actor, Admin, AdminRequest};
use holdfast::store::{Backend, SledBackend, Store, StoreOptions};
use serde_json::Value;

use crate::common::*;

struct Fixture {
    dir: tempfile::TempDir,
    store: PathBuf,
    /// (address hex, prompt) of every entry put in.
    entries: Vec<(String, String)>,
}

/// A store with `n` entries, two models, made through the library; then closed. The first
/// half were stored 40 days ago.
fn fixture(n: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, &passphrase(), create_options()).unwrap();
    let mut entries = Vec::new();
    for i in 0..n {
        let prompt = format!("audit prompt number {i}");
        let (address, request) = chat_request(&store, &prompt);
        let mut rec = record(request, &format!("answer {i}"));
        if i % 2 == 1 {
            rec.model = "gpt-4o".into();
        }
        let stored = if i < n / 2 { holdfast::store::now_ms() - 40 * 86_400_000 } else { holdfast::store::now_ms() };
        store.put_as_of(&address, &rec, stored, stored, 0).unwrap();
        entries.push((address.to_hex(), prompt));
    }
    drop(store);
    Fixture { dir, store: path, entries }
}

fn holdfast(f: &Fixture, args: &[&str]) -> Output {
    holdfast_with(f.dir.path(), &f.store, PASSPHRASE, args, &[])
}

/// Every entry's sealed bytes, read behind the store's back (the store must be closed).
fn sealed_values(store: &Path) -> Vec<Vec<u8>> {
    let backend = SledBackend::open(&store.join("db"), 1 << 20).unwrap_or_else(|_| panic!("open db"));
    let mut values = Vec::new();
    for (address, _) in backend.scan_meta(None, usize::MAX).unwrap() {
        values.push(backend.get_value(&address).unwrap().unwrap());
    }
    values
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn init_creates_once_and_migrate_reports_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("fresh");
    let out = holdfast_with(dir.path(), &store, PASSPHRASE, &["init"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(store.join("HOLDFAST").is_file());
    let again = holdfast_with(dir.path(), &store, PASSPHRASE, &["init"], &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("already exists"));
    let migrate = holdfast_with(dir.path(), &store, PASSPHRASE, &["migrate", "--dry-run"], &[]);
    assert!(text(&migrate).contains("format 1, the current format; nothing to do"), "{}", text(&migrate));
}

#[test]
fn audit_list_show_search_and_export() {
    let f = fixture(6);
    let all = json_of(&holdfast(&f, &["audit", "list", "--json"]));
    assert_eq!(all["entries"].as_array().unwrap().len(), 6);
    let row = &all["entries"][0];
    assert!(row["preview"].as_str().unwrap().starts_with("audit prompt number"));
    let only = json_of(&holdfast(&f, &["audit", "list", "--model", "gpt-4o", "--json"]));
    assert_eq!(only["entries"].as_array().unwrap().len(), 3);
    let recent = json_of(&holdfast(&f, &["audit", "list", "--since", "1h", "--json"]));
    assert_eq!(recent["entries"].as_array().unwrap().len(), 3, "half the fixture was stored 40 days ago");

    let (address, prompt) = &f.entries[4];
    let shown = json_of(&holdfast(&f, &["audit", "show", address, "--json"]));
    assert_eq!(shown["request"]["messages"][0]["content"], prompt.as_str());
    assert_eq!(shown["response"]["choices"][0]["message"]["content"], "answer 4");
    let table = text(&holdfast(&f, &["audit", "list"]));
    assert!(table.contains("ADDRESS") && table.contains("6 entries"), "{table}");

    let found = json_of(&holdfast(&f, &["audit", "search", "NUMBER 4", "--json"]));
    assert_eq!(found["entries"].as_array().unwrap().len(), 1);
    assert_eq!(found["entries"][0]["address"], address.as_str());

    let out_file = f.dir.path().join("export.jsonl");
    let out = holdfast(&f, &["audit", "export", "--out", out_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<Value> =
        std::fs::read_to_string(&out_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert!(lines.iter().all(|l| l["response"]["choices"][0]["message"]["content"].is_string()));
    let again = holdfast(&f, &["audit", "export", "--out", out_file.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1), "an export must never overwrite a file");

    let missing = holdfast(&f, &["audit", "show", &"0".repeat(64)]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing).contains("audit list"), "the error should say what to do: {}", text(&missing));
}

#[test]
fn the_access_trail_records_reads_and_names_an_edited_entry() {
    let f = fixture(3);
    let (address, _) = &f.entries[0];
    holdfast(&f, &["audit", "show", address]);
    holdfast(&f, &["audit", "search", "prompt"]);
    holdfast(&f, &["cache", "stats"]);
    let trail = json_of(&holdfast(&f, &["audit", "trail", "--verify", "--json"]));
    let entries = trail["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["command"], format!("audit show {address}"));
    assert_eq!(entries[0]["addresses"][0], address.as_str());
    assert!(entries[0]["actor"].as_str().unwrap().starts_with("cli:"));
    assert_eq!(entries[1]["count"], 3);
    assert!(trail["first_broken"].is_null());

    // Edit the first entry's recorded command: the chain breaks exactly there.
    let path = f.store.join("trail.jsonl");
    let text_before = std::fs::read_to_string(&path).unwrap();
    let edited = text_before.replacen("audit show", "audit list", 1);
    std::fs::write(&path, edited).unwrap();
    let out = holdfast(&f, &["audit", "trail", "--verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("VERIFICATION FAILED at line 1"), "{}", text(&out));

    // A truncated trail (its head file no longer matches) stops commands that would need
    // recording, before they act. (A mid-chain edit is found by --verify, above: opening the
    // trail checks only its end, to stay cheap.)
    std::fs::write(&path, &text_before).unwrap();
    let lines: Vec<&str> = text_before.lines().collect();
    std::fs::write(&path, format!("{}\n", lines[..lines.len() - 1].join("\n"))).unwrap();
    let purge = holdfast(&f, &["cache", "purge", "--all", "--yes"]);
    assert_eq!(purge.status.code(), Some(1), "{}", text(&purge));
    assert_eq!(json_of(&holdfast(&f, &["keys", "list", "--json"]))["keys"][0]["records"], 3, "nothing was purged");

    // Deleting the whole trail, which the chain alone cannot show, is caught by the store's count.
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_file(f.store.join("trail.jsonl.head"));
    let out = holdfast(&f, &["audit", "trail", "--verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("deleted"), "{}", text(&out));
}

#[test]
fn a_store_that_never_logged_verifies_an_empty_trail() {
    let f = fixture(1);
    let out = holdfast(&f, &["audit", "trail", "--verify", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json_of(&out)["count"], 0);
}

#[test]
fn keys_rotate_reencrypt_retire_and_change_passphrase() {
    let f = fixture(5);
    let keys = json_of(&holdfast(&f, &["keys", "list", "--json"]));
    assert_eq!(keys["keys"][0]["status"], "active");
    assert_eq!(keys["keys"][0]["records"], 5);

    json_of(&holdfast(&f, &["keys", "rotate", "--json"]));
    let keys = json_of(&holdfast(&f, &["keys", "list", "--json"]));
    assert_eq!(keys["keys"][0]["status"], "retired");
    assert_eq!(keys["keys"][1]["status"], "active");
    let refused = holdfast(&f, &["keys", "retire", "1"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).contains("still seals 5 records") && text(&refused).contains("--reencrypt"),
        "{}",
        text(&refused)
    );

    let rotated = json_of(&holdfast(&f, &["keys", "rotate", "--reencrypt", "--json"]));
    assert_eq!((rotated["active"].as_u64(), rotated["resealed"].as_u64()), (Some(3), Some(5)));
    json_of(&holdfast(&f, &["keys", "retire", "1", "--json"]));
    json_of(&holdfast(&f, &["keys", "retire", "2", "--json"]));
    let keys = json_of(&holdfast(&f, &["keys", "list", "--json"]));
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    assert_eq!((keys["keys"][0]["id"].as_u64(), keys["keys"][0]["records"].as_u64()), (Some(3), Some(5)));
    assert!(text(&holdfast(&f, &["keys", "retire", "3"])).contains("active key"));

    // Passphrase change re-wraps the keyring only: no sealed record is touched.
    let records_before = sealed_values(&f.store);
    let out = holdfast_with(
        f.dir.path(),
        &f.store,
        PASSPHRASE,
        &["keys", "passphrase"],
        &[("HOLDFAST_NEW_PASSPHRASE", "a brand new passphrase")],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(sealed_values(&f.store) == records_before, "a passphrase change must not re-seal records");
    let old = holdfast(&f, &["cache", "stats"]);
    assert!(text(&old).contains("wrong passphrase or key"));
    let new = holdfast_with(f.dir.path(), &f.store, "a brand new passphrase", &["cache", "verify"], &[]);
    assert!(new.status.success(), "{}", text(&new));
    assert!(text(&new).contains("checked 5 entries: 0 bad"));
}

#[test]
fn a_wrong_passphrase_leaves_the_store_byte_for_byte_unchanged() {
    let f = fixture(2);
    let before = read_tree(&f.store);
    for args in
        [&["cache", "stats"][..], &["keys", "rotate"], &["cache", "purge", "--all", "--yes"], &["audit", "list"]]
    {
        let out = holdfast_with(f.dir.path(), &f.store, "wrong passphrase", args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out).contains("wrong passphrase or key"), "{}", text(&out));
    }
    assert!(read_tree(&f.store) == before, "the store changed");
}

#[test]
fn cache_stats_verify_and_purge() {
    let f = fixture(6);
    let stats = json_of(&holdfast(&f, &["cache", "stats", "--json"]));
    assert_eq!(stats["entries"], 6);
    assert_eq!(stats["by_model"]["gpt-4o"], 3);
    assert_eq!(stats["by_provider"]["openai"], 6);
    assert!(text(&holdfast(&f, &["cache", "verify"])).contains("checked 6 entries: 0 bad"));

    // Tamper with one record behind the store's back.
    let (victim, _) = &f.entries[2];
    {
        let backend = SledBackend::open(&f.store.join("db"), 1 << 20).unwrap_or_else(|_| panic!("open db"));
        let raw: holdfast::cache_key::address::Address = victim.parse().unwrap();
        let mut value = backend.get_value(raw.as_bytes()).unwrap().unwrap();
        let meta = backend.get_meta(raw.as_bytes()).unwrap().unwrap();
        value[30] ^= 1;
        backend.put_entry(raw.as_bytes(), &meta, &value, &backend.get_tally().unwrap().unwrap()).unwrap();
        backend.flush().unwrap();
    }
    let out = holdfast(&f, &["cache", "verify"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains(&format!("TAMPERED OR CORRUPT {victim}")), "{}", text(&out));

    let refused = holdfast(&f, &["cache", "purge", "--all"]);
    assert_eq!(refused.status.code(), Some(1), "no terminal and no --yes: refuse");
    let purged = json_of(&holdfast(&f, &["cache", "purge", "--address", victim, "--yes", "--json"]));
    assert_eq!(purged["purged"], 1);
    let purged = json_of(&holdfast(&f, &["cache", "purge", "--model", "gpt-4o", "--yes", "--json"]));
    assert_eq!(purged["purged"], 3);
    assert_eq!(json_of(&holdfast(&f, &["cache", "stats", "--json"]))["entries"], 2);
    let purged = json_of(&holdfast(&f, &["cache", "purge", "--older-than", "30d", "--yes", "--json"]));
    assert_eq!(purged["purged"], 1, "of the two left, one was stored 40 days ago");
    assert!(text(&holdfast(&f, &["cache", "verify"])).contains("checked 1 entries"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_a_fresh_store_serves_the_same_answers() {
    let upstream = crate::fake_upstream::FakeUpstream::start().await;
    let source = start_proxy(config_for(&upstream.base_url())).await;
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "portable"}]});
    let url = |p: &Proxy| format!("{}/v1/chat/completions", p.url);
    let live: Value =
        http().post(url(&source)).bearer_auth("sk-tenant").json(&body).send().await.unwrap().json().await.unwrap();
    let source_path = source.state.store.path().to_owned();
    let bundle_dir = tempfile::tempdir().unwrap();
    let bundle = bundle_dir.path().join("seed.hfb");
    let admin = Admin::open(source.state.store.clone()).unwrap();
    let pass = holdfast::ops::admin::SecretText(zeroize::Zeroizing::new("bundle pass".into()));
    let out = admin
        .execute(
            &AdminRequest::CacheExport { passphrase: pass.clone() },
            &Actor::local(),
            &|_, _| {},
            Some(&bundle),
            None,
        )
        .unwrap();
    assert_eq!(out.result["exported"], 1);
    drop(admin);
    drop(source);
    let _ = source_path;

    // A fresh store, another passphrase, another address key: import through the binary.
    let target_dir = tempfile::tempdir().unwrap();
    let target = target_dir.path().join("store");
    let out = holdfast_with(target_dir.path(), &target, "another passphrase", &["init"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = holdfast_with(
        target_dir.path(),
        &target,
        "another passphrase",
        &["cache", "import", bundle.to_str().unwrap(), "--json"],
        &[("HOLDFAST_BUNDLE_PASSPHRASE", "bundle pass")],
    );
    let result = json_of(&out);
    assert_eq!((result["imported"].as_u64(), result["adopted_tenant_key"].as_bool()), (Some(1), Some(true)));
    let wrong = holdfast_with(
        target_dir.path(),
        &target,
        "another passphrase",
        &["cache", "import", bundle.to_str().unwrap()],
        &[("HOLDFAST_BUNDLE_PASSPHRASE", "not it")],
    );
    assert_eq!(wrong.status.code(), Some(1));

    let store =
        Store::open(&target, &StoreSecret::passphrase("another passphrase").unwrap(), StoreOptions::default()).unwrap();
    let replica = start_proxy_with(config_for(&upstream.base_url()), store, target_dir).await;
    let replayed = http()
        .post(url(&replica))
        .bearer_auth("sk-tenant")
        .header("x-holdfast-mode", "replay")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 200, "the imported answer is found under the tenant's request");
    assert_eq!(replayed.json::<Value>().await.unwrap(), live);
    let other = http()
        .post(url(&replica))
        .bearer_auth("sk-other")
        .header("x-holdfast-mode", "replay")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "tenancy survives the move");
}

use holdfast::secret::StoreSecret;

#[test]
fn an_interrupted_reencryption_resumes_without_a_third_key() {
    let f = fixture(300);
    let store = Arc::new(Store::open(&f.store, &passphrase(), StoreOptions::default()).unwrap());
    let admin = Admin::open(store.clone()).unwrap();
    // Kill the job midway: the progress callback panics once a third is done.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        admin.execute(
            &AdminRequest::KeysRotate { reencrypt: true },
            &Actor::local(),
            &|done, _| assert!(done < 100, "simulated kill"),
            None,
            None,
        )
    }));
    assert!(outcome.is_err(), "the job should have been interrupted");
    let counts = store.count_by_key().unwrap();
    assert!(counts.get(&2).copied().unwrap_or(0) > 0 && counts.get(&1).copied().unwrap_or(0) > 0, "{counts:?}");

    let resumed =
        admin.execute(&AdminRequest::KeysRotate { reencrypt: true }, &Actor::local(), &|_, _| {}, None, None).unwrap();
    assert_eq!(resumed.result["resumed"], true);
    assert_eq!(resumed.result["active"], 2, "resuming must not rotate again");
    let counts = store.count_by_key().unwrap();
    assert_eq!(counts.get(&2).copied(), Some(300), "{counts:?}");
    for (address, _) in &f.entries {
        assert!(store.get(&address.parse().unwrap()).unwrap().is_some(), "{address} unreadable after resume");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_with_reencrypt_through_the_server_while_it_serves() {
    let upstream = crate::fake_upstream::FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store"), &passphrase(), create_options()).unwrap());
    let admin = Arc::new(Admin::open(store.clone()).unwrap());
    let config = config_for(&upstream.base_url());
    let upstreams = holdfast::proxy::upstream::Upstreams::new(&config.providers, |_| None).unwrap();
    let state = holdfast::proxy::AppState::new(config, store.clone(), upstreams);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(holdfast::proxy::run(listener, state, std::future::pending()));
    let admin_url = crate::common::start_admin(admin, "test-admin-token").await;
    let prompts: Vec<String> = (0..200).map(|i| format!("rotating {i}")).collect();
    let chat = |p: &str| serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": p}]});
    for p in &prompts {
        let r =
            http().post(format!("{base}/v1/chat/completions")).bearer_auth("sk-t").json(&chat(p)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // Clients keep coming (half of them from the store, half new) while the rotation runs.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for w in 0..4 {
        let (stop, failures, served, base, prompts) =
            (stop.clone(), failures.clone(), served.clone(), base.clone(), prompts.clone());
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let p = if i % 2 == 0 { prompts[(w * 31 + i) % prompts.len()].clone() } else { format!("new {w} {i}") };
                let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": p}]});
                let r = http().post(format!("{base}/v1/chat/completions")).bearer_auth("sk-t").json(&body).send().await;
                match r {
                    Ok(r) if r.status() == 200 => served.fetch_add(1, Ordering::Relaxed),
                    _ => failures.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
            }
        }));
    }
    let cli_dir = tempfile::tempdir().unwrap();
    let admin_for_cli = admin_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .current_dir(cli_dir.path())
            .args(["--server", &admin_for_cli, "keys", "rotate", "--reencrypt", "--json"])
            .env("HOLDFAST_ADMIN_TOKEN", "test-admin-token")
            .env_remove("HOLDFAST_PASSPHRASE")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let result = json_of(&out);
    assert_eq!(result["active"], 2);
    // Entries a client refreshed meanwhile were written under the new key directly; the
    // compare-and-swap let those fresh writes win, so fewer than 200 needed re-sealing.
    assert!(result["resealed"].as_u64().unwrap() > 0, "{result}");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "requests failed during rotation");
    assert!(served.load(Ordering::Relaxed) > 0);
    let counts = store.count_by_key().unwrap();
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), vec![2], "every record under the new key: {counts:?}");
    let mut unreadable = 0;
    store
        .for_each_meta(|a, _| {
            if !matches!(store.get(&a), Ok(Some(_))) {
                unreadable += 1;
            }
        })
        .unwrap();
    assert_eq!(unreadable, 0);

    // The wrong token is refused and the trail names the token holder, not the token.
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["--server", &admin_url, "keys", "list"])
        .env("HOLDFAST_ADMIN_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("wrong or missing admin token"));
    let trail = std::fs::read_to_string(store.path().join("trail.jsonl")).unwrap();
    assert!(trail.contains("admin-token:") && !trail.contains("test-admin-token"), "{trail}");
}

#[test]
fn a_changing_command_killed_half_way_still_shows_in_the_trail() {
    // A bundle big enough that its import takes a while through the binary.
    let f = fixture(3000);
    let bundle = f.dir.path().join("seed.hfb");
    let pass = [("HOLDFAST_BUNDLE_PASSPHRASE", "bundle pass")];
    let out = holdfast_with(
        f.dir.path(),
        &f.store,
        PASSPHRASE,
        &["cache", "export", "--out", bundle.to_str().unwrap()],
        &pass,
    );
    assert!(out.status.success(), "{}", text(&out));
    let target_dir = tempfile::tempdir().unwrap();
    let target = target_dir.path().join("store");
    assert!(holdfast_with(target_dir.path(), &target, PASSPHRASE, &["init"], &[]).status.success());

    let mut import = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .current_dir(target_dir.path())
        .args(["cache", "import", bundle.to_str().unwrap()])
        .env("HOLDFAST_PASSPHRASE", PASSPHRASE)
        .env("HOLDFAST_STORE_PATH", &target)
        .env("HOLDFAST_BUNDLE_PASSPHRASE", "bundle pass")
        .env_remove("HOLDFAST_SERVER")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as its "started" entry is on disk, long before 3,000 entries are in.
    let trail_path = target.join("trail.jsonl");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&trail_path).is_ok_and(|t| t.contains("\"started\"")) {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "no started entry appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Past the head file's update too (a kill between the two is reported as an interrupted
    // append, which `audit trail --verify` tests elsewhere), yet long before the end.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(import.try_wait().unwrap().is_none(), "the import finished before it could be killed");
    import.kill().unwrap();
    let _ = import.wait();

    let trail =
        json_of(&holdfast_with(target_dir.path(), &target, PASSPHRASE, &["audit", "trail", "--verify", "--json"], &[]));
    assert!(trail["first_broken"].is_null(), "{trail}");
    let entries = trail["entries"].as_array().unwrap();
    let imports: Vec<&Value> = entries.iter().filter(|e| e["command"].as_str() == Some("cache import")).collect();
    assert_eq!(imports.len(), 1, "the killed import left exactly its started entry: {trail}");
    assert_eq!(imports[0]["outcome"], "started");
}
