//! The eval report: `report.json` (everything, samples included) and `report.md` (per
//! clip, per tag, totals), pure functions of the results.

use std::collections::BTreeMap;

use serde::Serialize;

use super::eval::{ClipResult, failures};
use crate::client::latency::LatencyStats;

/// Pooled figures of a group of clips on one route.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub route: String,
    /// A tag, or `all` for the route's totals.
    pub group: String,
    pub clips: usize,
    pub passed: usize,
    pub word_errors: usize,
    pub reference_words: usize,
    /// Word errors over reference words, pooled over the group's clips.
    pub wer: Option<f64>,
    pub words_on_silence: usize,
    pub first_partial: LatencyStats,
    pub partial: LatencyStats,
    #[serde(rename = "final")]
    pub final_: LatencyStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub url: String,
    pub speed: f64,
    pub concurrency: usize,
    pub routes: Vec<String>,
    pub normaliser: &'static str,
    pub totals: Vec<Summary>,
    pub tags: Vec<Summary>,
    pub clips: Vec<ClipResult>,
    pub failures: Vec<String>,
}

pub const NORMALISER: &str = "lower case; numbers to words (digits, 1,000, decimals, 9:30, ordinals, %); \
'and' inside a number dropped; ' kept inside words, other punctuation to spaces; mr/mrs/dr/ok \
spelled out (src/client/wer.rs)";

impl EvalReport {
    pub fn new(
        url: &str,
        speed: f64,
        concurrency: usize,
        routes: &[String],
        clips: Vec<ClipResult>,
    ) -> Self {
        let mut totals = Vec::new();
        let mut tags = Vec::new();
        for route in routes {
            let on_route: Vec<&ClipResult> = clips.iter().filter(|c| &c.route == route).collect();
            totals.push(summarise(route, "all", &on_route));
            let mut by_tag: BTreeMap<&str, Vec<&ClipResult>> = BTreeMap::new();
            for c in &on_route {
                for t in &c.tags {
                    by_tag.entry(t.as_str()).or_default().push(c);
                }
            }
            for (tag, group) in by_tag {
                tags.push(summarise(route, tag, &group));
            }
        }
        EvalReport {
            url: url.to_string(),
            speed,
            concurrency,
            routes: routes.to_vec(),
            normaliser: NORMALISER,
            totals,
            tags,
            failures: failures(&clips),
            clips,
        }
    }

    pub fn markdown(&self) -> String {
        let mut md = String::from("# Golden eval\n\n");
        md += &format!(
            "Gateway `{}`, routes {}, pace {}× real time, {} clip(s) at once. WER normaliser: {}.\n\
             Latencies in ms as the client measures them (README, \"Latency, as measured\"); \
             at a pace above 1 they are wall-clock times of the accelerated stream.\n\n",
            self.url,
            self.routes.join(", "),
            self.speed,
            self.concurrency,
            self.normaliser
        );
        md += "## Totals\n\n";
        md += &summary_table(&self.totals, "route");
        md += "\n## Per tag\n\n";
        md += &summary_table(&self.tags, "tag");
        md += "\n## Per clip\n\n";
        md += "| route | clip | tags | WER | ceiling | words on silence | first partial | partial p50 | partial p95 | final p50 | final p95 | drift | result |\n";
        md += "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
        for c in &self.clips {
            md += &format!(
                "| {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.route,
                c.id,
                c.tags.join(" "),
                if c.reference_words > 0 {
                    format!("{:.3}", c.wer)
                } else {
                    "-".into()
                },
                c.wer_ceiling,
                c.words_on_silence.map_or("-".into(), |w| w.to_string()),
                ms(c.first_partial_ms),
                ms(c.partial.p50_ms),
                ms(c.partial.p95_ms),
                ms(c.final_.p50_ms),
                ms(c.final_.p95_ms),
                c.drift.map_or("-".into(), |d| format!("{d:.2}")),
                if c.passed {
                    "pass".to_string()
                } else {
                    format!("**FAIL**: {}", c.problems.join("; "))
                }
            );
        }
        md += "\n## Transcripts\n\n";
        for c in &self.clips {
            md += &format!(
                "- `{}/{}` ref: {}\n  - got: {}\n",
                c.route,
                c.id,
                quote(&c.reference),
                quote(&c.hypothesis)
            );
        }
        md += "\n## Result\n\n";
        if self.failures.is_empty() {
            md += "Every clip is within its ceilings.\n";
        } else {
            md += "Ceilings broken or sessions failed:\n\n";
            for f in &self.failures {
                md += &format!("- {f}\n");
            }
        }
        md
    }
}

fn quote(text: &str) -> String {
    if text.is_empty() {
        "(nothing)".into()
    } else {
        format!("“{}”", text.replace('|', "/"))
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

fn summarise(route: &str, group: &str, clips: &[&ClipResult]) -> Summary {
    let word_errors = clips
        .iter()
        .filter(|c| c.reference_words > 0)
        .map(|c| c.word_errors)
        .sum();
    let reference_words: usize = clips.iter().map(|c| c.reference_words).sum();
    let pool = |f: fn(&ClipResult) -> &Vec<f64>| -> Vec<f64> {
        clips.iter().flat_map(|c| f(c).iter().copied()).collect()
    };
    Summary {
        route: route.to_string(),
        group: group.to_string(),
        clips: clips.len(),
        passed: clips.iter().filter(|c| c.passed).count(),
        word_errors,
        reference_words,
        wer: (reference_words > 0).then(|| word_errors as f64 / reference_words as f64),
        words_on_silence: clips.iter().filter_map(|c| c.words_on_silence).sum(),
        first_partial: LatencyStats::from_samples(&pool(|c| &c.samples.first_partial_ms)),
        partial: LatencyStats::from_samples(&pool(|c| &c.samples.partial_ms)),
        final_: LatencyStats::from_samples(&pool(|c| &c.samples.final_ms)),
    }
}

fn summary_table(rows: &[Summary], first: &str) -> String {
    let mut md = format!(
        "| route | {} | clips | passed | WER | words on silence | first partial p50 | partial p50 | partial p95 | final p50 | final p95 |\n",
        if first == "route" { "group" } else { "tag" }
    );
    md += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for s in rows {
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.route,
            s.group,
            s.clips,
            s.passed,
            s.wer.map_or("-".into(), |w| format!("{w:.3}")),
            s.words_on_silence,
            ms(s.first_partial.p50_ms),
            ms(s.partial.p50_ms),
            ms(s.partial.p95_ms),
            ms(s.final_.p50_ms),
            ms(s.final_.p95_ms)
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::latency::LatencySamples;

    fn clip(
        route: &str,
        id: &str,
        tags: &[&str],
        errors: usize,
        words: usize,
        passed: bool,
    ) -> ClipResult {
        let samples = LatencySamples {
            partial_ms: vec![100.0, 200.0],
            first_partial_ms: vec![300.0],
            final_ms: vec![400.0],
        };
        ClipResult {
            route: route.into(),
            id: id.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            wer: if words > 0 {
                errors as f64 / words as f64
            } else {
                1.0
            },
            word_errors: errors,
            reference_words: words,
            words_on_silence: (words == 0).then_some(2),
            partial: LatencyStats::from_samples(&samples.partial_ms),
            final_: LatencyStats::from_samples(&samples.final_ms),
            samples,
            close_code: Some(1000),
            passed,
            problems: if passed {
                vec![]
            } else {
                vec!["WER too high".into()]
            },
            ..ClipResult::default()
        }
    }

    #[test]
    fn totals_and_tags_pool_word_errors_and_samples_per_route() {
        let clips = vec![
            clip("default", "a", &["clean"], 1, 10, true),
            clip("default", "b", &["clean", "noisy"], 3, 10, false),
            clip("default", "s", &["silence"], 0, 0, true),
            clip("offline", "a", &["clean"], 0, 10, true),
        ];
        let routes = vec!["default".to_string(), "offline".to_string()];
        let report = EvalReport::new("ws://x", 4.0, 2, &routes, clips);
        let total = &report.totals[0];
        assert_eq!(
            (
                total.clips,
                total.passed,
                total.word_errors,
                total.reference_words
            ),
            (3, 2, 4, 20)
        );
        assert_eq!(total.wer, Some(0.2));
        assert_eq!(total.words_on_silence, 2);
        assert_eq!(total.partial.count, 6);
        let clean = report
            .tags
            .iter()
            .find(|s| s.route == "default" && s.group == "clean")
            .unwrap();
        assert_eq!(clean.wer, Some(0.2));
        let silence = report.tags.iter().find(|s| s.group == "silence").unwrap();
        assert_eq!(silence.wer, None);
        assert_eq!(report.totals[1].wer, Some(0.0));
        assert_eq!(report.failures, vec!["default/b: WER too high".to_string()]);
        let md = report.markdown();
        assert!(md.contains("| default | b | clean noisy | 0.300 |"), "{md}");
        assert!(md.contains("- default/b: WER too high"));
    }
}
