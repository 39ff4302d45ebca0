//! The chaos suite as a test: runs `sgw chaos` (every scenario in
//! `chaos/scenarios/`, real processes, faults injected) and fails if any scenario does.
//! The table lands in `target/chaos-test/report.md`.

use std::process::Command;

#[test]
fn every_chaos_scenario_passes() {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos");
    let status = Command::new(env!("CARGO_BIN_EXE_sgw"))
        .args(["chaos", "--scenarios"])
        .arg(sgw_testkit::repo().join("chaos/scenarios"))
        .arg("--out")
        .arg(&out)
        .status()
        .expect("the binary runs");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap_or_default();
    println!("{report}");
    assert!(status.success(), "a chaos scenario failed:\n{report}");
    assert!(
        report.lines().filter(|l| l.ends_with("| pass |")).count() >= 14,
        "{report}"
    );
}
