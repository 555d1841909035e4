//! The engine a store was created with is the one it opens with: another configured engine is
//! a clear refusal that changes nothing, never an empty database beside the real one.

use holdfast::store::{Engine, Store, StoreOpenError, StoreOptions};

use super::{files_under, holdfast};
use crate::common::{create_options, engine_config_line, passphrase, test_engine};

#[test]
fn a_store_opened_with_another_engine_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(Store::open(&path, &passphrase(), create_options()).unwrap());
    let created = test_engine().unwrap_or_default();
    let before = crate::common::read_tree(&path);
    for other in Engine::ALL.into_iter().filter(|e| *e != created) {
        let options = StoreOptions { engine: Some(other), ..StoreOptions::default() };
        match Store::open(&path, &passphrase(), options) {
            Err(e @ StoreOpenError::EngineMismatch { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains(&format!("created with the {created} engine"))
                        && message.contains(&format!("store.engine = \"{created}\"")),
                    "{message}"
                );
            }
            other => panic!("opening a {created} store as {other:?} must be refused"),
        }
    }
    assert_eq!(crate::common::read_tree(&path), before, "a refused open must not write");
    // Without a configured engine the store opens with the one it records.
    drop(Store::open(&path, &passphrase(), StoreOptions::default()).unwrap());
    let marker = std::fs::read_to_string(path.join("HOLDFAST")).unwrap();
    assert_eq!(marker.contains("engine "), created != Engine::Sled, "{marker}");
}

#[test]
fn the_cli_names_the_engine_a_mismatched_store_needs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(Store::open(&path, &passphrase(), create_options()).unwrap());
    let created = test_engine().unwrap_or_default();
    let other = Engine::ALL.into_iter().find(|e| *e != created).unwrap();
    let config = dir.path().join("holdfast.toml");
    std::fs::write(&config, format!("[store]\npath = \"{}\"\nengine = \"{other}\"\n", path.display())).unwrap();
    let out = holdfast(dir.path()).arg("--config").arg(&config).args(["cache", "stats"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Either the engine is not in this build (config validation says so) or the store says
    // which engine it was created with.
    assert!(
        stderr.contains(&format!("store.engine = \"{created}\"")) || stderr.contains("is not in this build"),
        "{stderr}"
    );
    // The configured line the tests use opens the store.
    std::fs::write(&config, format!("[store]\npath = \"{}\"\n{}", path.display(), engine_config_line())).unwrap();
    let out = holdfast(dir.path()).arg("--config").arg(&config).args(["cache", "stats"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(files_under(&path).iter().all(|f| !f.starts_with(path.join("db")) || created == Engine::Sled));
}
