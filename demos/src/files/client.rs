//! The file transfer client: [`Client`] speaks the protocol of the
//! [module docs](super) over one connection; `demos files put|get|list`
//! are thin wrappers around it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;

use sha2::{Digest, Sha256};
use socketserver::auth::{self, Key};
use socketserver::framing::{self, Framing, DEFAULT_MAX_FRAME_SIZE};
use socketserver::Address;

use super::{check_name, copy_n, hex, sha256_of, Entry, Progress, Request, Response};
use crate::net::url;
use crate::tls::{ClientTls, Stream};

/// One connection to a file server.
#[derive(Debug)]
pub struct Client {
    conn: Stream,
    reader: BufReader<Stream>,
    url: String,
}

impl Client {
    /// Connects to `addr` (and authenticates with `key`, which must be
    /// given exactly when the server has one); every wait is bounded by
    /// `timeout`.
    ///
    /// # Errors
    ///
    /// The connection's errors, `PermissionDenied` for a wrong key; the
    /// message names the server.
    pub fn connect(addr: &Address, key: Option<&Key>, timeout: Duration) -> io::Result<Client> {
        Client::connect_tls(addr, key, None, timeout)
    }

    /// [`connect`](Self::connect), over TLS when `tls` is given (the
    /// server's certificate checked; the authentication, if any, runs
    /// inside the session).
    ///
    /// # Errors
    ///
    /// Those of [`connect`](Self::connect), and `InvalidData` (`TLS: ...`,
    /// see [`describe`](crate::tls::describe)) when the TLS session fails.
    pub fn connect_tls(
        addr: &Address,
        key: Option<&Key>,
        tls: Option<&ClientTls>,
        timeout: Duration,
    ) -> io::Result<Client> {
        let url = url(addr, false);
        let context = |e: io::Error| io::Error::new(e.kind(), format!("{url}: {e}"));
        let mut conn = crate::tls::connect(addr, tls, timeout).map_err(context)?;
        if let Some(key) = key {
            auth::client_handshake(&mut conn, key)
                .map_err(|e| crate::tls::first_exchange_error(e, &url, tls.is_some()))?;
        }
        let reader = BufReader::with_capacity(super::CHUNK, conn.try_clone()?);
        Ok(Client { conn, reader, url })
    }

    /// The server's URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends a request header as it is (no payload) and reads one reply
    /// header, whatever it says. For `list`, and for tests that send what
    /// the client itself would not.
    pub fn request(&mut self, request: &Request) -> io::Result<Response> {
        framing::write_json(&mut &self.conn, request).map_err(|e| self.context(e))?;
        self.response()
    }

    /// Lists the files on the server.
    pub fn list(&mut self) -> io::Result<Vec<Entry>> {
        let response = self.request(&Request::list())?;
        self.check(response)?
            .files
            .ok_or_else(|| self.bad("a list reply without \"files\""))
    }

    /// Uploads `size` bytes from `data` as `name`, announcing `sha256`;
    /// returns the server's reply (it checked the hash).
    ///
    /// # Errors
    ///
    /// `Other` (`... refused: WHY`) if the server refused; the
    /// connection's errors; `UnexpectedEof` if `data` has fewer than `size`
    /// bytes (the connection is then unusable).
    pub fn put(
        &mut self,
        name: &str,
        data: &mut dyn Read,
        size: u64,
        sha256: &str,
        progress: &mut dyn Progress,
    ) -> io::Result<Response> {
        let sent = (|| {
            framing::write_json(&mut &self.conn, &Request::put(name, size, sha256))?;
            progress.start(size);
            let r = copy_n(data, &mut &self.conn, size, None, progress);
            progress.finish();
            r
        })();
        if let Err(e) = sent {
            // The server may have answered and closed (a size over its
            // limit): its reason beats "broken pipe".
            let _ = self.conn.set_read_timeout(Some(Duration::from_secs(1)));
            return match self.response() {
                Ok(r) if !r.ok => self.check(r),
                _ => Err(self.context(e)),
            };
        }
        let response = self.response()?;
        self.check(response)
    }

    /// Uploads the file at `path` as `name`: reads it once to hash it,
    /// once to send it.
    pub fn put_file(
        &mut self,
        path: &Path,
        name: &str,
        progress: &mut dyn Progress,
    ) -> io::Result<Response> {
        let open = || {
            File::open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        let mut file = open()?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a regular file", path.display()),
            ));
        }
        let (size, sha256) = sha256_of(&mut file)?;
        let mut file = open()?;
        self.put(name, &mut file, size, &sha256, progress)
    }

    /// Uploads `data` as `name`.
    pub fn put_bytes(&mut self, name: &str, data: &[u8]) -> io::Result<Response> {
        let sha256 = hex(&Sha256::digest(data));
        self.put(name, &mut &data[..], data.len() as u64, &sha256, &mut ())
    }

    /// Downloads `name` into `out`, streaming, and checks the sha256 of
    /// what arrived against the server's header; returns that header.
    ///
    /// # Errors
    ///
    /// `Other` (`... refused: WHY`) if the server refused; `InvalidData`
    /// (`sha256 mismatch ...`) if the bytes do not match (they were
    /// written to `out` all the same: write to a temporary place, as
    /// [`get_to_path`](Self::get_to_path) does); the connection's errors.
    pub fn get(
        &mut self,
        name: &str,
        out: &mut dyn Write,
        progress: &mut dyn Progress,
    ) -> io::Result<Response> {
        let response = self.request(&Request::get(name))?;
        let response = self.check(response)?;
        let (Some(size), Some(want)) = (response.size, response.sha256.clone()) else {
            return Err(self.bad("a get reply without \"size\" and \"sha256\""));
        };
        let mut hasher = Sha256::new();
        progress.start(size);
        let copied = copy_n(&mut self.reader, out, size, Some(&mut hasher), progress);
        progress.finish();
        copied.map_err(|e| self.context(e))?;
        let got = hex(&hasher.finalize());
        if !got.eq_ignore_ascii_case(&want) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: sha256 mismatch for {name}: received bytes hash to {got}, the server \
                     said {want}",
                    self.url
                ),
            ));
        }
        Ok(response)
    }

    /// Downloads `name` into the file `dest`: into a temporary file next
    /// to it first, renamed over `dest` only once the sha256 matched (so
    /// `dest` is never half-written); the temporary file is removed on
    /// every error.
    pub fn get_to_path(
        &mut self,
        name: &str,
        dest: &Path,
        progress: &mut dyn Progress,
    ) -> io::Result<Response> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.to_owned());
        let mut random = [0u8; 4];
        getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
        let temp = Partial::register(dir.join(partial_name(&base, &hex(&random))));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp.path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", temp.path.display())))?;
        let response = {
            let mut w = io::BufWriter::with_capacity(super::CHUNK, &mut file);
            let r = self.get(name, &mut w, progress)?;
            w.flush()?;
            r
        };
        file.sync_all()?;
        fs::rename(&temp.path, dest)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dest.display())))?;
        temp.keep();
        Ok(response)
    }

    /// Downloads `name` into memory (for small files and tests).
    pub fn get_bytes(&mut self, name: &str) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get(name, &mut out, &mut ())?;
        Ok(out)
    }

    /// Reads one reply header.
    fn response(&mut self) -> io::Result<Response> {
        let framing = Framing::new().with_max_frame_size(DEFAULT_MAX_FRAME_SIZE);
        match framing.read_frame(&mut self.reader) {
            Ok(Some(frame)) => serde_json::from_slice(&frame).map_err(|e| {
                let why = if frame.len() == auth::CHALLENGE_LEN {
                    "the server sent an authentication challenge: it needs --key-file".to_owned()
                } else {
                    format!("invalid reply: {e}")
                };
                io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", self.url))
            }),
            Ok(None) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: the server closed the connection (does it need --key-file{}?)",
                    self.url,
                    if self.conn.is_tls() {
                        ""
                    } else {
                        " or --tls-ca"
                    }
                ),
            )),
            Err(e) => Err(self.context(e)),
        }
    }

    /// `Ok(response)` if it says ok, else the refusal as an error.
    fn check(&self, response: Response) -> io::Result<Response> {
        if response.ok {
            return Ok(response);
        }
        let why = response.error.as_deref().unwrap_or("no reason given");
        Err(io::Error::other(format!("{} refused: {why}", self.url)))
    }

    fn context(&self, e: io::Error) -> io::Error {
        let hint = match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "no reply in time".to_owned(),
            _ => e.to_string(),
        };
        io::Error::new(e.kind(), format!("{}: {hint}", self.url))
    }

    fn bad(&self, what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", self.url))
    }
}

impl Drop for Client {
    /// Under TLS: a `close_notify`, so the server sees a clean end.
    fn drop(&mut self) {
        self.conn.close_notify();
    }
}

/// The temp file name of a download into `base`: `.BASE.RANDOM.part`, with
/// `BASE` shortened (at a character boundary) so that the whole stays within
/// the usual 255-byte limit of a file name.
///
/// ```
/// use demos::files::client::partial_name;
/// assert_eq!(partial_name("notes.txt", "0a1b2c3d"), ".notes.txt.0a1b2c3d.part");
/// let long = "é".repeat(127); // 254 bytes
/// let name = partial_name(&long, "0a1b2c3d");
/// assert!(name.len() <= 255, "{}", name.len());
/// assert!(name.ends_with(".0a1b2c3d.part"));
/// ```
pub fn partial_name(base: &str, random: &str) -> String {
    let room = super::MAX_NAME - ".".len() - ".".len() - random.len() - ".part".len();
    let mut end = base.len().min(room);
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    format!(".{}.{random}.part", &base[..end])
}

/// Downloads in progress in this process, for [`remove_partial_downloads`].
static PARTIALS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes the temp files of the downloads in progress in this process;
/// returns how many. For a signal handler thread of the CLI (a ^C in the
/// middle of a get), where the downloads' own cleanup would not run.
pub fn remove_partial_downloads() -> usize {
    let mut partials = PARTIALS.lock();
    partials
        .drain(..)
        .filter(|p| fs::remove_file(p).is_ok())
        .count()
}

/// A partial download, removed on drop unless it was renamed into place.
struct Partial {
    path: PathBuf,
    kept: bool,
}

impl Partial {
    /// A partial download at `path` (not created yet), known to
    /// [`remove_partial_downloads`] until it is kept or dropped.
    fn register(path: PathBuf) -> Partial {
        PARTIALS.lock().push(path.clone());
        Partial { path, kept: false }
    }

    /// It was renamed into place: nothing to remove.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let mut partials = PARTIALS.lock();
        partials.retain(|p| p != &self.path);
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The name a put uses for `path` when none is given: its file name,
/// checked with [`check_name`].
pub fn default_name(path: &Path) -> Result<String, String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: no file name to upload as; use --name", path.display()))?
        .to_str()
        .ok_or_else(|| format!("{}: the file name is not UTF-8; use --name", path.display()))?;
    check_name(name).map(|()| name.to_owned())
}
