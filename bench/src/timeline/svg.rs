//! Drawing timelines as SVG, in the style of the other charts of `bench`
//! (white canvas 960 pixels wide, sans-serif, the same palette): one panel
//! per strategy, a lane per thread, process or green worker, a light bar
//! while a request waits and a dark one while it is served, a tick where
//! its connection was accepted, a time axis in milliseconds.

use std::fmt::Write as _;

use super::layout::Layout;

/// Canvas width, as the other charts.
const WIDTH: f64 = 960.0;
/// Room for lane labels on the left.
const LEFT: f64 = 150.0;
const RIGHT: f64 = 25.0;
/// Height of one row of bars, and the gap between lanes.
const ROW: f64 = 11.0;
const LANE_GAP: f64 = 7.0;
/// A panel's title line.
const TITLE: f64 = 28.0;
/// The axis under a panel.
const AXIS: f64 = 32.0;

/// The service bar (the palette's first colour) and the wait bar (a light
/// tint of it).
const DARK: &str = "#1f77b4";
const LIGHT: &str = "#aec7e8";

/// One panel: a title and its layout.
pub struct Panel<'a> {
    /// The panel's title (`Pool(4): 4 worker threads`).
    pub title: String,
    /// What to draw.
    pub layout: &'a Layout,
}

/// Milliseconds between axis ticks for an axis of `end` ms: 1, 2 or 5
/// times a power of ten, about 8 ticks.
pub fn tick_step(end: f64) -> f64 {
    let raw = (end / 8.0).max(1.0);
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * pow)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * pow)
}

/// How tall a panel is.
fn panel_height(l: &Layout) -> f64 {
    let rows: f64 = l.lanes.iter().map(|x| x.rows.max(1) as f64 * ROW).sum();
    TITLE + rows + LANE_GAP * l.lanes.len() as f64 + AXIS
}

/// Escapes text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Draws `panel` at vertical offset `top`, time 0 to `end_ms` across the
/// width; returns its height.
fn draw_panel(out: &mut String, panel: &Panel<'_>, top: f64, end_ms: f64) -> f64 {
    let l = panel.layout;
    let span = WIDTH - LEFT - RIGHT;
    let x = |t: f64| LEFT + t / end_ms * span;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{:.1}" font-family="sans-serif" font-size="15" font-weight="bold">{}</text>"#,
        top + 18.0,
        esc(&panel.title)
    );
    let mut y = top + TITLE;
    let mut lane_top = Vec::with_capacity(l.lanes.len());
    for (i, lane) in l.lanes.iter().enumerate() {
        let h = lane.rows.max(1) as f64 * ROW;
        lane_top.push(y);
        if i % 2 == 0 {
            let _ = writeln!(
                out,
                r##"<rect x="{LEFT}" y="{:.1}" width="{span:.1}" height="{:.1}" fill="#f4f4f4"/>"##,
                y - LANE_GAP / 2.0,
                h + LANE_GAP
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="12" text-anchor="end" dominant-baseline="middle">{}</text>"#,
            LEFT - 8.0,
            y + h / 2.0,
            esc(&lane.label)
        );
        y += h + LANE_GAP;
    }
    let bottom = y;
    for b in &l.bars {
        let row_y = lane_top[b.lane] + b.row as f64 * ROW + 1.0;
        let h = ROW - 2.0;
        if b.wait.1 > b.wait.0 {
            let _ = writeln!(
                out,
                r#"<rect x="{:.2}" y="{row_y:.1}" width="{:.2}" height="{h:.1}" fill="{LIGHT}"><title>client {} request {}: waited {:.1} ms</title></rect>"#,
                x(b.wait.0),
                (x(b.wait.1) - x(b.wait.0)).max(0.5),
                b.client + 1,
                b.seq + 1,
                b.wait.1 - b.wait.0
            );
        }
        let _ = writeln!(
            out,
            r##"<rect x="{:.2}" y="{row_y:.1}" width="{:.2}" height="{h:.1}" fill="{DARK}" stroke="#ffffff" stroke-width="0.6"><title>client {} request {}: served {:.1} to {:.1} ms</title></rect>"##,
            x(b.service.0),
            (x(b.service.1) - x(b.service.0)).max(0.5),
            b.client + 1,
            b.seq + 1,
            b.service.0,
            b.service.1
        );
        if let Some(a) = b.accept {
            let _ = writeln!(
                out,
                r##"<line x1="{:.2}" x2="{:.2}" y1="{:.1}" y2="{:.1}" stroke="#000000" stroke-width="1.5"/>"##,
                x(a),
                x(a),
                row_y - 1.0,
                row_y + h + 1.0
            );
        }
    }
    // The time axis.
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{bottom:.1}" y2="{bottom:.1}" stroke="#000000"/>"##,
        WIDTH - RIGHT
    );
    let step = tick_step(end_ms);
    let mut t = 0.0;
    while t <= end_ms + 1e-9 {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.2}" x2="{0:.2}" y1="{bottom:.1}" y2="{1:.1}" stroke="#000000"/><text x="{0:.2}" y="{2:.1}" font-family="sans-serif" font-size="11" text-anchor="middle">{3}</text>"##,
            x(t),
            bottom + 4.0,
            bottom + 16.0,
            t
        );
        t += step;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="11" text-anchor="end">ms</text>"#,
        WIDTH - RIGHT,
        bottom + 28.0
    );
    panel_height(l)
}

/// The legend line.
fn legend(out: &mut String, y: f64) {
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{:.1}" width="22" height="9" fill="{LIGHT}"/><text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="12">waiting: sent, not yet started</text><rect x="{:.1}" y="{:.1}" width="22" height="9" fill="{DARK}"/><text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="12">served (the handler's 20 ms)</text><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#000000" stroke-width="1.5"/><text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="12">connection accepted</text>"##,
        y,
        LEFT + 28.0,
        y + 9.0,
        LEFT + 230.0,
        y,
        LEFT + 258.0,
        y + 9.0,
        LEFT + 470.0,
        LEFT + 470.0,
        y - 1.0,
        y + 10.0,
        LEFT + 478.0,
        y + 9.0
    );
}

/// An SVG of `panels` one under the other, all on one time axis from 0 to
/// `end_ms` (or to the latest end among them), with `caption` on top and
/// the legend at the bottom.
pub fn render(caption: &str, panels: &[Panel<'_>], end_ms: Option<f64>) -> String {
    let end = end_ms
        .unwrap_or_else(|| panels.iter().map(|p| p.layout.end_ms).fold(0.0, f64::max))
        .max(1.0);
    let end = (end / tick_step(end)).ceil() * tick_step(end);
    let head = if caption.is_empty() { 10.0 } else { 36.0 };
    let height = head + panels.iter().map(|p| panel_height(p.layout)).sum::<f64>() + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}">"#
    );
    let _ = writeln!(
        out,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{height:.0}" fill="#ffffff"/>"##
    );
    if !caption.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="24" font-family="sans-serif" font-size="18" text-anchor="middle">{}</text>"#,
            WIDTH / 2.0,
            esc(caption)
        );
    }
    let mut y = head;
    for p in panels {
        y += draw_panel(&mut out, p, y, end);
    }
    legend(&mut out, y + 6.0);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::layout::{layout, Record};
    use super::*;

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(tick_step(100.0), 20.0);
        assert_eq!(tick_step(850.0), 200.0);
        assert_eq!(tick_step(160.0), 20.0);
        assert_eq!(tick_step(3.0), 1.0);
    }

    #[test]
    fn a_panel_has_a_bar_pair_per_request_a_label_per_lane_and_the_legend() {
        let recs: Vec<Record> = (0..3)
            .map(|c| Record {
                client: c,
                seq: 0,
                sent_us: 0,
                accept_us: 1000,
                start_us: 20_000 * c as u64,
                end_us: 20_000 * (c as u64 + 1),
                worker: "1|ThreadId(1)".into(),
            })
            .collect();
        let l = layout(&recs);
        let svg = render(
            "",
            &[Panel {
                title: "Synchronous <1>".into(),
                layout: &l,
            }],
            None,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(
            svg.matches(&format!("fill=\"{DARK}\"")).count(),
            3 + 1,
            "3 bars + legend"
        );
        // Client 1 waits for nothing; clients 2 and 3 wait.
        assert_eq!(svg.matches(&format!("fill=\"{LIGHT}\"")).count(), 2 + 1);
        assert!(svg.contains(">server loop</text>"));
        assert!(svg.contains("Synchronous &lt;1&gt;"), "titles are escaped");
        assert!(svg.contains(">60</text>"), "the axis reaches the last end");
    }
}
