//! How a source image reaches a swapchain image: a copy where format and extent match, a
//! blit (format conversion, scaling) where the format features allow it; and the barriers
//! of the swapchain image around it.

use ash::vk;

use crate::error::{Error, Result};

/// The transfer command for one present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transfer {
    /// `vkCmdCopyImage`: same format, same extent.
    Copy,
    /// `vkCmdBlitImage` with this filter: converts the format, stretches to the extent.
    Blit(vk::Filter),
}

/// One side of a transfer: format, its features for the image's tiling, extent.
#[derive(Debug, Clone, Copy)]
pub(super) struct Side {
    pub(super) format: vk::Format,
    pub(super) features: vk::FormatFeatureFlags,
    pub(super) extent: vk::Extent2D,
}

/// Copy where format and extent match; else a blit if the source format has `BLIT_SRC` and
/// the swapchain's `BLIT_DST` (linear filtering when stretching and the source allows it).
///
/// # Errors
/// [`Error::Unsupported`] naming both formats and the missing feature.
pub(super) fn choose(src: Side, dst: Side) -> Result<Transfer> {
    if src.format == dst.format && src.extent == dst.extent {
        return Ok(Transfer::Copy);
    }
    let missing = [
        (src, vk::FormatFeatureFlags::BLIT_SRC, "source"),
        (dst, vk::FormatFeatureFlags::BLIT_DST, "swapchain"),
    ]
    .into_iter()
    .find(|(side, feature, _)| !side.features.contains(*feature));
    if let Some((side, feature, which)) = missing {
        return Err(Error::Unsupported {
            what: format!(
                "presenting a {:?} {}x{} image on a {:?} {}x{} swapchain",
                src.format,
                src.extent.width,
                src.extent.height,
                dst.format,
                dst.extent.width,
                dst.extent.height
            ),
            reason: format!(
                "it needs a blit, and the {which} format {:?} lacks {feature:?}",
                side.format
            ),
        });
    }
    let linear = src.extent != dst.extent
        && src
            .features
            .contains(vk::FormatFeatureFlags::SAMPLED_IMAGE_FILTER_LINEAR);
    Ok(Transfer::Blit(if linear {
        vk::Filter::LINEAR
    } else {
        vk::Filter::NEAREST
    }))
}

fn layers() -> vk::ImageSubresourceLayers {
    vk::ImageSubresourceLayers {
        aspect_mask: vk::ImageAspectFlags::COLOR,
        mip_level: 0,
        base_array_layer: 0,
        layer_count: 1,
    }
}

fn corner(e: vk::Extent2D) -> vk::Offset3D {
    // Extents of images are at most the device limits, far below i32::MAX.
    vk::Offset3D {
        x: i32::try_from(e.width).unwrap_or(i32::MAX),
        y: i32::try_from(e.height).unwrap_or(i32::MAX),
        z: 1,
    }
}

/// Records `transfer` from `src` (level 0, layer 0, in `TRANSFER_SRC_OPTIMAL`) into the
/// whole of `dst` (a swapchain image in `TRANSFER_DST_OPTIMAL`).
///
/// # Safety
/// 1. `cmd` is recording, from a pool of `device`; both images belong to `device`, are in
///    those layouts when the command executes, and live until it completes.
/// 2. `transfer` was chosen by [`choose`] for these images.
pub(super) unsafe fn record(
    device: &ash::Device,
    cmd: vk::CommandBuffer,
    transfer: Transfer,
    src: (vk::Image, vk::Extent2D),
    dst: (vk::Image, vk::Extent2D),
) {
    let src_layout = vk::ImageLayout::TRANSFER_SRC_OPTIMAL;
    let dst_layout = vk::ImageLayout::TRANSFER_DST_OPTIMAL;
    match transfer {
        Transfer::Copy => {
            let region = vk::ImageCopy {
                src_subresource: layers(),
                src_offset: vk::Offset3D::default(),
                dst_subresource: layers(),
                dst_offset: vk::Offset3D::default(),
                extent: vk::Extent3D {
                    width: dst.1.width,
                    height: dst.1.height,
                    depth: 1,
                },
            };
            // SAFETY: preconditions 1 and 2 (same format and extent).
            unsafe { device.cmd_copy_image(cmd, src.0, src_layout, dst.0, dst_layout, &[region]) };
        }
        Transfer::Blit(filter) => {
            let region = vk::ImageBlit {
                src_subresource: layers(),
                src_offsets: [vk::Offset3D::default(), corner(src.1)],
                dst_subresource: layers(),
                dst_offsets: [vk::Offset3D::default(), corner(dst.1)],
            };
            // SAFETY: preconditions 1 and 2 (blit features checked).
            unsafe {
                device.cmd_blit_image(cmd, src.0, src_layout, dst.0, dst_layout, &[region], filter)
            };
        }
    }
}

/// Records the swapchain image's barrier `old` → `new` between the given stages and
/// accesses (queue family unchanged).
///
/// # Safety
/// `cmd` is recording, from a pool of `device`; `image` is a swapchain image of `device`.
pub(super) unsafe fn record_swapchain_barrier(
    device: &ash::Device,
    cmd: vk::CommandBuffer,
    image: vk::Image,
    (old, new): (vk::ImageLayout, vk::ImageLayout),
    (src_stage, src_access): (vk::PipelineStageFlags, vk::AccessFlags),
    (dst_stage, dst_access): (vk::PipelineStageFlags, vk::AccessFlags),
) {
    let barrier = vk::ImageMemoryBarrier::default()
        .src_access_mask(src_access)
        .dst_access_mask(dst_access)
        .old_layout(old)
        .new_layout(new)
        .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
        .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
        .image(image)
        .subresource_range(vk::ImageSubresourceRange {
            aspect_mask: vk::ImageAspectFlags::COLOR,
            base_mip_level: 0,
            level_count: 1,
            base_array_layer: 0,
            layer_count: 1,
        });
    // SAFETY: the caller's preconditions.
    unsafe {
        device.cmd_pipeline_barrier(
            cmd,
            src_stage,
            dst_stage,
            vk::DependencyFlags::empty(),
            &[],
            &[],
            &[barrier],
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLIT: vk::FormatFeatureFlags = vk::FormatFeatureFlags::from_raw(
        vk::FormatFeatureFlags::BLIT_SRC.as_raw()
            | vk::FormatFeatureFlags::BLIT_DST.as_raw()
            | vk::FormatFeatureFlags::SAMPLED_IMAGE_FILTER_LINEAR.as_raw(),
    );

    fn side(format: vk::Format, features: vk::FormatFeatureFlags, w: u32) -> Side {
        Side {
            format,
            features,
            extent: vk::Extent2D {
                width: w,
                height: 10,
            },
        }
    }

    #[test]
    fn copy_when_format_and_extent_match_even_without_blit() {
        let none = vk::FormatFeatureFlags::empty();
        let s = side(vk::Format::B8G8R8A8_UNORM, none, 64);
        assert_eq!(choose(s, s).ok(), Some(Transfer::Copy));
    }

    #[test]
    fn blit_converts_rgba_to_bgra_and_filters_only_when_stretching() {
        let src = side(vk::Format::R8G8B8A8_UNORM, BLIT, 64);
        let dst = side(vk::Format::B8G8R8A8_UNORM, BLIT, 64);
        assert_eq!(
            choose(src, dst).ok(),
            Some(Transfer::Blit(vk::Filter::NEAREST))
        );
        let wide = side(vk::Format::B8G8R8A8_UNORM, BLIT, 128);
        assert_eq!(
            choose(src, wide).ok(),
            Some(Transfer::Blit(vk::Filter::LINEAR))
        );
        let no_linear = side(
            vk::Format::R8G8B8A8_UNORM,
            vk::FormatFeatureFlags::BLIT_SRC,
            64,
        );
        assert_eq!(
            choose(no_linear, wide).ok(),
            Some(Transfer::Blit(vk::Filter::NEAREST))
        );
    }

    #[test]
    fn missing_blit_feature_is_unsupported_naming_it() {
        let src = side(
            vk::Format::R8G8B8A8_UNORM,
            vk::FormatFeatureFlags::empty(),
            64,
        );
        let dst = side(vk::Format::B8G8R8A8_UNORM, BLIT, 64);
        let e = choose(src, dst).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("BLIT_SRC"), "{e}");
        assert!(e.to_string().contains("R8G8B8A8_UNORM"), "{e}");
    }
}
