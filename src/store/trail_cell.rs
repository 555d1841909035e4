//! Where a shared store keeps the access trail: the trail (`ops::audit::trail`) writes and
//! reads its lines through this byte-level cell, which the Redis engine implements, so the
//! store never depends on the trail's format.

/// Every line of a shared trail, in order, and its head.
pub type TrailContents = (Vec<Vec<u8>>, Option<Vec<u8>>);

/// A trail kept in a shared store (Redis) rather than in files: one element per line and the
/// head beside it. Several processes append at once, so an append is a compare-and-swap on
/// the number of lines: each entry is chained to the one it was computed from, or retried.
pub trait TrailCell: Send + Sync {
    /// Where it is, for messages.
    fn describe(&self) -> String;
    /// How many lines there are, and the last one.
    fn tail(&self) -> Result<(u64, Option<Vec<u8>>), String>;
    /// Appends `line` and replaces the head with `head` if there are still `len` lines.
    fn append(&self, len: u64, line: &[u8], head: &[u8]) -> Result<bool, String>;
    /// Every line, in order, and the head.
    fn all(&self) -> Result<TrailContents, String>;
}
