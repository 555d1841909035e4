//! A keyring belongs to one store: another store's keyring file is refused by name, whether or
//! not the secret given unlocks it, and a wrong secret for the store's own keyring still says so.

use holdfast::secret::StoreSecret;
use holdfast::store::keyring::{Keyring, KeyringError};
use holdfast::store::{Store, StoreOpenError, StoreOptions};

use crate::common::*;

fn secret(text: &str) -> StoreSecret {
    StoreSecret::passphrase(text).unwrap()
}

/// Two stores in one temp dir: `ours` under `PASSPHRASE`, `theirs` under `their_passphrase`,
/// each with one entry.
fn two_stores(their_passphrase: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    for (path, pass) in [(&ours, PASSPHRASE), (&theirs, their_passphrase)] {
        let store = Store::open(path, &secret(pass), create_options()).unwrap();
        let (address, request) = chat_request(&store, "a prompt");
        store.put(&address, &record(request, "an answer")).unwrap();
    }
    (dir, ours, theirs)
}

fn assert_foreign(err: StoreOpenError) {
    assert!(matches!(err, StoreOpenError::ForeignKeyring { .. }), "{err:?}");
    assert!(err.to_string().contains("belongs to another store"), "{err}");
}

#[test]
fn another_stores_keyring_with_the_same_passphrase_is_refused_as_foreign() {
    let (dir, ours, theirs) = two_stores(PASSPHRASE);
    std::fs::copy(theirs.join("keyring"), ours.join("keyring")).unwrap();
    let before = read_tree(dir.path());
    assert_foreign(Store::open(&ours, &passphrase(), StoreOptions::default()).unwrap_err());
    assert!(read_tree(dir.path()) == before, "refusing must not write");
}

#[test]
fn another_stores_keyring_that_the_passphrase_does_not_unlock_is_refused_as_foreign() {
    let (dir, ours, theirs) = two_stores("their own passphrase");
    std::fs::copy(theirs.join("keyring"), ours.join("keyring")).unwrap();
    let before = read_tree(dir.path());
    // Our passphrase does not unlock their keyring: still named as theirs, not a wrong secret.
    assert_foreign(Store::open(&ours, &passphrase(), StoreOptions::default()).unwrap_err());
    // Theirs does unlock it: refused as foreign too.
    assert_foreign(Store::open(&ours, &secret("their own passphrase"), StoreOptions::default()).unwrap_err());
    assert!(read_tree(dir.path()) == before, "refusing must not write");
    // Their store itself is unharmed and still opens with its own passphrase.
    Store::open(&theirs, &secret("their own passphrase"), StoreOptions::default()).unwrap();
}

#[test]
fn a_wrong_passphrase_for_the_stores_own_keyring_still_says_wrong_passphrase() {
    let (dir, ours, _) = two_stores("their own passphrase");
    let before = read_tree(dir.path());
    let err = Store::open(&ours, &secret("not the passphrase"), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreOpenError::Keyring(KeyringError::WrongSecret { .. })), "{err:?}");
    assert!(err.to_string().starts_with("wrong passphrase or key"), "{err}");
    assert!(read_tree(dir.path()) == before, "a wrong passphrase must leave the store byte-for-byte unchanged");
}

#[test]
fn the_keyrings_identity_is_in_its_clear_header_and_matches_its_keys() {
    let (_dir, ours, theirs) = two_stores(PASSPHRASE);
    let store = Store::open(&ours, &passphrase(), StoreOptions::default()).unwrap();
    let clear = Keyring::file_identity(&ours.join("keyring")).expect("format 2 keeps the identity in the clear");
    assert_eq!(clear, store.keyring().snapshot().identity());
    assert_ne!(Some(clear), Keyring::file_identity(&theirs.join("keyring")));
}
