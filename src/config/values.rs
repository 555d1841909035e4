//! How values are written in the configuration: durations ("30s"), sizes ("64MiB") and model
//! globs ("gpt-*"), with the serde helpers the section structs deserialize them through.

use std::time::Duration;

use serde::Deserialize;

/// `*` matches any run of characters, `?` any one; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while let Some(&tc) = t.get(ti) {
        let pc = p.get(pi).copied();
        if pc.is_some_and(|c| c == '?' || c == tc) {
            pi += 1;
            ti += 1;
        } else if pc == Some('*') {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p.iter().skip(pi).all(|&c| c == '*')
}

/// Parses "500ms", "30s", "5m", "2h", "7d" (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 30s, 5m, 2h or 7d"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => {
            return Err(format!("unknown duration unit `{other}` in `{text}` (use ms, s, m, h or d)"));
        }
    };
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("`{text}` is not a usable duration (too large or negative)"))
}

/// Parses "512", "64KiB", "10MiB", "20GiB" (also KB/MB/GB as powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("`{text}` is not a size like 64MiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!("unknown size unit `{other}` in `{text}` (use KiB, MiB, GiB)"));
        }
    };
    value.checked_mul(factor).ok_or_else(|| format!("`{text}` is too large"))
}

pub(super) fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

pub(super) fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

/// Sizes may be written as a number of bytes or as a string with a unit.
pub(super) fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
}

pub(super) fn de_opt_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_size(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_durations_and_sizes() {
        assert!(glob_match("gpt-*", "gpt-4o") && glob_match("*", "") && glob_match("o?-mini", "o3-mini"));
        assert!(!glob_match("gpt-*", "xgpt-4") && !glob_match("claude-?", "claude-10"));
        assert!(glob_match("*-mini*", "gpt-4o-mini-2024"));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("100000000000000000000s").is_err(), "overflow must be an error, not a panic");
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert!(parse_size("10XB").is_err());
    }
}
