//! Pool trials: the Vulkan half on any Vulkan device (`lavapipe`; `images` for images in
//! the pool; `imported` for blocks imported once and their resources bound again), and the
//! CUDA half (`gpu`, `images_gpu`), ignored without a CUDA device matching the Vulkan
//! device.

use libtest_mimic::Trial;

mod gpu;
mod images;
mod images_gpu;
mod imported;
mod lavapipe;

/// A Vulkan pool with 8 MiB blocks, room for several images per class.
fn pool(vk: &vkcuda::vulkan::Context) -> vkcuda::Result<vkcuda::vulkan::ExportPool> {
    vkcuda::vulkan::ExportPool::new(
        vk,
        &vkcuda::vulkan::PoolDesc {
            block_size: 8 << 20,
            ..vkcuda::vulkan::PoolDesc::default()
        },
    )
}

/// `desc` with the usage the staged copies need.
fn transfer(desc: vkcuda::vulkan::ImageDesc) -> vkcuda::vulkan::ImageDesc {
    desc.usage(ash::vk::ImageUsageFlags::TRANSFER_SRC | ash::vk::ImageUsageFlags::TRANSFER_DST)
}

/// The trials of both halves, each over its own probe.
pub fn trials() -> Vec<Trial> {
    let mut trials = lavapipe::trials();
    trials.extend(images::trials());
    trials.extend(imported::trials());
    trials.extend(gpu::trials());
    trials.extend(images_gpu::trials());
    trials
}
