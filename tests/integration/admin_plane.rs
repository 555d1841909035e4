//! The admin plane apart from the proxy, through the real binary: its own listener (a Unix
//! socket, or TLS), the token checked before the body, bundles streamed both ways, and a
//! blank token refused at start-up.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use holdfast::store::Store;

use crate::common::*;

const TOKEN: &str = "admin-plane-test-token";

fn cli(dir: &Path, server: &str, token: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    c.current_dir(dir)
        .arg("--server")
        .arg(server)
        .args(args)
        .env("HOLDFAST_ADMIN_TOKEN", token)
        .env("HOLDFAST_BUNDLE_PASSPHRASE", "bundle passphrase for the plane")
        .env_remove("HOLDFAST_PASSPHRASE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A store holding `n` answers of about 1 MiB each, incompressible.
fn big_store(path: &Path, n: usize) {
    let store = Store::open(path, &passphrase(), create_options()).unwrap();
    for i in 0..n {
        let (address, request) = chat_request(&store, &format!("big answer {i}"));
        let mut noise = vec![0u8; 768 * 1024];
        blake3::Hasher::new().update(&i.to_le_bytes()).finalize_xof().fill(&mut noise);
        let answer = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &noise);
        store.put(&address, &record(request, &answer)).unwrap();
    }
}

#[test]
fn a_50_mib_bundle_moves_between_servers_over_unix_sockets_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = (dir.path().join("source"), dir.path().join("target"));
    let t = Instant::now();
    big_store(&source, 50);
    eprintln!("store built in {:?}", t.elapsed());
    Store::open(&target, &passphrase(), create_options()).unwrap();
    let socket_a = dir.path().join("a.sock");
    let socket_b = dir.path().join("b.sock");
    let conf = |socket: &Path| {
        format!(
            "listen = \"127.0.0.1:0\"\n[store]\ncache_memory = \"8MiB\"\n[admin]\nlisten = \"{}\"\nmax_bundle_bytes = \"200MiB\"\n",
            socket.display()
        )
    };
    let work_a = tempfile::tempdir().unwrap();
    let work_b = tempfile::tempdir().unwrap();
    let a = serve_with_admin(work_a.path(), &source, &conf(&socket_a), TOKEN);
    let b = serve_with_admin(work_b.path(), &target, &conf(&socket_b), TOKEN);
    assert_eq!(a.admin, format!("unix:{}", socket_a.display()));

    // The proxy's own port no longer serves the admin API.
    let on_proxy = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["--server", &a.proxy, "keys", "list"])
        .env("HOLDFAST_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!on_proxy.status.success(), "the proxy port still answers admin commands");

    let bundle = dir.path().join("moved.bundle");
    let before_a = peak_rss_kib(a.child.id());
    let t = Instant::now();
    let exported =
        ok(&cli(dir.path(), &a.admin, TOKEN, &["cache", "export", "--out", bundle.to_str().unwrap(), "--json"], &[]));
    eprintln!("exported in {:?}", t.elapsed());
    let size = std::fs::metadata(&bundle).unwrap().len();
    assert!(size > 50 << 20, "bundle of {size} bytes");
    assert_eq!(exported["exported"], 50, "{exported}");
    let before_b = peak_rss_kib(b.child.id());
    let imported = ok(&cli(dir.path(), &b.admin, TOKEN, &["cache", "import", bundle.to_str().unwrap(), "--json"], &[]));
    assert_eq!(imported["imported"], 50, "{imported}");
    eprintln!("imported in {:?}", t.elapsed());
    let (growth_a, growth_b) = (peak_rss_kib(a.child.id()) - before_a, peak_rss_kib(b.child.id()) - before_b);
    eprintln!("peak RSS growth: export {growth_a} KiB, import {growth_b} KiB for a {} KiB bundle", size / 1024);
    // Held whole, the bundle, its base64 and the JSON around it came to more than three times
    // its size; entries now pass one at a time, and what remains is the engine's own buffers.
    let bound = 128 * 1024;
    assert!(growth_a < bound && growth_b < bound, "export grew {growth_a} KiB, import {growth_b} KiB");

    // A wrong token is refused before the body is read: a huge upload gets its 401 at once.
    let wrong = cli(dir.path(), &b.admin, "not-the-token", &["cache", "import", bundle.to_str().unwrap()], &[]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong or missing admin token"));
}

#[test]
fn the_admin_listener_speaks_tls_and_a_blank_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let store = dir.path().join("store");
    Store::open(&store, &passphrase(), create_options()).unwrap();
    let served = serve_with_admin(dir.path(), &store, &config, TOKEN);
    assert_eq!(served.admin, format!("https://127.0.0.1:{port}"));
    let ca = cert.to_str().unwrap();
    let listed = ok(&cli(dir.path(), &served.admin, TOKEN, &["keys", "list", "--json"], &[("HOLDFAST_SERVER_CA", ca)]));
    assert!(listed.to_string().contains("active"), "{listed}");
    // Plain HTTP to the TLS port gets nowhere, and an untrusted certificate is refused.
    let plain = cli(dir.path(), &served.admin.replace("https", "http"), TOKEN, &["keys", "list"], &[]);
    assert!(!plain.status.success());
    let untrusted = cli(dir.path(), &served.admin, TOKEN, &["keys", "list"], &[]);
    assert!(!untrusted.status.success());
    drop(served);

    let blank = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .current_dir(dir.path())
        .arg("serve")
        .env("HOLDFAST_PASSPHRASE", PASSPHRASE)
        .env("HOLDFAST_STORE_PATH", &store)
        .env("HOLDFAST_ADMIN_TOKEN", "   ")
        .output()
        .unwrap();
    assert_eq!(blank.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&blank.stderr).contains("HOLDFAST_ADMIN_TOKEN is blank"));
}

#[test]
fn an_open_relay_on_the_operators_key_is_warned_about_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = "listen = \"0.0.0.0:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[providers]]\nname = \"openai\"\napi = \"openai\"\n\
                  base_url = \"http://127.0.0.1:9\"\nmodels = [\"gpt-*\"]\napi_key_env = \"PLANE_TEST_KEY\"\n";
    std::fs::write(dir.path().join("holdfast.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .current_dir(dir.path())
        .arg("serve")
        .env("HOLDFAST_PASSPHRASE", PASSPHRASE)
        .env("PLANE_TEST_KEY", "sk-operator-secret")
        .env_remove("HOLDFAST_ADMIN_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut warned = false;
    for line in lines.by_ref().take(40) {
        let line = line.unwrap();
        assert!(!line.contains("sk-operator-secret"), "the provider key reached the log");
        if line.contains("anyone who can reach it can spend them") {
            warned = true;
            break;
        }
        if line.contains("admin API off") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "no open-relay warning at start-up");
}

/// The NUL-separated `NAME=value` pairs a process's environment holds now (Linux).
fn environ_of(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap()).replace('\0', "\n")
}

#[tokio::test]
async fn secret_variables_are_gone_from_the_servers_environment_but_still_in_use() {
    let upstream = crate::fake_upstream::FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[providers]]\nname = \"openai\"\n\
         api = \"openai\"\nbase_url = \"{}\"\nmodels = [\"fake-*\"]\napi_key_env = \"ENVIRON_TEST_PROVIDER_KEY\"\n",
        upstream.base_url()
    );
    std::fs::write(dir.path().join("holdfast.toml"), config).unwrap();
    let secrets = [
        ("HOLDFAST_PASSPHRASE", PASSPHRASE),
        ("HOLDFAST_ADMIN_TOKEN", "environ-test-admin-token"),
        // Not used by this (embedded) store, but a Redis URL may carry a password.
        ("HOLDFAST_STORE_URL", "redis://:environ-test-redis-password@127.0.0.1:1/0"),
        ("ENVIRON_TEST_PROVIDER_KEY", "sk-environ-test-provider-key"),
    ];
    let mut command = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    command
        .current_dir(dir.path())
        .arg("serve")
        .env("HOLDFAST_STORE_PATH", dir.path().join("store"))
        .env("ENVIRON_TEST_NOT_SECRET", "stays-in-the-environment")
        .env_remove("HOLDFAST_LISTEN")
        .env_remove("HOLDFAST_ADMIN_LISTEN")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (name, value) in secrets {
        command.env(name, value);
    }
    let child = command.spawn().unwrap();
    let mut served = Served { child, proxy: String::new(), admin: String::new() };
    let mut lines = BufReader::new(served.child.stderr.take().unwrap()).lines();
    while served.proxy.is_empty() || served.admin.is_empty() {
        let line = lines.next().expect("server exited before listening").unwrap();
        if let Some(rest) = line.split("admin API on ").nth(1) {
            served.admin = rest.split(": ").next().unwrap().to_owned();
        }
        if let Some(rest) = line.split("listening on ").nth(1) {
            served.proxy = rest.split_whitespace().next().unwrap().to_owned();
        }
    }
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));

    let environ = environ_of(served.child.id());
    assert!(environ.contains("ENVIRON_TEST_NOT_SECRET=stays-in-the-environment"), "{environ}");
    for (name, value) in secrets {
        assert!(!environ.contains(value), "the value of {name} is still in /proc/<pid>/environ");
        assert!(!environ.contains(&format!("{name}=")), "{name} is still in /proc/<pid>/environ");
    }

    // Read before they were removed: the provider key is sent, the admin token lets a command in.
    let answer = http()
        .post(format!("{}/v1/chat/completions", served.proxy))
        .json(&serde_json::json!({"model": "fake-gpt", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    let sent = upstream.last_headers().unwrap();
    assert_eq!(sent["authorization"], "Bearer sk-environ-test-provider-key");
    let keys = cli(dir.path(), &served.admin, "environ-test-admin-token", &["keys", "list", "--json"], &[]);
    ok(&keys);
}
