//! The deployment assets under test: the deploy scripts run against fake `docker`,
//! `nvidia-smi`, `curl` and `kubectl` that record their calls (no GPU or container engine
//! here), the Dockerfile read statically, the `healthcheck` subcommand against a real
//! gateway, and the observability assets against the live `/metrics` of a real gateway
//! (`promtool check metrics`, every metric the dashboard and the alert rules name).
//!
//! The static checks (shellcheck, manifests against Kubernetes schemas, promtool rules and
//! rule unit tests) are `scripts/check-deploy.sh`, run by `scripts/test.sh`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sgw_testkit::Gateway;
use speech_gateway::config::{BackendProtocol, BackendUrl};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const BIN: &str = env!("CARGO_BIN_EXE_speech-gateway");

// --- fake tools ----------------------------------------------------------------------------

/// Each fake appends one line per call (`tool arg arg ...`) to $FAKE_LOG and answers from
/// files in $FAKE_STATE, which the tests (and the fakes themselves) write.
const FAKE_DOCKER: &str = r#"#!/bin/bash
echo "docker $*" >>"$FAKE_LOG"
s="$FAKE_STATE"
case "$1" in
  info)
    [[ -e "$s/daemon_down" ]] && { echo "Cannot connect to the Docker daemon" >&2; exit 1; }
    if [[ "$*" == *Runtimes* ]]; then
      cat "$s/runtimes" 2>/dev/null || echo '{"io.containerd.runc.v2":{},"nvidia":{"path":"nvidia-container-runtime"},"runc":{}}'
    fi
    exit 0 ;;
  inspect)
    [[ -e "$s/container" ]] || { echo "Error: No such object" >&2; exit 1; }
    case "$*" in
      *State.Running*) cat "$s/container_running" ;;
      *Labels*) cat "$s/container_label" ;;
      *Config.Image*) cat "$s/container_image" ;;
    esac
    exit 0 ;;
  image)
    [[ "$2" == inspect && -e "$s/image_present" ]] && exit 0
    exit 1 ;;
  run)
    touch "$s/container"; echo true >"$s/container_running"
    label=""
    for a in "$@"; do
      [[ "$a" == speech-gateway.riva-selector=* ]] && label="${a#speech-gateway.riva-selector=}"
    done
    echo "$label" >"$s/container_label"
    echo "${@: -1}" >"$s/container_image"
    echo 0123456789ab ;;
  start) echo true >"$s/container_running" ;;
  rm) rm -f "$s/container" ;;
  pull | build) touch "$s/image_present" ;;
  login) cat >/dev/null; echo "Login Succeeded" ;;
  logs) echo "fake log line" ;;
esac
exit 0
"#;

const FAKE_NVIDIA_SMI: &str = r#"#!/bin/bash
echo "nvidia-smi $*" >>"$FAKE_LOG"
[[ -e "$FAKE_STATE/no_gpu" ]] && exit 0
echo "GPU 0: NVIDIA Fake H100 (UUID: GPU-00000000-0000-0000-0000-000000000000)"
"#;

const FAKE_CURL: &str = r#"#!/bin/bash
echo "curl $*" >>"$FAKE_LOG"
[[ -e "$FAKE_STATE/not_ready" ]] && exit 22
exit 0
"#;

const FAKE_KUBECTL: &str = r#"#!/bin/bash
echo "kubectl $*" >>"$FAKE_LOG"
s="$FAKE_STATE"
args=" $* "
case "$args" in
  *" version "*) [[ -e "$s/k8s_down" ]] && { echo "connection refused" >&2; exit 1; }; exit 0 ;;
  *" get nodes "*) [[ -e "$s/no_gpu_nodes" ]] || printf '1'; exit 0 ;;
  *" get namespace "*) [[ -e "$s/no_namespace" ]] && exit 1; exit 0 ;;
  *" get secret "*)
    for x in ngc-api ngc-registry; do
      [[ "$args" == *" $x "* && -e "$s/no_secret_$x" ]] && exit 1
    done
    exit 0 ;;
  *" get apiservice "*) [[ -e "$s/no_custom_metrics" ]] && exit 1; exit 0 ;;
esac
exit 0
"#;

/// A sandbox: a PATH holding only the fakes asked for plus the basic tools the scripts
/// use, a HOME, a call log and a state directory.
struct Host {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

const BASIC_TOOLS: &[&str] = &[
    "bash",
    "sed",
    "awk",
    "grep",
    "cut",
    "paste",
    "sha256sum",
    "find",
    "xargs",
    "sort",
    "mkdir",
    "cat",
    "head",
    "tail",
    "rm",
    "touch",
    "sleep",
    "dirname",
    "env",
];

impl Host {
    /// `tools`: which fakes are installed (docker, nvidia-smi, curl, kubectl).
    fn new(tools: &[&str]) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let state = dir.path().join("state");
        let home = dir.path().join("home");
        for d in [&bin, &state, &home] {
            fs::create_dir_all(d).unwrap();
        }
        for tool in BASIC_TOOLS {
            let real = which(tool).unwrap_or_else(|| panic!("{tool} is needed by the tests"));
            std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
        }
        for tool in tools {
            let body = match *tool {
                "docker" => FAKE_DOCKER,
                "nvidia-smi" => FAKE_NVIDIA_SMI,
                "curl" => FAKE_CURL,
                "kubectl" => FAKE_KUBECTL,
                other => panic!("no fake for {other}"),
            };
            let path = bin.join(tool);
            fs::write(&path, body).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let p = |x: &Path| x.to_str().unwrap().to_string();
        let env = vec![
            ("PATH".into(), p(&bin)),
            ("HOME".into(), p(&home)),
            ("FAKE_LOG".into(), p(&dir.path().join("calls.log"))),
            ("FAKE_STATE".into(), p(&state)),
            ("DEPLOY_POLL_S".into(), "0.1".into()),
            ("NGC_API_KEY".into(), "nvapi-test-key".into()),
        ];
        Host { dir, env }
    }

    fn gpu_host() -> Host {
        Host::new(&["docker", "nvidia-smi", "curl"])
    }

    fn set(&self, flag: &str, content: &str) {
        fs::write(self.dir.path().join("state").join(flag), content).unwrap();
    }

    fn unset_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    fn run(&self, script: &str, args: &[&str]) -> Run {
        let log = self.dir.path().join("calls.log");
        let before = fs::read_to_string(&log).unwrap_or_default().lines().count();
        let output = Command::new(which("bash").unwrap())
            .arg(Path::new(REPO).join("scripts").join(script))
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let calls = fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .skip(before)
            .map(str::to_string)
            .collect();
        Run { output, calls }
    }
}

struct Run {
    output: Output,
    calls: Vec<String>,
}

impl Run {
    fn ok(&self) -> bool {
        self.output.status.success()
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    fn called(&self, prefix: &str) -> bool {
        self.calls.iter().any(|c| c.starts_with(prefix))
    }
    fn call(&self, prefix: &str) -> &str {
        self.calls
            .iter()
            .find(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no call `{prefix}` in {:#?}", self.calls))
    }
    /// Calls that change a host or a cluster.
    fn mutations(&self) -> Vec<&String> {
        const VERBS: &[&str] = &[
            "docker run",
            "docker start",
            "docker rm",
            "docker pull",
            "docker build",
            "docker login",
            "docker stop",
            "kubectl apply",
            "kubectl create",
            "kubectl delete",
            "kubectl rollout",
        ];
        self.calls
            .iter()
            .filter(|c| VERBS.iter().any(|v| c.starts_with(v)))
            .collect()
    }
    fn explain(&self) -> String {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}\ncalls:\n{}",
            self.output.status,
            self.stdout(),
            self.stderr(),
            self.calls.join("\n")
        )
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// The printed URL is what `serve --backend` accepts.
fn assert_backend_url(stdout: &str, protocol: BackendProtocol, want: &str) {
    let url = stdout.trim();
    assert_eq!(url, want, "stdout must be the back-end URL alone");
    let parsed = BackendUrl::parse(url).expect("the gateway accepts the printed URL");
    assert_eq!(parsed.protocol, protocol);
}

// --- deploy-riva.sh --------------------------------------------------------------------------

#[test]
fn riva_fresh_host_logs_in_pulls_runs_waits_and_prints_the_backend_url() {
    let host = Host::gpu_host();
    let run = host.run("deploy-riva.sh", &[]);
    assert!(run.ok(), "{}", run.explain());
    assert_backend_url(
        &run.stdout(),
        BackendProtocol::Riva,
        "riva://127.0.0.1:50051",
    );
    assert!(run.called("docker login nvcr.io --username $oauthtoken --password-stdin"));
    assert!(run.called("docker pull nvcr.io/nim/nvidia/parakeet-1-1b-ctc-en-us:latest"));
    let docker_run = run.call("docker run");
    for part in [
        "--name sgw-riva",
        "--runtime=nvidia",
        "--env NGC_API_KEY ",
        "--env NIM_TAGS_SELECTOR=name=parakeet-1-1b-ctc-en-us,mode=str",
        "--publish 50051:50051",
        "--publish 9000:9000",
        "/opt/nim/.cache",
    ] {
        assert!(
            docker_run.contains(part),
            "`{part}` missing in: {docker_run}"
        );
    }
    assert!(
        !docker_run.contains("nvapi-test-key"),
        "the key must not be on the command line"
    );
    assert!(
        run.called("curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:9000/v1/health/ready")
    );
    assert!(run.stderr().contains("--backend riva://127.0.0.1:50051"));
}

#[test]
fn riva_second_run_reuses_the_running_container() {
    let host = Host::gpu_host();
    assert!(host.run("deploy-riva.sh", &[]).ok());
    let again = host.run("deploy-riva.sh", &[]);
    assert!(again.ok(), "{}", again.explain());
    assert!(
        again.mutations().is_empty(),
        "second run changed things: {}",
        again.explain()
    );
    assert!(again.stderr().contains("already running"));
    assert!(again.called("curl"), "still waits for readiness");
    assert_backend_url(
        &again.stdout(),
        BackendProtocol::Riva,
        "riva://127.0.0.1:50051",
    );
}

#[test]
fn riva_stopped_container_is_started_not_recreated() {
    let host = Host::gpu_host();
    assert!(host.run("deploy-riva.sh", &[]).ok());
    host.set("container_running", "false\n");
    let run = host.run("deploy-riva.sh", &[]);
    assert!(run.ok(), "{}", run.explain());
    assert_eq!(run.mutations(), vec!["docker start sgw-riva"]);
}

#[test]
fn riva_another_model_in_the_way_needs_replace() {
    let host = Host::gpu_host();
    assert!(host.run("deploy-riva.sh", &[]).ok());
    let other = ["--model", "parakeet-0-6b-ctc-en-us"];
    let refused = host.run("deploy-riva.sh", &other);
    assert!(!refused.ok());
    assert!(
        refused.stderr().contains("--replace"),
        "{}",
        refused.explain()
    );
    assert!(refused.mutations().is_empty());

    let replaced = host.run("deploy-riva.sh", &[&other[..], &["--replace"]].concat());
    assert!(replaced.ok(), "{}", replaced.explain());
    assert!(replaced.called("docker rm -f sgw-riva"));
    assert!(
        replaced
            .call("docker run")
            .contains("NIM_TAGS_SELECTOR=name=parakeet-0-6b-ctc-en-us,mode=str")
    );
}

#[test]
fn riva_flags_shape_the_url_and_the_ports() {
    let host = Host::gpu_host();
    let run = host.run(
        "deploy-riva.sh",
        &[
            "--host",
            "riva-1.internal",
            "--grpc-port",
            "50052",
            "--http-port",
            "9001",
        ],
    );
    assert!(run.ok(), "{}", run.explain());
    assert_backend_url(
        &run.stdout(),
        BackendProtocol::Riva,
        "riva://riva-1.internal:50052",
    );
    assert!(run.call("docker run").contains("--publish 50052:50051"));
    assert!(
        run.called("curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:9001/v1/health/ready")
    );
}

#[test]
fn riva_each_missing_prerequisite_has_its_own_error() {
    struct Case {
        tools: &'static [&'static str],
        state: Option<(&'static str, &'static str)>,
        no_key: bool,
        message: &'static str,
    }
    let cases = [
        Case {
            tools: &["nvidia-smi", "curl"],
            state: None,
            no_key: false,
            message: "docker is not installed",
        },
        Case {
            tools: &["docker", "nvidia-smi", "curl"],
            state: Some(("daemon_down", "")),
            no_key: false,
            message: "cannot reach the Docker daemon",
        },
        Case {
            tools: &["docker", "nvidia-smi", "curl"],
            state: Some(("runtimes", "{\"runc\":{}}\n")),
            no_key: false,
            message: "the NVIDIA Container Toolkit is not configured",
        },
        Case {
            tools: &["docker", "curl"],
            state: None,
            no_key: false,
            message: "nvidia-smi is not installed",
        },
        Case {
            tools: &["docker", "nvidia-smi", "curl"],
            state: Some(("no_gpu", "")),
            no_key: false,
            message: "no NVIDIA GPU found",
        },
        Case {
            tools: &["docker", "nvidia-smi"],
            state: None,
            no_key: false,
            message: "curl is not installed",
        },
        Case {
            tools: &["docker", "nvidia-smi", "curl"],
            state: None,
            no_key: true,
            message: "NGC_API_KEY is not set",
        },
    ];
    for case in cases {
        let mut host = Host::new(case.tools);
        if let Some((flag, content)) = case.state {
            host.set(flag, content);
        }
        if case.no_key {
            host.unset_env("NGC_API_KEY");
        }
        let run = host.run("deploy-riva.sh", &[]);
        assert!(!run.ok(), "{}: {}", case.message, run.explain());
        assert!(
            run.stderr().contains(&format!("error: {}", case.message)),
            "wanted `{}`: {}",
            case.message,
            run.explain()
        );
        assert!(run.mutations().is_empty(), "{}", run.explain());
        assert!(run.stdout().is_empty());

        // The dry run reports the same gap and still prints the plan, changing nothing.
        let dry = host.run("deploy-riva.sh", &["--dry-run"]);
        assert!(dry.ok(), "{}", dry.explain());
        assert!(dry.stderr().contains(case.message), "{}", dry.explain());
        assert!(dry.mutations().is_empty(), "{}", dry.explain());
    }
}

#[test]
fn riva_dry_run_prints_the_plan_and_changes_nothing() {
    let host = Host::gpu_host();
    let dry = host.run("deploy-riva.sh", &["--dry-run"]);
    assert!(dry.ok(), "{}", dry.explain());
    assert!(dry.mutations().is_empty(), "{}", dry.explain());
    assert!(!dry.called("curl"), "a dry run does not wait");
    let err = dry.stderr();
    assert!(
        err.contains("would run: docker pull nvcr.io/nim/nvidia/parakeet-1-1b-ctc-en-us:latest")
    );
    assert!(err.contains("would run: docker run --detach --name sgw-riva"));
    assert!(!err.contains("nvapi-test-key"), "the key is never printed");
    assert_backend_url(
        &dry.stdout(),
        BackendProtocol::Riva,
        "riva://127.0.0.1:50051",
    );
    // Nothing was created: a real run afterwards still starts the container.
    let real = host.run("deploy-riva.sh", &[]);
    assert!(real.called("docker run"), "{}", real.explain());
}

#[test]
fn riva_never_ready_times_out_with_a_clear_error() {
    let host = Host::gpu_host();
    host.set("not_ready", "");
    let run = host.run("deploy-riva.sh", &["--timeout", "1"]);
    assert!(!run.ok());
    assert!(
        run.stderr().contains("not ready after 1s"),
        "{}",
        run.explain()
    );
    assert!(run.stdout().is_empty());
}

#[test]
fn riva_unknown_model_is_refused_with_the_known_ones() {
    let host = Host::gpu_host();
    let run = host.run("deploy-riva.sh", &["--model", "nope"]);
    assert!(!run.ok());
    assert!(run.stderr().contains("unknown model 'nope'"));
    assert!(run.stderr().contains("parakeet-1-1b-ctc-en-us"));
    assert!(
        run.calls.is_empty(),
        "no tool is touched: {}",
        run.explain()
    );
}

// --- deploy-triton.sh ------------------------------------------------------------------------

#[test]
fn triton_builds_once_runs_once_and_prints_the_model_url() {
    let host = Host::gpu_host();
    let run = host.run("deploy-triton.sh", &[]);
    assert!(run.ok(), "{}", run.explain());
    assert_backend_url(
        &run.stdout(),
        BackendProtocol::Triton,
        "triton://127.0.0.1:8001/asr_glm_nano",
    );
    let build = run.call("docker build");
    assert!(build.contains("--tag speech-gateway/triton-glm:"));
    assert!(build.contains("riva/triton/glm/Dockerfile"));
    let docker_run = run.call("docker run");
    assert!(docker_run.contains("--runtime=nvidia"));
    assert!(docker_run.contains("--publish 8001:8001"));
    assert!(run.called(
        "curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8000/v2/models/asr_glm_nano/ready"
    ));
    assert!(
        !run.called("docker login"),
        "the Triton base image is public"
    );

    let again = host.run("deploy-triton.sh", &[]);
    assert!(again.ok(), "{}", again.explain());
    assert!(again.mutations().is_empty(), "{}", again.explain());
}

#[test]
fn triton_dry_run_and_missing_gpu() {
    let host = Host::gpu_host();
    let dry = host.run("deploy-triton.sh", &["--dry-run"]);
    assert!(dry.ok(), "{}", dry.explain());
    assert!(dry.mutations().is_empty(), "{}", dry.explain());
    assert!(dry.stderr().contains("would run: docker build"));

    host.set("no_gpu", "");
    let run = host.run("deploy-triton.sh", &[]);
    assert!(!run.ok());
    assert!(run.stderr().contains("error: no NVIDIA GPU found"));
    assert!(run.mutations().is_empty());
}

// --- deploy-k8s.sh ---------------------------------------------------------------------------

#[test]
fn k8s_applies_the_kustomization_and_waits_for_every_rollout() {
    let host = Host::new(&["kubectl"]);
    let run = host.run("deploy-k8s.sh", &["--timeout", "60"]);
    assert!(run.ok(), "{}", run.explain());
    assert_eq!(
        run.stdout().trim(),
        "ws://speech-gateway.speech.svc:8080/v1/audio/stream"
    );
    let apply = run.call("kubectl apply -k");
    assert!(apply.ends_with("/deploy/k8s"), "{apply}");
    for d in ["riva", "triton-glm", "speech-gateway"] {
        assert!(
            run.called(&format!(
                "kubectl -n speech rollout status deployment/{d} --timeout=60s"
            )),
            "{}",
            run.explain()
        );
    }
}

#[test]
fn k8s_missing_prerequisites_and_dry_run() {
    let cases: [(&[&str], Option<&str>, &str); 5] = [
        (&[], None, "kubectl is not installed"),
        (
            &["kubectl"],
            Some("k8s_down"),
            "cannot reach the Kubernetes API",
        ),
        (
            &["kubectl"],
            Some("no_gpu_nodes"),
            "no node offers nvidia.com/gpu",
        ),
        (
            &["kubectl"],
            Some("no_namespace"),
            "namespace speech does not exist",
        ),
        (
            &["kubectl"],
            Some("no_secret_ngc-api"),
            "secret ngc-api is missing",
        ),
    ];
    for (tools, flag, message) in cases {
        let host = Host::new(tools);
        if let Some(flag) = flag {
            host.set(flag, "");
        }
        let run = host.run("deploy-k8s.sh", &[]);
        assert!(!run.ok(), "{message}: {}", run.explain());
        assert!(
            run.stderr().contains(&format!("error: {message}")),
            "{}",
            run.explain()
        );
        assert!(run.mutations().is_empty(), "{}", run.explain());
        let dry = host.run("deploy-k8s.sh", &["--dry-run"]);
        assert!(dry.ok(), "{}", dry.explain());
        assert!(dry.stderr().contains(message));
        assert!(dry.mutations().is_empty(), "{}", dry.explain());
        assert!(dry.stderr().contains("would run: kubectl apply -k"));
    }
    // Without prometheus-adapter: a warning, not an error.
    let host = Host::new(&["kubectl"]);
    host.set("no_custom_metrics", "");
    let run = host.run("deploy-k8s.sh", &[]);
    assert!(run.ok(), "{}", run.explain());
    assert!(run.stderr().contains("HPA will scale on CPU only"));
}

// --- the Kubernetes gateway ConfigMap against the gateway's own configuration loader ---------

/// `SGW_*` variables as `(key, value)`, the shape `Config::load` takes.
type Settings = Vec<(String, String)>;

/// The `SGW_*` settings of deploy/k8s/gateway/configmap.yaml (`  KEY: "value"`), and the
/// commented examples beside them (`  #   KEY: "value"`), meant to be used as written.
fn configmap_settings() -> (Settings, Settings) {
    let text =
        fs::read_to_string(Path::new(REPO).join("deploy/k8s/gateway/configmap.yaml")).unwrap();
    let (mut set, mut commented) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let (into, rest) = match line.trim_start().strip_prefix('#') {
            Some(c) => (&mut commented, c.trim_start()),
            None => (&mut set, line.trim_start()),
        };
        let Some((key, value)) = rest.split_once(": ") else {
            continue;
        };
        if key.starts_with("SGW_") {
            let value = value.trim().trim_matches('"').to_string();
            into.push((key.to_string(), value));
        }
    }
    (set, commented)
}

/// The ConfigMap loads with the gateway's configuration loader, its GPU routes are DNS
/// pools with a per-address cap, and its commented cloud-fallback example is a valid
/// second tier. (deploy/check_assets.py checks that the pools name the headless Services.)
#[test]
fn k8s_configmap_routes_are_dns_pools_the_gateway_accepts() {
    use speech_gateway::config::Config;
    let (set, commented) = configmap_settings();
    assert!(
        set.iter().any(|(k, _)| k == "SGW_ROUTES__DEFAULT"),
        "{set:?}"
    );
    let config = Config::load(None, set.clone(), Default::default())
        .unwrap_or_else(|e| panic!("the ConfigMap's settings are refused: {e}"));
    assert_eq!(config.dns.interval, std::time::Duration::from_secs(5));
    for (route, protocol) in [
        ("default", BackendProtocol::Riva),
        ("offline", BackendProtocol::Triton),
    ] {
        let backends = &config.route(route).unwrap().backends;
        assert_eq!(backends.len(), 1, "{route}: {backends:?}");
        let pool = &backends[0];
        assert!(pool.dns, "{route} must be a DNS pool: {}", pool.url);
        assert_eq!(pool.protocol, protocol, "{route}");
        assert!(pool.max_sessions.is_some(), "{route}: a per-address cap");
    }

    // The commented Deepgram tier, used as written over the live settings (the other
    // commented settings, listener TLS, are not part of it).
    let commented: Vec<_> = commented
        .into_iter()
        .filter(|(k, _)| k == "SGW_ROUTES__DEFAULT" || k.starts_with("SGW_DEEPGRAM_BACKEND__"))
        .collect();
    assert!(
        commented.iter().any(|(k, _)| k == "SGW_ROUTES__DEFAULT"),
        "the cloud-fallback example is in configmap.yaml: {commented:?}"
    );
    let mut with_fallback = set;
    with_fallback.retain(|(k, _)| !commented.iter().any(|(c, _)| c == k));
    with_fallback.extend(commented.iter().cloned());
    let config = Config::load(None, with_fallback, Default::default())
        .unwrap_or_else(|e| panic!("the commented example is refused: {e}"));
    let backends = &config.route("default").unwrap().backends;
    assert_eq!(backends.len(), 2, "{backends:?}");
    assert!(backends[0].dns && backends[0].tier == 0);
    assert_eq!(backends[1].protocol, BackendProtocol::Deepgram);
    assert_eq!(backends[1].tier, 1);
    assert_eq!(
        config.deepgram_backend.key_file.as_deref(),
        Some(Path::new("/run/secrets/deepgram/key"))
    );
}

// --- Dockerfile and the healthcheck subcommand ------------------------------------------------

#[test]
fn dockerfile_is_multi_stage_non_root_with_a_healthcheck() {
    let text = fs::read_to_string(Path::new(REPO).join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms[0].contains(" AS build"), "{froms:?}");
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let final_stage = &lines[last_from..];
    assert!(
        final_stage
            .iter()
            .any(|l| l.starts_with("COPY --from=build ")),
        "the final stage copies the binary from the build stage"
    );
    let user = final_stage
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("USER in the final stage");
    let who = user["USER ".len()..].split(':').next().unwrap().trim();
    assert!(who != "0" && who != "root", "non-root: {user}");
    let health = final_stage
        .iter()
        .find(|l| l.starts_with("HEALTHCHECK "))
        .expect("HEALTHCHECK");
    // The instruction with its continuation lines.
    let at = final_stage
        .iter()
        .position(|l| l.starts_with("HEALTHCHECK "))
        .unwrap();
    let mut health_cmd = String::new();
    for l in &final_stage[at..] {
        health_cmd.push_str(l);
        if !l.ends_with('\\') {
            break;
        }
    }
    assert!(health.contains("--interval="), "{health}");
    assert!(
        health_cmd.contains("\"healthcheck\"") && health_cmd.contains("/health\""),
        "{health_cmd}"
    );
    let ignore = fs::read_to_string(Path::new(REPO).join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "*") || ignore.contains("target"),
        ".dockerignore keeps target/ out of the build context"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_subcommand_passes_on_health_and_fails_otherwise() {
    let gw = Gateway::start(&[("SGW_ROUTES__DEFAULT", "riva://127.0.0.1:1".to_string())]).await;
    let probe = |url: String| async move {
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(["healthcheck", "--url", &url, "--timeout", "2s"])
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let ok = probe(gw.http("/health")).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The route's back end is unreachable, so /ready is 503: the probe says so.
    let not_ready = probe(gw.http("/ready")).await;
    assert!(!not_ready.status.success());
    assert!(String::from_utf8_lossy(&not_ready.stderr).contains("503"));
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let refused = probe(format!("http://{closed}/health")).await;
    assert!(!refused.status.success());
}

// --- observability assets against the live /metrics -----------------------------------------

fn promtool() -> Option<PathBuf> {
    match which("promtool") {
        Some(p) => Some(p),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "promtool is missing in CI: scripts/test.sh installs it (apt package prometheus)"
            )
        }
        None => {
            eprintln!(
                "SKIPPED: promtool is not installed (apt-get install prometheus); CI requires it"
            );
            None
        }
    }
}

/// A real gateway's `/metrics`, with a labelled counter populated (a client error sent).
async fn live_metrics() -> String {
    let gw = Gateway::start(&[("SGW_ROUTES__DEFAULT", "riva://127.0.0.1:1".to_string())]).await;
    let mut client = gw.connect().await;
    client.send_text("not json").await;
    let error = client.until("error").await;
    assert_eq!(error["code"], "INVALID_REQUEST");
    gw.wait_metric("sgw_errors_total{code=\"INVALID_REQUEST\"}", 1.0)
        .await;
    let (status, body) = gw.get("/metrics").await;
    assert_eq!(status, 200);
    body
}

/// Every sample name the exposition can hold, from its `# TYPE` lines and samples.
fn exposed_names(body: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap_or(""));
            names.insert(name.to_string());
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{s}"));
                    }
                }
                _ => {}
            }
        } else if !line.starts_with('#') {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// `sgw_…` names in a text (recording rules are `sgw:…` and do not match).
fn referenced_metrics(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(pos) = text[i..].find("sgw_") {
        let start = i + pos;
        let prev_ok = start == 0
            || !(bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b':');
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(text.len() - start);
        if prev_ok {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

fn dashboard_exprs() -> Vec<String> {
    let path = Path::new(REPO).join("deploy/grafana/dashboards/speech-gateway.json");
    let dash: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() > 10, "the dashboard has its queries");
    exprs
}

#[tokio::test(flavor = "multi_thread")]
async fn live_metrics_pass_promtool_check_metrics() {
    let Some(promtool) = promtool() else { return };
    let body = live_metrics().await;
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_in_the_dashboard_and_alerts_exists() {
    let body = live_metrics().await;
    let live = exposed_names(&body);
    let source =
        fs::read_to_string(Path::new(REPO).join("crates/gateway/src/telemetry/metrics.rs"))
            .unwrap();
    let alerts = fs::read_to_string(Path::new(REPO).join("deploy/prometheus/alerts.yml")).unwrap();
    let adapter = fs::read_to_string(
        Path::new(REPO).join("deploy/k8s/monitoring/prometheus-adapter-rules.yaml"),
    )
    .unwrap();
    let hpa = fs::read_to_string(Path::new(REPO).join("deploy/k8s/gateway/hpa.yaml")).unwrap();
    let mut referenced = referenced_metrics(&alerts);
    referenced.extend(referenced_metrics(&adapter));
    referenced.extend(referenced_metrics(&hpa));
    for e in dashboard_exprs() {
        referenced.extend(referenced_metrics(&e));
    }
    assert!(referenced.len() >= 12, "{referenced:?}");
    let mut unknown = Vec::new();
    for name in &referenced {
        if live.contains(name) {
            continue;
        }
        // A family with no sample yet: its registered name is in metrics.rs.
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        if !source.contains(&format!("\"{base}\"")) {
            unknown.push(name.clone());
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics named in deploy/ but not exposed by the gateway: {unknown:?}\nlive: {live:?}"
    );
    // The SLO rules match a bucket bound by its prefix: it must exist.
    assert!(
        body.contains("sgw_final_latency_seconds_bucket{le=\"1.459"),
        "the 1.46 s bucket of sgw_final_latency_seconds moved; update alerts.yml"
    );
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in dashboard_exprs().iter().enumerate() {
        let e = e.replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let path = dir.path().join("dashboard.yml");
    fs::write(&path, rules).unwrap();
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
