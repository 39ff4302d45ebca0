//! The golden-fixture harness: `sgw eval` streams the clips of `golden/manifest.toml`
//! through a gateway over contract v1 (or Deepgram's `/v1/listen`, `--dialect deepgram`,
//! or OpenAI's `/v1/realtime`, `--dialect openai-realtime`)
//! and judges WER (with the normaliser of [`crate::client::wer`]), latencies and words
//! produced on silence against each clip's ceilings.
//!
//! | module | role |
//! |---|---|
//! | [`manifest`] | the manifest format: clips, references, tags, ceilings, provenance |
//! | [`eval`] | running clips on routes, judging each against its ceilings |
//! | [`report`] | `report.json` and `report.md`: per clip, per tag, totals |
//! | [`chart`] | the SVG chart of latency distributions |

pub mod chart;
pub mod eval;
pub mod manifest;
pub mod report;

use std::path::Path;

use anyhow::Context;

pub use eval::{ClipResult, EvalOptions};
pub use manifest::Manifest;
pub use report::EvalReport;

/// Writes `report.json`, `report.md` and `latency.svg` into `out`.
pub fn write_reports(report: &EvalReport, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(out.join("report.md"), report.markdown())?;
    std::fs::write(out.join("latency.svg"), chart::latency_svg(&report.clips))?;
    Ok(())
}
