//! Dataset encoding: shards of caption + tokens that match the codec, bad
//! images skipped and counted, finished shards left alone on a second run,
//! and token files decoded back to the same images as a direct round trip.
mod common;
use common::*;
use dalle_xla::data::images::{load_image, rgb_to_hwc, ImageIndex};
use dalle_xla::data::{resolve, DataFormat};
use dalle_xla::models::vqgan::{encode_dataset, load_safetensors, read_tokens, shard_name, EncodeOptions, VqganCodec, VqganConfig};
use dalle_xla::HostTensor;
use std::path::PathBuf;

fn fixture_codec(per_device: i64, devices: usize) -> VqganCodec {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vqgan_tiny");
    let config: VqganConfig = serde_yaml::from_str(&std::fs::read_to_string(dir.join("config.yaml")).unwrap()).unwrap();
    let weights = load_safetensors(&dir.join("params.safetensors")).unwrap();
    VqganCodec::new(&client(), config, &weights, "fixture", per_device, devices).unwrap()
}

fn options() -> EncodeOptions {
    EncodeOptions { shard_size: 4, workers: 1, restart: false, vqgan: "fixture".into(), vqgan_sha256: "0".into() }
}

#[test]
fn encodes_shards_skips_bad_images_and_resumes() {
    let dir = std::env::temp_dir().join(format!("dalle-vqgan-encode-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let images = dir.join("images");
    dalle_xla::data::shapes::generate(9, 16, 5, &images).unwrap();
    std::fs::write(images.join("zz_broken.png"), b"\x89PNG but not really").unwrap();
    std::fs::write(images.join("zz_broken.txt"), "a broken picture").unwrap();
    let out_dir = dir.join("encoded");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = dalle_xla::storage::open(out_dir.to_str().unwrap()).unwrap();
    let codec = fixture_codec(2, 2);

    let index = ImageIndex::open(&images).unwrap();
    let expected_records = index.records.clone();
    let mut seen = Vec::new();
    let report = encode_dataset(&codec, index, &out, &options(), |done| seen.push(done)).unwrap();
    assert_eq!((report.shards_total, report.shards_written, report.shards_skipped), (3, 3, 0));
    assert_eq!(report.images_encoded, 9);
    assert_eq!(report.skipped.unreadable(), 1, "{}", report.skipped);
    assert!(report.skipped.to_string().contains("zz_broken.png"));
    assert_eq!(seen.last(), Some(&10), "progress reaches every record");

    // Every shard holds the codec's tokens for its readable images, in index order.
    let mut rows = Vec::new();
    for i in 0..3 {
        let file = out_dir.join(shard_name(i, 3));
        rows.extend(read_tokens(file.to_str().unwrap(), 64).unwrap());
    }
    let readable: Vec<_> = expected_records.iter().filter(|r| !r.path.ends_with("zz_broken.png")).collect();
    assert_eq!(rows.len(), readable.len());
    let mut pixels = Vec::new();
    for r in &readable {
        pixels.extend(rgb_to_hwc(&load_image(&r.path, 16).unwrap()).to_vec::<f32>().unwrap());
    }
    let batch = HostTensor::new(&[readable.len() as i64, 16, 16, 3], &pixels).unwrap();
    let tokens = codec.encode(&batch).unwrap().to_vec::<i32>().unwrap();
    for (i, ((caption, encoding), record)) in rows.iter().zip(&readable).enumerate() {
        assert_eq!(caption.as_deref(), Some(record.caption.as_str()), "caption of row {i}");
        let want: Vec<i64> = tokens[i * 64..(i + 1) * 64].iter().map(|t| *t as i64).collect();
        assert_eq!(encoding, &want, "tokens of row {i}");
    }
    // The shards are the seq2seq trainer's format.
    let files = resolve(&[out_dir.to_str().unwrap().to_string()], DataFormat::Auto, "data.train_files").unwrap();
    assert_eq!(files.len(), 3);

    // A second run finds every shard done and writes nothing.
    let again = encode_dataset(&codec, ImageIndex::open(&images).unwrap(), &out, &options(), |_| {}).unwrap();
    assert_eq!((again.shards_written, again.shards_skipped, again.images_encoded), (0, 3, 0));

    // Decoding the stored tokens gives what a direct round trip gives.
    let flat: Vec<i32> = rows.iter().flat_map(|(_, t)| t.iter().map(|v| *v as i32)).collect();
    let decoded = codec.decode(&HostTensor::new(&[rows.len() as i64, 64], &flat).unwrap()).unwrap();
    let reconstructed = codec.reconstruct(&batch).unwrap();
    assert_close(&decoded.to_f64_vec(), &reconstructed.to_f64_vec(), 1e-5, "decode(stored tokens) vs reconstruct");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn token_files_with_bad_rows_are_rejected_by_line() {
    let dir = std::env::temp_dir().join(format!("dalle-vqgan-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens.txt");
    std::fs::write(&file, "1 2 3 4\n5,6,7,x\n").unwrap();
    let e = read_tokens(file.to_str().unwrap(), 4).unwrap_err().to_string();
    assert!(e.contains("line 2: 'x' is not an integer token"), "{e}");
    std::fs::write(&file, "1 2 3 4\n5 6 7\n").unwrap();
    let e = read_tokens(file.to_str().unwrap(), 4).unwrap_err().to_string();
    assert!(e.contains("sequence 1 has 3 tokens, the VQGAN decodes 4"), "{e}");
    std::fs::write(&file, "1 2 3 4\n\n5 6 7 8\n").unwrap();
    assert_eq!(read_tokens(file.to_str().unwrap(), 4).unwrap().len(), 2);
    std::fs::remove_dir_all(&dir).ok();
}
