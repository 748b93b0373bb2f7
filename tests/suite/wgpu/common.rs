//! wgpu for the `wgpu` subject: a Vulkan adapter with wgpu's validation on (where the layer
//! is installed), and a count of the errors wgpu logs (its validation callback logs through
//! `log`; the suite's logger, `common::log_to_stderr`, counts them here).

use std::sync::atomic::{AtomicU64, Ordering};

use vkcuda::wgpu;

static ERRORS: AtomicU64 = AtomicU64::new(0);

/// Counts `record` when wgpu logged it at error level (called by the suite's logger).
pub fn count(record: &log::Record<'_>) {
    if record.level() == log::Level::Error && record.target().starts_with("wgpu") {
        ERRORS.fetch_add(1, Ordering::Relaxed);
    }
}

/// wgpu's first Vulkan adapter, from an instance with validation on; installs the suite's
/// logger (which counts wgpu's errors).
pub fn adapter() -> Result<wgpu::Adapter, String> {
    crate::common::log_to_stderr();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN,
        flags: wgpu::InstanceFlags::VALIDATION,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    pollster::block_on(instance.request_adapter(&Default::default()))
        .map_err(|e| format!("no wgpu Vulkan adapter: {e}"))
}

/// Errors wgpu has logged so far in this process.
pub fn errors() -> u64 {
    ERRORS.load(Ordering::Relaxed)
}

/// Fails if wgpu logged errors since `before` (an earlier [`errors`]).
pub fn no_errors_since(before: u64) -> anyhow::Result<()> {
    let after = errors();
    anyhow::ensure!(after == before, "wgpu logged {} error(s)", after - before);
    Ok(())
}

/// A 2D RGBA8 texture of `width` x `height` with `usage`, one level, one sample.
pub fn rgba8_desc(
    width: u32,
    height: u32,
    usage: wgpu::TextureUsages,
) -> wgpu::TextureDescriptor<'static> {
    wgpu::TextureDescriptor {
        label: Some("shared"),
        size: wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage,
        view_formats: &[],
    }
}
