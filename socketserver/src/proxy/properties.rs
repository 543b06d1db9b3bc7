//! Property tests of the PROXY header parser: every valid header, built from
//! arbitrary addresses, ports and TLVs, parses back to what it says; every
//! prefix of one is incomplete; any byte changed, or any bytes at all, give
//! an answer (a header, incomplete, not a header or an error), never a panic,
//! and a header found never claims more bytes than there are.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

/// A header as bytes, and what `parse` must make of it.
#[derive(Debug, Clone)]
struct Built {
    bytes: Vec<u8>,
    version: u8,
    said: Said,
}

fn ip_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
        (any::<[u8; 16]>(), any::<[u8; 16]>())
            .prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
    ]
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n`, or `PROXY UNKNOWN...\r\n`.
fn v1_header() -> impl Strategy<Value = Built> {
    let proxied = (ip_pair(), any::<u16>(), any::<u16>()).prop_map(|((src, dst), sp, dp)| {
        let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
        Built {
            bytes: format!("PROXY {family} {src} {dst} {sp} {dp}\r\n").into_bytes(),
            version: 1,
            said: Said::Proxied {
                client: Address::Inet(SocketAddr::new(src, sp)),
                destination: Address::Inet(SocketAddr::new(dst, dp)),
                tlvs: Vec::new(),
            },
        }
    });
    // UNKNOWN may carry anything printable up to the line's end.
    let unknown = "[ -~]{0,80}".prop_map(|tail| Built {
        bytes: format!(
            "PROXY UNKNOWN{}\r\n",
            if tail.is_empty() {
                String::new()
            } else {
                format!(" {tail}")
            }
        )
        .into_bytes(),
        version: 1,
        said: Said::Local,
    });
    prop_oneof![4 => proxied, 1 => unknown]
}

fn tlvs(room: usize) -> impl Strategy<Value = Vec<Tlv>> {
    vec(
        (any::<u8>(), vec(any::<u8>(), 0..64)).prop_map(|(kind, value)| Tlv { kind, value }),
        0..6,
    )
    .prop_map(move |mut tlvs| {
        // Keep the payload within MAX_V2_PAYLOAD.
        let mut used = 0;
        tlvs.retain(|t| {
            used += 3 + t.value.len();
            used <= room
        });
        tlvs
    })
}

/// A Unix socket path field: up to 108 bytes without NUL, then NUL padding.
fn unix_path() -> impl Strategy<Value = (Vec<u8>, Address)> {
    vec(1u8..=255, 0..=108).prop_map(|path| {
        let address = Address::Unix(
            (!path.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(&path))),
        );
        let mut field = path;
        field.resize(108, 0);
        (field, address)
    })
}

fn v2_bytes(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn encode_tlvs(body: &mut Vec<u8>, tlvs: &[Tlv]) {
    for t in tlvs {
        body.push(t.kind);
        body.extend_from_slice(&u16::try_from(t.value.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&t.value);
    }
}

/// A version 2 PROXY header (TCP or UDP over IPv4, IPv6 or Unix, with
/// TLVs), a LOCAL one, or an UNSPEC one.
fn v2_header() -> impl Strategy<Value = Built> {
    let inet = (
        ip_pair(),
        any::<u16>(),
        any::<u16>(),
        1u8..=2,
        tlvs(MAX_V2_PAYLOAD - 36),
    )
        .prop_map(|((src, dst), sp, dp, transport, tlvs)| {
            let mut body = Vec::new();
            let family = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    body.extend_from_slice(&s.octets());
                    body.extend_from_slice(&d.octets());
                    0x10
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    body.extend_from_slice(&s.octets());
                    body.extend_from_slice(&d.octets());
                    0x20
                }
                _ => unreachable!("ip_pair gives one family"),
            };
            body.extend_from_slice(&sp.to_be_bytes());
            body.extend_from_slice(&dp.to_be_bytes());
            encode_tlvs(&mut body, &tlvs);
            Built {
                bytes: v2_bytes(1, family | transport, &body),
                version: 2,
                said: Said::Proxied {
                    client: Address::Inet(SocketAddr::new(src, sp)),
                    destination: Address::Inet(SocketAddr::new(dst, dp)),
                    tlvs,
                },
            }
        });
    let unix = (
        unix_path(),
        unix_path(),
        1u8..=2,
        tlvs(MAX_V2_PAYLOAD - 216),
    )
        .prop_map(|((src, client), (dst, destination), transport, tlvs)| {
            let mut body = src;
            body.extend_from_slice(&dst);
            encode_tlvs(&mut body, &tlvs);
            Built {
                bytes: v2_bytes(1, 0x30 | transport, &body),
                version: 2,
                said: Said::Proxied {
                    client,
                    destination,
                    tlvs,
                },
            }
        });
    // LOCAL (whatever follows), or PROXY with the UNSPEC family: no
    // addresses to use.
    let local = (0u8..=1, vec(any::<u8>(), 0..64)).prop_map(|(command, body)| {
        let family = if command == 0 { 0x11 } else { 0x00 };
        Built {
            bytes: v2_bytes(command, family, &body),
            version: 2,
            said: Said::Local,
        }
    });
    prop_oneof![3 => inet, 2 => unix, 1 => local]
}

fn any_header() -> impl Strategy<Value = Built> {
    prop_oneof![v1_header(), v2_header()]
}

/// What may be said about any input: no panic, and a header's length fits
/// the input and the protocol's caps.
fn check_sound(buf: &[u8]) -> Result<(), TestCaseError> {
    if let Parse::Header { version, len, .. } = parse(buf) {
        prop_assert!(
            len <= buf.len(),
            "header of {len} bytes in {} bytes",
            buf.len()
        );
        match version {
            1 => prop_assert!(len <= MAX_V1_HEADER),
            2 => prop_assert!((16..=16 + MAX_V2_PAYLOAD).contains(&len)),
            v => prop_assert!(false, "version {v}"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_valid_header_parses_back_to_what_it_says(
        h in any_header(),
        after in vec(any::<u8>(), 0..32),
    ) {
        let mut wire = h.bytes.clone();
        wire.extend_from_slice(&after);
        prop_assert_eq!(
            parse(&wire),
            Parse::Header { version: h.version, len: h.bytes.len(), said: h.said.clone() }
        );
    }

    #[test]
    fn every_prefix_of_a_valid_header_is_incomplete(h in any_header()) {
        for i in 0..h.bytes.len() {
            prop_assert_eq!(parse(&h.bytes[..i]), Parse::Incomplete, "prefix of {} bytes", i);
        }
    }

    #[test]
    fn every_byte_flip_is_parsed_or_refused_never_a_panic(
        h in any_header(),
        after in vec(any::<u8>(), 0..8),
        mask in 1u8..=255,
    ) {
        let mut wire = h.bytes.clone();
        wire.extend_from_slice(&after);
        for i in 0..wire.len() {
            let mut flipped = wire.clone();
            flipped[i] ^= mask;
            check_sound(&flipped)?;
            // And every truncation of the flipped header too.
            for cut in [i, i + 1, flipped.len() / 2] {
                check_sound(&flipped[..cut.min(flipped.len())])?;
            }
        }
    }

    #[test]
    fn arbitrary_bytes_are_parsed_or_refused_never_a_panic(
        start in prop_oneof![
            Just(Vec::new()),
            Just(b"PROXY ".to_vec()),
            Just(V2_SIGNATURE.to_vec()),
        ],
        rest in vec(any::<u8>(), 0..700),
    ) {
        let mut wire = start;
        wire.extend_from_slice(&rest);
        for cut in 0..=wire.len().min(140) {
            check_sound(&wire[..cut])?;
        }
        check_sound(&wire)?;
    }

    #[test]
    fn a_cut_tlv_or_a_short_address_block_is_an_error(h in v2_header(), cut in 1usize..40) {
        // Shorten the declared payload by `cut` bytes (and the bytes with it):
        // a proxied header then loses part of a TLV or its addresses.
        let Said::Proxied { tlvs, .. } = &h.said else { return Ok(()) };
        let payload = h.bytes.len() - 16;
        let mut wire = h.bytes.clone();
        let cut = cut.min(payload);
        wire.truncate(wire.len() - cut);
        wire[14..16].copy_from_slice(&u16::try_from(payload - cut).unwrap().to_be_bytes());
        let ends_on_a_tlv_boundary = {
            let mut end = payload;
            let mut ends = vec![end];
            for t in tlvs.iter().rev() {
                end -= 3 + t.value.len();
                ends.push(end);
            }
            ends.contains(&(payload - cut))
        };
        let parsed = parse(&wire);
        if ends_on_a_tlv_boundary {
            let is_header = matches!(parsed, Parse::Header { .. });
            prop_assert!(is_header, "{:?}", parsed);
        } else {
            let is_invalid = matches!(parsed, Parse::Invalid(_));
            prop_assert!(is_invalid, "{:?}", parsed);
        }
    }
}
