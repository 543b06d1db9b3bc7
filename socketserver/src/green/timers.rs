//! A worker's timers: one tree of wake-up times, at most one entry per
//! coroutine, moved rather than cancelled (see [`Timers::arm`]).

use std::collections::BTreeMap;
use std::time::Instant;

use mio::Token;

/// A timer entry's key: its time and a sequence number (unique).
pub(crate) type Key = (Instant, u64);

/// The timers of one worker.
#[derive(Default)]
pub(crate) struct Timers {
    tree: BTreeMap<Key, Token>,
    seq: u64,
}

impl Timers {
    /// When the earliest timer fires, if any.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.tree.first_key_value().map(|((at, _), _)| *at)
    }

    /// Coroutine `token`, whose entry is `entry`, is to wake at `at`: the
    /// entry stays if it fires no later, else it moves to `at`. An entry
    /// is not removed when its coroutine wakes early (most waits end with
    /// an event, long before their deadline): a connection exchanging
    /// messages touches the tree about once per timeout period rather than
    /// twice per message.
    pub(crate) fn arm(&mut self, entry: &mut Option<Key>, token: Token, at: Instant) {
        let stale = match *entry {
            Some((when, _)) if when <= at => return,
            stale => stale,
        };
        self.seq += 1;
        let key = (at, self.seq);
        *entry = Some(key);
        if let Some(stale) = stale {
            self.tree.remove(&stale);
        }
        self.tree.insert(key, token);
    }

    /// Removes an entry (its coroutine ended).
    pub(crate) fn remove(&mut self, key: &Key) {
        self.tree.remove(key);
    }

    /// Takes the next entry due at `now`, if any: its coroutine.
    pub(crate) fn expired(&mut self, now: Instant) -> Option<Token> {
        let entry = self.tree.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }
}
