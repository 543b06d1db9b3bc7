//! Dropping root: a server started as root binds its privileged ports and
//! reads its keys and certificates, then becomes an unprivileged user for
//! good before it serves ([`drop_to`]). `Forking` and `PreFork` children,
//! forked later, are that user too.
//!
//! The order is the one that cannot leave a way back: supplementary groups
//! cleared (`setgroups`), then the group (`setgid`), then the user
//! (`setuid`; as root both set the real, effective and saved ids). Then it
//! checks that the ids are the ones asked for and that `setuid(0)` now
//! fails: any error stops here, and the caller must not serve.
//!
//! On Linux with glibc every thread of the process changes (glibc applies
//! the calls to all threads), so threads started before the drop (signal
//! watchers, a logger) are not left behind as root.
//!
//! ```no_run
//! use socketserver::{privilege, Server, StreamRequest, Threading};
//!
//! let server = Server::builder()
//!     .strategy(Threading::new())
//!     .tcp("0.0.0.0:443", |r: &mut StreamRequest| r.echo().map(drop))?;
//! privilege::drop_to("nobody", Some("nogroup"))?;
//! server.serve_forever()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ffi::CString;
use std::io;

/// A user and group resolved from their names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user's name, as given.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The group's gid: the one named, or the user's primary group.
    pub gid: u32,
}

/// Looks `user` up (and `group`, else the user's primary group) in the
/// system's databases (`getpwnam_r`, `getgrnam_r`). An unknown name is
/// [`io::ErrorKind::NotFound`], naming it.
pub fn lookup(user: &str, group: Option<&str>) -> io::Result<Account> {
    let (uid, primary) = user_ids(user)?;
    let gid = match group {
        Some(g) => group_id(g)?,
        None => primary,
    };
    Ok(Account {
        user: user.to_owned(),
        uid,
        gid,
    })
}

/// Becomes `user` (with `group`, else the user's primary group, and no
/// supplementary groups) for the rest of the process, then checks that
/// root cannot be had back. See the [module docs](self).
///
/// A process that already runs as exactly that user and group (the new
/// process of an upgrade, started by a server that dropped already) has
/// nothing to do and succeeds. Every error names the user; the caller
/// must not serve after one.
pub fn drop_to(user: &str, group: Option<&str>) -> io::Result<()> {
    let account = lookup(user, group)?;
    drop_to_account(&account)
}

/// [`drop_to`] with the ids already looked up.
pub fn drop_to_account(account: &Account) -> io::Result<()> {
    let context = |what: &str, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot run as user {} (uid {}, gid {}): {what}: {e}",
                account.user, account.uid, account.gid
            ),
        )
    };
    let ids = Ids::current();
    if ids.all_are(account.uid, account.gid) {
        return verify(account).map_err(|e| context("checking the switch", e));
    }
    if ids.euid != 0 {
        return Err(context(
            "switching users",
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("this process runs as uid {}, not root", ids.euid),
            ),
        ));
    }
    // SAFETY: setgroups with a count of 0 reads no memory.
    check(unsafe { libc::setgroups(0, std::ptr::null()) })
        .map_err(|e| context("setgroups([])", e))?;
    // SAFETY: setgid and setuid only take integers.
    check(unsafe { libc::setgid(account.gid) }).map_err(|e| context("setgid", e))?;
    // SAFETY: as above.
    check(unsafe { libc::setuid(account.uid) }).map_err(|e| context("setuid", e))?;
    verify(account).map_err(|e| context("checking the switch", e))?;
    log::info!(
        "running as user {} (uid {}, gid {})",
        account.user,
        account.uid,
        account.gid
    );
    Ok(())
}

/// The real, effective and saved ids of this process.
#[derive(Debug, Clone, Copy)]
struct Ids {
    uid: [u32; 3],
    gid: [u32; 3],
    euid: u32,
}

impl Ids {
    fn current() -> Ids {
        let (mut r, mut e, mut s) = (0, 0, 0);
        // SAFETY: getresuid writes three uid_t through valid pointers.
        unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
        let uid = [r, e, s];
        // SAFETY: as above, for gid_t.
        unsafe { libc::getresgid(&mut r, &mut e, &mut s) };
        Ids {
            uid,
            gid: [r, e, s],
            euid: uid[1],
        }
    }

    fn all_are(&self, uid: u32, gid: u32) -> bool {
        self.uid.iter().all(|&u| u == uid) && self.gid.iter().all(|&g| g == gid)
    }
}

/// Checks that the ids are `account`'s, that no supplementary group is
/// left (beyond `gid`), and, unless `account` is root, that `setuid(0)`
/// and `setgid(0)` fail.
fn verify(account: &Account) -> io::Result<()> {
    let ids = Ids::current();
    if !ids.all_are(account.uid, account.gid) {
        return Err(io::Error::other(format!(
            "the process runs as uids {:?}, gids {:?}",
            ids.uid, ids.gid
        )));
    }
    // SAFETY: getgroups with a count of 0 only returns the count.
    let groups = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if groups > 1 {
        return Err(io::Error::other(format!(
            "{groups} supplementary groups are left"
        )));
    }
    if account.uid == 0 {
        return Ok(());
    }
    // SAFETY: setuid and setgid only take integers; both must fail here.
    if unsafe { libc::setuid(0) } == 0 || unsafe { libc::setgid(0) } == 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "root could be had back (setuid(0) or setgid(0) succeeded)",
        ));
    }
    Ok(())
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn c_name(kind: &str, name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{kind} name {name:?} contains a NUL byte"),
        )
    })
}

/// A buffer size for the `_r` lookups, growing on `ERANGE`.
fn lookup_with<T>(
    kind: &str,
    name: &str,
    mut call: impl FnMut(&mut Vec<libc::c_char>) -> Result<Option<T>, i32>,
) -> io::Result<T> {
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        match call(&mut buf) {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no {kind} named {name:?}"),
                ))
            }
            Err(libc::ERANGE) if buf.len() < 1 << 20 => {
                let n = buf.len() * 2;
                buf.resize(n, 0);
            }
            Err(e) => {
                let e = io::Error::from_raw_os_error(e);
                return Err(io::Error::new(
                    e.kind(),
                    format!("looking up {kind} {name:?}: {e}"),
                ));
            }
        }
    }
}

/// The uid and primary gid of `user`.
fn user_ids(user: &str) -> io::Result<(u32, u32)> {
    let c = c_name("user", user)?;
    lookup_with("user", user, |buf| {
        // SAFETY: an all-zero passwd is a valid value of a plain C struct.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; getpwnam_r writes
        // strings into `buf` (of the length given) and the entry into
        // `pwd`, and sets `result` to `&pwd` or null.
        let r = unsafe {
            libc::getpwnam_r(
                c.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        match r {
            0 if result.is_null() => Ok(None),
            0 => Ok(Some((pwd.pw_uid, pwd.pw_gid))),
            e => Err(e),
        }
    })
}

/// The gid of `group`.
fn group_id(group: &str) -> io::Result<u32> {
    let c = c_name("group", group)?;
    lookup_with("group", group, |buf| {
        // SAFETY: an all-zero group is a valid value of a plain C struct.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in `user_ids`, for getgrnam_r.
        let r = unsafe {
            libc::getgrnam_r(
                c.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        match r {
            0 if result.is_null() => Ok(None),
            0 => Ok(Some(grp.gr_gid)),
            e => Err(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_unknown_names_resolve_or_fail_naming_them() {
        let root = lookup("root", None).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let e = lookup("no-such-user-here", None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("no-such-user-here"), "{e}");
        let e = lookup("root", Some("no-such-group-here")).unwrap_err();
        assert!(e.to_string().contains("no-such-group-here"), "{e}");
        assert!(lookup("a\0b", None).is_err());
    }
}
