//! Anthropic API versions and what each one changes for a request translated into it.
//!
//! Translation into Anthropic follows the rules of the version it will send: the client's
//! `anthropic-version`, else the provider's configured `anthropic_version`, else
//! [`DEFAULT_ANTHROPIC_VERSION`]. Versions are dates; a version Holdfast has no row for follows
//! the latest row at or before it (Anthropic's versions only ever add restrictions on top of
//! the previous one), and anything that is not a date is refused.
//!
//! | version      | `temperature`, `top_p`, `top_k` |
//! |--------------|---------------------------------|
//! | `2023-01-01` | accepted                        |
//! | `2023-06-01` | accepted                        |
//! | `2026-10-21` | refused with a 400 → dropped    |

use super::{Untranslatable, malformed};

/// The version sent when neither the client nor the provider's configuration names one.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// What one Anthropic API version accepts, as far as a translated request is concerned.
#[derive(Debug, PartialEq, Eq)]
pub struct VersionRules {
    /// The version, `YYYY-MM-DD`.
    pub version: &'static str,
    /// Whether `temperature`, `top_p` and `top_k` are accepted. A version that refuses them
    /// gets them dropped: no target of that version can honour them, and the model then
    /// samples with its own settings.
    pub sampling: bool,
}

/// Every version with its rules, oldest first.
pub const ANTHROPIC_VERSIONS: &[VersionRules] = &[
    VersionRules { version: "2023-01-01", sampling: true },
    VersionRules { version: "2023-06-01", sampling: true },
    VersionRules { version: "2026-10-21", sampling: false },
];

/// The rules for `version`: its own row, or the latest row before it.
pub fn anthropic_rules(version: &str) -> Result<&'static VersionRules, Untranslatable> {
    let version = version.trim();
    if !is_date(version) {
        return Err(malformed("anthropic-version", format!("`{}` is not a YYYY-MM-DD version", clip(version))));
    }
    // `YYYY-MM-DD` strings order as the dates they name.
    ANTHROPIC_VERSIONS.iter().rev().find(|rules| rules.version <= version).ok_or_else(|| {
        malformed("anthropic-version", format!("`{version}` is older than any version Holdfast translates for"))
    })
}

fn is_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| if i == 4 || i == 7 { *b == b'-' } else { b.is_ascii_digit() })
}

/// Client-supplied text in an error message: bounded, printable.
fn clip(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_is_found_and_versions_between_rows_follow_the_older() {
        for rules in ANTHROPIC_VERSIONS {
            assert_eq!(anthropic_rules(rules.version).unwrap(), rules);
        }
        assert!(anthropic_rules("2024-10-22").unwrap().sampling);
        assert!(!anthropic_rules("2027-01-01").unwrap().sampling, "later versions keep the restriction");
        assert!(anthropic_rules(DEFAULT_ANTHROPIC_VERSION).unwrap().sampling);
        assert!(anthropic_rules("2022-12-31").is_err());
        assert!(anthropic_rules("latest").is_err());
        assert!(anthropic_rules("2026-1-021").is_err());
    }
}
