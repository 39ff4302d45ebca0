//! A real browser for page tests: Debian's headless Chromium, driven over the Chrome
//! DevTools Protocol (CDP) on one WebSocket — enough to open a page, evaluate JavaScript
//! (with a user gesture, as a click would), set a file input and take a screenshot.
//!
//! Chromium's fake capture device stands in for the microphone, fed from a WAV file
//! (`--use-file-for-fake-audio-capture`, which it loops); the permission prompt is
//! answered yes (`--use-fake-ui-for-media-stream`). The browser runs in its own process
//! group with a throw-away profile; dropping [`Browser`] kills that group.
//!
//! Chromium missing is a failure, not a skip: install the `chromium` package
//! (`scripts/test.sh` does), or point `SGW_CHROMIUM` at a Chromium or Chrome binary.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long one CDP command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium with one page attached.
pub struct Browser {
    child: std::process::Child,
    profile: tempfile::TempDir,
    ws: Socket,
    session: String,
    next_id: u64,
    /// Console messages, uncaught exceptions and browser log entries of the page, in order.
    pub console: Vec<String>,
}

/// The Chromium binary: `SGW_CHROMIUM`, else `chromium` (Debian) or `chromium-browser` /
/// `google-chrome` on `PATH`. Panics with what to install when there is none.
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("SGW_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "Chromium is needed for the browser tests and was not found on PATH: install the \
         Debian package (`apt-get install -y chromium`; scripts/test.sh installs it), or set \
         SGW_CHROMIUM to a Chromium or Chrome binary"
    );
}

impl Browser {
    /// Starts headless Chromium with `fake_audio` (a WAV file) as the microphone, and opens
    /// a blank page of `width`×`height` CSS pixels.
    pub async fn launch(fake_audio: &Path, width: u32, height: u32) -> Browser {
        use std::os::unix::process::CommandExt;
        let binary = chromium();
        // Chromium plays silence from a file named through `..`
        let fake_audio = std::fs::canonicalize(fake_audio)
            .unwrap_or_else(|e| panic!("{}: {e}", fake_audio.display()));
        let profile = tempfile::tempdir().expect("a temporary profile directory");
        let log = std::fs::File::create(profile.path().join("chromium.log")).unwrap();
        let mut cmd = std::process::Command::new(&binary);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            "--password-store=basic",
            "--use-mock-keychain",
        ])
        .arg(format!(
            "--use-file-for-fake-audio-capture={}",
            fake_audio.display()
        ))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={width},{height}"))
        .arg("about:blank")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        // its own group: the renderer, GPU and utility processes go with it on drop
        .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{} could not be started: {e}", binary.display()));
        // Chromium writes the port it chose and the browser target's path here.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.trim().to_string(), path.trim().to_string());
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before opening DevTools: {}",
                    binary.display(),
                    std::fs::read_to_string(profile.path().join("chromium.log"))
                        .unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "{} did not open DevTools within 60 s: {}",
                    binary.display(),
                    std::fs::read_to_string(profile.path().join("chromium.log"))
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .unwrap_or_else(|e| panic!("DevTools at {url}: {e}"));
        let mut browser = Browser {
            child,
            profile,
            ws,
            session: String::new(),
            next_id: 0,
            console: Vec::new(),
        };
        let target = browser
            .send(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = browser
            .send(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        for method in ["Runtime.enable", "Page.enable", "Log.enable"] {
            browser.call(method, json!({})).await;
        }
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        browser
    }

    /// One CDP command on the page; its result. Panics on a protocol error.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params).await
    }

    async fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .unwrap_or_else(|e| panic!("CDP {method}: {e}"));
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("CDP {method}: no answer within {CALL_TIMEOUT:?}"));
            let text = match next {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                other => panic!("CDP {method}: the DevTools socket ended: {other:?}"),
            };
            let v: Value = serde_json::from_str(&text).expect("CDP sends JSON");
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    panic!("CDP {method} failed: {e}");
                }
                return v["result"].clone();
            }
            self.record_event(&v);
        }
    }

    fn record_event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| {
                                x["value"]
                                    .as_str()
                                    .map(String::from)
                                    .unwrap_or_else(|| x["description"].to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.console
                    .push(format!("console.{}: {}", p["type"], args.join(" ")));
            }
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                self.console.push(format!(
                    "exception: {} {}",
                    d["text"], d["exception"]["description"]
                ));
            }
            Some("Log.entryAdded") => {
                let e = &p["entry"];
                self.console
                    .push(format!("log.{}: {} {}", e["level"], e["text"], e["url"]));
            }
            _ => {}
        }
    }

    /// Loads `url` and waits until its document is complete.
    pub async fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url})).await;
        if let Some(e) = r.get("errorText") {
            panic!("navigating to {url}: {e}");
        }
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(20),
        )
        .await;
    }

    /// Evaluates `expression` in the page as a user gesture (so it may start audio), awaits
    /// a promise, and returns the value. Panics on an exception.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({
                    "expression": expression,
                    "returnByValue": true,
                    "awaitPromise": true,
                    "userGesture": true,
                }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("`{expression}` threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expression` every 50 ms until it is truthy (not false, null, undefined, 0 or
    /// ""); its value. Panics after `timeout` with the last value and the page's console.
    pub async fn wait_for(&mut self, expression: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expression).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let state = self
                    .eval("JSON.stringify({state: document.getElementById('state')?.textContent, notice: document.getElementById('notice')?.textContent, body: document.body?.innerText.slice(0, 2000)})")
                    .await;
                panic!(
                    "waited {timeout:?} for `{expression}` (last: {v}); page: {state}\nconsole:\n{}",
                    self.console.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Puts `file` in the `<input type=file>` that `selector` finds (as if chosen or
    /// dropped); the page gets its `change` event.
    pub async fn set_file(&mut self, selector: &str, file: &Path) {
        let doc = self.call("DOM.getDocument", json!({"depth": 0})).await;
        let root = doc["root"]["nodeId"].clone();
        let node = self
            .call(
                "DOM.querySelector",
                json!({"nodeId": root, "selector": selector}),
            )
            .await;
        assert_ne!(node["nodeId"], json!(0), "no element matches {selector}");
        // Chromium cannot read a file named through `..`
        let file =
            std::fs::canonicalize(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        self.call(
            "DOM.setFileInputFiles",
            json!({"nodeId": node["nodeId"], "files": [file.to_string_lossy()]}),
        )
        .await;
    }

    /// A PNG of the page's viewport, written to `path` (directories made as needed).
    pub async fn screenshot(&mut self, path: &Path) {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Chromium's own log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // the whole group: the browser and every helper process it started
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group this browser leads; no memory involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
