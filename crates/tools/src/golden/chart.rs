//! The eval's SVG chart: one row per clip and route, latencies on a log axis — every
//! partial latency as a dot with its p25–p75 box and median, first partial as a triangle,
//! finals as diamonds. Plain SVG text, no plotting dependency.

use std::fmt::Write;

use super::eval::ClipResult;
use crate::client::latency::percentile_nearest_rank;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 230.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const ROW: f64 = 20.0;
/// The axis: 10 ms … 20 s (values outside are drawn at the edge).
const MIN_MS: f64 = 10.0;
const MAX_MS: f64 = 20_000.0;

fn x(ms: f64) -> f64 {
    let clamped = ms.clamp(MIN_MS, MAX_MS);
    LEFT + (clamped / MIN_MS).log10() / (MAX_MS / MIN_MS).log10() * (WIDTH - LEFT - RIGHT)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart of every result, in their order.
pub fn latency_svg(results: &[ClipResult]) -> String {
    let height = TOP + ROW * results.len() as f64 + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="18" font-size="14">Latency per clip (ms, log scale)</text>"#
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="34" fill="#555">grey dots: partials (box p25–p75, bar p50) · blue ▲ first partial · red ◆ finals (after end of speech)</text>"##
    );
    let bottom = TOP + ROW * results.len() as f64;
    for tick in [
        10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
    ] {
        let tx = x(tick);
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{bottom}" stroke="#ddd"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle">{tick}</text>"##,
            bottom + 14.0
        );
    }
    for (i, r) in results.iter().enumerate() {
        let cy = TOP + ROW * i as f64 + ROW / 2.0;
        let colour = if r.passed { "#000" } else { "#c00" };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{colour}">{}/{}</text>"#,
            LEFT - 6.0,
            cy + 4.0,
            escape(&r.route),
            escape(&r.id)
        );
        if i % 2 == 0 {
            let _ = writeln!(
                s,
                r##"<rect x="{LEFT}" y="{:.1}" width="{:.1}" height="{ROW}" fill="#f4f4f4" fill-opacity="0.6"/>"##,
                cy - ROW / 2.0,
                WIDTH - LEFT - RIGHT
            );
        }
        let mut sorted = r.samples.partial_ms.clone();
        sorted.sort_by(f64::total_cmp);
        for v in &sorted {
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{cy:.1}" r="2" fill="#888" fill-opacity="0.5"/>"##,
                x(*v)
            );
        }
        if let (Some(p25), Some(p50), Some(p75)) = (
            percentile_nearest_rank(&sorted, 25.0),
            percentile_nearest_rank(&sorted, 50.0),
            percentile_nearest_rank(&sorted, 75.0),
        ) {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="10" fill="none" stroke="#444"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#000" stroke-width="2"/>"##,
                x(p25),
                cy - 5.0,
                (x(p75) - x(p25)).max(1.0),
                x(p50),
                cy - 6.0,
                x(p50),
                cy + 6.0
            );
        }
        for v in &r.samples.first_partial_ms {
            let px = x(*v);
            let _ = writeln!(
                s,
                r##"<path d="M{:.1},{:.1} l5,8 l-10,0 z" fill="#1f5fbf"/>"##,
                px,
                cy - 4.0
            );
        }
        for v in &r.samples.final_ms {
            let px = x(*v);
            let _ = writeln!(
                s,
                r##"<path d="M{px:.1},{:.1} l4,5 l-4,5 l-4,-5 z" fill="#d62728"/>"##,
                cy - 5.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_is_logarithmic_and_clamped() {
        assert!((x(MIN_MS) - LEFT).abs() < 1e-9);
        assert!((x(MAX_MS) - (WIDTH - RIGHT)).abs() < 1e-9);
        assert_eq!(x(1.0), x(MIN_MS));
        let decade = x(100.0) - x(10.0);
        assert!((x(1000.0) - x(100.0) - decade).abs() < 1e-9);
        assert_eq!(escape("a<b&c"), "a&lt;b&amp;c");
    }
}
