//! `bench`: every socketserver strategy measured side by side with plain
//! std, tokio and Python's socketserver on loopback. See `bench --help` and
//! `docs/benchmarks.md`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Measure every strategy side by side with plain std, tokio and Python's
/// socketserver on loopback: throughput, latency, CPU, idle memory,
/// shutdown latency, exit time with idle connections.
#[derive(Debug, Parser)]
#[command(
    name = "bench",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "\
Each server runs as a child process (our echo under each strategy, with and
without TLS, a plain std thread-per-connection echo and UDP loop, a tokio
echo, a tokio-rustls TLS echo, and Python's
ThreadingTCPServer, ForkingTCPServer, TCPServer and ThreadingUDPServer when
python3 is installed); the load comes from loadgen in this process, on
127.0.0.1 only. Progress goes to stderr, the markdown report to stdout.
A full run takes several minutes, --quick about one. The exit status is 1 if
some cell produced no numbers.

EXAMPLES:
    cargo run --release -p bench -- --quick
    cargo run --release -p bench -- --repeat 3 --json docs/bench/results.json \\
        --markdown docs/bench/results.md --svg docs/bench
    cargo run --release -p bench -- --only 'threading|std' --repeat 3
    cargo run --release -p bench -- --only /shutdown      # shutdown latency only
    cargo run --release -p bench -- --only '/(idle|exit-idle)-10k$' --repeat 3
    cargo run --release -p bench -- --only '^tls-' --repeat 5   # TLS vs tokio-rustls
    cargo run --release -p bench -- timeline --out docs/pictures  # a picture of each model
    cargo run --release -p bench -- --html target/report  # one page: reports, charts, timelines"
)]
struct Cli {
    #[command(flatten)]
    args: bench::CompareArgs,
    #[command(subcommand)]
    baseline: Option<Hidden>,
}

#[derive(Debug, Subcommand)]
enum Hidden {
    /// Servers and probes that a run starts as children.
    #[command(subcommand, hide = true)]
    Baseline(bench::baseline::BaselineCmd),
    /// A picture of each concurrency model: 8 clients, 5 requests each, a
    /// handler that answers after 20 ms, under every strategy; one SVG per
    /// strategy (a lane per thread, process or green worker), all.svg side
    /// by side, timeline.json. A few seconds.
    Timeline(bench::timeline::TimelineArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match cli.baseline {
        Some(Hidden::Baseline(cmd)) => bench::baseline::run(cmd).map(|()| true),
        Some(Hidden::Timeline(args)) => bench::timeline::run(&args).map(|()| true),
        None => bench::run(cli.args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: some cells produced no numbers");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}
