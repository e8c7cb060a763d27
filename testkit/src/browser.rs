//! Headless Chromium for the pages' end-to-end tests, driven over the Chrome DevTools
//! Protocol: one browser process per test, one page, a handful of commands (navigate,
//! evaluate, type, screenshot). The protocol is JSON over a WebSocket; the client is
//! tokio-tungstenite, which the local call's WebSocket already builds.
//!
//! The browser is Debian's `chromium` (the test command installs it), or the one named by
//! `SWITCHBOARD_TEST_CHROMIUM`. It starts with a fresh profile and without any background
//! networking (this machine has no internet; Chromium would otherwise retry Google's hosts).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one command, or one `wait_for`, may take before the test fails.
pub const BROWSER_WAIT: Duration = Duration::from_secs(20);

/// How long one start of the browser may take to print its DevTools address.
const LAUNCH_WAIT: Duration = Duration::from_secs(30);

/// How many starts `Chromium::launch` tries before it fails the test.
const LAUNCH_ATTEMPTS: usize = 3;

/// A started browser: the process, its profile, its DevTools address, the rest of its stderr.
type Started = (
    Child,
    PathBuf,
    String,
    tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
);

/// The Chromium binary: `SWITCHBOARD_TEST_CHROMIUM`, else `chromium` on the PATH.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("SWITCHBOARD_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromium"))
}

/// One headless Chromium with one page; killed (and its profile removed) on drop.
#[derive(Debug)]
pub struct Chromium {
    child: Child,
    profile: PathBuf,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
}

impl Chromium {
    /// Starts Chromium on `url` with a `width`×`height` viewport. A start that fails (the
    /// process exits before printing its DevTools address, or prints nothing in time, which a
    /// loaded 2-core machine has shown) is retried with a fresh profile, up to three times;
    /// the panic then says which it was and what Chromium printed.
    pub async fn launch(url: &str, width: u32, height: u32) -> Self {
        let mut failures = Vec::new();
        let (child, profile, endpoint, lines) = loop {
            match Self::start(width, height).await {
                Ok(started) => break started,
                Err(failure) => {
                    failures.push(failure);
                    if failures.len() == LAUNCH_ATTEMPTS {
                        panic!(
                            "Chromium did not start in {LAUNCH_ATTEMPTS} attempts:\n{}",
                            failures.join("\n")
                        );
                    }
                }
            }
        };
        // Keep draining stderr so Chromium never blocks on a full pipe.
        let mut lines = lines;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("connect to Chromium's DevTools");
        let mut browser = Self {
            child,
            profile,
            socket,
            session: String::new(),
            next_id: 0,
        };
        let target = browser
            .command(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = browser
            .command(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        browser
            .page(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        browser.navigate(url).await;
        browser
    }

    /// One attempt at starting the browser: the process, its profile, its DevTools address
    /// and the rest of its stderr; or why not (it exited, or printed no address in time),
    /// with what it printed.
    async fn start(width: u32, height: u32) -> Result<Started, String> {
        let profile = std::env::temp_dir().join(format!(
            "switchboard-chromium-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7()
        ));
        let binary = chromium_path();
        let mut child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not start {} ({e}): install Debian's chromium (the test command does) or set SWITCHBOARD_TEST_CHROMIUM",
                    binary.display()
                )
            });
        // Chromium prints its DevTools address on stderr.
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let mut printed = Vec::new();
        let found = tokio::time::timeout(LAUNCH_WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(at) = line.find("ws://") {
                    return Some(line[at..].trim().to_owned());
                }
                printed.push(line);
            }
            None
        })
        .await;
        let why = match found {
            Ok(Some(endpoint)) => return Ok((child, profile, endpoint, lines)),
            Ok(None) => match child.wait().await {
                Ok(status) => format!("it exited ({status}) before printing its DevTools address"),
                Err(e) => format!("its stderr closed before it printed its DevTools address ({e})"),
            },
            Err(_) => {
                let _ = child.kill().await;
                format!("it printed no DevTools address in {LAUNCH_WAIT:?}")
            }
        };
        let _ = std::fs::remove_dir_all(&profile);
        Err(format!("- {why}; its stderr: {:?}", printed))
    }

    /// Sends one command (to the page when `session` is set) and returns its result.
    async fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        let reply = tokio::time::timeout(BROWSER_WAIT, async {
            while let Some(frame) = self.socket.next().await {
                let Ok(Message::Text(text)) = frame else {
                    continue;
                };
                let Ok(reply) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                // Events (no id) and other replies are not ours.
                if reply["id"] == id {
                    return Some(reply);
                }
            }
            None
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no answer within {BROWSER_WAIT:?}"))
        .unwrap_or_else(|| panic!("{method}: the DevTools socket closed"));
        if let Some(error) = reply.get("error") {
            panic!("{method} failed: {error}");
        }
        reply["result"].clone()
    }

    /// A command to the page.
    async fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.command(Some(&session), method, params).await
    }

    /// Loads `url` and waits until its document is complete.
    pub async fn navigate(&mut self, url: &str) {
        let result = self.page("Page.navigate", json!({"url": url})).await;
        if let Some(error) = result.get("errorText") {
            panic!("could not load {url}: {error}");
        }
        self.wait_for(
            &format!(
                "document.readyState === 'complete' && location.href === {}",
                json!(url)
            ),
            &format!("{url} to load"),
        )
        .await;
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its value; panics
    /// on an exception.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .page(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `condition` (a JavaScript expression) is truthy; panics with `what` and
    /// the page's text after [`BROWSER_WAIT`].
    pub async fn wait_for(&mut self, condition: &str, what: &str) {
        let deadline = Instant::now() + BROWSER_WAIT;
        loop {
            let value = self.eval(&format!("Boolean({condition})")).await;
            if value == json!(true) {
                return;
            }
            if Instant::now() >= deadline {
                let text = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await;
                panic!(
                    "waited {BROWSER_WAIT:?} for {what}; the page says:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element `selector` (a real mouse click at its centre).
    pub async fn click(&mut self, selector: &str) {
        let at = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({s}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2, e.disabled === true]; }})()",
                s = json!(selector)
            ))
            .await;
        let [x, y, disabled] = at.as_array().map(Vec::as_slice).unwrap_or_default() else {
            panic!("no element {selector}");
        };
        assert_eq!(disabled, &json!(false), "{selector} is disabled");
        for kind in ["mousePressed", "mouseReleased"] {
            self.page(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// Focuses `selector`, clears it and types `text` as keyboard input.
    pub async fn type_into(&mut self, selector: &str, text: &str) {
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({s}); if (!e) return false; e.focus(); e.select(); return true; }})()",
                s = json!(selector)
            ))
            .await;
        assert_eq!(found, json!(true), "no element {selector}");
        self.page("Input.insertText", json!({"text": text})).await;
    }

    /// The text of `selector` (empty when it does not exist).
    pub async fn text(&mut self, selector: &str) -> String {
        self.eval(&format!(
            "(document.querySelector({s}) || {{innerText: ''}}).innerText",
            s = json!(selector)
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Saves a PNG of the viewport to `path` (directories created).
    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .page("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
