//! WWW-Authenticate challenges (placeholder, being written).
