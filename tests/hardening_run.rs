//! Faults around training runs, through the `dalle` binary: one writer per
//! run directory (a second is refused naming the first, a stale lease is
//! taken over), storage without credentials or with an unreachable endpoint
//! fails fast and says what to set, a stop during a storage wait or while
//! the data store stalls exits 75 (with a checkpoint in the latter),
//! oversized models are refused before anything is allocated, and the
//! smaller messages (empty config, `--plugin` naming a device, too many CPU
//! devices, `train.steps=0`, retention, log formatting).

mod support;

use dalle_xla::storage::{LeaseHolder, LEASE_FILE};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::gcs_fake::{Fault, GcsFake, FAKE_SERVICE_ACCOUNT_KEY};
use support::http::{Handler, Reply, Response, Server};
use support::train_process::{train_command, TrainProcess};

const PROCESS_TIMEOUT: Duration = Duration::from_secs(120);

fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("hardening-{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn text(log: &[String]) -> String {
    log.join("\n")
}

/// `dalle ARGS` to the end, with credentials from the environment removed; (status code, stdout + stderr).
fn dalle(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dalle"));
    command.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (key, _) in std::env::vars() {
        if key.starts_with("GOOGLE_") || key.starts_with("AWS_") || key.starts_with("GCE_") {
            command.env_remove(key);
        }
    }
    command.env("NO_COLOR", "1").env("DALLE_COMPILE_CACHE", concat!(env!("CARGO_TARGET_TMPDIR"), "/compile-cache")).envs(env.iter().copied());
    let out = command.output().expect("run dalle");
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn write_lease(run: &std::path::Path, host: &str, pid: u32, heartbeat_age_secs: f64) {
    std::fs::create_dir_all(run).unwrap();
    let holder = LeaseHolder {
        host: host.into(),
        pid,
        process_start: None,
        purpose: "dalle train".into(),
        started_unix: unix_now() - 3600.0,
        heartbeat_unix: unix_now() - heartbeat_age_secs,
        token: "someone-else".into(),
    };
    std::fs::write(run.join(LEASE_FILE), serde_json::to_vec(&holder).unwrap()).unwrap();
}

// ---------------------------------------------------------------- 1: one writer per run

#[test]
fn a_second_training_on_the_same_run_is_refused_naming_the_first() {
    let run = scratch("two-writers");
    let url = run.to_str().unwrap();
    let mut first = TrainProcess::spawn(train_command(url, &["train.steps=100000", "optimizer.learning_rate=0.001", "checkpoint.every_steps=5"]));
    first.wait_for_line("step=3", PROCESS_TIMEOUT).expect("the first training runs");

    let started = Instant::now();
    let (status, log) = TrainProcess::spawn(train_command(url, &["train.steps=300", "optimizer.learning_rate=0.01"])).finish(PROCESS_TIMEOUT);
    assert_eq!(status.code(), Some(1), "{}", text(&log));
    let log = text(&log);
    assert!(log.contains("in use by another writer") && log.contains(&format!("pid {}", first.pid())), "{log}");
    assert!(!log.contains("compiled"), "refused before compiling:\n{log}");
    assert!(started.elapsed() < Duration::from_secs(30));

    first.terminate();
    let (status, log) = first.finish(PROCESS_TIMEOUT);
    assert_eq!(status.code(), Some(75), "{}", text(&log));
    let config = std::fs::read_to_string(run.join("config.yaml")).unwrap();
    assert!(config.contains("learning_rate: 0.001"), "the run keeps the first writer's config:\n{config}");
    assert!(!run.join(LEASE_FILE).exists(), "the lease is released at the end");
}

#[test]
fn a_live_remote_lease_is_refused_and_a_stale_or_dead_one_is_taken_over() {
    let host = dalle_xla::storage::lease::hostname();

    // Another machine's lease with a fresh heartbeat: refused, naming it.
    let run = scratch("remote-live");
    write_lease(&run, "tpu-vm-7", 4242, 5.0);
    let (status, log) = TrainProcess::spawn(train_command(run.to_str().unwrap(), &["train.steps=2"])).finish(PROCESS_TIMEOUT);
    let log = text(&log);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("pid 4242 on host tpu-vm-7"), "{log}");

    // A preempted VM's lease (no heartbeat for an hour): taken over, the run resumes.
    write_lease(&run, "tpu-vm-7", 4242, 3600.0);
    let (status, log) = TrainProcess::spawn(train_command(run.to_str().unwrap(), &["train.steps=2"])).finish(PROCESS_TIMEOUT);
    let log = text(&log);
    assert!(status.success(), "{log}");
    assert!(log.contains("taking over the writer lease") && log.contains("no heartbeat"), "{log}");

    // A lease of this host whose process is gone (SIGKILL): taken over at once.
    let run = scratch("local-dead");
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    write_lease(&run, &host, dead_pid, 1.0);
    let (status, log) = TrainProcess::spawn(train_command(run.to_str().unwrap(), &["train.steps=2"])).finish(PROCESS_TIMEOUT);
    let log = text(&log);
    assert!(status.success(), "{log}");
    assert!(log.contains("no longer runs on this host"), "{log}");
}

#[test]
fn the_lease_works_on_the_gcs_fake() {
    let fake = GcsFake::start();
    let url = "gs://leases/run";
    let command = |sets: &[&str]| {
        let mut c = train_command(url, sets);
        c.env("GOOGLE_BASE_URL", fake.base_url()).env("GOOGLE_SERVICE_ACCOUNT_KEY", FAKE_SERVICE_ACCOUNT_KEY);
        c
    };
    let mut first = TrainProcess::spawn(command(&["train.steps=100000"]));
    first.wait_for_line("step=2", PROCESS_TIMEOUT).expect("the first training runs");
    let (status, log) = TrainProcess::spawn(command(&["train.steps=10"])).finish(PROCESS_TIMEOUT);
    assert_eq!(status.code(), Some(1), "{}", text(&log));
    assert!(text(&log).contains(&format!("pid {}", first.pid())), "{}", text(&log));
    first.terminate();
    let (status, _) = first.finish(PROCESS_TIMEOUT);
    assert_eq!(status.code(), Some(75));
    assert!(fake.object("leases", &format!("run/{LEASE_FILE}")).is_none(), "released at the end");
}

// ---------------------------------------------------------------- 4: storage faults

/// A server that answers every request with 403, standing in for a metadata
/// server that gives no token.
fn forbidding_server() -> Server {
    let handler: Handler = Arc::new(|_| Reply::Send(Response::new(403).body("Forbidden")));
    Server::start(handler)
}

#[test]
fn gcs_without_credentials_fails_fast_and_says_what_to_set() {
    let metadata = forbidding_server();
    let host = format!("127.0.0.1:{}", metadata.port);
    let started = Instant::now();
    let (code, out) = dalle(
        &["train", "--config", "configs/tiny.yaml", "--run", "gs://no-credentials/run", "--cpu-devices", "2", "--set", "train.devices=2"],
        &[("GCE_METADATA_HOST", &host), ("GCE_METADATA_IP", &host)],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("GOOGLE_APPLICATION_CREDENTIALS") && out.contains("credentials"), "{out}");
    assert!(!out.contains("compiled"), "fails before compiling:\n{out}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

#[test]
fn an_unreachable_s3_endpoint_is_reported_as_such() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let (code, out) = dalle(
        &["train", "--config", "configs/tiny.yaml", "--run", "s3://bucket/run", "--cpu-devices", "2", "--set", "train.devices=2"],
        &[("AWS_ENDPOINT", &endpoint), ("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", "us-east-1")],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("cannot reach the storage endpoint {endpoint}")), "{out}");
    assert!(!out.contains("builder error"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

#[test]
fn sigterm_during_a_storage_wait_exits_75_at_once() {
    let fake = GcsFake::start();
    // Every request hangs far longer than the test waits.
    fake.inject(1000, Fault::Delay(Duration::from_secs(60)), None);
    sigterm_exits_75_at_once(train_command("gs://slow/run", &["storage.retry.timeout_secs=300"]), &fake, "checking access to gs://slow/run");
}

/// Runs `command` against `fake` until it logs a line containing `line`,
/// then sends SIGTERM: the process must exit 75 within 10 s. Returns its log.
fn sigterm_exits_75_at_once(mut command: Command, fake: &GcsFake, line: &str) -> Vec<String> {
    command.env("GOOGLE_BASE_URL", fake.base_url()).env("GOOGLE_SERVICE_ACCOUNT_KEY", FAKE_SERVICE_ACCOUNT_KEY);
    let mut process = TrainProcess::spawn(command);
    process.wait_for_line(line, PROCESS_TIMEOUT).unwrap_or_else(|| panic!("no line '{line}' before the process ended"));
    let signalled = Instant::now();
    process.terminate();
    let (status, log) = process.finish(PROCESS_TIMEOUT);
    assert_eq!(status.code(), Some(75), "{}", text(&log));
    assert!(signalled.elapsed() < Duration::from_secs(10), "took {:?} after SIGTERM:\n{}", signalled.elapsed(), text(&log));
    log
}

#[test]
fn sigterm_while_the_data_store_stalls_commits_a_checkpoint_and_exits_75() {
    // Training examples on the store, whose every read of them hangs far
    // longer than the test waits: the first step waits for data. SIGTERM must
    // end that wait, commit the state (nothing was updated) and exit 75 at
    // once, without waiting for the stuck read.
    let dir = scratch("stalled-data");
    std::fs::create_dir_all(&dir).unwrap();
    let captions = ["a red circle", "two blue squares", "a green triangle", "a yellow star"];
    let rows: String = captions
        .iter()
        .enumerate()
        .map(|(i, c)| serde_json::json!({"caption": c, "encoding": (0..16).map(|k| (i * 16 + k) % 64).collect::<Vec<_>>()}).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("captions.txt"), captions.join("\n")).unwrap();
    let tokenizer = dir.join("tokenizer.json");
    let (code, out) = dalle(&["tokenizer", "--captions", dir.join("captions.txt").to_str().unwrap(), "--vocab-size", "300", "--out", tokenizer.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "{out}");
    let fake = GcsFake::start();
    fake.put_object("data", "shapes/train.jsonl", rows.into_bytes());
    fake.inject_for_key(1000, Fault::Delay(Duration::from_secs(60)), Some("GET"), "train.jsonl");
    let run = dir.join("run");
    let tokenizer_set = format!("data.tokenizer={}", tokenizer.display());
    let sets = ["data.kind=files", "data.train_files=[gs://data/shapes/train.jsonl]", &tokenizer_set, "data.eval_fraction=0", "model.encoder_vocab_size=320", "train.steps=5"];
    let log = sigterm_exits_75_at_once(train_command(run.to_str().unwrap(), &sets), &fake, "DalleBart on");
    assert!(fake.arrivals().iter().any(|(method, key)| method == "GET" && key.contains("train.jsonl")), "the loader never asked for the data");
    let committed = std::fs::read_dir(run.join("checkpoints")).map(|d| d.flatten().any(|e| e.path().join("COMMIT").exists())).unwrap_or(false);
    assert!(committed, "no checkpoint committed:\n{}", text(&log));
}

// ---------------------------------------------------------------- 5: oversized models

#[test]
fn oversized_models_are_refused_before_allocating() {
    for set in ["model.image_length=100000000", "model.d_model=100000", "model.d_model=4000000000", "model.d_model=10000000"] {
        let run = scratch("oversized");
        let started = Instant::now();
        let (code, out) = dalle(
            &["train", "--config", "configs/tiny.yaml", "--run", run.to_str().unwrap(), "--cpu-devices", "2", "--set", "train.devices=2", "--set", set],
            &[],
        );
        assert_eq!(code, Some(1), "{set}: {out}");
        assert!(out.contains("needs at least") || out.contains("too large"), "{set}: {out}");
        assert!(!out.contains("compiled"), "{set}: refused before compiling:\n{out}");
        assert!(started.elapsed() < Duration::from_secs(30), "{set}: took {:?}", started.elapsed());
    }
    let (code, out) = dalle(&["info", "--config", "configs/tiny.yaml", "--set", "model.d_model=4000000000"], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("too large") && !out.contains("total"), "{out}");
}

#[test]
fn an_oversized_vqgan_is_refused_before_allocating() {
    let run = scratch("vqgan-oversized");
    let images = run.join("images");
    dalle_xla::data::shapes::generate(8, 32, 1, &images).unwrap();
    let data = format!("data.images={}", images.display());
    let (code, out) = dalle(
        &[
            "train-vqgan", "--config", "configs/vqgan/tiny.yaml", "--run", run.join("run").to_str().unwrap(), "--cpu-devices", "1",
            "--set", &data, "--set", "model.resolution=65536",
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("needs at least") && out.contains("activations"), "{out}");
}

// ---------------------------------------------------------------- 6: smaller items

#[test]
fn small_messages_name_the_problem() {
    let dir = scratch("messages");
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.yaml");
    std::fs::write(&empty, "").unwrap();
    let (code, out) = dalle(&["train", "--config", empty.to_str().unwrap(), "--run", dir.join("r").to_str().unwrap()], &[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("is empty") && out.contains("`model:`"), "{out}");

    let (code, out) = dalle(&["info", "--plugin", "/dev/null"], &[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("/dev/null") && out.contains("not a regular file") && !out.contains("does not exist"), "{out}");

    let started = Instant::now();
    let (code, out) = dalle(&["info", "--cpu-devices", "10000"], &[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("--cpu-devices must be between 1 and"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn train_steps_0_claims_only_what_it_wrote() {
    let run = scratch("steps0");
    let (code, out) = dalle(
        &["train", "--config", "configs/tiny.yaml", "--run", run.to_str().unwrap(), "--cpu-devices", "2", "--set", "train.devices=2", "--set", "train.steps=0"],
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    let done = out.lines().find(|l| l.starts_with("done:")).unwrap_or_else(|| panic!("no summary:\n{out}"));
    for file in ["metrics.jsonl", "loss.png", "config.yaml"] {
        assert_eq!(done.contains(file), run.join(file).exists(), "{file}: '{done}'");
    }
}

#[test]
fn retention_removes_old_step_directories_and_logs_plain_numbers() {
    let run = scratch("retention");
    let sets = ["train.steps=6", "checkpoint.every_steps=1", "checkpoint.keep_last=2", "train.eval_every=3", "train.eval_batches=1"];
    // Later --set values win over the harness's `train.eval_every=0`.
    let (status, log) = TrainProcess::spawn(train_command(run.to_str().unwrap(), &sets)).finish(PROCESS_TIMEOUT);
    let log = text(&log);
    assert!(status.success(), "{log}");
    let mut dirs: Vec<String> =
        std::fs::read_dir(run.join("checkpoints")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    dirs.sort();
    assert_eq!(dirs, ["step_5", "step_6"], "only the kept steps remain");
    assert!(log.contains("eval_loss="), "{log}");
    assert!(!log.contains("Some("), "{log}");
}
