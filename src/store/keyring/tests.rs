//! The keyring's unit tests: unlocking, the wrapped format, seal accounting.

use super::file::{CHECKSUM_LEN, HEADER_LEN, IDENTITY_LEN};
use super::*;
use crate::secret::KEY_LEN;

/// Cheap Argon2 cost for unit tests; the integration tests use the defaults.
const FAST: KdfParams = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };

fn pass(p: &str) -> StoreSecret {
    StoreSecret::passphrase(p).unwrap()
}

#[test]
fn unlock_with_right_secret_gives_same_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let created = Keyring::create(&path, &pass("right one"), FAST).unwrap();
    let opened = Keyring::unlock(&path, &pass("right one")).unwrap();
    let (a, b) = (created.snapshot(), opened.snapshot());
    assert_eq!(a.infos(), b.infos());
    assert_eq!(a.address_key, b.address_key);
}

#[test]
fn wrong_secret_is_told_apart_from_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    Keyring::create(&path, &pass("right one"), FAST).unwrap();
    let before = fs::read(&path).unwrap();
    assert!(matches!(Keyring::unlock(&path, &pass("wrong one")), Err(KeyringError::WrongSecret { .. })));
    let raw = StoreSecret::RawKey(SecretKey::from_bytes([1; 32]));
    let err = Keyring::unlock(&path, &raw).unwrap_err();
    assert!(err.to_string().contains("locked with a passphrase"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before, "a failed unlock must not write");

    let mut bad = before.clone();
    bad[60] ^= 1;
    fs::write(&path, &bad).unwrap();
    assert!(matches!(Keyring::unlock(&path, &pass("right one")), Err(KeyringError::Corrupt { .. })));
    fs::write(&path, b"hello").unwrap();
    assert!(matches!(Keyring::unlock(&path, &pass("right one")), Err(KeyringError::Corrupt { .. })));
    let mut newer = before.clone();
    newer[9] = 9;
    fs::write(&path, &newer).unwrap();
    assert!(matches!(Keyring::unlock(&path, &pass("right one")), Err(KeyringError::Corrupt { .. })));
    let body_len = newer.len() - CHECKSUM_LEN;
    let checksum = *blake3::hash(&newer[..body_len]).as_bytes();
    newer[body_len..].copy_from_slice(&checksum);
    fs::write(&path, &newer).unwrap();
    assert!(matches!(Keyring::unlock(&path, &pass("right one")), Err(KeyringError::NewerFormat { found: 9, .. })));
}

#[test]
fn a_format_1_keyring_without_a_clear_identity_still_opens_and_is_upgraded_on_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let ring = Keyring::create(&path, &pass("pw"), FAST).unwrap();
    let old = {
        let kek = ring.lock_writer();
        kek.wrap(1, &contents_of(&ring.snapshot()), &ring.path).unwrap()
    };
    assert_eq!(old.len(), fs::read(&path).unwrap().len() - IDENTITY_LEN);
    assert_eq!(clear_identity(&old), None);
    fs::write(&path, &old).unwrap();
    let opened = Keyring::unlock(&path, &pass("pw")).unwrap();
    assert_eq!(opened.snapshot().identity(), ring.snapshot().identity());
    assert_eq!(Keyring::file_identity(&path), None);
    opened.rotate().unwrap();
    assert_eq!(Keyring::file_identity(&path), Some(ring.snapshot().identity()));
}

#[test]
fn a_clear_identity_that_is_not_the_keys_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    Keyring::create(&path, &pass("pw"), FAST).unwrap();
    let mut edited = fs::read(&path).unwrap();
    edited[HEADER_LEN] ^= 1;
    let body_len = edited.len() - CHECKSUM_LEN;
    let checksum = *blake3::hash(&edited[..body_len]).as_bytes();
    edited[body_len..].copy_from_slice(&checksum);
    fs::write(&path, &edited).unwrap();
    // Part of the associated data, so the tag fails as for any edited header.
    assert!(matches!(Keyring::unlock(&path, &pass("pw")), Err(KeyringError::WrongSecret { .. })));
}

#[test]
fn keyring_file_holds_no_key_bytes_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let ring = Keyring::create(&path, &pass("pw"), FAST).unwrap();
    let file = fs::read(&path).unwrap();
    let set = ring.snapshot();
    for needle in [set.address_key.expose().as_slice(), set.keys[0].secret.expose().as_slice()] {
        assert!(!file.windows(KEY_LEN).any(|w| w == needle));
    }
}

#[test]
fn seals_are_reserved_in_blocks_and_rotate_before_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let mut ring = Keyring::create(&path, &pass("pw"), FAST).unwrap();
    ring.set_seal_limit_for_tests(2 * SEAL_BLOCK);
    for _ in 0..2 * SEAL_BLOCK {
        assert_eq!(ring.key_for_seal().unwrap().1, 1);
    }
    // The 2·BLOCK+1-th seal would pass the limit: a new key takes over.
    assert_eq!(ring.key_for_seal().unwrap().1, 2);
    let reopened = Keyring::unlock(&path, &pass("pw")).unwrap();
    let infos = reopened.snapshot().infos();
    assert_eq!(infos.iter().map(|k| (k.id, k.active)).collect::<Vec<_>>(), vec![(1, false), (2, true)]);
    // After reopening, key 1's reservation counts as fully used.
    assert_eq!(reopened.snapshot().keys[0].sealed.load(Ordering::Relaxed), 2 * SEAL_BLOCK);
}

#[test]
fn change_secret_rewraps_without_changing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let ring = Keyring::create(&path, &pass("old"), FAST).unwrap();
    let raw = StoreSecret::RawKey(SecretKey::from_bytes([5; 32]));
    ring.change_secret(&raw, FAST).unwrap();
    assert!(Keyring::unlock(&path, &pass("old")).is_err());
    let reopened = Keyring::unlock(&path, &raw).unwrap();
    assert_eq!(reopened.snapshot().address_key, ring.snapshot().address_key);
}
