//! `demos shell serve` and `demos shell run`: the command-line side.

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use socketserver::auth::Key;

use super::client::{interactive, run_commands, Session};
use super::{needs_allow_remote, Shell, ShellConfig, MAX_OUTPUT_LIMIT};
use crate::cli::{parse_bytes, parse_secs, CliError, ServerArgs};
use crate::serve::serve_authenticated;
use crate::tls::{parse_target, remote_policy, ClientTlsArgs, ServerTlsArgs, Target};

/// How long `demos shell run` waits to connect and authenticate.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `demos shell ...`
#[allow(clippy::large_enum_variant)] // parsed once at start-up, never moved in a loop
#[derive(Debug, Subcommand)]
pub enum ShellCmd {
    /// Run a remote shell server (authenticated; loopback unless told
    /// otherwise).
    #[command(after_help = "\
Clients must prove they hold the key in --key-file (HMAC-SHA256 challenge-
response; the key is the file's bytes less one trailing newline). Each
command then runs as `/bin/sh -c COMMAND` in the session's directory, as this
server's user (--user; as root only with --allow-root), in a process group of its own; `cd DIR` changes the session's
directory (each connection has its own, starting in the server's current
directory). At --timeout the whole process group is killed; each of stdout
and stderr keeps its first --max-output bytes (the rest is read and
discarded, the reply says `truncated`).

TLS: with --tls-cert and --tls-key the server speaks TLS only (clients give
--tls-ca); with --tls-client-ca too, clients must also present a certificate
signed by that CA (mutual TLS). The HMAC authentication runs inside TLS.
Without TLS nothing is encrypted.

REMOTE: a non-loopback --listen address is refused (exit status 2) unless TLS
is on (the key is always required here), or --allow-remote is given (then
without TLS everything crosses the network in clear). --check checks the
flags and files and exits without listening.

EXAMPLES:
    head -c 32 /dev/urandom | base64 > shell.key
    demos shell serve --listen 127.0.0.1:7003 --key-file shell.key
    demos shell serve --listen unix:/tmp/shell.sock --key-file shell.key --timeout 5
    demos tls gen certs
    demos shell serve --listen 0.0.0.0:7003 --key-file shell.key \\
        --tls-cert certs/server.pem --tls-key certs/server-key.pem --tls-client-ca certs/ca.pem")]
    Serve(ServeArgs),
    /// Run commands on a shell server: one from the arguments, or each
    /// line of stdin.
    #[command(after_help = "\
With COMMAND (its words are joined with spaces into one command line, as ssh
does), runs it and exits with its exit status; stdout and stderr are passed
through as bytes. With no COMMAND, runs each line of stdin (a prompt is shown
when stdin is a terminal; `exit`, `quit` or ^D leaves) and exits with the last
status. When the remote command has no exit code (killed by a signal, timed
out), or the client cannot connect or authenticate, the exit status is 1 and
a line on stderr says why.

With --tls-ca, the session is TLS: the server's certificate must be signed by
a CA of that file and valid for the host of --connect (or --tls-server-name);
--tls-cert and --tls-key present a client certificate. A TLS failure (a
certificate not valid for the name, an unknown CA, a tampered record) exits 1
with a line starting `TLS:`.

EXAMPLES:
    demos shell run --connect 127.0.0.1:7003 --key-file shell.key uname -a
    demos shell run --connect 127.0.0.1:7003 --key-file shell.key 'ls | wc -l'
    demos shell run --connect 127.0.0.1:7003 --key-file shell.key
    demos shell run --connect localhost:7003 --key-file shell.key --tls-ca certs/ca.pem \\
        --tls-cert certs/client.pem --tls-key certs/client-key.pem uname -a")]
    Run(RunArgs),
}

/// Options of `demos shell serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address, strategy, workers, drain.
    #[command(flatten)]
    pub server: ServerArgs,
    /// File holding the shared key.
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    /// Seconds a command may run before its process group is killed.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub timeout: Duration,
    /// Bytes kept of each of stdout and stderr (K, M suffixes; at most 16M).
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = parse_bytes)]
    pub max_output: u64,
    /// Allow a non-loopback --listen address without TLS.
    #[arg(long)]
    pub allow_remote: bool,
    /// Run clients' commands as root when the server runs as root (without
    /// it, a server that would run them as root refuses to start: pass
    /// --user).
    #[arg(long)]
    pub allow_root: bool,
    /// TLS: certificate, key, client CA.
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Check the flags and files (key, certificates, the remote rule),
    /// print `ok`, and exit without listening.
    #[arg(long)]
    pub check: bool,
    /// Seconds a session may stay silent before it is closed (0: never).
    #[arg(long, value_name = "SECS", default_value = "600", value_parser = parse_secs)]
    pub idle_secs: Duration,
    /// Seconds a client gets for the whole authentication handshake.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub auth_secs: Duration,
    /// Connections that may be authenticating at once; a new one beyond
    /// it takes the place of the one waiting longest.
    #[arg(long, value_name = "N", default_value_t = super::DEFAULT_MAX_UNAUTHENTICATED)]
    pub max_unauthenticated: usize,
}

/// Options of `demos shell run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The server's address.
    #[arg(
        long,
        value_name = "ADDR",
        value_parser = parse_target,
        help = "The server: HOST:PORT, [V6]:PORT or unix:PATH"
    )]
    pub connect: Target,
    /// File holding the shared key.
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    /// TLS: trust anchor, client certificate, server name.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    /// Seconds to wait for each reply (the server's --timeout should be
    /// shorter).
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = parse_secs)]
    pub timeout: Duration,
    /// The command line (default: each line of stdin).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// Runs `demos shell ...` and returns the exit status to use (the shell
/// client's is the remote command's).
///
/// # Errors
///
/// What went wrong, for [`report`](crate::cli::report) to print.
pub fn main(cmd: ShellCmd) -> Result<u8, CliError> {
    match cmd {
        ShellCmd::Serve(a) => serve(a),
        ShellCmd::Run(a) => run(a),
    }
}

/// `demos shell serve`.
pub fn serve(a: ServeArgs) -> Result<u8, CliError> {
    for listen in &a.server.listen {
        if let (Err(why), false) = (remote_policy(listen, &a.tls, true), a.allow_remote) {
            return Err(CliError::usage(format!(
                "shell serve --listen {listen}: refusing to serve a shell on a non-loopback \
                 address: {why}; serve TLS (--tls-cert, --tls-key), or pass --allow-remote to \
                 do it anyway, or keep loopback and tunnel over SSH"
            )));
        }
    }
    let max_output = usize::try_from(a.max_output)
        .ok()
        .filter(|&n| n <= MAX_OUTPUT_LIMIT)
        .ok_or_else(|| {
            CliError::usage(format!(
                "shell serve --max-output {}: at most {MAX_OUTPUT_LIMIT} bytes (one frame)",
                a.max_output
            ))
        })?;
    let key = Key::from_file(&a.key_file)
        .map_err(|e| CliError::usage(format!("shell serve --key-file: {e}")))?;
    let tls = a.tls.config("shell serve")?;
    if a.server.ops.serving_uid()? == 0 && !a.allow_root {
        return Err(CliError::usage(
            "shell serve: refusing to run clients' commands as root: pass --user NAME \
             (e.g. --user nobody) to run them as that user, or --allow-root to run them as \
             root anyway",
        ));
    }
    if a.check {
        println!("ok");
        return Ok(0);
    }
    for listen in a.server.listen.iter().filter(|l| needs_allow_remote(l)) {
        if tls.is_none() {
            log::warn!(
                "shell: serving {listen} beyond loopback (--allow-remote): the connection is \
                 not encrypted"
            );
        }
    }
    let config = ShellConfig {
        key,
        timeout: a.timeout,
        max_output,
        start_dir: std::env::current_dir()?,
        idle: (!a.idle_secs.is_zero()).then_some(a.idle_secs),
        auth_timeout: a.auth_secs,
        max_unauthenticated: a.max_unauthenticated,
    };
    let shell = Shell::new(config);
    serve_authenticated(
        &a.server,
        tls,
        shell,
        Shell::configure,
        Shell::close_handshakes,
    )?;
    Ok(0)
}

/// `demos shell run`.
pub fn run(a: RunArgs) -> Result<u8, CliError> {
    let key = Key::from_file(&a.key_file)
        .map_err(|e| CliError::usage(format!("shell run --key-file: {e}")))?;
    let tls = a.tls.client(a.connect.host.as_deref(), "shell run")?;
    let mut session = Session::connect_tls(&a.connect.addr, &key, tls.as_ref(), CONNECT_TIMEOUT)?;
    session.set_reply_timeout(Some(a.timeout))?;
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    if a.command.is_empty() {
        let stdin = io::stdin();
        let prompt = stdin.is_terminal().then(|| format!("{}$ ", a.connect));
        let mut input = stdin.lock();
        Ok(interactive(
            &mut session,
            &mut input,
            &mut out,
            &mut err,
            prompt.as_deref(),
        )?)
    } else {
        Ok(run_commands(
            &mut session,
            &a.command.join(" "),
            &mut out,
            &mut err,
        )?)
    }
}
