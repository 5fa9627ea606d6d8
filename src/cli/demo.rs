//! `dalle demo`: the smallest end-to-end check that a plugin works.

use super::common::DeviceArgs;
use clap::Args;
use dalle_xla::graph::{grad, Graph};
use dalle_xla::runtime::{Program, ProgramOptions};
use dalle_xla::{DType, HostTensor};

#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let client = args.device.client()?;
    println!("platform {} ({}), {} device(s)", client.platform(), client.platform_version(), client.device_count());
    // loss = mean(tanh(x @ w)^2) and its gradient with respect to w.
    let g = Graph::new("demo");
    let x = g.param("x", DType::F32, &[4, 3]);
    let w = g.param("w", DType::F32, &[3, 2]);
    let loss = x.matmul(&w)?.tanh()?.square()?.mean_all()?;
    let dw = grad(&loss, &[&w])?.remove(0);
    let program = Program::compile(&client, &g, &[&loss, &dw], &ProgramOptions::default())?;
    let xs: Vec<f32> = (0..12).map(|i| i as f32 / 12.0 - 0.5).collect();
    let ws: Vec<f32> = (0..6).map(|i| 0.3 - i as f32 * 0.1).collect();
    let out = program.run(&[&HostTensor::new(&[4, 3], &xs)?, &HostTensor::new(&[3, 2], &ws)?])?;
    println!("{}", program.compile_note());
    println!("loss = {:.6}", out[0].to_f64_vec()[0]);
    println!("d loss / d w = {:?}", out[1].to_f64_vec().iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>());
    Ok(())
}
