//! Who is acting: the [`Actor`] the access trail names, and the constant-time token check
//! the admin API and the dashboard both make before they name one.

/// Who ran a command, as the access trail records it.
#[derive(Debug, Clone)]
pub struct Actor(
    /// How the trail prints it: `cli:user@host`, or `admin-token:<hash prefix> from <peer>`.
    pub String,
);

impl Actor {
    /// The local user and host (`cli:alice@db-3`).
    pub fn local() -> Self {
        let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "unknown-host".into());
        Self(format!("cli:{user}@{host}"))
    }

    /// An admin API caller, identified by a hash prefix of its token (never the token).
    pub fn token(token: &str, peer: &str) -> Self {
        let id = blake3::hash(token.as_bytes()).to_hex();
        Self(format!("admin-token:{} from {peer}", &id[..8]))
    }
}

/// Whether `presented` matches `expected`, in time independent of where they differ: both
/// are hashed and BLAKE3's `Hash` compares in constant time.
pub(crate) fn token_matches(expected: &str, presented: &str) -> bool {
    blake3::hash(expected.as_bytes()) == blake3::hash(presented.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_comparison() {
        assert!(super::token_matches("s3cret-token", "s3cret-token"));
        assert!(!super::token_matches("s3cret-token", "s3cret-tokeN"));
        assert!(!super::token_matches("s3cret-token", ""));
    }
}
