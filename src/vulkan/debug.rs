//! Validation-layer messages: printed, and errors counted so tests can assert zero.

use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};

use ash::vk;

use crate::error::{Error, Result};

/// Owns a `VkDebugUtilsMessengerEXT` whose callback counts error messages.
pub(crate) struct Messenger {
    loader: ash::ext::debug_utils::Instance,
    messenger: vk::DebugUtilsMessengerEXT,
    /// Boxed so the address handed to the callback stays put.
    errors: Box<AtomicU64>,
}

impl Messenger {
    pub(crate) fn new(entry: &ash::Entry, instance: &ash::Instance) -> Result<Self> {
        let loader = ash::ext::debug_utils::Instance::new(entry, instance);
        let errors = Box::new(AtomicU64::new(0));
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
            .user_data(std::ptr::from_ref::<AtomicU64>(&errors) as *mut c_void);
        // SAFETY: `info` is valid; the user data points at `errors`, which is boxed and lives
        // as long as the messenger (destroyed first in Drop).
        let messenger = unsafe { loader.create_debug_utils_messenger(&info, None) }
            .map_err(|r| Error::vk("vkCreateDebugUtilsMessengerEXT", r))?;
        Ok(Self {
            loader,
            messenger,
            errors,
        })
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
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
        // SAFETY: `user` is the boxed counter of the Messenger that registered this callback.
        let errors = unsafe { &*(user as *const AtomicU64) };
        errors.fetch_add(1, Ordering::Relaxed);
    }
    eprintln!(
        "[vulkan validation {}] {text}",
        if is_error { "ERROR" } else { "warning" }
    );
    vk::FALSE
}
