//! The chat demo's line handling, fed what a member sends: lines are read
//! with a cap (any bytes, any buffer size), never a panic, each line text
//! without line ends or control characters (but tab), a line over the cap
//! reported as too long, and the input consumed whole; each line then goes
//! through what the room does with it (nickname check, lookalike
//! comparison, command or message).
#![no_main]

use std::io::BufReader;

use demos::chat::{check_nick, clean, read_line_capped, same_nick, Line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[capacity, max], input)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max = usize::from(max) * 4;
    let mut r = BufReader::with_capacity(usize::from(capacity).max(1), input);
    let newlines = input.iter().filter(|&&b| b == b'\n').count();
    let mut lines = 0;
    loop {
        match read_line_capped(&mut r, max).unwrap() {
            Line::Eof => break,
            Line::TooLong => {}
            Line::Text(text) => {
                assert!(!text.contains(['\n', '\r']));
                assert!(!text.chars().any(|c| c.is_control() && c != '\t'));
                assert_eq!(clean(text.as_bytes()), text, "clean text stays as it is");
                handle(&text);
            }
        }
        lines += 1;
        assert!(lines <= newlines + 1, "more lines than the input holds");
    }
    assert!(r.buffer().is_empty());
});

/// What the room does with a line: a nickname attempt, then a member's line.
fn handle(text: &str) {
    let nick = text.trim();
    if check_nick(nick).is_ok() {
        assert!(!nick.is_empty() && !nick.contains(char::is_whitespace));
        assert!(same_nick(nick, nick));
        let _ = same_nick(nick, "alice");
    }
    match text.trim_end() {
        "" | "/quit" | "/who" => {}
        cmd if cmd.starts_with('/') => {}
        line => assert!(!line.is_empty()),
    }
}
