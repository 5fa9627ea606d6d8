//! Which dimension of each DalleBart parameter the mesh's `model` axis
//! splits: dalle-mini's partition rules. Embedding tables and the output
//! projections (`out_proj`, `Dense_2`) are split on their input axis, the
//! query/key/value projections, `Dense_0`, `Dense_1` and `lm_head` on their
//! output axis; layer norms are replicated.

/// The dimension split over the model axis, or `None` (replicated over it).
pub fn model_axis_dim(name: &str) -> Option<usize> {
    let leaf = |parent: &str| name.ends_with(&format!("{parent}.kernel"));
    if name.ends_with("embed_tokens.embedding") || name.ends_with("embed_positions.embedding") {
        Some(0)
    } else if leaf("out_proj") || leaf("Dense_2") {
        Some(0)
    } else if leaf("q_proj") || leaf("k_proj") || leaf("v_proj") || leaf("Dense_0") || leaf("Dense_1") || leaf("lm_head") {
        Some(1)
    } else {
        None
    }
}
