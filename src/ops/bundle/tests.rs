use std::fs;
use std::path::Path;

use super::reader::be_u32;
use super::*;

/// Cheap Argon2 cost for the tests that open a bundle hundreds of times.
const FAST: KdfParams = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };

fn write_bundle(path: &Path, pass: &[u8], cost: KdfParams, frames: &[Vec<u8>]) -> u64 {
    let mut w = BundleWriter::create_with_cost(path, pass, cost).unwrap();
    for f in frames {
        w.append(f).unwrap();
    }
    w.finish().unwrap()
}

fn read_all(path: &Path, pass: &[u8]) -> Result<Vec<Vec<u8>>, BundleError> {
    let mut r = BundleReader::open(path, pass)?;
    let mut out = Vec::new();
    while let Some(f) = r.next_frame()? {
        out.push(f);
    }
    Ok(out)
}

/// Byte ranges of each frame record (length, nonce, ciphertext), end frame included.
fn frame_spans(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let end = at + 4 + NONCE_LEN + be_u32(&bytes[at..]) as usize;
        spans.push(at..end);
        at = end;
    }
    spans
}

fn sample_frames(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| (0..(i * 37) % 5000).map(|b| (b ^ i) as u8).collect()).collect()
}

#[test]
fn round_trip_of_0_1_and_1000_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut thousand = sample_frames(1000);
    thousand[500] = vec![0xA5; 300_000];
    thousand[501] = Vec::new();
    for (name, frames) in [("zero", Vec::new()), ("one", vec![b"only frame".to_vec()]), ("many", thousand)] {
        let path = dir.path().join(name);
        assert_eq!(write_bundle(&path, b"export pass", KdfParams::DEFAULT, &frames), frames.len() as u64);
        let mut r = BundleReader::open(&path, b"export pass").unwrap();
        for (i, expected) in frames.iter().enumerate() {
            assert_eq!(r.next_frame().unwrap().as_ref(), Some(expected), "{name} frame {i}");
        }
        assert_eq!(r.next_frame().unwrap(), None);
        assert_eq!(r.next_frame().unwrap(), None, "stays at the end");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}

#[test]
fn wrong_passphrase_is_told_apart_from_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    write_bundle(&path, b"right", KdfParams::DEFAULT, &sample_frames(3));
    assert!(matches!(BundleReader::open(&path, b"wrong"), Err(BundleError::WrongPassphrase { .. })));
    assert!(matches!(BundleReader::open(&path, b""), Err(BundleError::WrongPassphrase { .. })));
    let mut bytes = fs::read(&path).unwrap();
    bytes[25] ^= 1; // in the salt
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(BundleReader::open(&path, b"right"), Err(BundleError::Corrupt { .. })));
    fs::write(&path, b"hello").unwrap();
    assert!(matches!(BundleReader::open(&path, b"right"), Err(BundleError::Corrupt { .. })));
    assert!(matches!(BundleWriter::create(&dir.path().join("c"), b""), Err(BundleError::EmptyPassphrase)));
}

#[test]
fn every_flipped_byte_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    write_bundle(&path, b"pw", FAST, &[b"abc".to_vec(), Vec::new(), b"defgh".to_vec()]);
    let good = fs::read(&path).unwrap();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        fs::write(&path, &bad).unwrap();
        match read_all(&path, b"pw") {
            Ok(frames) => panic!("flip at byte {i} went unnoticed: {frames:?}"),
            Err(BundleError::WrongPassphrase { .. }) => panic!("flip at byte {i} read as a wrong passphrase"),
            Err(_) => {}
        }
    }
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    let frames = vec![b"abc".to_vec(), Vec::new(), b"defgh".to_vec()];
    write_bundle(&path, b"pw", FAST, &frames);
    let good = fs::read(&path).unwrap();
    assert_eq!(read_all(&path, b"pw").unwrap(), frames);
    for len in 0..good.len() {
        fs::write(&path, &good[..len]).unwrap();
        let err = read_all(&path, b"pw").expect_err(&format!("truncation to {len} bytes went unnoticed"));
        assert!(!matches!(err, BundleError::WrongPassphrase { .. }), "{len}: {err}");
    }
    // Cut exactly after the last data frame: the missing end frame is what gives it away.
    let spans = frame_spans(&good);
    fs::write(&path, &good[..spans[spans.len() - 1].start]).unwrap();
    let err = read_all(&path, b"pw").unwrap_err();
    assert!(matches!(err, BundleError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("without its end frame"), "{err}");
    // And bytes after the end frame are refused too.
    let mut longer = good.clone();
    longer.push(0);
    fs::write(&path, &longer).unwrap();
    assert!(matches!(read_all(&path, b"pw"), Err(BundleError::Corrupt { .. })));
}

#[test]
fn swapped_or_dropped_frames_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    write_bundle(&path, b"pw", FAST, &sample_frames(4));
    let good = fs::read(&path).unwrap();
    let spans = frame_spans(&good);
    assert_eq!(spans.len(), 5);

    let mut swapped = good[..HEADER_LEN].to_vec();
    for i in [0, 2, 1, 3, 4] {
        swapped.extend_from_slice(&good[spans[i].clone()]);
    }
    fs::write(&path, &swapped).unwrap();
    let mut r = BundleReader::open(&path, b"pw").unwrap();
    assert!(r.next_frame().unwrap().is_some());
    assert!(matches!(r.next_frame(), Err(BundleError::Corrupt { .. })));
    assert!(r.next_frame().is_err(), "no reading past an error");

    let mut dropped = good[..spans[1].start].to_vec();
    dropped.extend_from_slice(&good[spans[2].start..]);
    fs::write(&path, &dropped).unwrap();
    assert!(matches!(read_all(&path, b"pw"), Err(BundleError::Corrupt { .. })));
}

#[test]
fn a_frame_from_another_bundle_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let frames = vec![b"same".to_vec(), b"size".to_vec()];
    write_bundle(&a, b"pw", FAST, &frames);
    write_bundle(&b, b"pw", FAST, &frames);
    let (bytes_a, bytes_b) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    let (spans_a, spans_b) = (frame_spans(&bytes_a), frame_spans(&bytes_b));
    for i in 0..spans_a.len() {
        let mut mixed = bytes_a.clone();
        mixed[spans_a[i].clone()].copy_from_slice(&bytes_b[spans_b[i].clone()]);
        fs::write(&a, &mixed).unwrap();
        assert!(matches!(read_all(&a, b"pw"), Err(BundleError::Corrupt { .. })), "frame {i}");
    }
}

#[test]
fn existing_file_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    fs::write(&path, b"precious").unwrap();
    let err = BundleWriter::create_with_cost(&path, b"pw", FAST).unwrap_err();
    assert!(matches!(err, BundleError::Exists { .. }), "{err}");
    assert_eq!(fs::read(&path).unwrap(), b"precious");
}

#[test]
fn crafted_costs_and_lengths_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    write_bundle(&path, b"pw", FAST, &[b"x".to_vec()]);
    let good = fs::read(&path).unwrap();

    // A header asking for 64 GiB of Argon2 memory, with a checksum that matches.
    let mut greedy = good.clone();
    greedy[10..14].copy_from_slice(&(64 * 1024 * 1024u32).to_be_bytes());
    let sum = *blake3::hash(&greedy[..CHECKSUM_AT]).as_bytes();
    greedy[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&sum);
    fs::write(&path, &greedy).unwrap();
    let err = BundleReader::open(&path, b"pw").unwrap_err();
    assert!(err.to_string().contains("implausible"), "{err}");

    // A frame claiming 4 GiB.
    let mut huge = good.clone();
    huge[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(&path, &huge).unwrap();
    let err = read_all(&path, b"pw").unwrap_err();
    assert!(err.to_string().contains("impossible length"), "{err}");

    // A newer format, with a checksum that matches.
    let mut newer = good.clone();
    newer[8..10].copy_from_slice(&2u16.to_be_bytes());
    let sum = *blake3::hash(&newer[..CHECKSUM_AT]).as_bytes();
    newer[CHECKSUM_AT..HEADER_LEN].copy_from_slice(&sum);
    fs::write(&path, &newer).unwrap();
    assert!(matches!(BundleReader::open(&path, b"pw"), Err(BundleError::NewerFormat { found: 2, .. })));
}

#[test]
fn oversized_frames_are_refused_when_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = BundleWriter::create_with_cost(&dir.path().join("b"), b"pw", FAST).unwrap();
    let big = vec![0u8; MAX_FRAME + 1];
    assert!(matches!(w.append(&big), Err(BundleError::FrameTooLarge { .. })));
    w.append(b"fine").unwrap();
    assert_eq!(w.finish().unwrap(), 1);
}
