//! The golden suite in CI: `sgw eval`'s library runs the `ci` clips of
//! `golden/manifest.toml` through the real gateway (in-process, port 0) against the real
//! local Triton (Whisper tiny.en on CPU, `scripts/local-triton.sh`) on both routes,
//! accelerated, and fails when a clip breaks its ceiling. The full set (every clip at
//! real time) is for reports: `sgw eval --route default --route offline`.
//!
//! Also: `scripts/make-golden.sh` remakes the committed synthetic clips bit for bit.

use std::path::{Path, PathBuf};
use std::process::Command;

use sgw_testkit::Gateway;
use sgw_tools::golden::{self, EvalOptions, EvalReport, Manifest};

/// Pace of the CI run. The streaming model decodes on its own cadence (~1 s of audio),
/// so at 4× each decode sees the same audio it would at real time; the golden table in
/// golden/README.md compares the two paces.
const SPEED: f64 = 4.0;

fn repo() -> &'static Path {
    sgw_testkit::repo()
}

#[tokio::test]
async fn the_ci_golden_clips_stay_within_their_ceilings_on_both_routes() {
    let port = sgw_testkit::local_triton_port();
    let gw = Gateway::start(&[
        (
            "SGW_ROUTES__DEFAULT",
            format!("triton://127.0.0.1:{port}/asr_stream"),
        ),
        (
            "SGW_ROUTES__OFFLINE",
            format!("triton://127.0.0.1:{port}/asr_offline"),
        ),
    ])
    .await;
    gw.wait_ready().await;
    let manifest = Manifest::load(&repo().join("golden/manifest.toml")).unwrap();
    let routes = vec!["default".to_string(), "offline".to_string()];
    let opts = EvalOptions {
        url: gw.ws_url(),
        speed: SPEED,
        concurrency: 2,
        client_rate: None,
        routes: routes.clone(),
        tags: vec!["ci".into()],
        only: vec![],
        token: None,
        expected_dir: Some(repo().join("golden/expected")),
        write_expected: false,
    };
    let results = golden::eval::run(&manifest, &opts)
        .await
        .expect("the eval ran");
    let report = EvalReport::new(&opts.url, SPEED, 2, &routes, results);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("golden-ci");
    golden::write_reports(&report, &out).unwrap();
    println!("{}", report.markdown());
    println!("reports in {}", out.display());
    let ci_clips = manifest
        .clips
        .iter()
        .filter(|c| c.tags.iter().any(|t| t == "ci"))
        .count();
    assert_eq!(
        report.clips.len(),
        2 * ci_clips,
        "every ci clip ran on both routes"
    );
    assert!(
        report.failures.is_empty(),
        "golden ceilings broken:\n{}",
        report.failures.join("\n")
    );
}

#[test]
fn make_golden_remakes_the_committed_synthetic_clips_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(repo().join("scripts/make-golden.sh"))
        .env("GOLDEN_CLIPS", dir.path())
        .env("GOLDEN_SKIP_HUMAN", "1")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sums = std::fs::read_to_string(repo().join("golden/SHA256SUMS")).unwrap();
    let manifest = Manifest::load(&repo().join("golden/manifest.toml")).unwrap();
    let mut checked = 0;
    for clip in manifest
        .clips
        .iter()
        .filter(|c| !c.id.starts_with("human-"))
    {
        let name = clip.audio.file_name().unwrap().to_str().unwrap();
        let want = sums
            .lines()
            .find(|l| l.ends_with(&format!("clips/{name}")))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("{name} is not in golden/SHA256SUMS"));
        let got = Command::new("sha256sum")
            .arg(dir.path().join(name))
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&got.stdout);
        assert_eq!(got.split_whitespace().next(), Some(want), "{name} differs");
        checked += 1;
    }
    assert!(checked >= 15, "{checked} clips checked");
}
