//! A pid file that is also a lock: [`PidFile::create`] writes this
//! process's pid into a file it holds an exclusive `flock(2)` on, so that a
//! second instance started with the same path fails at once, with the pid
//! of the one running ([`io::ErrorKind::ResourceBusy`]), instead of
//! fighting it for its sockets. Dropping the [`PidFile`] (a clean exit)
//! removes the file.
//!
//! The lock lives as long as some process holds the file open, so a file
//! left behind by a crash (or a `kill -9`) locks nothing: the next instance
//! takes it over and rewrites it. Whether a server runs is the lock, not the
//! file's existence.
//!
//! ## Upgrades
//!
//! A zero-downtime upgrade ([`crate::reload`]) hands the pid file to the new
//! process along with the sockets ([`Upgrade::pid_file`]): the new process
//! inherits a descriptor of the same open file, which shares the lock, so
//! there is no moment when the file is unlocked. [`PidFile::create`] in the
//! new process finds that descriptor (named by [`PID_FILE_FD_VAR`]) and
//! rewrites the file with its own pid; the old process, when it exits
//! after its drain, sees a pid that is not its own and leaves the file
//! alone.
//!
//! ```
//! use socketserver::pidfile::PidFile;
//!
//! let dir = std::env::temp_dir().join(format!("pidfile-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("server.pid");
//! let pid_file = PidFile::create(&path)?;
//! assert_eq!(std::fs::read_to_string(&path)?, format!("{}\n", std::process::id()));
//! // A second instance with the same path is refused, naming the first.
//! let second = PidFile::create(&path).unwrap_err();
//! assert_eq!(second.kind(), std::io::ErrorKind::ResourceBusy);
//! drop(pid_file); // a clean exit removes the file
//! assert!(!path.exists());
//! # std::fs::remove_dir(&dir)?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! [`Upgrade::pid_file`]: crate::reload::Upgrade::pid_file

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The variable naming the pid file's descriptor a new process inherits in
/// an upgrade (see the [module docs](self)).
pub const PID_FILE_FD_VAR: &str = "SOCKETSERVER_PID_FILE_FD";

/// A locked pid file; see the [module docs](self). Removed on drop, unless
/// a successor took it over.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: File,
}

impl PidFile {
    /// Opens (or creates, mode 0644) the file at `path`, locks it, and
    /// writes this process's pid into it (`PID\n`). Run it after binding the
    /// sockets, so that the file names a process that serves.
    ///
    /// A process started by an upgrade that was handed this pid file
    /// ([`PID_FILE_FD_VAR`]) takes the inherited, already locked descriptor
    /// instead of waiting for its predecessor's lock.
    ///
    /// Fails with [`io::ErrorKind::ResourceBusy`] when another process holds
    /// the lock; the message names the path and that process's pid.
    pub fn create(path: impl AsRef<Path>) -> io::Result<PidFile> {
        let path = path.as_ref().to_path_buf();
        let context = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("pid file {}: {what}: {e}", path.display()),
            )
        };
        let file = match inherited(&path) {
            Some(file) => file,
            None => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(&path)
                    .map_err(|e| context("cannot open", e))?;
                match try_lock(file.as_raw_fd()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let holder = read_pid(&mut &file).map_or_else(
                            || "another process".to_owned(),
                            |p| format!("process {p}"),
                        );
                        return Err(io::Error::new(
                            io::ErrorKind::ResourceBusy,
                            format!(
                                "pid file {} is locked by {holder}: another instance is running",
                                path.display()
                            ),
                        ));
                    }
                    Err(e) => return Err(context("cannot lock", e)),
                }
                file
            }
        };
        if let Err(e) = write_pid(&file, std::process::id()) {
            return Err(context("cannot write", e));
        }
        Ok(PidFile { path, file })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pid written in the file now (this process's, or its successor's
    /// after an upgrade).
    pub fn pid(&self) -> Option<u32> {
        read_pid(&mut &self.file)
    }

    /// A new descriptor of the same open file (it shares the lock), to hand
    /// to a new process.
    pub(crate) fn share(&self) -> io::Result<OwnedFd> {
        self.file.as_fd().try_clone_to_owned()
    }
}

fn write_pid(mut f: &File, pid: u32) -> io::Result<()> {
    f.set_len(0)?;
    f.rewind()?;
    f.write_all(format!("{pid}\n").as_bytes())?;
    f.sync_data()
}

impl AsFd for PidFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Drop for PidFile {
    /// Removes the file, unless it names another process now (a successor
    /// took it over in an upgrade). A failure (the directory not writable
    /// after a privilege drop) is logged: the file left behind locks
    /// nothing.
    fn drop(&mut self) {
        if self.pid() != Some(std::process::id()) {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!(
                    "pid file {}: cannot remove it: {e} (it locks nothing now)",
                    self.path.display()
                );
            }
        }
    }
}

/// The pid file handed over by the process this one upgrades, if the
/// environment names a descriptor open on the same file that holds its
/// lock. Only in a process an upgrade started (the variable stays in the
/// environment, which a child process inherits), and only once.
fn inherited(path: &Path) -> Option<File> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let var = std::env::var(PID_FILE_FD_VAR).ok()?;
    if !crate::activation::started_by_upgrade() || TAKEN.swap(true, Ordering::SeqCst) {
        return None;
    }
    let fd: RawFd = var.trim().parse().ok()?;
    if fd < crate::activation::LISTEN_FDS_START {
        return None;
    }
    let on_disk = std::fs::metadata(path).ok()?;
    let fd = crate::sys::adopt_fd(fd).ok()?;
    let file = File::from(fd);
    let meta = file.metadata().ok()?;
    if (meta.dev(), meta.ino()) != (on_disk.dev(), on_disk.ino()) {
        log::warn!(
            "{PID_FILE_FD_VAR} names a descriptor that is not {}; ignored",
            path.display()
        );
        return None;
    }
    // Succeeds at once on the predecessor's open file (the lock is that
    // file's); fails if it was somehow another one.
    try_lock(file.as_raw_fd()).ok()?;
    Some(file)
}

fn read_pid(file: &mut &File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// `flock(fd, LOCK_EX | LOCK_NB)`.
fn try_lock(fd: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: flock only reads its integer arguments; an invalid
        // descriptor is an error it returns.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
