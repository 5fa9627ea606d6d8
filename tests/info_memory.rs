//! `dalle info --config`: the per-device memory of the compiled training step,
//! read from the plugin (`PJRT_Executable_GetCompiledMemoryStats`).
use dalle_xla::graph::Graph;
use dalle_xla::pjrt::{open_client, ClientOptions};
use dalle_xla::runtime::{Program, ProgramOptions};
use dalle_xla::DType;
use std::path::PathBuf;
use std::process::Command;

fn cache_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("info-memory-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `dalle info ARGS` on one CPU device; (exit code, stdout + stderr).
fn info(args: &[&str], cache: &str) -> (Option<i32>, String) {
    info_on(1, args, cache)
}

/// `dalle info ARGS` on `devices` CPU devices.
fn info_on(devices: usize, args: &[&str], cache: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dalle"))
        .args(["info", "--cpu-devices", &devices.to_string()])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DALLE_COMPILE_CACHE", cache)
        .env("NO_COLOR", "1")
        .output()
        .expect("run dalle");
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The byte count of row `name` of the train_step block (`    total   1,234 ...`).
fn row(out: &str, name: &str) -> i64 {
    program_row(out, "train_step", name)
}

/// The byte count of the first row `name` after the block of `program`.
fn program_row(out: &str, program: &str, name: &str) -> i64 {
    let line = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(program))
        .find(|l| l.trim_start().starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no '{name}' row for {program} in:\n{out}"));
    line.trim_start()[name.len()..].split_whitespace().next().unwrap().replace(',', "").parse().unwrap()
}

fn tiny(sets: &[&str], extra: &[&str], cache: &str) -> String {
    let mut args = vec!["--config", "configs/tiny.yaml", "--set", "train.devices=1"];
    for s in sets {
        args.extend(["--set", s]);
    }
    args.extend(extra);
    let (code, out) = info(&args, cache);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("does not report compiled memory"), "the CPU plugin reports compiled memory:\n{out}");
    out
}

#[test]
fn compiled_memory_of_a_small_program_counts_its_arguments() {
    let client = open_client("cpu", None, &ClientOptions::cpu_devices(1)).unwrap();
    let g = Graph::new("mem");
    let x = g.param("x", DType::F32, &[64, 32]);
    let w = g.param("w", DType::F32, &[32, 16]);
    let y = x.matmul(&w).unwrap().tanh().unwrap();
    let p = Program::compile(&client, &g, &[&y], &ProgramOptions::default()).unwrap();
    let s = p.exe.compiled_memory_stats().unwrap();
    assert!(s.arguments >= (64 * 32 + 32 * 16) * 4, "{s:?}");
    assert!(s.outputs >= 64 * 16 * 4, "{s:?}");
    assert!(s.device_total() >= s.arguments + s.outputs - s.aliased, "{s:?}");
}

#[test]
fn info_prints_the_training_step_memory_and_it_grows_with_batch_and_width() {
    let off = "off";
    let base = tiny(&[], &[], off);
    let total = row(&base, "total");
    let (args, temps) = (row(&base, "arguments"), row(&base, "temporaries"));
    assert!(total > 0 && args > 0, "{base}");
    // Parameters and AdamW moments (12 bytes per parameter) are all arguments.
    let params: i64 = base.lines().find(|l| l.trim_start().starts_with("total")).unwrap().split_whitespace().nth(1).unwrap().replace(',', "").parse().unwrap();
    assert!(args >= params * 12, "arguments {args} < 12 x {params} parameters:\n{base}");

    let batch = tiny(&["train.batch_size=16"], &[], off);
    assert!(row(&batch, "temporaries") > temps, "twice the batch needs more temporaries:\n{base}\n{batch}");
    assert!(row(&batch, "total") > total);

    let wide = tiny(&["model.d_model=64"], &[], off);
    assert!(row(&wide, "arguments") > args, "a wider model has larger arguments:\n{base}\n{wide}");
    assert!(row(&wide, "total") > total);
}

#[test]
fn device_memory_decides_fits_and_bad_values_are_refused() {
    let cache = cache_dir("fits");
    let cache = cache.to_str().unwrap();
    let out = tiny(&[], &["--device-memory-gib", "16"], cache);
    assert!(out.contains("fits in 16 GiB per device"), "{out}");
    assert!(out.contains("train_step (compiled in"), "{out}");
    // From the compile cache the figures are the same.
    let again = tiny(&[], &["--device-memory-gib", "0.0001"], cache);
    assert!(again.contains("train_step (loaded from the compile cache"), "{again}");
    assert!(again.contains("does not fit in 0.0001 GiB per device"), "{again}");
    assert_eq!(row(&again, "total"), row(&out, "total"));

    for bad in ["0", "-2", "abc", "nan", "inf"] {
        let joined = format!("--device-memory-gib={bad}");
        for args in [vec!["--config", "configs/tiny.yaml", joined.as_str()], vec!["--config", "configs/tiny.yaml", "--device-memory-gib", bad]] {
            let (code, out) = info(&args, "off");
            assert_eq!(code, Some(2), "{args:?}: {out}");
            assert!(out.contains("--device-memory-gib") && !out.contains("training step"), "{args:?}: the error names the flag: {out}");
        }
    }
    let (code, out) = info(&["--device-memory-gib", "8"], "off");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("--device-memory-gib needs --config"), "{out}");
}

/// Shampoo sharded over 8 devices: what its step needs beyond Adafactor's
/// (gathered statistics, preconditioners and gradient blocks, the inverse
/// roots' iteration) must stay below what its own state adds. Gathering every
/// parameter's matrices at once, or iterating on copies of all statistics,
/// had made mega's temporaries three times its sharded state (29.9 GiB
/// against 10.0 GiB per device).
#[test]
fn sharded_shampoo_needs_less_scratch_than_its_own_state() {
    let step = |optimizer: &str| {
        let kind = format!("optimizer.kind={optimizer}");
        let mut args = vec!["--config", "configs/tiny.yaml", "--mesh", "data=8", "--set", &kind];
        for s in ["optimizer.block_size=128", "optimizer.refresh_chunk_mib=0.25", "model.d_model=256", "model.encoder_ffn_dim=512", "model.decoder_ffn_dim=512", "train.batch_size=8"] {
            args.extend(["--set", s]);
        }
        let (code, out) = info_on(8, &args, "off");
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("sharded over mesh"), "{out}");
        (row(&out, "arguments"), row(&out, "temporaries"), out)
    };
    let (adafactor_args, adafactor_temps, adafactor) = step("adafactor");
    let (shampoo_args, shampoo_temps, shampoo) = step("shampoo");
    let state = shampoo_args - adafactor_args;
    assert!(state > 4 * adafactor_args, "Shampoo's statistics and preconditioners dominate its arguments:\n{adafactor}\n{shampoo}");
    let scratch = shampoo_temps - adafactor_temps;
    assert!(scratch < state, "Shampoo adds {scratch} bytes of temporaries per device for {state} bytes of its own state:\n{adafactor}\n{shampoo}");
}

/// With gradient accumulation the step is two programs, and the optimizer
/// state stays on the device while `accumulate` runs: the figure that decides
/// whether a config fits counts it beside `accumulate`'s own memory.
#[test]
fn accumulation_counts_the_state_kept_beside_the_accumulate_program() {
    let out = tiny(&["train.gradient_accumulation=2", "train.batch_size=16", "optimizer.kind=adamw"], &["--device-memory-gib", "16"], "off");
    let block = |program: &str, name: &str| program_row(&out, program, name);
    let (accumulate, apply) = (block("accumulate", "total"), block("apply", "total"));
    let kept_beside = block("apply", "arguments") - block("accumulate", "arguments");
    // AdamW's two moments are twice the parameters: far more than the batch.
    assert!(kept_beside > 0, "apply takes the optimizer state that accumulate does not:\n{out}");
    let peak = block("accumulate", "peak per device");
    assert!(peak >= accumulate + kept_beside && peak >= apply, "peak {peak} < accumulate {accumulate} + state kept beside it {kept_beside}, or < apply {apply}:\n{out}");
    // The verdict is the peak's: `(needs 1.2 MiB)`.
    let words: Vec<&str> = out.lines().find(|l| l.trim_start().starts_with("peak per device")).unwrap().split_whitespace().collect();
    assert!(out.contains(&format!("fits in 16 GiB per device (needs {} {})", words[4], words[5])), "{out}");
}
