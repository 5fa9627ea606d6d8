//! The image-folder dataset: conversions, resize and crop, folder and CSV
//! listing, skipping (and counting) bad entries, strict mode, and the
//! background loader's batches and order.

use dalle_xla::data::images::{
    hwc_to_rgb, load_image, resize_and_center_crop, rgb_to_hwc, save_png, ImageIndex, ImageLoader, LoaderOptions,
};
use dalle_xla::data::shapes;
use dalle_xla::{DType, HostTensor};
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dalle-images-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn solid(w: u32, h: u32, rgb: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(rgb))
}

fn jpeg_bytes(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95).encode_image(image).unwrap();
    bytes
}

fn write_captioned(dir: &Path, name: &str, bytes: &[u8], caption: Option<&str>) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    if let Some(caption) = caption {
        std::fs::write(path.with_extension("txt"), caption).unwrap();
    }
    path
}

fn png_bytes(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

fn options(resolution: u32, batch_size: usize) -> LoaderOptions {
    LoaderOptions {
        resolution,
        batch_size,
        shuffle: false,
        epochs: Some(1),
        drop_last: false,
        prefetch: 2,
        workers: 1,
        ..Default::default()
    }
}

/// The image `index` of a batch as `[H, W, 3]` values.
fn image_values(batch: &HostTensor, index: usize) -> Vec<f32> {
    let per: usize = batch.shape[1..].iter().product::<i64>() as usize;
    batch.to_vec::<f32>().unwrap()[index * per..(index + 1) * per].to_vec()
}

#[test]
fn pixels_map_to_minus_one_one_and_back() {
    let image = RgbImage::from_fn(3, 2, |x, y| Rgb([(x * 100) as u8, (y * 255) as u8, 51]));
    let tensor = rgb_to_hwc(&image);
    assert_eq!((tensor.dtype, tensor.shape.clone()), (DType::F32, vec![2, 3, 3]));
    let values = tensor.to_vec::<f32>().unwrap();
    // Pixel (x=2, y=1) is at row 1, column 2: [200, 255, 51].
    let at = |y: usize, x: usize, c: usize| values[(y * 3 + x) * 3 + c];
    assert_eq!(at(0, 0, 0), -1.0);
    assert_eq!(at(1, 2, 1), 1.0);
    assert!((at(1, 2, 0) - (200.0 / 127.5 - 1.0)).abs() < 1e-6);
    assert!((at(0, 1, 2) - (51.0 / 127.5 - 1.0)).abs() < 1e-6);
    assert_eq!(hwc_to_rgb(&tensor).unwrap(), image);

    // Out-of-range values clamp; a leading batch of one is accepted.
    let wide = HostTensor::new(&[1, 1, 2, 3], &[-3.0f32, 0.0, 1.0, 2.0, 0.5, -1.0]).unwrap();
    assert_eq!(hwc_to_rgb(&wide).unwrap().as_raw(), &vec![0, 128, 255, 255, 191, 0]);
    let err = hwc_to_rgb(&HostTensor::zeros(DType::F32, &[2, 4, 4, 3])).unwrap_err().to_string();
    assert!(err.contains("[2, 4, 4, 3]"), "{err}");

    let dir = temp_dir("png");
    let path = dir.join("out.png");
    save_png(&tensor, &path).unwrap();
    assert_eq!(image::open(&path).unwrap().to_rgb8(), image);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resize_scales_the_short_side_and_crops_the_center() {
    // 40x20: left half red, right half blue. Scaled to 20x10 and cropped to
    // the central 10x10 (columns 5..15 of the scaled image), the left five
    // columns stay red and the right five blue (but for the blended seam).
    let image = RgbImage::from_fn(40, 20, |x, _| Rgb(if x < 20 { [255, 0, 0] } else { [0, 0, 255] }));
    let out = resize_and_center_crop(&image, 10);
    assert_eq!(out.dimensions(), (10, 10));
    for y in 0..10 {
        for x in (0..3).chain(7..10) {
            let want = if x < 5 { [255, 0, 0] } else { [0, 0, 255] };
            assert_eq!(out.get_pixel(x, y).0, want, "pixel ({x}, {y})");
        }
    }
    // Tall images crop rows the same way.
    let tall = RgbImage::from_fn(8, 24, |_, y| Rgb(if y < 8 { [0, 0, 0] } else if y < 16 { [9, 9, 9] } else { [200, 200, 200] }));
    let out = resize_and_center_crop(&tall, 8);
    assert!(out.pixels().all(|p| p.0 == [9, 9, 9]), "{:?}", out.as_raw());
}

#[test]
fn folder_dataset_skips_and_counts_bad_entries() {
    let dir = temp_dir("folder");
    let (a, b, c) = ([200, 30, 30], [20, 160, 60], [90, 90, 240]);
    write_captioned(&dir, "a.png", &png_bytes(&solid(30, 40, a)), Some("a red picture\n"));
    write_captioned(&dir, "b.jpg", &jpeg_bytes(&solid(50, 30, b)), Some("a green picture"));
    write_captioned(&dir, "sub/c.PNG", &png_bytes(&solid(16, 16, c)), Some("a blue picture"));
    let full = jpeg_bytes(&RgbImage::from_fn(64, 64, |x, y| Rgb([(x * 4) as u8, (y * 4) as u8, 128])));
    write_captioned(&dir, "cut.jpg", &full[..full.len() * 2 / 3], Some("cut off"));
    write_captioned(&dir, "fake.png", b"this is text, not an image", Some("fake"));
    write_captioned(&dir, "silent.png", &png_bytes(&solid(8, 8, a)), None);
    std::fs::write(dir.join("notes.txt"), "not a caption of anything").unwrap();

    let index = ImageIndex::open(&dir).unwrap();
    assert_eq!(index.records.len(), 5);
    assert_eq!(index.skipped.len(), 1);
    assert!(index.skipped[0].to_string().contains("silent.png"), "{}", index.skipped[0]);

    let mut loader = ImageLoader::start(index, options(8, 2)).unwrap();
    let batches: Vec<_> = loader.by_ref().map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.captions.len()).collect::<Vec<_>>(), vec![2, 1]);
    let names: Vec<String> = batches.iter().flat_map(|b| b.paths.iter()).map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["a.png", "b.jpg", "c.PNG"]);
    assert_eq!(batches[0].captions, ["a red picture", "a green picture"]);
    assert_eq!(batches[0].pixels.shape, vec![2, 8, 8, 3]);
    assert_eq!(batches[1].pixels.shape, vec![1, 8, 8, 3]);

    // Solid images stay solid through resize and crop: every value is the
    // colour mapped to [-1, 1] (JPEG may move a channel by a couple of levels).
    let expect = [(&batches[0].pixels, 0, a, 0.5), (&batches[0].pixels, 1, b, 3.0), (&batches[1].pixels, 0, c, 0.5)];
    for (tensor, i, rgb, levels) in expect {
        for (k, v) in image_values(tensor, i).iter().enumerate() {
            let want = rgb[k % 3] as f32 / 127.5 - 1.0;
            assert!((v - want).abs() <= levels / 127.5 + 1e-6, "image {i} value {k}: {v} vs {want}");
        }
    }

    let report = loader.skipped();
    assert_eq!((report.missing_captions(), report.unreadable()), (1, 2), "{report}");
    let text = report.to_string();
    for name in ["silent.png", "cut.jpg", "fake.png", "truncated JPEG"] {
        assert!(text.contains(name), "report should name {name}: {text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn strict_mode_turns_skips_into_errors() {
    let dir = temp_dir("strict");
    write_captioned(&dir, "a.png", &png_bytes(&solid(8, 8, [1, 2, 3])), Some("fine"));
    write_captioned(&dir, "b.png", &png_bytes(&solid(8, 8, [1, 2, 3])), None);
    let strict = LoaderOptions { strict: true, ..options(4, 1) };
    let err = ImageLoader::start(ImageIndex::open(&dir).unwrap(), strict.clone()).err().unwrap().to_string();
    assert!(err.contains("b.png") && err.contains("no caption"), "{err}");

    std::fs::write(dir.join("b.txt"), "now captioned").unwrap();
    write_captioned(&dir, "c.png", b"GIF89a not really", Some("broken"));
    let results: Vec<_> = ImageLoader::start(ImageIndex::open(&dir).unwrap(), strict).unwrap().collect();
    assert_eq!(results.len(), 3, "two batches, then the error, then nothing");
    let err = results[2].as_ref().err().unwrap().to_string();
    assert!(err.contains("c.png"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn csv_dataset_resolves_paths_and_reports_missing_files() {
    let dir = temp_dir("csv");
    std::fs::create_dir_all(dir.join("img")).unwrap();
    std::fs::write(dir.join("img/x.png"), png_bytes(&solid(12, 12, [10, 20, 30]))).unwrap();
    std::fs::write(dir.join("img/y.png"), png_bytes(&solid(12, 12, [40, 50, 60]))).unwrap();
    let csv = "id,path,caption\n1,img/x.png,\"a square, grey\"\n2,img/gone.png,lost\n3,img/y.png,\n4,img/y.png,again\n";
    std::fs::write(dir.join("list.csv"), csv).unwrap();

    let index = ImageIndex::open(&dir.join("list.csv")).unwrap();
    assert_eq!(index.records.iter().map(|r| r.caption.as_str()).collect::<Vec<_>>(), ["a square, grey", "lost", "again"]);
    assert_eq!(index.records[0].path, dir.join("img/x.png"));
    assert!(index.skipped[0].to_string().contains("line 4"), "{}", index.skipped[0]);

    let mut loader = ImageLoader::start(index, options(6, 4)).unwrap();
    let batch = loader.next().unwrap().unwrap();
    assert_eq!(batch.captions, ["a square, grey", "again"]);
    assert!(loader.next().is_none());
    let report = loader.skipped();
    assert_eq!((report.missing_captions(), report.unreadable()), (1, 1), "{report}");
    assert!(report.to_string().contains("gone.png"), "{report}");

    std::fs::write(dir.join("bad.csv"), "path,text\na.png,hello\n").unwrap();
    let err = ImageIndex::open(&dir.join("bad.csv")).unwrap_err().to_string();
    assert!(err.contains("\"caption\""), "{err}");
    let err = ImageIndex::open(&dir.join("list.parquet")).unwrap_err().to_string();
    assert!(err.contains("parquet"), "{err}");
    let err = ImageIndex::open(&dir.join("nowhere")).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn served_order(dir: &Path, seed: u64, epochs: u64) -> Vec<Vec<String>> {
    let opts = LoaderOptions { seed, shuffle: true, epochs: Some(epochs), ..options(4, 3) };
    let loader = ImageLoader::start(ImageIndex::open(dir).unwrap(), opts).unwrap();
    let mut per_epoch = vec![Vec::new(); epochs as usize];
    for batch in loader {
        let batch = batch.unwrap();
        per_epoch[batch.epoch as usize].extend(batch.captions);
    }
    per_epoch
}

#[test]
fn shuffled_order_is_a_function_of_seed_and_epoch() {
    let dir = temp_dir("order");
    for i in 0..10u8 {
        write_captioned(&dir, &format!("{i}.png"), &png_bytes(&solid(4, 4, [i, i, i])), Some(&format!("image {i}")));
    }
    write_captioned(&dir, "z.png", b"broken", Some("broken"));
    let first = served_order(&dir, 5, 3);
    assert_eq!(first, served_order(&dir, 5, 3), "same seed, same order");
    assert_ne!(first, served_order(&dir, 6, 3), "another seed, another order");
    assert_ne!(first[0], first[1], "each epoch is shuffled anew");
    for epoch in &first {
        let mut sorted = epoch.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).map(|i| format!("image {i}")).collect::<Vec<_>>());
    }

    // Parallel decoding serves exactly the same sequence.
    let parallel = |workers| {
        let opts = LoaderOptions { seed: 5, shuffle: true, epochs: Some(2), workers, ..options(4, 3) };
        let loader = ImageLoader::start(ImageIndex::open(&dir).unwrap(), opts).unwrap();
        loader.map(|b| b.unwrap()).map(|b| (b.captions, b.pixels.data)).collect::<Vec<_>>()
    };
    assert_eq!(parallel(1), parallel(3));

    // The broken image is reported once, not once per epoch.
    let opts = LoaderOptions { epochs: Some(3), ..options(4, 3) };
    let mut loader = ImageLoader::start(ImageIndex::open(&dir).unwrap(), opts).unwrap();
    assert_eq!(loader.by_ref().count(), 12);
    assert_eq!(loader.skipped().unreadable(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dropping_an_endless_loader_stops_its_thread() {
    let dir = temp_dir("endless");
    write_captioned(&dir, "a.png", &png_bytes(&solid(4, 4, [7, 7, 7])), Some("a"));
    let opts = LoaderOptions { epochs: None, ..options(4, 1) };
    let mut loader = ImageLoader::start(ImageIndex::open(&dir).unwrap(), opts).unwrap();
    for _ in 0..5 {
        assert_eq!(loader.next().unwrap().unwrap().captions, ["a"]);
    }
    // Drop joins the thread: the test would hang here if it kept running.
    drop(loader);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_generated_shapes_folder_loads_with_its_captions() {
    let dir = temp_dir("shapes");
    shapes::generate(5, 64, 9, &dir).unwrap();
    let loader = ImageLoader::start(ImageIndex::open(&dir).unwrap(), options(32, 5)).unwrap();
    let batches: Vec<_> = loader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 1);
    let want: Vec<String> = (0..5).map(|i| shapes::scene_at(9, i).caption()).collect();
    assert_eq!(batches[0].captions, want);
    // The CSV written beside the images lists the same pairs.
    let from_csv = ImageIndex::open(&dir.join("captions.csv")).unwrap();
    assert_eq!(from_csv.records.iter().map(|r| r.caption.clone()).collect::<Vec<_>>(), want);
    // Served pixels are the rendered scene scaled to 32 px.
    let image = load_image(&dir.join("000000.png"), 32).unwrap();
    assert_eq!(image, resize_and_center_crop(&shapes::scene_at(9, 0).render(64), 32));
    assert_eq!(rgb_to_hwc(&image).to_vec::<f32>().unwrap(), image_values(&batches[0].pixels, 0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_loader_started_at_a_batch_serves_what_an_uninterrupted_one_serves_from_there() {
    let dir = temp_dir("start-batch");
    for i in 0..10u8 {
        write_captioned(&dir, &format!("{i}.png"), &png_bytes(&solid(4, 4, [i, i, i])), Some(&format!("image {i}")));
    }
    let batches = |start_batch: u64| -> Vec<(u64, Vec<String>)> {
        let opts = LoaderOptions { seed: 3, shuffle: true, epochs: Some(3), start_batch, ..options(4, 3) };
        ImageLoader::start(ImageIndex::open(&dir).unwrap(), opts).unwrap().map(|b| b.unwrap()).map(|b| (b.epoch, b.captions)).collect()
    };
    let all = batches(0);
    // 10 images in batches of 3: four batches per epoch, the last one short.
    assert_eq!(all.len(), 12);
    for start in [1, 4, 5, 11] {
        assert_eq!(batches(start), all[start as usize..].to_vec(), "starting at batch {start}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
