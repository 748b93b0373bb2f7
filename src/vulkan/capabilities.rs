//! Handle-type conversions to Vulkan flags, and the capability queries run before anything
//! is allocated: external memory for buffers and images (with the explanation of a refused
//! image), external semaphores.

use ash::vk;

use super::{Context, ImageDesc};
use crate::error::{Error, Result};
use crate::external::{MemoryHandleType, SemaphoreHandleType};

/// The Vulkan flag for a memory handle type, or `None` where Vulkan has no such type
/// (`NvSciBuf`).
pub fn memory_handle_flags(t: MemoryHandleType) -> Option<vk::ExternalMemoryHandleTypeFlags> {
    use vk::ExternalMemoryHandleTypeFlags as F;
    Some(match t {
        MemoryHandleType::OpaqueFd => F::OPAQUE_FD,
        MemoryHandleType::OpaqueWin32 => F::OPAQUE_WIN32,
        MemoryHandleType::OpaqueWin32Kmt => F::OPAQUE_WIN32_KMT,
        MemoryHandleType::D3D12Heap => F::D3D12_HEAP,
        MemoryHandleType::D3D12Resource => F::D3D12_RESOURCE,
        MemoryHandleType::D3D11Resource => F::D3D11_TEXTURE,
        MemoryHandleType::D3D11ResourceKmt => F::D3D11_TEXTURE_KMT,
        MemoryHandleType::DmaBufFd => F::DMA_BUF_EXT,
        MemoryHandleType::NvSciBuf => return None,
    })
}

/// The Vulkan flag for a semaphore handle type, or `None` where Vulkan has no such type
/// (`NvSciSync`, keyed mutexes). Binary and timeline share a flag: the kind is chosen when
/// the semaphore is created.
pub fn semaphore_handle_flags(
    t: SemaphoreHandleType,
) -> Option<vk::ExternalSemaphoreHandleTypeFlags> {
    use vk::ExternalSemaphoreHandleTypeFlags as F;
    Some(match t {
        SemaphoreHandleType::OpaqueFd | SemaphoreHandleType::TimelineFd => F::OPAQUE_FD,
        SemaphoreHandleType::OpaqueWin32 | SemaphoreHandleType::TimelineWin32 => F::OPAQUE_WIN32,
        SemaphoreHandleType::OpaqueWin32Kmt => F::OPAQUE_WIN32_KMT,
        // VK_EXTERNAL_SEMAPHORE_HANDLE_TYPE_D3D11_FENCE_BIT is an alias of the D3D12 bit.
        SemaphoreHandleType::D3D12Fence | SemaphoreHandleType::D3D11Fence => F::D3D12_FENCE,
        SemaphoreHandleType::NvSciSync
        | SemaphoreHandleType::D3D11KeyedMutex
        | SemaphoreHandleType::D3D11KeyedMutexKmt => return None,
    })
}

/// Binary or timeline semaphore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SemaphoreKind {
    /// Signalled/unsignalled; one signal pairs with one wait.
    Binary,
    /// A 64-bit counter that only grows.
    Timeline,
}

/// What the driver says about exporting/importing one handle type for one use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalSupport {
    /// The handle type can be exported.
    pub exportable: bool,
    /// The handle type can be imported.
    pub importable: bool,
    /// Memory of this type must be a dedicated allocation (an [`ExportPool`](super::ExportPool)
    /// refuses such images).
    pub dedicated_only: bool,
}

impl ExternalSupport {
    /// Turns "not exportable" into [`Error::Unsupported`] naming what was asked.
    pub(crate) fn require_export(self, what: impl FnOnce() -> String) -> Result<Self> {
        if self.exportable {
            Ok(self)
        } else {
            Err(Error::Unsupported {
                what: what(),
                reason: "the driver reports the handle type as not exportable for this use".into(),
            })
        }
    }
}

/// What the driver allows for one [`ImageDesc`] (`vkGetPhysicalDeviceImageFormatProperties2`
/// with `VkPhysicalDeviceExternalImageFormatInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSupport {
    /// Export/import of `desc.handle_type` for such an image.
    pub external: ExternalSupport,
    /// Largest extent of this format, type, usage and tiling.
    pub max_extent: vk::Extent3D,
    /// Most mip levels.
    pub max_mip_levels: u32,
    /// Most array layers.
    pub max_array_layers: u32,
    /// Largest total size in bytes (at least 2^31).
    pub max_resource_size: u64,
}

impl Context {
    /// `vkGetPhysicalDeviceExternalBufferProperties` for a buffer with `usage`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when Vulkan has no such handle type.
    pub fn buffer_support(
        &self,
        usage: vk::BufferUsageFlags,
        handle_type: MemoryHandleType,
    ) -> Result<ExternalSupport> {
        let flags = memory_handle_flags(handle_type).ok_or_else(|| Error::Unsupported {
            what: format!("{handle_type} buffer memory in Vulkan"),
            reason: "Vulkan has no such external memory handle type".into(),
        })?;
        let info = vk::PhysicalDeviceExternalBufferInfo::default()
            .usage(usage)
            .handle_type(flags);
        let mut props = vk::ExternalBufferProperties::default();
        // SAFETY: valid physical device of this instance; `info` and `props` are valid.
        unsafe {
            self.instance()
                .get_physical_device_external_buffer_properties(
                    self.physical_device(),
                    &info,
                    &mut props,
                )
        };
        Ok(memory_support(props.external_memory_properties))
    }

    /// `vkGetPhysicalDeviceExternalSemaphoreProperties` for a semaphore of `kind`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when Vulkan has no such handle type.
    pub fn semaphore_support(
        &self,
        kind: SemaphoreKind,
        handle_type: SemaphoreHandleType,
    ) -> Result<ExternalSupport> {
        let flags = semaphore_handle_flags(handle_type).ok_or_else(|| Error::Unsupported {
            what: format!("{handle_type} semaphore in Vulkan"),
            reason: "Vulkan has no such external semaphore handle type".into(),
        })?;
        let mut type_info = vk::SemaphoreTypeCreateInfo::default().semaphore_type(match kind {
            SemaphoreKind::Binary => vk::SemaphoreType::BINARY,
            SemaphoreKind::Timeline => vk::SemaphoreType::TIMELINE,
        });
        let info = vk::PhysicalDeviceExternalSemaphoreInfo::default()
            .handle_type(flags)
            .push_next(&mut type_info);
        let mut props = vk::ExternalSemaphoreProperties::default();
        // SAFETY: valid physical device of this instance; `info` chain and `props` are valid.
        unsafe {
            self.instance()
                .get_physical_device_external_semaphore_properties(
                    self.physical_device(),
                    &info,
                    &mut props,
                )
        };
        let f = props.external_semaphore_features;
        Ok(ExternalSupport {
            exportable: f.contains(vk::ExternalSemaphoreFeatureFlags::EXPORTABLE),
            importable: f.contains(vk::ExternalSemaphoreFeatureFlags::IMPORTABLE),
            dedicated_only: false,
        })
    }

    /// Which driver runs the device (`VkPhysicalDeviceDriverProperties::driverID`).
    pub fn driver_id(&self) -> vk::DriverId {
        let mut driver = vk::PhysicalDeviceDriverProperties::default();
        let mut props = vk::PhysicalDeviceProperties2::default().push_next(&mut driver);
        // SAFETY: valid physical device of this instance (Vulkan 1.2); the pNext chain
        // points at a live struct.
        unsafe {
            self.instance()
                .get_physical_device_properties2(self.physical_device(), &mut props)
        };
        driver.driver_id
    }

    /// Asks the driver whether an image of `desc` (format, kind, usage, tiling, cube flag)
    /// can be created with `desc.handle_type` external memory, and within which limits.
    /// `desc`'s extent, levels and layers are not looked at: compare them with the result.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when Vulkan has no such handle type, or the driver refuses the
    /// combination; the reason says why (missing format feature for a usage bit, tiling,
    /// image type, or the handle type).
    pub fn image_support(&self, desc: &ImageDesc) -> Result<ImageSupport> {
        let t = desc.handle_type;
        let flags = memory_handle_flags(t).ok_or_else(|| Error::Unsupported {
            what: format!("{t} image memory in Vulkan"),
            reason: "Vulkan has no such external memory handle type".into(),
        })?;
        let mut props = vk::ExternalImageFormatProperties::default();
        let result = self.image_format_properties(desc, Some(flags), Some(&mut props));
        match result {
            Ok(p) => Ok(ImageSupport {
                external: memory_support(props.external_memory_properties),
                max_extent: p.max_extent,
                max_mip_levels: p.max_mip_levels,
                max_array_layers: p.max_array_layers,
                max_resource_size: p.max_resource_size,
            }),
            Err(vk::Result::ERROR_FORMAT_NOT_SUPPORTED) => Err(self.explain_refusal(desc)),
            Err(r) => Err(Error::vk("vkGetPhysicalDeviceImageFormatProperties2", r)),
        }
    }

    /// `vkGetPhysicalDeviceImageFormatProperties2`, with the external-memory query when
    /// `external` is given.
    fn image_format_properties(
        &self,
        desc: &ImageDesc,
        external: Option<vk::ExternalMemoryHandleTypeFlags>,
        props: Option<&mut vk::ExternalImageFormatProperties<'_>>,
    ) -> std::result::Result<vk::ImageFormatProperties, vk::Result> {
        let mut external_info = external
            .map(|flags| vk::PhysicalDeviceExternalImageFormatInfo::default().handle_type(flags));
        let mut info = vk::PhysicalDeviceImageFormatInfo2::default()
            .format(desc.format)
            .ty(desc.kind.image_type())
            .tiling(desc.tiling)
            .usage(desc.usage)
            .flags(desc.kind.create_flags());
        if let Some(e) = external_info.as_mut() {
            info = info.push_next(e);
        }
        let mut out = vk::ImageFormatProperties2::default();
        if let Some(p) = props {
            out = out.push_next(p);
        }
        // SAFETY: valid physical device of this instance (Vulkan >= 1.1); both chains point
        // at live structs of the types the call accepts.
        unsafe {
            self.instance()
                .get_physical_device_image_format_properties2(
                    self.physical_device(),
                    &info,
                    &mut out,
                )
        }?;
        Ok(out.image_format_properties)
    }

    /// Why `desc` was refused: the external handle type, or a format feature a usage bit
    /// needs, or the combination as a whole.
    fn explain_refusal(&self, desc: &ImageDesc) -> Error {
        let what = format!(
            "{:?} {:?} image with usage {:?}, tiling {:?}, exported as {}",
            desc.format, desc.kind, desc.usage, desc.tiling, desc.handle_type
        );
        let call = "vkGetPhysicalDeviceImageFormatProperties2 returned ERROR_FORMAT_NOT_SUPPORTED";
        if self.image_format_properties(desc, None, None).is_ok() {
            return Error::Unsupported {
                what,
                reason: format!(
                    "the device supports this image, but not with {} external memory ({call} \
                     once VkPhysicalDeviceExternalImageFormatInfo is added)",
                    desc.handle_type
                ),
            };
        }
        // SAFETY: valid physical device of this instance.
        let format_props = unsafe {
            self.instance()
                .get_physical_device_format_properties(self.physical_device(), desc.format)
        };
        let features = if desc.tiling == vk::ImageTiling::LINEAR {
            format_props.linear_tiling_features
        } else {
            format_props.optimal_tiling_features
        };
        use vk::FormatFeatureFlags as Ff;
        use vk::ImageUsageFlags as U;
        let needs = [
            (U::STORAGE, Ff::STORAGE_IMAGE, "STORAGE_IMAGE"),
            (U::SAMPLED, Ff::SAMPLED_IMAGE, "SAMPLED_IMAGE"),
            (
                U::COLOR_ATTACHMENT,
                Ff::COLOR_ATTACHMENT,
                "COLOR_ATTACHMENT",
            ),
            (
                U::DEPTH_STENCIL_ATTACHMENT,
                Ff::DEPTH_STENCIL_ATTACHMENT,
                "DEPTH_STENCIL_ATTACHMENT",
            ),
            (U::TRANSFER_SRC, Ff::TRANSFER_SRC, "TRANSFER_SRC"),
            (U::TRANSFER_DST, Ff::TRANSFER_DST, "TRANSFER_DST"),
        ];
        let missing: Vec<String> = needs
            .iter()
            .filter(|(usage, feature, _)| {
                desc.usage.contains(*usage) && !features.contains(*feature)
            })
            .map(|(usage, _, name)| format!("{name} (for usage {usage:?})"))
            .collect();
        let reason = if features.is_empty() {
            format!(
                "the device has no {:?}-tiling support for {:?} at all (no format features)",
                desc.tiling, desc.format
            )
        } else if !missing.is_empty() {
            format!(
                "{:?} with {:?} tiling lacks the format feature(s) {}; drop those usage bits or \
                 pick another format",
                desc.format,
                desc.tiling,
                missing.join(", ")
            )
        } else {
            format!(
                "the format features allow the usage, but not as a {:?} image with flags {:?} \
                 ({call}; LINEAR tiling is often limited to one-level 2D images)",
                desc.kind.image_type(),
                desc.kind.create_flags()
            )
        };
        Error::Unsupported { what, reason }
    }
}

fn memory_support(p: vk::ExternalMemoryProperties) -> ExternalSupport {
    let f = p.external_memory_features;
    ExternalSupport {
        exportable: f.contains(vk::ExternalMemoryFeatureFlags::EXPORTABLE),
        importable: f.contains(vk::ExternalMemoryFeatureFlags::IMPORTABLE),
        dedicated_only: f.contains(vk::ExternalMemoryFeatureFlags::DEDICATED_ONLY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_memory_type_but_nvsci_has_a_vulkan_flag() {
        for t in MemoryHandleType::ALL {
            assert_eq!(
                memory_handle_flags(t).is_none(),
                t == MemoryHandleType::NvSciBuf,
                "{t}"
            );
        }
    }

    #[test]
    fn semaphore_flags_follow_the_vulkan_spec() {
        use vk::ExternalSemaphoreHandleTypeFlags as F;
        assert_eq!(
            semaphore_handle_flags(SemaphoreHandleType::TimelineFd),
            Some(F::OPAQUE_FD)
        );
        assert_eq!(
            semaphore_handle_flags(SemaphoreHandleType::D3D11Fence),
            Some(F::D3D11_FENCE)
        );
        assert_eq!(
            semaphore_handle_flags(SemaphoreHandleType::D3D11KeyedMutex),
            None
        );
    }
}
