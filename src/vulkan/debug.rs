//! Validation-layer messages: printed, and errors counted (in all and by VUID) so tests
//! can assert zero, or name the known false positives they expect.

use std::collections::BTreeMap;
use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use ash::vk;

use crate::error::{Error, Result};

/// What the callback counts.
#[derive(Default)]
struct Counts {
    errors: AtomicU64,
    /// Error messages by message id (the VUID, e.g. `VUID-vkQueueSubmit-pWaitSemaphores-03238`).
    by_id: Mutex<BTreeMap<String, u64>>,
}

/// Owns a `VkDebugUtilsMessengerEXT` whose callback counts error messages.
pub(crate) struct Messenger {
    loader: ash::ext::debug_utils::Instance,
    messenger: vk::DebugUtilsMessengerEXT,
    /// Boxed so the address handed to the callback stays put.
    counts: Box<Counts>,
}

impl Messenger {
    pub(crate) fn new(entry: &ash::Entry, instance: &ash::Instance) -> Result<Self> {
        let loader = ash::ext::debug_utils::Instance::new(entry, instance);
        let counts = Box::<Counts>::default();
        let info = vk::DebugUtilsMessengerCreateInfoEXT::default()
            .message_severity(
                vk::DebugUtilsMessageSeverityFlagsEXT::WARNING
                    | vk::DebugUtilsMessageSeverityFlagsEXT::ERROR,
            )
            .message_type(
                vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                    | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
            )
            .pfn_user_callback(Some(callback))
            .user_data(std::ptr::from_ref::<Counts>(&counts) as *mut c_void);
        // SAFETY: `info` is valid; the user data points at `counts`, which is boxed and lives
        // as long as the messenger (destroyed first in Drop).
        let messenger = unsafe { loader.create_debug_utils_messenger(&info, None) }
            .map_err(|r| Error::vk("vkCreateDebugUtilsMessengerEXT", r))?;
        Ok(Self {
            loader,
            messenger,
            counts,
        })
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.counts.errors.load(Ordering::Relaxed)
    }

    pub(crate) fn errors_by_id(&self) -> BTreeMap<String, u64> {
        self.counts
            .by_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Messenger {
    fn drop(&mut self) {
        // SAFETY: the messenger was created by this loader and is destroyed once, before
        // the instance (the context drops its messenger first).
        unsafe {
            self.loader
                .destroy_debug_utils_messenger(self.messenger, None)
        };
    }
}

unsafe extern "system" fn callback(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    _types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    user: *mut c_void,
) -> vk::Bool32 {
    // SAFETY: the layer passes valid callback data for the duration of the call.
    let data = unsafe { &*data };
    let text = if data.p_message.is_null() {
        std::borrow::Cow::Borrowed("(no message)")
    } else {
        // SAFETY: p_message is a NUL-terminated string owned by the layer for this call.
        unsafe { CStr::from_ptr(data.p_message) }.to_string_lossy()
    };
    let is_error = severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::ERROR);
    if is_error && !user.is_null() {
        // SAFETY: `user` is the boxed counts of the Messenger that registered this callback.
        let counts = unsafe { &*(user as *const Counts) };
        counts.errors.fetch_add(1, Ordering::Relaxed);
        let id = if data.p_message_id_name.is_null() {
            format!("(message id {:#x})", data.message_id_number)
        } else {
            // SAFETY: a NUL-terminated string owned by the layer for this call.
            unsafe { CStr::from_ptr(data.p_message_id_name) }
                .to_string_lossy()
                .into_owned()
        };
        let mut by_id = counts.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        *by_id.entry(id).or_default() += 1;
    }
    if is_error {
        log::error!(target: "vkcuda::validation", "{text}");
    } else {
        log::warn!(target: "vkcuda::validation", "{text}");
    }
    vk::FALSE
}
