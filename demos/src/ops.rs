//! What an operator sets on every demo server besides its own options
//! ([`OpsArgs`], flattened into [`ServerArgs`](crate::cli::ServerArgs)):
//! the pid file, the user to run as, the metrics endpoint, the log
//! target, and what [`serve_all`](crate::service::serve_all) does
//! with it before serving ([`Prepared`]).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use socketserver::metrics::{Endpoint, Metrics};
use socketserver::pidfile::PidFile;
use socketserver::privilege;
use socketserver::{Address, Server, Strategy, Threading};

use crate::cli::CliError;
use crate::logging::LogTarget;
use crate::service::{stream_service, Service};

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
    match crate::cli::parse_address(s)? {
        Address::Inet(a) => Ok(a),
        Address::Unix(_) => Err(format!("{s}: metrics are served over TCP: HOST:PORT")),
    }
}

/// What [`OpsArgs::prepare`] set up; held while the servers run.
#[derive(Default)]
pub struct Prepared {
    /// The locked pid file, removed when dropped.
    pub pid_file: Option<PidFile>,
    /// The metrics endpoint, bound, to serve beside the others.
    pub metrics: Option<Box<dyn Service>>,
}

impl OpsArgs {
    /// Runs once the sockets of `services` are bound, before serving:
    /// binds the metrics endpoint (serving the metrics of `services`),
    /// writes and locks the pid file, then drops to `--user`. A pid file held by another process is a usage error
    /// (exit status 2) naming the path and that process.
    pub fn prepare(&self, services: &[Box<dyn Service>]) -> Result<Prepared, CliError> {
        let metrics = match self.metrics {
            None => None,
            Some(addr) => {
                let metrics = Arc::new(Metrics::new());
                for s in services {
                    metrics.register(s.url(), s.metrics_source());
                }
                let builder = Server::builder()
                    .strategy(Box::new(Threading::new()) as Box<dyn Strategy>)
                    .max_connections(Some(64))
                    .read_timeout(Some(Duration::from_secs(10)));
                let endpoint = Endpoint::new(metrics);
                Some(
                    stream_service(builder, &Address::Inet(addr), endpoint, None)
                        .map_err(|e| CliError::failed(format!("--metrics {addr}: {e}")))?,
                )
            }
        };
        let pid_file = match &self.pid_file {
            None => None,
            Some(path) => Some(PidFile::create(path).map_err(|e| {
                if e.kind() == io::ErrorKind::ResourceBusy {
                    CliError::usage(e.to_string())
                } else {
                    CliError::failed(e.to_string())
                }
            })?),
        };
        if let Some(user) = &self.user {
            privilege::drop_to(user, self.group.as_deref())
                .map_err(|e| CliError::usage(format!("--user {user}: {e}")))?;
        }
        Ok(Prepared { pid_file, metrics })
    }

    /// The uid the server's requests will run as: `--user`'s, else this
    /// process's effective uid.
    pub fn serving_uid(&self) -> Result<u32, CliError> {
        match &self.user {
            Some(user) => privilege::lookup(user, self.group.as_deref())
                .map(|a| a.uid)
                .map_err(|e| CliError::usage(format!("--user {user}: {e}"))),
            None => Ok(rustix::process::geteuid().as_raw()),
        }
    }
}
