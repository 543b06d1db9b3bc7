//! `demos`: the socketserver demos behind one command line, a stable
//! contract that scripts rely on. See `demos --help`, and `docs/demos.md`
//! for sessions.

use std::io::{self, BufReader};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use socketserver::{Address, Server};

use demos::chat::{self, Room, RoomConfig, UdpRoom, UdpRoomConfig};
use demos::cli::{parse_address, DatagramArgs, ServerArgs};
use demos::cli::{parse_secs, report, CliError};
use demos::echo::{self, Echo};
use demos::serve::serve_all;
use demos::service::{datagram_service, stream_service_on, Service};
use demos::showcase;
use demos::strategy::StrategyName;
use demos::tls::{parse_target, ClientTlsArgs, ServerTlsArgs, Target};

/// Programs built on socketserver: an echo server, a chat room (TCP and
/// UDP), their clients, and a showcase that runs and checks them all.
#[derive(Debug, Parser)]
#[command(
    name = "demos",
    version,
    propagate_version = true,
    after_help = "\
EXAMPLES:
    demos showcase
    demos echo serve --listen 127.0.0.1:7000 --udp 127.0.0.1:7000 --strategy pool
    demos echo client --connect 127.0.0.1:7000 hello world
    demos chat serve --listen 127.0.0.1:7001 --udp 127.0.0.1:7002
    demos chat client --connect 127.0.0.1:7001 --nick alice

ADDRESSES:
    HOST:PORT (IPv4 or a host name), [V6]:PORT, or unix:PATH. Port 0 picks a free
    port; servers print the real one. Servers listen on 127.0.0.1:0 unless told
    otherwise.

SERVERS:
    The first lines a server prints on stdout are one `listening on SCHEME://ADDR`
    per socket (scheme tcp, udp, unix or unixgram). SIGINT or SIGTERM stops it:
    it stops accepting, lets running requests finish for up to --drain-secs
    (1 s), cuts the rest and exits 0. Logs go to stderr (or --log syslog,
    --log journald); set RUST_LOG (e.g. RUST_LOG=debug) to see more or less.
    See docs/demos.md for sessions and docs/deploy.md for running as a service
    (--user, --pid-file, --metrics)."
)]
struct Cli {
    #[command(subcommand)]
    demo: Demo,
}

#[derive(Debug, Subcommand)]
enum Demo {
    /// Echo: TCP echoes bytes back as they arrive, UDP each datagram.
    #[command(
        subcommand,
        after_help = "\
EXAMPLES:
    demos echo serve --listen 127.0.0.1:7000 --udp 127.0.0.1:7000 --upper
    demos echo client --connect 127.0.0.1:7000 hello
    demos echo client --connect 127.0.0.1:7000 --udp hello"
    )]
    Echo(EchoCmd),
    /// Chat: a TCP room and a UDP relay, both line based.
    #[command(
        subcommand,
        after_help = "\
EXAMPLES:
    demos chat serve --listen 127.0.0.1:7001 --udp 127.0.0.1:7002
    demos chat client --connect 127.0.0.1:7001 --nick alice
    demos chat client --connect 127.0.0.1:7002 --nick bob --udp"
    )]
    Chat(ChatCmd),
    /// Remote shell: authenticated commands with a timeout and an output cap.
    #[command(
        subcommand,
        after_help = "\
EXAMPLES:
    demos shell serve --listen 127.0.0.1:7003 --key-file shell.key
    demos shell run --connect 127.0.0.1:7003 --key-file shell.key uname -a
    demos shell run --connect 127.0.0.1:7003 --key-file shell.key"
    )]
    Shell(demos::shell::cli::ShellCmd),
    /// File transfer: put, get and list with sha256 checks both ways.
    #[command(
        subcommand,
        after_help = "\
EXAMPLES:
    demos files serve --listen 127.0.0.1:7004 --root ./shared
    demos files put --connect 127.0.0.1:7004 report.pdf
    demos files list --connect 127.0.0.1:7004
    demos files get --connect 127.0.0.1:7004 report.pdf -o /tmp/report.pdf"
    )]
    Files(demos::files::cli::FilesCmd),
    /// TLS helpers: `demos tls gen DIR` writes a throwaway CA and
    /// certificates.
    #[command(subcommand)]
    Tls(TlsCmd),
    /// Start every demo on loopback in this process, drive it with real
    /// clients, and report (exit status 0 only if every check passed).
    #[command(after_help = "\
Runs echo over TCP and UDP under each strategy (forking in a child process:
`demos echo serve --strategy forking`), a TCP chat with three members talking
at once while a fourth never reads, a UDP chat with three peers, the remote
shell (authentication, exit codes, a wrong key) and file transfer (a round
trip with sha256, a traversal refused). Each check prints one line with its
time; the whole run takes a few seconds.

EXAMPLE:
    cargo run --release -p demos -- showcase")]
    Showcase,
}

#[derive(Debug, Subcommand)]
enum TlsCmd {
    /// Write a throwaway CA, a server and a client certificate into DIR.
    #[command(after_help = "\
Writes ca.pem and ca-key.pem (a CA that exists only in these files),
server.pem and server-key.pem (valid for localhost, 127.0.0.1 and ::1, signed
by the CA) and client.pem and client-key.pem (a client certificate signed by
the CA). Keys are ECDSA P-256, mode 0600. Existing files are not replaced
unless --force. For trying TLS on one machine: anyone holding ca-key.pem can
make certificates the demos will trust.

EXAMPLE:
    demos tls gen certs
    demos shell serve --key-file shell.key --tls-cert certs/server.pem \\
        --tls-key certs/server-key.pem --tls-client-ca certs/ca.pem
    demos shell run --connect 127.0.0.1:PORT --key-file shell.key --tls-ca certs/ca.pem \\
        --tls-cert certs/client.pem --tls-key certs/client-key.pem uname -a")]
    Gen {
        /// The directory to write into (created if missing).
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[allow(clippy::large_enum_variant)] // parsed once at start-up, never moved in a loop
#[derive(Debug, Subcommand)]
enum EchoCmd {
    /// Run an echo server (TCP, and UDP with --udp).
    #[command(after_help = "\
Every strategy works: synchronous serves one connection at a time; threading
a thread per connection; pool a fixed set of workers (--workers); forking a
child process per connection (or datagram).

EXAMPLES:
    demos echo serve
    demos echo serve --listen 127.0.0.1:7000 --udp 127.0.0.1:7000 --upper
    demos echo serve --listen unix:/tmp/echo.sock --strategy forking")]
    Serve {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        datagrams: DatagramArgs,
        /// Send ASCII letters back uppercased.
        #[arg(long)]
        upper: bool,
        /// Stack size in bytes of each request thread (threading) or
        /// worker (pool), e.g. 65536 to hold 10,000 idle connections.
        #[arg(long, value_name = "BYTES")]
        stack_size: Option<usize>,
        /// Threading: seconds a thread whose request finished waits for
        /// another before exiting (default: it exits at once).
        #[arg(long, value_name = "SECS", value_parser = parse_secs)]
        keep_alive: Option<Duration>,
        /// TLS on the stream socket (UDP is unaffected).
        #[command(flatten)]
        tls: ServerTlsArgs,
    },
    /// Send messages to an echo server and print the replies.
    #[command(after_help = "\
Each MESSAGE (or, with none, each line of stdin) goes out as one line (TCP) or
one datagram (--udp); each reply is printed on a line of its own. The exit
status is 1, with a one-line error, if the server cannot be reached or does not
answer within --timeout.

EXAMPLES:
    demos echo client --connect 127.0.0.1:7000 hello 'hello again'
    printf 'one\\ntwo\\n' | demos echo client --connect 127.0.0.1:7000 --udp
    demos echo client --connect localhost:7000 --tls-ca certs/ca.pem hello")]
    Client {
        /// The server: HOST:PORT, [V6]:PORT or unix:PATH.
        #[arg(long, value_name = "ADDR", value_parser = parse_target)]
        connect: Target,
        /// TLS (stream only): trust anchor, client certificate, server name.
        #[command(flatten)]
        tls: ClientTlsArgs,
        /// Talk to the server's UDP (or Unix datagram) socket.
        #[arg(long)]
        udp: bool,
        /// Seconds to wait for the connection and for each reply.
        #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
        timeout: Duration,
        /// Messages to send (default: the lines of stdin).
        message: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up, never moved in a loop
enum ChatCmd {
    /// Run a chat server: a TCP room, and with --udp a UDP relay.
    #[command(after_help = "\
TCP protocol: the first line is your nickname (one word; a taken, empty or
too long one gets a `* ` line saying why and you may send another). Then each
line goes to every other member as `nick: text`; joins and leaves are
announced as `* ` lines; /who lists the members, /quit leaves. Lines over 4096
bytes are refused. A member that stops reading is dropped once --outbox lines
wait for it, so it never slows the room.

UDP protocol: send `/nick NAME` first; each later datagram goes to every other
peer as `NAME: text`; /who and /quit work too; peers silent for --idle-secs
are forgotten. At most --max-peers peers; /nick is rate-limited per source IP
address (--nicks-per-minute after a burst of 10).

STRATEGIES: the TCP room needs every member served at once in one process:
threading (default) or pool (at most --workers members at a time).
synchronous (one member at a time) and forking (each member alone in its own
process) are refused. The UDP side defaults to synchronous; threading and pool
work too; forking is refused.

EXAMPLES:
    demos chat serve --listen 127.0.0.1:7001
    demos chat serve --listen 127.0.0.1:7001 --udp 127.0.0.1:7002 --strategy pool")]
    Serve {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        datagrams: DatagramArgs,
        /// Lines that may wait for one TCP member before it is dropped.
        #[arg(long, value_name = "LINES", default_value_t = 256)]
        outbox: usize,
        /// Seconds of silence after which a UDP peer is forgotten.
        #[arg(long, value_name = "SECS", default_value = "600", value_parser = parse_secs)]
        idle_secs: Duration,
        /// At most this many UDP peers; a /nick from a new address beyond
        /// it is refused.
        #[arg(long, value_name = "N", default_value_t = chat::DEFAULT_MAX_PEERS)]
        max_peers: usize,
        /// UDP /nick requests per minute from one IP address (after a burst
        /// of 10); more are refused.
        #[arg(long, value_name = "N", default_value_t = chat::DEFAULT_NICKS_PER_MINUTE)]
        nicks_per_minute: u32,
    },
    /// Join a chat: prints what the room says, sends what you type.
    #[command(after_help = "\
Type a line and press Enter to send it; /who lists the members, /quit (or
end of input, ^D) leaves. The exit status is 1, with a one-line error, if the
server cannot be reached or refuses the nickname.

EXAMPLES:
    demos chat client --connect 127.0.0.1:7001 --nick alice
    demos chat client --connect 127.0.0.1:7002 --nick bob --udp")]
    Client {
        /// The server: HOST:PORT, [V6]:PORT or unix:PATH.
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        connect: Address,
        /// Your nickname: one word, at most 32 bytes.
        #[arg(long, value_name = "NAME")]
        nick: String,
        /// Join the UDP (or Unix datagram) chat instead of the TCP room.
        #[arg(long)]
        udp: bool,
        /// Seconds to wait for the server when joining and leaving.
        #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
        timeout: Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match &cli.demo {
        Demo::Echo(EchoCmd::Serve { .. }) | Demo::Chat(ChatCmd::Serve { .. }) => "info",
        // The showcase makes servers drop members and cut connections on
        // purpose; its report says what happened.
        Demo::Showcase => "error",
        Demo::Shell(demos::shell::cli::ShellCmd::Serve(_))
        | Demo::Files(demos::files::cli::FilesCmd::Serve(_)) => "info",
        _ => "warn",
    };
    let target = match &cli.demo {
        Demo::Echo(EchoCmd::Serve { server, .. }) | Demo::Chat(ChatCmd::Serve { server, .. }) => {
            server.ops.log
        }
        Demo::Shell(demos::shell::cli::ShellCmd::Serve(a)) => a.server.ops.log,
        Demo::Files(demos::files::cli::FilesCmd::Serve(a)) => a.server.ops.log,
        _ => demos::logging::LogTarget::Stderr,
    };
    if let Err(e) = demos::logging::init_target(default_log, target) {
        return ExitCode::from(report(Err(CliError::usage(format!("--log: {e}")))));
    }
    ExitCode::from(report(run(cli.demo)))
}

/// Runs one demo; `Ok` holds the exit status.
fn run(demo: Demo) -> Result<u8, CliError> {
    match demo {
        // The shell client exits with the remote command's status.
        Demo::Shell(cmd) => demos::shell::cli::main(cmd),
        Demo::Files(cmd) => demos::files::cli::main(cmd),
        Demo::Echo(EchoCmd::Serve {
            server,
            datagrams,
            upper,
            stack_size,
            keep_alive,
            tls,
        }) => {
            let tcp = server.strategy();
            let udp = datagrams.udp_strategy.unwrap_or(tcp);
            let handler = Echo { upper };
            // The drain deadline also bounds a request running inline
            // (Synchronous) when the stop comes.
            let mut builder = server
                .configure(Server::builder().strategy(tcp.build_with(
                    server.workers,
                    stack_size,
                    keep_alive,
                )))
                .close_timeout(server.drain_secs);
            let config = tls.config("echo serve")?;
            server.check_plain(config.is_some())?;
            if let Some(config) = config {
                builder = builder.tls(config);
            }
            let mut services = vec![stream_service_on(
                builder,
                &server.addresses(),
                handler,
                None,
            )?];
            if let Some(addr) = &datagrams.udp {
                let builder = Server::builder().strategy(udp.build_with(
                    server.workers,
                    stack_size,
                    keep_alive,
                ));
                services.push(datagram_service(builder, addr, handler)?);
            }
            serve(services, &server)
        }
        Demo::Echo(EchoCmd::Client {
            connect,
            tls,
            udp,
            timeout,
            message,
        }) => {
            if udp && tls.tls_ca.is_some() {
                return Err(CliError::usage(
                    "echo client: --tls-ca is for the stream socket, not --udp",
                ));
            }
            let tls = tls.client(connect.host.as_deref(), "echo client")?;
            let mut stdin = io::stdin().lock();
            let mut stdout = io::stdout().lock();
            echo::client(
                &connect.addr,
                udp,
                tls.as_ref(),
                &message,
                &mut stdin,
                &mut stdout,
                timeout,
            )?;
            Ok(0)
        }
        Demo::Tls(TlsCmd::Gen { dir, force }) => {
            let paths = demos::tls::throwaway::generate(&dir, force).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    CliError::usage(format!("tls gen: {e}"))
                } else {
                    CliError::failed(format!("tls gen: {e}"))
                }
            })?;
            for p in paths {
                println!("wrote {}", p.display());
            }
            Ok(0)
        }
        Demo::Chat(ChatCmd::Serve {
            server,
            datagrams,
            outbox,
            idle_secs: idle,
            max_peers,
            nicks_per_minute,
        }) => {
            let tcp = server.strategy();
            let udp = datagrams.udp_strategy.unwrap_or(StrategyName::Synchronous);
            if let Some(why) = chat::tcp_strategy_problem(tcp) {
                return Err(CliError::usage(format!(
                    "chat serve --strategy {tcp}: {why}"
                )));
            }
            if let (Some(_), Some(why)) = (&datagrams.udp, chat::udp_strategy_problem(udp)) {
                return Err(CliError::usage(format!(
                    "chat serve --udp-strategy {udp}: {why}"
                )));
            }
            let room = Room::new(RoomConfig {
                outbox: outbox.max(2),
                ..RoomConfig::default()
            });
            let closer = room.clone();
            server.check_plain(false)?;
            let mut services = vec![stream_service_on(
                server
                    .configure(Server::builder().strategy(tcp.build(server.workers)))
                    .close_timeout(server.drain_secs),
                &server.addresses(),
                room,
                Some(Box::new(move || closer.close())),
            )?];
            if let Some(addr) = &datagrams.udp {
                // Wakes the loop now and then to forget idle peers even
                // when nobody talks.
                let builder = Server::builder()
                    .strategy(udp.build(server.workers))
                    .service_interval(Some(
                        idle.clamp(Duration::from_millis(100), Duration::from_secs(5)),
                    ));
                let relay = UdpRoom::new(UdpRoomConfig {
                    idle,
                    max_peers,
                    nicks_per_minute,
                    ..UdpRoomConfig::default()
                });
                services.push(datagram_service(builder, addr, relay)?);
            }
            serve(services, &server)
        }
        Demo::Chat(ChatCmd::Client {
            connect,
            nick,
            udp,
            timeout,
        }) => {
            let input = Box::new(BufReader::new(io::stdin()));
            let mut stdout = io::stdout().lock();
            chat::client::run(&connect, &nick, udp, input, &mut stdout, timeout)?;
            Ok(0)
        }
        Demo::Showcase => {
            let options = showcase::Options {
                exe: std::env::current_exe().ok(),
            };
            let ok = showcase::run(&options, &mut io::stdout().lock())?;
            if ok {
                Ok(0)
            } else {
                Err(CliError::failed("showcase: some checks failed"))
            }
        }
    }
}

fn serve(services: Vec<Box<dyn Service>>, server: &ServerArgs) -> Result<u8, CliError> {
    serve_all(services, server)?;
    Ok(0)
}
