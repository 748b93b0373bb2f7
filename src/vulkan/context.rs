//! The Vulkan instance/device context: created by vkcuda or wrapped from the caller's.

use std::any::Any;
use std::ffi::{CStr, CString};
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ash::vk;
use gpu_allocator::vulkan::{Allocator, AllocatorCreateDesc};

use super::debug::Messenger;
use super::device::{create_instance, device_properties, open_device};
use super::queues::{duration_ns, QueueGuard, QueueSlot};
use super::timestamps::Calibrator;
use super::transfer::{OneShotLock, OneShotState};
use crate::error::{Error, Result};
use crate::external::{DeviceIdentity, Uuid};

/// Lowest Vulkan version vkcuda runs on: timeline semaphores are core in 1.2.
pub(super) const MIN_API: u32 = vk::API_VERSION_1_2;
pub(super) const VALIDATION_LAYER: &CStr = c"VK_LAYER_KHRONOS_validation";

/// Which physical device [`Context::new`] opens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DeviceSelection {
    /// The first suitable device, preferring discrete over integrated over virtual over CPU.
    #[default]
    Auto,
    /// The device with this UUID (e.g. a CUDA device's `cuDeviceGetUuid`).
    Uuid(Uuid),
    /// The n-th device `vkEnumeratePhysicalDevices` returns.
    Index(usize),
}

/// How [`Context::new`] sets up Vulkan.
#[derive(Debug, Clone, Default)]
pub struct ContextDesc {
    /// Enable `VK_LAYER_KHRONOS_validation` (an error if it is not installed). The layer is
    /// also honoured when enabled through `VK_INSTANCE_LAYERS`; either way its error
    /// messages are counted ([`Context::validation_errors`]).
    pub validation: bool,
    /// Which physical device to open.
    pub device: DeviceSelection,
    /// Where a [`Presenter`](super::Presenter) made on this context will present (feature
    /// `window`): the instance gets the surface extensions that target needs
    /// ([`PresentTarget`](super::PresentTarget); an error if one is missing), and the device
    /// `VK_KHR_swapchain` when it has it. `None` (the default): no surface extensions, and
    /// no presenter can be made on the context.
    #[cfg(feature = "window")]
    #[cfg_attr(docsrs, doc(cfg(feature = "window")))]
    pub present: Option<super::PresentTarget>,
    /// Also create one queue of a transfer-only family (a copy engine on NVIDIA) where the
    /// device has one: [`Context::transfer_family`] says which, and
    /// [`QueueId::Transfer`](super::QueueId::Transfer) names it. Work that is only copies,
    /// fills or timestamp writes can run there without switching the GPU's
    /// graphics/compute engine away from CUDA. Off by default; lavapipe has no such family.
    pub transfer_queue: bool,
}

/// The caller's existing Vulkan objects, for [`Context::wrap`].
pub struct WrapDesc {
    /// Loader the instance was created with.
    pub entry: ash::Entry,
    /// The caller's instance (Vulkan 1.2 or later).
    pub instance: ash::Instance,
    /// The physical device `device` was created from.
    pub physical_device: vk::PhysicalDevice,
    /// The caller's device, created with `VK_KHR_external_memory_fd` and the
    /// `timelineSemaphore` feature enabled.
    pub device: ash::Device,
    /// Family of the queue vkcuda submits its own transfers to.
    pub queue_family_index: u32,
    /// Index of that queue in its family. It is the wrapped context's only queue
    /// ([`Context::queue_count`] is 1).
    pub queue_index: u32,
    /// Whether the device was created with `VK_KHR_external_semaphore_fd`.
    pub semaphore_fd_enabled: bool,
    /// Whether the device was created with `VK_EXT_external_memory_dma_buf`.
    pub dma_buf_enabled: bool,
}

/// What `new` and `wrap` hand to `assemble`.
struct Parts {
    entry: ash::Entry,
    instance: ash::Instance,
    physical_device: vk::PhysicalDevice,
    device: ash::Device,
    queue_family_index: u32,
    /// Queue 0 first; empty for a context that must not submit (see [`Context::queue_count`]).
    queues: Vec<vk::Queue>,
    /// The transfer-only family and its one queue, when asked for and present.
    transfer: Option<(u32, vk::Queue)>,
    enabled: Enabled,
    /// Instance extensions vkcuda enabled (empty for a wrapped context).
    instance_extensions: Vec<CString>,
    /// `VK_EXT_debug_utils` is enabled on the instance and validation is active.
    debug_utils: bool,
    owned: bool,
    keep_alive: Option<Box<dyn Any + Send + Sync>>,
}

/// How [`Context::wrap_borrowed`] wraps a device that another library (wgpu) drives.
pub(crate) struct Borrowed {
    /// The device; `desc.queue_index` is used only when `own_queue` is true.
    pub(crate) desc: WrapDesc,
    /// `(desc.queue_family_index, desc.queue_index)` is a queue nobody else submits on;
    /// otherwise the context has no queue and refuses to submit.
    pub(crate) own_queue: bool,
    /// Dropped after everything made from the context: keeps the owner's device alive.
    pub(crate) keep_alive: Box<dyn Any + Send + Sync>,
}

/// Device extensions enabled on the context's device, as far as vkcuda uses them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Enabled {
    pub(crate) semaphore_fd: bool,
    pub(crate) dma_buf: bool,
    /// The Vulkan 1.2 `hostQueryReset` feature.
    pub(crate) host_query_reset: bool,
    /// The calibrated-timestamps extension enabled, if any.
    pub(crate) calibrated: Option<&'static CStr>,
    /// `VK_KHR_swapchain` (asked for through [`ContextDesc`]'s `present`).
    pub(crate) swapchain: bool,
}

/// A Vulkan device and its queues with the external-memory extensions enabled. Cheap to
/// clone (an `Arc`); every resource made from it holds a clone, so the device outlives them.
///
/// # Queues
/// [`Context::new`] creates every queue of the chosen family up to
/// [`Context::MAX_QUEUES`] ([`Context::queue_count`]; the NVIDIA graphics family has 16), so
/// that independent work (e.g. the frames of [`crate::interop::FrameSync`]) can wait on
/// semaphores without blocking one another: a batch waiting on a semaphore holds up every
/// later batch of its queue. Queue 0 ([`Context::queue`]) is the one vkcuda's own transfers
/// use. A wrapped context ([`Context::wrap`]) has exactly the caller's one queue.
/// With [`ContextDesc::transfer_queue`] the context also has one queue of a transfer-only
/// family ([`Context::transfer_family`], [`super::QueueId::Transfer`]).
///
/// # Locks and their order
/// A context is `Send + Sync`; its mutable state is behind these locks, always taken in
/// this order (a thread holding a later one never waits for an earlier one):
/// 1. the **one-shot transfer state** (command buffer, fence, staging buffers) of
///    [`OneShot`](crate::util::OneShot), held for one one-shot, including its bounded
///    fence wait;
/// 2. the **tracked state of images** ([`ExternalImage`](super::ExternalImage)), then of
///    **buffers** (their owner, [`ExternalBuffer`](super::ExternalBuffer)), several at
///    once in address order ([`Commands`](crate::util::Commands)), held while barriers
///    are planned, recorded and submitted, never across a fence wait;
/// 3. the **high-water marks of timelines** a batch signals (one per semaphore payload,
///    shared by its Vulkan semaphore and CUDA imports), several at once in address order,
///    held while the signal values are checked and the batch submitted
///    ([`Context::submit_to`], [`Semaphore::signal`](super::Semaphore::signal),
///    [`ExternalSemaphore::signal_many`](crate::cuda::ExternalSemaphore::signal_many)),
///    never across a wait;
/// 4. a **queue** ([`Context::queue_at`]), held for one `vkQueueSubmit` (or by the caller's
///    [`QueueGuard`]); with the `wgpu` feature, wgpu's own queue lock takes this place in
///    a hand-over on wgpu's queue (wgpu never calls back into vkcuda while holding it);
/// 5. the staging allocator, a leaf held only inside one allocation or free.
///
/// The other locks are leaves, held briefly with nothing else taken under them: a CUDA
/// semaphore's in-flight events, a CUDA import's shared mapping, the NVRTC module cache,
/// the low-latency relay's state, FrameSync's tracer, the validation message counts, and
/// the pools' (an [`ExportPool`](super::ExportPool)'s size classes, then a block's free
/// slots; a [`SharedPool`](crate::interop::SharedPool)'s imports).
///
/// Waiting for a queue is bounded ([`Context::QUEUE_LOCK_TIMEOUT`]), and a thread that
/// holds a [`QueueGuard`] and calls into vkcuda gets an error for that queue, not a
/// deadlock.
#[derive(Clone)]
pub struct Context {
    shared: Arc<Shared>,
}

struct Shared {
    // Field order is drop order for the Rust-owned parts; Vulkan objects are destroyed in
    // `Drop for Shared` below.
    allocator: ManuallyDrop<Mutex<Allocator>>,
    transfer: ManuallyDrop<Mutex<OneShotState>>,
    /// How long a one-shot waits for its submission, in nanoseconds.
    one_shot_timeout_ns: AtomicU64,
    messenger: Option<Messenger>,
    memory_fd: ash::khr::external_memory_fd::Device,
    semaphore_fd: Option<ash::khr::external_semaphore_fd::Device>,
    calibrator: Option<Calibrator>,
    enabled: Enabled,
    /// Read by the presenter (feature `window`).
    #[cfg_attr(not(feature = "window"), allow(dead_code))]
    instance_extensions: Vec<CString>,
    identity: DeviceIdentity,
    properties: vk::PhysicalDeviceProperties,
    memory_properties: vk::PhysicalDeviceMemoryProperties,
    max_allocation_size: u64,
    /// Queue 0 first; empty for a context that must not submit.
    queues: Vec<QueueSlot>,
    queue_family_index: u32,
    /// The transfer-only family and its queue.
    transfer_queue: Option<(u32, QueueSlot)>,
    device: ash::Device,
    physical_device: vk::PhysicalDevice,
    instance: ash::Instance,
    _entry: ash::Entry,
    /// vkcuda created the instance and device and destroys them.
    owned: bool,
    /// The owner of a borrowed device (a `wgpu::Device`), dropped after the Vulkan objects
    /// above are destroyed (fields drop after `Drop::drop`, in this order).
    _keep_alive: Option<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("device", &self.shared.identity.name)
            .field("uuid", &self.shared.identity.uuid)
            .field("owned", &self.shared.owned)
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A panic while holding a lock leaves nothing half-destroyed: take poisoned ones over.
        let allocator = self.allocator.get_mut().unwrap_or_else(|p| p.into_inner());
        let transfer = self.transfer.get_mut().unwrap_or_else(|p| p.into_inner());
        // Waits (bounded) for a pending one-shot; if it is still running, its pool, fence
        // and staging memory are leaked, and so is the allocator that holds that memory.
        let freed = transfer.teardown(&self.device, allocator);
        // SAFETY: every resource made from this context holds an Arc of it, so none is
        // alive; the transfer state's Vulkan objects are gone (or leaked); both are dropped
        // exactly once, here, before the device they were made from.
        unsafe {
            ManuallyDrop::drop(&mut self.transfer);
        }
        if freed {
            // SAFETY: as above; no staging memory is in use.
            unsafe {
                ManuallyDrop::drop(&mut self.allocator);
            }
        }
        if self.owned {
            // SAFETY: vkcuda created the device; nothing made from it is alive (see above).
            unsafe { self.device.destroy_device(None) };
        }
        self.messenger = None;
        if self.owned {
            // SAFETY: vkcuda created the instance; its device and messenger are gone.
            unsafe { self.instance.destroy_instance(None) };
        }
    }
}

/// The error of every submission on a context without a queue of its own.
pub(crate) fn no_queue() -> Error {
    Error::Unsupported {
        what: "submitting work through vkcuda on this context".into(),
        reason: "the context shares a wgpu device whose only queue wgpu owns; vkcuda never \
                 submits on it (submit through wgpu, e.g. with wgpu_interop::WgpuFrameSync)"
            .into(),
    }
}

impl Context {
    /// Most queues [`Context::new`] creates (all of its family's when it has fewer).
    pub const MAX_QUEUES: usize = 4;

    /// Loads Vulkan, creates an instance and a device with the external-memory/semaphore
    /// extensions and timeline semaphores enabled, and up to [`Context::MAX_QUEUES`] queues
    /// of one compute-capable family.
    ///
    /// # Errors
    /// [`Error::Missing`] when no Vulkan loader or suitable device is found, or
    /// validation was asked for and the layer is not installed.
    pub fn new(desc: &ContextDesc) -> Result<Self> {
        // SAFETY: loading the system Vulkan loader; ash checks the library it opens.
        let entry = unsafe { ash::Entry::load() }.map_err(|e| Error::Missing {
            library: "Vulkan loader",
            reason: e.to_string(),
        })?;
        #[cfg(feature = "window")]
        let (surface_extensions, want_swapchain) = match desc.present {
            Some(target) => (super::present::instance_extensions(&entry, target)?, true),
            None => (Vec::new(), false),
        };
        #[cfg(not(feature = "window"))]
        let (surface_extensions, want_swapchain) = (Vec::new(), false);
        let (instance, debug_utils) =
            create_instance(&entry, desc.validation, &surface_extensions)?;
        // From here on an error must destroy what was created.
        let (physical, device, (family, queue_count), transfer, enabled) =
            match open_device(&instance, desc, want_swapchain) {
                Ok(opened) => opened,
                Err(e) => {
                    // SAFETY: nothing was created from the instance.
                    unsafe { instance.destroy_instance(None) };
                    return Err(e);
                }
            };
        let queues = (0..queue_count)
            .map(|i| {
                // SAFETY: `queue_count` queues of `family` were requested at device creation.
                unsafe { device.get_device_queue(family, i) }
            })
            .collect();
        let transfer = transfer.map(|family| {
            // SAFETY: one queue of `family` was requested at device creation.
            (family, unsafe { device.get_device_queue(family, 0) })
        });
        let parts = Parts {
            entry,
            instance: instance.clone(),
            physical_device: physical,
            device: device.clone(),
            queue_family_index: family,
            queues,
            transfer,
            enabled,
            instance_extensions: surface_extensions.iter().map(|&e| e.to_owned()).collect(),
            debug_utils,
            owned: true,
            keep_alive: None,
        };
        Self::assemble(parts).inspect_err(|_| {
            // SAFETY: `assemble` failed, so no context owns them and nothing made from them
            // is alive (its partial state was dropped before returning).
            unsafe { device.destroy_device(None) };
            // SAFETY: as above; the device made from it is gone.
            unsafe { instance.destroy_instance(None) };
        })
    }

    /// Wraps the caller's instance, device and queue. vkcuda never destroys them.
    ///
    /// # Safety
    /// 1. `desc.device` was created from `desc.physical_device` of `desc.instance` with
    ///    `VK_KHR_external_memory_fd` and the `timelineSemaphore` feature enabled, and the
    ///    extensions `desc.semaphore_fd_enabled` / `desc.dma_buf_enabled` claim.
    /// 2. The queue `(queue_family_index, queue_index)` exists on the device.
    /// 3. The instance and device outlive the returned context and everything made from it.
    /// 4. The caller synchronises its own use of that queue with vkcuda's (vkcuda holds a
    ///    lock only around its own submissions).
    ///
    /// The wrapped context has that one queue only ([`Context::queue_count`] is 1).
    pub unsafe fn wrap(desc: WrapDesc) -> Result<Self> {
        // SAFETY: forwarded to the caller (preconditions 1-4).
        unsafe {
            Self::wrap_borrowed(Borrowed {
                desc,
                own_queue: true,
                keep_alive: Box::new(()),
            })
        }
    }

    /// [`Context::wrap`] for a device another library drives (wgpu): with no queue at all
    /// unless `own_queue`, and holding `keep_alive` until the context is gone.
    ///
    /// # Safety
    /// As [`Context::wrap`] 1-3, where `keep_alive` may be what keeps the instance and
    /// device alive (precondition 3); 2 and 4 only when `own_queue`.
    pub(crate) unsafe fn wrap_borrowed(borrowed: Borrowed) -> Result<Self> {
        let Borrowed {
            desc,
            own_queue,
            keep_alive,
        } = borrowed;
        let WrapDesc {
            entry,
            instance,
            physical_device,
            device,
            queue_family_index,
            queue_index,
            semaphore_fd_enabled,
            dma_buf_enabled,
        } = desc;
        let queues = if own_queue {
            // SAFETY: precondition 2.
            vec![unsafe { device.get_device_queue(queue_family_index, queue_index) }]
        } else {
            Vec::new()
        };
        Self::assemble(Parts {
            entry,
            instance,
            physical_device,
            device,
            queue_family_index,
            queues,
            transfer: None,
            enabled: Enabled {
                semaphore_fd: semaphore_fd_enabled,
                dma_buf: dma_buf_enabled,
                swapchain: false,
                // The caller's device may have neither.
                host_query_reset: false,
                calibrated: None,
            },
            instance_extensions: Vec::new(),
            // The caller's instance may not have VK_EXT_debug_utils enabled.
            debug_utils: false,
            owned: false,
            keep_alive: Some(keep_alive),
        })
    }

    fn assemble(parts: Parts) -> Result<Self> {
        let Parts {
            entry,
            instance,
            physical_device,
            device,
            queue_family_index,
            queues,
            transfer: transfer_queue,
            enabled,
            instance_extensions,
            debug_utils,
            owned,
            keep_alive,
        } = parts;
        let (properties, identity, max_allocation_size) =
            device_properties(&instance, physical_device);
        // SAFETY: valid physical device of this instance.
        let memory_properties =
            unsafe { instance.get_physical_device_memory_properties(physical_device) };
        let messenger = if debug_utils {
            Some(Messenger::new(&entry, &instance)?)
        } else {
            None
        };
        let allocator = Allocator::new(&AllocatorCreateDesc {
            instance: instance.clone(),
            device: device.clone(),
            physical_device,
            debug_settings: Default::default(),
            buffer_device_address: false,
            allocation_sizes: Default::default(),
        })
        .map_err(|e| Error::Unsupported {
            what: "gpu-allocator for staging memory".into(),
            reason: e.to_string(),
        })?;
        let transfer = OneShotState::new(&device, queue_family_index)?;
        let memory_fd = ash::khr::external_memory_fd::Device::new(&instance, &device);
        let semaphore_fd = enabled
            .semaphore_fd
            .then(|| ash::khr::external_semaphore_fd::Device::new(&instance, &device));
        let calibrator = Calibrator::load(
            &entry,
            &instance,
            physical_device,
            &device,
            enabled.calibrated,
        );
        Ok(Self {
            shared: Arc::new(Shared {
                allocator: ManuallyDrop::new(Mutex::new(allocator)),
                transfer: ManuallyDrop::new(Mutex::new(transfer)),
                one_shot_timeout_ns: AtomicU64::new(duration_ns(Self::DEFAULT_ONE_SHOT_TIMEOUT)),
                messenger,
                memory_fd,
                semaphore_fd,
                calibrator,
                enabled,
                instance_extensions,
                identity,
                properties,
                memory_properties,
                max_allocation_size,
                queues: queues.into_iter().map(QueueSlot::new).collect(),
                queue_family_index,
                transfer_queue: transfer_queue.map(|(family, q)| (family, QueueSlot::new(q))),
                device,
                physical_device,
                instance,
                _entry: entry,
                owned,
                _keep_alive: keep_alive,
            }),
        })
    }

    /// The device's name and UUID, for [`crate::cuda::Context::matching`].
    pub fn identity(&self) -> &DeviceIdentity {
        &self.shared.identity
    }

    /// The ash device.
    pub fn device(&self) -> &ash::Device {
        &self.shared.device
    }

    /// The ash instance.
    pub fn instance(&self) -> &ash::Instance {
        &self.shared.instance
    }

    /// The physical device.
    pub fn physical_device(&self) -> vk::PhysicalDevice {
        self.shared.physical_device
    }

    /// `VkPhysicalDeviceProperties` (limits, API version, name).
    pub fn properties(&self) -> &vk::PhysicalDeviceProperties {
        &self.shared.properties
    }

    /// Family of every queue of the context ([`Context::queue_at`]).
    pub fn queue_family_index(&self) -> u32 {
        self.shared.queue_family_index
    }

    /// Queue 0, the one vkcuda's own transfers use, locked for the caller's submission:
    /// [`Context::queue_at`]`(0)`.
    ///
    /// # Errors
    /// As [`Context::queue_at`].
    pub fn queue(&self) -> Result<QueueGuard<'_>> {
        self.queue_at(0)
    }

    /// How many queues the context has (at most [`Context::MAX_QUEUES`]; 1 for a context
    /// from [`Context::wrap`]). They all belong to [`Context::queue_family_index`].
    ///
    /// 0 for the context of a wgpu device that has no spare queue (`wgpu_interop`): wgpu
    /// owns that device's queue and vkcuda never submits on it behind wgpu's back, so every
    /// vkcuda call that would submit ([`OneShot`](crate::util::OneShot) copies and
    /// barriers, [`crate::interop::FrameSync`], [`Context::submit_to`]) returns
    /// [`Error::Unsupported`] instead.
    pub fn queue_count(&self) -> usize {
        self.shared.queues.len()
    }

    /// How long taking a queue's lock waits for another thread before
    /// [`Error::Timeout`].
    pub const QUEUE_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

    /// Queue `index` (index 0 is [`Context::queue`]), locked for the caller's submission.
    /// Every vkcuda submission takes the same lock, so drop the guard before calling into
    /// vkcuda from this thread (such a call is refused rather than deadlocking).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the context has no queue of its own
    /// ([`Context::queue_count`] is 0); [`Error::InvalidArgument`] (`queue`) when `index` is
    /// not below [`Context::queue_count`], or this thread already holds that queue's guard;
    /// [`Error::Timeout`] when another thread holds it longer than
    /// [`Context::QUEUE_LOCK_TIMEOUT`].
    pub fn queue_at(&self, index: usize) -> Result<QueueGuard<'_>> {
        let count = self.queue_count();
        if count == 0 {
            return Err(no_queue());
        }
        let slot = self.shared.queues.get(index).ok_or_else(|| {
            Error::invalid(
                "queue",
                format!("queue index {index}"),
                format!("an index below queue_count() = {count}"),
            )
        })?;
        slot.lock(index, Self::QUEUE_LOCK_TIMEOUT)
    }

    /// Largest single allocation (`maxMemoryAllocationSize`, Vulkan 1.1).
    pub fn max_allocation_size(&self) -> u64 {
        self.shared.max_allocation_size
    }

    /// Whether `VK_KHR_external_semaphore_fd` is enabled (lavapipe: no).
    pub fn can_export_semaphore_fds(&self) -> bool {
        self.shared.enabled.semaphore_fd
    }

    /// Whether `VK_EXT_external_memory_dma_buf` is enabled.
    pub fn can_export_dma_buf(&self) -> bool {
        self.shared.enabled.dma_buf
    }

    /// Error messages the validation layer has reported so far, or `None` when no
    /// validation layer is active.
    pub fn validation_errors(&self) -> Option<u64> {
        self.shared.messenger.as_ref().map(Messenger::error_count)
    }

    /// The error messages counted by [`Context::validation_errors`], by message id (the VUID,
    /// e.g. `VUID-vkQueueSubmit-pWaitSemaphores-03238`), or `None` when no validation layer is
    /// active. For tests that must tell a known false positive from a real error.
    pub fn validation_errors_by_id(&self) -> Option<std::collections::BTreeMap<String, u64>> {
        self.shared.messenger.as_ref().map(Messenger::errors_by_id)
    }

    #[cfg(feature = "window")]
    /// Whether `VK_KHR_swapchain` is enabled on the device.
    pub(crate) fn swapchain_enabled(&self) -> bool {
        self.shared.enabled.swapchain
    }

    #[cfg(feature = "window")]
    /// Instance extensions vkcuda enabled (empty for a wrapped context).
    pub(crate) fn instance_extensions(&self) -> &[CString] {
        &self.shared.instance_extensions
    }

    #[cfg(feature = "window")]
    /// The loader the instance was created with.
    pub(crate) fn entry(&self) -> &ash::Entry {
        &self.shared._entry
    }

    /// The one ownership check: every safe entry point that takes a Vulkan resource calls it
    /// with the resource's context. Two contexts are the same device when their `VkDevice`
    /// handles are equal; the physical device or its UUID is not enough (two contexts on one
    /// GPU share it, but not each other's objects).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `arg` when `owner` is another `VkDevice`.
    pub(crate) fn check_owns(&self, arg: &'static str, owner: &Context) -> Result<()> {
        let (mine, theirs) = (self.device().handle(), owner.device().handle());
        if mine == theirs {
            return Ok(());
        }
        Err(Error::invalid(
            arg,
            format!("made on another device (VkDevice {theirs:?}, not this context's {mine:?})"),
            "a resource of this context's VkDevice",
        ))
    }

    pub(crate) fn memory_fd(&self) -> &ash::khr::external_memory_fd::Device {
        &self.shared.memory_fd
    }

    pub(crate) fn semaphore_fd(&self) -> Option<&ash::khr::external_semaphore_fd::Device> {
        self.shared.semaphore_fd.as_ref()
    }

    pub(crate) fn calibrator(&self) -> Option<&Calibrator> {
        self.shared.calibrator.as_ref()
    }

    pub(crate) fn host_query_reset(&self) -> bool {
        self.shared.enabled.host_query_reset
    }

    pub(super) fn transfer_queue_slot(&self) -> Option<(u32, &QueueSlot)> {
        self.shared
            .transfer_queue
            .as_ref()
            .map(|(family, q)| (*family, q))
    }

    pub(crate) fn memory_properties(&self) -> &vk::PhysicalDeviceMemoryProperties {
        &self.shared.memory_properties
    }

    pub(crate) fn allocator(&self) -> MutexGuard<'_, Allocator> {
        // The allocator's state stays consistent across a panic in a caller's closure.
        self.shared
            .allocator
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long a one-shot ([`OneShot`](crate::util::OneShot)) waits for its submission
    /// (and for an earlier one still running) before [`Error::Timeout`], unless changed
    /// with [`Context::set_one_shot_timeout`].
    pub const DEFAULT_ONE_SHOT_TIMEOUT: Duration = Duration::from_secs(60);

    /// Sets how long one-shots wait for their submission. A one-shot that times out stays
    /// pending: what it uses is kept alive, and the next one-shot waits for it first.
    pub fn set_one_shot_timeout(&self, timeout: Duration) {
        self.shared
            .one_shot_timeout_ns
            .store(duration_ns(timeout), Ordering::Relaxed);
    }

    /// The current one-shot timeout ([`Context::set_one_shot_timeout`]).
    pub fn one_shot_timeout(&self) -> Duration {
        Duration::from_nanos(self.shared.one_shot_timeout_ns.load(Ordering::Relaxed))
    }

    /// Locks the one-shot transfer state: the first lock of the order (see [`Context`]).
    /// A panic while it was held (e.g. in a recording closure) leaves it consistent: a
    /// submission made is marked pending before anything else runs.
    pub(crate) fn one_shot_lock(&self) -> OneShotLock<'_> {
        let state = self
            .shared
            .transfer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        OneShotLock::new(self, state)
    }
}
