//! Reading datasets: parquet and JSONL round trips, local directories,
//! patterns and `memory://` URLs, bad rows counted or fatal.

mod data_fixtures;

use dalle_xla::data::{normalize_caption, resolve, write_dataset, DataCounts, DataFormat, Dataset, Loader, TextEncoder};
use data_fixtures::*;

fn open(config: &dalle_xla::data::DataConfig, batch: usize) -> Loader {
    Dataset::open(config, spec(batch, 7)).expect("open dataset").train_loader(None).expect("loader")
}

/// In file order (shuffle buffer 1), every row comes back with its caption
/// tokenised exactly as the encoder does it on its own.
fn check_round_trip(file: &str) {
    write_dataset(file, DataFormat::Auto, &records(0..30)).expect("write");
    let mut loader = open(&files_config(&[file], 1), 10);
    let encoder = TextEncoder::load(&path_str(&tokenizer()), TEXT_LENGTH).expect("tokenizer");
    for b in 0..3 {
        let batch = loader.next_batch().expect("batch");
        assert_eq!(batch.input_ids.shape, vec![10, TEXT_LENGTH as i64]);
        assert_eq!(batch.attention_mask.shape, vec![10, TEXT_LENGTH as i64]);
        assert_eq!(batch.labels.shape, vec![10, IMAGE_LENGTH as i64]);
        let expected_ids: Vec<usize> = (b * 10..b * 10 + 10).collect();
        assert_eq!(ids(&batch), expected_ids);
        let labels: Vec<i32> = batch.labels.to_vec().expect("labels");
        let input_ids: Vec<i32> = batch.input_ids.to_vec().expect("ids");
        let mask: Vec<i32> = batch.attention_mask.to_vec().expect("mask");
        for (k, i) in expected_ids.into_iter().enumerate() {
            let want: Vec<i32> = record(i).encoding.iter().map(|&t| t as i32).collect();
            assert_eq!(&labels[k * IMAGE_LENGTH..(k + 1) * IMAGE_LENGTH], want.as_slice());
            let text = encoder.encode(&caption(i)).expect("encode");
            assert_eq!(&input_ids[k * TEXT_LENGTH..(k + 1) * TEXT_LENGTH], text.input_ids.as_slice());
            assert_eq!(&mask[k * TEXT_LENGTH..(k + 1) * TEXT_LENGTH], text.attention_mask.as_slice());
        }
    }
    assert_eq!(loader.counts(), &DataCounts { examples: 30, ..DataCounts::default() });
    // The end of the epoch is found when the next row is asked for.
    assert_eq!((loader.position().epoch, loader.position().consumed), (0, 30));
    assert_eq!(ids(&loader.next_batch().expect("next epoch")), (0..10).collect::<Vec<_>>());
    assert_eq!((loader.position().epoch, loader.position().consumed), (1, 10));
}

#[test]
fn parquet_round_trip() {
    let dir = scratch("parquet-round-trip");
    check_round_trip(&path_str(&dir.join("train.parquet")));
}

#[test]
fn jsonl_round_trip() {
    let dir = scratch("jsonl-round-trip");
    check_round_trip(&path_str(&dir.join("train.jsonl")));
}

#[test]
fn parquet_rows_decode_to_what_was_written() {
    let dir = scratch("parquet-decode");
    let path = path_str(&dir.join("a.parquet"));
    write_dataset(&path, DataFormat::Auto, &records(5..12)).expect("write");
    let files = resolve(std::slice::from_ref(&path), DataFormat::Auto, "data.train_files").expect("resolve");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].count_rows().expect("count"), 7);
    let rows = files[0].load().expect("load");
    for (row, i) in rows.into_iter().zip(5..) {
        let row = row.expect("good row");
        assert_eq!(row.caption.as_deref(), Some(caption(i).as_str()));
        assert_eq!(row.encoding, Some(record(i).encoding));
    }
}

#[test]
fn shards_from_memory_store_by_prefix_and_pattern() {
    write_dataset("memory://data-files-test/shards/part-0.parquet", DataFormat::Auto, &records(0..10)).expect("write");
    write_dataset("memory://data-files-test/shards/part-1.jsonl", DataFormat::Auto, &records(10..25)).expect("write");
    write_dataset("memory://data-files-test/other/part-2.parquet", DataFormat::Auto, &records(25..30)).expect("write");

    let all = resolve(&["memory://data-files-test/shards".into()], DataFormat::Auto, "k").expect("prefix");
    let names: Vec<&str> = all.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["memory://data-files-test/shards/part-0.parquet", "memory://data-files-test/shards/part-1.jsonl"]);
    assert_eq!((all[0].format, all[1].format), (DataFormat::Parquet, DataFormat::Jsonl));
    let parquet_only = resolve(&["memory://data-files-test/shards/*.parquet".into()], DataFormat::Auto, "k").expect("pattern");
    assert_eq!(parquet_only.len(), 1);

    let mut loader = open(&files_config(&["memory://data-files-test/shards"], 4), 5);
    let mut seen: Vec<usize> = (0..5).flat_map(|_| ids(&loader.next_batch().expect("batch"))).collect();
    seen.sort();
    assert_eq!(seen, (0..25).collect::<Vec<_>>());
}

#[test]
fn local_directory_and_pattern_resolution() {
    let dir = scratch("resolve");
    write_dataset(&path_str(&dir.join("b.jsonl")), DataFormat::Auto, &records(0..2)).expect("write");
    write_dataset(&path_str(&dir.join("a.parquet")), DataFormat::Auto, &records(0..2)).expect("write");
    write_dataset(&path_str(&dir.join("sub/c.parquet")), DataFormat::Auto, &records(0..2)).expect("write");
    std::fs::write(dir.join("notes.txt"), "not data").expect("write");

    let names = |specs: &[String], format| -> Vec<String> {
        resolve(specs, format, "data.train_files").expect("resolve").iter().map(|f| f.name.rsplit('/').next().unwrap_or("").to_string()).collect()
    };
    let d = path_str(&dir);
    assert_eq!(names(std::slice::from_ref(&d), DataFormat::Auto), ["a.parquet", "b.jsonl", "c.parquet"]);
    assert_eq!(names(std::slice::from_ref(&d), DataFormat::Parquet), ["a.parquet", "c.parquet"]);
    assert_eq!(names(&[format!("{d}/*.parquet")], DataFormat::Auto), ["a.parquet"]);
    // Named twice, kept once.
    assert_eq!(names(&[format!("{d}/a.parquet"), format!("{d}/a.parquet")], DataFormat::Auto), ["a.parquet"]);

    let err = |specs: &[String], format| resolve(specs, format, "data.train_files").expect_err("should fail").to_string();
    let e = err(&[format!("{d}/missing.parquet")], DataFormat::Auto);
    assert!(e.contains("data.train_files[0]") && e.contains("missing.parquet") && e.contains("no such file"), "{e}");
    let e = err(&[d.clone(), format!("{d}/*.csv")], DataFormat::Auto);
    assert!(e.contains("data.train_files[1]") && e.contains("matches no"), "{e}");
    let e = err(&[format!("{d}/notes.txt")], DataFormat::Auto);
    assert!(e.contains("notes.txt") && e.contains("data.format"), "{e}");
    let e = err(&[format!("{d}/*/c.parquet")], DataFormat::Auto);
    assert!(e.contains("last path component"), "{e}");
}

/// A JSONL file with one row of each problem, and three good rows.
fn bad_jsonl(dir: &std::path::Path) -> String {
    let good = |i: usize| serde_json::json!({"caption": caption(i), "encoding": record(i).encoding}).to_string();
    let lines = [
        good(0),
        serde_json::json!({"caption": "short", "encoding": [1, 2, 3]}).to_string(),
        serde_json::json!({"caption": "big", "encoding": [1, 2, 3, 4, 5, 6, 7, 1000]}).to_string(),
        serde_json::json!({"caption": "negative", "encoding": [1, 2, 3, -4, 5, 6, 7, 8]}).to_string(),
        serde_json::json!({"caption": null, "encoding": record(1).encoding}).to_string(),
        serde_json::json!({"caption": "no encoding"}).to_string(),
        "{not json".to_string(),
        good(1),
        String::new(),
        serde_json::json!({"caption": "  ", "encoding": record(1).encoding}).to_string(),
        good(2),
    ];
    let path = dir.join("bad.jsonl");
    std::fs::write(&path, lines.join("\n")).expect("write");
    path_str(&path)
}

#[test]
fn bad_rows_are_counted_and_skipped() {
    let dir = scratch("bad-rows");
    let file = bad_jsonl(&dir);
    let mut loader = open(&files_config(&[&file], 1), 3);
    let batch = loader.next_batch().expect("batch");
    assert_eq!(ids(&batch), [0, 1, 2]);
    let expected = DataCounts {
        examples: 3,
        missing_caption: 2,
        missing_encoding: 1,
        wrong_encoding_length: 1,
        token_out_of_range: 2,
        unparsable: 1,
        unreadable_files: 0,
        held_out: 0,
    };
    assert_eq!(loader.counts(), &expected);
    assert_eq!(loader.counts().bad_rows(), 7);
}

#[test]
fn unreadable_and_bad_parquet_files_are_counted() {
    let dir = scratch("bad-parquet");
    let mut rows = records(0..6);
    rows[2].encoding.pop();
    rows[4].encoding[3] = IMAGE_VOCAB;
    write_dataset(&path_str(&dir.join("a.parquet")), DataFormat::Auto, &rows).expect("write");
    std::fs::write(dir.join("b.parquet"), b"this is not parquet").expect("write");
    let mut loader = open(&files_config(&[&path_str(&dir)], 1), 4);
    let mut epoch = ids(&loader.next_batch().expect("batch"));
    epoch.sort();
    assert_eq!(epoch, [0, 1, 3, 5]);
    // The second batch is the next epoch, so the first has seen every file; each batch
    // ends at a.parquet's last row, so both epochs have seen all of a.parquet.
    loader.next_batch().expect("batch");
    let c = loader.counts();
    assert_eq!((c.wrong_encoding_length, c.token_out_of_range), (2, 2), "{c:?}");
    assert!((1..=2).contains(&c.unreadable_files), "{c:?}");
}

#[test]
fn strict_mode_names_file_and_row() {
    let dir = scratch("strict");
    let file = bad_jsonl(&dir);
    let mut config = files_config(&[&file], 1);
    config.strict = true;
    let mut loader = open(&config, 2);
    let err = loader.next_batch().expect_err("strict").to_string();
    assert!(err.contains("bad.jsonl row 1") && err.contains("wrong encoding length") && err.contains("3 tokens"), "{err}");
    // The loader stays failed rather than skipping past the error.
    let again = loader.next_batch().expect_err("still failed").to_string();
    assert!(again.contains("bad.jsonl row 1"), "{again}");

    std::fs::write(dir.join("broken.parquet"), b"garbage").expect("write");
    let mut config = files_config(&[&path_str(&dir.join("broken.parquet"))], 1);
    config.strict = true;
    let err = open(&config, 1).next_batch().expect_err("strict unreadable").to_string();
    assert!(err.contains("broken.parquet") && err.contains("not a readable parquet file"), "{err}");
}

#[test]
fn a_dataset_without_usable_rows_is_an_error_not_a_hang() {
    let dir = scratch("all-bad");
    let file = path_str(&dir.join("bad.jsonl"));
    std::fs::write(&file, "{\"caption\": \"x\", \"encoding\": [1]}\n").expect("write");
    let err = open(&files_config(&[&file], 1), 1).next_batch().expect_err("no examples").to_string();
    assert!(err.contains("no usable examples"), "{err}");
}

#[test]
fn held_out_fraction_splits_by_caption() {
    let dir = scratch("held-out");
    let file = path_str(&dir.join("all.parquet"));
    write_dataset(&file, DataFormat::Auto, &records(0..200)).expect("write");
    let mut config = files_config(&[&file], 1);
    config.eval_fraction = 0.25;
    let data = Dataset::open(&config, spec(1, 3)).expect("open");
    let take = |loader: &mut Loader, n: usize| -> Vec<usize> { (0..n).flat_map(|_| ids(&loader.next_batch().expect("batch"))).collect() };
    let mut train = data.train_loader(None).expect("train");
    let mut eval = data.eval_loader().expect("eval").expect("has a split");
    let train_ids = take(&mut train, 120);
    let held = train.counts().held_out as usize;
    let eval_ids = take(&mut eval, held);
    // Disjoint, covering, and roughly the requested fraction.
    let mut all: Vec<usize> = train_ids.iter().chain(&eval_ids).copied().collect();
    all.sort();
    assert!(train_ids.len() + held <= 200);
    let epoch_train: std::collections::HashSet<usize> = train_ids.iter().copied().collect();
    assert!(eval_ids.iter().all(|i| !epoch_train.contains(i)));
    assert!((20..=80).contains(&held), "held out {held} of 200");
    // The split depends on the normalised caption only.
    let again: Vec<usize> = take(&mut data.eval_loader().expect("eval").expect("split"), held);
    assert_eq!(again, eval_ids);
    assert!(eval_ids.iter().all(|&i| normalize_caption(&caption(i)).starts_with(' ')));
}
