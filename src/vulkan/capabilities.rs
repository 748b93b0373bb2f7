//! Handle-type conversions to Vulkan flags, and the external-memory/semaphore capability
//! queries run before anything is allocated.

use ash::vk;

use super::Context;
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
    /// Memory of this type must be a dedicated allocation (vkcuda always dedicates).
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
}

pub(crate) fn memory_support(p: vk::ExternalMemoryProperties) -> ExternalSupport {
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
