//! Exportable images and buffers made by vkcuda on wgpu's device and wrapped as
//! `wgpu::Texture` / `wgpu::Buffer`.

use std::sync::Arc;

use ash::vk;
use wgpu::hal::api::Vulkan;

use super::WgpuContext;
use crate::cuda;
use crate::error::{Error, Result};
use crate::interop::{SharedBuffer, SharedImage};
use crate::vulkan::{BufferDesc, ExternalBuffer, ExternalImage, ImageDesc};

/// A `wgpu::Texture` whose `VkImage` and memory are a vkcuda [`ExternalImage`] (exportable,
/// dedicated). wgpu holds the image through a drop guard, so the image lives as long as
/// either side uses it. Made by [`WgpuContext::create_texture`].
#[derive(Debug, Clone)]
pub struct WgpuTexture {
    texture: wgpu::Texture,
    image: Arc<ExternalImage>,
}

/// A `wgpu::Buffer` whose `VkBuffer` and memory are a vkcuda [`ExternalBuffer`]. Made by
/// [`WgpuContext::create_buffer`]; wgpu cannot map it (`MAP_READ`/`MAP_WRITE` are refused).
#[derive(Debug, Clone)]
pub struct WgpuBuffer {
    buffer: wgpu::Buffer,
    external: Arc<ExternalBuffer>,
}

/// The Vulkan format of a wgpu format that CUDA can share (the formats of
/// [`crate::interop::format`] that wgpu names), or `None`.
pub fn vulkan_format(format: wgpu::TextureFormat) -> Option<vk::Format> {
    use vk::Format as V;
    use wgpu::TextureFormat as W;
    Some(match format {
        W::R8Unorm => V::R8_UNORM,
        W::R8Snorm => V::R8_SNORM,
        W::R8Uint => V::R8_UINT,
        W::R8Sint => V::R8_SINT,
        W::Rg8Unorm => V::R8G8_UNORM,
        W::Rg8Snorm => V::R8G8_SNORM,
        W::Rg8Uint => V::R8G8_UINT,
        W::Rg8Sint => V::R8G8_SINT,
        W::Rgba8Unorm => V::R8G8B8A8_UNORM,
        W::Rgba8Snorm => V::R8G8B8A8_SNORM,
        W::Rgba8Uint => V::R8G8B8A8_UINT,
        W::Rgba8Sint => V::R8G8B8A8_SINT,
        W::R16Uint => V::R16_UINT,
        W::R16Sint => V::R16_SINT,
        W::R16Float => V::R16_SFLOAT,
        W::Rg16Uint => V::R16G16_UINT,
        W::Rg16Sint => V::R16G16_SINT,
        W::Rg16Float => V::R16G16_SFLOAT,
        W::Rgba16Uint => V::R16G16B16A16_UINT,
        W::Rgba16Sint => V::R16G16B16A16_SINT,
        W::Rgba16Float => V::R16G16B16A16_SFLOAT,
        W::R32Uint => V::R32_UINT,
        W::R32Sint => V::R32_SINT,
        W::R32Float => V::R32_SFLOAT,
        W::Rg32Uint => V::R32G32_UINT,
        W::Rg32Sint => V::R32G32_SINT,
        W::Rg32Float => V::R32G32_SFLOAT,
        W::Rgba32Uint => V::R32G32B32A32_UINT,
        W::Rgba32Sint => V::R32G32B32A32_SINT,
        W::Rgba32Float => V::R32G32B32A32_SFLOAT,
        _ => return None,
    })
}

/// Vulkan image usage for wgpu texture usages, as wgpu-hal maps them.
fn image_usage(usage: wgpu::TextureUsages) -> vk::ImageUsageFlags {
    use vk::ImageUsageFlags as V;
    use wgpu::TextureUsages as W;
    [
        (W::COPY_SRC, V::TRANSFER_SRC),
        (W::COPY_DST, V::TRANSFER_DST),
        (W::TEXTURE_BINDING, V::SAMPLED),
        (W::STORAGE_BINDING, V::STORAGE),
        (W::RENDER_ATTACHMENT, V::COLOR_ATTACHMENT),
    ]
    .into_iter()
    .filter(|(w, _)| usage.contains(*w))
    .fold(V::empty(), |acc, (_, v)| acc | v)
}

/// wgpu-hal's state set for texture usages (what `create_texture` would pass).
fn texture_uses(usage: wgpu::TextureUsages) -> wgpu::TextureUses {
    use wgpu::TextureUsages as W;
    use wgpu::TextureUses as U;
    [
        (W::COPY_SRC, U::COPY_SRC),
        (W::COPY_DST, U::COPY_DST),
        (W::TEXTURE_BINDING, U::RESOURCE),
        (
            W::STORAGE_BINDING,
            U::STORAGE_READ_ONLY | U::STORAGE_WRITE_ONLY | U::STORAGE_READ_WRITE,
        ),
        (W::RENDER_ATTACHMENT, U::COLOR_TARGET),
    ]
    .into_iter()
    .filter(|(w, _)| usage.contains(*w))
    .fold(U::empty(), |acc, (_, u)| acc | u)
}

/// The vkcuda description of a wgpu texture descriptor, or what is wrong with it.
fn image_desc(desc: &wgpu::TextureDescriptor<'_>) -> Result<ImageDesc> {
    if desc.dimension != wgpu::TextureDimension::D2 {
        return Err(Error::invalid(
            "desc.dimension",
            format!("{:?}", desc.dimension),
            "D2 (with any number of array layers)",
        ));
    }
    if desc.sample_count != 1 {
        return Err(Error::invalid(
            "desc.sample_count",
            desc.sample_count.to_string(),
            "1 (CUDA cannot import multisampled images)",
        ));
    }
    if !desc.view_formats.is_empty() {
        return Err(Error::invalid(
            "desc.view_formats",
            format!("{:?}", desc.view_formats),
            "none (the image is created without MUTABLE_FORMAT)",
        ));
    }
    let format = vulkan_format(desc.format).ok_or_else(|| Error::Unsupported {
        what: format!("sharing a {:?} texture", desc.format),
        reason: "CUDA has no array format for it (see vkcuda::wgpu_interop::vulkan_format)".into(),
    })?;
    let usage = image_usage(desc.usage);
    let (w, h, layers) = (
        desc.size.width,
        desc.size.height,
        desc.size.depth_or_array_layers,
    );
    let image = if layers == 1 {
        ImageDesc::d2(w, h, format)
    } else {
        ImageDesc::d2_array(w, h, layers, format)
    };
    Ok(image.mips(desc.mip_level_count).usage(usage))
}

impl WgpuContext {
    /// Creates an exportable dedicated image on wgpu's device as `desc` describes (2D, one
    /// sample, a format [`vulkan_format`] knows, no view formats) and wraps it as a
    /// `wgpu::Texture` with exactly `desc.usage`. The texture starts
    /// uninitialised, like any new wgpu texture.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field of `desc`; [`Error::Unsupported`] for a
    /// format CUDA cannot share; otherwise as [`ExternalImage::new`].
    pub fn create_texture(&self, desc: &wgpu::TextureDescriptor<'_>) -> Result<WgpuTexture> {
        let image = Arc::new(ExternalImage::new(self.vulkan(), &image_desc(desc)?)?);
        let hal_desc = wgpu::hal::TextureDescriptor {
            label: desc.label,
            size: desc.size,
            mip_level_count: desc.mip_level_count,
            sample_count: desc.sample_count,
            dimension: desc.dimension,
            format: desc.format,
            usage: texture_uses(desc.usage),
            memory_flags: wgpu::hal::MemoryFlags::empty(),
            view_formats: Vec::new(),
        };
        let guard = image.clone();
        let hal_texture = {
            // SAFETY: the guard is only used to wrap the image; dropped at once.
            let hal =
                unsafe { self.device().as_hal::<Vulkan>() }.ok_or_else(|| Error::Unsupported {
                    what: "wrapping a texture for wgpu".into(),
                    reason: "the device is not on the Vulkan backend".into(),
                })?;
            // SAFETY: the image was created on this device as `hal_desc` says (same extent,
            // levels, format, usage, no MUTABLE_FORMAT and no view formats); the drop
            // callback holds the image (and its memory, `TextureMemory::External`) until
            // wgpu is done with it.
            unsafe {
                hal.texture_from_raw(
                    image.raw(),
                    &hal_desc,
                    Some(Box::new(move || drop(guard))),
                    wgpu::hal::vulkan::TextureMemory::External,
                )
            }
        };
        // SAFETY: made from this device's hal device, respecting `desc`; a new image is in
        // UNDEFINED layout, which `UNINITIALIZED` tells wgpu.
        let texture = unsafe {
            self.device().create_texture_from_hal::<Vulkan>(
                hal_texture,
                desc,
                wgpu::TextureUses::UNINITIALIZED,
            )
        };
        Ok(WgpuTexture { texture, image })
    }

    /// Creates an exportable dedicated buffer on wgpu's device of `desc.size` bytes and
    /// wraps it as a `wgpu::Buffer` with `desc.usage`.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`]: `desc.usage` has `MAP_READ`/`MAP_WRITE` or
    ///   `desc.mapped_at_creation` is set (wgpu cannot map foreign memory), or the size is 0.
    /// * Otherwise as [`ExternalBuffer::new`].
    pub fn create_buffer(&self, desc: &wgpu::BufferDescriptor<'_>) -> Result<WgpuBuffer> {
        use vk::BufferUsageFlags as V;
        use wgpu::BufferUsages as W;
        if desc.usage.intersects(W::MAP_READ | W::MAP_WRITE) || desc.mapped_at_creation {
            return Err(Error::invalid(
                "desc.usage",
                format!(
                    "{:?} (mapped at creation: {})",
                    desc.usage, desc.mapped_at_creation
                ),
                "no MAP_READ/MAP_WRITE and not mapped at creation: wgpu cannot map foreign \
                 memory (copy through a mappable wgpu buffer)",
            ));
        }
        let usage = [
            (W::COPY_SRC, V::TRANSFER_SRC),
            (W::COPY_DST, V::TRANSFER_DST),
            (W::INDEX, V::INDEX_BUFFER),
            (W::VERTEX, V::VERTEX_BUFFER),
            (W::UNIFORM, V::UNIFORM_BUFFER),
            (W::STORAGE, V::STORAGE_BUFFER),
            (W::INDIRECT, V::INDIRECT_BUFFER),
        ]
        .into_iter()
        .filter(|(w, _)| desc.usage.contains(*w))
        .fold(V::empty(), |acc, (_, v)| acc | v);
        let external = Arc::new(ExternalBuffer::new(
            self.vulkan(),
            &BufferDesc::new(desc.size).usage(usage),
        )?);
        let guard = external.clone();
        // SAFETY: the buffer outlives the hal buffer: the drop callback holds it until wgpu
        // is done with it, and wgpu never destroys or maps it.
        let hal_buffer = unsafe {
            wgpu::hal::vulkan::Buffer::from_raw_externally_owned(
                external.raw(),
                Box::new(move || drop(guard)),
            )
        };
        // SAFETY: created on this device with `desc.size` bytes and the usage `desc` asks,
        // bound to its memory (initialised as far as Vulkan is concerned), never 0 bytes
        // (`ExternalBuffer::new` refuses that).
        let buffer = unsafe {
            self.device()
                .create_buffer_from_hal::<Vulkan>(hal_buffer, desc)
        };
        Ok(WgpuBuffer { buffer, external })
    }
}

impl WgpuTexture {
    /// The texture, for wgpu passes and copies.
    pub fn texture(&self) -> &wgpu::Texture {
        &self.texture
    }

    /// vkcuda's image (export it, or share it with CUDA).
    pub fn image(&self) -> &Arc<ExternalImage> {
        &self.image
    }

    /// Imports the image into CUDA ([`SharedImage::from_vulkan`]); import once and reuse.
    ///
    /// # Errors
    /// As [`SharedImage::from_vulkan`].
    pub fn share(&self, cu: &cuda::Context) -> Result<SharedImage> {
        SharedImage::from_vulkan(self.image.clone(), cu)
    }
}

impl WgpuBuffer {
    /// The buffer, for wgpu passes and copies.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// vkcuda's buffer (export it, or share it with CUDA).
    pub fn external(&self) -> &Arc<ExternalBuffer> {
        &self.external
    }

    /// Imports the buffer into CUDA ([`SharedBuffer::from_vulkan`]).
    ///
    /// # Errors
    /// As [`SharedBuffer::from_vulkan`].
    pub fn share(&self, cu: &cuda::Context) -> Result<SharedBuffer> {
        SharedBuffer::from_vulkan(self.external.clone(), cu)
    }
}
