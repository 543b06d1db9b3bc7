//! The file server: a [`StreamHandler`] serving `put`, `get` and `list`
//! under one root directory (see the [module docs](super) for the
//! protocol and the guarantees).

use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use sha2::{Digest, Sha256};
use socketserver::auth::{Gatekeeper, Key};
use socketserver::framing::{self, DEFAULT_MAX_FRAME_SIZE};
use socketserver::{StreamHandler, StreamRequest};

use super::{
    check_name, copy_n, hex, is_sha256_hex, sha256_of, Entry, Request, Response, DEFAULT_MAX_SIZE,
    REQUEST_FRAMING, TEMP_PREFIX,
};

/// How long a client gets for the whole authentication handshake, however
/// it spreads its bytes.
pub const AUTH_TIMEOUT: Duration = socketserver::auth::DEFAULT_HANDSHAKE_DEADLINE;

/// Default idle time (no byte from the client) after which a connection,
/// or an upload that stalled, is closed.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(600);

/// How a file server behaves.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// The directory served; must exist.
    pub root: PathBuf,
    /// If set, clients must authenticate with this key first.
    pub key: Option<Key>,
    /// The largest file a put may announce, in bytes.
    pub max_size: u64,
    /// Close a connection after this long without a byte from the client
    /// (between requests, or in the middle of an upload). `None`: never.
    /// [`FileServer::configure`] gives it to the server's builder.
    pub idle: Option<Duration>,
}

impl FilesConfig {
    /// Serves `root` with no key, [`DEFAULT_MAX_SIZE`] and [`DEFAULT_IDLE`].
    pub fn new(root: impl Into<PathBuf>) -> FilesConfig {
        FilesConfig {
            root: root.into(),
            key: None,
            max_size: DEFAULT_MAX_SIZE,
            idle: Some(DEFAULT_IDLE),
        }
    }
}

/// The file server. Cloning shares the configuration.
///
/// ```
/// use demos::files::{client::Client, FileServer, FilesConfig};
/// use socketserver::{Server, Threading};
/// use std::time::Duration;
///
/// let root = tempfile::tempdir()?;
/// let server = Server::builder()
///     .strategy(Threading::new())
///     .tcp("127.0.0.1:0", FileServer::new(FilesConfig::new(root.path()))?)?;
/// let addr = server.server_address().clone();
/// let handle = server.shutdown_handle();
/// let t = std::thread::spawn(move || server.serve_forever());
///
/// let mut client = Client::connect(&addr, None, Duration::from_secs(5))?;
/// client.put_bytes("hello.txt", b"hello")?;
/// assert_eq!(client.get_bytes("hello.txt")?, b"hello");
/// assert_eq!(client.list()?[0].name, "hello.txt");
/// drop(client);
/// handle.shutdown();
/// t.join().unwrap()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct FileServer {
    config: Arc<FilesConfig>,
    /// The root, opened once at the start: every file operation is
    /// relative to this descriptor (`openat`, `renameat`, `unlinkat`), so
    /// replacing the root's path by a symlink later redirects nothing.
    root: Arc<OwnedFd>,
    /// With a key: one deadline per handshake, at most
    /// [`DEFAULT_MAX_PENDING`](socketserver::auth::DEFAULT_MAX_PENDING)
    /// at once.
    gate: Option<Gatekeeper>,
    /// Connections authenticating, closed at once when the server stops.
    handshakes: crate::service::Handshakes,
}

/// What to do after a request.
enum Flow {
    Continue,
    Close,
}

impl FileServer {
    /// A server for `config.root`, which must be an existing directory (it
    /// is made absolute and resolved). Upload temp files left in it by a
    /// crash are removed.
    ///
    /// # Errors
    ///
    /// `NotFound` or `InvalidInput` naming the root if it does not exist or
    /// is not a directory.
    pub fn new(mut config: FilesConfig) -> io::Result<FileServer> {
        let root = fs::canonicalize(&config.root).map_err(|e| {
            io::Error::new(e.kind(), format!("root {}: {e}", config.root.display()))
        })?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("root {}: not a directory", config.root.display()),
            ));
        }
        config.root = root;
        let dir = rustix::fs::open(
            &config.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            let e = io::Error::from(e);
            io::Error::new(e.kind(), format!("root {}: {e}", config.root.display()))
        })?;
        let swept = sweep_temp_files(&dir);
        if swept > 0 {
            log::info!(
                "files: removed {swept} unfinished upload(s) left in {}",
                config.root.display()
            );
        }
        let gate = config
            .key
            .clone()
            .map(|k| Gatekeeper::new(k).with_deadline(AUTH_TIMEOUT));
        Ok(FileServer {
            config: Arc::new(config),
            root: Arc::new(dir),
            gate,
            handshakes: crate::service::Handshakes::default(),
        })
    }

    /// The configuration (with the resolved root).
    pub fn config(&self) -> &FilesConfig {
        &self.config
    }

    /// Closes the connections still authenticating (with a key) and
    /// refuses new ones: for when the server stops (they have nothing to
    /// finish; connections waiting for a request are closed by the
    /// graceful close, transfers in progress get its drain deadline).
    pub fn close_handshakes(&self) {
        self.handshakes.close();
    }

    /// Gives `builder` this configuration's timeouts: `idle` as the read
    /// and write timeout of every connection, so that the server's own
    /// message reads (which wait for the next request, and watch for a
    /// shutdown meanwhile) close a connection silent for that long. Build
    /// the server from the result.
    pub fn configure<S: socketserver::Strategy>(
        &self,
        builder: socketserver::Builder<S>,
    ) -> socketserver::Builder<S> {
        builder
            .read_timeout(self.config.idle)
            .write_timeout(self.config.idle)
    }

    /// Reads one request (its header frame, and a put's bytes) and answers
    /// it; `Close` at the end of the stream, after an idle timeout, or when
    /// the stream is out of step.
    fn serve_one(&self, req: &mut StreamRequest) -> io::Result<Flow> {
        let header = match REQUEST_FRAMING.read_frame(req) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(Flow::Close),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                log::info!("files: {}: {e}, closing", req.peer_addr());
                return Ok(Flow::Close);
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                reply(req, &Response::error(format!("bad request frame: {e}")))?;
                return Ok(Flow::Close);
            }
            Err(e) => return Err(e),
        };
        let request = match Request::parse(&header) {
            Ok(r) => r,
            Err(why) => {
                // Whether raw bytes follow is unknown: the stream is out of
                // step, so answer and close.
                reply(
                    req,
                    &Response::error(format!("{why}; closing the connection")),
                )?;
                return Ok(Flow::Close);
            }
        };
        match &request {
            Request::Put { name, size, sha256 } => self.put(req, name, *size, sha256),
            Request::Get { name } => self.get(req, name),
            Request::List => self.list(req),
        }
    }

    fn put(
        &self,
        req: &mut StreamRequest,
        name: &str,
        size: u64,
        sha256: &str,
    ) -> io::Result<Flow> {
        if size > self.config.max_size {
            reply(
                req,
                &Response::error(format!(
                    "{size} bytes is over this server's limit of {} bytes (--max-size); \
                     closing the connection",
                    self.config.max_size
                )),
            )?;
            return Ok(Flow::Close);
        }
        let want = match put_fields(name, sha256) {
            Ok(fields) => fields,
            Err(why) => {
                // Keep the stream in step: the bytes follow anyway.
                framing::copy_exact(req, &mut io::sink(), size)?;
                reply(req, &Response::error(format!("{why}; nothing was stored")))?;
                return Ok(Flow::Continue);
            }
        };
        let temp = match TempFile::create(&self.root) {
            Ok(t) => t,
            Err(e) => {
                framing::copy_exact(req, &mut io::sink(), size)?;
                reply(
                    req,
                    &Response::error(format!("cannot create a temporary file: {e}")),
                )?;
                return Ok(Flow::Continue);
            }
        };
        let mut hasher = Sha256::new();
        let mut store = Store {
            file: BufWriter::with_capacity(super::CHUNK, &temp.file),
            failed: None,
        };
        // A read error (the client went away, stalled past the idle
        // timeout) returns here: `temp` is dropped, the file removed.
        copy_n(req, &mut store, size, Some(&mut hasher), &mut ())?;
        let got = hex(&hasher.finalize());
        // The temp file is gone (or renamed) before the client hears back.
        let outcome = match store.finish() {
            Err(e) => {
                drop(temp);
                Response::error(format!("cannot write {name}: {e}; nothing was stored"))
            }
            Ok(()) if got != want => {
                drop(temp);
                Response::error(format!(
                    "sha256 mismatch: the {size} bytes received hash to {got}, the header \
                     said {want}; nothing was stored"
                ))
            }
            Ok(()) => match temp.persist(name) {
                Ok(()) => {
                    log::info!("files: {}: stored {name} ({size} bytes)", req.peer_addr());
                    Response::file(name, size, got)
                }
                Err(e) => Response::error(format!("cannot store {name}: {e}; nothing was stored")),
            },
        };
        reply(req, &outcome)?;
        Ok(Flow::Continue)
    }

    fn get(&self, req: &mut StreamRequest, name: &str) -> io::Result<Flow> {
        if let Err(why) = check_name(name) {
            reply(req, &Response::error(why))?;
            return Ok(Flow::Continue);
        }
        let mut file = match open_in_root(&self.root, name) {
            Ok(f) => f,
            Err(why) => {
                reply(req, &Response::error(why))?;
                return Ok(Flow::Continue);
            }
        };
        let size = file.metadata()?.len();
        // Reading and hashing a whole file (up to --max-size): under
        // `green`, on a helper thread. The clone shares the file offset.
        let mut reader = file.try_clone()?;
        let (hashed, sha256) = socketserver::green::blocking(move || {
            sha256_of(&mut io::Read::take(&mut reader, size))
        })?;
        if hashed != size {
            reply(
                req,
                &Response::error(format!("{name} changed while being read; try again")),
            )?;
            return Ok(Flow::Continue);
        }
        file.seek(SeekFrom::Start(0))?;
        reply(req, &Response::file(name, size, sha256))?;
        // The header is out: the bytes must follow. If the file shrank in
        // the meantime, the error closes the connection (the client sees a
        // short transfer, never a wrong one).
        copy_n(&mut file, req, size, None, &mut ())?;
        req.flush()?;
        log::info!("files: {}: sent {name} ({size} bytes)", req.peer_addr());
        Ok(Flow::Continue)
    }

    fn list(&self, req: &mut StreamRequest) -> io::Result<Flow> {
        let root = Arc::clone(&self.root);
        let files = match socketserver::green::blocking(move || list_root(&root)) {
            Ok(f) => f,
            Err(e) => {
                reply(req, &Response::error(format!("cannot list: {e}")))?;
                return Ok(Flow::Continue);
            }
        };
        let response = Response {
            ok: true,
            files: Some(files),
            ..Response::default()
        };
        let size = serde_json::to_vec(&response).map_or(usize::MAX, |j| j.len());
        if size > DEFAULT_MAX_FRAME_SIZE {
            reply(req, &Response::error("too many files to list in one frame"))?;
        } else {
            reply(req, &response)?;
        }
        Ok(Flow::Continue)
    }
}

impl StreamHandler for FileServer {
    fn handle_error(&self, peer: &socketserver::Address, error: &socketserver::RequestError) {
        crate::logging::log_client_error("files", peer, error);
    }

    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let peer = req.peer_addr().clone();
        if let Some(gate) = &self.gate {
            let Some(_handshake) = self.handshakes.enter(req.stream())? else {
                return Ok(());
            };
            if let Err(e) = crate::service::authenticate(gate, req) {
                crate::logging::log_auth_failure("files", &peer, &e);
                return Ok(());
            }
        }
        // The handshake (if any) left its own timeouts on the socket: back
        // to the server's (see `configure`).
        req.stream().set_read_timeout(self.config.idle)?;
        req.stream().set_write_timeout(self.config.idle)?;
        log::info!("files: {peer}: connected");
        // One request (header and a put's bytes) is one message: between
        // requests the connection is idle (a graceful close ends it at
        // once); a request must come whole within the server's message
        // deadline, extended by its minimum data rate.
        while let Flow::Continue = req.read_message(|r| self.serve_one(r))? {}
        log::info!("files: {peer}: closed");
        Ok(())
    }
}

/// A put's sha256, lowercased, once the name and the hash's form are
/// checked.
fn put_fields(name: &str, sha256: &str) -> Result<String, String> {
    check_name(name)?;
    if !is_sha256_hex(sha256) {
        return Err("\"sha256\" must be 64 hex digits".into());
    }
    Ok(sha256.to_ascii_lowercase())
}

/// Writes one reply frame and flushes.
fn reply(req: &mut StreamRequest, response: &Response) -> io::Result<()> {
    if let Some(e) = &response.error {
        log::info!("files: {}: refused: {e}", req.peer_addr());
    }
    framing::write_json(req, response)?;
    req.flush()
}

/// Opens `name` in the root for reading: not through a symlink
/// (`O_NOFOLLOW`), regular files only, never blocking (`O_NONBLOCK`, for
/// FIFOs). The error is the message for the client.
fn open_in_root(root: &OwnedFd, name: &str) -> Result<File, String> {
    let file = rustix::fs::openat(
        root,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map(File::from)
    .map_err(io::Error::from);
    match file {
        Ok(f) => match f.metadata() {
            Ok(m) if m.is_file() => Ok(f),
            Ok(_) => Err(format!("{name} is not a regular file")),
            Err(e) => Err(format!("cannot read {name}: {e}")),
        },
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(format!(
            "{name} is a symbolic link; only regular files in the root are served"
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!("no such file: {name}")),
        Err(e) => Err(format!("cannot open {name}: {e}")),
    }
}

/// The names in the root directory (UTF-8 ones only).
fn root_names(root: &OwnedFd) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(root)? {
        let entry = entry?;
        if let Ok(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// The type and size of `name` in the root, not following a symlink.
fn stat_in_root(root: &OwnedFd, name: &str) -> io::Result<(FileType, u64)> {
    let st = rustix::fs::statat(root, name, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok((
        FileType::from_raw_mode(st.st_mode),
        u64::try_from(st.st_size).unwrap_or(0),
    ))
}

/// The regular files of the root with valid names (no temp files, no
/// symlinks, no directories), sorted by name.
fn list_root(root: &OwnedFd) -> io::Result<Vec<Entry>> {
    let mut files = Vec::new();
    for name in root_names(root)? {
        if check_name(&name).is_err() {
            continue;
        }
        // A file removed meanwhile is simply not listed.
        if let Ok((FileType::RegularFile, size)) = stat_in_root(root, &name) {
            files.push(Entry { name, size });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Whether `name` is one of our upload temp files.
fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(".part")
}

/// Removes upload temp files from the root (left by a crash); returns how
/// many.
fn sweep_temp_files(root: &OwnedFd) -> usize {
    let Ok(names) = root_names(root) else {
        return 0;
    };
    names
        .iter()
        .filter(|n| is_temp_name(n))
        .filter(|n| matches!(stat_in_root(root, n), Ok((FileType::RegularFile, _))))
        .filter(|n| rustix::fs::unlinkat(root, n.as_str(), AtFlags::empty()).is_ok())
        .count()
}

/// An upload in progress: `.upload-<random>.part` in the root, removed on
/// drop unless [`persist`](Self::persist)ed.
struct TempFile {
    root: Arc<OwnedFd>,
    name: String,
    file: File,
    kept: bool,
}

impl TempFile {
    fn create(root: &Arc<OwnedFd>) -> io::Result<TempFile> {
        for _ in 0..16 {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random)
                .map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
            let name = format!("{TEMP_PREFIX}{}.part", hex(&random));
            // O_EXCL with O_NOFOLLOW: never follows or reuses anything.
            match rustix::fs::openat(
                &**root,
                name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            ) {
                Ok(fd) => {
                    return Ok(TempFile {
                        root: Arc::clone(root),
                        name,
                        file: File::from(fd),
                        kept: false,
                    })
                }
                Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::other("no free temporary file name"))
    }

    /// Flushes the temp file to disk, renames it to `to` in the root
    /// (atomically replacing what is there; a symlink is replaced, not
    /// followed) and flushes the directory, so that the new name survives
    /// a crash. On error it is removed (dropped). The disk flushes can take
    /// tens of milliseconds: under `green` they run on a helper thread
    /// (`green::blocking`), so that the worker's other connections go on.
    fn persist(mut self, to: &str) -> io::Result<()> {
        let (root, file) = (Arc::clone(&self.root), self.file.try_clone()?);
        let (name, to) = (self.name.clone(), to.to_owned());
        let renamed = socketserver::green::blocking(move || -> io::Result<()> {
            file.sync_all()?;
            rustix::fs::renameat(&*root, name.as_str(), &*root, to.as_str())?;
            if let Err(e) = rustix::fs::fsync(&*root) {
                // The file is in place; only its durability is in doubt.
                log::warn!("files: cannot flush the root directory after storing {to}: {e}");
            }
            Ok(())
        });
        // Renamed: nothing to remove (also when only the directory flush
        // failed, which is logged).
        self.kept = renamed.is_ok();
        renamed
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = rustix::fs::unlinkat(&*self.root, self.name.as_str(), AtFlags::empty());
        }
    }
}

/// The writer of an upload: writes through to the file until the first
/// error, which it keeps; then it swallows the rest, so that the upload's
/// bytes are still read off the stream and it stays in step.
struct Store<'a> {
    file: BufWriter<&'a File>,
    failed: Option<io::Error>,
}

impl Store<'_> {
    fn finish(mut self) -> io::Result<()> {
        if self.failed.is_none() {
            if let Err(e) = self.file.flush() {
                self.failed = Some(e);
            }
        }
        self.failed.map_or(Ok(()), Err)
    }
}

impl Write for Store<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed.is_none() {
            if let Err(e) = self.file.write_all(buf) {
                self.failed = Some(e);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
