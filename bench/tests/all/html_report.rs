//! `bench --html DIR` renders in a real browser: headless Chromium loads
//! the page, its own script marks every image as loaded, and the test reads
//! the DOM back (every image loaded, every table has rows) and takes a
//! screenshot. Skipped, with the reason printed, when `chromium` is not
//! installed (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest a browser run may take (cold start on a busy 2-core machine).
const LIMIT: Duration = Duration::from_secs(120);

fn repo_docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench sits in the workspace")
        .join("docs")
}

/// The browser, if one is installed.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Runs `cmd` to its end within [`LIMIT`], killing it past that.
fn run_within(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Chromium, headless, quiet, with a profile of its own under `dir`.
fn browser(exe: &Path, dir: &Path) -> Command {
    let mut c = Command::new(exe);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=10000",
    ])
    .arg(format!("--user-data-dir={}", dir.join("profile").display()));
    c
}

#[test]
fn the_html_report_renders_in_chromium_with_every_image_loaded_and_every_table_filled() {
    let dir = std::env::temp_dir().join(format!("bench-html-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = run_within({
        let mut c = Command::new(env!("CARGO_BIN_EXE_bench"));
        c.arg("--html").arg(&dir).arg("--docs").arg(repo_docs());
        c
    });
    assert!(
        out.status.success(),
        "bench --html failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = dir.join("index.html");
    let html = std::fs::read_to_string(&page).expect("index.html written");
    // Self-contained: every image is inline, nothing is fetched.
    let images = html.matches("<img ").count();
    assert!(
        images >= 8,
        "the timelines (8) and the charts, found {images}"
    );
    assert_eq!(
        html.matches("src=\"data:image/svg+xml;base64,").count(),
        images,
        "every image is a data: URI"
    );
    assert!(
        !html.contains("class=\"missing\""),
        "an image was not found"
    );

    let Some(exe) = chromium() else {
        eprintln!("skipped: chromium is not installed (the page was checked without a browser)");
        return;
    };
    let url = format!("file://{}", page.display());
    let dom = run_within({
        let mut c = browser(&exe, &dir);
        c.arg("--dump-dom").arg(&url);
        c
    });
    let dom_text = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        dom.status.success() && dom_text.contains("data-ready=\"1\""),
        "the page's script did not finish: status {}, stderr {}",
        dom.status,
        String::from_utf8_lossy(&dom.stderr)
    );
    assert_eq!(
        dom_text.matches("data-loaded=\"yes\"").count(),
        images,
        "every image loaded"
    );
    assert!(!dom_text.contains("data-loaded=\"error\""));
    let status = dom_text
        .split("id=\"report-status\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("the status line");
    eprintln!("page status: {status}");
    assert!(
        status.starts_with(&format!("{images} of {images} images loaded")),
        "{status}"
    );
    assert!(
        status.ends_with(", 0 empty"),
        "a table has no rows: {status}"
    );
    let tables = dom_text.matches("<table>").count();
    assert!(tables >= 10, "the reports' tables, found {tables}");

    let shot = dir.join("report.png");
    let s = run_within({
        let mut c = browser(&exe, &dir);
        c.arg(format!("--screenshot={}", shot.display()))
            .arg("--window-size=1200,2400")
            .arg(&url);
        c
    });
    assert!(
        s.status.success(),
        "screenshot failed: {}",
        String::from_utf8_lossy(&s.stderr)
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    // A blank 1200x2400 page compresses to a few KiB; this one has charts.
    assert!(png.len() > 50_000, "screenshot of {} bytes", png.len());
    eprintln!("screenshot: {} bytes", png.len());
    std::fs::remove_dir_all(&dir).expect("remove the temp dir");
}
