//! The UDP chat: the classic two-person UDP chat (one server, one person
//! answering by hand) made into a relay between any number of peers.
//!
//! A peer is an address that sent `/nick NAME`. Each later datagram from it
//! is relayed to every other peer as `NAME: text`. Peers silent for longer
//! than [`UdpRoomConfig::idle`] are forgotten. Every answer is one datagram
//! and one line of text; the server's own lines start with `* `.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socketserver::{Address, DatagramHandler, DatagramRequest};

use super::{check_nick, clean, same_nick, MAX_LINE};

/// Settings of a [`UdpRoom`].
#[derive(Debug, Clone)]
pub struct UdpRoomConfig {
    /// Longest message accepted, in bytes (default [`MAX_LINE`]).
    pub max_line: usize,
    /// A peer that sends nothing for this long is forgotten (default
    /// 10 minutes).
    pub idle: Duration,
}

impl Default for UdpRoomConfig {
    fn default() -> Self {
        UdpRoomConfig {
            max_line: MAX_LINE,
            idle: Duration::from_secs(600),
        }
    }
}

/// The UDP chat relay: the [`DatagramHandler`] of the UDP chat server.
#[derive(Debug, Default)]
pub struct UdpRoom {
    config: UdpRoomConfig,
    peers: Mutex<HashMap<Address, Peer>>,
}

#[derive(Debug)]
struct Peer {
    nick: String,
    last_seen: Instant,
}

impl DatagramHandler for UdpRoom {
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
        }
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
            if let Err(why) = check_nick(nick) {
                return (Some(format!("* {why}")), None);
            }
            if let Some((_, p)) = peers
                .iter()
                .find(|(a, p)| *a != from && same_nick(&p.nick, nick))
            {
                return (Some(format!("* nickname {} is taken", p.nick)), None);
            }
            let old = peers.insert(
                from.clone(),
                Peer {
                    nick: nick.to_owned(),
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
