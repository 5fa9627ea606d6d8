//! Shampoo's preconditioner refresh runs only on its due steps: XLA's
//! loop-invariant code motion must not hoist the inverse roots out of the
//! loop that runs once or not at all, or every step pays for them (a
//! 256x1024 parameter's update took 620 ms on every step instead of 12 ms
//! between refreshes). Read from XLA's own optimized program, so its own test
//! binary: the dump flag must be set before the process's first client.
mod common;
use common::*;
use dalle_xla::graph::{Graph, Tensor};
use dalle_xla::optim::{Optimizer, Shampoo, StepScalars};
use dalle_xla::runtime::{Program, ProgramOptions};
use dalle_xla::DType;

/// The `ENTRY` computation of the optimized HLO dumped into `dir`.
fn optimized_entry(dir: &std::path::Path) -> String {
    let file = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("after_optimizations.txt"))
        .unwrap_or_else(|| panic!("no optimized HLO dumped in {}", dir.display()));
    let text = std::fs::read_to_string(file).unwrap();
    let entry = text.find("\nENTRY ").expect("an ENTRY computation");
    text[entry..].split("\n}\n").next().unwrap().to_string()
}

#[test]
fn the_inverse_roots_stay_inside_the_refresh_loop() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("shampoo-refresh-hlo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Before any client exists in this process (XLA reads its flags once).
    std::env::set_var("XLA_FLAGS", format!("--xla_dump_to={} --xla_dump_hlo_as_text", dir.display()));
    // Compiled here, not fetched from the compile cache, so that XLA dumps it.
    std::env::set_var("DALLE_COMPILE_CACHE", "off");
    let opt = Shampoo::default();
    let g = Graph::new("shampoo_refresh_schedule");
    let p = g.param("p", DType::F32, &[64, 32]);
    let grad = g.param("g", DType::F32, &[64, 32]);
    let state: Vec<Tensor> = opt.state(p.ty()).iter().map(|s| g.param(&format!("p/{}", s.suffix), s.ty.dtype, &s.ty.shape)).collect();
    let (lr, count) = (g.param("lr", DType::F32, &[]), g.param("count", DType::F32, &[]));
    let updated = opt.update_all(&[p], &[grad], &[state], &StepScalars { lr: &lr, count: &count, partitions: 1 }, &[]).unwrap();
    let outs: Vec<&Tensor> = updated.iter().flat_map(|(p, s)| std::iter::once(p).chain(s)).collect();
    Program::compile(&client(), &g, &outs, &ProgramOptions::default()).unwrap();
    let entry = optimized_entry(&dir);
    // The refresh loop itself is the one loop the step runs; the power and
    // Newton iterations of the inverse roots are nested inside it.
    let loops = entry.matches(" while(").count();
    assert_eq!(loops, 1, "the step's top level runs {loops} loops:\n{entry}");
    let _ = std::fs::remove_dir_all(&dir);
}
