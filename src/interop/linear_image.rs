//! [`SharedLinearImage`]: memory CUDA allocates (VMM), seen by Vulkan as a LINEAR 2D image
//! and by CUDA as rows at a pitch ([`PitchedBuffer`]), the pitch derived from one place.

use std::sync::Arc;

use ash::vk;

use super::{check_same_device, check_vmm_handle_type};
use crate::cuda::{self, PitchedBuffer, VmmAllocation};
use crate::error::{Error, Result};
use crate::vulkan::{self, linear_row_bytes, ExternalImage, ImageDesc, LinearLayout};

/// The bytes of one row CUDA sees of an image of `desc` shared as rows at a pitch
/// ([`SharedLinearImage`]): `width * texel bytes`.
///
/// # Errors
/// * [`Error::Unsupported`] for `OPTIMAL` tiling, an image layout CUDA cannot express:
///   optimal tiling is the driver's private arrangement of texels, which CUDA reads only
///   through a mipmapped array mapped from an *import* (`cuExternalMemoryGetMappedMipmappedArray`;
///   [`SharedImage`](super::SharedImage) does that with memory Vulkan owns), never from its
///   own VMM memory, which it sees as a plain pointer.
/// * [`Error::InvalidArgument`] naming `desc.kind`, `desc.mip_levels` or `desc.layers`
///   for anything but one level and one layer of a 2D image; [`Error::Unsupported`] for a
///   format that is not one plane of whole texels (depth/stencil, multi-planar, subsampled,
///   block-compressed).
pub fn pitched_row_bytes(desc: &ImageDesc) -> Result<u64> {
    if desc.tiling == vk::ImageTiling::OPTIMAL {
        return Err(Error::Unsupported {
            what: format!(
                "an OPTIMAL-tiled {:?} image in memory CUDA allocates",
                desc.format
            ),
            reason: "an image layout CUDA cannot express: optimal tiling is the driver's \
                     private texel arrangement, and CUDA sees its own VMM memory only as a \
                     pointer (rows at a pitch need LINEAR tiling; for OPTIMAL images let \
                     Vulkan own the memory: SharedImage::new)"
                .into(),
        });
    }
    linear_row_bytes(desc)
}

/// A LINEAR 2D image whose memory CUDA allocated and owns ([`VmmAllocation`]) and Vulkan
/// imported, addressed by CUDA as rows at a pitch ([`SharedLinearImage::pitched`]).
///
/// # Where the pitch comes from
/// From one place, the Vulkan driver: [`ExternalImage::linear_requirements`] asks it for
/// the image's `VkMemoryRequirements` and `vkGetImageSubresourceLayout` before CUDA
/// allocates, CUDA allocates at least that size and is told that layout (offset, row
/// pitch), and [`ExternalImage::import_linear`] refuses the import
/// ([`Error::InvalidArgument`] naming `expected.row_pitch`, ...) if the image bound to the
/// memory is laid out differently. CUDA never chooses a pitch of its own.
///
/// # Drivers
/// NVIDIA's proprietary driver misreads a LINEAR image on memory not dedicated to it
/// (zeros where CUDA wrote, measured on 580.159.04), so there
/// [`SharedLinearImage::from_cuda`] is refused with [`Error::Unsupported`]; share the
/// memory as a buffer ([`SharedBuffer::from_cuda`](super::SharedBuffer::from_cuda)) and
/// copy its rows instead, as `frame_sharing --producer cuda` does.
///
/// # Hand-off
/// The image's owner and layout are tracked as for every [`ExternalImage`]: it starts
/// released to `VK_QUEUE_FAMILY_EXTERNAL` in `GENERAL` (CUDA holds the contents). Before
/// Vulkan uses it, acquire it ([`OneShot::acquire_image`](crate::util::OneShot::acquire_image)
/// or [`ExternalImage::record_acquire`] on [`SharedLinearImage::vulkan`], after CUDA's
/// stream is synchronised or behind a semaphore CUDA signals); before CUDA touches it again,
/// release it ([`OneShot::release_image`](crate::util::OneShot::release_image) or
/// [`ExternalImage::record_release`] and a semaphore).
///
/// # Drop order
/// CUDA owns the memory: each [`PitchedBuffer`] keeps the [`VmmAllocation`] alive (unmapped
/// and released after the last one), and the Vulkan image holds its own reference to the
/// physical memory through the fd it imported, so either side may go first. GPU work on
/// either side must have finished before its handles drop.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// use vkcuda::ash::vk;
/// use vkcuda::{cuda, interop::SharedLinearImage, util::OneShot, vulkan};
///
/// let vk = vulkan::Context::new(&vulkan::ContextDesc::default())?;
/// let cu = cuda::Context::matching(vk.identity())?;
/// let desc = vulkan::ImageDesc::d2(1919, 1080, vk::Format::R8G8B8A8_UNORM)
///     .tiling(vk::ImageTiling::LINEAR)
///     .usage(vk::ImageUsageFlags::TRANSFER_SRC | vk::ImageUsageFlags::TRANSFER_DST);
/// let image = SharedLinearImage::from_cuda(&vk, &cu, &desc)?;
/// let rows = image.pitched()?; // row y at rows.cu_device_ptr() + y * rows.pitch()
/// // ... a kernel writes the rows on `stream`, then:
/// # let stream = cu.new_stream()?;
/// stream.synchronize()?;
/// vk.acquire_image(image.vulkan(), vk::ImageLayout::GENERAL)?;
/// let texels = vk.read_image(image.vulkan(), 0, 0..1)?;
/// # Ok(()) }
/// ```
pub struct SharedLinearImage {
    vulkan: Arc<ExternalImage>,
    memory: VmmAllocation,
    layout: LinearLayout,
    row_bytes: u64,
}

impl std::fmt::Debug for SharedLinearImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLinearImage")
            .field("vulkan", &self.vulkan)
            .field("memory", &self.memory)
            .field("layout", &self.layout)
            .finish()
    }
}

impl SharedLinearImage {
    /// Allocates the memory with CUDA ([`VmmAllocation::new`], at least the image's
    /// `VkMemoryRequirements::size`, rounded up to [`cuda::vmm_granularity`]) and imports it
    /// into Vulkan as a LINEAR image of `desc` bound at offset 0, its layout checked against
    /// the one CUDA was told (see [`SharedLinearImage`]).
    ///
    /// # Errors
    /// * As [`pitched_row_bytes`]: OPTIMAL tiling ("an image layout CUDA cannot
    ///   express"), other shapes and formats that are not one plane of rows.
    /// * [`Error::InvalidArgument`]: `cu` is not on `vk`'s GPU; `desc.handle_type` is not
    ///   [`MemoryHandleType::OpaqueFd`](crate::external::MemoryHandleType::OpaqueFd).
    /// * As [`ExternalImage::linear_requirements`]: limits, and [`Error::Unsupported`] when
    ///   the driver refuses this format, usage and extent as a LINEAR image with external
    ///   memory, or imports it only as a dedicated allocation.
    /// * As [`VmmAllocation::new`] (no VMM, no POSIX-fd export) and
    ///   [`ExternalImage::import_linear`] (the layout differs, the driver refuses the fd,
    ///   and [`Error::Unsupported`] on NVIDIA's proprietary driver, where such an image
    ///   misreads the memory: there, share the memory as a buffer with
    ///   [`SharedBuffer::from_cuda`](super::SharedBuffer::from_cuda) and copy the rows,
    ///   at the pitch [`pitched_row_bytes`] and the layout of
    ///   [`ExternalImage::linear_requirements`] give).
    pub fn from_cuda(vk: &vulkan::Context, cu: &cuda::Context, desc: &ImageDesc) -> Result<Self> {
        check_same_device(vk, cu)?;
        let row_bytes = pitched_row_bytes(desc)?;
        check_vmm_handle_type(desc.handle_type)?;
        let needs = ExternalImage::linear_requirements(vk, desc)?;
        let memory = VmmAllocation::new(cu, needs.size)?;
        let import = memory.export()?;
        // SAFETY: the fd is an export of a CUDA allocation on `vk`'s GPU (checked above) of
        // exactly `import.size` bytes, at least the image's requirement, not dedicated; VMM
        // memory imports into the device-local type an image's requirements allow, as for
        // buffers (SharedBuffer::from_cuda).
        let image = unsafe { ExternalImage::import_linear(vk, desc, import, &needs.layout) }?;
        Ok(Self {
            vulkan: Arc::new(image),
            memory,
            layout: needs.layout,
            row_bytes,
        })
    }

    /// The image's rows as CUDA sees them: row `y` at `cu_device_ptr() + y * pitch()`,
    /// [`SharedLinearImage::row_bytes`] bytes each. It keeps the CUDA allocation alive.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the layout does not fit the allocation (not after a
    /// successful [`SharedLinearImage::from_cuda`], which checked it).
    pub fn pitched(&self) -> Result<PitchedBuffer> {
        let whole = self.memory.map(0..self.memory.size())?;
        PitchedBuffer::new(
            whole,
            self.layout.offset,
            self.layout.row_pitch,
            self.row_bytes,
            self.desc().extent.height,
        )
    }

    /// Where the texels lie in the memory (the Vulkan driver's layout, which CUDA was told).
    pub fn layout(&self) -> LinearLayout {
        self.layout
    }

    /// Bytes of texel data in each row (`width * texel bytes`).
    pub fn row_bytes(&self) -> u64 {
        self.row_bytes
    }

    /// What the image was created with.
    pub fn desc(&self) -> &ImageDesc {
        self.vulkan.desc()
    }

    /// The Vulkan side: the image, with its owner and layout tracked.
    pub fn vulkan(&self) -> &Arc<ExternalImage> {
        &self.vulkan
    }

    /// The CUDA allocation that owns the memory.
    pub fn vmm(&self) -> &VmmAllocation {
        &self.memory
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimal_tiling_is_a_layout_cuda_cannot_express() {
        let d = ImageDesc::d2(64, 64, vk::Format::R8G8B8A8_UNORM);
        let e = pitched_row_bytes(&d).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("CUDA cannot express"), "{e}");
        let linear = d.tiling(vk::ImageTiling::LINEAR);
        assert_eq!(pitched_row_bytes(&linear).unwrap(), 256);
    }

    #[test]
    fn linear_images_can_be_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<SharedLinearImage>();
    }
}
