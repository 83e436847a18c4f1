//! Headless Chromium with one page, driven over the Chrome DevTools Protocol, for the board's
//! browser test: JSON-RPC calls on the browser's WebSocket (tokio-websockets, which async-nats
//! already builds) with a flat session; events are skipped.
//!
//! Not a CDP or WebDriver crate: on this 2-core machine, chromiumoxide 0.9 adds ≈140 s of CPU to
//! a clean build, headless_chrome 1.0 ≈165 s, fantoccini 0.22 ≈65 s and a chromedriver, for the
//! five CDP methods the test calls.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_websockets::{ClientBuilder, MaybeTlsStream, Message, WebSocketStream};

use crate::support::{wait_for, wait_until};

/// The Chromium binary: `$EDGE_MES_CHROMIUM`, else `chromium` (Debian) or `chromium-browser`
/// on PATH. Fails with the install command when there is none: the browser test must not pass
/// without a browser.
pub fn chromium_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGE_MES_CHROMIUM").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "EDGE_MES_CHROMIUM={} is not a file: install Chromium with `apt-get install -y chromium`",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "chromium not found (looked for `chromium` and `chromium-browser` on PATH and in /usr/bin; \
         EDGE_MES_CHROMIUM may name it): install it with `apt-get install -y chromium` \
         (CI: .ci/tools.sh does)"
    );
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A headless Chromium showing one page, with a private profile directory; killed and removed on
/// drop.
pub struct Chromium {
    child: tokio::process::Child,
    profile: PathBuf,
    /// The DevTools connection and the id of the last call.
    cdp: Mutex<(Socket, u64)>,
    /// The page's session.
    session: String,
}

impl Chromium {
    /// Starts Chromium with a blank page of `width` × `height` CSS pixels.
    pub async fn launch(width: u32, height: u32) -> Self {
        let binary = chromium_binary();
        let profile = std::env::temp_dir().join(testkit::unique_name("chromium"));
        std::fs::create_dir_all(&profile).unwrap();
        let log = profile.join("chromium.log");
        let child = tokio::process::Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--mute-audio",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        // Chromium writes `<port>\n<browser path>` there once it listens.
        let port_file = profile.join("DevToolsActivePort");
        let address = wait_for(
            &format!("chromium to listen (its log: {})", log.display()),
            Duration::from_secs(60),
            || async {
                let text = std::fs::read_to_string(&port_file).ok()?;
                let mut lines = text.lines();
                let port: u16 = lines.next()?.trim().parse().ok()?;
                Some(format!("ws://127.0.0.1:{port}{}", lines.next()?.trim()))
            },
        )
        .await;
        let (socket, _) = ClientBuilder::new()
            .uri(&address)
            .unwrap()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("DevTools connection to {address}: {e}"));
        let mut browser = Self {
            child,
            profile,
            cdp: Mutex::new((socket, 0)),
            session: String::new(),
        };
        let target = browser
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = browser
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser
            .on_page(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        browser
    }

    pub async fn navigate(&self, url: &str) {
        self.on_page("Page.navigate", json!({"url": url})).await;
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&self, expression: &str) -> Value {
        let r = self
            .on_page(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is `true` in the page (an exception, e.g. while the page is
    /// still loading, counts as not yet).
    pub async fn wait_for(&self, expression: &str, within: Duration) {
        let guarded = format!(
            "(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        );
        wait_until(
            &format!("the page to make true: {expression}"),
            within,
            || async { self.eval(&guarded).await == Value::Bool(true) },
        )
        .await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let r = self
            .on_page("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        base64_decode(r["data"].as_str().unwrap())
    }

    pub async fn close(mut self) {
        // The browser may drop the connection before it answers: send, don't wait.
        let close = json!({"id": 0, "method": "Browser.close"}).to_string();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.cdp.get_mut().0.send(Message::text(close)),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    async fn on_page(&self, method: &str, params: Value) -> Value {
        self.call(Some(&self.session), method, params).await
    }

    /// One CDP call: its result, or a panic naming the method.
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let mut cdp = self.cdp.lock().await;
        let (socket, last_id) = &mut *cdp;
        *last_id += 1;
        let id = *last_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            socket
                .send(Message::text(message.to_string()))
                .await
                .map_err(|e| e.to_string())?;
            while let Some(frame) = socket.next().await {
                let frame = frame.map_err(|e| e.to_string())?;
                let Some(text) = frame.as_text() else {
                    continue;
                };
                let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
                if v["id"] == json!(id) {
                    return Ok(v);
                }
            }
            Err("the browser closed the connection".to_owned())
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no answer within 30 s"))
        .unwrap_or_else(|e| panic!("{method}: {e}"));
        if let Some(e) = answer.get("error") {
            panic!("{method}: {e}");
        }
        answer["result"].clone()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Standard base64 (RFC 4648) to bytes; padding and line breaks are skipped.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let Some(v) = ALPHABET.iter().position(|&b| b == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn base64_decodes_rfc_4648_vectors() {
    for (text, bytes) in [
        ("", &b""[..]),
        ("Zg==", b"f"),
        ("Zm8=", b"fo"),
        ("Zm9v", b"foo"),
        ("Zm9vYg==", b"foob"),
        ("Zm9vYmE=", b"fooba"),
        ("Zm9vYmFy", b"foobar"),
    ] {
        assert_eq!(base64_decode(text), bytes, "{text}");
    }
}
