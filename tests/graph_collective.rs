//! Collectives on the 8-device CPU client: all-reduce sums (all replicas and
//! groups), their VJP, and the data-parallel proof: per-device gradients summed
//! inside a replicated program equal the single-device gradient on the whole batch.
mod common;
use common::*;
use dalle_xla::graph::{all_reduce_sum, all_reduce_sum_groups, grad, vjp, Graph, Tensor};
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
