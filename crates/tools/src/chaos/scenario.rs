//! A chaos scenario, as written in `chaos/scenarios/*.toml`: which back ends run (and
//! whether a fault-injecting proxy sits in front of them), the gateway's settings, the
//! client load, the faults and when they strike, and what must hold afterwards.
//!
//! Whatever a scenario says, two things must always hold and are not written down:
//! no client hangs, and no session that completed lost or repeated audio.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::providers::Format;
use serde::Deserialize;
use speech_gateway::config::BackendProtocol;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The file's stem; set by [`Scenario::load`].
    #[serde(skip)]
    pub name: String,
    pub description: String,
    /// Concurrent client sessions.
    pub sessions: usize,
    /// Delay between session starts.
    #[serde(with = "humantime_serde", default = "default_stagger")]
    pub stagger: Duration,
    /// The client contract every session speaks: `v1` (`/v1/audio/stream`, the default),
    /// `deepgram` (`/v1/listen`) or `openai-realtime` (`/v1/realtime`; its marker audio is
    /// 24 kHz, so its back ends must run at 24 kHz for the markers to arrive untouched).
    #[serde(default)]
    pub dialect: Dialect,
    /// Marker audio each session streams at real time.
    #[serde(with = "humantime_serde")]
    pub audio: Duration,
    /// Extra gateway settings as `SGW_*` variables (over the chaos defaults).
    #[serde(default)]
    pub gateway: BTreeMap<String, String>,
    pub backends: Vec<BackendSpec>,
    /// The default route: back-end names in order, `"|"` between tiers (`["a", "b", "|",
    /// "cloud"]`: `cloud` takes sessions only while `a` and `b` cannot).
    pub route: Vec<String>,
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    #[serde(default)]
    pub expect: Expect,
}

/// The tier separator in [`Scenario::route`].
pub const TIER: &str = "|";

fn default_stagger() -> Duration {
    Duration::from_millis(100)
}

/// The WebSocket contract the clients speak (`v1`, `deepgram`, `openai-realtime`); the
/// marker audio and its judging are the same.
pub use crate::client::dialect::Dialect;

/// One zero-compute back-end process (`sim-backend`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    pub name: String,
    pub protocol: BackendProtocol,
    /// `normal`, `unavailable`, `hang`, `slow`, `fail-after` (see `sim-backend --help`).
    #[serde(default = "normal")]
    pub behaviour: String,
    /// `slow`: the added delay (e.g. `300ms`).
    #[serde(default)]
    pub delay: Option<String>,
    /// `fail-after`: stream audio after which streams fail (e.g. `2s`).
    #[serde(default)]
    pub fail_after: Option<String>,
    /// Put the fault-injecting TCP proxy between the gateway and this back end.
    #[serde(default)]
    pub proxy: bool,
    /// A Triton sim's model rate (`sim-backend --triton-sample-rate`; default 16000).
    #[serde(default)]
    pub triton_sample_rate: Option<u32>,
}

fn normal() -> String {
    "normal".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// SIGKILL the back-end process.
    Kill,
    /// Start the back-end process again on the same port (optionally with another
    /// `behaviour`).
    Restart,
    /// Proxy: reset every connection, and new ones, until `heal`.
    Reset,
    /// Proxy: forward nothing, in either direction, until `heal`.
    Blackhole,
    /// Proxy: add `delay` to every chunk, both ways, until `heal`.
    Delay,
    /// Proxy: pass traffic again.
    Heal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Time since the first session started.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    pub target: String,
    pub action: Action,
    #[serde(default)]
    pub behaviour: Option<String>,
    #[serde(default, with = "humantime_serde::option")]
    pub delay: Option<Duration>,
}

/// What must hold at the end (beyond no hung client and no lost audio).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Sessions that must fail (told `MODEL_UNAVAILABLE` and closed); default 0.
    #[serde(default)]
    pub failed: usize,
    /// Sessions refused by admission control (HTTP 503); default 0.
    #[serde(default)]
    pub refused: usize,
    /// At least this many live sessions moved back end.
    #[serde(default)]
    pub min_failovers: u64,
    /// At least one breaker opened / closed during the run.
    #[serde(default)]
    pub breaker_opened: bool,
    #[serde(default)]
    pub breaker_closed: bool,
    /// Back-end name → bounds on the streams opened on it over the run
    /// (`sgw_backend_requests_total{outcome="ok"}`): which tier took the sessions.
    #[serde(default)]
    pub opens: BTreeMap<String, Bounds>,
}

/// An inclusive range; either end may be left open.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    #[serde(default)]
    pub min: Option<u64>,
    #[serde(default)]
    pub max: Option<u64>,
}

impl Scenario {
    /// Reads and checks one scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let mut s: Scenario = figment::Figment::from(figment::providers::Toml::string(&text))
            .extract()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        s.name = path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        s.check()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(s)
    }

    fn check(&self) -> Result<(), String> {
        if self.sessions == 0 {
            return Err("sessions must be at least 1".into());
        }
        if self.audio < Duration::from_secs(1) {
            return Err("audio must be at least 1s".into());
        }
        let known = |n: &str| self.backends.iter().any(|b| b.name == n);
        for r in self.route.iter().filter(|r| *r != TIER) {
            if !known(r) {
                return Err(format!("route names unknown back end `{r}`"));
            }
        }
        let tiers: Vec<&[String]> = self.route.split(|r| r == TIER).collect();
        if tiers.iter().any(|t| t.is_empty()) {
            return Err("route needs at least one back end in every tier".into());
        }
        for name in self.expect.opens.keys() {
            if !known(name) {
                return Err(format!("expect.opens names unknown back end `{name}`"));
            }
        }
        if let Some(b) = self
            .backends
            .iter()
            .find(|b| b.protocol == BackendProtocol::OpenAi)
        {
            return Err(format!(
                "back end `{}`: the sim speaks riva and triton, not openai",
                b.name
            ));
        }
        for f in &self.faults {
            let Some(b) = self.backends.iter().find(|b| b.name == f.target) else {
                return Err(format!("fault targets unknown back end `{}`", f.target));
            };
            let needs_proxy = matches!(
                f.action,
                Action::Reset | Action::Blackhole | Action::Delay | Action::Heal
            );
            if needs_proxy && !b.proxy {
                return Err(format!(
                    "fault {:?} on `{}` needs `proxy = true` on that back end",
                    f.action, b.name
                ));
            }
            if f.action == Action::Delay && f.delay.is_none() {
                return Err("a delay fault needs `delay`".into());
            }
        }
        for k in self.gateway.keys() {
            if !k.starts_with(speech_gateway::config::ENV_PREFIX) {
                return Err(format!("gateway setting `{k}` is not an SGW_* variable"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../chaos/scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).expect("chaos/scenarios exists") {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&path).unwrap();
                n += 1;
            }
        }
        assert!(n >= 8, "only {n} scenarios");
    }

    #[test]
    fn a_proxy_fault_on_a_back_end_without_proxy_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(
            &p,
            r#"description = "x"
sessions = 1
audio = "2s"
route = ["a"]
[[backends]]
name = "a"
protocol = "riva"
[[faults]]
at = "1s"
target = "a"
action = "blackhole"
"#,
        )
        .unwrap();
        let err = Scenario::load(&p).unwrap_err().to_string();
        assert!(err.contains("proxy = true"), "{err}");
    }
}
