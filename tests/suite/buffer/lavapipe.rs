//! Vulkan-side buffer tests: run on any Vulkan device with `VK_KHR_external_memory_fd`
//! (lavapipe in CI, the NVIDIA driver on the GPU host). Zero-copy is checked for real: the
//! memory is exported as an fd and imported back as a second allocation, and bytes written
//! through one buffer are read through the other.

use crate::common;
use libtest_mimic::Trial;

use std::os::fd::OwnedFd;

use anyhow::{ensure, Context as _};
use common::{assert_bytes, assert_no_validation_errors, open_fds, pattern_bytes};
use vkcuda::external::{MemoryHandle, MemoryHandleType, MemoryImport};
use vkcuda::util::OneShot;
use vkcuda::vulkan::{BufferDesc, Context, ContextDesc, ExternalBuffer};
use vkcuda::Error;

/// [`ExternalBuffer::import`] for the trials that hand it wrong descriptions on purpose.
fn import_buffer(
    vk: &Context,
    desc: &BufferDesc,
    import: MemoryImport,
) -> vkcuda::Result<ExternalBuffer> {
    // SAFETY: each caller passes a description vkcuda refuses before any driver call, or
    // (foreign_fd_is_refused) a handle that is not memory at all, for the driver to refuse:
    // the error paths are what these trials test.
    unsafe { ExternalBuffer::import(vk, desc, import) }
}

fn bytes_cross_both_ways(vk: &Context, size: u64) -> anyhow::Result<()> {
    let a = ExternalBuffer::new(vk, &BufferDesc::new(size))?;
    let b = a.alias()?;
    let one = pattern_bytes(size, 1);
    vk.write_buffer(&a, 0, &one)?;
    assert_bytes(&vk.read_buffer(&b, 0..size)?, &one, "a -> b")?;
    let two = pattern_bytes(size, 2);
    vk.write_buffer(&b, 0, &two)?;
    assert_bytes(&vk.read_buffer(&a, 0..size)?, &two, "b -> a")?;
    assert_no_validation_errors(vk)
}

fn sizes(vk: &Context) -> anyhow::Result<()> {
    for size in [1, 3, 255, 4096, 4097, 65_537, 1 << 20] {
        bytes_cross_both_ways(vk, size).with_context(|| format!("size {size}"))?;
    }
    Ok(())
}

fn second_export_imports_too(vk: &Context) -> anyhow::Result<()> {
    let a = ExternalBuffer::new(vk, &BufferDesc::new(8192))?;
    let first = a.alias()?;
    let second = a.alias()?;
    let data = pattern_bytes(8192, 3);
    vk.write_buffer(&first, 0, &data)?;
    assert_bytes(&vk.read_buffer(&second, 0..8192)?, &data, "first -> second")?;
    assert_no_validation_errors(vk)
}

fn partial_ranges_and_fill(vk: &Context) -> anyhow::Result<()> {
    let a = ExternalBuffer::new(vk, &BufferDesc::new(4096))?;
    let b = a.alias()?;
    vk.fill_buffer(&a, 0..4096, 0xdead_beef)?;
    vk.write_buffer(&a, 1000, &[1, 2, 3])?;
    let got = vk.read_buffer(&b, 996..1004)?;
    assert_bytes(
        &got,
        &[0xef, 0xbe, 0xad, 0xde, 1, 2, 3, 0xde],
        "fill + write",
    )?;
    assert_no_validation_errors(vk)
}

fn allocation_size_is_what_gets_exported(vk: &Context) -> anyhow::Result<()> {
    let a = ExternalBuffer::new(vk, &BufferDesc::new(1))?;
    let import = a.export()?;
    ensure!(import.dedicated, "exports are dedicated allocations");
    ensure!(
        import.size == a.allocation_size() && import.size >= 1,
        "export size {} vs allocation {}",
        import.size,
        a.allocation_size()
    );
    Ok(())
}

fn capabilities(vk: &Context) -> anyhow::Result<()> {
    let usage = BufferDesc::new(1).usage;
    let fd = vk.buffer_support(usage, MemoryHandleType::OpaqueFd)?;
    ensure!(fd.exportable && fd.importable, "opaque fd: {fd:?}");
    let err = vk
        .buffer_support(usage, MemoryHandleType::NvSciBuf)
        .expect_err("NvSciBuf has no Vulkan handle type");
    ensure!(matches!(err, Error::Unsupported { .. }), "{err}");
    Ok(())
}

/// Each bad input: typed error naming the argument, and no fd leaked.
fn bad_input(vk: &Context) -> anyhow::Result<()> {
    let fds = open_fds();
    let invalid_arg = |r: vkcuda::Result<ExternalBuffer>, arg: &str| -> anyhow::Result<()> {
        match r {
            Err(Error::InvalidArgument { arg: a, .. }) if a == arg => Ok(()),
            Err(e) => anyhow::bail!("expected InvalidArgument({arg}), got {e}"),
            Ok(_) => anyhow::bail!("expected InvalidArgument({arg}), got a buffer"),
        }
    };
    invalid_arg(ExternalBuffer::new(vk, &BufferDesc::new(0)), "desc.size")?;
    let too_big = vk.max_allocation_size() + 1;
    invalid_arg(
        ExternalBuffer::new(vk, &BufferDesc::new(too_big)),
        "desc.size",
    )?;

    let win32 = BufferDesc::new(64).handle_type(MemoryHandleType::OpaqueWin32);
    let err = ExternalBuffer::new(vk, &win32).expect_err("Win32 export on Linux");
    ensure!(matches!(err, Error::Unsupported { .. }), "{err}");
    if !vk.can_export_dma_buf() {
        let dma = BufferDesc::new(64).handle_type(MemoryHandleType::DmaBufFd);
        let err = ExternalBuffer::new(vk, &dma).expect_err("no dma-buf extension");
        ensure!(
            err.to_string().contains("VK_EXT_external_memory_dma_buf"),
            "{err}"
        );
    }

    let a = ExternalBuffer::new(vk, &BufferDesc::new(4096))?;
    let e = vk.read_buffer(&a, 4000..4097).expect_err("past the end");
    ensure!(
        matches!(e, Error::InvalidArgument { arg: "range", .. }),
        "{e}"
    );
    let e = vk.read_buffer(&a, 5..5).expect_err("empty");
    ensure!(
        matches!(e, Error::InvalidArgument { arg: "range", .. }),
        "{e}"
    );
    let e = vk
        .write_buffer(&a, 4095, &[1, 2])
        .expect_err("past the end");
    ensure!(
        matches!(e, Error::InvalidArgument { arg: "data", .. }),
        "{e}"
    );
    let e = vk.fill_buffer(&a, 2..10, 0).expect_err("misaligned");
    ensure!(e.to_string().contains("4-byte"), "{e}");
    let storage_only = BufferDesc::new(64).usage(ash::vk::BufferUsageFlags::STORAGE_BUFFER);
    let s = ExternalBuffer::new(vk, &storage_only)?;
    let e = vk.read_buffer(&s, 0..4).expect_err("no TRANSFER_SRC");
    ensure!(e.to_string().contains("TRANSFER_SRC"), "{e}");

    // Import errors: the fd is closed by vkcuda whatever happens.
    let desc = BufferDesc::new(4096);
    let mut import = a.export()?;
    import.size = 1;
    invalid_arg(import_buffer(vk, &desc, import), "import.size")?;
    // An export says its memory type, and an import must use that one: a type the buffer
    // cannot live in, or one the device lacks, is refused.
    let import = a.export()?;
    let own = import
        .memory_type
        .context("a Vulkan export names its memory type")?;
    ensure!(own == a.memory_type(), "export says type {own}");
    drop(import);
    ensure!(
        a.alias()?.memory_type() == own,
        "the alias is not in the exporter's type"
    );
    for wrong in [32, u32::MAX] {
        let mut import = a.export()?;
        import.memory_type = Some(wrong);
        let e = common::expect_invalid_arg(import_buffer(vk, &desc, import), "import.memory_type")?;
        ensure!(e.to_string().contains("01742"), "{e}");
    }
    let dma_desc = BufferDesc::new(4096).handle_type(MemoryHandleType::DmaBufFd);
    invalid_arg(
        import_buffer(vk, &dma_desc, a.export()?),
        "desc.handle_type",
    )?;
    let imported = a.alias()?;
    let e = imported
        .export()
        .expect_err("imported buffers do not re-export");
    ensure!(matches!(e, Error::Unsupported { .. }), "{e}");
    // Drivers may hold an fd per exportable allocation (lavapipe does): count after drop.
    drop((imported, a, s));

    ensure!(open_fds() == fds, "fds grew from {fds} to {}", open_fds());
    assert_no_validation_errors(vk)
}

/// An fd that is not exported memory is refused by the driver and closed by vkcuda.
/// (Run last among the import tests: some drivers log the rejected import.)
fn foreign_fd_is_refused(vk: &Context) -> anyhow::Result<()> {
    let fds = open_fds();
    let dev_null: OwnedFd = std::fs::File::open("/dev/null")?.into();
    let bogus = MemoryImport {
        handle: MemoryHandle::OpaqueFd(dev_null),
        size: 4096,
        dedicated: true,
        memory_type: None,
    };
    let r = import_buffer(vk, &BufferDesc::new(4096), bogus);
    ensure!(r.is_err(), "importing /dev/null as memory succeeded");
    ensure!(open_fds() == fds, "the rejected fd leaked");
    Ok(())
}

/// Create/export/import/drop many times: open fds stay flat.
fn no_leaks(vk: &Context) -> anyhow::Result<()> {
    let cycle = || -> anyhow::Result<()> {
        let a = ExternalBuffer::new(vk, &BufferDesc::new(4096))?;
        let b = a.alias()?;
        drop(a.export()?); // an export nobody imports is closed on drop
        drop((b, a));
        Ok(())
    };
    common::assert_cycles_keep_fds(2000, cycle)?;
    assert_no_validation_errors(vk)
}

/// A buffer of another context (a second `VkDevice` on the same GPU, so the same UUID) is
/// refused by every transfer, naming the argument, before any driver call; its owner still
/// uses it.
fn another_contexts_buffer_is_refused(a: &Context) -> anyhow::Result<()> {
    let b = Context::new(&ContextDesc::default())?;
    let theirs = ExternalBuffer::new(&b, &BufferDesc::new(4096))?;
    common::expect_invalid_arg(a.fill_buffer(&theirs, 0..4096, 7), "buffer")?;
    common::expect_invalid_arg(a.write_buffer(&theirs, 0, &[1, 2, 3, 4]), "buffer")?;
    let e = common::expect_invalid_arg(a.read_buffer(&theirs, 0..4096), "buffer")?;
    ensure!(e.to_string().contains("another device"), "{e}");
    b.fill_buffer(&theirs, 0..4096, 0x0101_0101)?;
    ensure!(
        b.read_buffer(&theirs, 0..4)? == [1, 1, 1, 1],
        "the owner's bytes"
    );
    assert_no_validation_errors(a)?;
    assert_no_validation_errors(&b)
}

/// The trials of this file.
/// `Commands::copy_buffer`: a GPU-side copy between Vulkan-owned buffers (a per-frame
/// upload from a buffer filled once), repeated on one `Commands` with no new allocation;
/// bad ranges, zero length and overlap in one buffer are typed errors.
fn commands_copy_buffer(vk: &Context) -> anyhow::Result<()> {
    use std::sync::Arc;
    use vkcuda::util::Commands;
    let len = 1 << 20;
    let src = Arc::new(ExternalBuffer::new(vk, &BufferDesc::new(len))?);
    let dst = Arc::new(ExternalBuffer::new(vk, &BufferDesc::new(2 * len))?);
    let data = pattern_bytes(len, 41);
    vk.write_buffer(&src, 0, &data)?;
    let mut c = Commands::new(vk)?;
    for frame in 0..3u64 {
        let at = (frame % 2) * len;
        c.copy_buffer(&src, 0, &dst, at, len)?;
        c.submit(0, &[], &[], std::time::Duration::from_secs(10))?;
        c.wait(std::time::Duration::from_secs(10))?;
        assert_bytes(&vk.read_buffer(&dst, at..at + len)?, &data, "copied")?;
    }
    common::expect_invalid_arg(c.copy_buffer(&src, 0, &dst, 0, 0), "len")?;
    common::expect_invalid_arg(c.copy_buffer(&src, 1, &dst, 0, len), "src_offset")?;
    common::expect_invalid_arg(c.copy_buffer(&src, 0, &dst, 2 * len - 1, 2), "dst_offset")?;
    common::expect_invalid_arg(c.copy_buffer(&dst, 0, &dst, 16, 64), "dst_offset")?;
    c.copy_buffer(&dst, 0, &dst, len, 64)?; // disjoint ranges of one buffer are fine
    c.submit(0, &[], &[], std::time::Duration::from_secs(10))?;
    c.wait(std::time::Duration::from_secs(10))?;
    assert_bytes(
        &vk.read_buffer(&dst, len..len + 64)?,
        &data[..64],
        "self copy",
    )?;
    assert_no_validation_errors(vk)
}

pub fn trials() -> Vec<Trial> {
    let probe = common::vulkan_probe();
    let tests: [common::Test<Context>; 11] = [
        (
            "validation_is_counted_when_requested",
            common::validation_is_counted_when_requested,
        ),
        ("zero_copy_roundtrip_sizes", sizes),
        ("second_export_imports_too", second_export_imports_too),
        ("partial_ranges_and_fill", partial_ranges_and_fill),
        (
            "allocation_size_is_exported",
            allocation_size_is_what_gets_exported,
        ),
        ("capabilities", capabilities),
        ("commands_copy_buffer", commands_copy_buffer),
        ("bad_input_is_typed_and_leak_free", bad_input),
        ("create_destroy_2000_no_fd_growth", no_leaks),
        (
            "another_contexts_buffer_is_refused",
            another_contexts_buffer_is_refused,
        ),
        // Last: on NVIDIA 580 a refused foreign fd leaves later vkAllocateMemory calls
        // failing with OUT_OF_DEVICE_MEMORY (seen on the H100), so nothing runs after it.
        ("foreign_fd_is_refused", foreign_fd_is_refused),
    ];
    common::trials_of(
        &probe,
        tests,
        "Vulkan device with VK_KHR_external_memory_fd",
    )
}
