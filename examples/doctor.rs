//! `cargo run --example doctor`: what this machine can share between Vulkan and CUDA.
//!
//! Lists the Vulkan devices (type, UUID, the extensions vkcuda uses, whether each can
//! present: `VK_KHR_swapchain`, and a `VK_EXT_headless_surface` with no display), which external memory
//! and semaphore handle types each can export, whether a CUDA driver is present, the CUDA
//! devices, and which one matches the Vulkan device vkcuda would choose. Then it proves the
//! Vulkan half works: it exports a buffer's memory, imports it back as a second allocation
//! and checks that bytes written through one are read through the other. Everything it
//! cannot do is said, with the reason.

use anyhow::Result;
use vkcuda::external::{MemoryHandleType, SemaphoreHandleType};
use vkcuda::util::OneShot;
use vkcuda::vulkan::{
    self, BufferDesc, ContextDesc, DeviceSelection, ExternalBuffer, SemaphoreKind,
};
use vkcuda::{cuda, Error};

fn version(v: u32) -> String {
    format!(
        "{}.{}.{}",
        ash::vk::api_version_major(v),
        ash::vk::api_version_minor(v),
        ash::vk::api_version_patch(v)
    )
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Export capabilities of one device, opened on its own.
fn report_exports(index: usize) {
    let desc = ContextDesc {
        device: DeviceSelection::Index(index),
        ..ContextDesc::default()
    };
    let vk = match vulkan::Context::new(&desc) {
        Ok(vk) => vk,
        Err(e) => return println!("    cannot open it: {e}"),
    };
    let usage = BufferDesc::new(1).usage;
    let mut memory = Vec::new();
    for t in MemoryHandleType::ALL {
        match vk.buffer_support(usage, t) {
            Ok(s) if s.exportable => memory.push(t.to_string()),
            _ => {}
        }
    }
    println!("    buffer memory exportable as: {}", list(&memory));
    for kind in [SemaphoreKind::Binary, SemaphoreKind::Timeline] {
        let mut sems = Vec::new();
        for t in SemaphoreHandleType::ALL {
            match vk.semaphore_support(kind, t) {
                Ok(s) if s.exportable => sems.push(t.to_string()),
                _ => {}
            }
        }
        println!("    {kind:?} semaphores exportable as: {}", list(&sems));
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".into()
    } else {
        items.join(", ")
    }
}

/// Exports a buffer, imports it back, and checks the bytes cross: the Vulkan half of
/// zero-copy, which works on lavapipe too.
fn vulkan_zero_copy(vk: &vulkan::Context) -> Result<()> {
    let size = 1 << 20;
    let a = ExternalBuffer::new(vk, &BufferDesc::new(size))?;
    let b = a.alias()?;
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    vk.write_buffer(&a, 0, &data)?;
    anyhow::ensure!(vk.read_buffer(&b, 0..size)? == data, "bytes differ");
    println!(
        "  Vulkan zero-copy: OK ({} MiB exported as an fd, imported as a second allocation, bytes identical)",
        size >> 20
    );
    Ok(())
}

fn main() -> Result<()> {
    if let Ok(names) = vulkan::instance_extension_names() {
        let surfaces: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| n.contains("surface"))
            .collect();
        println!(
            "Vulkan instance surface extensions: {}",
            surfaces.join(", ")
        );
    }
    println!("Vulkan devices:");
    let devices = match vulkan::enumerate_devices() {
        Ok(d) => d,
        Err(e) => {
            println!("  none: {e}");
            println!("  install a Vulkan driver and loader (Debian: apt-get install mesa-vulkan-drivers libvulkan1)");
            Vec::new()
        }
    };
    for d in &devices {
        println!(
            "  [{}] {} ({:?}, Vulkan {})\n    UUID {}\n    external_memory_fd {}, external_semaphore_fd {}, external_memory_dma_buf {}\n    swapchain {}, presents to a VK_EXT_headless_surface (no display) {}",
            d.index,
            d.identity.name,
            d.device_type,
            version(d.api_version),
            d.identity.uuid,
            yes(d.memory_fd),
            yes(d.semaphore_fd),
            yes(d.dma_buf),
            yes(d.swapchain),
            yes(d.headless_present),
        );
        report_exports(d.index);
    }

    println!("\nCUDA:");
    let cuda_devices = if cuda::is_driver_present() {
        match cuda::Context::devices() {
            Ok(list) => list,
            Err(e) => {
                println!("  driver present but unusable: {e}");
                Vec::new()
            }
        }
    } else {
        println!("  no CUDA driver (libcuda) on this machine: the CUDA half cannot run here");
        Vec::new()
    };
    for d in &cuda_devices {
        println!("  #{} {} UUID {}", d.ordinal, d.name, d.uuid);
    }

    println!("\nvkcuda's choice:");
    match vulkan::Context::new(&ContextDesc::default()) {
        Err(e) => println!("  no usable Vulkan device: {e}"),
        Ok(vk) => {
            println!(
                "  Vulkan device: {} ({})",
                vk.identity().name,
                vk.identity().uuid
            );
            if let Err(e) = vulkan_zero_copy(&vk) {
                println!("  Vulkan zero-copy check FAILED: {e:#}");
            }
            match cuda::Context::matching(vk.identity()) {
                Ok(cu) => println!(
                    "  CUDA device #{} {} matches by UUID: Vulkan <-> CUDA sharing is available",
                    cu.ordinal(),
                    cu.name()
                ),
                Err(e @ Error::Missing { .. }) => {
                    println!("  CUDA: {e}; only the Vulkan half runs here")
                }
                Err(e) => println!("  CUDA: {e}"),
            }
            if !vk.can_export_semaphore_fds() {
                println!("  semaphores: this device cannot export semaphore fds (VK_KHR_external_semaphore_fd missing), so Vulkan/CUDA sync is unavailable here");
            }
        }
    }
    Ok(())
}
