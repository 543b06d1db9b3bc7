//! The authentication handshake's messages, from either side: a server
//! reading any bytes as its client's answer refuses it (`PermissionDenied`,
//! without a panic: nobody guesses an HMAC of a fresh challenge) after
//! sending exactly one challenge frame; a client reading any bytes as the
//! server's challenge and reply succeeds exactly when they are a 32-byte
//! challenge frame then the `OK` frame, and then has sent exactly one
//! 32-byte answer frame.
#![no_main]

use std::io::{self, ErrorKind, Read, Write};

use libfuzzer_sys::fuzz_target;
use socketserver::auth::{self, Key, CHALLENGE_LEN, RESPONSE_LEN};

/// Reads come from the fuzzer's bytes, writes go to `sent`.
struct Peer<'a> {
    input: &'a [u8],
    sent: Vec<u8>,
}

impl Read for Peer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Peer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sent.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn frame(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap().to_be_bytes()
}

fuzz_target!(|data: &[u8]| {
    let key = Key::new("fuzzing key").unwrap();

    let mut server = Peer {
        input: data,
        sent: Vec::new(),
    };
    let e = auth::server_handshake(&mut server, &key).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert_eq!(server.sent.len(), 4 + CHALLENGE_LEN);
    assert_eq!(server.sent[..4], frame(CHALLENGE_LEN));

    let mut client = Peer {
        input: data,
        sent: Vec::new(),
    };
    let result = auth::client_handshake(&mut client, &key);
    let well_formed = data.len() == 4 + CHALLENGE_LEN + 6
        && data[..4] == frame(CHALLENGE_LEN)
        && data[4 + CHALLENGE_LEN..] == *b"\0\0\0\x02OK";
    // Bytes after the OK belong to the application: a longer input that
    // starts with a well-formed exchange succeeds too.
    let starts_well_formed = data.len() >= 4 + CHALLENGE_LEN + 6
        && data[..4] == frame(CHALLENGE_LEN)
        && data[4 + CHALLENGE_LEN..4 + CHALLENGE_LEN + 6] == *b"\0\0\0\x02OK";
    assert_eq!(result.is_ok(), starts_well_formed, "{result:?}");
    if well_formed {
        assert!(result.is_ok());
    }
    let challenge_ok = data.len() >= 4 + CHALLENGE_LEN && data[..4] == frame(CHALLENGE_LEN);
    if challenge_ok {
        assert_eq!(client.sent.len(), 4 + RESPONSE_LEN);
        assert_eq!(client.sent[..4], frame(RESPONSE_LEN));
    } else {
        assert!(client.sent.is_empty(), "no answer without a challenge");
    }
});
