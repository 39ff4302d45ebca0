//! The test kit of speech-gateway: everything a test needs to put the gateway between real
//! clients and real servers of its back-end protocols, without a GPU. Nothing here is part
//! of the product: the gateway crate does not depend on this one (only its tests do).
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | [`sim`] | the zero-compute Riva / Triton back end (the `sim-backend` binary), marker audio, and [`sim::local`] (a sim in this process, the gateway's adapters pointed at it) |
//! | [`deepgram_double`] | a scripted Deepgram streaming server (`/v1/listen` over a WebSocket): records query, key, audio and control messages; scripted, auto-answering or refusing |
//! | [`riva_double`] | a scripted Riva server: each stream does what its test tells it (answer, fail, hang, stall) |
//! | [`triton_double`] | a scripted Triton (KServe v2) server, streaming and offline models |
//! | [`openai_double`] | a scripted OpenAI-compatible transcription server (HTTP, axum) |
//! | [`skeleton`] | one gRPC server skeleton per protocol (Riva, Triton) that the sim and the doubles share |
//! | [`proxy`] | a fault-injecting TCP proxy (resets, blackhole, added delay) for the chaos suite |
//! | [`gateway`] | the gateway under test (in process, or as its own process), v1 clients, test audio; re-exported at the root |
//! | [`browser`] | headless Chromium driven over the DevTools protocol (page tests), with a WAV file as its microphone |

pub mod browser;
pub mod deepgram_double;
pub mod gateway;
pub mod openai_double;
pub mod proxy;
pub mod riva_double;
pub mod sim;
pub mod skeleton;
pub mod triton_double;

pub use gateway::*;

use std::path::{Path, PathBuf};

/// The repository's root (scripts, samples, golden clips, deployment files).
pub fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The python of the venv with the official clients (`tests/conformance/requirements.txt`:
/// NVIDIA's Riva and Triton clients, Deepgram's SDK), made by `scripts/py-env.sh` on first
/// use.
pub fn conformance_python() -> PathBuf {
    let out = std::process::Command::new("bash")
        .arg(repo().join("scripts/py-env.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/py-env.sh failed: the conformance venv is needed (pip install from PyPI)"
    );
    PathBuf::from(String::from_utf8(out.stdout).expect("a path").trim())
}

/// Starts one of the server scripts of `tests/conformance/` (`riva_server.py`,
/// `dns_server.py`, …) in the conformance venv with `args`. Each prints `PORT <n>` once it
/// listens on 127.0.0.1 and exits when its stdin (a pipe held by the returned child) closes.
pub fn python_server(script: &str, args: &[&std::ffi::OsStr]) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(conformance_python())
        .arg(repo().join("tests/conformance").join(script))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("python starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("the server's first line");
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{script} said `{line}`"));
    (child, port)
}

/// Runs one of the official-client scripts of `tests/conformance/` with `args` in the
/// conformance venv; the JSON object it prints. `what` names the client in failures.
pub async fn python_client(
    what: &str,
    script: &str,
    args: Vec<std::ffi::OsString>,
) -> serde_json::Value {
    let mut cmd = std::process::Command::new(conformance_python());
    cmd.arg(repo().join("tests/conformance").join(script))
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("python runs"))
        .await
        .expect("the client task");
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn os_args(head: &[&str], path: Option<(&str, &Path)>, tail: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = head.iter().map(Into::into).collect();
    if let Some((flag, path)) = path {
        args.push(flag.into());
        args.push(path.into());
    }
    args.extend(tail.iter().map(Into::into));
    args
}

/// Runs Deepgram's official Python SDK (`tests/conformance/deepgram_client.py`) against
/// `url` (`ws://HOST:PORT`) with `key`, streaming `wav`; its JSON report (every message the
/// SDK parsed, or `{"refused": STATUS, "body": …}`). `extra`: more flags of the script.
pub async fn deepgram_sdk(url: &str, key: &str, wav: &Path, extra: &[&str]) -> serde_json::Value {
    let args = os_args(&["--url", url, "--key", key], Some(("--wav", wav)), extra);
    python_client("the Deepgram SDK client", "deepgram_client.py", args).await
}

/// Runs OpenAI's official Python SDK (`tests/conformance/openai_client.py`) against the
/// gateway at `url` (`http://host:port`) with `args`; its JSON report.
pub async fn openai_sdk(url: &str, key: &str, args: &[&str]) -> serde_json::Value {
    let args = os_args(&["--url", url, "--key", key], None, args);
    python_client("the OpenAI SDK client", "openai_client.py", args).await
}

/// Runs OpenAI's SDK realtime client (`tests/conformance/openai_realtime.py`) against the
/// gateway at `url` (`http://host:port`) with `args`; its JSON report.
pub async fn openai_realtime(url: &str, key: &str, wav: &Path, args: &[&str]) -> serde_json::Value {
    let args = os_args(&["--url", url, "--key", key], Some(("--wav", wav)), args);
    python_client("the OpenAI realtime client", "openai_realtime.py", args).await
}

/// Runs the dual-model `/ws` client written from that server's README
/// (`tests/conformance/dualmodel_client.py`) against `url` (`ws://host:port/ws`),
/// streaming `wav` (16 kHz mono); its JSON report (`messages`, `close`).
pub async fn dualmodel_client(url: &str, wav: &Path, args: &[&str]) -> serde_json::Value {
    let args = os_args(&["--url", url], Some(("--wav", wav)), args);
    python_client("the dual-model /ws client", "dualmodel_client.py", args).await
}

/// Runs NVIDIA's realtime ASR client (`tests/conformance/riva_realtime.py`) against the
/// gateway at `server` (`host:port`) with `key` as its mint key; its JSON report.
pub async fn riva_realtime(server: &str, key: &str, wav: &Path) -> serde_json::Value {
    let args = os_args(
        &["--server", server, "--key", key],
        Some(("--wav", wav)),
        &[],
    );
    python_client("NVIDIA's realtime client", "riva_realtime.py", args).await
}

/// A binary of this workspace (`speech-gateway`, `sim-backend`, `sgw`) in the same target
/// directory as the running program: beside it (a binary) or one level up (a test, which
/// runs from `target/<profile>/deps/`). `cargo nextest run` and `cargo test` on the
/// workspace build every binary first; `scripts/test.sh` does too. When it is not there,
/// the bare name (found on `PATH`).
pub fn binary(name: &str) -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(name)
}
