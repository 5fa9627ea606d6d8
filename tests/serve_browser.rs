//! The demo page in a real browser: headless Chromium (Debian's `chromium`),
//! driven through the DevTools protocol over `--remote-debugging-pipe`,
//! opens the page on a tiny model, submits a prompt, sees the progress bar
//! advance and previews appear while the worker is held between chunks,
//! then the grid; saves a screenshot under `target/serve-browser/`.
//! Skips, saying so, when /usr/bin/chromium is absent (`scripts/test` installs it).
mod serve_support;
use serde_json::{json, Value};
use serve_support::*;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

const CHROMIUM: &str = "/usr/bin/chromium";

/// A Chromium child and its DevTools pipe (commands to its fd 3, replies from its fd 4).
struct Browser {
    child: Child,
    to_browser: std::fs::File,
    from_browser: mpsc::Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    _profile: tempdir::Dir,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // Close-on-exec: only the copies made for the child at fds 3 and 4 reach it.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2");
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    fn launch() -> Browser {
        let profile = temp_dir("chromium-profile");
        let (cmd_read, cmd_write) = pipe();
        let (reply_read, reply_write) = pipe();
        let (child_in, child_out) = (cmd_read.as_raw_fd(), reply_write.as_raw_fd());
        let mut command = Command::new(CHROMIUM);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                "--window-size=900,700",
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(child_in, 3) < 0 || libc::dup2(child_out, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start chromium");
        drop((cmd_read, reply_write));
        let (tx, from_browser) = mpsc::channel();
        let reader = std::fs::File::from(reply_read);
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            loop {
                let mut message = Vec::new();
                match r.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        message.pop();
                        if let Ok(v) = serde_json::from_slice(&message) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Browser { child, to_browser: std::fs::File::from(cmd_write), from_browser, next_id: 0, session: None, _profile: tempdir::Dir(profile) }
    }

    /// Sends a command (to the attached page once there is one) and waits for its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params).unwrap_or_else(|error| panic!("{method}: {error}"))
    }

    /// [`Browser::call`], with the protocol's error as `Err`.
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes).unwrap();
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let reply = self.from_browser.recv_timeout(left).unwrap_or_else(|_| panic!("no answer from chromium to {method} within {PATIENCE:?}"));
            if reply["id"] == id {
                return match reply.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(reply["result"].clone()),
                };
            }
        }
    }

    /// Evaluates JavaScript in the page (promises awaited) and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression).unwrap_or_else(|error| panic!("Runtime.evaluate: {error}"))
    }

    /// [`Browser::eval`], with the protocol's error as `Err`.
    fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let r = self.try_call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}))?;
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        Ok(r["result"]["value"].clone())
    }

    /// Waits in the page (polling every 20 ms, up to PATIENCE) until `condition` is true.
    /// A navigation (the new tab leaving about:blank) destroys the context
    /// the poll runs in; the poll then starts again in the new page.
    fn wait_for(&mut self, condition: &str) {
        let ms = PATIENCE.as_millis();
        let expression = format!(
            "new Promise((done) => {{ const t0 = Date.now(); const poll = () => {{ if ({condition}) done(true); else if (Date.now() - t0 > {ms}) done(false); else setTimeout(poll, 20); }}; poll(); }})"
        );
        let deadline = std::time::Instant::now() + PATIENCE;
        let ok = loop {
            match self.try_eval(&expression) {
                Ok(value) => break value,
                Err(e) if e.to_string().contains("Execution context was destroyed") && std::time::Instant::now() < deadline => continue,
                Err(e) => panic!("Runtime.evaluate: {e}"),
            }
        };
        assert_eq!(ok, json!(true), "the page never satisfied: {condition}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_page_generates_in_headless_chromium_with_progress_previews_and_a_grid() {
    if !Path::new(CHROMIUM).exists() {
        println!("SKIPPED: {CHROMIUM} is absent; install Debian's chromium (scripts/test does) to run the browser test");
        return;
    }
    let dir = temp_dir("browser");
    let (gate, observer) = Gate::closed();
    let options = dalle_xla::serve::ServeOptions { default_images: 4, chunk_observer: Some(observer), ..test_options() };
    let server = TestServer::start(tiny_text_to_image(&dir), options);

    let mut browser = Browser::launch();
    let target = browser.call("Target.createTarget", json!({"url": format!("http://{}/", server.addr)}));
    let attached = browser.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true}));
    browser.session = Some(attached["sessionId"].as_str().unwrap().to_string());
    browser.call("Runtime.enable", json!({}));
    browser.wait_for("location.href.startsWith('http') && document.readyState === 'complete' && (document.getElementById('model') || {}).textContent === 'random tiny DalleBart'");
    assert_eq!(browser.eval("document.getElementById('n').value"), json!("4"), "the page reads the server's default number of images");

    browser.eval("document.getElementById('prompt').value = 'a red circle at the top'; document.getElementById('seed').value = '11'; document.getElementById('go').click(); true");
    // The worker is held after its first chunk; let one more through so a progress event (with previews) reaches the page.
    gate.wait_arrivals(1);
    gate.allow(1);
    gate.wait_arrivals(2);
    browser.wait_for("window.dalleProgress.some((p) => p > 0 && p < 1) && document.querySelectorAll('#grid figure.preview img').length === 4");
    let mid = browser.eval("[document.getElementById('progress').value, window.dalleState, document.getElementById('go').disabled]");
    let fraction = mid[0].as_f64().unwrap();
    assert!(fraction > 0.0 && fraction < 1.0, "progress bar mid-way: {mid}");
    assert_eq!(mid[1], "running");
    assert_eq!(mid[2], true, "the button is disabled while generating");

    gate.open();
    browser.wait_for("window.dalleState === 'done'");
    let progress: Vec<f64> = serde_json::from_value(browser.eval("window.dalleProgress")).unwrap();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "progress only advances: {progress:?}");
    assert_eq!(progress.last(), Some(&1.0));
    assert!(progress.iter().filter(|&&p| p > 0.0 && p < 1.0).count() >= 1, "{progress:?}");
    let grid = browser.eval(
        "Array.from(document.querySelectorAll('#grid figure:not(.preview)')).map((f) => [f.querySelector('img').naturalWidth, f.querySelector('a').download, f.querySelector('a').href.startsWith('data:image/png;base64,')])",
    );
    let grid = grid.as_array().unwrap();
    assert_eq!(grid.len(), 4, "{grid:?}");
    for (i, fig) in grid.iter().enumerate() {
        assert_eq!(fig[0], 16, "image {i} decoded at 16x16");
        assert_eq!(fig[1], format!("dalle-seed11-{i}.png"), "a download link per image");
        assert_eq!(fig[2], true);
    }
    let status = browser.eval("document.getElementById('status').textContent");
    assert!(status.as_str().unwrap().contains("4 image(s)"), "{status}");

    // Bigger images for the screenshot, then save it as an artefact (and for the README when asked).
    browser.eval("document.querySelectorAll('#grid img').forEach((i) => i.style.minHeight = '180px'); true");
    let shot = browser.call("Page.captureScreenshot", json!({"format": "png"}));
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
    let img = image::load_from_memory(&png).unwrap();
    assert!(img.width() >= 800 && img.height() >= 600, "{}x{}", img.width(), img.height());
    let artefacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-browser");
    std::fs::create_dir_all(&artefacts).unwrap();
    std::fs::write(artefacts.join("serve.png"), &png).unwrap();
    println!("screenshot: {}", artefacts.join("serve.png").display());
    if std::env::var_os("DALLE_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/images/serve.png");
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::write(&docs, &png).unwrap();
        println!("README screenshot updated: {}", docs.display());
    }
    drop(browser);
    let _ = std::fs::remove_dir_all(&dir);
}
