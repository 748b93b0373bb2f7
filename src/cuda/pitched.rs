//! [`PitchedBuffer`]: rows of bytes at a fixed pitch in device memory, the way CUDA sees a
//! LINEAR image (the `pitch` of `cudaMallocPitch`, `cuMemcpy2D` and pitched kernels).

use cudarc::driver::{sys, LaunchArgs, PushKernelArg};

use super::memory::MappedBuffer;
use crate::{Error, Result};

/// `rows` rows of `row_bytes` bytes, each starting `pitch` bytes after the one before,
/// from `offset` bytes into a [`MappedBuffer`], which it keeps alive.
///
/// Row `y` starts at [`cu_device_ptr`](PitchedBuffer::cu_device_ptr)` + y * pitch`; the
/// `pitch - row_bytes` bytes after each row are padding. Pass the pointer and the pitch to a
/// kernel (`launch_builder(..).arg(&pitched).arg(&pitch)`), or copy whole rows with
/// `cuMemcpy2D`. Dropping does not wait for GPU work that uses it.
#[derive(Debug)]
pub struct PitchedBuffer {
    ptr: sys::CUdeviceptr,
    pitch: u64,
    row_bytes: u64,
    rows: u32,
    /// What the pointer points into.
    buffer: MappedBuffer,
}

/// Bytes from the first byte of row 0 to the last byte of the last row, or `None` when the
/// shape is empty, a row is wider than the pitch, or the span overflows.
fn span(pitch: u64, row_bytes: u64, rows: u32) -> Option<u64> {
    if row_bytes == 0 || rows == 0 || row_bytes > pitch {
        return None;
    }
    pitch
        .checked_mul(u64::from(rows) - 1)?
        .checked_add(row_bytes)
}

impl PitchedBuffer {
    /// Views `buffer` from `offset` as `rows` rows of `row_bytes` bytes at `pitch`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`]: `row_bytes` or `rows` is 0 or `row_bytes` exceeds `pitch`
    /// (`row_bytes`), or the rows end past the buffer (`offset`).
    pub fn new(
        buffer: MappedBuffer,
        offset: u64,
        pitch: u64,
        row_bytes: u64,
        rows: u32,
    ) -> Result<Self> {
        let span = span(pitch, row_bytes, rows).ok_or_else(|| {
            Error::invalid(
                "row_bytes",
                format!("{rows} rows of {row_bytes} bytes at pitch {pitch}"),
                "at least 1 row of 1 to `pitch` bytes",
            )
        })?;
        let len = buffer.len() as u64;
        if offset.checked_add(span).is_none_or(|end| end > len) {
            return Err(Error::invalid(
                "offset",
                format!("{span} bytes of rows from offset {offset} end past the {len}-byte buffer"),
                format!(
                    "rows that end within the buffer (offset at most {})",
                    len.saturating_sub(span)
                ),
            ));
        }
        Ok(Self {
            ptr: buffer.cu_device_ptr() + offset,
            pitch,
            row_bytes,
            rows,
            buffer,
        })
    }

    /// The device address of the first byte of row 0.
    pub fn cu_device_ptr(&self) -> sys::CUdeviceptr {
        self.ptr
    }

    /// Bytes from the start of one row to the start of the next.
    pub fn pitch(&self) -> u64 {
        self.pitch
    }

    /// Bytes of data in each row (the rest of the pitch is padding).
    pub fn row_bytes(&self) -> u64 {
        self.row_bytes
    }

    /// Number of rows.
    pub fn rows(&self) -> u32 {
        self.rows
    }

    /// Bytes from the first byte of row 0 to the last data byte of the last row:
    /// `(rows - 1) * pitch + row_bytes`.
    pub fn span(&self) -> u64 {
        // Checked in `new`.
        self.pitch * (u64::from(self.rows) - 1) + self.row_bytes
    }

    /// The mapping the rows lie in.
    pub fn buffer(&self) -> &MappedBuffer {
        &self.buffer
    }
}

// SAFETY: pushes the address of the `CUdeviceptr` field, borrowed for `'b`, which outlives
// the launch builder `'a`; the kernel receives a plain device pointer to row 0, as with
// `&MappedBuffer`.
unsafe impl<'a, 'b: 'a> PushKernelArg<&'b PitchedBuffer> for LaunchArgs<'a> {
    #[inline(always)]
    fn arg(&mut self, arg: &'b PitchedBuffer) -> &mut Self {
        <Self as PushKernelArg<&'b sys::CUdeviceptr>>::arg(self, &arg.ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_span_ends_at_the_last_rows_data() {
        assert_eq!(span(256, 68, 3), Some(2 * 256 + 68));
        assert_eq!(span(68, 68, 1), Some(68));
        assert_eq!(span(64, 68, 3), None);
        assert_eq!(span(256, 0, 3), None);
        assert_eq!(span(256, 1, 0), None);
        assert_eq!(span(u64::MAX, 1, 3), None);
    }
}
