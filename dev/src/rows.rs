//! Rows at a pitch, as a LINEAR image's memory and CUDA's pitched rows hold them, packed
//! tight.

/// The `rows` rows of `row` bytes that start `pitch` bytes apart from `offset` in `memory`,
/// packed tight.
///
/// # Panics
/// If the last row ends past `memory`.
pub fn tight_rows(memory: &[u8], offset: usize, pitch: usize, row: usize, rows: usize) -> Vec<u8> {
    (0..rows)
        .flat_map(|y| &memory[offset + y * pitch..offset + y * pitch + row])
        .copied()
        .collect()
}
