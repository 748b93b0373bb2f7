//! One `VkSwapchainKHR` with its images and a "rendered" binary semaphore per image, and the
//! pure choices it is created from (format, extent, image count, present mode).

use ash::vk;

use super::surface::Surface;
use super::PresentMode;
use crate::error::{Error, Result};
use crate::vulkan::{Context, Semaphore, SemaphoreKind};

/// A swapchain and its images. Each image has its own "rendered" semaphore, signalled by
/// the submission that fills it and waited on by its present: a present semaphore is
/// reused only when its image is acquired again, i.e. after the presentation engine has
/// finished with the previous present of that image (the lesson of slang-rhi#777; one per
/// frame in flight instead can be re-signalled while a present still waits on it).
pub(super) struct Swapchain {
    pub(super) raw: vk::SwapchainKHR,
    pub(super) images: Vec<vk::Image>,
    /// One per image, same index.
    pub(super) rendered: Vec<Semaphore>,
    pub(super) format: vk::SurfaceFormatKHR,
    pub(super) extent: vk::Extent2D,
    loader: ash::khr::swapchain::Device,
}

impl Drop for Swapchain {
    fn drop(&mut self) {
        // SAFETY: the presenter drained its queues before dropping a swapchain, so no
        // submission or present uses it; its images are owned by it. The semaphores drop
        // after it (fields), unused too.
        unsafe { self.loader.destroy_swapchain(self.raw, None) };
    }
}

/// What a swapchain is created with, beside the surface.
pub(super) struct Request<'a> {
    pub(super) mode: PresentMode,
    pub(super) formats: &'a [vk::Format],
    /// Used where the surface lets the swapchain choose (Wayland, headless).
    pub(super) extent: vk::Extent2D,
    /// The swapchain it replaces (or null).
    pub(super) old: vk::SwapchainKHR,
}

impl Swapchain {
    /// Creates a swapchain for `surface`, or `None` when the surface has a zero extent
    /// (a minimised window): nothing can be presented until it grows.
    ///
    /// # Errors
    /// [`Error::Unsupported`]: the surface offers no format, not the asked present mode (the
    /// error lists those it has), or no `TRANSFER_DST` image usage. Driver errors.
    pub(super) fn new(
        ctx: &Context,
        loader: &ash::khr::swapchain::Device,
        surface: &Surface,
        request: &Request<'_>,
    ) -> Result<Option<Self>> {
        let pd = ctx.physical_device();
        // SAFETY: valid physical device and surface of one instance.
        let caps = unsafe {
            surface
                .loader
                .get_physical_device_surface_capabilities(pd, surface.raw)
        }
        .map_err(|r| Error::vk("vkGetPhysicalDeviceSurfaceCapabilitiesKHR", r))?;
        // SAFETY: as above.
        let formats = unsafe {
            surface
                .loader
                .get_physical_device_surface_formats(pd, surface.raw)
        }
        .map_err(|r| Error::vk("vkGetPhysicalDeviceSurfaceFormatsKHR", r))?;
        // SAFETY: as above.
        let modes = unsafe {
            surface
                .loader
                .get_physical_device_surface_present_modes(pd, surface.raw)
        }
        .map_err(|r| Error::vk("vkGetPhysicalDeviceSurfacePresentModesKHR", r))?;
        let mode = choose_mode(&modes, request.mode)?;
        let format =
            choose_format(&formats, request.formats).ok_or_else(|| Error::Unsupported {
                what: "a swapchain on this surface".into(),
                reason: "the surface reports no format".into(),
            })?;
        if !caps
            .supported_usage_flags
            .contains(vk::ImageUsageFlags::TRANSFER_DST)
        {
            return Err(Error::Unsupported {
                what: "a swapchain the presenter can copy into".into(),
                reason: format!(
                    "the surface's image usages {:?} lack TRANSFER_DST",
                    caps.supported_usage_flags
                ),
            });
        }
        let extent = choose_extent(&caps, request.extent);
        if extent.width == 0 || extent.height == 0 {
            return Ok(None);
        }
        let info = vk::SwapchainCreateInfoKHR::default()
            .surface(surface.raw)
            .min_image_count(choose_image_count(&caps))
            .image_format(format.format)
            .image_color_space(format.color_space)
            .image_extent(extent)
            .image_array_layers(1)
            .image_usage(vk::ImageUsageFlags::TRANSFER_DST)
            .image_sharing_mode(vk::SharingMode::EXCLUSIVE)
            .pre_transform(choose_transform(&caps))
            .composite_alpha(choose_alpha(&caps))
            .present_mode(mode)
            .clipped(true)
            .old_swapchain(request.old);
        // SAFETY: the surface belongs to the device's instance and the family can present
        // to it (checked by the presenter); every value was chosen from what the surface
        // reports; `old` is the surface's current swapchain or null.
        let raw = unsafe { loader.create_swapchain(&info, None) }
            .map_err(|r| Error::vk("vkCreateSwapchainKHR", r))?;
        // From here on, `chain` destroys the swapchain on an error.
        let mut chain = Self {
            raw,
            images: Vec::new(),
            rendered: Vec::new(),
            format,
            extent,
            loader: loader.clone(),
        };
        // SAFETY: a swapchain of this device.
        chain.images = unsafe { loader.get_swapchain_images(raw) }
            .map_err(|r| Error::vk("vkGetSwapchainImagesKHR", r))?;
        chain.rendered = chain
            .images
            .iter()
            .map(|_| Semaphore::local(ctx, SemaphoreKind::Binary, 0))
            .collect::<Result<_>>()?;
        Ok(Some(chain))
    }
}

/// `wanted` if the surface has it, else an error listing the modes it has (FIFO, which every
/// surface must offer, is the default and always works).
pub(super) fn choose_mode(
    available: &[vk::PresentModeKHR],
    wanted: PresentMode,
) -> Result<vk::PresentModeKHR> {
    let raw = vk::PresentModeKHR::from(wanted);
    if available.contains(&raw) {
        Ok(raw)
    } else {
        Err(Error::Unsupported {
            what: format!("present mode {wanted:?}"),
            reason: format!("the surface offers {available:?}"),
        })
    }
}

/// The first of `preferred` the surface offers in the sRGB non-linear colour space, else
/// the surface's first format.
pub(super) fn choose_format(
    available: &[vk::SurfaceFormatKHR],
    preferred: &[vk::Format],
) -> Option<vk::SurfaceFormatKHR> {
    preferred
        .iter()
        .find_map(|&f| {
            available
                .iter()
                .find(|a| a.format == f && a.color_space == vk::ColorSpaceKHR::SRGB_NONLINEAR)
        })
        .or_else(|| available.first())
        .copied()
}

/// The surface's current extent, or `wanted` clamped to its limits where the surface lets
/// the swapchain decide (current width `u32::MAX`).
pub(super) fn choose_extent(
    caps: &vk::SurfaceCapabilitiesKHR,
    wanted: vk::Extent2D,
) -> vk::Extent2D {
    if caps.current_extent.width != u32::MAX {
        return caps.current_extent;
    }
    vk::Extent2D {
        width: wanted
            .width
            .clamp(caps.min_image_extent.width, caps.max_image_extent.width),
        height: wanted
            .height
            .clamp(caps.min_image_extent.height, caps.max_image_extent.height),
    }
}

/// One image more than the minimum (so acquiring need not wait for the display), within
/// the maximum (0: none).
pub(super) fn choose_image_count(caps: &vk::SurfaceCapabilitiesKHR) -> u32 {
    let count = caps.min_image_count + 1;
    if caps.max_image_count == 0 {
        count
    } else {
        count.min(caps.max_image_count)
    }
}

fn choose_transform(caps: &vk::SurfaceCapabilitiesKHR) -> vk::SurfaceTransformFlagsKHR {
    if caps
        .supported_transforms
        .contains(vk::SurfaceTransformFlagsKHR::IDENTITY)
    {
        vk::SurfaceTransformFlagsKHR::IDENTITY
    } else {
        caps.current_transform
    }
}

fn choose_alpha(caps: &vk::SurfaceCapabilitiesKHR) -> vk::CompositeAlphaFlagsKHR {
    [
        vk::CompositeAlphaFlagsKHR::OPAQUE,
        vk::CompositeAlphaFlagsKHR::INHERIT,
        vk::CompositeAlphaFlagsKHR::PRE_MULTIPLIED,
        vk::CompositeAlphaFlagsKHR::POST_MULTIPLIED,
    ]
    .into_iter()
    .find(|&a| caps.supported_composite_alpha.contains(a))
    .unwrap_or(vk::CompositeAlphaFlagsKHR::OPAQUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(current: (u32, u32), min_count: u32, max_count: u32) -> vk::SurfaceCapabilitiesKHR {
        vk::SurfaceCapabilitiesKHR {
            min_image_count: min_count,
            max_image_count: max_count,
            current_extent: vk::Extent2D {
                width: current.0,
                height: current.1,
            },
            min_image_extent: vk::Extent2D {
                width: 1,
                height: 1,
            },
            max_image_extent: vk::Extent2D {
                width: 4096,
                height: 4096,
            },
            ..Default::default()
        }
    }

    fn sf(format: vk::Format, color_space: vk::ColorSpaceKHR) -> vk::SurfaceFormatKHR {
        vk::SurfaceFormatKHR {
            format,
            color_space,
        }
    }

    #[test]
    fn format_prefers_the_list_in_srgb_nonlinear_then_the_first() {
        let srgb = vk::ColorSpaceKHR::SRGB_NONLINEAR;
        let avail = [
            sf(vk::Format::B8G8R8A8_SRGB, srgb),
            sf(
                vk::Format::A2B10G10R10_UNORM_PACK32,
                vk::ColorSpaceKHR::HDR10_ST2084_EXT,
            ),
            sf(vk::Format::B8G8R8A8_UNORM, srgb),
        ];
        let pick = |pref: &[vk::Format]| choose_format(&avail, pref).map(|f| f.format);
        assert_eq!(
            pick(&[vk::Format::R8G8B8A8_UNORM, vk::Format::B8G8R8A8_UNORM]),
            Some(vk::Format::B8G8R8A8_UNORM)
        );
        // Offered only in another colour space: not taken.
        assert_eq!(
            pick(&[vk::Format::A2B10G10R10_UNORM_PACK32]),
            Some(vk::Format::B8G8R8A8_SRGB)
        );
        assert_eq!(pick(&[]), Some(vk::Format::B8G8R8A8_SRGB));
        assert_eq!(choose_format(&[], &[vk::Format::B8G8R8A8_UNORM]), None);
    }

    #[test]
    fn extent_follows_the_surface_unless_it_leaves_it_open() {
        let wanted = vk::Extent2D {
            width: 640,
            height: 9000,
        };
        assert_eq!(
            choose_extent(&caps((300, 200), 2, 0), wanted),
            vk::Extent2D {
                width: 300,
                height: 200
            }
        );
        assert_eq!(
            choose_extent(&caps((u32::MAX, u32::MAX), 2, 0), wanted),
            vk::Extent2D {
                width: 640,
                height: 4096
            }
        );
        // A minimised window: zero, which the presenter turns into "skipped".
        assert_eq!(choose_extent(&caps((0, 0), 2, 0), wanted).width, 0);
    }

    #[test]
    fn image_count_is_one_above_the_minimum_within_the_maximum() {
        assert_eq!(choose_image_count(&caps((1, 1), 2, 0)), 3);
        assert_eq!(choose_image_count(&caps((1, 1), 2, 8)), 3);
        assert_eq!(choose_image_count(&caps((1, 1), 3, 3)), 3);
    }

    #[test]
    fn mode_is_taken_or_refused_with_the_list() {
        let avail = [vk::PresentModeKHR::FIFO, vk::PresentModeKHR::IMMEDIATE];
        assert_eq!(
            choose_mode(&avail, PresentMode::Immediate).ok(),
            Some(vk::PresentModeKHR::IMMEDIATE)
        );
        let e = choose_mode(&avail, PresentMode::Mailbox).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported { .. }) && e.to_string().contains("IMMEDIATE"),
            "{e}"
        );
    }
}
