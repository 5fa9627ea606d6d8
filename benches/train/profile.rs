//! `--profile`: where a DalleBart training step's time goes, on one device.
//!
//! Two breakdowns, both measured rather than estimated:
//! - by phase: the forward pass (the eval program), forward + backward (the
//!   gradient-accumulation program), clipping + optimizer update (the apply
//!   program), the fused step program alone on device buffers, and the
//!   trainer's whole step (which adds the batch from the data loader, its
//!   upload and the loss read-back, and runs on real token ids where the
//!   programs above run on zeros, which may change the embedding's gather
//!   and scatter);
//! - by part of the model: the fused step of the config against the same
//!   config with one encoder layer fewer, one decoder layer fewer, a 64-wide
//!   image vocabulary (the head and the loss) and a 64-wide text vocabulary
//!   (the encoder embedding and its gradient). Each difference is what that
//!   part costs forward, backward and in the optimizer together, as far as
//!   XLA compiles the smaller program the same way (it need not).
//!
//! Programs run back to back with their outputs fed in again, as in
//! training, so donated buffers are reused the same way.

use dalle_xla::graph::TensorType;
use dalle_xla::host::HostTensor;
use dalle_xla::models::dallebart::{StepPrograms, TrainConfig, Trainer};
use dalle_xla::pjrt::{Buffer, Client};
use dalle_xla::runtime::Program;
use std::time::Instant;

/// Seconds per call of `run`, after `warmup` calls, over `calls` calls.
fn time_calls(warmup: usize, calls: usize, mut run: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    for _ in 0..warmup {
        run()?;
    }
    let t = Instant::now();
    for _ in 0..calls {
        run()?;
    }
    Ok(t.elapsed().as_secs_f64() / calls as f64)
}

/// Zeros for every argument, except an update count of 1 and a small learning
/// rate, so the optimizer's bias corrections stay finite.
fn upload(program: &Program, types: &[TensorType]) -> anyhow::Result<Vec<Buffer>> {
    let hosts: Vec<HostTensor> = types
        .iter()
        .zip(&program.param_names)
        .map(|(t, name)| match name.as_str() {
            "count" => HostTensor::scalar(1.0f32),
            "lr" => HostTensor::scalar(1e-3f32),
            _ => HostTensor::zeros(t.dtype, &t.shape),
        })
        .collect();
    Ok(program.upload(0, &hosts.iter().collect::<Vec<_>>())?)
}

/// Seconds per call of `program`, whose first `carried` outputs become the
/// arguments `carried_from..` of the next call (the donated, updated state).
fn time_program(program: &Program, carried_from: usize, carried: usize, calls: usize) -> anyhow::Result<f64> {
    let mut args = upload(program, &program.inputs)?;
    time_calls(2, calls, || {
        let mut out = program.execute(&[args.iter().collect()])?.remove(0);
        out.truncate(carried);
        args.splice(carried_from..carried_from + carried, out);
        Ok(())
    })
}

/// The trainer's own programs for `config` with `accumulation` micro-batches
/// of the config's whole batch each (so every program sees the same batch).
fn programs(client: &Client, config: &TrainConfig, accumulation: usize) -> anyhow::Result<StepPrograms> {
    let mut c = config.clone();
    c.train.batch_size *= accumulation;
    c.train.gradient_accumulation = accumulation;
    c.train.eval_every = 1;
    Ok(Trainer::compile_programs(client, &c, true)?.1)
}

/// The fused step program alone, in seconds per step.
fn fused_step(client: &Client, config: &TrainConfig, calls: usize) -> anyhow::Result<f64> {
    let p = programs(client, config, 1)?;
    let train = p.train.as_ref().expect("compiled without accumulation");
    let kept = p.layout.names().len();
    time_program(train, 3, kept, calls)
}

fn row(what: &str, secs: f64, whole: f64) {
    println!("    {what:<44} {:>9.1} ms  {:>5.1}%", secs * 1e3, 100.0 * secs / whole);
}

/// Prints both breakdowns for `config` (one device, its whole batch).
pub fn profile(client: &Client, name: &str, config: &TrainConfig, calls: usize) -> anyhow::Result<()> {
    let batch = config.train.batch_size;
    println!("profile of {name}: batch {batch}, {} {}, {calls} timed call(s) of each program", config.optimizer.kind, config.train.dtype);

    let split = programs(client, config, 2)?;
    let (eval, accumulate, apply) = (split.eval.as_ref(), split.accumulate.as_ref(), split.apply.as_ref());
    let (eval, accumulate, apply) = (eval.expect("eval"), accumulate.expect("accumulate"), apply.expect("apply"));
    let n_params = split.layout.params.len();
    let n_weights = split.layout.names().len();
    let forward = time_program(eval, 0, 0, calls)?;
    // accumulate: (batch, params, grad_acc, loss_acc) -> (grad_acc, loss_acc)
    let forward_backward = time_program(accumulate, 3 + n_params, n_params + 1, calls)?;
    // apply: (params, state, grad_acc, loss_acc, lr, count) -> (params, state, acc, loss_acc, loss, norm)
    let update = time_program(apply, 0, n_weights + n_params + 1, calls)?;
    drop(split);

    let fused = fused_step(client, config, calls)?;
    let mut trainer = Trainer::new(client, config.clone())?;
    let whole = time_calls(2, calls, || {
        trainer.train_step()?;
        Ok(())
    })?;
    drop(trainer);

    println!("  by phase (separate programs; the fused step lets XLA overlap and fuse across them):");
    row("forward (loss)", forward, whole);
    row("backward (forward + backward - forward)", forward_backward - forward, whole);
    row("clip + optimizer update", update, whole);
    row("fused step program on device buffers", fused, whole);
    // The programs above run on zeros; the trainer on real token ids.
    row("rest: loader, upload, read-back, real ids", whole - fused, whole);
    row("trainer step (all of the above)", whole, whole);

    println!("  by part: the fused step without that part, and what removing it saved (forward + backward + update;");
    println!("  the savings need not add up: XLA fuses and schedules each program as a whole):");
    let m = &config.model;
    let without = |what: &str, change: &dyn Fn(&mut TrainConfig)| -> anyhow::Result<()> {
        let mut c = config.clone();
        change(&mut c);
        let t = fused_step(client, &c, calls)?;
        println!("    {what:<44} {:>9.1} ms  saves {:>7.1} ms ({:.1}%)", t * 1e3, (fused - t) * 1e3, 100.0 * (fused - t) / fused);
        Ok(())
    };
    without(&format!("one encoder layer fewer (of {})", m.encoder_layers), &|c| c.model.encoder_layers -= 1)?;
    without(&format!("one decoder layer fewer (of {})", m.decoder_layers), &|c| c.model.decoder_layers -= 1)?;
    without(&format!("64 image codes instead of {}", m.image_vocab_size), &|c| c.model.image_vocab_size = 64)?;
    without(&format!("64 text tokens instead of {}", m.encoder_vocab_size), &|c| c.model.encoder_vocab_size = 64)?;
    Ok(())
}
