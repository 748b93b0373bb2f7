//! LINEAR 2D images as rows at a pitch: the layout the driver gives them
//! ([`LinearLayout`], from `vkGetImageSubresourceLayout`), what memory they need before any
//! exists ([`ExternalImage::linear_requirements`]), and the import of memory that was not
//! made for them, checked against a layout fixed in advance
//! ([`ExternalImage::import_linear`]). This is how memory another API allocated (CUDA's
//! VMM memory, another process's frames) becomes a Vulkan image whose bytes the allocator
//! can address as `offset + y * row_pitch + x * texel_bytes`.

use ash::vk;

use super::desc::{check_desc, check_format_limits};
use super::{create_image, ExternalImage};
use crate::error::{Error, Result};
use crate::external::MemoryImport;
use crate::vulkan::memory::{export_flags, Unbound};
use crate::vulkan::{texel_block, Context, ImageDesc, ImageKind};

/// Where the texels of a LINEAR 2D image lie in its memory (`VkSubresourceLayout` of level 0,
/// layer 0, color aspect): row `y` starts at `offset + y * row_pitch` and holds `width`
/// texels, tightly packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearLayout {
    /// Byte offset of the first row from the start of the image's memory binding.
    pub offset: u64,
    /// Bytes from the start of one row to the start of the next.
    pub row_pitch: u64,
    /// Bytes the image's texels span from `offset`, row padding included.
    pub size: u64,
}

/// What a LINEAR image needs from memory it will be bound to at offset 0
/// ([`ExternalImage::linear_requirements`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearRequirements {
    /// Where its texels lie in that memory.
    pub layout: LinearLayout,
    /// `VkMemoryRequirements::size`: the least memory it can be bound to.
    pub size: u64,
    /// Bytes of one row of texels (`width * texel bytes`), at most `layout.row_pitch`.
    pub row_bytes: u64,
}

/// Checks that `desc` is an image that is one plane of rows at a pitch: LINEAR tiling, a
/// 2D image with one level and one layer, a single-plane uncompressed color format.
/// Returns the bytes of one row (`width * texel bytes`).
///
/// # Errors
/// [`Error::InvalidArgument`] naming `desc.tiling`, `desc.kind`, `desc.mip_levels` or
/// `desc.layers`; [`Error::Unsupported`] for a format that is not one plane of whole texels.
pub(crate) fn linear_row_bytes(desc: &ImageDesc) -> Result<u64> {
    if desc.tiling != vk::ImageTiling::LINEAR {
        return Err(Error::invalid(
            "desc.tiling",
            format!("{:?}", desc.tiling),
            "LINEAR: only a linear image is rows at a pitch",
        ));
    }
    if desc.kind != ImageKind::D2 {
        return Err(Error::invalid(
            "desc.kind",
            format!("{:?}", desc.kind),
            "ImageKind::D2 (one plane of rows)",
        ));
    }
    if desc.mip_levels != 1 {
        return Err(Error::invalid(
            "desc.mip_levels",
            desc.mip_levels.to_string(),
            "1 (one plane of rows)",
        ));
    }
    if desc.layers != 1 {
        return Err(Error::invalid(
            "desc.layers",
            desc.layers.to_string(),
            "1 (one plane of rows)",
        ));
    }
    match texel_block(desc.format) {
        Some(b)
            if b.width == 1
                && b.height == 1
                && super::desc::aspect_of(desc.format) == vk::ImageAspectFlags::COLOR =>
        {
            Ok(u64::from(desc.extent.width) * u64::from(b.bytes))
        }
        _ => Err(Error::Unsupported {
            what: format!("{:?} as rows at a pitch", desc.format),
            reason: "only single-plane, uncompressed color formats are one texel per row \
                     element (depth/stencil, multi-planar, subsampled and block-compressed \
                     formats are not)"
                .into(),
        }),
    }
}

/// `vkGetImageSubresourceLayout` of level 0, layer 0, color aspect.
fn layout_of(image: &Unbound<'_, vk::Image>) -> LinearLayout {
    let subresource = vk::ImageSubresource {
        aspect_mask: vk::ImageAspectFlags::COLOR,
        mip_level: 0,
        array_layer: 0,
    };
    // SAFETY: the image is alive, LINEAR-tiled with one level and layer of a single-plane
    // color format (checked by `linear_row_bytes` before it was created).
    let l = unsafe {
        image
            .device()
            .get_image_subresource_layout(image.raw(), subresource)
    };
    LinearLayout {
        offset: l.offset,
        row_pitch: l.row_pitch,
        size: l.size,
    }
}

/// Checks `desc` for a linear import: [`linear_row_bytes`], the device limits, and the driver
/// (importable as `desc.handle_type` into a LINEAR image, not only as a dedicated
/// allocation).
fn check_linear_import(ctx: &Context, desc: &ImageDesc) -> Result<u64> {
    let row_bytes = linear_row_bytes(desc)?;
    check_desc(ctx, desc)?;
    export_flags(ctx, desc.handle_type)?;
    let support = ctx.image_support(desc)?;
    let what = || {
        format!(
            "import of {} memory into a LINEAR {:?} image of {}x{} with usage {:?}",
            desc.handle_type, desc.format, desc.extent.width, desc.extent.height, desc.usage
        )
    };
    if !support.external.importable {
        return Err(Error::Unsupported {
            what: what(),
            reason: "the driver reports the handle type as not importable for this use".into(),
        });
    }
    if support.external.dedicated_only {
        return Err(Error::Unsupported {
            what: what(),
            reason: "the driver imports such images only as dedicated allocations, and memory \
                     allocated for no image in particular (CUDA's VMM memory) is not dedicated"
                .into(),
        });
    }
    check_format_limits(desc, &support)?;
    Ok(row_bytes)
}

/// Refuses a LINEAR image on memory that was imported without being dedicated to it
/// (CUDA's VMM memory, another resource's block) where the driver is known to read and
/// write such an image inconsistently with every other view of the memory.
///
/// Measured on NVIDIA's proprietary driver (580.159.04, H200): of several 1920x1080 RGBA8
/// LINEAR images imported from CUDA allocations in one process, the second one created
/// reads all zeros where CUDA wrote, whichever allocation it imports (also when the same
/// allocation's other import reads correctly), and about 50 of the 8,294,400 bytes written
/// through it differ from what CUDA and a Vulkan buffer over the same memory read. 4K and
/// 512x512 images and every buffer import were exact; a Vulkan pool block imported as a
/// 1x1 LINEAR image read stale bytes too. The layout Vulkan reports is the one used, and
/// the spec makes such aliases well-defined, so vkcuda refuses rather than hand out an
/// image that silently reads other bytes.
pub(super) fn check_linear_in_imported_memory(ctx: &Context, desc: &ImageDesc) -> Result<()> {
    if desc.tiling != vk::ImageTiling::LINEAR || ctx.driver_id() != vk::DriverId::NVIDIA_PROPRIETARY
    {
        return Ok(());
    }
    Err(Error::Unsupported {
        what: format!(
            "a LINEAR {:?} image of {}x{} on imported memory not dedicated to it",
            desc.format, desc.extent.width, desc.extent.height
        ),
        reason: "NVIDIA's driver reads and writes such images inconsistently with the \
                 memory's other views (zeros where CUDA wrote; see \
                 ExternalImage::import_linear); import the memory as a buffer \
                 (ExternalBuffer::import, SharedBuffer::from_cuda) and copy its rows, or let \
                 Vulkan own the image (SharedImage)"
            .into(),
    })
}

/// Refuses a layout that is not the one the memory's owner was told.
fn check_layout(actual: &LinearLayout, expected: &LinearLayout) -> Result<()> {
    for (arg, got, want) in [
        ("expected.offset", actual.offset, expected.offset),
        ("expected.row_pitch", actual.row_pitch, expected.row_pitch),
        ("expected.size", actual.size, expected.size),
    ] {
        if got != want {
            return Err(Error::invalid(
                arg,
                format!(
                    "{want}, but the driver lays this image out at offset {}, row pitch {}, \
                     size {}",
                    actual.offset, actual.row_pitch, actual.size
                ),
                "the image's own vkGetImageSubresourceLayout (ExternalImage::linear_requirements)",
            ));
        }
    }
    Ok(())
}

impl ExternalImage {
    /// What a LINEAR image of `desc` needs from memory it is bound to at offset 0, asked of
    /// the driver before any memory exists: a probe image is created, queried
    /// (`vkGetImageMemoryRequirements`, `vkGetImageSubresourceLayout`) and destroyed. The
    /// memory's owner allocates at least `size` bytes and addresses the texels with
    /// `layout`; [`ExternalImage::import_linear`] then checks that the real image has the same
    /// layout.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] naming `desc.tiling`, `desc.kind`, `desc.mip_levels` or
    ///   `desc.layers`, [`Error::Unsupported`] naming the format: not a one-level,
    ///   one-layer LINEAR 2D image of a single-plane, uncompressed color format.
    /// * As [`ExternalImage::new`] for the rest of `desc` (limits, the driver's
    ///   `vkGetPhysicalDeviceImageFormatProperties2` with the external-memory query for
    ///   LINEAR tiling: [`Error::Unsupported`] naming the missing format feature).
    /// * [`Error::Unsupported`] when the driver imports such images only as dedicated
    ///   allocations, or not at all.
    pub fn linear_requirements(ctx: &Context, desc: &ImageDesc) -> Result<LinearRequirements> {
        let row_bytes = check_linear_import(ctx, desc)?;
        let flags = export_flags(ctx, desc.handle_type)?;
        let probe = create_image(ctx.device(), desc, flags)?;
        Ok(LinearRequirements {
            layout: layout_of(&probe),
            size: probe.requirements().size,
            row_bytes,
        })
    }

    /// Creates a LINEAR image of `desc` bound at offset 0 of memory imported from `import`,
    /// which need not have been made for it (`import.dedicated` false: CUDA's VMM memory, a
    /// pool block), after checking that the driver lays it out as `expected` says (what the
    /// memory's owner was told, from [`ExternalImage::linear_requirements`]).
    ///
    /// The image starts as (External, `GENERAL`), like every import: the memory's owner
    /// holds the contents until [`record_acquire`](Self::record_acquire) or
    /// [`OneShot::acquire_image`](crate::util::OneShot::acquire_image).
    ///
    /// # Errors
    /// * As [`ExternalImage::linear_requirements`].
    /// * [`Error::Unsupported`] on NVIDIA's proprietary driver, which reads and writes a
    ///   LINEAR image on memory not dedicated to it inconsistently with the memory's other
    ///   views (measured: the second of several 1080p imports of CUDA allocations in a
    ///   process reads zeros where CUDA wrote). There, import the memory as a buffer
    ///   ([`ExternalBuffer::import`](crate::vulkan::ExternalBuffer::import)) and copy its
    ///   rows.
    /// * [`Error::InvalidArgument`] naming `expected.offset`, `expected.row_pitch` or
    ///   `expected.size` when this image's layout differs; as [`ExternalImage::import`]
    ///   for the handle and its size.
    ///
    /// On success the fd belongs to Vulkan; on failure vkcuda has closed it.
    ///
    /// # Safety
    /// 1. `import.handle` is an export of memory of a device with this context's UUID, of
    ///    exactly `import.size` bytes, dedicated as `import.dedicated` says, that Vulkan may
    ///    import into `import.memory_type` where that names one (a Vulkan export, such as a
    ///    [`PoolBlock`](crate::vulkan::PoolBlock)'s: a LINEAR image that cannot use the
    ///    exporter's type is refused), otherwise into the first device-local type the
    ///    image's requirements allow (CUDA VMM allocations on the same device may be)
    ///    (VUID-VkMemoryAllocateInfo-allocationSize-01742). A mismatch the driver does not
    ///    catch is undefined behaviour.
    pub unsafe fn import_linear(
        ctx: &Context,
        desc: &ImageDesc,
        import: MemoryImport,
        expected: &LinearLayout,
    ) -> Result<Self> {
        check_linear_import(ctx, desc)?;
        // SAFETY: precondition 1; the layout is checked before the memory is bound.
        unsafe {
            Self::import_checked(ctx, desc, import, |image| {
                check_layout(&layout_of(image), expected)
            })
        }
    }

    /// Where the texels lie in the image's memory, for a LINEAR image with one level and
    /// one layer of a single-plane color format; `None` for any other image.
    pub fn linear_layout(&self) -> Option<LinearLayout> {
        linear_row_bytes(self.desc()).ok()?;
        let subresource = vk::ImageSubresource {
            aspect_mask: vk::ImageAspectFlags::COLOR,
            mip_level: 0,
            array_layer: 0,
        };
        // SAFETY: the image is alive and LINEAR with one level and layer of a single-plane
        // color format (checked above).
        let l = unsafe {
            self.context()
                .device()
                .get_image_subresource_layout(self.raw(), subresource)
        };
        Some(LinearLayout {
            offset: l.offset,
            row_pitch: l.row_pitch,
            size: l.size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::invalid_arg;
    use vk::Format as F;

    #[test]
    fn only_one_plane_of_rows_is_linear() {
        let d = ImageDesc::d2(17, 3, F::R8G8B8A8_UNORM).tiling(vk::ImageTiling::LINEAR);
        assert_eq!(linear_row_bytes(&d).unwrap(), 68);
        let r8 = ImageDesc::d2(33, 3, F::R8_UNORM).tiling(vk::ImageTiling::LINEAR);
        assert_eq!(linear_row_bytes(&r8).unwrap(), 33);
        let (arg, _, _) = invalid_arg(linear_row_bytes(
            &d.clone().tiling(vk::ImageTiling::OPTIMAL),
        ));
        assert_eq!(arg, "desc.tiling");
        let (arg, _, _) = invalid_arg(linear_row_bytes(&d.clone().mips(2)));
        assert_eq!(arg, "desc.mip_levels");
        let arr = ImageDesc::d2_array(8, 8, 2, F::R8G8B8A8_UNORM).tiling(vk::ImageTiling::LINEAR);
        assert_eq!(invalid_arg(linear_row_bytes(&arr)).0, "desc.kind");
        for f in [
            F::D32_SFLOAT,
            F::BC1_RGB_UNORM_BLOCK,
            F::G8_B8R8_2PLANE_420_UNORM,
        ] {
            let d = ImageDesc::d2(8, 8, f).tiling(vk::ImageTiling::LINEAR);
            assert!(
                matches!(linear_row_bytes(&d), Err(Error::Unsupported { .. })),
                "{f:?}"
            );
        }
    }

    #[test]
    fn a_different_layout_is_refused_by_field() {
        let l = LinearLayout {
            offset: 0,
            row_pitch: 256,
            size: 1024,
        };
        assert!(check_layout(&l, &l).is_ok());
        let other = LinearLayout {
            row_pitch: 128,
            ..l
        };
        let (arg, problem, _) = invalid_arg(check_layout(&l, &other));
        assert_eq!(arg, "expected.row_pitch");
        assert!(problem.contains("row pitch 256"), "{problem}");
    }
}
