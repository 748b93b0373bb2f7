//! A wgpu device that can share memory and semaphores, and vkcuda's context on it.

use std::ffi::CStr;

use ash::vk;
use wgpu::hal::api::Vulkan;

use crate::error::{Error, Result};
use crate::vulkan::{self, Borrowed, WrapDesc};

/// Priorities of wgpu's queue (index 0) and vkcuda's spare queue (index 1) of family 0.
static TWO_QUEUES: [f32; 2] = [1.0, 1.0];

/// The family wgpu's Vulkan backend opens its one queue in (`open_with_callback`).
const WGPU_FAMILY: u32 = 0;

/// A wgpu device (Vulkan backend) with vkcuda's [`vulkan::Context`] on the same `VkDevice`,
/// so that exportable textures, buffers and semaphores are made on wgpu's device.
///
/// Cheap to clone. The vkcuda context holds a clone of the `wgpu::Device`, so the device
/// outlives every vkcuda object made on it, whatever order they are dropped in.
///
/// # Queues
/// wgpu owns its queue; vkcuda never submits on it behind wgpu's back. A device opened with
/// [`WgpuContext::open`] on a GPU whose family 0 has a second queue gets that queue for
/// vkcuda's own one-shot work ([`OneShot`](crate::util::OneShot) copies and hand-overs); otherwise
/// (lavapipe, a device from [`WgpuContext::from_wgpu`]) the vkcuda context has no queue
/// ([`vulkan::Context::queue_count`] is 0) and those calls return an error. Per-frame
/// synchronisation goes through wgpu's queue ([`super::WgpuFrameSync`]).
#[derive(Debug, Clone)]
pub struct WgpuContext {
    vk: vulkan::Context,
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// The physical device offers `VK_KHR_external_semaphore_fd` (enabled or not).
    semaphore_fd_offered: bool,
}

fn not_vulkan(what: &str) -> Error {
    Error::Unsupported {
        what: format!("sharing memory with a wgpu {what}"),
        reason: "it is not on wgpu's Vulkan backend".into(),
    }
}

fn has(exts: &[vk::ExtensionProperties], name: &CStr) -> bool {
    exts.iter().any(|e| e.extension_name_as_c_str() == Ok(name))
}

/// The physical-device checks both constructors share: Vulkan 1.2 and timeline semaphores
/// (wgpu enables `timelineSemaphore` whenever the device supports it).
fn check_physical(instance: &ash::Instance, physical: vk::PhysicalDevice) -> Result<String> {
    // SAFETY: `physical` belongs to `instance` (both come from the same wgpu adapter).
    let props = unsafe { instance.get_physical_device_properties(physical) };
    let name = props
        .device_name_as_c_str()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut v12 = vk::PhysicalDeviceVulkan12Features::default();
    let mut features = vk::PhysicalDeviceFeatures2::default().push_next(&mut v12);
    // SAFETY: as above; the pNext chain points at a live struct.
    unsafe { instance.get_physical_device_features2(physical, &mut features) };
    if props.api_version < vk::API_VERSION_1_2 || v12.timeline_semaphore != vk::TRUE {
        return Err(Error::missing_extension(
            "the timelineSemaphore feature (Vulkan 1.2)",
            format!("vkcuda on wgpu device {name:?} (it has no timeline semaphores)"),
        ));
    }
    Ok(name)
}

impl WgpuContext {
    /// Opens a device on `adapter` (wgpu's Vulkan backend) with what sharing needs enabled
    /// through wgpu-hal's device-creation callback: `VK_KHR_external_memory_fd`,
    /// `VK_KHR_external_semaphore_fd` and `VK_EXT_external_memory_dma_buf` where the device
    /// has them, and a second queue of wgpu's family for vkcuda where there is one. wgpu
    /// itself enables timeline semaphores. `desc` is wgpu's usual descriptor.
    ///
    /// # Errors
    /// * [`Error::Unsupported`]: the adapter is not on the Vulkan backend, or wgpu-hal
    ///   failed to open the device (its message in `reason`).
    /// * [`Error::MissingExtension`] naming `VK_KHR_external_memory_fd` (the device does not
    ///   have it) or the `timelineSemaphore` feature.
    /// * [`Error::InvalidArgument`] (`desc`): wgpu refused the descriptor (its message).
    pub fn open(adapter: &wgpu::Adapter, desc: &wgpu::DeviceDescriptor<'_>) -> Result<Self> {
        // SAFETY: the guard is only read and dropped before the adapter is used again.
        let hal_adapter =
            unsafe { adapter.as_hal::<Vulkan>() }.ok_or_else(|| not_vulkan("adapter"))?;
        let instance = hal_adapter.shared_instance().raw_instance();
        let physical = hal_adapter.raw_physical_device();
        let name = check_physical(instance, physical)?;
        // SAFETY: valid physical device of this instance.
        let exts = unsafe { instance.enumerate_device_extension_properties(physical) }
            .map_err(|r| Error::vk("vkEnumerateDeviceExtensionProperties", r))?;
        if !has(&exts, ash::khr::external_memory_fd::NAME) {
            return Err(Error::missing_extension(
                "VK_KHR_external_memory_fd",
                format!("exporting memory of wgpu device {name:?} (the device does not offer it)"),
            ));
        }
        // SAFETY: as above.
        let families = unsafe { instance.get_physical_device_queue_family_properties(physical) };
        let semaphore_fd = has(&exts, ash::khr::external_semaphore_fd::NAME);
        let dma_buf = has(&exts, ash::ext::external_memory_dma_buf::NAME);
        let spare_queue = families
            .get(WGPU_FAMILY as usize)
            .is_some_and(|f| f.queue_count >= 2);
        let callback = Box::new(
            move |args: wgpu::hal::vulkan::CreateDeviceCallbackArgs<'_, '_, '_>| {
                // wgpu 30 adds the memory ones itself where the device has them.
                let wanted = [
                    (true, ash::khr::external_memory_fd::NAME),
                    (semaphore_fd, ash::khr::external_semaphore_fd::NAME),
                    (dma_buf, ash::ext::external_memory_dma_buf::NAME),
                ];
                for (_, name) in wanted.into_iter().filter(|w| w.0) {
                    if !args.extensions.contains(&name) {
                        args.extensions.push(name);
                    }
                }
                if spare_queue {
                    for info in args.queue_create_infos.iter_mut() {
                        if info.queue_family_index == WGPU_FAMILY {
                            *info = info.queue_priorities(&TWO_QUEUES);
                        }
                    }
                }
            },
        );
        // SAFETY: the callback only adds extensions the device reports and a queue its
        // family has; it removes no feature (wgpu-hal's conditions on the callback).
        let opened = unsafe {
            hal_adapter.open_with_callback(
                desc.required_features,
                &desc.required_limits,
                &desc.memory_hints,
                Some(callback),
            )
        }
        .map_err(|e| Error::Unsupported {
            what: format!("opening a wgpu device on {name:?} with external memory"),
            reason: e.to_string(),
        })?;
        drop(hal_adapter);
        // SAFETY: `opened` was created from this adapter's hal adapter with
        // `desc.required_features`.
        let (device, queue) =
            unsafe { adapter.create_device_from_hal(opened, desc) }.map_err(|e| {
                Error::invalid("desc", e.to_string(), "a descriptor the adapter accepts")
            })?;
        Self::wrap(device, queue, spare_queue)
    }

    /// Adopts a wgpu device the caller opened, after checking that it can share memory: on
    /// the Vulkan backend, created with `VK_KHR_external_memory_fd` (wgpu 30 enables it
    /// itself where the device has it) and timeline semaphores. Semaphores can be shared
    /// only if `VK_KHR_external_semaphore_fd` was enabled too, which wgpu does not do on
    /// its own ([`WgpuContext::check_semaphore_export`]; [`WgpuContext::open`] does). The
    /// vkcuda context has no queue.
    ///
    /// # Errors
    /// * [`Error::Unsupported`]: not the Vulkan backend.
    /// * [`Error::MissingExtension`] naming the missing extension or feature.
    pub fn from_wgpu(device: &wgpu::Device, queue: &wgpu::Queue) -> Result<Self> {
        Self::wrap(device.clone(), queue.clone(), false)
    }

    fn wrap(device: wgpu::Device, queue: wgpu::Queue, spare_queue: bool) -> Result<Self> {
        let semaphore_fd_offered;
        let desc = {
            // SAFETY: the guard is only read; the handles cloned from it stay valid as long
            // as `device` lives, which the vkcuda context holds (`keep_alive` below).
            let hal = unsafe { device.as_hal::<Vulkan>() }.ok_or_else(|| not_vulkan("device"))?;
            let instance = hal.shared_instance();
            let name = check_physical(instance.raw_instance(), hal.raw_physical_device())?;
            let enabled = hal.enabled_device_extensions();
            if !enabled.contains(&ash::khr::external_memory_fd::NAME) {
                return Err(Error::missing_extension(
                    "VK_KHR_external_memory_fd",
                    format!(
                        "exporting memory of wgpu device {name:?} (open it with \
                         vkcuda::wgpu_interop::WgpuContext::open)"
                    ),
                ));
            }
            // SAFETY: valid physical device of this instance.
            let offered = unsafe {
                instance
                    .raw_instance()
                    .enumerate_device_extension_properties(hal.raw_physical_device())
            }
            .map_err(|r| Error::vk("vkEnumerateDeviceExtensionProperties", r))?;
            semaphore_fd_offered = has(&offered, ash::khr::external_semaphore_fd::NAME);
            WrapDesc {
                entry: instance.entry().clone(),
                instance: instance.raw_instance().clone(),
                physical_device: hal.raw_physical_device(),
                device: hal.raw_device().clone(),
                queue_family_index: hal.queue_family_index(),
                queue_index: 1,
                semaphore_fd_enabled: enabled.contains(&ash::khr::external_semaphore_fd::NAME),
                dma_buf_enabled: enabled.contains(&ash::ext::external_memory_dma_buf::NAME),
            }
        };
        // SAFETY: the device was created from that physical device and instance with
        // VK_KHR_external_memory_fd, timeline semaphores (checked: wgpu enables them when
        // supported) and the extensions the flags claim (1); queue (family, 1) exists and is
        // used by nobody else when `spare_queue` (`open` created it; 2, 4); `keep_alive`
        // holds the wgpu device, which holds its instance, until the context is gone (3).
        let vk = unsafe {
            vulkan::Context::wrap_borrowed(Borrowed {
                desc,
                own_queue: spare_queue,
                keep_alive: Box::new(device.clone()),
            })
        }?;
        Ok(Self {
            vk,
            device,
            queue,
            semaphore_fd_offered,
        })
    }

    /// Checks that semaphores made on this device can be shared with CUDA
    /// (`VK_KHR_external_semaphore_fd` enabled), as [`super::WgpuFrameSync`] needs.
    ///
    /// # Errors
    /// [`Error::MissingExtension`] naming `VK_KHR_external_semaphore_fd`, saying whether the
    /// device lacks it (lavapipe) or it was not enabled (open with [`WgpuContext::open`]).
    pub fn check_semaphore_export(&self) -> Result<()> {
        if self.vk.can_export_semaphore_fds() {
            return Ok(());
        }
        let why = if self.semaphore_fd_offered {
            "the device offers it: open the wgpu device with \
             vkcuda::wgpu_interop::WgpuContext::open"
        } else {
            "the device does not offer it"
        };
        Err(Error::missing_extension(
            "VK_KHR_external_semaphore_fd",
            format!(
                "sharing semaphores of wgpu device {:?} with CUDA ({why})",
                self.vk.identity().name
            ),
        ))
    }

    /// vkcuda's context on wgpu's `VkDevice`: pass it to [`crate::interop`] and
    /// [`crate::cuda::Context::matching`] (`vk.identity()`).
    pub fn vulkan(&self) -> &vulkan::Context {
        &self.vk
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }
}
