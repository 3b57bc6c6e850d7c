//! Tokens shared with other processes: a CLI's token file, read by every
//! run of the command.
//!
//! A server that rotates refresh tokens takes a second use of one for a
//! theft and revokes the whole family (RFC 9700 §4.14.2): two runs that
//! both find the access token expired and both refresh with the token they
//! read would sign the user out of both. So a refresh is made under the
//! store's lock, from the tokens kept there (another run may have renewed
//! them already), and what it gives is kept there before the lock goes.

use crate::tokens::Tokens;

/// A store of tokens other processes use too.
pub trait SharedTokens: Send + Sync {
    /// Takes the store's lock (this may wait for another process: it is
    /// called off the async threads) and reads what it holds for this
    /// client now.
    fn lock(&self) -> Result<Box<dyn LockedTokens>, String>;
}

/// The store, locked: released when dropped.
pub trait LockedTokens: Send {
    /// What the store holds for this client.
    fn tokens(&self) -> &Tokens;

    /// Keeps in the store what changed from `before` to `after`
    /// ([`Tokens::merge_changes`]), still under the lock.
    fn keep(&mut self, before: &Tokens, after: &Tokens) -> Result<(), String>;
}
