//! `VK_EXT_headless_surface`: a surface with no display, so a device can present (acquire,
//! present, recreate) where no window system runs. Used by [`super::enumerate_devices`] to
//! tell which devices can, and by the `window` feature's presenter.

use std::ffi::CStr;

use ash::vk;

use crate::error::{Error, Result};

/// The instance extensions a headless surface needs.
pub(super) const INSTANCE_EXTENSIONS: [&CStr; 2] =
    [ash::khr::surface::NAME, ash::ext::headless_surface::NAME];

/// Creates a headless surface
/// ([vkCreateHeadlessSurfaceEXT](https://registry.khronos.org/vulkan/specs/latest/man/html/vkCreateHeadlessSurfaceEXT.html)).
/// The caller destroys it with `vkDestroySurfaceKHR`.
///
/// # Safety
/// 1. `instance` was created from `entry` with [`INSTANCE_EXTENSIONS`] enabled.
pub(super) unsafe fn create_surface(
    entry: &ash::Entry,
    instance: &ash::Instance,
) -> Result<vk::SurfaceKHR> {
    let loader = ash::ext::headless_surface::Instance::new(entry, instance);
    let info = vk::HeadlessSurfaceCreateInfoEXT::default();
    // SAFETY: precondition 1: the extension is enabled, so the entry point is loaded.
    unsafe { loader.create_headless_surface(&info, None) }
        .map_err(|r| Error::vk("vkCreateHeadlessSurfaceEXT", r))
}

/// For each of `physicals` (devices of `instance`): whether one of its queue families can
/// present to a headless surface. All `false` if the surface cannot be made.
///
/// `instance` must have been created from `entry` with [`INSTANCE_EXTENSIONS`] enabled.
pub(super) fn present_support(
    entry: &ash::Entry,
    instance: &ash::Instance,
    physicals: &[vk::PhysicalDevice],
) -> Vec<bool> {
    // SAFETY: the caller enabled the extensions (this function's contract).
    let Ok(surface) = (unsafe { create_surface(entry, instance) }) else {
        return vec![false; physicals.len()];
    };
    let loader = ash::khr::surface::Instance::new(entry, instance);
    let support = physicals
        .iter()
        .map(|&physical| {
            // SAFETY: a valid physical device of `instance`.
            let families =
                unsafe { instance.get_physical_device_queue_family_properties(physical) };
            (0..families.len() as u32).any(|family| {
                // SAFETY: valid device, family index in range, surface of this instance.
                unsafe { loader.get_physical_device_surface_support(physical, family, surface) }
                    .unwrap_or(false)
            })
        })
        .collect();
    // SAFETY: the surface was made above and nothing uses it any more.
    unsafe { loader.destroy_surface(surface, None) };
    support
}
