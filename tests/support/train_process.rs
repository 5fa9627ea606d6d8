//! Runs `dalle train` as a child process and follows its log: wait for a line,
//! signal or kill it, collect the exit status, all with bounded waits.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `dalle train` command on the tiny config with two CPU devices, every
/// update logged, no evaluation; `sets` are further `--set` overrides.
pub fn train_command(run: &str, sets: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dalle"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command.args(["train", "--config", "configs/tiny.yaml", "--run", run, "--cpu-devices", "2"]);
    for set in ["train.devices=2", "train.log_every=1", "train.eval_every=0"].iter().chain(sets) {
        command.args(["--set", set]);
    }
    // Credentials or endpoints from the developer's environment must not leak in.
    for (key, _) in std::env::vars() {
        if key.starts_with("GOOGLE_") || key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command.env("DALLE_LOG", "info").env("NO_COLOR", "1");
    // Tests never write into the user's ~/.cache.
    command.env("DALLE_COMPILE_CACHE", concat!(env!("CARGO_TARGET_TMPDIR"), "/compile-cache"));
    command
}

/// Removes terminal colour codes from a log line.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub struct TrainProcess {
    child: Child,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl TrainProcess {
    pub fn spawn(mut command: Command) -> TrainProcess {
        let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start the dalle binary");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (send, lines) = channel();
        let keep = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                keep.lock().unwrap_or_else(|e| e.into_inner()).push(line.clone());
                // The test may have stopped listening; the log above still has it.
                let _ = send.send(line);
            }
        });
        TrainProcess { child, lines, log, reader: Some(reader) }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a log line containing `text`; `None` when the process closed
    /// its log (exited) first. Panics after `timeout`.
    pub fn wait_for_line(&mut self, text: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Some(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("no log line containing '{text}' within {timeout:?}; log so far:\n{}", self.log_text());
                }
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL (no chance to save anything).
    pub fn kill(&mut self) {
        // Fails only when the process already exited, which the caller sees in the status.
        let _ = self.child.kill();
    }

    /// SIGTERM, as a preempted VM gets.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Waits for the process to end (killing it after `timeout`) and returns
    /// its status and its whole log.
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("dalle train did not finish within {timeout:?}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            // The pipe closes with the process, so this ends.
            let _ = reader.join();
        }
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (status, log)
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }
}

impl Drop for TrainProcess {
    fn drop(&mut self) {
        // A failing test must not leave a training process behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
