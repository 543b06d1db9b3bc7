//! The PROXY protocol (versions 1 and 2): the real client's address behind
//! a load balancer such as `HAProxy`, nginx or an AWS Network Load Balancer.
//!
//! A proxy in front of the server connects to it on the client's behalf, so
//! the socket's peer is the proxy. With the PROXY protocol the proxy first
//! sends a short header naming the client; turned on with
//! [`Builder::proxy_protocol`](crate::Builder::proxy_protocol), the server
//! reads that header before the handler runs, and from then on
//! [`StreamRequest::peer_addr`](crate::StreamRequest::peer_addr),
//! `verify_request`, `max_per_ip` and the logs see the client, while
//! [`StreamRequest::proxy_addr`](crate::StreamRequest::proxy_addr) gives the
//! proxy.
//!
//! ```
//! use socketserver::proxy::{IpNet, ProxyProtocol};
//! use socketserver::{Server, StreamRequest, Threading};
//! use std::io::{BufRead, Read, Write};
//!
//! let server = Server::builder()
//!     .strategy(Threading::new())
//!     .proxy_protocol(ProxyProtocol::Required {
//!         trusted: vec!["127.0.0.1".parse::<IpNet>()?],
//!     })
//!     .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
//!         let client = req.peer_addr().to_string();
//!         writeln!(req, "hello {client}")
//!     })?;
//! let addr = server.local_addr().unwrap();
//! let stop = server.shutdown_handle();
//! let serving = std::thread::spawn(move || server.serve_forever());
//!
//! // What HAProxy (`send-proxy`) sends before the client's bytes:
//! let mut proxy = std::net::TcpStream::connect(addr)?;
//! proxy.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n")?;
//! let mut reply = String::new();
//! std::io::BufReader::new(&proxy).read_line(&mut reply)?;
//! assert_eq!(reply, "hello 203.0.113.7:51000\n");
//!
//! stop.shutdown();
//! serving.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is read, and when
//!
//! The header is read in the request's own thread (or worker, or child),
//! before `verify_request`, `setup` and `handle`, never by the accepting
//! loop: a slow proxy holds up its own connection only. (Under
//! [`Synchronous`](crate::Synchronous) every request runs in the loop, the
//! header too.) The whole header must arrive within the header timeout
//! ([`DEFAULT_HEADER_TIMEOUT`], 3 s, set with
//! [`Builder::proxy_header_timeout`](crate::Builder::proxy_header_timeout)),
//! however it is split: a header sent a byte at a time is read, as long as
//! its last byte arrives in time. A version 1 header has at most
//! [`MAX_V1_HEADER`] bytes, a version 2 header at most 16 +
//! [`MAX_V2_PAYLOAD`]; a larger one is refused. Bytes the client sent after
//! the header stay buffered in the request for the handler.
//!
//! A header is parsed only from a **trusted** source: a connection from an
//! IP address in the `trusted` list (any address of a listed network), or
//! any connection on a Unix socket (whose file permissions decide who may
//! connect). With [`ProxyProtocol::Required`] a connection that is not
//! trusted, or sends no valid header in time, is closed before any handler
//! code runs; it is counted in [`Stats::refused`](crate::Stats::refused)
//! and logged at warn level at most once a second. With
//! [`ProxyProtocol::Optional`] an untrusted connection is served as itself
//! (its own address, nothing parsed: a client cannot claim another address),
//! and so is a trusted one whose first bytes are not a header; a trusted
//! connection that sends nothing at all is served as itself once the header
//! timeout passes, so `Optional` suits protocols where the client speaks
//! first.
//!
//! A version 2 `LOCAL` header (a health check of the proxy's own) and a
//! version 1 `UNKNOWN` header mean "no client": the connection is served with
//! its own address, and [`proxy_addr`](crate::StreamRequest::proxy_addr) is
//! `None`.
//!
//! Under [`Forking`](crate::Forking), `max_per_ip` does not apply (as
//! without the PROXY protocol: the count lives in each child).

use std::io::{self, Read};
use std::time::{Duration, Instant};

pub(crate) mod header;

use crate::conn::Conn;
use crate::connections::Registry;
pub use crate::ipnet::{IpNet, IpNetParseError};
use crate::refusal::Refusal;
use crate::{Address, StreamRequest};
#[cfg(fuzzing)]
pub use header::fuzz_parse;
#[cfg(test)]
use header::V2_SIGNATURE;
pub(crate) use header::{parse, Parse, Said};
pub use header::{ProxyHeader, Tlv, MAX_V1_HEADER, MAX_V2_PAYLOAD};

/// Default time for the whole PROXY header to arrive: 3 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether, and from whom, the server takes a PROXY header (see the
/// [module documentation](self)).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ProxyProtocol {
    /// No PROXY protocol: the socket's peer is the client (the default).
    #[default]
    Off,
    /// Every connection must come from a trusted proxy and start with a
    /// valid header; any other is closed before the handler runs.
    Required {
        /// The proxies' addresses or networks.
        trusted: Vec<IpNet>,
    },
    /// A connection from a trusted proxy may start with a header; one
    /// without a header, and any connection from elsewhere, is served with
    /// its own address.
    Optional {
        /// The proxies' addresses or networks.
        trusted: Vec<IpNet>,
    },
}

impl ProxyProtocol {
    fn trusted(&self) -> &[IpNet] {
        match self {
            ProxyProtocol::Off => &[],
            ProxyProtocol::Required { trusted } | ProxyProtocol::Optional { trusted } => trusted,
        }
    }

    /// Whether a header is taken from a connection whose socket peer is
    /// `peer`: any Unix socket peer, an IP peer in the trusted list.
    pub fn trusts(&self, peer: &Address) -> bool {
        match peer {
            _ if *self == ProxyProtocol::Off => false,
            Address::Unix(_) => true,
            Address::Inet(a) => self.trusted().iter().any(|net| net.contains(a.ip())),
        }
    }
}

/// How reading the start of a connection ended.
#[derive(Debug)]
enum Read0 {
    /// A complete header and the bytes read after it.
    Header {
        version: u8,
        said: Said,
        rest: Vec<u8>,
    },
    /// The first bytes are not a header; here they are.
    NotProxy(Vec<u8>),
    /// End-of-file, or the timeout, before any byte.
    Nothing { eof: bool },
    /// A wrong, oversized or incomplete header.
    Failed(String),
}

/// Reads until `parse` decides, within `timeout` in all.
fn read_start(conn: &Conn, timeout: Duration) -> Read0 {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 16 + MAX_V2_PAYLOAD];
    let mut filled = 0;
    loop {
        match parse(&buf[..filled]) {
            Parse::Header { version, len, said } => {
                return Read0::Header {
                    version,
                    said,
                    rest: buf[len..filled].to_vec(),
                }
            }
            Parse::NotProxy => return Read0::NotProxy(buf[..filled].to_vec()),
            Parse::Invalid(why) => return Read0::Failed(why),
            Parse::Incomplete => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return if filled == 0 {
                Read0::Nothing { eof: false }
            } else {
                Read0::Failed(format!(
                    "header incomplete after {timeout:?} ({filled} bytes)"
                ))
            };
        }
        // Never zero: a zero timeout means "none" to the socket.
        if let Err(e) = conn.set_read_timeout(Some(left.max(Duration::from_millis(1)))) {
            return Read0::Failed(format!("cannot set the header timeout: {e}"));
        }
        // `parse` decides at the latest when the buffer is full: a v1
        // header is decided within 107 bytes, a v2 one within 16 + 512.
        match (&*conn).read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Read0::Nothing { eof: true },
            Ok(0) => {
                return Read0::Failed(format!(
                    "connection closed inside the header ({filled} bytes)"
                ))
            }
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Read0::Failed(format!("reading the header: {e}")),
        }
    }
}

/// The server's PROXY protocol settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) mode: ProxyProtocol,
    pub(crate) timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: ProxyProtocol::Off,
            timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// What a server with the PROXY protocol on needs in each request.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) config: Config,
}

/// The PROXY header stage: reads the header of `req` (per the gate) and
/// sets the client's address. Returns whether to go on; when not, the
/// connection was counted as refused (and logged). The admission of the
/// client it names comes next ([`Admission::admit_client`]).
///
/// [`Admission::admit_client`]: crate::admission::Admission::admit_client
pub(crate) fn read_header(req: &mut StreamRequest, gate: &Gate, registry: &Registry) -> bool {
    let refuse = |peer: &Address, why: String| registry.refused(peer, &Refusal::Protocol(why));
    let socket_peer = req.peer_addr().clone();
    let mode = &gate.config.mode;
    let required = matches!(mode, ProxyProtocol::Required { .. });
    if !mode.trusts(&socket_peer) {
        if required {
            refuse(
                &socket_peer,
                "PROXY header from an untrusted address".into(),
            );
            return false;
        }
        // Optional: served as itself, nothing parsed.
    } else {
        match read_start(req.stream(), gate.config.timeout) {
            Read0::Header {
                version,
                said:
                    Said::Proxied {
                        client,
                        destination,
                        tlvs,
                    },
                rest,
            } => {
                log::debug!("{socket_peer}: PROXY v{version} header: client {client}");
                req.set_proxied(
                    ProxyHeader {
                        version,
                        proxy: socket_peer.clone(),
                        client,
                        destination,
                        tlvs,
                    },
                    &rest,
                );
            }
            Read0::Header {
                version,
                said: Said::Local,
                rest,
            } => {
                log::debug!(
                    "{socket_peer}: PROXY v{version} header without a client (LOCAL/UNKNOWN)"
                );
                req.unread(&rest);
            }
            Read0::NotProxy(bytes) if !required => req.unread(&bytes),
            Read0::NotProxy(_) => {
                refuse(
                    &socket_peer,
                    "no PROXY header (other bytes came first)".into(),
                );
                return false;
            }
            Read0::Nothing { eof: true } => {
                // Connected and closed without a byte: a proxy's plain TCP
                // check. Nothing to serve, nothing worth a warning.
                log::debug!("{socket_peer}: closed before sending a PROXY header");
                if required {
                    return false;
                }
                req.unread(&[]);
            }
            Read0::Nothing { eof: false } if !required => req.unread(&[]),
            Read0::Nothing { eof: false } => {
                let t = gate.config.timeout;
                refuse(&socket_peer, format!("no PROXY header within {t:?}"));
                return false;
            }
            Read0::Failed(why) => {
                refuse(&socket_peer, format!("bad PROXY header: {why}"));
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn v1_tcp4_is_parsed_with_its_length() {
        let h = b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\nrest";
        let Parse::Header { version, len, said } = parse(h) else {
            panic!("{:?}", parse(h))
        };
        assert_eq!((version, len), (1, h.len() - 4));
        assert_eq!(
            said,
            Said::Proxied {
                client: "192.0.2.1:1234".parse().unwrap(),
                destination: "192.0.2.2:80".parse().unwrap(),
                tlvs: vec![]
            }
        );
    }

    #[test]
    fn v1_every_prefix_is_incomplete_and_bad_forms_are_invalid() {
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n";
        for i in 0..h.len() {
            assert_eq!(parse(&h[..i]), Parse::Incomplete, "prefix {i}");
        }
        for bad in [
            &b"PROXY TCP4 1.2.3.4 1.2.3.5 01 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 1.2.3.5 65536 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.5 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.5 1 2\n",
            b"PROXY UDP4 1.2.3.4 1.2.3.5 1 2\r\n",
            format!("PROXY TCP4 {}", "1".repeat(MAX_V1_HEADER)).as_bytes(),
        ] {
            assert!(matches!(parse(bad), Parse::Invalid(_)), "{bad:?}");
        }
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parse::NotProxy);
        assert_eq!(parse(b"PROXX"), Parse::NotProxy);
    }

    #[test]
    fn v2_inet_unix_unspec_local_and_tlvs() {
        let mut body = vec![10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0, 80];
        body.extend_from_slice(&[0x05, 0, 3, b'a', b'b', b'c']);
        let Parse::Header { said, len, .. } = parse(&v2(1, 0x11, &body)) else {
            panic!()
        };
        assert_eq!(len, 16 + body.len());
        let Said::Proxied { client, tlvs, .. } = said else {
            panic!()
        };
        assert_eq!(client, "10.0.0.1:12345".parse().unwrap());
        assert_eq!(
            tlvs,
            vec![Tlv {
                kind: 5,
                value: b"abc".to_vec()
            }]
        );

        let mut unix = vec![0u8; 216];
        unix[..4].copy_from_slice(b"/a/b");
        let Parse::Header { said, .. } = parse(&v2(1, 0x31, &unix)) else {
            panic!()
        };
        assert!(
            matches!(said, Said::Proxied { client: Address::Unix(Some(p)), .. } if p.as_path() == std::path::Path::new("/a/b"))
        );

        assert!(matches!(
            parse(&v2(1, 0x00, &[])),
            Parse::Header {
                said: Said::Local,
                ..
            }
        ));
        // UNSPEC with address information of its own form (not TLVs):
        // ignored, not refused.
        assert!(matches!(
            parse(&v2(1, 0x00, &[0])),
            Parse::Header {
                said: Said::Local,
                len: 17,
                ..
            }
        ));
        assert!(matches!(
            parse(&v2(0, 0x11, &body)),
            Parse::Header {
                said: Said::Local,
                ..
            }
        ));
        // Bad: short addresses, cut TLV, unknown family, command, version,
        // oversized.
        assert!(matches!(
            parse(&v2(1, 0x11, &body[..11])),
            Parse::Invalid(_)
        ));
        assert!(matches!(
            parse(&v2(1, 0x11, &body[..body.len() - 1])),
            Parse::Invalid(_)
        ));
        assert!(matches!(parse(&v2(1, 0x41, &body)), Parse::Invalid(_)));
        assert!(matches!(parse(&v2(2, 0x11, &body)), Parse::Invalid(_)));
        let mut v3 = v2(1, 0x11, &body);
        v3[12] = 0x31;
        assert!(matches!(parse(&v3), Parse::Invalid(_)));
        let big = v2(1, 0x11, &vec![0; MAX_V2_PAYLOAD + 1]);
        assert!(matches!(parse(&big[..16]), Parse::Invalid(_)));
        let whole = v2(1, 0x11, &body);
        for i in 0..whole.len() {
            assert_eq!(parse(&whole[..i]), Parse::Incomplete, "prefix {i}");
        }
    }

    #[test]
    fn networks_contain_their_addresses_and_mapped_forms() {
        let net: IpNet = "192.168.0.0/16".parse().unwrap();
        assert!(net.contains("192.168.255.1".parse().unwrap()));
        assert!(net.contains("::ffff:192.168.1.1".parse().unwrap()));
        assert!(!net.contains("192.169.0.1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        for bad in ["10.0.0.0/", "10.0.0.0/+8", "::/129", "x", "10.0.0.0/8/8"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }
}
