//! Separate hosts for tests: a network namespace joined to this one by a
//! veth pair, so that a test can run a client or a server "on another
//! machine" and cut its link (the peer vanishes: no FIN, no reset), then
//! restore it.
//!
//! Each [`Host`] is a namespace named `sst-PID-N` (this process's pid, a
//! counter) with one veth pair: `shPID_N` here, `snPID_N` in the namespace,
//! addressed with a /30 of 198.18.0.0/15 (the benchmarking range, never
//! routed): `.1` here, `.2` there. Subnets are chosen under a file lock
//! among those no interface uses yet, so parallel tests and test processes
//! never collide. Dropping the `Host` (also when a test panics) deletes the
//! namespace and the pair. Namespaces `sst-PID-*` whose process is gone (a
//! killed test run) are removed by the next run. No other namespace or
//! interface is ever touched.
//!
//! Needs `ip` (iproute2) and the right to create namespaces (root, or
//! `CAP_SYS_ADMIN` and `CAP_NET_ADMIN`); [`Host::create`] says why not
//! otherwise, for the test to print and skip.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The name prefix of every namespace the tests make.
const PREFIX: &str = "sst-";

/// One /30 of 198.18.0.0/15 per host: 32,768 of them.
const SUBNETS: u32 = 1 << 15;

/// Another machine: a network namespace linked to this one.
#[derive(Debug)]
pub struct Host {
    name: String,
    host_dev: String,
    ns_dev: String,
    here: Ipv4Addr,
    there: Ipv4Addr,
}

/// Runs `ip ARGS`; the error says what failed and why.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_output(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Holds an exclusive lock on a file shared by every test process while
/// subnets are chosen and assigned.
struct AllocationLock(File);

impl AllocationLock {
    fn take() -> Result<AllocationLock, String> {
        let path = std::env::temp_dir().join("socketserver-tests-netns.lock");
        let file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: flock on an fd this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "flock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(AllocationLock(file))
    }
}

impl Drop for AllocationLock {
    fn drop(&mut self) {
        // SAFETY: unlocks the fd this value owns.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The /30 subnets of 198.18.0.0/15 in use on this machine's interfaces
/// (in this namespace: both ends of every pair the tests made have their
/// `.1` here).
fn subnets_in_use() -> Result<Vec<u32>, String> {
    let out = ip_output(&["-4", "-o", "addr", "show"])?;
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    Ok(out
        .split_whitespace()
        .filter_map(|w| w.split_once('/'))
        .filter_map(|(a, _)| a.parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .filter(|&a| a >= base && a < base + SUBNETS * 4)
        .map(|a| (a - base) / 4)
        .collect())
}

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes the namespaces of test processes that are gone (and so the veth
/// pairs in them).
fn remove_stale() {
    let Ok(list) = ip_output(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !alive(p)) {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl Host {
    /// A new namespace with its link up, or why one cannot be made here
    /// (print it and skip the test).
    pub fn create() -> Result<Host, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("{PREFIX}{pid}-{n}");
        // Interface names have at most 15 bytes.
        let host_dev = format!("sh{pid}_{n}");
        let ns_dev = format!("sn{pid}_{n}");
        if host_dev.len() > 15 {
            return Err(format!("interface name {host_dev} is too long"));
        }
        let lock = AllocationLock::take()?;
        remove_stale();
        ip(&["netns", "add", &name])
            .map_err(|e| format!("cannot create a network namespace: {e}"))?;
        // From here on, dropping `host` removes what was made.
        let mut host = Host {
            name,
            host_dev,
            ns_dev,
            here: Ipv4Addr::UNSPECIFIED,
            there: Ipv4Addr::UNSPECIFIED,
        };
        let used = subnets_in_use()?;
        let start = (pid.wrapping_mul(64).wrapping_add(n)) % SUBNETS;
        let subnet = (0..SUBNETS)
            .map(|i| (start + i) % SUBNETS)
            .find(|s| !used.contains(s))
            .ok_or("every /30 of 198.18.0.0/15 is in use")?;
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + subnet * 4;
        host.here = Ipv4Addr::from(base + 1);
        host.there = Ipv4Addr::from(base + 2);
        let here = format!("{}/30", host.here);
        let there = format!("{}/30", host.there);
        let ns = host.name.clone();
        ip(&[
            "link",
            "add",
            &host.host_dev,
            "type",
            "veth",
            "peer",
            "name",
            &host.ns_dev,
            "netns",
            &ns,
        ])?;
        ip(&["addr", "add", &here, "dev", &host.host_dev])?;
        ip(&["link", "set", &host.host_dev, "up"])?;
        drop(lock);
        host.in_ns(&["addr", "add", &there, "dev", &host.ns_dev])?;
        host.in_ns(&["link", "set", &host.ns_dev, "up"])?;
        host.in_ns(&["link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// `ip ARGS` inside the namespace.
    fn in_ns(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This side's address on the link (reach this namespace's servers
    /// from the other host at it).
    pub fn here(&self) -> Ipv4Addr {
        self.here
    }

    /// The other host's address on the link.
    pub fn there(&self) -> Ipv4Addr {
        self.there
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`,
    /// which execs it: the child's pid is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// The arguments that run `program args` inside the namespace through
    /// `ip` (for helpers that take a program and its arguments).
    pub fn exec_args<'a>(&'a self, program: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        all
    }

    /// Cuts the link: its end inside the namespace goes down. Nothing
    /// passes either way (no FIN, no reset reaches the other host) until
    /// [`restore`](Self::restore).
    pub fn cut(&self) {
        self.in_ns(&["link", "set", &self.ns_dev, "down"])
            .unwrap_or_else(|e| panic!("cutting {}: {e}", self.name));
    }

    /// Brings the link back up.
    pub fn restore(&self) {
        self.in_ns(&["link", "set", &self.ns_dev, "up"])
            .unwrap_or_else(|e| panic!("restoring {}: {e}", self.name));
    }
}

impl Drop for Host {
    /// Deletes the namespace (which deletes the pair's end in it and so
    /// the pair), and this end should it remain.
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_dev]);
    }
}

/// A [`Host`], or `None` after printing why `test` is skipped.
pub fn host_or_skip(test: &str) -> Option<Host> {
    match Host::create() {
        Ok(h) => Some(h),
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}

/// A program running inside a [`Host`] (or anywhere): its stdout lines
/// collected on a thread, read with deadlines; killed (SIGKILL, its whole
/// process group) and reaped when dropped.
pub struct Process {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    /// Starts `cmd` (stdout piped, stderr inherited) in a process group of
    /// its own.
    pub fn start(mut cmd: Command) -> Process {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits at most `limit` for a line that `matches`; returns it. Panics,
    /// with what it printed, otherwise.
    pub fn wait_line(
        &mut self,
        limit: std::time::Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let end = std::time::Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "pid {}: no expected line within {limit:?} ({e}); printed: {:?}",
                    self.pid(),
                    self.seen
                ),
            }
        }
    }

    /// The lines read so far (by [`wait_line`](Self::wait_line), and any
    /// waiting now).
    pub fn lines(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Kills it (SIGKILL to its process group) and reaps it.
    pub fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let pgid = libc::pid_t::try_from(self.pid()).expect("a pid");
            // SAFETY: kill only reads its integer arguments; the group is
            // our child's, not yet reaped, so it cannot have been reused.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
