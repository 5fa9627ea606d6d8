//! A checkpoint is written out of the tensors' device shards part by part:
//! the writer never holds a whole file (nor a whole sharded tensor) in memory.
//! Its own test binary, because it measures the peak of the whole process's
//! heap.

use dalle_xla::host::heap;
use dalle_xla::checkpoint::{CheckpointManager, CheckpointMeta, RetentionPolicy, Snapshot, WriteOptions};
use dalle_xla::host::BlockedTensor;
use dalle_xla::storage::{self, RetryPolicy};
use dalle_xla::HostTensor;

const MIB: usize = 1 << 20;

#[test]
fn saving_holds_a_few_parts_not_the_file() {
    // One 32 MiB tensor held as 8 row blocks (8 devices' shards) and a small whole one.
    let (rows, cols) = (8 * 1024, 1024);
    // Built in place: no freed temporaries the save could reuse unseen.
    let blocks = (0..8)
        .map(|d| {
            let data: Vec<u8> = (0..rows / 8 * cols).flat_map(|i| ((d * 1_000_000 + i) as f32).to_le_bytes()).collect();
            (vec![(d * rows / 8) as i64, 0], HostTensor { dtype: dalle_xla::DType::F32, shape: vec![rows as i64 / 8, cols as i64], data })
        })
        .collect();
    let big = BlockedTensor::from_blocks(dalle_xla::DType::F32, &[rows as i64, cols as i64], blocks).unwrap();
    let small = BlockedTensor::whole(HostTensor::new::<f32>(&[3], &[1.0, 2.0, 3.0]).unwrap());
    let snapshot = Snapshot {
        step: 7,
        tensors: vec![("embed".into(), big.clone()), ("norm".into(), small)],
        meta: CheckpointMeta { config_yaml: "memory: test\n".into(), ..Default::default() },
    };
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("checkpoint-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = storage::open(dir.to_str().unwrap()).unwrap();
    let options = WriteOptions { part_bytes: MIB, retry: RetryPolicy::fast(2), ..WriteOptions::default() };
    let manager = CheckpointManager::open_with(&run, RetentionPolicy { keep_last: 1, keep_every: None }, options).unwrap();

    // A first small save starts the writer's threads and runtime, which are not what is measured.
    let warm_up = Snapshot { step: 1, tensors: vec![("norm".into(), BlockedTensor::whole(HostTensor::new::<f32>(&[1], &[0.0]).unwrap()))], meta: snapshot.meta.clone() };
    manager.save(warm_up).unwrap();
    manager.wait().unwrap().expect("saved");

    let before = heap::reset_peak();
    manager.save(snapshot).unwrap();
    let report = manager.wait().unwrap().expect("saved");
    let extra = heap::peak() - before;
    assert!(report.bytes > 32 * MIB as u64, "{report:?}");
    // 4 parts of 1 MiB in flight (4.0 MiB measured); a file built in memory
    // would add 32 MiB.
    assert!(extra < 8 * MIB, "saving a 32 MiB file held {:.1} MiB at its peak", extra as f64 / MIB as f64);

    let restored = manager.restore(7).unwrap();
    assert_eq!(restored.tensors[0].1, big.to_whole());
    drop(manager);
    let _ = std::fs::remove_dir_all(&dir);
}
