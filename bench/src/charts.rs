//! SVG charts of a `bench` run (plotters, SVG backend only).

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::Row;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A chart drawing into an SVG file, with `X` and `Y` axes.
type Chart<'a, 'b, X, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>;

/// A white canvas of `height` pixels (960 wide) drawing into `path`.
fn canvas(path: &Path, height: u32) -> Res<DrawingArea<SVGBackend<'_>, Shift>> {
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

/// The axes every chart here has: the caption, the margins and label areas,
/// `x` and `y` (linear or log) ranges.
fn axes<'a, 'b, X, Y>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    x: X,
    y: Y,
) -> Res<Chart<'a, 'b, X::CoordDescType, Y::CoordDescType>>
where
    X: AsRangedCoord,
    Y: AsRangedCoord,
{
    Ok(ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)?)
}

/// The axes of a chart with one category (server) per x position
/// `0..names.len()`, labelled with its name, and `y`.
fn category_axes<'a, 'b, Y>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    names: &[String],
    y: Y,
    y_desc: &str,
    y_rate: bool,
) -> Res<Chart<'a, 'b, RangedCoordf64, Y::CoordDescType>>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let n = names.len();
    let mut chart = axes(root, caption, -0.5f64..(n as f64 - 0.5), y)?;
    let x_fmt = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 0.01 && i >= 0.0 {
            names.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let y_fmt = |y: &f64| super::report::fmt_rate(*y);
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&x_fmt)
        .y_desc(y_desc);
    if y_rate {
        mesh.y_label_formatter(&y_fmt);
    }
    mesh.draw()?;
    Ok(chart)
}

/// Writes every chart the rows allow into `dir`; returns `(file name,
/// caption)` of each written.
pub fn write_all(dir: &Path, rows: &[Row]) -> Res<Vec<(String, String)>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    let caption = "Throughput vs connections, 64-byte ping-pong (req/s, higher is better)";
    if throughput(&dir.join("throughput.svg"), rows, caption)? {
        out.push(("throughput.svg".into(), caption.into()));
    }
    let caption =
        "Latency percentiles at 50 connections, 64-byte ping-pong (log scale, lower is better)";
    if latency(&dir.join("latency.svg"), rows, "pp64-c50", caption)? {
        out.push(("latency.svg".into(), caption.into()));
    }
    for (cell, file, caption) in [
        (
            "connect-c8",
            "connect.svg",
            "New connections per second: connect, echo 64 B, close; 8 at a time",
        ),
        (
            "udp64-c8",
            "udp.svg",
            "UDP echo, 64-byte datagrams, 8 sockets (req/s)",
        ),
        (
            "pp16k-c50",
            "pp16k.svg",
            "16 KiB ping-pong at 50 connections (req/s)",
        ),
        (
            "tls-pp64-c50",
            "tls-pingpong.svg",
            "TLS: 64-byte ping-pong at 50 connections (req/s)",
        ),
        (
            "tls-handshake-c8",
            "tls-handshake.svg",
            "TLS: full handshakes per second (connect, handshake, echo 64 B, close; 8 at a time)",
        ),
    ] {
        let data: Vec<(String, f64)> = rows
            .iter()
            .filter(|r| r.cell == cell && r.failure.is_none())
            .map(|r| (r.server.clone(), r.req_per_s))
            .collect();
        if bars(&dir.join(file), caption, "req/s", &data)? {
            out.push((file.into(), caption.into()));
        }
    }
    let mut idle: Vec<(String, f64)> = Vec::new();
    for cell in ["idle-10k", "idle-1k"] {
        idle = rows
            .iter()
            .filter(|r| r.cell == cell)
            .filter_map(|r| r.idle.as_ref().map(|i| (r.server.clone(), i.kib_per_conn)))
            .collect();
        if !idle.is_empty() {
            let caption = format!("Server RSS per idle connection, KiB ({cell}; lower is better)");
            if bars(&dir.join("idle.svg"), &caption, "KiB per connection", &idle)? {
                out.push(("idle.svg".into(), caption));
            }
            break;
        }
    }
    drop(idle);
    Ok(out)
}

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// req/s against connections (1, 50, 500), one line per server.
fn throughput(path: &Path, rows: &[Row], caption: &str) -> Res<bool> {
    let cells = [("pp64-c1", 1.0), ("pp64-c50", 50.0), ("pp64-c500", 500.0)];
    let mut servers: Vec<String> = Vec::new();
    for r in rows.iter().filter(|r| cells.iter().any(|c| c.0 == r.cell)) {
        if !servers.contains(&r.server) {
            servers.push(r.server.clone());
        }
    }
    let series: Vec<(String, Vec<(f64, f64)>)> = servers
        .into_iter()
        .map(|s| {
            let pts = cells
                .iter()
                .filter_map(|(cell, x)| {
                    rows.iter()
                        .find(|r| r.server == s && r.cell == *cell && r.failure.is_none())
                        .map(|r| (*x, r.req_per_s))
                })
                .collect();
            (s, pts)
        })
        .filter(|(_, p): &(String, Vec<(f64, f64)>)| !p.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(false);
    }
    let ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(1.0, f64::max)
        * 1.1;
    let root = canvas(path, 560)?;
    let mut chart = axes(&root, caption, (0.8f64..700.0).log_scale(), 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("concurrent connections (log scale)")
        .y_desc("requests per second")
        .y_label_formatter(&|y| super::report::fmt_rate(*y))
        .draw()?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(true)
}

/// p50, p99, p99.9 per server in one cell, grouped bars on a log scale.
fn latency(path: &Path, rows: &[Row], cell: &str, caption: &str) -> Res<bool> {
    let data: Vec<(&str, [f64; 3])> = rows
        .iter()
        .filter(|r| r.cell == cell && r.failure.is_none() && r.p50_us > 0.0)
        .map(|r| (r.server.as_str(), [r.p50_us, r.p99_us, r.p999_us]))
        .collect();
    if data.is_empty() {
        return Ok(false);
    }
    let ymax = data.iter().flat_map(|d| d.1).fold(10.0, f64::max) * 2.0;
    let ymin = data
        .iter()
        .flat_map(|d| d.1)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        / 2.0;
    let names: Vec<String> = data.iter().map(|d| d.0.to_owned()).collect();
    let root = canvas(path, 560)?;
    let mut chart = category_axes(
        &root,
        caption,
        &names,
        (ymin..ymax).log_scale(),
        "latency, microseconds (log scale)",
        false,
    )?;
    for (k, label) in ["p50", "p99", "p99.9"].iter().enumerate() {
        let c = color(k);
        chart
            .draw_series(data.iter().enumerate().map(|(i, d)| {
                let x0 = i as f64 - 0.36 + k as f64 * 0.24;
                Rectangle::new([(x0, ymin), (x0 + 0.22, d.1[k].max(ymin))], c.filled())
            }))?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(true)
}

/// One bar per server.
fn bars(path: &Path, caption: &str, y_desc: &str, data: &[(String, f64)]) -> Res<bool> {
    if data.is_empty() {
        return Ok(false);
    }
    let ymax = data.iter().map(|d| d.1).fold(1.0, f64::max) * 1.15;
    let names: Vec<String> = data.iter().map(|d| d.0.clone()).collect();
    let root = canvas(path, 520)?;
    let mut chart = category_axes(&root, caption, &names, 0f64..ymax, y_desc, true)?;
    chart.draw_series(data.iter().enumerate().map(|(i, d)| {
        Rectangle::new(
            [(i as f64 - 0.35, 0.0), (i as f64 + 0.35, d.1)],
            color(i).filled(),
        )
    }))?;
    chart.draw_series(data.iter().enumerate().map(|(i, d)| {
        let label = if d.1 >= 100.0 {
            super::report::fmt_rate(d.1)
        } else {
            format!("{:.1}", d.1)
        };
        Text::new(
            label,
            (i as f64 - 0.3, d.1 + ymax * 0.055),
            ("sans-serif", 13).into_font(),
        )
    }))?;
    root.present()?;
    Ok(true)
}
