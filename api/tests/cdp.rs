//! Headless Chromium driven over the Chrome DevTools Protocol, for the board's browser test.
//!
//! Deliberately small: a WebSocket client (RFC 6455, client side, text frames) and JSON-RPC
//! calls with flat sessions; events are skipped. A CDP crate (chromiumoxide) would compile
//! thousands of generated types; this needs nothing beyond tokio and serde_json.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

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

/// A headless Chromium with a private profile directory, killed and removed on drop.
pub struct Chromium {
    child: tokio::process::Child,
    profile: PathBuf,
    pub cdp: Cdp,
}

impl Chromium {
    pub async fn launch(width: u32, height: u32) -> Self {
        let binary = chromium_binary();
        let profile = std::env::temp_dir().join(testkit::unique_name("chromium"));
        std::fs::create_dir_all(&profile).unwrap();
        let log = std::fs::File::create(profile.join("chromium.log")).unwrap();
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
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let (port, path) = devtools_active_port(&profile).await;
        let ws = WebSocket::connect(port, &path).await.unwrap();
        Self {
            child,
            profile,
            cdp: Cdp { ws, next_id: 0 },
        }
    }

    /// Opens a new tab on `url` at the given viewport; returns its session.
    pub async fn open(&mut self, url: &str, width: u32, height: u32) -> String {
        let target = self
            .cdp
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = self
            .cdp
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        let session = attached["sessionId"].as_str().unwrap().to_owned();
        self.cdp
            .call(
                Some(&session),
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        self.cdp
            .call(Some(&session), "Page.navigate", json!({"url": url}))
            .await;
        session
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&mut self, session: &str, expression: &str) -> Value {
        let r = self
            .cdp
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is `true` (an exception, e.g. while the page is still
    /// loading, counts as not yet).
    pub async fn wait_for(&mut self, session: &str, expression: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let guarded = format!(
            "(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        );
        loop {
            if self.eval(session, &guarded).await == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not true within {within:?}: {expression}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&mut self, session: &str) -> Vec<u8> {
        let r = self
            .cdp
            .call(
                Some(session),
                "Page.captureScreenshot",
                json!({"format": "png"}),
            )
            .await;
        base64_decode(r["data"].as_str().unwrap())
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.cdp
                .ws
                .send_text(r#"{"id":999999,"method":"Browser.close"}"#),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Chromium writes `<port>\n<browser path>` to `DevToolsActivePort` once it listens.
async fn devtools_active_port(profile: &Path) -> (u16, String) {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                if let Ok(port) = port.trim().parse() {
                    return (port, path.trim().to_owned());
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not start; its log: {}",
            std::fs::read_to_string(profile.join("chromium.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// JSON-RPC over the DevTools WebSocket; responses are matched by id, events skipped.
pub struct Cdp {
    ws: WebSocket,
    next_id: u64,
}

impl Cdp {
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            self.ws.send_text(&message.to_string()).await?;
            loop {
                let text = self.ws.recv_text().await?;
                let v: Value = serde_json::from_str(&text).map_err(std::io::Error::other)?;
                if v["id"] == json!(id) {
                    return Ok::<_, std::io::Error>(v);
                }
            }
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

/// The client side of RFC 6455, as much as CDP needs: text messages (fragmented or not), pings.
pub struct WebSocket {
    stream: BufStream<TcpStream>,
}

impl WebSocket {
    pub async fn connect(port: u16, path: &str) -> std::io::Result<Self> {
        let mut stream = BufStream::new(TcpStream::connect(("127.0.0.1", port)).await?);
        let key = base64_encode(uuid::Uuid::new_v4().as_bytes());
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        let mut status = String::new();
        stream.read_line(&mut status).await?;
        if !status.starts_with("HTTP/1.1 101") {
            return Err(std::io::Error::other(format!(
                "websocket handshake refused: {status}"
            )));
        }
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await? == 0 || line == "\r\n" {
                break;
            }
        }
        Ok(Self { stream })
    }

    pub async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        self.send_frame(0x1, text.as_bytes()).await
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = vec![0x80 | opcode];
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= usize::from(u16::MAX) {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        // Clients mask every frame (RFC 6455 §5.3).
        let mask: [u8; 4] = uuid::Uuid::new_v4().as_bytes()[..4].try_into().unwrap();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await?;
        self.stream.flush().await
    }

    /// The next text message, answering pings on the way.
    pub async fn recv_text(&mut self) -> std::io::Result<String> {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).await?;
            let fin = head[0] & 0x80 != 0;
            let opcode = head[0] & 0x0f;
            let masked = head[1] & 0x80 != 0;
            let len = match head[1] & 0x7f {
                126 => u64::from(self.stream.read_u16().await?),
                127 => self.stream.read_u64().await?,
                n => u64::from(n),
            };
            let mut mask = [0u8; 4];
            if masked {
                self.stream.read_exact(&mut mask).await?;
            }
            let mut payload = vec![0u8; usize::try_from(len).map_err(std::io::Error::other)?];
            self.stream.read_exact(&mut payload).await?;
            if masked {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            match opcode {
                0x0..=0x2 => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).map_err(std::io::Error::other);
                    }
                }
                0x8 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "websocket closed by the browser",
                    ))
                }
                0x9 => self.send_frame(0xA, &payload).await?,
                _ => {} // pong
            }
        }
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let Some(v) = BASE64.iter().position(|&b| b == c) else {
            continue; // padding, line breaks
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
fn base64_round_trips() {
    for input in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
        assert_eq!(base64_decode(&base64_encode(input)), input);
    }
    assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64_encode(b"fo"), "Zm8=");
}
