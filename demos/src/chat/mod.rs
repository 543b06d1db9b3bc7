//! Chat: a TCP room ([`Room`]) and the classic two-person UDP chat made
//! multi-user ([`UdpRoom`]), with their clients ([`client`]).
//!
//! Both speak lines of text (`docs/protocols.md`, "Chat"):
//!
//! * **TCP**: the first line is the nickname; an empty, duplicate,
//!   over-long or malformed one gets a `* ` line saying why and the server
//!   asks again. Each later line goes to every *other* member as
//!   `nick: text`; joins and leaves are announced as `* ` lines; `/who`
//!   lists the members on one line, `/quit` leaves.
//! * **UDP**: the datagram `/nick NAME` registers the sender's address;
//!   each later datagram is relayed to every other registered peer as
//!   `NAME: text`. `/who` and `/quit` work as over TCP.
//!
//! Lines longer than [`MAX_LINE`] bytes are refused (not sent), invalid
//! UTF-8 and invisible or bidirectional format characters are replaced by
//! U+FFFD and control characters by `?` ([`clean`]), so no member can send
//! escape sequences to another's terminal or disguise text; nicknames are
//! visible words that cannot pass for another member's ([`check_nick`],
//! [`same_nick`]).
//!
//! # Strategies
//!
//! A chat room is state shared by every member, so it needs every member
//! served at the same time *in one process*: `threading` (default) and
//! `pool` (at most `--workers` members at once; later ones wait for a free
//! worker) can host it. `synchronous` serves one connection at a time (the
//! first member would block everyone else until it left) and `forking`
//! gives each member its own process with its own copy of the room (nobody
//! would ever see anybody else): both are refused with an explanation. The
//! UDP room handles one datagram at a time, so `synchronous` is its natural
//! strategy (default); `threading` and `pool` work too (messages from one
//! sender may then be relayed out of order); `forking` would update the
//! peer table in a child that exits at once, and is refused.

pub mod client;
mod tcp;
mod udp;

pub use tcp::{Room, RoomConfig};
pub use udp::{
    UdpRoom, UdpRoomConfig, DEFAULT_MAX_PEERS, DEFAULT_NICKS_PER_MINUTE, DEFAULT_NICK_BURST,
};

use std::io::{self, BufRead};

use crate::strategy::StrategyName;

/// Longest line (TCP) or message (UDP) accepted, in bytes, without the
/// line end.
pub const MAX_LINE: usize = 4096;

/// Longest nickname, in bytes.
pub const MAX_NICK: usize = 32;

/// Why `strategy` cannot host a TCP chat room, if it cannot.
pub fn tcp_strategy_problem(strategy: StrategyName) -> Option<&'static str> {
    match strategy {
        StrategyName::Synchronous => Some(
            "synchronous serves one connection at a time, so the first chat member would \
             block everyone else until it left; use threading, pool or green",
        ),
        StrategyName::Forking => Some(
            "forking serves each member in its own process with its own copy of the room, \
             so members would never see each other; use threading, pool or green",
        ),
        StrategyName::Prefork | StrategyName::PreforkThreading | StrategyName::PreforkGreen => {
            Some(
                "prefork serves members in several processes, each with its own copy of the \
                 room, so members would not all see each other; use threading, pool or green",
            )
        }
        StrategyName::Threading | StrategyName::Pool | StrategyName::Green => None,
    }
}

/// Why `strategy` cannot host a UDP chat room, if it cannot.
pub fn udp_strategy_problem(strategy: StrategyName) -> Option<&'static str> {
    match strategy {
        StrategyName::Forking
        | StrategyName::Prefork
        | StrategyName::PreforkThreading
        | StrategyName::PreforkGreen => Some(
            "forking and prefork handle datagrams in child processes, so a /nick would register \
             the peer in a copy of the peer table that vanishes with the child; use \
             synchronous (the default), threading, pool or green",
        ),
        _ => None,
    }
}

/// One line read from a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line, without its line end, invalid UTF-8 replaced, control
    /// characters replaced.
    Text(String),
    /// A line longer than the cap; it was read and discarded.
    TooLong,
    /// The peer closed its side.
    Eof,
}

/// Reads one line of at most `max` bytes (without `\n` or `\r\n`); a longer
/// one is consumed up to its end and reported as [`Line::TooLong`], so
/// memory stays bounded whatever the peer sends. A last line without `\n`
/// before EOF counts as a line.
pub fn read_line_capped(r: &mut impl BufRead, max: usize) -> io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = r.fill_buf()?;
        if available.is_empty() {
            if !any {
                return Ok(Line::Eof);
            }
            break;
        }
        any = true;
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        if !too_long {
            if line.len() + chunk.len() > max + 1 {
                // (+1: a `\r` before the `\n` does not count.)
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        r.consume(used);
        if done {
            break;
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if too_long || line.len() > max {
        return Ok(Line::TooLong);
    }
    Ok(Line::Text(clean(&line)))
}

/// Text safe to show on another member's terminal: invalid UTF-8 becomes
/// U+FFFD, control characters (other than tab) become `?`, and invisible
/// or bidirectional format characters ([`is_hidden`](crate::text::is_hidden):
/// U+202E, zero-width spaces and joiners, line separators...) become
/// U+FFFD, so that no member can send escape sequences to another's
/// terminal, reverse the text after it, or start a line that looks like
/// the server's. (A zero-width joiner inside an emoji sequence goes too:
/// the emoji then show one by one.)
///
/// ```
/// use demos::chat::clean;
/// assert_eq!(clean(b"\x1b[2J"), "?[2J");
/// assert_eq!(clean("abc\u{202e}fdp.exe".as_bytes()), "abc\u{fffd}fdp.exe");
/// ```
pub fn clean(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '?'
            } else if crate::text::is_hidden(c) {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// Checks a nickname; the error is the reason, for a `* ` line.
///
/// A nickname is one word of at most [`MAX_NICK`] bytes made of visible
/// characters only, so that every member sees who says what:
///
/// * letters and digits of any script (`émile`, `李`, `ольга`), with
///   combining accents after them, and ASCII punctuation but `:` and `?`
///   (`c++`, `o'neil`); not starting with `/` or `*`;
/// * at least one letter or digit (`...` or `-` alone is no name);
/// * no space, control character, invisible or bidirectional format
///   character (U+200B, U+202E, U+FEFF...), no letter that renders as blank
///   (U+3164 HANGUL FILLER), no other symbol or punctuation;
/// * letters of at most one of the Latin, Greek and Cyrillic scripts, so
///   that `аlice` with a Cyrillic `а` cannot pass for `alice`.
///
/// Whether a name is taken is decided by [`same_nick`], which also sees
/// through whole-script lookalikes.
pub fn check_nick(nick: &str) -> Result<(), String> {
    use crate::text::{code_point, is_blank_letter, is_hidden, script};
    if nick.is_empty() {
        return Err("nickname must not be empty".into());
    }
    if nick.len() > MAX_NICK {
        return Err(format!("nickname too long (at most {MAX_NICK} bytes)"));
    }
    let one_word = || {
        "nickname must be one word of text, without ':' or '?', not starting with '/' or '*'"
            .to_owned()
    };
    if nick.starts_with(['/', '*']) {
        return Err(one_word());
    }
    let mut after_base = false;
    for c in nick.chars() {
        let ok = if c.is_ascii() {
            c.is_ascii_graphic() && !matches!(c, ':' | '?')
        } else if is_hidden(c) || c.is_control() {
            return Err(format!(
                "nickname holds {}, an invisible or control character",
                code_point(c)
            ));
        } else if matches!(c, '\u{0300}'..='\u{036f}') {
            after_base
        } else {
            c.is_alphanumeric() && !is_blank_letter(c)
        };
        if !ok {
            if c == '\u{fffd}' {
                // What `clean` made of invalid UTF-8 or a hidden character.
                return Err("nickname holds an invisible or invalid character".into());
            }
            if c.is_whitespace() || matches!(c, ':' | '?') {
                return Err(one_word());
            }
            return Err(format!(
                "nickname holds {} ({c}): only letters, digits and ASCII punctuation",
                code_point(c)
            ));
        }
        after_base = c.is_alphanumeric();
    }
    if !nick.chars().any(char::is_alphanumeric) {
        return Err("nickname must hold a letter or a digit".into());
    }
    let mut scripts = nick.chars().filter_map(script);
    if let Some(first) = scripts.next() {
        if scripts.any(|s| s != first) {
            return Err(
                "nickname mixes Latin, Greek or Cyrillic letters (a lookalike of another name)"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Whether two nicknames count as the same: case-insensitive, and through
/// lookalikes ([`skeleton`](crate::text::skeleton)), so that neither
/// `Alice`, `aIice` (a capital I) nor an all-Cyrillic `асе` can pass for
/// `alice` or `ace`.
pub fn same_nick(a: &str, b: &str) -> bool {
    crate::text::skeleton(a) == crate::text::skeleton(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut r = io::BufReader::with_capacity(7, input);
        let mut out = Vec::new();
        loop {
            let l = read_line_capped(&mut r, max).unwrap();
            out.push(l.clone());
            if l == Line::Eof {
                return out;
            }
        }
    }

    #[test]
    fn capped_lines() {
        use Line::*;
        let t = |s: &str| Text(s.to_owned());
        assert_eq!(
            lines(b"hi\r\nthere\n\nlast", 8),
            [t("hi"), t("there"), t(""), t("last"), Eof]
        );
        assert_eq!(lines(b"0123456789abcdef\nok\n", 8), [TooLong, t("ok"), Eof]);
        assert_eq!(
            lines(b"12345678\n123456789\n", 8),
            [t("12345678"), TooLong, Eof]
        );
        assert_eq!(lines(b"12345678\r\n", 8), [t("12345678"), Eof]);
        assert_eq!(lines(b"a\xffb\x1b[31m\n", 64), [t("a\u{fffd}b?[31m"), Eof]);
    }

    #[test]
    fn nicknames() {
        for good in [
            "alice",
            "émile",
            "e\u{301}mile",
            "c++",
            "o'neil",
            "ольга",
            "李",
            "x2",
        ] {
            assert!(check_nick(good).is_ok(), "{good:?}: {:?}", check_nick(good));
        }
        for bad in [
            "",
            "a b",
            "/who",
            "*x",
            "a:b",
            &"x".repeat(MAX_NICK + 1),
            "alice\u{200b}",
            "\u{202e}ecila",
            "al\u{feff}ice",
            "\u{3164}",
            "\u{2800}\u{2800}",
            "...",
            "\u{301}a",
            "аlice",
            "a\u{2215}b",
            "bob\u{1b}",
        ] {
            assert!(check_nick(bad).is_err(), "{bad:?}");
        }
        assert!(same_nick("Alice", "alice"));
        assert!(same_nick("асе", "ace"));
        assert!(!same_nick("bob", "rob"));
    }
}
