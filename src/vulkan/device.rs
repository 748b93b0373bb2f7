//! Choosing and opening the physical device: instance creation, extension and feature
//! queries, the device ranking, and the diagnostics listing (`enumerate_devices`).

use std::ffi::{c_char, CStr};

use ash::vk;

use super::context::{Context, ContextDesc, DeviceSelection, Enabled, MIN_API, VALIDATION_LAYER};
use super::headless;
use super::queues::transfer_only_family;
use super::timestamps::Calibrator;
use crate::error::{Error, Result};
use crate::external::{DeviceIdentity, Uuid};

/// One physical device as [`enumerate_devices`] reports it.
#[derive(Debug, Clone)]
pub struct PhysicalDeviceInfo {
    /// Index for [`DeviceSelection::Index`].
    pub index: usize,
    /// Name, UUID, LUID.
    pub identity: DeviceIdentity,
    /// Discrete, integrated, CPU, ...
    pub device_type: vk::PhysicalDeviceType,
    /// Vulkan version the device supports.
    pub api_version: u32,
    /// `VK_KHR_external_memory_fd` is available (required by vkcuda).
    pub memory_fd: bool,
    /// `VK_KHR_external_semaphore_fd` is available (needed to share semaphores).
    pub semaphore_fd: bool,
    /// `VK_EXT_external_memory_dma_buf` is available.
    pub dma_buf: bool,
    /// `VK_KHR_swapchain` is available (needed to present).
    pub swapchain: bool,
    /// A queue family of the device can present to a `VK_EXT_headless_surface` surface
    /// (presenting without a display); `false` also when no driver offers the extension.
    pub headless_present: bool,
}

/// The instance extensions the Vulkan loader offers (its drivers' and layers' together), by
/// name. For diagnostics (the `doctor` example shows the surface ones).
///
/// # Errors
/// [`Error::Missing`] when no Vulkan loader is installed; [`Error::Vulkan`] from the query.
pub fn instance_extension_names() -> Result<Vec<String>> {
    // SAFETY: loading the system Vulkan loader; ash checks the library it opens.
    let entry = unsafe { ash::Entry::load() }.map_err(|e| Error::Missing {
        library: "Vulkan loader",
        reason: e.to_string(),
    })?;
    // SAFETY: plain query through a loaded entry.
    let exts = unsafe { entry.enumerate_instance_extension_properties(None) }
        .map_err(|r| Error::vk("vkEnumerateInstanceExtensionProperties", r))?;
    Ok(exts
        .iter()
        .filter_map(|e| e.extension_name_as_c_str().ok())
        .map(|n| n.to_string_lossy().into_owned())
        .collect())
}

/// Lists every Vulkan physical device with what vkcuda needs from it, through a temporary
/// instance. For diagnostics (the `doctor` example); [`Context::new`] chooses by itself.
///
/// # Errors
/// [`Error::Missing`] when no Vulkan loader is installed.
pub fn enumerate_devices() -> Result<Vec<PhysicalDeviceInfo>> {
    // SAFETY: loading the system Vulkan loader; ash checks the library it opens.
    let entry = unsafe { ash::Entry::load() }.map_err(|e| Error::Missing {
        library: "Vulkan loader",
        reason: e.to_string(),
    })?;
    let headless = headless::INSTANCE_EXTENSIONS
        .iter()
        .all(|e| has_instance_extension(&entry, e));
    let extra: &[&CStr] = if headless {
        &headless::INSTANCE_EXTENSIONS
    } else {
        &[]
    };
    let (instance, _) = create_instance(&entry, false, extra)?;
    // SAFETY: valid instance.
    let physicals = unsafe { instance.enumerate_physical_devices() }
        .map_err(|r| Error::vk("vkEnumeratePhysicalDevices", r));
    let list = physicals.and_then(|physicals| {
        let can_present = if headless {
            headless::present_support(&entry, &instance, &physicals)
        } else {
            vec![false; physicals.len()]
        };
        physicals
            .into_iter()
            .zip(can_present)
            .enumerate()
            .map(|(index, (physical, headless_present))| {
                let (props, identity, _) = device_properties(&instance, physical);
                let exts = device_extensions(&instance, physical)?;
                Ok(PhysicalDeviceInfo {
                    index,
                    identity,
                    device_type: props.device_type,
                    api_version: props.api_version,
                    memory_fd: has(&exts, ash::khr::external_memory_fd::NAME),
                    semaphore_fd: has(&exts, ash::khr::external_semaphore_fd::NAME),
                    dma_buf: has(&exts, ash::ext::external_memory_dma_buf::NAME),
                    swapchain: has(&exts, ash::khr::swapchain::NAME),
                    headless_present,
                })
            })
            .collect()
    });
    // SAFETY: nothing else was created from the instance.
    unsafe { instance.destroy_instance(None) };
    list
}

/// Why a physical device was not chosen, for the "no suitable device" error.
pub(super) fn describe(name: &str, why: &str) -> String {
    format!("{name:?}: {why}")
}

/// Whether the validation layer is (or will be) active: asked for, or named in
/// `VK_INSTANCE_LAYERS` (how `.gpu/run --validate` turns it on).
pub(super) fn validation_requested(entry: &ash::Entry) -> bool {
    let from_env = std::env::var("VK_INSTANCE_LAYERS")
        .is_ok_and(|v| v.split(':').any(|l| l == "VK_LAYER_KHRONOS_validation"));
    from_env && has_instance_extension(entry, ash::ext::debug_utils::NAME)
}

pub(super) fn has_instance_extension(entry: &ash::Entry, name: &CStr) -> bool {
    // SAFETY: plain query through a loaded entry.
    let exts = unsafe { entry.enumerate_instance_extension_properties(None) }.unwrap_or_default();
    exts.iter().any(|e| e.extension_name_as_c_str() == Ok(name))
}

/// Creates the instance with `extra` extensions (checked available by the caller); also
/// says whether a validation messenger should be installed.
pub(super) fn create_instance(
    entry: &ash::Entry,
    validation: bool,
    extra: &[&CStr],
) -> Result<(ash::Instance, bool)> {
    // SAFETY: plain query through a loaded entry.
    let version = unsafe { entry.try_enumerate_instance_version() }
        .map_err(|r| Error::vk("vkEnumerateInstanceVersion", r))?
        .unwrap_or(vk::API_VERSION_1_0);
    if version < MIN_API {
        return Err(Error::Missing {
            library: "Vulkan loader",
            reason: format!(
                "instance version {}.{} is older than the 1.2 vkcuda needs",
                vk::api_version_major(version),
                vk::api_version_minor(version)
            ),
        });
    }
    let mut layers: Vec<*const c_char> = Vec::new();
    if validation {
        // SAFETY: plain query through a loaded entry.
        let available = unsafe { entry.enumerate_instance_layer_properties() }
            .map_err(|r| Error::vk("vkEnumerateInstanceLayerProperties", r))?;
        if !available
            .iter()
            .any(|l| l.layer_name_as_c_str() == Ok(VALIDATION_LAYER))
        {
            return Err(Error::Missing {
                library: "Khronos validation layer",
                reason: "VK_LAYER_KHRONOS_validation is not installed \
                         (Debian: apt-get install vulkan-validationlayers)"
                    .into(),
            });
        }
        layers.push(VALIDATION_LAYER.as_ptr());
    }
    let debug_utils = (validation || validation_requested(entry))
        && has_instance_extension(entry, ash::ext::debug_utils::NAME);
    let mut extensions: Vec<*const c_char> = extra.iter().map(|e| e.as_ptr()).collect();
    if debug_utils {
        extensions.push(ash::ext::debug_utils::NAME.as_ptr());
    }
    let app = vk::ApplicationInfo::default()
        .application_name(c"vkcuda")
        .engine_name(c"vkcuda")
        .api_version(vk::API_VERSION_1_3.min(version));
    let info = vk::InstanceCreateInfo::default()
        .application_info(&app)
        .enabled_layer_names(&layers)
        .enabled_extension_names(&extensions);
    // SAFETY: `info` and the strings it points to outlive the call.
    let instance = unsafe { entry.create_instance(&info, None) }
        .map_err(|r| Error::vk("vkCreateInstance", r))?;
    Ok((instance, debug_utils))
}

/// Properties, identity and `maxMemoryAllocationSize` of a physical device.
pub(super) fn device_properties(
    instance: &ash::Instance,
    physical: vk::PhysicalDevice,
) -> (vk::PhysicalDeviceProperties, DeviceIdentity, u64) {
    let mut id = vk::PhysicalDeviceIDProperties::default();
    let mut m3 = vk::PhysicalDeviceMaintenance3Properties::default();
    let mut props2 = vk::PhysicalDeviceProperties2::default()
        .push_next(&mut id)
        .push_next(&mut m3);
    // SAFETY: valid physical device; the pNext chain points at live structs.
    unsafe { instance.get_physical_device_properties2(physical, &mut props2) };
    let properties = props2.properties;
    let identity = DeviceIdentity {
        name: properties
            .device_name_as_c_str()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        uuid: Uuid(id.device_uuid),
        luid: (id.device_luid_valid == vk::TRUE).then_some(id.device_luid),
        node_mask: id.device_node_mask,
    };
    (properties, identity, m3.max_memory_allocation_size)
}

pub(super) fn device_extensions(
    instance: &ash::Instance,
    physical: vk::PhysicalDevice,
) -> Result<Vec<vk::ExtensionProperties>> {
    // SAFETY: valid physical device of this instance.
    unsafe { instance.enumerate_device_extension_properties(physical) }
        .map_err(|r| Error::vk("vkEnumerateDeviceExtensionProperties", r))
}

pub(super) fn has(exts: &[vk::ExtensionProperties], name: &CStr) -> bool {
    exts.iter().any(|e| e.extension_name_as_c_str() == Ok(name))
}

/// Picks a queue family with compute (preferring graphics + compute); returns its index and
/// how many of its queues to create (all, up to [`Context::MAX_QUEUES`]).
pub(super) fn queue_family(
    instance: &ash::Instance,
    physical: vk::PhysicalDevice,
) -> Option<(u32, u32)> {
    // SAFETY: valid physical device of this instance.
    let families = unsafe { instance.get_physical_device_queue_family_properties(physical) };
    let find = |flags: vk::QueueFlags| {
        families
            .iter()
            .position(|f| f.queue_count > 0 && f.queue_flags.contains(flags))
    };
    let max = u32::try_from(Context::MAX_QUEUES).unwrap_or(1);
    find(vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE)
        .or_else(|| find(vk::QueueFlags::COMPUTE))
        .and_then(|i| Some((u32::try_from(i).ok()?, families[i].queue_count.min(max))))
}

pub(super) fn type_rank(t: vk::PhysicalDeviceType) -> u32 {
    match t {
        vk::PhysicalDeviceType::DISCRETE_GPU => 0,
        vk::PhysicalDeviceType::INTEGRATED_GPU => 1,
        vk::PhysicalDeviceType::VIRTUAL_GPU => 2,
        vk::PhysicalDeviceType::CPU => 3,
        _ => 4,
    }
}

/// Chooses a physical device and creates the logical device (with `VK_KHR_swapchain` when
/// `want_swapchain` and the device has it); returns the main family and its queue count,
/// and the transfer-only family given one queue.
#[allow(clippy::type_complexity)]
pub(super) fn open_device(
    instance: &ash::Instance,
    desc: &ContextDesc,
    want_swapchain: bool,
) -> Result<(
    vk::PhysicalDevice,
    ash::Device,
    (u32, u32),
    Option<u32>,
    Enabled,
)> {
    let selection = &desc.device;
    // SAFETY: valid instance.
    let physicals = unsafe { instance.enumerate_physical_devices() }
        .map_err(|r| Error::vk("vkEnumeratePhysicalDevices", r))?;
    let mut rejected = Vec::new();
    let mut candidates = Vec::new();
    for (index, &physical) in physicals.iter().enumerate() {
        let (props, identity, _) = device_properties(instance, physical);
        let selected = match selection {
            DeviceSelection::Auto => true,
            DeviceSelection::Uuid(u) => identity.uuid == *u,
            DeviceSelection::Index(i) => *i == index,
        };
        if !selected {
            rejected.push(describe(&identity.name, "not the one selected"));
            continue;
        }
        if props.api_version < MIN_API {
            rejected.push(describe(&identity.name, "Vulkan older than 1.2"));
            continue;
        }
        let exts = device_extensions(instance, physical)?;
        if !has(&exts, ash::khr::external_memory_fd::NAME) {
            rejected.push(describe(&identity.name, "no VK_KHR_external_memory_fd"));
            continue;
        }
        let Some(family) = queue_family(instance, physical) else {
            rejected.push(describe(&identity.name, "no compute queue"));
            continue;
        };
        candidates.push((type_rank(props.device_type), physical, family, exts));
    }
    candidates.sort_by_key(|c| c.0);
    let Some((_, physical, (family, queue_count), exts)) = candidates.into_iter().next() else {
        return Err(Error::Missing {
            library: "Vulkan device",
            reason: format!("no device fits {selection:?}: [{}]", rejected.join("; ")),
        });
    };

    let mut v12_supported = vk::PhysicalDeviceVulkan12Features::default();
    let mut features = vk::PhysicalDeviceFeatures2::default().push_next(&mut v12_supported);
    // SAFETY: valid physical device of this instance; the pNext chain points at a live struct.
    unsafe { instance.get_physical_device_features2(physical, &mut features) };
    let enabled = Enabled {
        semaphore_fd: has(&exts, ash::khr::external_semaphore_fd::NAME),
        dma_buf: has(&exts, ash::ext::external_memory_dma_buf::NAME),
        swapchain: want_swapchain && has(&exts, ash::khr::swapchain::NAME),
        host_query_reset: v12_supported.host_query_reset == vk::TRUE,
        calibrated: Calibrator::extension(&exts),
    };
    let transfer = if desc.transfer_queue {
        // SAFETY: valid physical device of this instance.
        let families = unsafe { instance.get_physical_device_queue_family_properties(physical) };
        transfer_only_family(&families)
    } else {
        None
    };
    let mut names = vec![ash::khr::external_memory_fd::NAME.as_ptr()];
    if enabled.semaphore_fd {
        names.push(ash::khr::external_semaphore_fd::NAME.as_ptr());
    }
    if enabled.dma_buf {
        names.push(ash::ext::external_memory_dma_buf::NAME.as_ptr());
    }
    if enabled.swapchain {
        names.push(ash::khr::swapchain::NAME.as_ptr());
    }
    if let Some(name) = enabled.calibrated {
        names.push(name.as_ptr());
    }
    let priorities = vec![1.0f32; queue_count as usize];
    let mut queues = vec![vk::DeviceQueueCreateInfo::default()
        .queue_family_index(family)
        .queue_priorities(&priorities)];
    if let Some(transfer) = transfer {
        queues.push(
            vk::DeviceQueueCreateInfo::default()
                .queue_family_index(transfer)
                .queue_priorities(&priorities[..1]),
        );
    }
    let mut v12 = vk::PhysicalDeviceVulkan12Features::default()
        .timeline_semaphore(true)
        .host_query_reset(enabled.host_query_reset);
    let info = vk::DeviceCreateInfo::default()
        .queue_create_infos(&queues)
        .enabled_extension_names(&names)
        .push_next(&mut v12);
    // SAFETY: `physical` belongs to `instance`; `info` and everything it points to outlive
    // the call; the extensions were checked to be supported.
    let device = unsafe { instance.create_device(physical, &info, None) }
        .map_err(|r| Error::vk("vkCreateDevice", r))?;
    Ok((physical, device, (family, queue_count), transfer, enabled))
}
