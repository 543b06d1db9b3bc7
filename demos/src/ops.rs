//! What an operator sets on every demo server besides its own options
//! ([`OpsArgs`], parsed with [`ServerArgs`](crate::cli::ServerArgs)): the
//! pid file, the user to run as, the metrics endpoint, the log target;
//! here, what [`serve_all`](crate::serve::serve_all) does with them before
//! serving ([`Prepared`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use socketserver::metrics::{Endpoint, Metrics};
use socketserver::pidfile::PidFile;
use socketserver::privilege;
use socketserver::{Address, Server, Strategy, Threading};

use crate::cli::{CliError, OpsArgs};
use crate::service::{stream_service, Service};

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
