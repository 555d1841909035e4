//! Human-readable output of admin results: aligned tables, UTC timestamps, byte sizes.
//! `--json` prints the result value as it is instead.

use std::fmt::Write as _;

use serde_json::Value;

use super::command::AdminRequest;

/// `2026-11-21 20:15:03Z` for milliseconds since the epoch (proleptic Gregorian, UTC).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match UNITS.get(unit) {
        Some(name) if unit > 0 => format!("{value:.1} {name}"),
        _ => format!("{n} B"),
    }
}

/// A one-line progress display on standard error, only when it is a terminal (logs and
/// pipes get the final result alone).
pub struct ProgressLine {
    /// The command being run, shown before the counts.
    label: String,
    /// Standard error is a terminal: otherwise nothing is drawn.
    active: bool,
    /// Something was drawn, so the line must be cleared before the result is printed.
    drawn: std::sync::atomic::AtomicBool,
}

impl ProgressLine {
    pub fn new(label: &str) -> Self {
        use std::io::IsTerminal as _;
        Self { label: label.to_owned(), active: std::io::stderr().is_terminal(), drawn: Default::default() }
    }

    pub fn update(&self, done: u64, total: u64) {
        if !self.active {
            return;
        }
        self.drawn.store(true, std::sync::atomic::Ordering::Relaxed);
        if total == 0 {
            eprint!("\r{}: {done}", self.label);
            return;
        }
        let width = 30;
        let filled = (done.min(total) * width / total.max(1)) as usize;
        eprint!(
            "\r{}: [{}{}] {:>3}% {done}/{total}",
            self.label,
            "#".repeat(filled),
            " ".repeat(width as usize - filled),
            done * 100 / total.max(1)
        );
    }

    pub fn finish(&self) {
        if self.drawn.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!();
        }
    }
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        out.push('\n');
    };
    line(&mut out, header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(&mut out, row);
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn time(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".into(), utc)
}

fn entry_rows(result: &Value) -> String {
    let rows: Vec<Vec<String>> = result["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    vec![
                        s(&e["address"]),
                        time(&e["created_ms"]),
                        time(&e["last_served_ms"]),
                        s(&e["times_served"]),
                        s(&e["provider"]),
                        s(&e["model"]),
                        s(&e["preview"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let n = rows.len();
    format!(
        "{}{n} entr{}\n",
        table(&["ADDRESS", "CREATED", "LAST SERVED", "SERVED", "PROVIDER", "MODEL", "PROMPT"], rows),
        if n == 1 { "y" } else { "ies" }
    )
}

/// The text to print for `result` of `request`.
pub fn render(request: &AdminRequest, result: &Value) -> String {
    match request {
        AdminRequest::KeysList => {
            let rows = result["keys"]
                .as_array()
                .map(|keys| {
                    keys.iter()
                        .map(|k| vec![s(&k["id"]), time(&k["created_ms"]), s(&k["status"]), s(&k["records"])])
                        .collect()
                })
                .unwrap_or_default();
            table(&["ID", "CREATED", "STATUS", "RECORDS"], rows)
        }
        AdminRequest::KeysRotate { reencrypt } => {
            let mut text = format!(
                "{} key {} is active for new writes\n",
                if result["resumed"] == true { "resumed:" } else { "rotated:" },
                s(&result["active"])
            );
            if *reencrypt {
                let _ =
                    writeln!(text, "re-sealed {} entries under key {}", s(&result["resealed"]), s(&result["active"]));
            }
            text
        }
        AdminRequest::KeysRetire { id } => format!("key {id} destroyed\n"),
        AdminRequest::KeysPassphrase { .. } => {
            format!("keyring re-wrapped; the store is now unlocked by its new {}\n", s(&result["now_unlocked_by"]))
        }
        AdminRequest::AuditList { .. } | AdminRequest::AuditSearch { .. } => entry_rows(result),
        AdminRequest::AuditShow { .. } => serde_json::to_string_pretty(result).unwrap_or_default() + "\n",
        AdminRequest::AuditExport | AdminRequest::CacheExport { .. } => {
            let mut text = format!("exported {} entries to {}\n", s(&result["exported"]), s(&result["path"]));
            let skipped = result["skipped_too_large"].as_u64().unwrap_or(0);
            if skipped > 0 {
                let _ = writeln!(
                    text,
                    "left out {skipped} entries larger than a bundle frame (256 MiB); they stay in the store"
                );
            }
            text
        }
        AdminRequest::AuditTrail { verify } => {
            let rows = result["entries"]
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|e| {
                            let addresses = e["addresses"].as_array().map_or(0, Vec::len);
                            vec![
                                s(&e["seq"]),
                                time(&e["at_ms"]),
                                s(&e["actor"]),
                                s(&e["command"]),
                                s(&e["count"]),
                                if addresses > 0 { format!("{addresses} listed") } else { "-".into() },
                                s(&e["outcome"]),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut text = table(&["SEQ", "WHEN", "WHO", "COMMAND", "COUNT", "ADDRESSES", "OUTCOME"], rows);
            if *verify {
                match result.get("first_broken").filter(|b| !b.is_null()) {
                    Some(b) => {
                        let _ = writeln!(text, "VERIFICATION FAILED at line {}: {}", s(&b["line"]), s(&b["reason"]));
                    }
                    None => {
                        let _ = writeln!(text, "chain verified: {} entries, no broken link", s(&result["count"]));
                    }
                }
            }
            text
        }
        AdminRequest::CacheStats => {
            let mut text = String::new();
            let _ = writeln!(text, "entries        {} ({} readable)", s(&result["entries"]), s(&result["readable"]));
            let _ = writeln!(text, "sealed bytes   {}", bytes(result["bytes"].as_u64().unwrap_or(0)));
            let _ = writeln!(text, "on disk        {}", bytes(result["disk_bytes"].as_u64().unwrap_or(0)));
            let _ = writeln!(text, "times served   {}", s(&result["times_served"]));
            let _ = writeln!(text, "oldest         {}", time(&result["oldest_ms"]));
            let _ = writeln!(text, "newest         {}", time(&result["newest_ms"]));
            let _ = writeln!(text, "eviction       {}", s(&result["eviction"]));
            for (title, key) in
                [("by provider", "by_provider"), ("by model", "by_model"), ("by times served", "by_times_served")]
            {
                let _ = writeln!(text, "{title}");
                if let Some(map) = result[key].as_object() {
                    for (name, n) in map {
                        let _ = writeln!(text, "  {name:<30} {}", s(n));
                    }
                }
            }
            text
        }
        AdminRequest::CachePurge { .. } => format!("purged {} entries\n", s(&result["purged"])),
        AdminRequest::CacheVerify => {
            let bad = result["bad"].as_array().cloned().unwrap_or_default();
            let mut text = String::new();
            for b in &bad {
                let _ = writeln!(text, "TAMPERED OR CORRUPT {}: {}", s(&b["address"]), s(&b["reason"]));
            }
            for p in result["problems"].as_array().into_iter().flatten() {
                let _ = writeln!(text, "DAMAGED STORE: {}", s(p));
            }
            let _ = writeln!(text, "checked {} entries: {} bad", s(&result["checked"]), bad.len());
            let missing = result["missing"].as_u64().unwrap_or(0);
            if missing > 0 {
                let _ = writeln!(
                    text,
                    "{missing} of {} expected entries are missing or do not open; restore a backup, or run \
                     `holdfast cache repair` to go on with the {} that open",
                    s(&result["expected"]),
                    s(&result["readable"])
                );
            }
            text
        }
        AdminRequest::CacheRepair => {
            let mut text = String::new();
            for p in result["problems"].as_array().into_iter().flatten() {
                let _ = writeln!(text, "found: {}", s(p));
            }
            let _ = writeln!(
                text,
                "kept {} entries, removed {} that did not open; {} entries are lost",
                s(&result["kept"]),
                s(&result["removed"]),
                s(&result["lost"])
            );
            text
        }
        AdminRequest::CacheRefresh { plan } => refresh_report(plan.dry_run, result),
        AdminRequest::CacheImport { .. } => {
            let mut text = format!("imported {} entries\n", s(&result["imported"]));
            if result["adopted_tenant_key"] == true {
                text.push_str("this store adopted the bundle's tenant key, so its tenants find their answers here\n");
            }
            let skipped = result["skipped_tenant_entries"].as_u64().unwrap_or(0);
            if skipped > 0 {
                let _ = writeln!(
                    text,
                    "skipped {skipped} tenant-scoped entries: this store already has entries under another tenant key \
                     (import into an empty store to keep them)"
                );
            }
            text
        }
    }
}

/// The entries `cache refresh` picked and what became of each, then the totals and the cost.
fn refresh_report(dry_run: bool, result: &Value) -> String {
    let rows = result["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let age_days = e["age_ms"].as_u64().unwrap_or(0) as f64 / 86_400_000.0;
            vec![
                s(&e["address"]).chars().take(16).collect(),
                s(&e["model"]),
                s(&e["times_served"]),
                format!("{age_days:.1}d"),
                format!("{} ({})", s(&e["estimated_tokens"]), s(&e["estimate"])),
                s(&e["outcome"]),
            ]
        })
        .collect();
    let mut text = table(&["ADDRESS", "MODEL", "SERVED", "AGE", "EST. TOKENS", "OUTCOME"], rows);
    let _ = writeln!(
        text,
        "{} of {} eligible entries picked; skipped {} tenant entries (their API keys are never kept) and {} \
         normalized by older rules",
        s(&result["picked"]),
        s(&result["eligible"]),
        s(&result["skipped_tenant_entries"]),
        s(&result["skipped_older_rules"])
    );
    if dry_run {
        let _ = writeln!(
            text,
            "dry run: nothing sent; refreshing would cost about {} tokens (add --yes to run it)",
            s(&result["estimated_tokens"])
        );
    } else {
        let _ = writeln!(
            text,
            "refreshed {}, failed {} (their stored answers were kept); {} tokens used (estimated {})",
            s(&result["refreshed"]),
            s(&result["failed"]),
            s(&result["tokens_used"]),
            s(&result["estimated_tokens"])
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_right() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_795_291_200_000), "2026-11-21 20:00:00Z");
    }

    #[test]
    fn sizes_and_tables() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(10 * 1024 * 1024), "10.0 MiB");
        let t = table(&["A", "LONG HEADER"], vec![vec!["wide cell".into(), "x".into()]]);
        assert_eq!(t, "A          LONG HEADER\nwide cell  x\n");
    }
}
