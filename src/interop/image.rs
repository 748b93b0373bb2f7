//! [`SharedImage`]: a Vulkan image and its CUDA mipmapped array, the array's layout derived
//! from the image's create info ([`cuda_array_desc`]).

use std::sync::Arc;

use ash::vk;
use cudarc::driver::{sys, CudaStream};

use super::check_same_device;
use super::format::cuda_format;
use crate::cuda::{
    self, ArrayDesc, ArrayLevel, ExternalMemory, HostCopyGate, MipmappedArray, SurfaceObject,
    TextureDesc, TextureObject,
};
use crate::error::{Error, Result};
use crate::util::OneShot;
use crate::vulkan::{self, ExternalImage, ImageDesc, ImageKind, ImageOwner};

/// The CUDA mipmapped-array layout of an image created from `desc`, as
/// [`SharedImage`] maps it:
///
/// | from the image | in the array |
/// |---|---|
/// | `format` | `format`, `channels` by [`cuda_format`] |
/// | `extent` | `width`, `height` |
/// | [`ImageKind::D2`] | `depth` 0 |
/// | [`ImageKind::D2Array`] | `depth` = layers, `CUDA_ARRAY3D_LAYERED` |
/// | [`ImageKind::Cube`] | `depth` 6, `CUDA_ARRAY3D_CUBEMAP` |
/// | [`ImageKind::CubeArray`] | `depth` = layers, `CUBEMAP \| LAYERED` |
/// | [`ImageKind::D3`] | `depth` = `extent.depth` |
/// | `mip_levels` | `levels` |
/// | usage `STORAGE` | `CUDA_ARRAY3D_SURFACE_LDST`, except for BC formats (CUDA has no surfaces on them: sample them with textures) |
/// | usage `COLOR_ATTACHMENT` | `CUDA_ARRAY3D_COLOR_ATTACHMENT` |
///
/// The offset is 0: the image is a dedicated allocation. The import itself is sized from
/// the allocation (`VkMemoryRequirements::size`) and flagged dedicated by
/// [`ExternalImage::export`].
///
/// # Errors
/// [`Error::Unsupported`] when the format has no CUDA array twin (the error names the
/// format and its family's reason); for `LINEAR` tiling (a row-pitch layout that CUDA
/// arrays cannot describe: share such memory as a buffer instead); and for layered images
/// (arrays, cubes) with more than one mip level, whose layout differs between the two APIs
/// (Vulkan keeps each layer's mip chain together, CUDA each level's layers: measured on
/// NVIDIA 580, where layer 1 of level 0 read another layer's bytes). 2D and 3D images
/// with mips, and layered images with one level, share exactly.
pub fn cuda_array_desc(desc: &ImageDesc) -> Result<ArrayDesc> {
    let cuda = cuda_format(desc.format)?;
    if desc.tiling != vk::ImageTiling::OPTIMAL {
        return Err(Error::Unsupported {
            what: format!("a {:?}-tiled image as a CUDA array", desc.tiling),
            reason: "CUDA arrays have the driver's optimal layout; a LINEAR image is rows at \
                     a pitch (share it as a buffer, or create it OPTIMAL)"
                .to_owned(),
        });
    }
    if desc.layers > 1 && desc.mip_levels > 1 {
        return Err(Error::Unsupported {
            what: format!(
                "a {:?} {:?} image with {} layers and {} mip levels as a CUDA array",
                desc.format, desc.kind, desc.layers, desc.mip_levels
            ),
            reason: "Vulkan stores each layer's mip chain together, a CUDA layered mipmapped \
                     array each level's layers, so layers after the first land elsewhere \
                     (measured: NVIDIA 580 on an H100); share layered images with one mip \
                     level, or each layer as its own image"
                .to_owned(),
        });
    }
    let depth = match desc.kind {
        ImageKind::D2 => 0,
        ImageKind::D2Array | ImageKind::Cube | ImageKind::CubeArray => desc.layers,
        ImageKind::D3 => desc.extent.depth,
    };
    let mut array = ArrayDesc {
        offset: 0,
        width: desc.extent.width as usize,
        height: desc.extent.height as usize,
        depth: depth as usize,
        format: cuda.format,
        channels: cuda.channels,
        levels: desc.mip_levels,
        flags: 0,
    };
    if desc.kind.is_layered() {
        array.flags |= sys::CUDA_ARRAY3D_LAYERED;
    }
    if desc.kind.is_cube() {
        array.flags |= sys::CUDA_ARRAY3D_CUBEMAP;
    }
    if desc.usage.contains(vk::ImageUsageFlags::STORAGE) && !array.is_block_compressed() {
        array.flags |= sys::CUDA_ARRAY3D_SURFACE_LDST;
    }
    if desc.usage.contains(vk::ImageUsageFlags::COLOR_ATTACHMENT) {
        array.flags |= sys::CUDA_ARRAY3D_COLOR_ATTACHMENT;
    }
    Ok(array)
}

/// A Vulkan image with its own exportable allocation, imported into CUDA once as a
/// mipmapped array whose layout is derived from the image ([`cuda_array_desc`]).
///
/// Levels, surfaces and textures keep the array alive, the array keeps the import alive, and
/// the import keeps the Vulkan image alive, so `cuSurfObjectDestroy`/`cuTexObjectDestroy` →
/// `cuMipmappedArrayDestroy` → `cuDestroyExternalMemory` → `vkDestroyImage`/`vkFreeMemory`
/// run in that order whatever order the handles are dropped in.
///
/// # Hand-off
/// The image belongs to Vulkan or to CUDA (`VK_QUEUE_FAMILY_EXTERNAL`), and the barriers
/// that move it are recorded by the helpers, never by hand: per frame
/// [`record_release_to_cuda`](SharedImage::record_release_to_cuda) /
/// [`record_acquire_from_cuda`](SharedImage::record_acquire_from_cuda) in the caller's
/// command buffers (with a semaphore between the APIs); for setup and tests the one-shot
/// [`release_to_cuda`](SharedImage::release_to_cuda) /
/// [`acquire_from_cuda`](SharedImage::acquire_from_cuda), which wait.
///
/// ```no_run
/// # fn main() -> vkcuda::Result<()> {
/// use vkcuda::ash::vk;
/// use vkcuda::{cuda, interop::SharedImage, vulkan};
///
/// let vk = vulkan::Context::new(&vulkan::ContextDesc::default())?;
/// let cu = cuda::Context::matching(vk.identity())?;
/// let desc = vulkan::ImageDesc::d2(3840, 2160, vk::Format::R8G8B8A8_UNORM).mips(4);
/// let image = SharedImage::new(&vk, &cu, &desc)?;
/// let surface = image.surface(0)?; // cudaSurfaceObject_t of level 0
/// image.release_to_cuda()?;        // Vulkan's writes done, CUDA may use it
/// // ... kernels on `surface` in `stream` ...
/// # let stream = cu.new_stream()?;
/// image.acquire_from_cuda(&stream, vk::ImageLayout::GENERAL)?;
/// # Ok(()) }
/// ```
pub struct SharedImage {
    array: MipmappedArray,
    vulkan: Arc<ExternalImage>,
}

impl std::fmt::Debug for SharedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedImage")
            .field("vulkan", &self.vulkan)
            .field("array", self.array.desc())
            .finish()
    }
}

impl SharedImage {
    /// Creates an exportable Vulkan image and imports it into CUDA as a mipmapped array.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] when `cu` is not on `vk`'s GPU.
    /// * [`Error::Unsupported`] from [`cuda_array_desc`] (checked before anything is
    ///   created).
    /// * Everything [`ExternalImage::new`] reports, and CUDA import or mapping failures.
    pub fn new(vk: &vulkan::Context, cu: &cuda::Context, desc: &ImageDesc) -> Result<Self> {
        check_same_device(vk, cu)?;
        cuda_array_desc(desc)?;
        Self::from_vulkan(Arc::new(ExternalImage::new(vk, desc)?), cu)
    }

    /// Imports an existing exportable image (for example one made on a wrapped device).
    ///
    /// # Errors
    /// As [`SharedImage::new`]; the image must have been created exportable
    /// ([`ExternalImage::new`]).
    pub fn from_vulkan(image: Arc<ExternalImage>, cu: &cuda::Context) -> Result<Self> {
        check_same_device(image.context(), cu)?;
        let array_desc = cuda_array_desc(image.desc())?;
        let import = image.export()?;
        let owner: Arc<dyn std::any::Any + Send + Sync> = image.clone();
        // SAFETY: `import` is this image's own export: its size is the allocation size
        // from VkMemoryRequirements and it is a dedicated allocation, as described; `owner`
        // keeps the Vulkan memory alive until after cuDestroyExternalMemory.
        let memory = unsafe { ExternalMemory::import_with_owner(cu, import, owner) }?;
        // SAFETY: `array_desc` is derived from the image's own create info
        // (`cuda_array_desc`), and `memory` is that image's dedicated allocation of
        // VkMemoryRequirements size: the image lies inside it at offset 0.
        unsafe { Self::mapped(image, &memory, array_desc) }
    }

    /// A pool image bound at `offset` of a block that CUDA imported as `memory`.
    ///
    /// # Errors
    /// As [`SharedImage::new`] for the array.
    pub(super) fn pooled(
        image: Arc<ExternalImage>,
        memory: &ExternalMemory,
        offset: u64,
    ) -> Result<Self> {
        let array_desc = ArrayDesc {
            offset,
            ..cuda_array_desc(image.desc())?
        };
        // SAFETY: `array_desc` is derived from the image's own create info, and the image
        // is bound at `offset` of the block `memory` imports (its pool slot, which covers
        // its VkMemoryRequirements size): it lies there, laid out as described.
        unsafe { Self::mapped(image, memory, array_desc) }
    }

    /// Maps `image`'s array from `memory`. The array's gate holds the image, so the array
    /// (and every level, surface and texture made from it) keeps the image (and its pool
    /// slot) alive.
    ///
    /// # Safety
    /// 1. `array_desc` describes where and how `image` lies in `memory`.
    unsafe fn mapped(
        image: Arc<ExternalImage>,
        memory: &ExternalMemory,
        array_desc: ArrayDesc,
    ) -> Result<Self> {
        // CUDA's host copies of the levels need the image in CUDA's hands.
        let tracked = image.clone();
        let gate: HostCopyGate = Arc::new(move || match tracked.state().owner {
            ImageOwner::External => Ok(()),
            ImageOwner::Vulkan => Err(Error::invalid(
                "image",
                "a CUDA host copy of a level of a SharedImage that Vulkan owns",
                "the image released to CUDA first (SharedImage::release_to_cuda, \
                 Commands::release_image)",
            )),
        });
        // SAFETY: precondition 1.
        let array = unsafe { memory.map_mipmapped_array_gated(&array_desc, Some(gate)) }?;
        Ok(Self {
            array,
            vulkan: image,
        })
    }

    /// What the Vulkan image was created with.
    pub fn desc(&self) -> &ImageDesc {
        self.vulkan.desc()
    }

    /// The Vulkan side.
    pub fn vulkan(&self) -> &Arc<ExternalImage> {
        &self.vulkan
    }

    /// The CUDA side (its [`MipmappedArray::desc`] is [`cuda_array_desc`] of the image).
    pub fn cuda(&self) -> &MipmappedArray {
        &self.array
    }

    /// Mip level `level` as a CUDA array.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `level` is not below the image's mip levels.
    pub fn level(&self, level: u32) -> Result<ArrayLevel> {
        self.array.level(level)
    }

    /// A surface object on mip `level`, for `surf*read`/`surf*write` in kernels.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the image was created without `STORAGE` usage or
    /// has a BC format (no `CUDA_ARRAY3D_SURFACE_LDST`, see [`cuda_array_desc`]), or
    /// `level` is out of range; [`Error::Cuda`] when the driver call fails.
    pub fn surface(&self, level: u32) -> Result<SurfaceObject> {
        if self.array.desc().flags & sys::CUDA_ARRAY3D_SURFACE_LDST == 0 {
            let desc = self.desc();
            return Err(Error::invalid(
                "image",
                format!(
                    "a {:?} image with usage {:?} has no CUDA surfaces",
                    desc.format, desc.usage
                ),
                "an image created with vk::ImageUsageFlags::STORAGE and a non-BC format",
            ));
        }
        self.array.level(level)?.surface()
    }

    /// A texture object over the whole mip chain (normalized coordinates; `tex*Lod` picks
    /// the level).
    ///
    /// # Errors
    /// As [`MipmappedArray::texture`].
    pub fn texture(&self, desc: &TextureDesc) -> Result<TextureObject> {
        self.array.texture(desc)
    }

    /// A texture object over mip `level` only (normalized or texel coordinates).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `level` is out of range; [`Error::Cuda`] when the
    /// driver call fails.
    pub fn level_texture(&self, level: u32, desc: &TextureDesc) -> Result<TextureObject> {
        self.array.level(level)?.texture(desc)
    }

    /// Releases the image to CUDA (`VK_QUEUE_FAMILY_EXTERNAL`, `GENERAL`) as a one-shot
    /// submission and waits for it: every earlier Vulkan write is then visible to CUDA.
    /// For setup and tests; per frame use [`SharedImage::record_release_to_cuda`].
    ///
    /// # Errors
    /// As [`OneShot::release_image`] (already released, timeout).
    pub fn release_to_cuda(&self) -> Result<()> {
        self.vulkan.context().release_image(&self.vulkan)
    }

    /// Synchronises `stream` (the stream that did CUDA's work on the image), then acquires
    /// the image back for Vulkan into `layout` as a one-shot submission and waits for it.
    /// For setup and tests; per frame use [`SharedImage::record_acquire_from_cuda`].
    ///
    /// # Errors
    /// [`Error::Cuda`] when the stream fails; otherwise as
    /// [`OneShot::acquire_image`] (not released, a layout the usage forbids).
    pub fn acquire_from_cuda(&self, stream: &CudaStream, layout: vk::ImageLayout) -> Result<()> {
        stream
            .synchronize()
            .map_err(|e| Error::cuda("cuStreamSynchronize", e))?;
        self.vulkan.context().acquire_image(&self.vulkan, layout)
    }

    /// Records the release of the image to CUDA; the submission must signal a semaphore
    /// CUDA waits on before its kernels touch the image. See
    /// [`ExternalImage::record_release`].
    ///
    /// # Errors
    /// As [`ExternalImage::record_release`].
    ///
    /// # Safety
    /// As [`ExternalImage::record_release`].
    pub unsafe fn record_release_to_cuda(&self, cmd: vk::CommandBuffer) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { self.vulkan.record_release(cmd) }
    }

    /// Records the acquire of the image back from CUDA into `layout`; the submission must
    /// wait on a semaphore CUDA signalled after its last access. See
    /// [`ExternalImage::record_acquire`].
    ///
    /// # Errors
    /// As [`ExternalImage::record_acquire`].
    ///
    /// # Safety
    /// As [`ExternalImage::record_release`].
    pub unsafe fn record_acquire_from_cuda(
        &self,
        cmd: vk::CommandBuffer,
        layout: vk::ImageLayout,
    ) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { self.vulkan.record_acquire(cmd, layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vk::Format as F;
    use vk::ImageUsageFlags as U;

    const LDST: u32 = sys::CUDA_ARRAY3D_SURFACE_LDST;

    #[test]
    fn every_kind_gets_its_shape() {
        let f = F::R8G8B8A8_UNORM;
        let shape = |d: ImageDesc| {
            let a = cuda_array_desc(&d).expect("shareable");
            (a.width, a.height, a.depth, a.levels, a.flags)
        };
        use sys::{CUDA_ARRAY3D_CUBEMAP as CUBE, CUDA_ARRAY3D_LAYERED as LAYERED};
        assert_eq!(
            shape(ImageDesc::d2(37, 19, f).mips(3)),
            (37, 19, 0, 3, LDST)
        );
        assert_eq!(
            shape(ImageDesc::d2_array(24, 17, 3, f)),
            (24, 17, 3, 1, LDST | LAYERED)
        );
        assert_eq!(shape(ImageDesc::cube(16, f)), (16, 16, 6, 1, LDST | CUBE));
        assert_eq!(
            shape(ImageDesc::cube_array(8, 2, f)),
            (8, 8, 12, 1, LDST | CUBE | LAYERED)
        );
        assert_eq!(shape(ImageDesc::d3(21, 11, 4, f)), (21, 11, 4, 1, LDST));
        let a = cuda_array_desc(&ImageDesc::d2(4, 4, F::R16G16_SFLOAT)).expect("shareable");
        assert_eq!(
            (a.format, a.channels, a.offset),
            (sys::CUarray_format::CU_AD_FORMAT_HALF, 2, 0)
        );
    }

    #[test]
    fn usage_sets_the_flags() {
        let flags = |usage| {
            let d = ImageDesc::d2(8, 8, F::R8G8B8A8_UNORM).usage(usage);
            cuda_array_desc(&d).expect("shareable").flags
        };
        assert_eq!(flags(U::SAMPLED | U::TRANSFER_DST), 0);
        assert_eq!(flags(U::STORAGE), LDST);
        assert_eq!(
            flags(U::COLOR_ATTACHMENT | U::SAMPLED),
            sys::CUDA_ARRAY3D_COLOR_ATTACHMENT
        );
        // BC arrays have no surfaces, whatever the usage says.
        let bc = ImageDesc::d2(16, 16, F::BC7_UNORM_BLOCK).usage(U::STORAGE | U::SAMPLED);
        let a = cuda_array_desc(&bc).expect("BC7 is shareable");
        assert_eq!(a.flags & LDST, 0);
        assert_eq!(a.format, sys::CUarray_format::CU_AD_FORMAT_BC7_UNORM);
    }

    #[test]
    fn unshareable_images_are_refused_with_the_reason() {
        for (desc, words) in [
            (ImageDesc::d2(8, 8, F::R8G8B8_UNORM), "3-channel"),
            (ImageDesc::d2(8, 8, F::D32_SFLOAT), "depth"),
            (
                ImageDesc::d2(8, 8, F::R8G8B8A8_UNORM).tiling(vk::ImageTiling::LINEAR),
                "LINEAR",
            ),
            (
                ImageDesc::d2_array(8, 8, 2, F::R8G8B8A8_UNORM).mips(2),
                "mip chain",
            ),
            (
                ImageDesc::cube(8, F::R8G8B8A8_UNORM).mips(4),
                "6 layers and 4 mip levels",
            ),
        ] {
            match cuda_array_desc(&desc) {
                Err(e @ Error::Unsupported { .. }) => {
                    assert!(e.to_string().contains(words), "{e}");
                }
                other => panic!("{:?}: expected Unsupported, got {other:?}", desc.format),
            }
        }
    }

    #[test]
    fn shared_images_can_be_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<SharedImage>();
    }
}
