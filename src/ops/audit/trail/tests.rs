use std::fs::File;
use std::sync::Arc;

use super::writer::read_tail;
use super::*;

fn key(byte: u8) -> SecretKey {
    SecretKey::from_bytes([byte; 32])
}

fn addr(i: u64) -> String {
    format!("{i:064x}")
}

/// A trail of `n` entries in a fresh directory.
fn trail_with(n: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trail.jsonl");
    let trail = Trail::open(&path, key(7)).unwrap();
    for i in 1..=n {
        trail.append("cli:alice@host1", &format!("audit show {i}"), &[addr(i)], i, "ok").unwrap();
    }
    (dir, path)
}

fn lines_of(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    if !lines.is_empty() {
        text.push('\n');
    }
    fs::write(path, text).unwrap();
}

fn first_break(path: &Path) -> BrokenLink {
    verify(path, &key(7)).unwrap().first_broken.expect("verification should fail")
}

#[test]
fn append_read_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trail.jsonl");
    let trail = Trail::open(&path, key(7)).unwrap();
    assert!(trail.recovery().is_none());
    assert_eq!(verify(&path, &key(7)).unwrap(), Verification { entries: 0, first_broken: None });
    let a = trail.append("cli:alice@host1", "audit show", &[addr(1), addr(2)], 2, "ok").unwrap();
    let b = trail.append("admin-token:3f2a9c1e", "keys rotate --reencrypt", &[], 5000, "ok").unwrap();
    let c = trail.append("cli:bob@host2", "cache purge --older-than 30d", &[], 0, "store locked").unwrap();
    assert_eq!((a.seq, b.seq, c.seq), (1, 2, 3));
    assert_eq!(a.prev, genesis_link(&key(7)).to_hex().as_str());
    assert_eq!(read(&path).unwrap(), vec![a, b, c]);
    let v = verify(&path, &key(7)).unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.entries, 3);
    #[cfg(unix)]
    for p in [path.clone(), head_path(&path)] {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "{}", p.display());
    }
    assert!(!format!("{trail:?}").contains("7, 7"));
}

#[test]
fn only_the_first_hundred_addresses_are_listed() {
    let (_dir, path) = trail_with(0);
    let trail = Trail::open(&path, key(7)).unwrap();
    let many: Vec<String> = (0..250).map(addr).collect();
    let entry = trail.append("cli:a@h", "cache export", &many, 250, "ok").unwrap();
    assert_eq!(entry.addresses.as_slice(), &many[..MAX_LISTED_ADDRESSES]);
    assert_eq!(entry.count, 250);
}

#[test]
fn editing_any_field_of_any_entry_is_the_first_broken_link() {
    let (_dir, path) = trail_with(5);
    let original = lines_of(&path);
    type Edit = (&'static str, fn(&mut TrailEntry));
    let edits: [Edit; 8] = [
        ("seq", |e| e.seq += 1),
        ("at_ms", |e| e.at_ms += 1),
        ("actor", |e| e.actor.push('x')),
        ("command", |e| e.command = "audit show".into()),
        ("addresses", |e| e.addresses.push(addr(99))),
        ("count", |e| e.count += 1),
        ("outcome", |e| e.outcome = "denied".into()),
        ("prev", |e| e.prev = blake3::hash(b"forged").to_hex().to_string()),
    ];
    for line in 1..=original.len() {
        for (field, edit) in &edits {
            let mut lines = original.clone();
            let mut entry: TrailEntry = serde_json::from_str(&lines[line - 1]).unwrap();
            edit(&mut entry);
            lines[line - 1] = serde_json::to_string(&entry).unwrap();
            write_lines(&path, &lines);
            let b = first_break(&path);
            assert_eq!(b.line, line as u64, "edit of {field} on line {line}: {b:?}");
            assert_eq!(b.kind, BreakKind::Altered, "edit of {field} on line {line}: {b:?}");
        }
    }
    write_lines(&path, &original);
    assert!(verify(&path, &key(7)).unwrap().is_intact());
}

#[test]
fn a_non_field_edit_is_unreadable_with_its_line() {
    let (_dir, path) = trail_with(3);
    let mut lines = lines_of(&path);
    lines[1] = "{not json".into();
    write_lines(&path, &lines);
    assert!(matches!(read(&path), Err(TrailError::Unreadable { line: 2, .. })));
    let b = first_break(&path);
    assert_eq!((b.line, b.kind), (2, BreakKind::Unreadable));
}

#[test]
fn deleting_a_line_is_reported_where_it_was() {
    for gone in [1, 3] {
        let (_dir, path) = trail_with(5);
        let mut lines = lines_of(&path);
        lines.remove(gone - 1);
        write_lines(&path, &lines);
        let b = first_break(&path);
        assert_eq!((b.line, b.seq, b.kind), (gone as u64, Some(gone as u64), BreakKind::Removed), "{b:?}");
        assert!(b.reason.contains(&format!("entry {gone} is missing")), "{}", b.reason);
    }
}

#[test]
fn truncating_the_last_line_is_detected_and_blocks_appending() {
    let (_dir, path) = trail_with(5);
    let bytes = fs::read(&path).unwrap();
    let lines = lines_of(&path);

    write_lines(&path, &lines[..4]);
    let b = first_break(&path);
    assert_eq!((b.line, b.seq, b.kind), (5, Some(5), BreakKind::Truncated), "{b:?}");
    // Appending now would rewrite the head and hide the removal, so open refuses.
    assert!(matches!(Trail::open(&path, key(7)), Err(TrailError::Inconsistent { .. })));

    // Cut inside the last line (its newline gone too).
    fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
    let b = first_break(&path);
    assert_eq!((b.line, b.kind), (5, BreakKind::Truncated), "{b:?}");
    assert!(matches!(Trail::open(&path, key(7)), Err(TrailError::Inconsistent { .. })));

    // Only the final newline removed: the last line no longer counts as complete.
    fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    assert_eq!(first_break(&path).kind, BreakKind::Truncated);

    // Every entry removed.
    fs::write(&path, b"").unwrap();
    let b = first_break(&path);
    assert_eq!((b.line, b.kind), (1, BreakKind::Truncated), "{b:?}");
    assert!(matches!(Trail::open(&path, key(7)), Err(TrailError::Inconsistent { .. })));
}

#[test]
fn reordering_two_lines_is_detected() {
    for (a, b) in [(1, 2), (2, 3), (4, 5)] {
        let (_dir, path) = trail_with(5);
        let mut lines = lines_of(&path);
        lines.swap(a - 1, b - 1);
        write_lines(&path, &lines);
        let found = first_break(&path);
        assert_eq!((found.line, found.kind), (a as u64, BreakKind::Altered), "swap {a},{b}: {found:?}");
    }
}

#[test]
fn a_copied_line_is_detected() {
    let (_dir, path) = trail_with(4);
    let mut lines = lines_of(&path);
    lines.insert(2, lines[1].clone());
    write_lines(&path, &lines);
    let b = first_break(&path);
    assert_eq!((b.line, b.kind), (3, BreakKind::Altered), "{b:?}");
}

#[test]
fn wrong_key_fails_verification_and_open() {
    let (_dir, path) = trail_with(3);
    let v = verify(&path, &key(8)).unwrap();
    let b = v.first_broken.unwrap();
    assert_eq!((b.line, b.kind), (1, BreakKind::WrongKey), "{b:?}");
    assert!(matches!(Trail::open(&path, key(8)), Err(TrailError::Inconsistent { .. })));
    // An empty trail's head is keyed too.
    let (_dir, empty) = trail_with(0);
    assert_eq!(verify(&empty, &key(8)).unwrap().first_broken.unwrap().kind, BreakKind::HeadMismatch);
}

#[test]
fn missing_or_replaced_head_is_reported() {
    let (_dir, path) = trail_with(3);
    let head = head_path(&path);
    let saved = fs::read(&head).unwrap();
    fs::remove_file(&head).unwrap();
    assert_eq!(first_break(&path).kind, BreakKind::HeadMissing);
    assert!(matches!(Trail::open(&path, key(7)), Err(TrailError::Inconsistent { .. })));
    fs::write(&head, b"garbage").unwrap();
    assert_eq!(first_break(&path).kind, BreakKind::HeadMismatch);
    // A head whose hash is the last entry's chain hash (visible in the file) is not accepted.
    let lines = lines_of(&path);
    let last: TrailEntry = serde_json::from_str(&lines[2]).unwrap();
    fs::write(&head, format!("{{\"seq\":2,\"mac\":\"{}\"}}", last.prev)).unwrap();
    write_lines(&path, &lines[..2]);
    let b = first_break(&path);
    assert_eq!((b.line, b.kind), (2, BreakKind::Altered), "{b:?}");
    assert!(matches!(Trail::open(&path, key(7)), Err(TrailError::Inconsistent { .. })));
    write_lines(&path, &lines);
    fs::write(&head, saved).unwrap();
    assert!(verify(&path, &key(7)).unwrap().is_intact());
}

#[test]
fn interrupted_append_is_named_and_repaired_by_open() {
    // Crash after the line, before the head: simulated by putting back the previous head.
    let (_dir, path) = trail_with(2);
    let head_after_two = fs::read(head_path(&path)).unwrap();
    Trail::open(&path, key(7)).unwrap().append("cli:a@h", "audit show", &[], 1, "ok").unwrap();
    fs::write(head_path(&path), &head_after_two).unwrap();
    let b = first_break(&path);
    assert_eq!((b.line, b.seq, b.kind), (3, Some(3), BreakKind::InterruptedAppend), "{b:?}");
    assert!(b.reason.contains("head file is behind by one entry: the last append may have been interrupted"));
    let trail = Trail::open(&path, key(7)).unwrap();
    assert_eq!(trail.recovery(), Some(&Recovery { removed_torn_bytes: 0, head_was_behind: true }));
    assert_eq!(trail.append("cli:a@h", "audit show", &[], 1, "ok").unwrap().seq, 4);
    assert!(verify(&path, &key(7)).unwrap().is_intact());

    // Crash in the middle of writing the line: a fragment with no newline.
    let mut bytes = fs::read(&path).unwrap();
    let intact_len = bytes.len();
    bytes.extend_from_slice(br#"{"seq":5,"at_ms":17"#);
    fs::write(&path, &bytes).unwrap();
    let b = first_break(&path);
    assert_eq!((b.line, b.kind), (5, BreakKind::InterruptedAppend), "{b:?}");
    assert!(matches!(read(&path), Err(TrailError::Unreadable { line: 5, .. })));
    let trail = Trail::open(&path, key(7)).unwrap();
    assert_eq!(trail.recovery().unwrap().removed_torn_bytes, (bytes.len() - intact_len) as u64);
    assert!(!trail.recovery().unwrap().to_string().is_empty());
    assert_eq!(fs::metadata(&path).unwrap().len(), intact_len as u64);
    assert_eq!(trail.append("cli:a@h", "audit show", &[], 1, "ok").unwrap().seq, 5);
    assert!(verify(&path, &key(7)).unwrap().is_intact());
}

#[test]
fn concurrent_appends_form_one_valid_chain() {
    let (_dir, path) = trail_with(0);
    let trail = Arc::new(Trail::open(&path, key(7)).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let trail = Arc::clone(&trail);
            std::thread::spawn(move || {
                for i in 0..10 {
                    trail.append(&format!("cli:thread{t}@host"), "audit show", &[addr(i)], 1, "ok").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let entries = read(&path).unwrap();
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=80).collect::<Vec<_>>());
    let v = verify(&path, &key(7)).unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.entries, 80);
}

#[test]
fn reopening_continues_the_chain_even_past_long_lines() {
    let (_dir, path) = trail_with(2);
    let long: Vec<String> = (0..MAX_LISTED_ADDRESSES as u64).map(addr).collect();
    for round in 0..3 {
        let trail = Trail::open(&path, key(7)).unwrap();
        assert!(trail.recovery().is_none());
        // Lines of ~7 KB, nearly a whole `TAIL_CHUNK` (`tail_reader_finds_the_last_line` covers longer ones).
        let entry = trail.append("cli:a@h", "cache export", &long, 1000, "ok").unwrap();
        assert_eq!(entry.seq, 3 + round);
    }
    let v = verify(&path, &key(7)).unwrap();
    assert!(v.is_intact(), "{v:?}");
    assert_eq!(v.entries, 5);
}

#[test]
fn a_second_writer_is_refused_not_forked() {
    let (_dir, path) = trail_with(1);
    let first = Trail::open(&path, key(7)).unwrap();
    let second = Trail::open(&path, key(7)).unwrap();
    first.append("cli:a@h", "audit show", &[], 1, "ok").unwrap();
    assert!(matches!(second.append("cli:b@h", "audit show", &[], 1, "ok"), Err(TrailError::ChangedOnDisk { .. })));
    assert!(verify(&path, &key(7)).unwrap().is_intact());
}

#[test]
fn tail_reader_finds_the_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t");
    let long = "x".repeat(20_000);
    for (content, last, torn) in [
        ("".to_owned(), None, None),
        ("a\n".to_owned(), Some("a"), None),
        ("a\nbc\n".to_owned(), Some("bc"), None),
        ("a\nbc\nde".to_owned(), Some("bc"), Some(5)),
        ("frag".to_owned(), None, Some(0)),
        (format!("a\n{long}\n"), Some(long.as_str()), None),
        (format!("{long}\n{long}\nz"), Some(long.as_str()), Some(40_002)),
    ] {
        fs::write(&path, &content).unwrap();
        let file = File::open(&path).unwrap();
        let tail = read_tail(&file, content.len() as u64).unwrap();
        assert_eq!(tail.last.as_deref(), last.map(str::as_bytes), "{content:.20}");
        assert_eq!(tail.torn_from, torn, "{content:.20}");
    }
}
