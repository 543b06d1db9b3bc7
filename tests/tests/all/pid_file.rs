//! `socketserver::pidfile`: the pid file is a lock. A second holder of the
//! same path is refused with `ResourceBusy` naming the path and the pid, a
//! dropped one removes its file, a stale file (no lock) is taken over, and
//! a file rewritten by a successor is left alone on drop.

use std::io::ErrorKind;

use socketserver::pidfile::PidFile;

#[test]
fn a_second_lock_on_the_same_path_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.pid");
    let held = PidFile::create(&path).unwrap();
    assert_eq!(held.pid(), Some(std::process::id()));
    let e = PidFile::create(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ResourceBusy);
    let msg = e.to_string();
    assert!(msg.contains(path.to_str().unwrap()), "{msg}");
    assert!(msg.contains(&std::process::id().to_string()), "{msg}");
    // The refusal did not touch the holder's file.
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", std::process::id())
    );
}

#[test]
fn dropping_the_pid_file_removes_it_and_frees_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.pid");
    drop(PidFile::create(&path).unwrap());
    assert!(!path.exists());
    let again = PidFile::create(&path).unwrap();
    assert_eq!(again.path(), path);
}

#[test]
fn a_stale_file_without_a_lock_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.pid");
    std::fs::write(&path, "123456789 and some junk\n").unwrap();
    let p = PidFile::create(&path).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", std::process::id())
    );
    drop(p);
    assert!(!path.exists());
}

#[test]
fn a_file_naming_another_process_is_left_alone_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.pid");
    let p = PidFile::create(&path).unwrap();
    // What a successor does in an upgrade: the same open file, its pid.
    std::fs::write(&path, "1\n").unwrap();
    assert_eq!(p.pid(), Some(1));
    drop(p);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
}

#[test]
fn a_missing_directory_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/s.pid");
    let e = PidFile::create(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains(path.to_str().unwrap()), "{e}");
}
