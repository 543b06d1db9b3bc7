//! `demos files serve|put|get|list`: the command-line side.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use socketserver::auth::Key;

use super::client::{default_name, Client};
use super::{check_name, FileServer, FilesConfig, Progress};
use crate::cli::{parse_bytes, parse_secs, CliError, ServerArgs};
use crate::serve::serve_authenticated;
use crate::text::escape_for_terminal;
use crate::tls::{parse_target, remote_policy, ClientTlsArgs, ServerTlsArgs, Target};

/// Transfers larger than this get a progress bar (on a terminal).
const BAR_THRESHOLD: u64 = 1 << 20;

/// `demos files ...`
#[derive(Debug, Subcommand)]
pub enum FilesCmd {
    /// Run a file server for one directory.
    #[command(after_help = "\
Serves the regular files directly in --root (no subdirectories): put stores
a file (written to a hidden temp file, checked against its size and sha256,
then renamed into place), get sends one with its sha256, list names them.
Names must be plain file names of at most 255 bytes: letters and digits (any
script), space and ASCII punctuation; no / or \\, not . or ..; no control,
invisible or bidirectional characters, no lookalikes of / or . (U+2215,
U+FF0F, U+FF0E, U+2024...). Symbolic links in the root are never
followed. A put over --max-size is refused and the connection closed.

With --key-file, clients must prove they hold the key first (HMAC-SHA256
challenge-response). With --tls-cert and --tls-key the server speaks TLS only
(clients give --tls-ca), and the key check runs inside it; with
--tls-client-ca too, clients must present a certificate that CA signed
(mutual TLS). Without TLS nothing is encrypted.

REMOTE: a non-loopback --listen address is refused (exit status 2) unless TLS
is on and clients must prove who they are (--tls-client-ca or --key-file), or
--allow-remote is given. --check checks the flags and files and exits without
listening.

EXAMPLES:
    demos files serve --listen 127.0.0.1:7004 --root ./shared
    demos files serve --listen 127.0.0.1:7004 --root ./shared --key-file files.key --max-size 100M
    demos files serve --listen 0.0.0.0:7004 --root ./shared --tls-cert certs/server.pem \\
        --tls-key certs/server-key.pem --tls-client-ca certs/ca.pem")]
    Serve(ServeArgs),
    /// Upload a file.
    #[command(after_help = "\
The file is read twice: once to compute its sha256, once to send it; the
server keeps it only if both match. Prints `stored NAME: N bytes, sha256 HEX`.

EXAMPLES:
    demos files put --connect 127.0.0.1:7004 ./report.pdf --name report-2024.pdf
    demos files put --connect localhost:7004 --tls-ca certs/ca.pem ./report.pdf")]
    Put(PutArgs),
    /// Download a file.
    #[command(after_help = "\
Writes to a hidden temp file next to the output and renames it into place
only once its sha256 matches the server's; `-o -` writes to stdout (checked
at the end: exit status 1 on a mismatch).

EXAMPLES:
    demos files get --connect 127.0.0.1:7004 report-2024.pdf
    demos files get --connect 127.0.0.1:7004 report-2024.pdf -o /tmp/r.pdf")]
    Get(GetArgs),
    /// List the files on the server: `SIZE  NAME`, one per line.
    #[command(after_help = "\
Only regular files with valid names are listed: no temp files of uploads in
progress, no symbolic links, no directories. Sorted by name. Control,
invisible and bidirectional characters a server sends are shown as escapes
(\\u{1b}), never passed to the terminal.

EXAMPLE:
    demos files list --connect 127.0.0.1:7004")]
    List(ListArgs),
}

/// Options of `demos files serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address, strategy, workers, drain.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The directory served (must exist).
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Require clients to authenticate with the key in this file.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The largest upload, in bytes (K, M, G suffixes).
    #[arg(long, value_name = "BYTES", default_value = "1G", value_parser = parse_bytes)]
    pub max_size: u64,
    /// Seconds without a byte from a client (between requests or inside an
    /// upload) before its connection is closed (0: never).
    #[arg(long, value_name = "SECS", default_value = "600", value_parser = parse_secs)]
    pub idle_secs: Duration,
    /// Allow a non-loopback --listen address without TLS and client
    /// authentication.
    #[arg(long)]
    pub allow_remote: bool,
    /// TLS: certificate, key, client CA.
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Check the flags and files (root, key, certificates, the remote
    /// rule), print `ok`, and exit without listening.
    #[arg(long)]
    pub check: bool,
}

/// Options every client command takes.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's address.
    #[arg(
        long,
        value_name = "ADDR",
        value_parser = parse_target,
        help = "The server: HOST:PORT, [V6]:PORT or unix:PATH"
    )]
    pub connect: Target,
    /// Authenticate with the key in this file (when the server has one).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// TLS: trust anchor, client certificate, server name.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    /// Seconds to wait for the connection and for each read or write.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub timeout: Duration,
}

/// Options of `demos files put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The server and how to reach it.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The file to upload.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The name to store it under [default: FILE's name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// Options of `demos files get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The server and how to reach it.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The file's name on the server.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where to write it (a file or a directory; `-` for stdout) [default:
    /// ./NAME].
    #[arg(short = 'o', long, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// Options of `demos files list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The server and how to reach it.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `demos files ...` and returns the exit status to use (the shell
/// client's is the remote command's).
///
/// # Errors
///
/// What went wrong, for [`report`](crate::cli::report) to print.
pub fn main(cmd: FilesCmd) -> Result<u8, CliError> {
    match cmd {
        FilesCmd::Serve(a) => serve(a),
        FilesCmd::Put(a) => put(a),
        FilesCmd::Get(a) => get(a),
        FilesCmd::List(a) => list(a),
    }
}

fn read_key(path: Option<&PathBuf>, what: &str) -> Result<Option<Key>, CliError> {
    path.map(|p| Key::from_file(p).map_err(|e| CliError::usage(format!("{what} --key-file: {e}"))))
        .transpose()
}

/// `demos files serve`.
pub fn serve(a: ServeArgs) -> Result<u8, CliError> {
    let key = read_key(a.key_file.as_ref(), "files serve")?;
    for listen in &a.server.listen {
        let policy = remote_policy(listen, &a.tls, key.is_some());
        if let (Err(why), false) = (policy, a.allow_remote) {
            return Err(CliError::usage(format!(
                "files serve --listen {listen}: refusing to serve files on a non-loopback \
                 address: {why}; serve TLS (--tls-cert, --tls-key) with --tls-client-ca or \
                 --key-file, or pass --allow-remote to do it anyway"
            )));
        }
    }
    let tls = a.tls.config("files serve")?;
    for listen in &a.server.listen {
        if let Err(why) = remote_policy(listen, &a.tls, key.is_some()) {
            log::warn!("files: serving {listen} beyond loopback (--allow-remote): {why}");
        }
    }
    let config = FilesConfig {
        root: a.root.clone(),
        key,
        max_size: a.max_size,
        idle: (!a.idle_secs.is_zero()).then_some(a.idle_secs),
    };
    let handler =
        FileServer::new(config).map_err(|e| CliError::usage(format!("files serve --root: {e}")))?;
    if a.check {
        println!("ok");
        return Ok(0);
    }
    serve_authenticated(
        &a.server,
        tls,
        handler,
        FileServer::configure,
        FileServer::close_handshakes,
    )?;
    Ok(0)
}

fn connect(c: &ClientArgs, what: &str) -> Result<Client, CliError> {
    let key = read_key(c.key_file.as_ref(), what)?;
    let tls = c.tls.client(c.connect.host.as_deref(), what)?;
    Ok(Client::connect_tls(
        &c.connect.addr,
        key.as_ref(),
        tls.as_ref(),
        c.timeout,
    )?)
}

/// `demos files put`.
pub fn put(a: PutArgs) -> Result<u8, CliError> {
    let name = match &a.name {
        Some(n) => check_name(n).map(|()| n.clone()),
        None => default_name(&a.file),
    }
    .map_err(|e| CliError::usage(format!("files put: {e}")))?;
    let mut client = connect(&a.client, "files put")?;
    let mut bar = Bar::new(true, &format!("put {name}"));
    let r = client.put_file(&a.file, &name, &mut bar)?;
    println!(
        "stored {}: {} bytes, sha256 {}",
        escape_for_terminal(&name),
        r.size.unwrap_or(0),
        escape_for_terminal(&r.sha256.unwrap_or_default())
    );
    Ok(0)
}

/// `demos files get`.
pub fn get(a: GetArgs) -> Result<u8, CliError> {
    check_name(&a.name).map_err(|e| CliError::usage(format!("files get: {e}")))?;
    let mut client = connect(&a.client, "files get")?;
    let dest = match &a.output {
        Some(p) if p.as_os_str() == "-" => {
            let mut out = io::stdout().lock();
            client.get(&a.name, &mut out, &mut ())?;
            out.flush()?;
            return Ok(0);
        }
        Some(p) if p.is_dir() => p.join(&a.name),
        Some(p) => p.clone(),
        None => PathBuf::from(&a.name),
    };
    let mut bar = Bar::new(true, &format!("get {}", a.name));
    remove_partial_downloads_on_signals()?;
    let r = client.get_to_path(&a.name, &dest, &mut bar)?;
    println!(
        "{} -> {}: {} bytes, sha256 verified",
        escape_for_terminal(&a.name),
        escape_for_terminal(&dest.display().to_string()),
        r.size.unwrap_or(0)
    );
    Ok(0)
}

/// On SIGINT, SIGTERM or SIGHUP (a ^C in the middle of a get), removes the
/// download's temp file, then exits with status 128 + the signal's number,
/// as the signal would have: without this, the process would die with the
/// `.NAME.RANDOM.part` file left next to the output.
fn remove_partial_downloads_on_signals() -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                super::client::remove_partial_downloads();
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}

/// `demos files list`.
pub fn list(a: ListArgs) -> Result<u8, CliError> {
    let mut client = connect(&a.client, "files list")?;
    let files = client.list()?;
    let mut out = io::stdout().lock();
    for f in files {
        // The names come from the server: never raw to the terminal.
        writeln!(out, "{:>12}  {}", f.size, escape_for_terminal(&f.name))?;
    }
    out.flush()?;
    Ok(0)
}

/// A progress bar on stdout for transfers over 1 MiB, only when stdout is
/// a terminal (a script reading stdout gets only the result line).
struct Bar {
    enabled: bool,
    label: String,
    bar: Option<ProgressBar>,
}

impl Bar {
    fn new(enabled: bool, label: &str) -> Bar {
        Bar {
            enabled: enabled && io::stdout().is_terminal(),
            label: label.to_owned(),
            bar: None,
        }
    }
}

impl Progress for Bar {
    fn start(&mut self, total: u64) {
        if !self.enabled || total <= BAR_THRESHOLD {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(self.label.clone());
        self.bar = Some(bar);
    }

    fn advance(&mut self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
