//! The surface a [`super::Presenter`] presents to: from a window's raw handles or headless,
//! and the instance extensions each needs.

use std::any::Any;
use std::ffi::CStr;
use std::sync::Arc;

use ash::vk;
use raw_window_handle::{HasDisplayHandle, HasWindowHandle, RawDisplayHandle};

use super::super::device::has_instance_extension;
use super::super::{headless, Context};
use crate::error::{Error, Result};

/// Where the presenters of a context show images: what [`ContextDesc`]'s `present` asks
/// the instance to be created for.
///
/// [`ContextDesc`]: super::super::ContextDesc
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresentTarget {
    /// Windows of this display (X11, Wayland, Win32, ...), e.g. winit's
    /// `event_loop.display_handle()?.as_raw()`: the instance gets the extensions
    /// `ash_window::enumerate_required_extensions` names for it.
    Display(RawDisplayHandle),
    /// No display: `VK_KHR_surface` + `VK_EXT_headless_surface`
    /// ([`super::Presenter::headless`]), for presenting where no window system runs.
    Headless,
}

/// The instance extensions `target` needs, each checked available.
///
/// # Errors
/// [`Error::Unsupported`] naming the extension the loader lacks, or the display kind
/// ash-window knows no surface for.
pub(crate) fn instance_extensions(
    entry: &ash::Entry,
    target: PresentTarget,
) -> Result<Vec<&'static CStr>> {
    let needed = required_extensions(target)?;
    match needed.iter().find(|e| !has_instance_extension(entry, e)) {
        Some(missing) => Err(Error::Unsupported {
            what: format!("presenting to {target:?}"),
            reason: format!("the Vulkan loader offers no {missing:?} instance extension"),
        }),
        None => Ok(needed),
    }
}

fn required_extensions(target: PresentTarget) -> Result<Vec<&'static CStr>> {
    match target {
        PresentTarget::Headless => Ok(headless::INSTANCE_EXTENSIONS.to_vec()),
        PresentTarget::Display(display) => {
            let names = ash_window::enumerate_required_extensions(display).map_err(|_| {
                Error::Unsupported {
                    what: format!("presenting to {display:?}"),
                    reason: "ash-window knows no Vulkan surface extension for this display".into(),
                }
            })?;
            Ok(names
                .iter()
                .map(|&p| {
                    // SAFETY: ash-window returns pointers to ash's static, NUL-terminated
                    // extension names.
                    unsafe { CStr::from_ptr(p) }
                })
                .collect())
        }
    }
}

/// A `VkSurfaceKHR`, destroyed on drop, with what it was made from kept alive until then.
pub(super) struct Surface {
    pub(super) raw: vk::SurfaceKHR,
    pub(super) loader: ash::khr::surface::Instance,
    ctx: Context,
    /// The window the surface shows (dropped after the surface is destroyed).
    _window: Option<Arc<dyn Any + Send + Sync>>,
}

impl Drop for Surface {
    fn drop(&mut self) {
        // SAFETY: made from this instance; the presenter destroyed its swapchains first.
        unsafe { self.loader.destroy_surface(self.raw, None) };
    }
}

impl Surface {
    /// A surface for `window`, which it keeps alive.
    ///
    /// # Errors
    /// As [`Surface::check`]; [`Error::Unsupported`] when the window has no handle (e.g. an
    /// Android window not yet resumed); `vkCreate*SurfaceKHR` errors.
    pub(super) fn of_window<W>(ctx: &Context, window: Arc<W>) -> Result<Self>
    where
        W: HasWindowHandle + HasDisplayHandle + Send + Sync + 'static,
    {
        let unavailable = |e: raw_window_handle::HandleError| Error::Unsupported {
            what: "a surface for this window".into(),
            reason: format!("its handle is not available: {e}"),
        };
        let display = window.display_handle().map_err(unavailable)?.as_raw();
        let handle = window.window_handle().map_err(unavailable)?.as_raw();
        Self::check(ctx, PresentTarget::Display(display))?;
        // SAFETY: the instance has the extensions this display needs (checked above); the
        // handles are valid now, and the window they name is kept alive (below) until the
        // surface is destroyed.
        let raw = unsafe {
            ash_window::create_surface(ctx.entry(), ctx.instance(), display, handle, None)
        }
        .map_err(|r| Error::vk("vkCreate*SurfaceKHR", r))?;
        Ok(Self::wrap(ctx, raw, Some(window)))
    }

    /// A headless surface.
    ///
    /// # Errors
    /// As [`Surface::check`]; `vkCreateHeadlessSurfaceEXT` errors.
    pub(super) fn headless(ctx: &Context) -> Result<Self> {
        Self::check(ctx, PresentTarget::Headless)?;
        // SAFETY: the instance was created by `ctx` from its entry with the headless
        // extensions (checked above).
        let raw = unsafe { headless::create_surface(ctx.entry(), ctx.instance()) }?;
        Ok(Self::wrap(ctx, raw, None))
    }

    fn wrap(
        ctx: &Context,
        raw: vk::SurfaceKHR,
        window: Option<Arc<dyn Any + Send + Sync>>,
    ) -> Self {
        Self {
            raw,
            loader: ash::khr::surface::Instance::new(ctx.entry(), ctx.instance()),
            ctx: ctx.clone(),
            _window: window,
        }
    }

    /// Checks that `ctx`'s instance was created with the extensions `target` needs (an
    /// extension that is not enabled has no entry points: calling one would panic).
    fn check(ctx: &Context, target: PresentTarget) -> Result<()> {
        let enabled = ctx.instance_extensions();
        let needed = required_extensions(target)?;
        match needed
            .iter()
            .find(|e| !enabled.iter().any(|x| x.as_c_str() == **e))
        {
            Some(missing) => Err(Error::Unsupported {
                what: format!("a surface for {target:?}"),
                reason: format!(
                    "the context's instance was created without {missing:?}: create it with \
                     ContextDesc {{ present: Some({}), .. }} (a wrapped context cannot present)",
                    match target {
                        PresentTarget::Headless => "PresentTarget::Headless",
                        PresentTarget::Display(_) => "PresentTarget::Display(display)",
                    }
                ),
            }),
            None => Ok(()),
        }
    }

    /// Fails unless queue family `family` of the context's device can present here.
    pub(super) fn check_family(&self, family: u32) -> Result<()> {
        // SAFETY: valid physical device of this instance, family of the context, surface
        // of this instance.
        let ok = unsafe {
            self.loader.get_physical_device_surface_support(
                self.ctx.physical_device(),
                family,
                self.raw,
            )
        }
        .map_err(|r| Error::vk("vkGetPhysicalDeviceSurfaceSupportKHR", r))?;
        if ok {
            Ok(())
        } else {
            Err(Error::Unsupported {
                what: "presenting to this surface".into(),
                reason: format!(
                    "queue family {family} of {} cannot present to it",
                    self.ctx.identity().name
                ),
            })
        }
    }
}
