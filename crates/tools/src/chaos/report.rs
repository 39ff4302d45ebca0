//! What a chaos scenario run found ([`ScenarioReport`]), and the chaos table in markdown.

use std::collections::HashMap;

use serde::Serialize;

/// One scenario's outcome as the runner measured it.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub description: String,
    pub sessions: usize,
    pub completed: usize,
    pub failed: usize,
    pub refused: usize,
    pub dropped: usize,
    pub hung: usize,
    pub audio_lost_ms: u64,
    pub repeated_words: usize,
    pub failovers: u64,
    pub failover_p50_ms: Option<f64>,
    pub failover_p99_ms: Option<f64>,
    pub longest_silence_ms: u64,
    pub breaker_opened: u64,
    pub breaker_closed: u64,
    pub reopens: HashMap<String, u64>,
    /// Streams opened per back end named in the scenario's `expect.opens`.
    pub opens: std::collections::BTreeMap<String, u64>,
    pub wall_seconds: f64,
    pub passed: bool,
    pub problems: Vec<String>,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.0}"))
}

pub fn markdown(reports: &[ScenarioReport]) -> String {
    let mut out = String::from(
        "| scenario | sessions | completed | failed | refused | hung | audio lost (ms) | repeated words | failovers | failover p50 / p99 (ms) | longest client silence (ms) | breaker opened / closed | reopens | verdict |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let mut reopens: Vec<_> = r.reopens.iter().map(|(k, v)| format!("{k} {v}")).collect();
        reopens.sort();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} / {} | {} | {} |\n",
            r.name,
            r.sessions,
            r.completed,
            r.failed,
            r.refused,
            r.hung,
            r.audio_lost_ms,
            r.repeated_words,
            r.failovers,
            ms(r.failover_p50_ms),
            ms(r.failover_p99_ms),
            r.longest_silence_ms,
            r.breaker_opened,
            r.breaker_closed,
            if reopens.is_empty() {
                "–".to_string()
            } else {
                reopens.join(", ")
            },
            if r.passed {
                "pass".to_string()
            } else {
                format!("FAIL: {}", r.problems.join("; "))
            },
        ));
    }
    out.push_str("\nScenarios:\n\n");
    for r in reports {
        out.push_str(&format!(
            "- `{}`: {} ({:.1} s)\n",
            r.name, r.description, r.wall_seconds
        ));
    }
    out
}
