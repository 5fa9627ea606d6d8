//! Collectives on the 8-device CPU client: all-reduce sums (all replicas and
//! groups), their VJP, and the data-parallel proof: per-device gradients summed
//! inside a replicated program equal the single-device gradient on the whole batch.
mod common;
use common::*;
use dalle_xla::graph::{
    all_gather, all_gather_groups, all_reduce_sum, all_reduce_sum_groups, grad, reduce_scatter_sum, vjp, Graph, Tensor,
};
use dalle_xla::runtime::{Program, ProgramOptions};
use dalle_xla::{DType, HostTensor};
use rand::Rng;

const REPLICAS: usize = 8;

fn replicated(g: &Graph, outs: &[&Tensor]) -> Program {
    Program::compile(&client(), g, outs, &ProgramOptions::replicated(REPLICAS)).unwrap_or_else(|e| panic!("compile failed: {e}"))
}

/// One random [2, 3] input per replica.
fn per_replica_inputs(seed: u64) -> Vec<HostTensor> {
    let mut r = rng(seed);
    (0..REPLICAS).map(|_| random(&mut r, DType::F32, &[2, 3], -1.0, 1.0)).collect()
}

fn elementwise_sum<'a>(xs: impl Iterator<Item = &'a HostTensor>) -> Vec<f64> {
    let mut total = vec![0.0; 6];
    for x in xs {
        for (t, v) in total.iter_mut().zip(x.to_f64_vec()) {
            *t += v;
        }
    }
    total
}

#[test]
fn all_reduce_sum_gives_every_replica_the_total() {
    let g = Graph::new("all_reduce");
    let x = g.param("x", DType::F32, &[2, 3]);
    let y = all_reduce_sum(&x).unwrap();
    let prog = replicated(&g, &[&y]);
    let xs = per_replica_inputs(1);
    let out = prog.run_replicated(&xs.iter().map(|x| vec![x]).collect::<Vec<_>>()).unwrap();
    let want = elementwise_sum(xs.iter());
    for (d, o) in out.iter().enumerate() {
        assert_close(&o[0].to_f64_vec(), &want, 1e-6, &format!("replica {d}"));
    }
}

#[test]
fn all_reduce_sum_within_replica_groups() {
    let groups = vec![vec![0, 2, 4, 6], vec![1, 3, 5, 7]];
    let g = Graph::new("all_reduce_groups");
    let x = g.param("x", DType::F32, &[2, 3]);
    let y = all_reduce_sum_groups(&x, &groups).unwrap();
    let prog = replicated(&g, &[&y]);
    let xs = per_replica_inputs(2);
    let out = prog.run_replicated(&xs.iter().map(|x| vec![x]).collect::<Vec<_>>()).unwrap();
    for (d, o) in out.iter().enumerate() {
        let want = elementwise_sum(xs.iter().skip(d % 2).step_by(2));
        assert_close(&o[0].to_f64_vec(), &want, 1e-6, &format!("replica {d}"));
    }
}

#[test]
fn all_reduce_sum_vjp_sums_the_cotangents() {
    // Total loss sum_r <all_reduce_sum(x_r), c_r>: its gradient in x_r is sum_s c_s.
    let g = Graph::new("all_reduce_vjp");
    let x = g.param("x", DType::F32, &[2, 3]);
    let c = g.param("c", DType::F32, &[2, 3]);
    let y = all_reduce_sum(&x).unwrap();
    let dx = vjp(&[&y], &[&c], &[&x]).unwrap().remove(0);
    let prog = replicated(&g, &[&dx]);
    let xs = per_replica_inputs(3);
    let cs = per_replica_inputs(4);
    let out = prog.run_replicated(&xs.iter().zip(&cs).map(|(x, c)| vec![x, c]).collect::<Vec<_>>()).unwrap();
    let want = elementwise_sum(cs.iter());
    for (d, o) in out.iter().enumerate() {
        assert_close(&o[0].to_f64_vec(), &want, 1e-6, &format!("replica {d}"));
    }
}

#[test]
fn bad_replica_groups_are_rejected() {
    let g = Graph::new("bad_groups");
    let x = g.param("x", DType::F32, &[2]);
    for groups in [vec![], vec![vec![0, 1], vec![2]], vec![vec![0, 1], vec![1, 2]]] {
        let e = all_reduce_sum_groups(&x, &groups).unwrap_err().to_string();
        assert!(e.contains("all_reduce_sum") && e.contains("replica groups"), "{groups:?}: {e}");
    }
}

/// Row-major values of `xs` (each [rows, cols]) concatenated along axis 0.
fn concat_rows(xs: &[&HostTensor]) -> Vec<f64> {
    xs.iter().flat_map(|x| x.to_f64_vec()).collect()
}

#[test]
fn all_gather_concatenates_replicas_in_order() {
    let mut r = rng(6);
    let xs: Vec<HostTensor> = (0..REPLICAS).map(|_| random(&mut r, DType::F32, &[1, 3], -1.0, 1.0)).collect();
    let g = Graph::new("all_gather");
    let x = g.param("x", DType::F32, &[1, 3]);
    let all = all_gather(&x, 0, REPLICAS).unwrap();
    // Groups of four along axis 1: [1, 12] holding the group's rows side by side.
    let halves = all_gather_groups(&x, 1, &[vec![0, 1, 2, 3], vec![4, 5, 6, 7]]).unwrap();
    let prog = replicated(&g, &[&all, &halves]);
    let out = prog.run_replicated(&xs.iter().map(|x| vec![x]).collect::<Vec<_>>()).unwrap();
    let want_all = concat_rows(&xs.iter().collect::<Vec<_>>());
    for (d, o) in out.iter().enumerate() {
        assert_eq!(o[0].shape, vec![REPLICAS as i64, 3]);
        assert_close(&o[0].to_f64_vec(), &want_all, 0.0, &format!("replica {d}: all_gather"));
        let group = if d < 4 { &xs[..4] } else { &xs[4..] };
        assert_close(&o[1].to_f64_vec(), &concat_rows(&group.iter().collect::<Vec<_>>()), 0.0, &format!("replica {d}: groups"));
    }
}

#[test]
fn reduce_scatter_and_all_gather_vjps_are_each_other() {
    let mut r = rng(7);
    let rows = REPLICAS as i64;
    // reduce_scatter: replica d keeps row d of the sum over replicas.
    let xs: Vec<HostTensor> = (0..REPLICAS).map(|_| random(&mut r, DType::F32, &[rows, 2], -1.0, 1.0)).collect();
    let cs: Vec<HostTensor> = (0..REPLICAS).map(|_| random(&mut r, DType::F32, &[1, 2], -1.0, 1.0)).collect();
    let g = Graph::new("reduce_scatter");
    let x = g.param("x", DType::F32, &[rows, 2]);
    let c = g.param("c", DType::F32, &[1, 2]);
    let y = reduce_scatter_sum(&x, 0, REPLICAS).unwrap();
    // Total loss sum_d <y_d, c_d>: its gradient in every x_d stacks all the c_s.
    let dx = vjp(&[&y], &[&c], &[&x]).unwrap().remove(0);
    let prog = replicated(&g, &[&y, &dx]);
    let out = prog.run_replicated(&xs.iter().zip(&cs).map(|(x, c)| vec![x, c]).collect::<Vec<_>>()).unwrap();
    let want_dx = concat_rows(&cs.iter().collect::<Vec<_>>());
    for (d, o) in out.iter().enumerate() {
        let want: Vec<f64> = (0..2).map(|k| xs.iter().map(|x| x.to_f64_vec()[d * 2 + k]).sum()).collect();
        assert_close(&o[0].to_f64_vec(), &want, 1e-6, &format!("replica {d}: reduce_scatter"));
        assert_close(&o[1].to_f64_vec(), &want_dx, 1e-6, &format!("replica {d}: reduce_scatter vjp"));
    }

    // all_gather: total loss sum_s <gather(x)_s, c_s>; the gradient in x_d is
    // block d of sum_s c_s.
    let xs: Vec<HostTensor> = (0..REPLICAS).map(|_| random(&mut r, DType::F32, &[1, 2], -1.0, 1.0)).collect();
    let cs: Vec<HostTensor> = (0..REPLICAS).map(|_| random(&mut r, DType::F32, &[rows, 2], -1.0, 1.0)).collect();
    let g = Graph::new("all_gather_vjp");
    let x = g.param("x", DType::F32, &[1, 2]);
    let c = g.param("c", DType::F32, &[rows, 2]);
    let y = all_gather(&x, 0, REPLICAS).unwrap();
    let dx = vjp(&[&y], &[&c], &[&x]).unwrap().remove(0);
    let prog = replicated(&g, &[&dx]);
    let out = prog.run_replicated(&xs.iter().zip(&cs).map(|(x, c)| vec![x, c]).collect::<Vec<_>>()).unwrap();
    for (d, o) in out.iter().enumerate() {
        let want: Vec<f64> = (0..2).map(|k| cs.iter().map(|c| c.to_f64_vec()[d * 2 + k]).sum()).collect();
        assert_close(&o[0].to_f64_vec(), &want, 1e-6, &format!("replica {d}: all_gather vjp"));
    }
}

#[test]
fn spmd_program_with_sharding_annotations_on_two_partitions() {
    // x [4, 3] split by rows over two partitions; the column sums come back
    // replicated, the gradient of sum(tanh(x) * 2) comes back split like x.
    let split = "{devices=[2,1]<=[2]}";
    let g = Graph::new("spmd");
    let x = g.param("x", DType::F32, &[4, 3]);
    let y = x.tanh().unwrap().with_sharding(split).unwrap();
    let col_sums = y.sum(&[0], false).unwrap().with_sharding("{replicated}").unwrap();
    let dx = grad(&y.scale(2.0).unwrap().sum_all().unwrap(), &[&x]).unwrap().remove(0);
    // On one device the annotation is a no-op.
    if let Err(e) = Program::compile(&client(), &g, &[&col_sums], &ProgramOptions::default()) {
        panic!("one-device compile failed: {e}");
    }
    let opts = ProgramOptions {
        partitions: 2,
        arg_shardings: vec![Some(split.into())],
        result_shardings: vec![Some("{replicated}".into()), Some(split.into())],
        ..Default::default()
    };
    let prog = Program::compile(&client(), &g, &[&col_sums, &dx], &opts).unwrap_or_else(|e| panic!("compile failed: {e}"));
    assert!(prog.module.contains("call_target_name = \"Sharding\""), "the annotation reaches the module");

    let xv = random(&mut rng(8), DType::F32, &[4, 3], -1.0, 1.0);
    let v = xv.to_f64_vec();
    let shards: Vec<HostTensor> = (0..2).map(|p| HostTensor::from_f64(DType::F32, &[2, 3], &v[p * 6..p * 6 + 6]).unwrap()).collect();
    let out = prog.run_replicated(&[vec![&shards[0]], vec![&shards[1]]]).unwrap();
    let want_sums: Vec<f64> = (0..3).map(|k| (0..4).map(|i| v[i * 3 + k].tanh()).sum()).collect();
    let want_dx: Vec<f64> = v.iter().map(|a| 2.0 * (1.0 - a.tanh().powi(2))).collect();
    for (p, o) in out.iter().enumerate() {
        assert_close(&o[0].to_f64_vec(), &want_sums, 1e-5, &format!("partition {p}: column sums"));
        assert_eq!(o[1].shape, vec![2, 3], "partition {p} holds its half of the gradient");
        assert_close(&o[1].to_f64_vec(), &want_dx[p * 6..p * 6 + 6], 1e-5, &format!("partition {p}: gradient"));
    }
}

#[test]
fn bad_sharding_strings_and_gather_axes_are_rejected() {
    let g = Graph::new("bad");
    let x = g.param("x", DType::F32, &[2, 3]);
    let e = x.with_sharding("devices=[2,1]").unwrap_err().to_string();
    assert!(e.contains("sharding") && e.contains("devices=[2,1]"), "{e}");
    let e = all_gather(&x, 2, 4).unwrap_err().to_string();
    assert!(e.contains("all_gather"), "{e}");
    let e = reduce_scatter_sum(&x, 1, 2).unwrap_err().to_string();
    assert!(e.contains("reduce_scatter_sum") && e.contains("2 blocks"), "{e}");
}

const VOCAB: i64 = 7;
const DIM: i64 = 3;
const CLASSES: i64 = 4;
const TOKENS: i64 = 3;
const PER_DEVICE: i64 = 2;

/// Mean-pooled embeddings of `ids [b, TOKENS]`, a linear classifier, mean
/// softmax cross-entropy against `labels [b]`.
fn classifier_loss(emb: &Tensor, w: &Tensor, ids: &Tensor, labels: &Tensor) -> dalle_xla::graph::Result<Tensor> {
    let h = emb.take(ids, 0)?.mean(&[1], false)?;
    let logp = h.matmul(w)?.log_softmax(-1)?;
    logp.mul(&Tensor::one_hot(labels, CLASSES, DType::F32)?)?.sum(&[-1], false)?.mean_all()?.neg()
}

/// Builds the program computing (loss, d emb, d w) on a batch of `batch`; with
/// `replicas > 1` each device's gradient is averaged over devices in the program.
fn gradient_program(batch: i64, replicas: usize) -> Program {
    let g = Graph::new("classifier_grad");
    let emb = g.param("emb", DType::F32, &[VOCAB, DIM]);
    let w = g.param("w", DType::F32, &[DIM, CLASSES]);
    let ids = g.param("ids", DType::I32, &[batch, TOKENS]);
    let labels = g.param("labels", DType::I32, &[batch]);
    let loss = classifier_loss(&emb, &w, &ids, &labels).unwrap();
    let mut outs = vec![loss];
    outs.extend(grad(&outs[0], &[&emb, &w]).unwrap());
    if replicas > 1 {
        let scale = 1.0 / replicas as f64;
        outs = outs.iter().map(|t| all_reduce_sum(t).and_then(|s| s.scale(scale))).collect::<Result<_, _>>().unwrap();
    }
    let refs: Vec<&Tensor> = outs.iter().collect();
    Program::compile(&client(), &g, &refs, &ProgramOptions::replicated(replicas)).unwrap_or_else(|e| panic!("compile failed: {e}"))
}

#[test]
fn data_parallel_gradient_equals_the_whole_batch_gradient() {
    let mut r = rng(5);
    let batch = PER_DEVICE * REPLICAS as i64;
    let emb = random(&mut r, DType::F32, &[VOCAB, DIM], -1.0, 1.0);
    let w = random(&mut r, DType::F32, &[DIM, CLASSES], -1.0, 1.0);
    let ids: Vec<f64> = (0..batch * TOKENS).map(|_| r.gen_range(0..VOCAB) as f64).collect();
    let labels: Vec<f64> = (0..batch).map(|_| r.gen_range(0..CLASSES) as f64).collect();

    let whole = gradient_program(batch, 1);
    let ids_all = HostTensor::from_f64(DType::I32, &[batch, TOKENS], &ids).unwrap();
    let labels_all = HostTensor::from_f64(DType::I32, &[batch], &labels).unwrap();
    let want = whole.run(&[&emb, &w, &ids_all, &labels_all]).unwrap();

    let shards: Vec<(HostTensor, HostTensor)> = (0..REPLICAS)
        .map(|d| {
            let (a, b) = (d * PER_DEVICE as usize, (d + 1) * PER_DEVICE as usize);
            let ids_d = &ids[a * TOKENS as usize..b * TOKENS as usize];
            (
                HostTensor::from_f64(DType::I32, &[PER_DEVICE, TOKENS], ids_d).unwrap(),
                HostTensor::from_f64(DType::I32, &[PER_DEVICE], &labels[a..b]).unwrap(),
            )
        })
        .collect();
    let parallel = gradient_program(PER_DEVICE, REPLICAS);
    let inputs: Vec<Vec<&HostTensor>> = shards.iter().map(|(i, l)| vec![&emb, &w, i, l]).collect();
    let got = parallel.run_replicated(&inputs).unwrap();

    // Guard against a vacuous pass: the shards really differ from each other.
    assert_ne!(shards[0].0.to_f64_vec(), shards[1].0.to_f64_vec());
    for (d, outs) in got.iter().enumerate() {
        for (k, name) in ["loss", "d emb", "d w"].iter().enumerate() {
            assert_close(&outs[k].to_f64_vec(), &want[k].to_f64_vec(), 1e-5, &format!("replica {d}: {name}"));
        }
    }
}
