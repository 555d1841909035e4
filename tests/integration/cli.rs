//! The `holdfast` binary as an operator runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::PASSPHRASE;

fn holdfast(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    c.current_dir(dir).env_remove("HOLDFAST_PASSPHRASE").env_remove("HOLDFAST_KEY").env_remove("HOLDFAST_CONFIG");
    c.env("RUST_LOG", "info");
    c
}

#[test]
fn serve_refuses_to_start_without_a_secret_and_says_how_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = holdfast(dir.path()).arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HOLDFAST_PASSPHRASE") && stderr.contains("--passphrase-file"), "{stderr}");
    assert!(!dir.path().join("holdfast-data").exists(), "nothing may be created without a secret");
}

#[test]
fn a_bad_config_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("h.toml"), "listen = \"127.0.0.1:0\"\n\n[cache]\nttl = \"1h\"\nmood = \"happy\"\n")
        .unwrap();
    let out =
        holdfast(dir.path()).args(["--config", "h.toml", "serve"]).env("HOLDFAST_PASSPHRASE", "x").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mood") && stderr.contains("line 5") && stderr.contains("h.toml"), "{stderr}");
}

#[test]
fn usage_errors_exit_2_and_help_answers() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(holdfast(dir.path()).arg("frobnicate").output().unwrap().status.code(), Some(2));
    let help = holdfast(dir.path()).args(["serve", "--help"]).output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("store.path"));
}

#[test]
fn first_run_creates_the_store_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("holdfast.toml"), "listen = \"127.0.0.1:0\"\n").unwrap();
    let mut child = holdfast(dir.path())
        .arg("serve")
        .env("HOLDFAST_PASSPHRASE", PASSPHRASE)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = Instant::now();
    let url = loop {
        let line = lines.next().expect("server exited before listening").unwrap();
        assert!(!line.contains(PASSPHRASE), "the passphrase reached the log");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    };
    let health = raw_http::get(&format!("{url}/healthz"));
    assert_eq!(health.as_deref(), Some("ok\n"));
    assert!(dir.path().join("holdfast-data/HOLDFAST").is_file(), "the store was not created");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM should end a clean shutdown, got {status}");

    // The same store with the wrong passphrase: a clear refusal.
    let out = holdfast(dir.path()).arg("serve").env("HOLDFAST_PASSPHRASE", "wrong").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase or key"));
}

/// A minimal blocking GET over a plain TCP socket (the test needs no async runtime here).
mod raw_http {
    use std::io::{Read, Write};

    pub fn get(url: &str) -> Option<String> {
        let rest = url.strip_prefix("http://")?;
        let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        let mut stream = std::net::TcpStream::connect(host).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
    }
}

#[test]
fn the_outage_drill_passes_and_reports_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = holdfast(dir.path()).arg("drill").output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("drill passed: 4 of 4 steps passed"), "{report}");
    assert_eq!(report.matches("cache=stale").count(), 4, "{report}");
    assert_eq!(report.matches("provider=backup").count(), 3, "{report}");
    assert!(report.contains("0 contain it"), "{report}");
    assert!(report.contains("circuit breaker: open"), "{report}");
}

#[test]
fn version_names_the_build_and_the_formats_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = holdfast(dir.path()).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(&format!("holdfast {}", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(text.contains(&format!("store format {}", holdfast::store::FORMAT_VERSION)), "{text}");
    assert!(
        text.contains(&format!("cache-key normalization {}", holdfast::cache_key::normalize::NORMALIZATION_VERSION))
    );
    assert!(text.contains(&format!("export bundle format {}", holdfast::ops::bundle::BUNDLE_FORMAT)), "{text}");
}
