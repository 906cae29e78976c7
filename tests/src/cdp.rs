//! A small client of the Chrome DevTools protocol, for the console's
//! browser test: starts Debian's headless `chromium` on loopback, opens
//! one page over the browser's websocket (flattened session), and offers
//! what the test needs — navigate, evaluate, type, click, screenshot,
//! cookies — plus the log entries the page produced (CSP violations show
//! there).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `SUNDIAL_CHROMIUM`, else Debian's `/usr/bin/chromium`; a panic saying
/// how to install it when it is missing (`make browser`).
pub fn chromium_path() -> PathBuf {
    let path = std::env::var_os("SUNDIAL_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} is missing: the console's browser test needs Debian's chromium (`make browser` installs it)",
        path.display()
    );
    path
}

/// A headless Chromium with one page open.
pub struct Browser {
    _child: tokio::process::Child,
    _profile: TempDir,
    socket: Socket,
    session: String,
    next_id: u64,
    /// Every event received so far (`method`, `params`).
    pub events: Vec<Value>,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    /// Starts Chromium and opens a blank page with the Page, Runtime,
    /// Network and Log domains enabled.
    pub async fn start() -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "sundial-chromium-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&profile).expect("chromium profile directory");
        let mut child = tokio::process::Command::new(chromium_path())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--no-proxy-server",
                "--hide-scrollbars",
                "--window-size=1280,1000",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("chromium stderr");
        let url = tokio::time::timeout(Duration::from_secs(60), devtools_url(stderr))
            .await
            .expect("chromium prints its DevTools address within 60 s");
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connect to chromium's DevTools websocket");
        let mut browser = Browser {
            _child: child,
            _profile: TempDir(profile),
            socket,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
        };
        let target = browser
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap_or("").to_string();
        for domain in ["Page", "Runtime", "Network", "Log"] {
            browser.call(&format!("{domain}.enable"), json!({})).await;
        }
        browser
    }

    /// Sends a command (to the page once attached) and returns its result;
    /// a protocol error is a panic naming the command.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("send a DevTools command");
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer within 30 s"))
                .unwrap_or_else(|| panic!("{method}: chromium closed the socket"))
                .expect("read from the DevTools websocket");
            let Message::Text(text) = frame else { continue };
            let value: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
            if value["id"] == json!(id) {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
            if value.get("method").is_some() {
                self.events.push(value);
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "`{expression}` threw: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits until `condition` (a JS expression) is true in the page.
    pub async fn wait_for(&mut self, condition: &str, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let ready = format!("document.readyState === 'complete' && !!({condition})");
            if self.eval(&ready).await == json!(true) {
                return;
            }
            let here = self.eval("location.href").await;
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: `{condition}` not true within 15 s (at {here})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens `url` and waits for the page to load.
    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        let expected = serde_json::to_string(url).unwrap_or_default();
        self.wait_for(&format!("location.href === {expected}"), url)
            .await;
    }

    /// Types `text` into the element `selector` as a user would.
    pub async fn type_into(&mut self, selector: &str, text: &str) {
        let focus = format!("(() => {{ const e = document.querySelector({}); e.focus(); return document.activeElement === e; }})()",
            serde_json::to_string(selector).unwrap_or_default());
        assert_eq!(self.eval(&focus).await, json!(true), "focus {selector}");
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Clicks the middle of the element `selector` with the mouse.
    pub async fn click(&mut self, selector: &str) {
        let rect = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return null; \
             e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            serde_json::to_string(selector).unwrap_or_default()
        );
        let at = self.eval(&rect).await;
        let (x, y) = match (at[0].as_f64(), at[1].as_f64()) {
            (Some(x), Some(y)) => (x, y),
            _ => panic!("no element `{selector}` to click"),
        };
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// A PNG of the page (the whole page, not only the window) at `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or(""))
            .expect("a base64 screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// The browser's cookies for `url`.
    pub async fn cookies(&mut self, url: &str) -> Vec<Value> {
        let result = self
            .call("Network.getCookies", json!({"urls": [url]}))
            .await;
        result["cookies"].as_array().cloned().unwrap_or_default()
    }

    /// The texts of the log entries the page produced.
    pub fn log_texts(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Log.entryAdded")
            .map(|e| {
                e["params"]["entry"]["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }
}

/// Reads Chromium's stderr until it names its DevTools websocket; the
/// rest of its output is drained in the background.
async fn devtools_url(stderr: tokio::process::ChildStderr) -> String {
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(at) = line.find("ws://") {
            let url = line[at..].trim().to_string();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return url;
        }
    }
    panic!("chromium exited without printing its DevTools address")
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
