//! The UDP chat: the classic two-person UDP chat (one server, one person
//! answering by hand) made into a relay between any number of peers.
//!
//! A peer is an address that sent `/nick NAME`. Each later datagram from it
//! is relayed to every other peer as `NAME: text`. Peers silent for longer
//! than [`UdpRoomConfig::idle`] are forgotten. Every answer is one datagram
//! and one line of text; the server's own lines start with `* `.
//!
//! Datagrams cost nothing to send and their source port is free to choose,
//! so the room bounds what anybody can make it do:
//!
//! * at most [`UdpRoomConfig::max_peers`] peers (default
//!   [`DEFAULT_MAX_PEERS`]): a `/nick` from a new address when the room is
//!   full is answered `* the room is full ...` and registers nothing (every
//!   message is relayed to every peer, so the table's size is the cost of
//!   each message);
//! * `/nick` (a registration or a change of name, each of which scans the
//!   table and is announced to every peer) is rate-limited per source *IP
//!   address*, whatever the port: a burst of [`UdpRoomConfig::nick_burst`],
//!   then [`UdpRoomConfig::nicks_per_minute`]. Over the limit the answer is
//!   `* too many /nick ...` and nothing changes.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socketserver::{Address, DatagramHandler, DatagramRequest};

use super::{check_nick, clean, MAX_LINE};
use crate::text::skeleton;

/// Default cap on registered peers.
pub const DEFAULT_MAX_PEERS: usize = 1024;

/// Default `/nick` burst per source IP address.
pub const DEFAULT_NICK_BURST: u32 = 10;

/// Default `/nick` rate per source IP address, once the burst is spent.
pub const DEFAULT_NICKS_PER_MINUTE: u32 = 120;

/// Settings of a [`UdpRoom`].
#[derive(Debug, Clone)]
pub struct UdpRoomConfig {
    /// Longest message accepted, in bytes (default [`MAX_LINE`]).
    pub max_line: usize,
    /// A peer that sends nothing for this long is forgotten (default
    /// 10 minutes).
    pub idle: Duration,
    /// At most this many peers (default [`DEFAULT_MAX_PEERS`]).
    pub max_peers: usize,
    /// `/nick` requests one source IP address may send at once (default
    /// [`DEFAULT_NICK_BURST`]).
    pub nick_burst: u32,
    /// `/nick` requests per minute one source IP address may send once its
    /// burst is spent (default [`DEFAULT_NICKS_PER_MINUTE`]).
    pub nicks_per_minute: u32,
}

impl Default for UdpRoomConfig {
    fn default() -> Self {
        UdpRoomConfig {
            max_line: MAX_LINE,
            idle: Duration::from_secs(600),
            max_peers: DEFAULT_MAX_PEERS,
            nick_burst: DEFAULT_NICK_BURST,
            nicks_per_minute: DEFAULT_NICKS_PER_MINUTE,
        }
    }
}

/// The UDP chat relay: the [`DatagramHandler`] of the UDP chat server.
#[derive(Debug, Default)]
pub struct UdpRoom {
    config: UdpRoomConfig,
    peers: Mutex<HashMap<Address, Peer>>,
    /// `/nick` budgets per source, at most [`UdpRoom::max_sources`].
    budgets: Mutex<HashMap<Source, Bucket>>,
}

/// Whom a `/nick` budget belongs to: an IP address (any port), or a Unix
/// socket's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    Ip(IpAddr),
    Other(Address),
}

impl Source {
    fn of(addr: &Address) -> Source {
        match addr.as_inet() {
            Some(a) => Source::Ip(a.ip().to_canonical()),
            None => Source::Other(addr.clone()),
        }
    }
}

/// A token bucket: `tokens` left, refilled continuously.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
struct Peer {
    nick: String,
    /// What the nickname looks like ([`skeleton`]), to tell lookalikes.
    look: String,
    last_seen: Instant,
}

impl DatagramHandler for UdpRoom {
    fn handle_error(&self, peer: &socketserver::Address, error: &socketserver::RequestError) {
        crate::logging::log_client_error("udp chat", peer, error);
    }

    fn handle(&self, req: &mut DatagramRequest) -> io::Result<()> {
        if req.data().len() > self.config.max_line {
            let max = self.config.max_line;
            return req
                .reply(format!("* message too long (over {max} bytes), not sent").as_bytes());
        }
        let text = clean(req.data());
        let text = text.trim_end_matches(['\r', '\n']);
        let from = req.peer_addr().clone();
        let (answer, relay) = self.respond(&from, text);
        if let Some((line, to)) = relay {
            for peer in to {
                if let Err(e) = req.socket().send_to(line.as_bytes(), &peer) {
                    log::debug!("udp chat: relaying to {peer}: {e}");
                }
            }
        }
        match answer {
            Some(answer) => req.reply(answer.as_bytes()),
            None => Ok(()),
        }
    }

    /// Runs at least every few seconds (the server's `service_interval`):
    /// forgets idle peers even when nobody talks.
    fn service_actions(&self) {
        self.forget_idle(&mut self.peers.lock(), Instant::now());
    }
}

/// A line and where to send it.
type Relay = Option<(String, Vec<Address>)>;

impl UdpRoom {
    /// An empty room.
    pub fn new(config: UdpRoomConfig) -> UdpRoom {
        UdpRoom {
            config,
            peers: Mutex::default(),
            budgets: Mutex::default(),
        }
    }

    /// How many sources' `/nick` budgets are kept at most.
    fn max_sources(&self) -> usize {
        self.config.max_peers.saturating_mul(4).max(256)
    }

    /// Takes one `/nick` from `from`'s budget; false if it is spent (or if
    /// too many sources are being tracked at once).
    fn allow_nick(&self, from: &Address, now: Instant) -> bool {
        let burst = f64::from(self.config.nick_burst.max(1));
        let per_sec = f64::from(self.config.nicks_per_minute) / 60.0;
        let refill = |b: &Bucket| {
            (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec).min(burst)
        };
        let mut budgets = self.budgets.lock();
        let key = Source::of(from);
        if !budgets.contains_key(&key) && budgets.len() >= self.max_sources() {
            // Forget the sources whose budget is whole again: they are as
            // new.
            budgets.retain(|_, b| refill(b) < burst);
            if budgets.len() >= self.max_sources() {
                return false;
            }
        }
        let b = budgets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = refill(b);
        b.at = now;
        if b.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        true
    }

    /// The registered nicknames, sorted.
    pub fn peers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.peers.lock().values().map(|p| p.nick.clone()).collect();
        names.sort();
        names
    }

    /// What to answer the sender, and what to relay to whom. The table is
    /// locked only here; the sending happens after.
    fn respond(&self, from: &Address, text: &str) -> (Option<String>, Relay) {
        let now = Instant::now();
        let mut peers = self.peers.lock();
        self.forget_idle(&mut peers, now);
        let others = |peers: &HashMap<Address, Peer>| -> Vec<Address> {
            peers.keys().filter(|a| *a != from).cloned().collect()
        };
        if let Some(nick) = text
            .strip_prefix("/nick")
            .filter(|r| r.is_empty() || r.starts_with(' '))
        {
            let nick = nick.trim();
            if !self.allow_nick(from, now) {
                log::debug!("udp chat: {from}: /nick over its rate limit");
                return (
                    Some(format!(
                        "* too many /nick from your address (at most {} at once, then {} a \
                         minute); try again later",
                        self.config.nick_burst, self.config.nicks_per_minute
                    )),
                    None,
                );
            }
            if let Err(why) = check_nick(nick) {
                return (Some(format!("* {why}")), None);
            }
            if !peers.contains_key(from) && peers.len() >= self.config.max_peers {
                log::debug!("udp chat: {from}: refused, the room is full");
                return (
                    Some(format!(
                        "* the room is full ({} peers); try again later",
                        self.config.max_peers
                    )),
                    None,
                );
            }
            let look = skeleton(nick);
            if let Some((_, p)) = peers.iter().find(|(a, p)| *a != from && p.look == look) {
                return (Some(format!("* nickname {} is taken", p.nick)), None);
            }
            let old = peers.insert(
                from.clone(),
                Peer {
                    nick: nick.to_owned(),
                    look,
                    last_seen: now,
                },
            );
            let notice = match old {
                Some(old) => format!("* {} is now {nick}", old.nick),
                None => {
                    log::info!("udp chat: {from} joined as {nick}");
                    format!("* {nick} joined")
                }
            };
            let mut names: Vec<&str> = peers.values().map(|p| p.nick.as_str()).collect();
            names.sort_unstable();
            let welcome = format!(
                "* welcome {nick}; online: {} (/who lists peers, /quit leaves)",
                names.join(", ")
            );
            return (Some(welcome), Some((notice, others(&peers))));
        }
        let Some(me) = peers.get_mut(from) else {
            return (
                Some("* send /nick NAME first to join the chat".into()),
                None,
            );
        };
        me.last_seen = now;
        let nick = me.nick.clone();
        match text {
            "" => (None, None),
            "/who" => {
                let mut names: Vec<&str> = peers.values().map(|p| p.nick.as_str()).collect();
                names.sort_unstable();
                let who = format!("* peers ({}): {}", names.len(), names.join(", "));
                (Some(who), None)
            }
            "/quit" => {
                peers.remove(from);
                log::info!("udp chat: {nick} ({from}) left");
                (
                    Some("* bye".into()),
                    Some((format!("* {nick} left"), others(&peers))),
                )
            }
            cmd if cmd.starts_with('/') => (
                Some(format!(
                    "* unknown command {cmd}; try /nick NAME, /who or /quit"
                )),
                None,
            ),
            text => (None, Some((format!("{nick}: {text}"), others(&peers)))),
        }
    }

    /// Removes peers silent for longer than `idle`.
    fn forget_idle(&self, peers: &mut HashMap<Address, Peer>, now: Instant) {
        let idle = self.config.idle;
        peers.retain(|addr, p| {
            let keep = now.duration_since(p.last_seen) <= idle;
            if !keep {
                log::info!(
                    "udp chat: forgot {} ({addr}): silent for more than {idle:?}",
                    p.nick
                );
            }
            keep
        });
    }
}
