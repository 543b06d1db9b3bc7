//! The PROXY protocol header on the wire, versions 1 (text) and 2
//! (binary): what a header says ([`ProxyHeader`], [`Tlv`]) and the parser
//! that decides, from the first bytes of a connection, whether they are a
//! header, part of one, or not one. It faces the network: it has property
//! tests (`properties.rs`) and a fuzz target. Reading the bytes off a
//! connection is the stage's, in `proxy.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use crate::Address;

/// Longest version 1 header, `PROXY` to `\r\n` included (the limit of the
/// specification).
pub const MAX_V1_HEADER: usize = 107;

/// Most bytes of addresses and TLVs after the 16 fixed bytes of a version 2
/// header: room for two Unix socket paths (216 bytes) and 296 bytes of TLVs.
/// A header announcing more is refused.
pub const MAX_V2_PAYLOAD: usize = 512;

/// The 12 bytes that open a version 2 header.
pub(crate) const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// One TLV (type, length, value) of a version 2 header: extra facts the
/// proxy sends, e.g. type `0x01` ALPN, `0x02` the TLS server name
/// (authority), `0x05` a unique connection id, `0x20` TLS details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    /// The type byte.
    pub kind: u8,
    /// The value.
    pub value: Vec<u8>,
}

/// What a PROXY header said about a proxied connection, from
/// [`StreamRequest::proxy_header`](crate::StreamRequest::proxy_header).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyHeader {
    /// The protocol version: 1 (text) or 2 (binary).
    pub version: u8,
    /// The proxy: the socket's own peer address.
    pub proxy: Address,
    /// The client, as the header names it (also
    /// [`peer_addr`](crate::StreamRequest::peer_addr)).
    pub client: Address,
    /// The address the client connected to, on the proxy.
    pub destination: Address,
    /// The TLVs of a version 2 header, in order (none for version 1).
    pub tlvs: Vec<Tlv>,
}

impl ProxyHeader {
    /// The value of the first TLV of type `kind`, if any.
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|t| t.kind == kind)
            .map(|t| t.value.as_slice())
    }
}

/// A header's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Said {
    /// `LOCAL` (v2) or `UNKNOWN` (v1), or an unspecified family: no client
    /// address, the connection stands for itself.
    Local,
    /// A proxied connection.
    Proxied {
        client: Address,
        destination: Address,
        tlvs: Vec<Tlv>,
    },
}

/// What the bytes read so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parse {
    /// A prefix of a header: read on.
    Incomplete,
    /// Not a header at all.
    NotProxy,
    /// A complete header of `len` bytes.
    Header { version: u8, len: usize, said: Said },
    /// A header that is wrong or too large.
    Invalid(String),
}

/// Parses the start of a connection's bytes.
pub(crate) fn parse(buf: &[u8]) -> Parse {
    if buf.is_empty() {
        return Parse::Incomplete;
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return parse_v2(buf);
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return parse_v1(buf);
    }
    Parse::NotProxy
}

/// The parser alone, for the fuzz targets (built by `cargo fuzz`, which
/// sets `--cfg fuzzing`): parses `buf` and panics if the answer is unsound.
/// A header found fits `buf` and the caps, reads the same from its own
/// bytes alone, and every prefix of it is incomplete.
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn fuzz_parse(buf: &[u8]) {
    let Parse::Header { version, len, said } = parse(buf) else {
        return;
    };
    assert!(len <= buf.len(), "a header of {len} bytes in {}", buf.len());
    match version {
        1 => assert!(len <= MAX_V1_HEADER),
        2 => assert!((16..=16 + MAX_V2_PAYLOAD).contains(&len)),
        v => panic!("version {v}"),
    }
    assert_eq!(parse(&buf[..len]), Parse::Header { version, len, said });
    for i in 0..len {
        assert_eq!(parse(&buf[..i]), Parse::Incomplete, "prefix of {i} bytes");
    }
}

fn parse_v1(buf: &[u8]) -> Parse {
    let window = &buf[..buf.len().min(MAX_V1_HEADER)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_V1_HEADER {
            Parse::Invalid(format!(
                "version 1 header longer than {MAX_V1_HEADER} bytes"
            ))
        } else {
            Parse::Incomplete
        };
    };
    if newline < 7 || buf[newline - 1] != b'\r' {
        return Parse::Invalid("version 1 header not ended by CRLF".into());
    }
    let Ok(line) = std::str::from_utf8(&buf[6..newline - 1]) else {
        return Parse::Invalid("version 1 header is not ASCII".into());
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let said = match fields[..] {
        ["UNKNOWN", ..] => Said::Local,
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = family == "TCP4";
            match (
                ip_v1(src, v4),
                ip_v1(dst, v4),
                port_v1(sport),
                port_v1(dport),
            ) {
                (Some(src), Some(dst), Some(sport), Some(dport)) => Said::Proxied {
                    client: Address::Inet(SocketAddr::new(src, sport)),
                    destination: Address::Inet(SocketAddr::new(dst, dport)),
                    tlvs: Vec::new(),
                },
                _ => {
                    return Parse::Invalid(format!("version 1 header with bad addresses: {line:?}"))
                }
            }
        }
        _ => return Parse::Invalid(format!("version 1 header not understood: {line:?}")),
    };
    Parse::Header {
        version: 1,
        len: newline + 1,
        said,
    }
}

fn ip_v1(s: &str, v4: bool) -> Option<IpAddr> {
    if v4 {
        s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

/// A port in a version 1 header: decimal digits, no leading zero, <= 65535.
fn port_v1(s: &str) -> Option<u16> {
    let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn parse_v2(buf: &[u8]) -> Parse {
    if buf.len() < 16 {
        return Parse::Incomplete;
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Parse::Invalid(format!("version 2 signature with version {version}"));
    }
    let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if payload > MAX_V2_PAYLOAD {
        return Parse::Invalid(format!(
            "version 2 header of {payload} bytes after the first 16: more than {MAX_V2_PAYLOAD}"
        ));
    }
    let len = 16 + payload;
    if buf.len() < len {
        return Parse::Incomplete;
    }
    let body = &buf[16..len];
    let said = match command {
        // LOCAL: the proxy speaks for itself (a health check); the
        // addresses, if any, are to be ignored.
        0 => Said::Local,
        1 => match parse_v2_addresses(buf[13], body) {
            Ok(said) => said,
            Err(why) => return Parse::Invalid(why),
        },
        c => return Parse::Invalid(format!("version 2 header with unknown command {c}")),
    };
    Parse::Header {
        version: 2,
        len,
        said,
    }
}

fn parse_v2_addresses(family: u8, body: &[u8]) -> Result<Said, String> {
    let (af, transport) = (family >> 4, family & 0x0f);
    if transport > 2 || af > 3 {
        return Err(format!(
            "version 2 header with unknown address family {family:#04x}"
        ));
    }
    let size = match af {
        1 => 12,
        2 => 36,
        3 => 216,
        // UNSPEC: "the receiver should ignore address information", of
        // whatever form and length it is; nothing in it is read, not even
        // as TLVs.
        _ => return Ok(Said::Local),
    };
    if body.len() < size {
        return Err(format!(
            "version 2 header too short for its addresses ({} bytes, {size} needed)",
            body.len()
        ));
    }
    let tlvs = parse_tlvs(&body[size..])?;
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let (client, destination) = match af {
        1 => {
            let ip = |at: usize| {
                IpAddr::from(<[u8; 4]>::try_from(&body[at..at + 4]).unwrap_or_default())
            };
            (
                Address::Inet(SocketAddr::new(ip(0), port(8))),
                Address::Inet(SocketAddr::new(ip(4), port(10))),
            )
        }
        2 => {
            let ip = |at: usize| {
                IpAddr::from(<[u8; 16]>::try_from(&body[at..at + 16]).unwrap_or_default())
            };
            (
                Address::Inet(SocketAddr::new(ip(0), port(32))),
                Address::Inet(SocketAddr::new(ip(16), port(34))),
            )
        }
        _ => (unix_v2(&body[..108]), unix_v2(&body[108..216])),
    };
    Ok(Said::Proxied {
        client,
        destination,
        tlvs,
    })
}

/// A Unix socket path of a version 2 header: up to the first NUL; an empty
/// or abstract one (leading NUL) has no path.
fn unix_v2(raw: &[u8]) -> Address {
    use std::os::unix::ffi::OsStrExt;
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let path = &raw[..end];
    Address::Unix((!path.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(path))))
}

fn parse_tlvs(mut rest: &[u8]) -> Result<Vec<Tlv>, String> {
    let mut tlvs = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 3 {
            return Err(format!("version 2 TLV cut short ({} bytes)", rest.len()));
        }
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        if rest.len() < 3 + len {
            return Err(format!(
                "version 2 TLV of type {:#04x} claims {len} bytes, {} left",
                rest[0],
                rest.len() - 3
            ));
        }
        tlvs.push(Tlv {
            kind: rest[0],
            value: rest[3..3 + len].to_vec(),
        });
        rest = &rest[3 + len..];
    }
    Ok(tlvs)
}
