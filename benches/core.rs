//! Core runtime figures: host overhead of one execute, compile time of a
//! transformer layer's forward + backward, and f32 matmul throughput; with
//! JAX's figures for the same measurements when JAX is installed.
//!
//!   cargo bench --bench core
//!   cargo bench --bench core --profile dev   # reuses the test build's dependencies
//!
//! `DALLE_BENCH_PLATFORM` picks the plugin (default `cpu`); `DALLE_JAX_PYTHON`
//! names the Python with JAX (default `python3`).

use dalle_xla::graph::{grad, Graph, Tensor};
use dalle_xla::pjrt::{open_client, Client, ClientOptions};
use dalle_xla::runtime::{Program, ProgramOptions};
use dalle_xla::{DType, HostTensor};
use std::process::Command;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn filled(shape: &[i64], seed: u32) -> HostTensor {
    let n: i64 = shape.iter().product();
    // A cheap deterministic pattern in [-1, 1]; the values do not matter for timing.
    let v: Vec<f32> = (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 8388608.0) - 1.0).collect();
    HostTensor::new(shape, &v).expect("shape matches values")
}

/// Median wall time of one execute of `x + 1` on a 1-element buffer already on device.
fn trivial_call(client: &Client) -> dalle_xla::Result<Duration> {
    let g = Graph::new("trivial");
    let x = g.param("x", DType::F32, &[1]);
    let y = x.add_scalar(1.0)?;
    let prog = Program::compile(client, &g, &[&y], &ProgramOptions::default())?;
    let buf = prog.upload(0, &[&HostTensor::new(&[1], &[1.0f32])?])?;
    let args = vec![buf.iter().collect::<Vec<_>>()];
    for _ in 0..200 {
        prog.execute(&args)?;
    }
    let mut times = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let t = Instant::now();
        let out = prog.execute(&args)?;
        times.push(t.elapsed());
        drop(out);
    }
    Ok(median(times))
}

/// Seconds per `n x n x n` f32 matmul (median) on buffers already on device.
fn matmul(client: &Client, n: i64) -> dalle_xla::Result<Duration> {
    let g = Graph::new("matmul");
    let a = g.param("a", DType::F32, &[n, n]);
    let b = g.param("b", DType::F32, &[n, n]);
    let c = a.matmul(&b)?;
    let prog = Program::compile(client, &g, &[&c], &ProgramOptions::default())?;
    let bufs = prog.upload(0, &[&filled(&[n, n], 1), &filled(&[n, n], 2)])?;
    let args = vec![bufs.iter().collect::<Vec<_>>()];
    prog.execute(&args)?;
    let mut times = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        prog.execute(&args)?;
        times.push(t.elapsed());
    }
    Ok(median(times))
}

/// Pre-LN transformer layer (self-attention + GELU MLP), as in DalleBart's encoder.
fn transformer_layer(x: &Tensor, p: &[Tensor], heads: i64) -> dalle_xla::graph::Result<Tensor> {
    let (b, s, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let hd = d / heads;
    let norm = |t: &Tensor| -> dalle_xla::graph::Result<Tensor> {
        let c = t.sub(&t.mean(&[-1], true)?)?;
        c.mul(&c.square()?.mean(&[-1], true)?.add_scalar(1e-5)?.rsqrt()?)
    };
    let split = |t: Tensor| t.reshape(&[b, s, heads, hd])?.transpose(&[0, 2, 1, 3]);
    let h = norm(x)?;
    let (q, k, v) = (split(h.matmul(&p[0])?)?, split(h.matmul(&p[1])?)?, split(h.matmul(&p[2])?)?);
    let scores = q.matmul(&k.swap_axes(-1, -2)?)?.scale(1.0 / (hd as f64).sqrt())?;
    let attn = scores.softmax(-1)?.matmul(&v)?.transpose(&[0, 2, 1, 3])?.reshape(&[b, s, d])?;
    let x = x.add(&attn.matmul(&p[3])?)?;
    let h = norm(&x)?.matmul(&p[4])?;
    // tanh approximation of GELU.
    let inner = h.add(&h.mul(&h.square()?)?.scale(0.044715)?)?.scale((2.0 / std::f64::consts::PI).sqrt())?;
    let gelu = h.mul(&inner.tanh()?.add_scalar(1.0)?)?.scale(0.5)?;
    x.add(&gelu.matmul(&p[5])?)
}

/// Compile time of forward + backward of one layer, and the median step time.
fn transformer_compile(client: &Client) -> dalle_xla::Result<(Duration, Duration)> {
    let (b, s, d, heads) = (8, 64, 256, 8);
    let g = Graph::new("transformer_layer");
    let x = g.param("x", DType::F32, &[b, s, d]);
    let shapes = [[d, d], [d, d], [d, d], [d, d], [d, 4 * d], [4 * d, d]];
    let params: Vec<Tensor> = shapes.iter().enumerate().map(|(i, sh)| g.param(&format!("w{i}"), DType::F32, sh)).collect();
    let y = transformer_layer(&x, &params, heads)?;
    let loss = y.square()?.mean_all()?;
    let grads = grad(&loss, &params.iter().collect::<Vec<_>>())?;
    let mut outs = vec![&loss];
    outs.extend(grads.iter());
    let t = Instant::now();
    let prog = Program::compile(client, &g, &outs, &ProgramOptions::default())?;
    let compile = t.elapsed();
    let mut inputs = vec![filled(&[b, s, d], 0)];
    inputs.extend(shapes.iter().enumerate().map(|(i, sh)| filled(sh, i as u32 + 1)));
    let bufs = prog.upload(0, &inputs.iter().collect::<Vec<_>>())?;
    let args = vec![bufs.iter().collect::<Vec<_>>()];
    prog.execute(&args)?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        prog.execute(&args)?;
        times.push(t.elapsed());
    }
    Ok((compile, median(times)))
}

/// JAX's figures from `tools/jax_core_bench.py`, when JAX is importable.
fn jax_figures() -> Option<serde_json::Value> {
    let python = std::env::var("DALLE_JAX_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/jax_core_bench.py");
    match Command::new(&python).arg(script).output() {
        Ok(out) if out.status.success() => match serde_json::from_slice(&out.stdout) {
            Ok(v) => Some(v),
            Err(e) => {
                println!("JAX comparison: could not parse the output of {script}: {e}");
                None
            }
        },
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            println!("JAX comparison skipped: {python} {script} failed: {}", err.lines().last().unwrap_or("(no output)"));
            None
        }
        Err(e) => {
            println!("JAX comparison skipped: cannot run {python}: {e}");
            None
        }
    }
}

fn main() -> dalle_xla::Result<()> {
    let platform = std::env::var("DALLE_BENCH_PLATFORM").unwrap_or_else(|_| "cpu".into());
    let client = open_client(&platform, None, &ClientOptions::default())?;
    println!("platform {} ({}), {} device(s)", client.platform(), client.platform_version(), client.device_count());

    let call = trivial_call(&client)?;
    let n = 1024;
    let mm = matmul(&client, n)?;
    let gflops = 2.0 * (n as f64).powi(3) / mm.as_secs_f64() / 1e9;
    let (compile, step) = transformer_compile(&client)?;

    let call_us = call.as_secs_f64() * 1e6;
    println!("execute overhead (trivial program, device buffers): {call_us:.1} us (median of 5000)");
    println!("matmul {n}x{n}x{n} f32: {:.2} ms, {gflops:.1} GFLOP/s (median of 15)", mm.as_secs_f64() * 1e3);
    println!(
        "transformer layer fwd+bwd (d_model 256, 8 heads, seq 64, batch 8): compile {:.2} s, step {:.1} ms",
        compile.as_secs_f64(),
        step.as_secs_f64() * 1e3
    );

    if let Some(jax) = jax_figures() {
        let version = jax["jax_version"].as_str().unwrap_or("?");
        if let (Some(j_call), Some(j_gflops)) = (jax["trivial_call_us"].as_f64(), jax["matmul_gflops"].as_f64()) {
            println!("JAX {version}: execute overhead {j_call:.1} us, matmul {j_gflops:.1} GFLOP/s");
            println!("  ours / JAX: call overhead {:.2}x (lower is better), matmul throughput {:.2}x", call_us / j_call, gflops / j_gflops);
        }
        if let Some(j_compile) = jax["transformer_compile_s"].as_f64() {
            println!("  transformer layer compile: JAX {j_compile:.2} s, ours / JAX {:.2}x", compile.as_secs_f64() / j_compile);
        }
    }
    Ok(())
}
