//! DalleBart's parameter tree: counts of the released configs and flax names.
use dalle_xla::models::dallebart::{parameter_groups, parameter_specs, DalleBartConfig};

fn millions(groups: &[(&str, i64)], name: &str) -> f64 {
    groups.iter().find(|(n, _)| *n == name).map(|(_, c)| *c as f64 / 1e6).unwrap()
}

#[test]
fn mini_has_the_published_parameter_counts() {
    let g = parameter_groups(&DalleBartConfig::mini()).unwrap();
    // dalle-mini's released model: encoder 202.6M, decoder 218.5M, lm_head 16.8M, 437.8M in all.
    assert!((millions(&g, "encoder") - 202.6).abs() < 0.05, "{g:?}");
    assert!((millions(&g, "decoder") - 218.5).abs() < 0.05, "{g:?}");
    assert!((millions(&g, "lm_head") - 16.8).abs() < 0.05, "{g:?}");
    let total: i64 = g.iter().map(|(_, n)| n).sum();
    assert!((total as f64 / 1e6 - 437.8).abs() < 0.1, "{total}");
}

#[test]
fn mega_has_about_2_59_billion_parameters() {
    let total: i64 = parameter_groups(&DalleBartConfig::mega()).unwrap().iter().map(|(_, n)| n).sum();
    assert!((total as f64 / 1e9 - 2.59).abs() < 0.005, "{total}");
}

#[test]
fn parameter_names_follow_the_flax_tree() {
    let c = DalleBartConfig::mini();
    let specs = parameter_specs(&c).unwrap();
    let shape = |name: &str| specs.iter().find(|s| s.name == name).map(|s| s.ty.shape.clone()).unwrap_or_else(|| panic!("no parameter {name}"));
    assert_eq!(shape("model.encoder.layers.FlaxBartEncoderLayer_0.FlaxBartAttention_0.q_proj.kernel"), vec![1024, 1024]);
    assert_eq!(shape("model.decoder.layers.FlaxBartDecoderLayer_11.FlaxBartAttention_1.v_proj.kernel"), vec![1024, 1024]);
    assert_eq!(shape("model.encoder.embed_tokens.embedding"), vec![50264, 1024]);
    assert_eq!(shape("model.decoder.embed_tokens.embedding"), vec![16385, 1024]);
    assert_eq!(shape("model.decoder.embed_positions.embedding"), vec![256, 1024]);
    assert_eq!(shape("model.encoder.layernorm_embedding.scale"), vec![1024]);
    assert_eq!(shape("model.encoder.layers.FlaxBartEncoderLayer_0.GLU_0.Dense_0.kernel"), vec![1024, 2730]);
    assert_eq!(shape("lm_head.kernel"), vec![1024, 16385]);
    assert!(specs.iter().all(|s| !s.name.ends_with(".bias") || s.ty.shape.len() == 1));
    assert!(!specs.iter().any(|s| s.name.contains("q_proj.bias")), "attention projections have no bias");
}
