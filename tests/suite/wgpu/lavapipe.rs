//! The Vulkan half of the wgpu integration: runs on any Vulkan device wgpu opens (lavapipe
//! in CI). A texture and a buffer made by vkcuda on wgpu's device are written by wgpu,
//! exported, imported into a second (vkcuda-owned) Vulkan device and read there, and the
//! other way round with wgpu reading; the hand-overs go through wgpu's queue and move
//! vkcuda's tracked owner. The refusal
//! paths name what is missing. wgpu's validation layer is on where installed, and any
//! message it logs at error level fails the trial.

use crate::common;
use libtest_mimic::Trial;

use std::sync::Arc;

use anyhow::ensure;
use common::{assert_bytes, pattern_bytes};
use vkcuda::ash::vk;
use vkcuda::util::OneShot;
use vkcuda::vulkan::{self, DeviceSelection, ExternalBuffer, ExternalImage, ImageOwner};
use vkcuda::wgpu;
use vkcuda::wgpu_interop::WgpuContext;

/// wgpu's Vulkan adapter (validation on where the layer is installed), a sharing device
/// opened on it, and vkcuda's own context on the same physical device for the other side
/// of each hand-over.
struct Env {
    adapter: wgpu::Adapter,
    ctx: WgpuContext,
    own: vulkan::Context,
}

fn probe() -> common::Probe<Env> {
    let env = super::common::adapter().and_then(|adapter| {
        let ctx = WgpuContext::open(&adapter, &Default::default()).map_err(|e| e.to_string())?;
        let own = vulkan::Context::new(&vulkan::ContextDesc {
            device: DeviceSelection::Uuid(ctx.vulkan().identity().uuid),
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
        Ok(Env { adapter, ctx, own })
    });
    Arc::new(env)
}

const W: u32 = 37;
const H: u32 = 19;

fn texture_desc(usage: wgpu::TextureUsages) -> wgpu::TextureDescriptor<'static> {
    super::common::rgba8_desc(W, H, usage)
}

/// Reads the whole texture back through wgpu (copy into a mappable buffer).
fn wgpu_read(ctx: &WgpuContext, texture: &wgpu::Texture) -> anyhow::Result<Vec<u8>> {
    let row = W * 4;
    let padded = row.next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: u64::from(padded * H),
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    encoder.copy_texture_to_buffer(
        texture.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &buffer,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(padded),
                rows_per_image: None,
            },
        },
        texture.size(),
    );
    ctx.queue().submit([encoder.finish()]);
    buffer
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    ctx.device().poll(wgpu::PollType::wait_indefinitely())?;
    let mapped = buffer.slice(..).get_mapped_range()?;
    Ok(mapped
        .chunks(padded as usize)
        .flat_map(|r| &r[..row as usize])
        .copied()
        .collect())
}

fn wgpu_write(ctx: &WgpuContext, texture: &wgpu::Texture, data: &[u8]) {
    ctx.queue().write_texture(
        texture.as_image_copy(),
        data,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(W * 4),
            rows_per_image: None,
        },
        texture.size(),
    );
}

/// wgpu writes, the memory is exported and imported into vkcuda's own device and read
/// there; that device writes, wgpu takes the texture back and reads it. Twice, so the
/// second round starts from the state wgpu's tracker kept after the first.
fn texture_roundtrip(env: &Env) -> anyhow::Result<()> {
    let before = super::common::errors();
    let ctx = &env.ctx;
    let usage = wgpu::TextureUsages::COPY_SRC | wgpu::TextureUsages::COPY_DST;
    let tex = ctx.create_texture(&texture_desc(usage))?;
    ensure!(tex.texture().usage().contains(usage));
    // SAFETY: the description is the exported image's own; the handle is fresh.
    let other =
        unsafe { ExternalImage::import(&env.own, tex.image().desc(), tex.image().export()?) }?;
    for round in 0..2 {
        let written = pattern_bytes(u64::from(W * H * 4), round);
        wgpu_write(ctx, tex.texture(), &written);
        ctx.release(&[&tex], &[])?;
        ensure!(tex.image().state().owner == ImageOwner::External);
        env.own.acquire_image(&other, vk::ImageLayout::GENERAL)?;
        let got = env.own.read_image(&other, 0, 0..1)?;
        assert_bytes(&got, &written, &format!("round {round}: wgpu -> Vulkan"))?;

        let back = pattern_bytes(u64::from(W * H * 4), 100 + round);
        env.own.write_image(&other, 0, 0..1, &back)?;
        env.own.release_image(&other)?;
        ctx.acquire(&[&tex], &[])?;
        let got = wgpu_read(ctx, tex.texture())?;
        assert_bytes(&got, &back, &format!("round {round}: Vulkan -> wgpu"))?;
    }
    super::common::no_errors_since(before)
}

/// Reads a buffer back through wgpu (copy into a mappable buffer).
fn wgpu_read_buffer(ctx: &WgpuContext, buffer: &wgpu::Buffer) -> anyhow::Result<Vec<u8>> {
    let readback = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: buffer.size(),
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &readback, 0, buffer.size());
    ctx.queue().submit([encoder.finish()]);
    readback
        .slice(..)
        .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    ctx.device().poll(wgpu::PollType::wait_indefinitely())?;
    let mapped = readback.slice(..).get_mapped_range()?;
    Ok(mapped.to_vec())
}

/// A buffer wgpu writes is released through wgpu's queue, acquired and read through its
/// exported memory on vkcuda's own device; that device writes and releases it, wgpu
/// acquires it and reads it. Twice.
fn buffer_roundtrip(env: &Env) -> anyhow::Result<()> {
    const SIZE: u64 = 4096;
    let before = super::common::errors();
    let ctx = &env.ctx;
    let buf = ctx.create_buffer(&wgpu::BufferDescriptor {
        label: Some("shared"),
        size: SIZE,
        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })?;
    // SAFETY: a fresh handle of this buffer's own memory, described by its export.
    let other = unsafe {
        ExternalBuffer::import(
            &env.own,
            &vulkan::BufferDesc::new(SIZE),
            buf.external().export()?,
        )
    }?;
    // The import starts owned by its device; wgpu's side holds the memory first.
    env.own.release_buffer(&other)?;
    for round in 0..2 {
        let written = pattern_bytes(SIZE, round);
        ctx.queue().write_buffer(buf.buffer(), 0, &written);
        ctx.release(&[], &[&buf])?;
        ensure!(buf.external().owner() == ImageOwner::External);
        env.own.acquire_buffer(&other)?;
        let got = env.own.read_buffer(&other, 0..SIZE)?;
        assert_bytes(&got, &written, &format!("round {round}: wgpu -> Vulkan"))?;

        let back = pattern_bytes(SIZE, 100 + round);
        env.own.write_buffer(&other, 0, &back)?;
        env.own.release_buffer(&other)?;
        ctx.acquire(&[], &[&buf])?;
        ensure!(buf.external().owner() == ImageOwner::Vulkan);
        let got = wgpu_read_buffer(ctx, buf.buffer())?;
        assert_bytes(&got, &back, &format!("round {round}: Vulkan -> wgpu"))?;
    }
    super::common::no_errors_since(before)
}

/// The opened device has what sharing needs; vkcuda never submits on wgpu's queue.
fn open_with_callback(env: &Env) -> anyhow::Result<()> {
    let vk = env.ctx.vulkan();
    let own_queue = vk.queue_count();
    ensure!(own_queue <= 1, "{own_queue} queues");
    if own_queue == 0 {
        // lavapipe: one queue, wgpu's. vkcuda's one-shot submissions are refused.
        let b = ExternalBuffer::new(vk, &vulkan::BufferDesc::new(256))?;
        common::expect_unsupported(vk.read_buffer(&b, 0..256), &["wgpu"])?;
    }
    Ok(())
}

/// A plain wgpu device: memory can be shared (wgpu 30 enables VK_KHR_external_memory_fd
/// itself), semaphores cannot, and the error names the extension and the remedy.
fn refusal_names_the_extension(env: &Env) -> anyhow::Result<()> {
    let (device, queue) = pollster::block_on(env.adapter.request_device(&Default::default()))?;
    let plain = WgpuContext::from_wgpu(&device, &queue)?;
    match plain.check_semaphore_export() {
        Err(vkcuda::Error::MissingExtension { name, needed_for }) => {
            ensure!(name == "VK_KHR_external_semaphore_fd", "{name}");
            ensure!(needed_for.contains("sharing semaphores"), "{needed_for}");
        }
        other => {
            // A device that has the extension and an opened context must agree.
            ensure!(
                env.ctx.check_semaphore_export().is_ok(),
                "plain device: {other:?}, opened device cannot export semaphores"
            );
            anyhow::bail!("a plain wgpu device exports semaphores: {other:?}");
        }
    }
    let opened = env.ctx.check_semaphore_export();
    if let Err(vkcuda::Error::MissingExtension { needed_for, .. }) = &opened {
        ensure!(
            needed_for.contains("does not offer"),
            "opened device: {needed_for}"
        );
    }
    Ok(())
}

/// Descriptions CUDA could not share are refused with the field named.
fn bad_descriptions(env: &Env) -> anyhow::Result<()> {
    let ctx = &env.ctx;
    let mut d = texture_desc(wgpu::TextureUsages::COPY_SRC);
    d.sample_count = 4;
    common::expect_invalid_arg(ctx.create_texture(&d), "desc.sample_count")?;
    let mut d = texture_desc(wgpu::TextureUsages::COPY_SRC);
    d.dimension = wgpu::TextureDimension::D3;
    common::expect_invalid_arg(ctx.create_texture(&d), "desc.dimension")?;
    let mut d = texture_desc(wgpu::TextureUsages::COPY_SRC);
    d.format = wgpu::TextureFormat::Rgba8UnormSrgb;
    common::expect_unsupported(ctx.create_texture(&d), &["Rgba8UnormSrgb"])?;
    let mapped = ctx.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 256,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    common::expect_invalid_arg(mapped, "desc.usage")?;
    let tex = ctx.create_texture(&texture_desc(wgpu::TextureUsages::COPY_SRC))?;
    common::expect_invalid_arg(ctx.release(&[&tex, &tex], &[]), "textures")?;
    common::expect_invalid_arg(ctx.acquire(&[&tex], &[]), "image")?;
    // The tracked owner moves with each hand-over, and a second release is refused.
    ctx.release(&[&tex], &[])?;
    common::expect_invalid_arg(ctx.release(&[&tex], &[]), "image")?;
    ctx.acquire(&[&tex], &[])?;
    ensure!(tex.image().state().owner == ImageOwner::Vulkan);
    let buf = ctx.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 256,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })?;
    common::expect_invalid_arg(ctx.acquire(&[], &[&buf]), "buffer")?;
    common::expect_invalid_arg(ctx.release(&[], &[&buf, &buf]), "buffers")?;
    Ok(())
}

/// This half's trials over its probe.
pub fn trials() -> Vec<Trial> {
    let probe = probe();
    let tests: [common::Test<Env>; 5] = [
        ("open_with_callback", open_with_callback),
        (
            "texture_roundtrip_through_exported_memory",
            texture_roundtrip,
        ),
        ("buffer_through_exported_memory", buffer_roundtrip),
        ("refusal_names_the_extension", refusal_names_the_extension),
        ("bad_descriptions_are_typed", bad_descriptions),
    ];
    common::trials_of(&probe, tests, "wgpu Vulkan adapter")
}
