//! The file loader's order: seeded shuffling, epochs, host shares, and exact
//! restoring of a saved position; and the synthetic loader behind the same API.

mod data_fixtures;

use dalle_xla::data::{write_dataset, Batch, DataConfig, DataFormat, DataPosition, Dataset, Loader, Synthetic};
use data_fixtures::*;
use std::collections::HashSet;
use std::path::PathBuf;

/// Three shards (parquet and JSONL) holding records 0..102.
fn shards(name: &str) -> (PathBuf, Vec<String>) {
    let dir = scratch(name);
    let files = vec![path_str(&dir.join("a.parquet")), path_str(&dir.join("b.jsonl")), path_str(&dir.join("c.parquet"))];
    write_dataset(&files[0], DataFormat::Auto, &records(0..37)).expect("write");
    write_dataset(&files[1], DataFormat::Auto, &records(37..62)).expect("write");
    write_dataset(&files[2], DataFormat::Auto, &records(62..102)).expect("write");
    (dir, files)
}

fn config(files: &[String], shuffle_buffer: usize) -> DataConfig {
    files_config(&files.iter().map(String::as_str).collect::<Vec<_>>(), shuffle_buffer)
}

fn loader(config: &DataConfig, batch: usize, seed: u64, resume: Option<&DataPosition>) -> Loader {
    Dataset::open(config, spec(batch, seed)).expect("open").train_loader(resume).expect("loader")
}

fn take(loader: &mut Loader, batches: usize) -> Vec<Batch> {
    (0..batches).map(|_| loader.next_batch().expect("batch")).collect()
}

fn take_ids(loader: &mut Loader, batches: usize) -> Vec<usize> {
    take(loader, batches).iter().flat_map(ids).collect()
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort();
    v
}

#[test]
fn each_epoch_yields_every_example_once_in_a_new_order() {
    let (_dir, files) = shards("epochs");
    let mut l = loader(&config(&files, 16), 6, 1, None);
    let epoch0 = take_ids(&mut l, 17);
    let epoch1 = take_ids(&mut l, 17);
    let all: Vec<usize> = (0..102).collect();
    assert_eq!(sorted(epoch0.clone()), all);
    assert_eq!(sorted(epoch1.clone()), all);
    assert_ne!(epoch0, epoch1, "each epoch is reshuffled");
    assert_ne!(epoch0, all, "the order is shuffled");
}

#[test]
fn shuffle_is_deterministic_per_seed() {
    let (_dir, files) = shards("seeds");
    let c = config(&files, 16);
    let a = take(&mut loader(&c, 4, 5, None), 10);
    let b = take(&mut loader(&c, 4, 5, None), 10);
    assert_eq!(a, b, "same seed, same batches (captions and image tokens)");
    let other = take(&mut loader(&c, 4, 6, None), 10);
    assert_ne!(a.iter().flat_map(ids).collect::<Vec<_>>(), other.iter().flat_map(ids).collect::<Vec<_>>());
}

#[test]
fn shuffle_buffer_one_keeps_file_order_within_files() {
    let (_dir, files) = shards("no-shuffle");
    let ids = take_ids(&mut loader(&config(&files, 1), 1, 9, None), 102);
    // Files come in a seeded order, each file's rows in order.
    for start in [0, 37, 62] {
        let at = ids.iter().position(|&i| i == start).expect("present");
        let len = match start {
            0 => 37,
            37 => 25,
            _ => 40,
        };
        assert_eq!(ids[at..at + len], (start..start + len).collect::<Vec<_>>()[..]);
    }
}

/// The examples host `host` of `hosts` gets in epoch 0.
fn host_epoch(files: &[String], host: usize, hosts: usize) -> Vec<usize> {
    let mut c = config(files, 8);
    c.host_index = host;
    c.host_count = hosts;
    let mut l = loader(&c, 1, 3, None);
    let mut out = Vec::new();
    loop {
        let batch = l.next_batch().expect("batch");
        if l.position().epoch > 0 {
            return out;
        }
        out.extend(ids(&batch));
    }
}

#[test]
fn host_shares_are_disjoint_and_cover_the_data() {
    let (_dir, files) = shards("hosts");
    // 2 hosts over 3 files: whole files per host; 4 hosts over 3 files: rows interleaved.
    for hosts in [2, 3, 4] {
        let shares: Vec<Vec<usize>> = (0..hosts).map(|h| host_epoch(&files, h, hosts)).collect();
        let mut seen = HashSet::new();
        for (h, share) in shares.iter().enumerate() {
            assert!(!share.is_empty(), "{hosts} hosts: host {h} got nothing");
            for &i in share {
                assert!(seen.insert(i), "{hosts} hosts: example {i} read twice");
            }
        }
        assert_eq!(seen.len(), 102, "{hosts} hosts cover every example");
    }
}

/// Saves the position after `k` batches (through JSON, as a checkpoint does),
/// restores it in a new loader, and compares the next `m` batches and counts.
fn check_restore(config: &DataConfig, batch: usize, k: usize, m: usize) {
    let mut uninterrupted = loader(config, batch, 11, None);
    take(&mut uninterrupted, k);
    let saved = serde_json::to_string(uninterrupted.position()).expect("serialise");
    let expected = take(&mut uninterrupted, m);

    let position: DataPosition = serde_json::from_str(&saved).expect("deserialise");
    let mut restored = loader(config, batch, 11, Some(&position));
    assert_eq!(restored.position(), &position);
    let got = take(&mut restored, m);
    assert_eq!(got, expected, "after {k} batches of {batch}: the next {m} batches differ");
    assert_eq!(restored.position(), uninterrupted.position(), "after {k} batches of {batch}");
}

#[test]
fn a_restarted_loader_keeps_the_stop_signal() {
    // A trainer's restore restarts its loader at the saved position; a stop
    // requested later must still end the restarted loader's waits.
    let (_dir, files) = shards("restart-stop");
    let c = config(&files, 16);
    let mut current = loader(&c, 5, 11, None);
    take(&mut current, 2);
    let position = current.position().clone();
    let stop = dalle_xla::checkpoint::StopSignal::new();
    current.stop_on(stop.clone());
    current.restart_with(loader(&c, 5, 11, Some(&position)));
    assert_eq!(current.position(), &position);
    take(&mut current, 1);
    stop.request(dalle_xla::checkpoint::StopReason::Terminate);
    match current.next_batch() {
        Err(dalle_xla::Error::Stopped(why)) => assert!(why.contains("waiting for the next batch"), "{why}"),
        other => panic!("expected a stop, got {:?}", other.map(|b| ids(&b))),
    }
}

#[test]
fn restored_position_gives_the_same_next_batches() {
    let (_dir, files) = shards("restore");
    let c = config(&files, 16);
    // 102 examples: 20 batches of 5 end just before the epoch boundary, 21 cross it.
    for (k, m) in [(0, 3), (1, 3), (7, 4), (19, 4), (20, 3), (21, 3), (27, 5)] {
        check_restore(&c, 5, k, m);
    }
}

#[test]
fn restore_is_exact_with_large_buffers_hosts_and_bad_rows() {
    let (dir, mut files) = shards("restore-bad");
    let bad = dir.join("d.jsonl");
    let mut lines: Vec<String> = records(102..120).iter().map(|r| serde_json::json!({"caption": r.caption, "encoding": r.encoding}).to_string()).collect();
    lines[3] = "{broken".into();
    lines[9] = serde_json::json!({"caption": "short", "encoding": [1]}).to_string();
    std::fs::write(&bad, lines.join("\n")).expect("write");
    std::fs::write(dir.join("e.parquet"), b"unreadable").expect("write");
    files.push(path_str(&bad));
    files.push(path_str(&dir.join("e.parquet")));

    // A buffer larger than the data (shuffles across all files) and one smaller than a file.
    for buffer in [500, 7] {
        let c = config(&files, buffer);
        for (k, m) in [(3, 4), (11, 5), (30, 4)] {
            check_restore(&c, 4, k, m);
        }
    }
    let mut c = config(&files, 10);
    c.host_count = 2;
    c.host_index = 1;
    for (k, m) in [(2, 3), (9, 6)] {
        check_restore(&c, 3, k, m);
    }
    let counts = {
        let mut l = loader(&config(&files, 7), 4, 11, None);
        take(&mut l, 40);
        l.counts().clone()
    };
    assert!(counts.unparsable >= 1 && counts.wrong_encoding_length >= 1 && counts.unreadable_files >= 1, "{counts:?}");
}

#[test]
fn a_position_from_another_stream_is_refused() {
    let (_dir, files) = shards("refuse");
    let c = config(&files, 16);
    let mut l = loader(&c, 4, 11, None);
    take(&mut l, 3);
    let position = l.position().clone();
    let open = |c: &DataConfig, seed: u64, p: &DataPosition| Dataset::open(c, spec(4, seed)).expect("open").train_loader(Some(p)).err();
    let err = open(&c, 12, &position).expect("other seed").to_string();
    assert!(err.contains("another data stream") && err.contains("seed=11") && err.contains("seed=12"), "{err}");
    let err = open(&config(&files, 8), 11, &position).expect("other buffer").to_string();
    assert!(err.contains("shuffle_buffer=16") && err.contains("shuffle_buffer=8"), "{err}");
    let err = open(&config(&files[..2], 16), 11, &position).expect("other files").to_string();
    assert!(err.contains("another data stream"), "{err}");
    let past = DataPosition { consumed: 500, ..position };
    let err = open(&c, 11, &past).expect("past the end").to_string();
    assert!(err.contains("past the end of the epoch"), "{err}");
}

#[test]
fn dropping_a_loader_with_a_full_prefetch_queue_returns() {
    let (_dir, files) = shards("drop");
    let mut c = config(&files, 16);
    c.prefetch = 1;
    let mut l = loader(&c, 2, 1, None);
    take(&mut l, 1);
    drop(l);
}

fn synthetic_spec() -> dalle_xla::data::LoaderSpec {
    dalle_xla::data::LoaderSpec { batch_size: 4, seed: 21, text_length: 8, image_length: 6, image_vocab: 50, text_vocab: 30 }
}

#[test]
fn synthetic_loader_serves_the_synthetic_stream_and_restores() {
    let c = DataConfig { num_captions: 10, ..DataConfig::default() };
    let data = Dataset::open(&c, synthetic_spec()).expect("open");
    let reference = Synthetic { seed: 21, text_vocab: 30, image_vocab: 50, text_length: 8, image_length: 6, num_captions: 10 };
    let mut l = data.train_loader(None).expect("loader");
    let first = take(&mut l, 3);
    for (b, batch) in first.iter().enumerate() {
        let examples: Vec<_> = (b * 4..b * 4 + 4).map(|i| reference.example(i as u64)).collect();
        assert_eq!(batch, &Batch::from_examples(&examples).expect("batch"));
    }
    let position = l.position().clone();
    let next = take(&mut l, 2);
    let mut restored = data.train_loader(Some(&position)).expect("restore");
    assert_eq!(take(&mut restored, 2), next);
    // Validation batches come from other captions, the same ones on each call.
    let eval = take(&mut data.eval_loader().expect("eval").expect("synthetic has eval"), 2);
    assert_ne!(eval[0], first[0]);
    assert_eq!(take(&mut data.eval_loader().expect("eval").expect("eval"), 2), eval);

    // Hosts take interleaved examples.
    let host = |i: usize| {
        let c = DataConfig { num_captions: 10, host_index: i, host_count: 2, ..DataConfig::default() };
        take(&mut Dataset::open(&c, synthetic_spec()).expect("open").train_loader(None).expect("loader"), 1).remove(0)
    };
    let both: Vec<_> = (0..8).map(|i| reference.example(i)).collect();
    let evens: Vec<_> = both.iter().step_by(2).cloned().collect();
    let odds: Vec<_> = both.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(host(0), Batch::from_examples(&evens).expect("batch"));
    assert_eq!(host(1), Batch::from_examples(&odds).expect("batch"));
}

#[test]
fn tokenizer_larger_than_the_model_vocabulary_is_refused() {
    let (_dir, files) = shards("vocab");
    let mut s = spec(2, 1);
    s.text_vocab = 300;
    let err = Dataset::open(&config(&files, 4), s).err().expect("too small").to_string();
    assert!(err.contains("data.tokenizer") && err.contains("300"), "{err}");
}
