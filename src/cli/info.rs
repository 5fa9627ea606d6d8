//! `dalle info`: the plugin and its devices; with `--config` the model's
//! parameters and the per-device memory of its compiled training step.

use super::common::DeviceArgs;
use anyhow::Context;
use clap::Args;
use dalle_xla::models::dallebart::{TrainConfig, Trainer};
use dalle_xla::pjrt::CompiledMemoryStats;
use dalle_xla::runtime::memory::{format_bytes, MemoryEstimate};
use dalle_xla::runtime::Program;
use std::path::PathBuf;

#[derive(Args)]
pub struct InfoArgs {
    /// A training config: print its model's parameter count and the per-device
    /// memory of its compiled training step instead of the devices.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Config overrides, `key.path=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// With --config: memory of one device in GiB; prints whether the training step fits.
    #[arg(long, value_name = "GIB", value_parser = parse_gib, allow_hyphen_values = true)]
    pub device_memory_gib: Option<f64>,
    /// With --config: shard the training step over this device mesh, e.g.
    /// `data=8` or `data=4,model=2` (sets train.mesh and train.devices).
    #[arg(long, value_name = "AXES", value_parser = parse_mesh)]
    pub mesh: Option<(usize, usize)>,
    /// With --config: print the parameter count only, without compiling the training step.
    #[arg(long)]
    pub params_only: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

fn parse_gib(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("'{s}' is not a number of GiB"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("must be a positive number of GiB, got {s}"));
    }
    if v > 1e9 {
        return Err(format!("{s} GiB is more memory than any device has"));
    }
    Ok(v)
}

/// `data=8,model=2` -> (8, 2); `model` defaults to 1.
fn parse_mesh(s: &str) -> Result<(usize, usize), String> {
    let (mut data, mut model) = (None, 1);
    for part in s.split(',') {
        let (axis, n) = part.split_once('=').ok_or_else(|| format!("'{part}' is not axis=size (e.g. data=8,model=1)"))?;
        let n: usize = n.trim().parse().ok().filter(|&n| n > 0).ok_or_else(|| format!("axis {axis}: '{n}' is not a positive size"))?;
        match axis.trim() {
            "data" => data = Some(n),
            "model" => model = n,
            other => return Err(format!("unknown mesh axis '{other}': the axes are data and model")),
        }
    }
    Ok((data.ok_or("the mesh needs a data axis, e.g. data=8")?, model))
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.config {
        let mut overrides = args.overrides.clone();
        if let Some((data, model)) = args.mesh {
            overrides.push(format!("train.mesh={{data: {data}, model: {model}}}"));
            overrides.push(format!("train.devices={}", data * model));
        }
        let (config, _) = TrainConfig::load(path, &overrides)?;
        // Counted with checked arithmetic first: building the graph of an absurd config would overflow.
        dalle_xla::models::dallebart::parameter_count(&config.model)?;
        let groups = dalle_xla::models::dallebart::parameter_groups(&config.model).context("building the model graph")?;
        let total: i64 = groups.iter().map(|(_, n)| n).sum();
        println!("model {} (d_model {}, {}+{} layers)", path.display(), config.model.d_model, config.model.encoder_layers, config.model.decoder_layers);
        for (name, n) in &groups {
            println!("  {name:<10} {:>15} parameters ({:.1}M)", group_digits(*n), *n as f64 / 1e6);
        }
        println!("  {:<10} {:>15} parameters ({:.1}M)", "total", group_digits(total), total as f64 / 1e6);
        if args.mesh.is_some() && args.params_only {
            anyhow::bail!("--mesh shards the compiled training step: drop --params-only");
        }
        if !args.params_only {
            training_step_memory(&args, &config)?;
        } else if args.device_memory_gib.is_some() {
            anyhow::bail!("--device-memory-gib needs the compiled training step: drop --params-only");
        }
        return Ok(());
    }
    if args.device_memory_gib.is_some() {
        anyhow::bail!("--device-memory-gib needs --config: it compares a config's training step with the device memory");
    }
    let client = args.device.client()?;
    let plugin = client.plugin();
    let (major, minor) = plugin.api_version();
    println!("plugin   {} (PJRT C API {major}.{minor})", plugin.path().display());
    println!("platform {} {}", client.platform(), client.platform_version());
    for d in client.devices() {
        println!("device   {} ({})", d.id, d.kind);
    }
    Ok(())
}

/// Compiles the training programs of `config` as `dalle train` does and prints what
/// the compiler planned for each device; the config-based estimate where the plugin
/// does not report it.
fn training_step_memory(args: &InfoArgs, config: &TrainConfig) -> anyhow::Result<()> {
    let client = args.device.client()?;
    let (replicas, programs) = Trainer::compile_programs(&client, config, false).context("compiling the training step")?;
    let t = &config.train;
    let split = t.mesh.map_or(replicas, |m| m.data);
    let layout = t.mesh.map_or("replicated".to_string(), |m| format!("sharded over mesh {{data: {}, model: {}}}", m.data, m.model));
    println!(
        "training step on {replicas} {} device(s), {layout}, batch {} ({} per data shard per micro-batch), {}, {} layers:",
        client.platform(),
        t.batch_size,
        t.batch_size / split / t.gradient_accumulation.max(1),
        t.dtype,
        if config.model.scan_layers { "scanned" } else { "unrolled" }
    );
    let list: Vec<&Program> = [&programs.train, &programs.accumulate, &programs.apply].into_iter().flatten().collect();
    let mut stats: Vec<(&Program, CompiledMemoryStats)> = Vec::new();
    let mut unavailable = None;
    for p in &list {
        match p.exe.compiled_memory_stats() {
            Ok(s) => stats.push((p, s)),
            Err(e) => {
                unavailable = Some(e);
                break;
            }
        }
    }
    let needed = match unavailable {
        None => {
            for (p, s) in &stats {
                print_stats(p, s);
            }
            // Programs run one after another, each beside the buffers the
            // others keep on the device: with gradient accumulation the
            // optimizer state waits there while `accumulate` runs. The program
            // taking the most arguments (`apply`) takes all of them.
            let kept = stats.iter().map(|(_, s)| s.arguments).max().unwrap_or(0);
            let peak = stats.iter().map(|(_, s)| s.device_total() + kept - s.arguments).max().unwrap_or(0).max(0);
            if stats.len() > 1 {
                println!("  peak per device    {:>12} {:>11}  the largest program plus the buffers the others keep", group_digits(peak), format_bytes(peak as u64));
            }
            peak as u64
        }
        Some(e) => {
            println!("  the PJRT plugin does not report compiled memory ({e});");
            let estimate = dalle_xla::models::dallebart::training_memory(config, replicas)?;
            print_estimate(&estimate);
            estimate.per_device_total()
        }
    };
    if let Some(gib) = args.device_memory_gib {
        let budget = (gib * (1u64 << 30) as f64) as u64;
        let verdict = if needed <= budget { "fits" } else { "does not fit" };
        println!("{verdict} in {gib} GiB per device (needs {})", format_bytes(needed));
    }
    Ok(())
}

fn print_stats(p: &Program, s: &CompiledMemoryStats) {
    let row = |name: &str, bytes: i64, note: &str| println!("    {name:<15} {:>12} {:>11}{note}", group_digits(bytes), format_bytes(bytes.max(0) as u64));
    println!("  {} ({}), per device:", p.name, p.compile_note());
    row("arguments", s.arguments, "  parameters, optimizer state, batch");
    row("outputs", s.outputs, "");
    row("aliased", s.aliased, "  outputs written into donated arguments");
    row("temporaries", s.temporaries, "");
    row("generated code", s.generated_code, "");
    row("total", s.device_total(), "  arguments + outputs - aliased + temporaries + code");
    let host = s.host_arguments + s.host_outputs + s.host_temporaries + s.host_generated_code;
    if host > 0 {
        row("host total", host - s.host_aliased, "  host-memory buffers of the program");
    }
}

fn print_estimate(e: &MemoryEstimate) {
    println!("  config-based estimate, per device:");
    for (name, bytes) in &e.per_device {
        println!("    {name:<22} {:>11}", format_bytes(*bytes));
    }
    println!("    {:<22} {:>11}", "total", format_bytes(e.per_device_total()));
}

/// `437806080` -> `437,806,080`.
fn group_digits(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    if n < 0 {
        out.push('-');
    }
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
