//! Per-profile framework runtime (filled in below).

/// A configured profile: plugins per extension point.
pub struct Framework;
