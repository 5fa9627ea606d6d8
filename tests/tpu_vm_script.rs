//! `scripts/tpu-vm.sh --dry-run`: the gcloud commands it would run, and its
//! refusals of bad arguments.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/tpu-vm.sh")
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tpu-vm-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the script with a clean TPU_* environment and TMPDIR in `dir`.
fn tpu_vm(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).args(args).env("TMPDIR", dir);
    for var in ["TPU_ZONE", "TPU_PROJECT", "TPU_NAME", "TPU_TYPE", "TPU_VERSION"] {
        cmd.env_remove(var);
    }
    cmd.output().expect("run bash")
}

fn ok_lines(out: &Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status.code());
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn config(dir: &Path) -> String {
    let path = dir.join("mini.yaml");
    std::fs::write(&path, "train: {steps: 10}\n").unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn create_asks_for_a_spot_v3_8_tpu_vm() {
    let dir = scratch("create");
    let lines = ok_lines(&tpu_vm(&dir, &["--dry-run", "create", "--zone", "europe-west4-a", "--project", "my-proj"]));
    assert_eq!(
        lines,
        ["gcloud compute tpus tpu-vm create dalle-tpu --zone europe-west4-a --project my-proj --accelerator-type v3-8 --version tpu-ubuntu2204-base --spot"]
    );
    let lines = ok_lines(&tpu_vm(&dir, &["create", "--dry-run", "--zone", "us-central1-f", "--name", "big", "--accelerator", "v4-8", "--on-demand"]));
    assert_eq!(lines, ["gcloud compute tpus tpu-vm create big --zone us-central1-f --accelerator-type v4-8 --version tpu-ubuntu2204-base"]);
}

#[test]
fn run_ships_the_code_builds_installs_libtpu_and_starts_training() {
    let dir = scratch("run");
    let cfg = config(&dir);
    let lines = ok_lines(&tpu_vm(
        &dir,
        &["--dry-run", "run", "--zone", "z1", "--config", &cfg, "--run", "gs://bucket/runs/mini-1", "--", "--set", "optimizer.lr=3e-4"],
    ));
    let launcher = dir.join("dalle-train-dalle-tpu.sh");
    let text = std::fs::read_to_string(&launcher).unwrap();
    assert!(
        text.contains("DALLE_PLATFORM=tpu target/release/dalle train --config ~/mini.yaml --run gs://bucket/runs/mini-1 --compile-cache-in-run --set optimizer.lr=3e-4\n"),
        "{text}"
    );
    assert!(text.contains("echo $? > ~/dalle-exit-code"), "{text}");
    let commands: Vec<&String> = lines.iter().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(commands.len(), 3, "{lines:#?}");
    assert!(commands[0].starts_with("git -C ") && commands[0].contains(" archive --format=tar.gz"), "{}", commands[0]);
    assert_eq!(
        *commands[1],
        format!("gcloud compute tpus tpu-vm scp {} {cfg} {} dalle-tpu: --zone z1", dir.join("dalle-xla-src.tar.gz").display(), launcher.display())
    );
    let ssh = commands[2];
    assert!(ssh.starts_with("gcloud compute tpus tpu-vm ssh dalle-tpu --zone z1 --command '"), "{ssh}");
    for step in ["cargo build --release --bin dalle", "scripts/install-plugin tpu", "nohup bash ~/dalle-train-dalle-tpu.sh"] {
        assert!(ssh.contains(step), "missing '{step}' in {ssh}");
    }
    let build = ssh.find("cargo build").unwrap();
    assert!(build < ssh.find("install-plugin").unwrap() && ssh.find("install-plugin").unwrap() < ssh.find("nohup").unwrap());
}

#[test]
fn babysit_recreates_a_preempted_vm_and_restarts_the_same_command() {
    let dir = scratch("babysit");
    let cfg = config(&dir);
    let out = tpu_vm(&dir, &["--dry-run", "babysit", "--zone", "z1", "--config", &cfg, "--run", "gs://b/r", "--interval", "30"]);
    let lines = ok_lines(&out);
    let gcloud: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("gcloud "))
        .map(|l| l.split_whitespace().take(5).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        gcloud,
        [
            "gcloud compute tpus tpu-vm describe",
            "gcloud compute tpus tpu-vm delete",
            "gcloud compute tpus tpu-vm create",
            "gcloud compute tpus tpu-vm scp",
            "gcloud compute tpus tpu-vm ssh",
        ]
    );
    assert!(lines.iter().any(|l| l.contains("describe dalle-tpu --zone z1 '--format=value(state)'")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.ends_with("--spot")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PREEMPTED; recreating"));
}

#[test]
fn delete_and_status() {
    let dir = scratch("delete");
    let lines = ok_lines(&tpu_vm(&dir, &["--dry-run", "delete", "--zone", "z1", "--name", "vm-2"]));
    assert_eq!(lines, ["gcloud compute tpus tpu-vm delete vm-2 --zone z1 --quiet"]);
    let mut cmd = Command::new("bash");
    let out = cmd.arg(script()).args(["--dry-run", "status"]).env("TPU_ZONE", "from-env").env("TMPDIR", &dir).output().unwrap();
    let lines = ok_lines(&out);
    assert!(lines[0].starts_with("gcloud compute tpus tpu-vm describe dalle-tpu --zone from-env"), "{lines:#?}");
}

#[test]
fn bad_arguments_are_refused_with_a_clear_message() {
    let dir = scratch("bad");
    let cfg = config(&dir);
    let missing = dir.join("missing.yaml");
    let missing = missing.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--dry-run"], "no command given"),
        (vec!["--dry-run", "launch", "--zone", "z"], "unknown command 'launch'"),
        (vec!["--dry-run", "create"], "--zone is required"),
        (vec!["--dry-run", "create", "--zone"], "option --zone needs a value"),
        (vec!["--dry-run", "create", "--zone", "z", "--colour", "red"], "unknown option '--colour'"),
        (vec!["--dry-run", "create", "--zone", "z", "--name", "Bad_Name"], "--name 'Bad_Name' is not a valid TPU name"),
        (vec!["--dry-run", "run", "--zone", "z", "--run", "gs://b/r"], "run needs --config"),
        (vec!["--dry-run", "run", "--zone", "z", "--config", missing, "--run", "gs://b/r"], "is not a file"),
        (vec!["--dry-run", "run", "--zone", "z", "--config", &cfg], "run needs --run"),
        (vec!["--dry-run", "babysit", "--zone", "z", "--config", &cfg, "--run", "checkpoints/x"], "--run must be a gs://BUCKET/PATH"),
        (vec!["--dry-run", "babysit", "--zone", "z", "--config", &cfg, "--run", "gs://b/r", "--interval", "0"], "--interval must be"),
        (vec!["--dry-run", "create", "delete", "--zone", "z"], "unexpected argument 'delete'"),
    ];
    for (args, message) in cases {
        let out = tpu_vm(&dir, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: expected '{message}' in: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed commands: {}", String::from_utf8_lossy(&out.stdout));
    }
}
