//! The CUDA sources of the tests and benches, embedded so their binaries run from any
//! directory (the GPU host runs them from a bundle). The demo's own tone curve is
//! [`crate::scene::POSTPROCESS_CU`].

/// `shaders/buffer.cu`: the test pattern's fill and check, and the bandwidth-bound `saxpy4`.
pub const BUFFER_CU: &str = include_str!("../shaders/buffer.cu");

/// `shaders/image.cu` after `shaders/buffer.cu` (whose `pattern` it uses): surface writes,
/// texture reads and the image bench's kernel.
pub const IMAGE_CU: &str = concat!(
    include_str!("../shaders/buffer.cu"),
    include_str!("../shaders/image.cu")
);

/// `shaders/sync.cu`: the kernels that prove frame ordering by data.
pub const SYNC_CU: &str = include_str!("../shaders/sync.cu");

/// `shaders/scene.cu`: the demo scene drawn by CUDA into rows at a pitch (the frame-sharing
/// example's CUDA producer).
pub const SCENE_CU: &str = include_str!("../shaders/scene.cu");
