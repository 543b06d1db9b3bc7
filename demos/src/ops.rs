//! What an operator sets on every demo server besides its own options
//! ([`OpsArgs`], flattened into [`ServerArgs`](crate::cli::ServerArgs)):
//! the pid file, and what [`serve_all`](crate::service::serve_all) does
//! with it before serving ([`Prepared`]).

use std::io;
use std::path::PathBuf;

use clap::Args;
use socketserver::pidfile::PidFile;

use crate::cli::CliError;

/// Operator options of every `demos ... serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct OpsArgs {
    /// Write this process's pid into FILE once the sockets are bound, and
    /// hold a lock on it: a second server with the same FILE exits with
    /// status 2, naming the one running. Removed at a clean exit; a SIGUSR2
    /// upgrade's new process takes it over.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
}

/// What [`OpsArgs::prepare`] set up; held while the servers run.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The locked pid file, removed when dropped.
    pub pid_file: Option<PidFile>,
}

impl OpsArgs {
    /// Runs once the sockets are bound, before serving: writes and locks
    /// the pid file. A pid file held by another process is a usage error
    /// (exit status 2) naming the path and that process.
    pub fn prepare(&self) -> Result<Prepared, CliError> {
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
        Ok(Prepared { pid_file })
    }
}
