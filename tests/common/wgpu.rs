//! wgpu for the `wgpu` feature's tests: a Vulkan adapter with wgpu's validation on (where
//! the layer is installed), and a count of the errors wgpu logs (its validation callback
//! logs through `log`).

use std::sync::atomic::{AtomicU64, Ordering};

use vkcuda::wgpu;

static ERRORS: AtomicU64 = AtomicU64::new(0);

struct CountErrors;

impl log::Log for CountErrors {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Error
    }
    fn log(&self, r: &log::Record<'_>) {
        if r.level() == log::Level::Error && r.target().starts_with("wgpu") {
            ERRORS.fetch_add(1, Ordering::Relaxed);
            eprintln!("wgpu error: {}", r.args());
        }
    }
    fn flush(&self) {}
}

/// wgpu's first Vulkan adapter, from an instance with validation on; installs the error
/// counter.
pub fn adapter() -> Result<wgpu::Adapter, String> {
    let _ = log::set_logger(&CountErrors).map(|()| log::set_max_level(log::LevelFilter::Error));
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
