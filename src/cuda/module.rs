//! Run-time compilation of CUDA C++ kernels with NVRTC, cached per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::driver::CudaModule;
use cudarc::nvrtc::{self, CompileError, CompileOptions};

use super::Context;
use crate::{Error, Result};

/// Modules already compiled in this process: device ordinal -> source -> module.
type Cache = HashMap<usize, HashMap<String, Arc<CudaModule>>>;

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// Whether the NVRTC library can be loaded; computed once per process (always `true` when
/// it was linked, see [`super::is_driver_present`]).
fn is_nvrtc_present() -> bool {
    #[cfg(feature = "dynamic-loading")]
    {
        static PRESENT: OnceLock<bool> = OnceLock::new();
        *PRESENT.get_or_init(|| {
            // SAFETY: this only tries to load the library (running its initialisers); cudarc
            // states no other precondition.
            unsafe { nvrtc::sys::is_culib_present() }
        })
    }
    #[cfg(not(feature = "dynamic-loading"))]
    true
}

/// Rejects text NVRTC cannot take (it is passed as a C string).
fn check_c_text(arg: &'static str, text: &str) -> Result<()> {
    match text.find('\0') {
        Some(at) => Err(Error::invalid(
            arg,
            format!("contains a NUL byte at offset {at}"),
            "text without NUL bytes",
        )),
        None => Ok(()),
    }
}

/// The NVRTC options for a device of compute capability `major.minor`.
fn options_for(name: &str, (major, minor): (i32, i32)) -> CompileOptions {
    CompileOptions {
        name: Some(name.to_owned()),
        options: vec![format!("--gpu-architecture=sm_{major}{minor}")],
        ..CompileOptions::default()
    }
}

fn compile_error(name: &str, err: CompileError) -> Error {
    let log = match err {
        CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
        other => format!("{other}"),
    };
    Error::Compile {
        name: name.to_owned(),
        log,
    }
}

impl Context {
    /// Compiles CUDA C++ `source` with NVRTC for this device's compute capability
    /// (`--gpu-architecture=sm_XY`) and loads it, or returns the module compiled earlier in
    /// this process from the same source for the same device.
    ///
    /// `name` names the program in NVRTC's log and in errors. Kernel sources are meant to be
    /// embedded with `include_str!`, so binaries run from any directory. Cached modules live
    /// as long as the process (and keep the device's primary context retained).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cu: vkcuda::cuda::Context = todo!();
    /// const FILL: &str = r#"extern "C" __global__ void fill(unsigned char* p) { p[threadIdx.x] = 1; }"#;
    /// let module = cu.compile("fill.cu", FILL)?;
    /// let fill = module.load_function("fill")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] when `name` or `source` contains a NUL byte.
    /// * [`Error::Missing`] when NVRTC cannot be loaded.
    /// * [`Error::Compile`] with NVRTC's log when compilation fails.
    /// * [`Error::Cuda`] when the device query or `cuModuleLoadData` fails.
    pub fn compile(&self, name: &str, source: &str) -> Result<Arc<CudaModule>> {
        check_c_text("name", name)?;
        check_c_text("source", source)?;
        let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
        let per_device = cache.entry(self.ordinal()).or_default();
        if let Some(module) = per_device.get(source) {
            return Ok(module.clone());
        }
        if !is_nvrtc_present() {
            return Err(Error::Missing {
                library: "NVRTC",
                reason: "libnvrtc could not be loaded (install the CUDA runtime compiler \
                         matching the driver, and put it on the loader path)"
                    .to_owned(),
            });
        }
        let capability = self
            .cuda()
            .compute_capability()
            .map_err(|e| Error::cuda("cuDeviceGetAttribute", e))?;
        let ptx = nvrtc::compile_ptx_with_opts(source, options_for(name, capability))
            .map_err(|e| compile_error(name, e))?;
        let module = self
            .cuda()
            .load_module(ptx)
            .map_err(|e| Error::cuda("cuModuleLoadData", e))?;
        per_device.insert(source.to_owned(), module.clone());
        Ok(module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_are_rejected_before_nvrtc() {
        let err = check_c_text("source", "__global__ void k() {}\0").unwrap_err();
        match err {
            Error::InvalidArgument { arg, problem, .. } => {
                assert_eq!(arg, "source");
                assert!(problem.contains("offset 22"), "{problem}");
            }
            other => panic!("{other:?}"),
        }
        assert!(check_c_text("name", "blur.cu").is_ok());
    }

    #[test]
    fn compiles_for_the_device_architecture() {
        let opts = options_for("blur.cu", (9, 0));
        assert_eq!(opts.options, ["--gpu-architecture=sm_90"]);
        assert_eq!(opts.name.as_deref(), Some("blur.cu"));
    }
}
