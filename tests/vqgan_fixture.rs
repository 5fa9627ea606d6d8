//! VQGAN against taming-transformers: tests/fixtures/vqgan_tiny was written by
//! tools/make_vqgan_fixture.py from the reference PyTorch modules, with the
//! weights renamed to vqgan-jax's flax names. Same weights, same images: our
//! latents, codes, codebook loss and decoded pixels must match.
mod common;
use common::*;
use dalle_xla::graph::{Graph, Tensor};
use dalle_xla::models::vqgan::{load_safetensors, parameter_specs, select_params, Vqgan, VqganCodec, VqganConfig};
use dalle_xla::nn::VarBuilder;
use dalle_xla::{DType, HostTensor};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vqgan_tiny").join(name)
}

fn config() -> VqganConfig {
    let text = std::fs::read_to_string(fixture("config.yaml")).unwrap();
    let c: VqganConfig = serde_yaml::from_str(&text).unwrap();
    c.validate().unwrap();
    c
}

fn load(name: &str) -> BTreeMap<String, HostTensor> {
    load_safetensors(&fixture(name)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn parameter_tree_matches_the_reference() {
    let params = load("params.safetensors");
    let specs = parameter_specs(&config()).unwrap();
    let mut ours: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let mut theirs: Vec<&str> = params.keys().map(String::as_str).collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs, "parameter names differ from the reference tree");
    for s in &specs {
        assert_eq!(s.ty.shape, params[&s.name].shape, "shape of {}", s.name);
    }
}

#[test]
fn latents_codes_loss_and_pixels_match_taming() {
    let config = config();
    let params = load("params.safetensors");
    let expected = load("expected.safetensors");
    let images = &expected["images"];
    let n = images.shape[0];

    let g = Graph::new("vqgan_fixture");
    let x = g.param("images", DType::F32, &images.shape);
    let vb = VarBuilder::new(&g, DType::F32);
    let model = Vqgan::new(config.clone());
    let latents = model.encode_latents(&vb, &x).unwrap();
    let q = model.quantize(&vb, &latents).unwrap();
    let decoded = model.decode_latents(&vb, &q.z_q).unwrap();
    let values = select_params(&params, &vb.specs(), "fixture").unwrap();
    let mut inputs: Vec<&HostTensor> = vec![images];
    inputs.extend(values.iter());
    let outs: [&Tensor; 4] = [&latents, &q.indices, &q.codebook_loss, &decoded];
    let got = compile(&g, &outs).run(&inputs).unwrap();

    assert_eq!(got[0].shape, expected["latents"].shape);
    assert_close(&got[0].to_f64_vec(), &expected["latents"].to_f64_vec(), 1e-4, "latents");
    assert_eq!(got[1].shape, vec![n, config.image_length()]);
    assert_eq!(got[1].to_vec::<i32>().unwrap(), expected["indices"].to_vec::<i32>().unwrap(), "codebook indices");
    assert_close(&got[2].to_f64_vec(), &expected["codebook_loss"].to_f64_vec(), 1e-4, "codebook loss");
    assert_eq!(got[3].shape, expected["decoded"].shape);
    assert_close(&got[3].to_f64_vec(), &expected["decoded"].to_f64_vec(), 1e-4, "decoded pixels");
}

#[test]
fn codec_round_trip_equals_reconstruct() {
    let config = config();
    let params = load("params.safetensors");
    let expected = load("expected.safetensors");
    // Three images over two devices with two per device: one padded batch.
    let images = &expected["images"];
    let row = images.data.len() / images.shape[0] as usize;
    let mut three = images.clone();
    three.data.extend_from_slice(&images.data[..row]);
    three.shape[0] = 3;
    let codec = VqganCodec::new(&client(), config, &params, "fixture", 2, 2).unwrap();

    let tokens = codec.encode(&three).unwrap();
    assert_eq!(tokens.shape, vec![3, 64]);
    let want_tokens = expected["indices"].to_vec::<i32>().unwrap();
    let got_tokens = tokens.to_vec::<i32>().unwrap();
    assert_eq!(&got_tokens[..128], &want_tokens[..], "tokens of the fixture images");
    assert_eq!(&got_tokens[128..], &want_tokens[..64], "the repeated image gets the same tokens");

    let decoded = codec.decode(&tokens).unwrap();
    let reconstructed = codec.reconstruct(&three).unwrap();
    assert_eq!(decoded.shape, vec![3, 16, 16, 3]);
    assert_close(&decoded.to_f64_vec(), &reconstructed.to_f64_vec(), 1e-5, "decode(encode(x)) vs reconstruct(x)");
    assert_close(&decoded.to_f64_vec()[..2 * row / 4], &expected["decoded"].to_f64_vec(), 1e-4, "decoded fixture images");
}

#[test]
fn codec_rejects_bad_inputs_and_weights() {
    let config = config();
    let params = load("params.safetensors");
    let codec = VqganCodec::new(&client(), config.clone(), &params, "fixture", 1, 1).unwrap();
    let wrong_size = HostTensor::zeros(DType::F32, &[1, 8, 8, 3]);
    let e = codec.encode(&wrong_size).unwrap_err().to_string();
    assert!(e.contains("images must be f32[N, 16, 16, 3]"), "{e}");
    let out_of_range = HostTensor::new(&[1, 64], &[64i32; 64]).unwrap();
    let e = codec.decode(&out_of_range).unwrap_err().to_string();
    assert!(e.contains("token 64 at position 0 is outside the codebook of 64"), "{e}");

    let mut missing = params.clone();
    missing.remove("decoder.conv_out.kernel");
    let e = VqganCodec::new(&client(), config.clone(), &missing, "my.safetensors", 1, 1).err().unwrap().to_string();
    assert!(e.contains("my.safetensors has no parameter 'decoder.conv_out.kernel'"), "{e}");
    let mut wrong_shape = params.clone();
    wrong_shape.insert("quant_conv.bias".into(), HostTensor::zeros(DType::F32, &[3]));
    let e = VqganCodec::new(&client(), config, &wrong_shape, "my.safetensors", 1, 1).err().unwrap().to_string();
    assert!(e.contains("'quant_conv.bias' has shape [3], the model needs [16]"), "{e}");
}
