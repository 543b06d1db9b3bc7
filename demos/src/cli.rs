//! Command-line pieces shared by every demo: the options every server
//! takes ([`ServerArgs`], [`DatagramArgs`], flattened into each `serve`
//! subcommand), parsing addresses, seconds and byte sizes, and the one
//! error type of the command line (a one-line message and an exit status).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use socketserver::transport::Keepalive;
use socketserver::{Address, Builder, Strategy};

use crate::logging::LogTarget;
use crate::strategy::StrategyName;

/// Where servers listen unless told otherwise: loopback, a free port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:0";

/// Parses a command-line address: `HOST:PORT` (host names resolve, e.g.
/// `localhost:7000`), `[V6]:PORT` or `unix:PATH`. The error is one line.
pub fn parse_address(s: &str) -> Result<Address, String> {
    if s == "unix:" {
        return Err("unix: needs a path, e.g. unix:/tmp/chat.sock".into());
    }
    Address::resolve(s).map_err(|e| {
        format!("{e} (expected HOST:PORT, [V6]:PORT or unix:PATH, e.g. 127.0.0.1:7000)")
    })
}

/// Options every server takes: `--listen` (repeatable), `--listen-plain`,
/// `--strategy`, `--workers`, `--drain-secs`, `--keepalive`, and the
/// operator's ([`OpsArgs`]).
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Stream address: HOST:PORT (TCP) or unix:PATH (Unix stream).
    /// Repeatable: one server on every address given (one handler, one set
    /// of counters, one drain, one upgrade), each printed on a `listening
    /// on` line of its own, in order. With TLS, every --listen speaks it.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = DEFAULT_LISTEN,
        value_parser = parse_address,
        action = clap::ArgAction::Append
    )]
    pub listen: Vec<Address>,
    /// With TLS (--tls-cert): also listen on ADDR in plaintext
    /// (repeatable), a loopback address or a Unix socket only, e.g. for
    /// local scripts beside a public TLS port. Printed after the --listen
    /// lines.
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub listen_plain: Vec<Address>,
    /// How each connection is served [default: threading].
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub strategy: Option<StrategyName>,
    /// Worker threads of the pool strategy (at most that many connections
    /// served at once) [default: 16, or 2 per core].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Seconds running requests get to finish after SIGINT/SIGTERM (clients
    /// waiting between two messages are closed at once).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    pub drain_secs: Duration,
    /// TCP keepalive: seconds of silence before a connection is probed,
    /// then a probe every SECS/3 (at least 1 s), 3 of them, so a client
    /// that vanished without a word (link cut, machine off) is noticed
    /// within about 2 x SECS; 0 turns it off. (Not `--keep-alive`, the
    /// threading strategy's idle threads.)
    #[arg(long, value_name = "SECS", default_value = "15", value_parser = parse_secs)]
    pub keepalive: Duration,
    /// Accept clients from this network only (repeatable: any of them),
    /// e.g. `127.0.0.0/8` or `::1`; checked against the real client (after
    /// a PROXY header). Unix socket clients are not checked.
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<socketserver::IpNet>,
    /// Refuse clients from this network (repeatable), whatever --allow says.
    #[arg(long = "deny", value_name = "CIDR")]
    pub deny: Vec<socketserver::IpNet>,
    /// Pid file, privileges, metrics, log target.
    #[command(flatten)]
    pub ops: OpsArgs,
}

impl ServerArgs {
    /// Where the stream server listens: `--listen` and `--listen-plain`.
    pub fn addresses(&self) -> Addresses {
        Addresses {
            listen: self.listen.clone(),
            plain: self.listen_plain.clone(),
        }
    }

    /// The first `--listen` address (for messages).
    pub fn first_listen(&self) -> &Address {
        &self.listen[0]
    }

    /// Refuses `--listen-plain` where it cannot be kept: on a server that
    /// speaks no TLS (`tls` false: every --listen is plain already), or on
    /// an address beyond loopback (plaintext is for local clients).
    pub fn check_plain(&self, tls: bool) -> Result<(), CliError> {
        let Some(first) = self.listen_plain.first() else {
            return Ok(());
        };
        if !tls {
            return Err(CliError::usage(format!(
                "--listen-plain {first}: the server speaks no TLS (no --tls-cert), so every \
                 --listen is plain already; use --listen"
            )));
        }
        if let Some(remote) = self.listen_plain.iter().find(|a| !a.is_local()) {
            return Err(CliError::usage(format!(
                "--listen-plain {remote}: a plaintext listener beside TLS must be a loopback \
                 address or a Unix socket; serve it with --listen (TLS) instead"
            )));
        }
        Ok(())
    }

    /// The strategy of the stream server: `--strategy`, or threading.
    pub fn strategy(&self) -> StrategyName {
        self.strategy.unwrap_or(StrategyName::Threading)
    }

    /// The TCP keepalive `--keepalive` asks for (`None` for 0).
    ///
    /// ```
    /// use clap::Parser;
    /// use std::time::Duration;
    ///
    /// #[derive(Parser)]
    /// struct Cli {
    ///     #[command(flatten)]
    ///     server: demos::cli::ServerArgs,
    /// }
    /// let k = Cli::parse_from(["x"]).server.keepalive().unwrap();
    /// assert_eq!(k, socketserver::transport::Keepalive::default());
    /// let k = Cli::parse_from(["x", "--keepalive", "6"]).server.keepalive().unwrap();
    /// assert_eq!(k.time_to_notice(), Duration::from_secs(12));
    /// assert!(Cli::parse_from(["x", "--keepalive", "0"]).server.keepalive().is_none());
    /// ```
    pub fn keepalive(&self) -> Option<Keepalive> {
        (!self.keepalive.is_zero()).then(|| {
            Keepalive::default()
                .idle(self.keepalive)
                .interval(self.keepalive / 3)
                .count(3)
        })
    }

    /// Gives `builder` the options of accepted connections: `--keepalive`,
    /// `--allow`, `--deny`.
    pub fn configure<S: Strategy>(&self, builder: Builder<S>) -> Builder<S> {
        let mut builder = builder.keepalive(self.keepalive());
        for net in &self.allow {
            builder = builder.allow(*net);
        }
        for net in &self.deny {
            builder = builder.deny(*net);
        }
        builder
    }
}

/// Options of servers that also serve datagrams (echo, chat): `--udp`,
/// `--udp-strategy`.
#[derive(Debug, Clone, Args)]
pub struct DatagramArgs {
    /// Also serve datagrams: HOST:PORT (UDP) or unix:PATH (Unix datagram).
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub udp: Option<Address>,
    /// How each datagram is served [default: echo: as --strategy; chat:
    /// synchronous].
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub udp_strategy: Option<StrategyName>,
}

/// A command-line failure: the one-line message (printed as `demos: ...`)
/// and the exit status (2 for bad usage or configuration, 1 otherwise).
#[derive(Debug)]
pub struct CliError {
    /// What went wrong, one line.
    pub message: String,
    /// The exit status.
    pub code: u8,
}

impl CliError {
    /// A usage or configuration error: exit status 2.
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            code: 2,
        }
    }

    /// A run-time failure: exit status 1.
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            code: 1,
        }
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        CliError::failed(e.to_string())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Prints `demos: MESSAGE` on stderr for an error and returns the exit
/// status to use (0 for `Ok`). The message often quotes a server (a
/// refusal's reason, a reply it could not parse): control, invisible and
/// bidirectional characters in it are shown as escapes
/// ([`escape_for_terminal`](crate::text::escape_for_terminal)), so that
/// no server can send escape sequences to the user's terminal this way.
pub fn report(result: Result<u8, CliError>) -> u8 {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demos: {}", crate::text::escape_for_terminal(&e.message));
            e.code
        }
    }
}

/// The longest duration any `--...-secs` / `--timeout` flag accepts: one
/// year. Longer values are almost certainly typos, and a deadline computed
/// as `Instant::now() + d` must not overflow.
pub const MAX_SECS: Duration = Duration::from_secs(365 * 24 * 3600);

/// Seconds, e.g. `1` or `0.25`: the one parser of every duration flag of
/// `demos`. Refuses what is not a finite, non-negative number of seconds
/// of at most [`MAX_SECS`] (one year), with a message saying why: `-1`,
/// `NaN`, `inf` and `1e19` never reach a server.
///
/// ```
/// use demos::cli::parse_secs;
/// use std::time::Duration;
/// assert_eq!(parse_secs("0.25"), Ok(Duration::from_millis(250)));
/// for bad in ["-1", "NaN", "inf", "1e19", "soon", ""] {
///     assert!(parse_secs(bad).is_err(), "{bad}");
/// }
/// ```
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let f: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds (e.g. 1 or 0.25)"))?;
    if f.is_nan() || f.is_infinite() {
        return Err(format!(
            "{s:?} is not a finite number of seconds (e.g. 1 or 0.25)"
        ));
    }
    if f < 0.0 {
        return Err(format!("{s:?}: a duration cannot be negative"));
    }
    if f > MAX_SECS.as_secs_f64() {
        return Err(format!(
            "{s:?} seconds is too long (at most {} s, one year)",
            MAX_SECS.as_secs()
        ));
    }
    Duration::try_from_secs_f64(f).map_err(|e| format!("{s:?} is not a number of seconds: {e}"))
}

/// A byte count: a plain number, or one with a binary suffix `K`, `M`, `G`
/// (also written `KiB`, `MiB`, `GiB`): `1048576`, `1M` and `1MiB` are the
/// same.
///
/// ```
/// use demos::cli::parse_bytes;
/// assert_eq!(parse_bytes("1M"), Ok(1 << 20));
/// assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
/// assert_eq!(parse_bytes("1000"), Ok(1000));
/// assert!(parse_bytes("1.5M").is_err());
/// ```
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &t[digits.len()..];
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{s:?} is not a byte count (e.g. 1048576 or 1M)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_one_line_errors() {
        assert!(parse_address("127.0.0.1:0").is_ok());
        assert!(parse_address("[::1]:0").is_ok());
        assert!(parse_address("unix:/tmp/a.sock").is_ok());
        let e = parse_address("nonsense").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(parse_address("unix:").is_err());
    }

    #[test]
    fn byte_counts_parse() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("M").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("1T").is_err());
        assert!(parse_bytes("99999999999999999999G").is_err());
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("-0.0").is_ok(), "negative zero is zero");
        assert!(parse_secs("soon").is_err());
        assert!(parse_secs("1e19").unwrap_err().contains("too long"));
        assert!(parse_secs("NaN").unwrap_err().contains("finite"));
        assert!(parse_secs("-inf").is_err());
        assert_eq!(parse_secs("31536000"), Ok(MAX_SECS));
        assert!(parse_secs("31536000.5").is_err());
    }
}

/// Operator options of every `demos ... serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct OpsArgs {
    /// Write this process's pid into FILE once the sockets are bound, and
    /// hold a lock on it: a second server with the same FILE exits with
    /// status 2, naming the one running. Removed at a clean exit; a SIGUSR2
    /// upgrade's new process takes it over.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Once the sockets are bound (and keys and certificates read), run as
    /// this user: supplementary groups cleared, then its group (or
    /// --group), then its uid; a failure stops the server before it
    /// serves. Forked children run as that user too. Needs root.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// The group to run as with --user [default: the user's primary group].
    #[arg(long, value_name = "NAME", requires = "user")]
    pub group: Option<String>,
    /// Serve Prometheus metrics of every server of this process on
    /// HOST:PORT, at http://HOST:PORT/metrics (printed as a `metrics on`
    /// line after the `listening on` lines).
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_address)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Where log records go: stderr, syslog (/dev/log) or journald (the
    /// systemd journal), filtered as on stderr (`RUST_LOG`).
    #[arg(long, value_enum, value_name = "TARGET", default_value_t = LogTarget::Stderr)]
    pub log: LogTarget,
}

/// A `--metrics` address: HOST:PORT (TCP).
fn parse_metrics_address(s: &str) -> Result<std::net::SocketAddr, String> {
    match parse_address(s)? {
        Address::Inet(a) => Ok(a),
        Address::Unix(_) => Err(format!("{s}: metrics are served over TCP: HOST:PORT")),
    }
}

/// Where a stream service listens: `--listen` (repeatable; TLS when the
/// server speaks it) and `--listen-plain` (repeatable; plain whatever the
/// server speaks).
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    /// The `--listen` addresses.
    pub listen: Vec<Address>,
    /// The `--listen-plain` addresses.
    pub plain: Vec<Address>,
}

impl Addresses {
    /// One address.
    pub fn one(addr: Address) -> Addresses {
        Addresses {
            listen: vec![addr],
            plain: Vec::new(),
        }
    }
}
