//! The `listening on SCHEME://ADDR` lines, part of the command-line
//! contract (`docs/demos.md`): a server prints one per socket before it
//! serves, then `metrics on http://HOST:PORT/metrics` with `--metrics`; scripts, the showcase and the tests read them back with
//! [`parse_listening_line`], the one parser of that format.

use std::io::{self, Write};
use std::path::PathBuf;

use socketserver::Address;

const PREFIX: &str = "listening on ";

/// Prints `listening on SCHEME://ADDR` for each URL (each socket of each
/// service, in order), and flushes.
pub fn print_listening(
    out: &mut impl Write,
    urls: impl IntoIterator<Item = String>,
) -> io::Result<()> {
    for url in urls {
        writeln!(out, "{}", listening_line(&url))?;
    }
    out.flush()
}

/// Prints `metrics on http://HOST:PORT/metrics` for the metrics endpoint
/// bound at `addr`, and flushes.
pub fn print_metrics(out: &mut impl Write, addr: &Address) -> io::Result<()> {
    writeln!(out, "{METRICS_PREFIX}http://{addr}/metrics")?;
    out.flush()
}

/// Reads a `metrics on http://HOST:PORT/metrics` line back: the endpoint's
/// address.
pub fn parse_metrics_line(line: &str) -> Option<std::net::SocketAddr> {
    line.trim_end()
        .strip_prefix(METRICS_PREFIX)?
        .strip_prefix("http://")?
        .strip_suffix("/metrics")?
        .parse()
        .ok()
}

const METRICS_PREFIX: &str = "metrics on ";

/// The line a server prints for one socket: `listening on SCHEME://ADDR`.
pub fn listening_line(url: &str) -> String {
    format!("{PREFIX}{url}")
}

/// Reads the `listening on SCHEME://ADDR` line format back: returns the
/// scheme and the address (`tcp://127.0.0.1:4000` gives `("tcp",
/// 127.0.0.1:4000)`; `unix:///tmp/s` gives `("unix", unix:/tmp/s)`).
pub fn parse_listening_line(line: &str) -> Option<(String, Address)> {
    let url = line.trim_end().strip_prefix(PREFIX)?;
    let (scheme, rest) = url.split_once("://")?;
    let addr = match scheme {
        "tcp" | "udp" => Address::Inet(rest.parse().ok()?),
        "unix" | "unixgram" if rest.starts_with('/') || !rest.is_empty() => {
            Address::Unix(Some(PathBuf::from(rest)))
        }
        _ => return None,
    };
    Some((scheme.to_owned(), addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn listening_lines_parse() {
        let (s, a) = parse_listening_line("listening on tcp://127.0.0.1:4000\n").unwrap();
        assert_eq!(
            (s.as_str(), a.to_string().as_str()),
            ("tcp", "127.0.0.1:4000")
        );
        let (s, a) = parse_listening_line("listening on udp://[::1]:53").unwrap();
        assert_eq!((s.as_str(), a.as_inet().unwrap().port()), ("udp", 53));
        let (s, a) = parse_listening_line("listening on unixgram:///tmp/x.sock").unwrap();
        assert_eq!(s, "unixgram");
        assert_eq!(a.as_path().unwrap(), Path::new("/tmp/x.sock"));
        assert!(parse_listening_line("listening on ftp://1.2.3.4:5").is_none());
        assert!(parse_listening_line("hello").is_none());
    }

    #[test]
    fn a_metrics_line_parses_back() {
        let mut out = Vec::new();
        let addr = Address::Inet("127.0.0.1:9100".parse().unwrap());
        print_metrics(&mut out, &addr).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line, "metrics on http://127.0.0.1:9100/metrics\n");
        assert_eq!(
            parse_metrics_line(&line),
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert!(parse_metrics_line("listening on tcp://127.0.0.1:1").is_none());
    }

    #[test]
    fn a_printed_line_parses_back() {
        let line = listening_line("tcp://127.0.0.1:7000");
        let (scheme, addr) = parse_listening_line(&line).unwrap();
        assert_eq!(
            (scheme.as_str(), addr.to_string().as_str()),
            ("tcp", "127.0.0.1:7000")
        );
    }
}
