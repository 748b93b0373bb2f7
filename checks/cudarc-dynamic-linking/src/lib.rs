//! Proof that a crate using cudarc the way candle does (`dynamic-linking`) can add vkcuda:
//! it builds (`cargo build -p vkcuda-check-dynamic-linking`, run by `.ci/run`). A caller's
//! own `Arc<CudaContext>` goes to vkcuda through `cuda::Context::adopt`.

use std::sync::Arc;

use cudarc::driver::CudaContext;

/// The CUDA side of `vk`'s device, from the caller's own context (as a candle `CudaDevice`
/// holds one).
pub fn adopt(
    vk: &vkcuda::vulkan::Context,
    ctx: Arc<CudaContext>,
) -> vkcuda::Result<vkcuda::cuda::Context> {
    vkcuda::cuda::Context::adopt(ctx, vk.identity())
}
