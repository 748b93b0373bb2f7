//! The CUDA device that is the same GPU as the exporter's, and its primary context.

use std::sync::Arc;
#[cfg(feature = "dynamic-loading")]
use std::sync::OnceLock;

use cudarc::driver::{result, sys, CudaContext, CudaStream, DriverError};

use crate::error::CudaDeviceSeen;
use crate::external::{DeviceIdentity, Uuid};
use crate::{Error, Result};

/// Whether the CUDA driver library (`libcuda.so.1`, `nvcuda.dll`) can be loaded.
///
/// Every other entry point of [`crate::cuda`] needs it; they check this first and return
/// [`Error::Missing`] instead of letting cudarc panic. The answer is computed once per
/// process. Built with the `dynamic-linking` or `static-linking` feature, the driver was
/// linked and the program could not have started without it: always `true`.
pub fn is_driver_present() -> bool {
    #[cfg(feature = "dynamic-loading")]
    {
        static PRESENT: OnceLock<bool> = OnceLock::new();
        *PRESENT.get_or_init(|| {
            // SAFETY: this only tries to load the library (running its initialisers), which
            // is what every CUDA program does; cudarc states no other precondition.
            unsafe { sys::is_culib_present() }
        })
    }
    #[cfg(not(feature = "dynamic-loading"))]
    true
}

/// Loads and initialises the driver, mapping "no library" and "no device" to
/// [`Error::Missing`].
fn init() -> Result<()> {
    if !is_driver_present() {
        return Err(Error::Missing {
            library: "CUDA driver",
            reason: "libcuda could not be loaded (is the NVIDIA driver installed and on the \
                     loader path?)"
                .to_owned(),
        });
    }
    match result::init() {
        Ok(()) => Ok(()),
        Err(DriverError(sys::CUresult::CUDA_ERROR_NO_DEVICE)) => Err(Error::Missing {
            library: "CUDA driver",
            reason: "cuInit found no CUDA device (CUDA_ERROR_NO_DEVICE; check \
                     CUDA_VISIBLE_DEVICES)"
                .to_owned(),
        }),
        Err(e) => Err(Error::cuda("cuInit", e)),
    }
}

/// Makes `ctx` current on the calling thread, as every driver call of [`crate::cuda`] needs.
/// (cudarc's `bind_to_thread` also reports an error recorded earlier by a `Drop`.)
pub(super) fn bind(ctx: &CudaContext) -> Result<()> {
    ctx.bind_to_thread()
        .map_err(|e| Error::cuda("cuCtxSetCurrent", e))
}

/// `cuDeviceGetName` and `cuDeviceGetUuid` of `dev`.
fn name_and_uuid(dev: sys::CUdevice) -> Result<(String, Uuid)> {
    let name = result::device::get_name(dev).map_err(|e| Error::cuda("cuDeviceGetName", e))?;
    let uuid = result::device::get_uuid(dev).map_err(|e| Error::cuda("cuDeviceGetUuid", e))?;
    Ok((name, Uuid(uuid.bytes.map(|b| b.to_ne_bytes()[0]))))
}

/// A CUDA device chosen by UUID, with its primary context.
///
/// Cloning is cheap and shares the context. Everything vkcuda imports holds the
/// `Arc<CudaContext>` it was imported in, so the context outlives its imports.
#[derive(Debug, Clone)]
pub struct Context {
    cuda: Arc<CudaContext>,
    ordinal: usize,
    name: String,
    uuid: Uuid,
}

impl Context {
    /// Retains the primary context of the CUDA device whose `cuDeviceGetUuid` equals
    /// `identity.uuid`: the same GPU as the exporter (Vulkan `deviceUUID`).
    ///
    /// The device is never chosen by index, so `CUDA_VISIBLE_DEVICES` remapping or an
    /// integrated GPU listed first cannot pick the wrong one.
    ///
    /// # Errors
    /// * [`Error::Missing`] when the CUDA driver cannot be loaded or sees no device.
    /// * [`Error::NoMatchingCudaDevice`] when no CUDA device has the UUID; it lists every
    ///   device seen.
    /// * [`Error::Cuda`] when a driver query or the context retain fails.
    ///
    /// ```no_run
    /// # fn main() -> vkcuda::Result<()> {
    /// # let identity: vkcuda::external::DeviceIdentity = todo!();
    /// let cu = vkcuda::cuda::Context::matching(&identity)?;
    /// println!("CUDA device #{} {} ({})", cu.ordinal(), cu.name(), cu.uuid());
    /// # Ok(()) }
    /// ```
    pub fn matching(identity: &DeviceIdentity) -> Result<Self> {
        let seen = Self::devices()?;
        let Some(found) = seen.iter().find(|d| d.uuid == identity.uuid) else {
            return Err(Error::NoMatchingCudaDevice {
                vulkan_name: identity.name.clone(),
                vulkan_uuid: identity.uuid,
                cuda_seen: seen,
            });
        };
        let cuda = CudaContext::new(found.ordinal)
            .map_err(|e| Error::cuda("cuDevicePrimaryCtxRetain", e))?;
        Ok(Self {
            cuda,
            ordinal: found.ordinal,
            name: found.name.clone(),
            uuid: found.uuid,
        })
    }

    /// Adopts the caller's own context (a candle or burn device holds one) for the GPU
    /// with `identity.uuid`, after checking that the context's device is that GPU. Imports
    /// made through the returned context use `ctx` (its primary or any other context).
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] (`ctx`) naming both devices (CUDA ordinal, name and
    ///   UUID; Vulkan name and UUID) when the context runs on another GPU.
    /// * [`Error::Cuda`] when a device query fails.
    ///
    /// ```no_run
    /// # fn main() -> vkcuda::Result<()> {
    /// # let vk: vkcuda::vulkan::Context = todo!();
    /// let mine = vkcuda::cudarc::driver::CudaContext::new(0).expect("CUDA context");
    /// let cu = vkcuda::cuda::Context::adopt(mine, vk.identity())?;
    /// # Ok(()) }
    /// ```
    pub fn adopt(ctx: Arc<CudaContext>, identity: &DeviceIdentity) -> Result<Self> {
        bind(&ctx)?;
        let (name, uuid) = name_and_uuid(ctx.cu_device())?;
        if uuid != identity.uuid {
            return Err(Error::invalid(
                "ctx",
                format!(
                    "the CUDA context runs on device #{} {name:?} ({uuid}), not on the Vulkan \
                     device {:?} ({})",
                    ctx.ordinal(),
                    identity.name,
                    identity.uuid
                ),
                "a context of the CUDA device with the Vulkan device's UUID",
            ));
        }
        Ok(Self {
            ordinal: ctx.ordinal(),
            cuda: ctx,
            name,
            uuid,
        })
    }

    /// Every CUDA device visible to this process (after `CUDA_VISIBLE_DEVICES`), with its
    /// name and UUID. Creates no context.
    ///
    /// # Errors
    /// [`Error::Missing`] when the driver cannot be loaded or sees no device;
    /// [`Error::Cuda`] when a query fails.
    pub fn devices() -> Result<Vec<CudaDeviceSeen>> {
        init()?;
        let count = result::device::get_count().map_err(|e| Error::cuda("cuDeviceGetCount", e))?;
        (0..count)
            .map(|ordinal| {
                let dev =
                    result::device::get(ordinal).map_err(|e| Error::cuda("cuDeviceGet", e))?;
                let (name, uuid) = name_and_uuid(dev)?;
                Ok(CudaDeviceSeen {
                    ordinal: usize::try_from(ordinal).unwrap_or_default(),
                    name,
                    uuid,
                })
            })
            .collect()
    }

    /// The cudarc context (the device's primary context), for streams, modules and
    /// launches.
    pub fn cuda(&self) -> &Arc<CudaContext> {
        &self.cuda
    }

    /// CUDA ordinal of the device (after `CUDA_VISIBLE_DEVICES` remapping).
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// `cuDeviceGetName`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `cuDeviceGetUuid`, equal to the exporter's device UUID.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// A new non-blocking stream: the place for per-frame work, waits and signals.
    ///
    /// # Errors
    /// [`Error::Cuda`] when `cuStreamCreate` fails.
    pub fn new_stream(&self) -> Result<Arc<CudaStream>> {
        self.cuda
            .new_stream()
            .map_err(|e| Error::cuda("cuStreamCreate", e))
    }

    /// The context's legacy default (null) stream. It synchronises with every other
    /// blocking stream; prefer [`Context::new_stream`] for work that must overlap.
    pub fn default_stream(&self) -> Arc<CudaStream> {
        self.cuda.default_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_never_panics_and_never_falls_back() {
        let identity = DeviceIdentity {
            name: "no such GPU".to_owned(),
            uuid: Uuid([0; 16]),
            luid: None,
            node_mask: 0,
        };
        match Context::matching(&identity) {
            Err(Error::Missing { library, .. }) => assert_eq!(library, "CUDA driver"),
            Err(Error::NoMatchingCudaDevice { vulkan_uuid, .. }) => {
                assert_eq!(vulkan_uuid, identity.uuid);
            }
            other => panic!("expected Missing or NoMatchingCudaDevice, got {other:?}"),
        }
    }

    #[test]
    fn devices_is_a_typed_result() {
        match Context::devices() {
            Ok(seen) => assert!(
                is_driver_present(),
                "devices listed without a driver: {seen:?}"
            ),
            Err(Error::Missing { library, .. }) => assert_eq!(library, "CUDA driver"),
            Err(other) => panic!("expected devices or Missing, got {other:?}"),
        }
    }
}
