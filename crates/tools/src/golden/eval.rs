//! `sgw eval`: streams every golden clip through a gateway over contract v1 (or, with
//! [`run_with_dialect`], Deepgram's `/v1/listen` or OpenAI's `/v1/realtime`: only the
//! wire differs, see
//! [`crate::client::dialect`]) and judges each transcript against its reference and
//! ceilings, the same way whatever the dialect.

use std::path::PathBuf;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde::Serialize;

use super::manifest::{Clip, Manifest};
use crate::client::dialect::Dialect;
use crate::client::latency::{LatencySamples, LatencyStats};
use crate::client::transcribe::{self, TranscribeOptions};
use crate::client::wav::read_wav_file;
use crate::client::wer;

/// What to run.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The gateway's v1 endpoint.
    pub url: String,
    /// Pacing: 1 = real time.
    pub speed: f64,
    /// Clips streamed at once.
    pub concurrency: usize,
    /// Convert each clip to this rate before sending (`None`: as recorded).
    pub client_rate: Option<u32>,
    /// Routes (the contract's `model`); every clip runs on each.
    pub routes: Vec<String>,
    /// Only clips with one of these tags (all when empty).
    pub tags: Vec<String>,
    /// Only these clip ids (all when empty).
    pub only: Vec<String>,
    pub token: Option<String>,
    /// Reviewed transcripts, `DIR/ROUTE/ID.txt`: compared with (drift), or written.
    pub expected_dir: Option<PathBuf>,
    pub write_expected: bool,
}

/// The outcome of one clip on one route.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClipResult {
    pub route: String,
    pub id: String,
    pub tags: Vec<String>,
    pub reference: String,
    /// The finals, joined by spaces.
    pub hypothesis: String,
    pub wer: f64,
    /// Word errors and reference words after normalisation.
    pub word_errors: usize,
    pub reference_words: usize,
    /// Words of the transcript when the reference is empty (words produced on silence).
    pub words_on_silence: Option<usize>,
    pub wer_ceiling: f64,
    pub max_words: Option<usize>,
    pub first_partial_ms: Option<f64>,
    pub partial: LatencyStats,
    /// Final latency after the end of speech (see `client::latency`).
    #[serde(rename = "final")]
    pub final_: LatencyStats,
    pub samples: LatencySamples,
    /// Each final's arrival and latency, in order: `arrival_ms − latency_ms` is the send
    /// time its latency counted from, so runs of one clip (same pacing) can be compared on
    /// one reference, whatever the dialect.
    pub final_timing: Vec<FinalTiming>,
    pub partials: usize,
    pub finals: usize,
    /// Server error codes received.
    pub errors: Vec<String>,
    pub close_code: Option<u16>,
    pub audio_seconds: f64,
    pub wall_seconds: f64,
    /// The reviewed transcript, if there is one.
    pub expected: Option<String>,
    /// WER of this transcript against the reviewed one (drift); `None` without one.
    pub drift: Option<f64>,
    pub passed: bool,
    /// Why it did not pass.
    pub problems: Vec<String>,
}

/// When a final came, ms after the first frame's send, and its latency (if it had a
/// reference).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FinalTiming {
    pub arrival_ms: f64,
    pub latency_ms: Option<f64>,
}

/// Runs the clips of `manifest` (filtered by the options) on every route, over v1.
pub async fn run(manifest: &Manifest, opts: &EvalOptions) -> anyhow::Result<Vec<ClipResult>> {
    run_with_dialect(manifest, opts, Dialect::V1).await
}

/// [`run`] over `dialect` (`opts.url` names the gateway; [`Dialect::endpoint`]).
pub async fn run_with_dialect(
    manifest: &Manifest,
    opts: &EvalOptions,
    dialect: Dialect,
) -> anyhow::Result<Vec<ClipResult>> {
    if opts.routes.is_empty() {
        bail!("no route to run");
    }
    let clips: Vec<&Clip> = manifest
        .clips
        .iter()
        .filter(|c| c.has_any_tag(&opts.tags))
        .filter(|c| opts.only.is_empty() || opts.only.contains(&c.id))
        .collect();
    if clips.is_empty() {
        bail!("no clip of the manifest matches the filters");
    }
    let missing = manifest.missing(clips.iter().copied());
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "missing golden clips ({}): run `bash scripts/make-golden.sh` to make them",
            list.join(", ")
        );
    }
    let jobs: Vec<(usize, &str, &Clip)> = opts
        .routes
        .iter()
        .flat_map(|r| clips.iter().map(move |c| (r.as_str(), *c)))
        .enumerate()
        .map(|(i, (r, c))| (i, r, c))
        .collect();
    let mut results: Vec<(usize, ClipResult)> = futures::stream::iter(jobs)
        .map(|(i, route, clip)| async move {
            let result = run_clip(manifest, clip, route, opts, dialect).await;
            eprintln!(
                "eval: {route}/{}: WER {:.3}{}",
                clip.id,
                result.wer,
                if result.passed { "" } else { "  FAILED" }
            );
            (i, result)
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<ClipResult> = results.into_iter().map(|(_, r)| r).collect();
    if opts.write_expected {
        let dir = opts
            .expected_dir
            .as_ref()
            .context("--write-expected needs an expected directory")?;
        for r in &results {
            let path = dir.join(&r.route).join(format!("{}.txt", r.id));
            std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
            std::fs::write(&path, format!("{}\n", r.hypothesis))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(results)
}

async fn run_clip(
    manifest: &Manifest,
    clip: &Clip,
    route: &str,
    opts: &EvalOptions,
    dialect: Dialect,
) -> ClipResult {
    let mut result = ClipResult {
        route: route.to_string(),
        id: clip.id.clone(),
        tags: clip.tags.clone(),
        reference: clip.text.clone(),
        wer: 1.0,
        reference_words: wer::normalise(&clip.text).len(),
        wer_ceiling: clip.ceiling(route),
        max_words: clip.max_words,
        ..ClipResult::default()
    };
    let wav = match read_wav_file(&manifest.audio_path(clip)) {
        Ok(w) => match opts.client_rate {
            Some(rate) => w.resampled(rate),
            None => w,
        },
        Err(e) => {
            result.problems.push(format!("audio: {e}"));
            return result;
        }
    };
    let mut t = TranscribeOptions::new(opts.url.clone());
    t.dialect = dialect;
    t.speed = opts.speed;
    t.token = opts.token.clone();
    t.language = Some(clip.language.clone());
    t.model = Some(route.to_string());
    let report = match transcribe::transcribe(&wav, &t, |_| {}).await {
        Ok(r) => r,
        Err(e) => {
            result.problems.push(format!("session failed: {e:#}"));
            return result;
        }
    };
    let hypothesis: Vec<&str> = report.finals.iter().map(|f| f.text.trim()).collect();
    result.hypothesis = hypothesis.join(" ").trim().to_string();
    let (errors, words) = wer::word_errors(&clip.text, &result.hypothesis);
    result.word_errors = errors;
    result.wer = wer::wer(&clip.text, &result.hypothesis);
    if words == 0 {
        result.words_on_silence = Some(wer::normalise(&result.hypothesis).len());
    }
    result.first_partial_ms = report.samples.first_partial_ms.first().copied();
    result.partial = report.latency.partial;
    result.final_ = report.latency.final_;
    result.samples = report.samples.clone();
    result.final_timing = report
        .finals
        .iter()
        .map(|f| FinalTiming {
            arrival_ms: f.arrival_ms,
            latency_ms: f.latency_ms,
        })
        .collect();
    result.partials = report.partials;
    result.finals = report.finals.len();
    result.errors = report.errors.iter().map(|e| e.code.to_string()).collect();
    result.close_code = report.close_code;
    result.audio_seconds = report.audio_seconds;
    result.wall_seconds = report.wall_seconds;
    if let Some(dir) = &opts.expected_dir {
        let path = dir.join(route).join(format!("{}.txt", clip.id));
        if let Ok(text) = std::fs::read_to_string(&path) {
            result.drift = Some(if wer::normalise(&text).is_empty() {
                f64::from(u8::from(!wer::normalise(&result.hypothesis).is_empty()))
            } else {
                wer::wer(&text, &result.hypothesis)
            });
            result.expected = Some(text.trim().to_string());
        }
    }
    judge(&mut result);
    result
}

/// Fills `passed` and `problems`: a ceiling broken, or a session that did not end well.
fn judge(r: &mut ClipResult) {
    if r.reference_words > 0 && r.wer > r.wer_ceiling {
        r.problems.push(format!(
            "WER {:.3} above the ceiling {:.3}",
            r.wer, r.wer_ceiling
        ));
    }
    let words = r
        .words_on_silence
        .unwrap_or_else(|| wer::normalise(&r.hypothesis).len());
    if let Some(max) = r.max_words
        && words > max
    {
        r.problems
            .push(format!("{words} words, more than the {max} allowed"));
    }
    if !r.errors.is_empty() {
        r.problems
            .push(format!("server errors: {}", r.errors.join(", ")));
    }
    if r.close_code != Some(1000) {
        r.problems.push(format!(
            "closed with {} instead of 1000",
            r.close_code
                .map_or_else(|| "no close frame".to_string(), |c| c.to_string())
        ));
    }
    r.passed = r.problems.is_empty();
}

/// The ids of results that broke a ceiling or failed, as `route/id: why`.
pub fn failures(results: &[ClipResult]) -> Vec<String> {
    results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{}/{}: {}", r.route, r.id, r.problems.join("; ")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(reference_words: usize, wer: f64, hyp: &str) -> ClipResult {
        ClipResult {
            route: "default".into(),
            id: "x".into(),
            hypothesis: hyp.into(),
            wer,
            reference_words,
            words_on_silence: (reference_words == 0).then(|| wer::normalise(hyp).len()),
            wer_ceiling: 0.2,
            close_code: Some(1000),
            ..ClipResult::default()
        }
    }

    #[test]
    fn a_clip_fails_on_a_broken_ceiling_words_on_silence_errors_or_a_bad_close() {
        let mut ok = result(5, 0.2, "a b c d e");
        judge(&mut ok);
        assert!(ok.passed, "{:?}", ok.problems);

        let mut high = result(5, 0.4, "a b");
        judge(&mut high);
        assert!(!high.passed && high.problems[0].contains("above the ceiling"));

        let mut silence = result(0, 1.0, "thank you");
        silence.max_words = Some(0);
        judge(&mut silence);
        assert!(!silence.passed && silence.problems[0].contains("2 words"));
        let mut quiet = result(0, 0.0, "");
        quiet.max_words = Some(0);
        judge(&mut quiet);
        assert!(quiet.passed, "{:?}", quiet.problems);

        let mut error = result(5, 0.0, "a b c d e");
        error.errors = vec!["MODEL_UNAVAILABLE".into()];
        error.close_code = Some(1013);
        judge(&mut error);
        assert_eq!(error.problems.len(), 2);
        assert_eq!(failures(&[error.clone(), ok]).len(), 1);
        assert!(failures(&[error])[0].starts_with("default/x: server errors"));
    }
}
