//! The strategies of the library by the names the command line uses, and
//! how each demo builds them.

use std::time::Duration;

use socketserver::Strategy;

/// The strategies of the library, by the names the CLI accepts (`PreFork`
/// three times: with `Synchronous`, `Threading` or `Green` in each child).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum StrategyName {
    /// One request at a time, inline in the server loop.
    Synchronous,
    /// A new thread per connection (or datagram).
    Threading,
    /// A fixed set of worker threads fed by a queue.
    Pool,
    /// A child process per connection (or datagram).
    Forking,
    /// A coroutine per connection (or datagram) on one thread per core.
    Green,
    /// Long-lived child processes that accept themselves, one connection at
    /// a time each.
    Prefork,
    /// `prefork`, with a thread per connection in each child.
    PreforkThreading,
    /// `prefork`, with a coroutine per connection in each child (one
    /// reactor thread each).
    PreforkGreen,
}

impl StrategyName {
    /// Every strategy, in the order the docs list them.
    pub const ALL: [StrategyName; 8] = [
        StrategyName::Synchronous,
        StrategyName::Threading,
        StrategyName::Pool,
        StrategyName::Forking,
        StrategyName::Green,
        StrategyName::Prefork,
        StrategyName::PreforkThreading,
        StrategyName::PreforkGreen,
    ];

    /// The CLI name, e.g. `threading`.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyName::Synchronous => "synchronous",
            StrategyName::Threading => "threading",
            StrategyName::Pool => "pool",
            StrategyName::Forking => "forking",
            StrategyName::Green => "green",
            StrategyName::Prefork => "prefork",
            StrategyName::PreforkThreading => "prefork-threading",
            StrategyName::PreforkGreen => "prefork-green",
        }
    }

    /// Whether it forks (a child per connection, or long-lived children):
    /// the process must then have no other thread when it serves.
    pub fn forks(self) -> bool {
        matches!(
            self,
            StrategyName::Forking
                | StrategyName::Prefork
                | StrategyName::PreforkThreading
                | StrategyName::PreforkGreen
        )
    }

    /// The strategy with the library's defaults; `workers` sizes a pool
    /// (default: the library's, 16 or twice the cores).
    pub fn build(self, workers: Option<usize>) -> Box<dyn Strategy> {
        match (self, workers) {
            (StrategyName::Pool, Some(n)) => Box::new(socketserver::Pool::new(n.max(2))),
            (StrategyName::PreforkThreading, _) => {
                Box::new(socketserver::PreFork::new().inner(socketserver::Threading::new()))
            }
            (StrategyName::PreforkGreen, _) => {
                Box::new(socketserver::PreFork::new().inner(socketserver::Green::new().threads(1)))
            }
            _ => socketserver::strategy::from_name(self.as_str())
                .expect("every StrategyName is a library strategy name"),
        }
    }
}

impl StrategyName {
    /// Like [`build`](Self::build), tuned: `stack` bytes of stack for every
    /// request thread of `threading` and every worker of `pool` (ignored by
    /// `synchronous`, `forking` and `prefork`, which start no threads; small stacks let
    /// thousands of idle connections fit), and `keep_alive` for
    /// `threading`'s threads (see `socketserver::Threading::keep_alive`).
    /// `demos echo serve --stack-size --keep-alive`.
    pub fn build_with(
        self,
        workers: Option<usize>,
        stack: Option<usize>,
        keep_alive: Option<Duration>,
    ) -> Box<dyn Strategy> {
        match self {
            StrategyName::Threading if stack.is_some() || keep_alive.is_some() => {
                let mut t = socketserver::Threading::new();
                if let Some(keep) = keep_alive {
                    t = t.keep_alive(keep);
                }
                if let Some(n) = stack {
                    t = t.stack_size(n);
                }
                Box::new(t)
            }
            StrategyName::Pool if stack.is_some() => {
                let pool = match workers {
                    Some(w) => socketserver::Pool::new(w.max(2)),
                    None => socketserver::Pool::default(),
                };
                Box::new(pool.stack_size(stack.unwrap_or_default()))
            }
            StrategyName::Green if stack.is_some() => {
                Box::new(socketserver::Green::new().stack_size(stack.unwrap_or_default()))
            }
            _ => self.build(workers),
        }
    }
}

impl std::fmt::Display for StrategyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
