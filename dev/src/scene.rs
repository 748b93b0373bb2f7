//! The demo scene: `shaders/render.wgsl` compiled to SPIR-V, its push constants, and a CPU
//! twin that computes every texel the same way (integer arithmetic), so tests can check
//! the Vulkan render exactly.

/// SPIR-V of `shaders/render.wgsl` (built by `build.rs` with naga).
pub const RENDER_SPV: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/render.spv"));

/// Workgroup size declared in the shader.
pub const WORKGROUP: [u32; 2] = [16, 16];

/// Push constants of the shader: frame number, width, height.
pub fn push_constants(frame: u32, width: u32, height: u32) -> Vec<u8> {
    [frame, width, height]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
}

/// Size of [`push_constants`] in bytes.
pub const PUSH_SIZE: u32 = 12;

/// The render shader as a [`ComputePass`] on `vk`.
pub fn render_pass(
    vk: &vkcuda::vulkan::Context,
) -> vkcuda::Result<std::sync::Arc<vkcuda::util::ComputePass>> {
    // SAFETY: RENDER_SPV is naga's SPIR-V of shaders/render.wgsl: entry point `main`, one
    // rgba8unorm storage texture at group 0 binding 0, a 12-byte immediate (push-constant) block
    // (PUSH_SIZE) and @workgroup_size(16, 16) (WORKGROUP).
    unsafe { vkcuda::util::ComputePass::new(vk, RENDER_SPV, WORKGROUP, PUSH_SIZE) }
}

/// The RGBA8 texels the shader writes for `frame` at `width` x `height`.
pub fn reference(frame: u32, width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(width as usize * height as usize * 4);
    let cx = ((frame * 7) % width) as i32;
    let cy = (height / 2) as i32;
    let rad = (height / 4) as i32;
    for y in 0..height {
        for x in 0..width {
            let (dx, dy) = (x as i32 - cx, y as i32 - cy);
            let rgb = if dx * dx + dy * dy <= rad * rad {
                [255, 224, 32]
            } else {
                [
                    (x * 255 / (width - 1).max(1)) as u8,
                    (y * 255 / (height - 1).max(1)) as u8,
                    96,
                ]
            };
            out.extend_from_slice(&[rgb[0], rgb[1], rgb[2], 255]);
        }
    }
    out
}

/// `shaders/postprocess.cu`, the CUDA tone curve the demo applies in place.
pub const POSTPROCESS_CU: &str = include_str!("../shaders/postprocess.cu");

/// The CUDA tone curve of one colour channel (`shaders/postprocess.cu`).
pub fn curve(v: u8) -> u8 {
    (u32::from(v) * (255 + 64) / (u32::from(v) + 64)) as u8
}

/// [`reference`] after the CUDA post-process: the tone curve on R, G and B.
pub fn processed_reference(frame: u32, width: u32, height: u32) -> Vec<u8> {
    let mut texels = reference(frame, width, height);
    for px in texels.chunks_exact_mut(4) {
        for c in &mut px[..3] {
            *c = curve(*c);
        }
    }
    texels
}
