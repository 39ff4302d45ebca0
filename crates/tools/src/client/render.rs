//! Terminal output of the `transcribe` command: the in-place partial line and the
//! latency table. Pure string functions, so the binary only decides where to print.

use super::events::ClientEvent;
use super::transcribe::TranscribeReport;

/// The latency table printed at the end of a run.
pub fn render_report(report: &TranscribeReport) -> String {
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    let mut out = format!(
        "{:<14}{:>6}{:>8}{:>8}{:>8}\n",
        "latency (ms)", "n", "p50", "p95", "p99"
    );
    for (name, stats) in [
        ("partial", &report.latency.partial),
        ("first partial", &report.latency.first_partial),
        ("final", &report.latency.final_),
    ] {
        out += &format!(
            "{:<14}{:>6}{:>8}{:>8}{:>8}\n",
            name,
            stats.count,
            cell(stats.p50_ms),
            cell(stats.p95_ms),
            cell(stats.p99_ms)
        );
    }
    let rtf = if report.audio_seconds > 0.0 {
        format!("{:.2}", report.wall_seconds / report.audio_seconds)
    } else {
        "-".to_owned()
    };
    out += &format!(
        "audio {:.2} s, wall {:.2} s, real-time factor {rtf} (wall / audio)\n",
        report.audio_seconds, report.wall_seconds
    );
    let close = report
        .close_code
        .map_or_else(|| "none".to_owned(), |c| c.to_string());
    out += &format!(
        "finals {}, partials {}, errors {}, close code {close}\n",
        report.finals.len(),
        report.partials,
        report.errors.len()
    );
    out
}

/// How the binary shows one event on a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveLine {
    /// The current partial, already fitted to the width: draw after `\r` and an ANSI
    /// clear-line so it replaces the previous partial in place.
    Replace(String),
    /// A final: print on its own line (it will not change again).
    Commit(String),
    /// An error or status: print to stderr.
    Notice(String),
}

/// Maps a server event to what the terminal should show; `None` for events that are
/// not worth showing (pongs, unknown types).
///
/// Partials are cut from the left so the newest words stay visible; width is counted in
/// `char`s, which is exact for most scripts but not for wide (CJK) characters. Control
/// characters become spaces so a stray newline cannot break the in-place redraw.
pub fn render_live(event: &ClientEvent, term_width: usize) -> Option<LiveLine> {
    match event {
        ClientEvent::Partial(p) => Some(LiveLine::Replace(fit_from_left(
            &printable(&p.text),
            term_width,
        ))),
        ClientEvent::Final(f) => Some(LiveLine::Commit(printable(&f.text))),
        ClientEvent::Error(e) => {
            let kind = if e.recoverable {
                "recoverable"
            } else {
                "fatal"
            };
            Some(LiveLine::Notice(format!(
                "server error {} ({kind}): {}",
                e.code,
                printable(&e.message)
            )))
        }
        ClientEvent::Status(s) => Some(LiveLine::Notice(format!(
            "status {}: {}",
            s.state,
            printable(&s.message)
        ))),
        ClientEvent::Pong(_)
        | ClientEvent::Metadata
        | ClientEvent::SpeechEnd { .. }
        | ClientEvent::Other(_) => None,
    }
}

fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Keeps the last `width` chars, marking a cut with a leading `…`. The terminal's last
/// column is left free by callers passing `width - 1` if their terminal wraps there.
fn fit_from_left(text: &str, width: usize) -> String {
    let len = text.chars().count();
    if len <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let keep = width - 1;
    let tail: String = text.chars().skip(len - keep).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::events::Partial;
    use crate::client::latency::{LatencySamples, LatencySummary};

    #[test]
    fn live_lines() {
        let partial = |t: &str| {
            ClientEvent::Partial(Partial {
                text: t.to_string().into(),
                confidence: 0.9,
                timestamp_ms: 0,
                words: None,
            })
        };
        assert_eq!(
            render_live(&partial("hello"), 10),
            Some(LiveLine::Replace("hello".into()))
        );
        assert_eq!(
            render_live(&partial("the quick brown fox"), 10),
            Some(LiveLine::Replace("…brown fox".into()))
        );
        assert_eq!(
            render_live(&partial("héllo wörld"), 6),
            Some(LiveLine::Replace("…wörld".into()))
        );
        assert_eq!(
            render_live(&partial("a\nb\rc"), 80),
            Some(LiveLine::Replace("a b c".into()))
        );
        assert_eq!(
            render_live(&partial("abc"), 0),
            Some(LiveLine::Replace(String::new()))
        );
        let fin = ClientEvent::parse(
            r#"{"type":"final","text":"Done.","confidence":0.9,"is_end_of_utterance":true,"timestamp_ms":900,"duration_ms":900}"#,
        );
        assert_eq!(render_live(&fin, 3), Some(LiveLine::Commit("Done.".into())));
        let error = ClientEvent::parse(
            r#"{"type":"error","code":"INTERNAL_ERROR","message":"boom","recoverable":false}"#,
        );
        assert_eq!(
            render_live(&error, 80),
            Some(LiveLine::Notice(
                "server error INTERNAL_ERROR (fatal): boom".into()
            ))
        );
        assert!(matches!(
            render_live(
                &ClientEvent::parse(r#"{"type":"status","state":"failover","message":"m"}"#),
                80
            ),
            Some(LiveLine::Notice(_))
        ));
        assert_eq!(
            render_live(&ClientEvent::parse(r#"{"type":"novel"}"#), 80),
            None
        );
    }

    #[test]
    fn report_table_shows_counts_percentiles_and_real_time_factor() {
        let samples = LatencySamples {
            partial_ms: vec![100.0, 300.0, 200.0],
            first_partial_ms: vec![450.0],
            final_ms: vec![],
        };
        let report = TranscribeReport {
            finals: vec![],
            partials: 3,
            errors: vec![],
            close_code: None,
            latency: LatencySummary::from_samples(&samples),
            samples,
            audio_seconds: 10.0,
            wall_seconds: 12.5,
        };
        let table = render_report(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["partial", "3", "200", "300", "300"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["first", "partial", "1", "450", "450", "450"]
        );
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            ["final", "0", "-", "-", "-"]
        );
        assert!(lines[4].contains("real-time factor 1.25"), "{}", lines[4]);
        assert!(lines[5].contains("close code none"), "{}", lines[5]);
    }
}
