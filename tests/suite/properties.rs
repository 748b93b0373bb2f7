//! Property-based tests (issue 10): over descriptions, ranges, sizes, formats, layouts,
//! timeouts, signal values and ipc messages, every call returns `Ok` or a typed
//! [`vkcuda::Error`] (a panic fails the case), and the process's open fd count is the same
//! after each property as before it.
//!
//! The pure properties need no device. The device ones run on any Vulkan device (lavapipe
//! in CI) and are reported ignored without one (failed under `VKCUDA_REQUIRE_GPU=1`), as in
//! the other subjects. Case counts are kept small (two CI cores): [`CASES`] says how many each
//! property runs; `PROPTEST_CASES` overrides them all.

use crate::common;

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::ensure;
use libtest_mimic::Trial;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use vkcuda::ash::vk;
use vkcuda::external::MemoryHandleType;
use vkcuda::interop::cuda_array_desc;
use vkcuda::util::OneShot;
use vkcuda::vulkan::{
    self, texel_block, BufferDesc, ExternalBuffer, ExternalImage, ImageDesc, ImageKind, Semaphore,
    SemaphoreKind,
};
use vkcuda::{ipc, Error};

/// Cases per property, by name (the total is printed when the trials are listed).
const CASES: [(&str, u32); 9] = [
    ("formats_are_classified_without_panics", 256),
    ("cuda_array_descriptions_are_derived_or_refused", 256),
    ("ipc_messages_round_trip", 48),
    ("ipc_garbage_is_refused_typed", 48),
    ("host_signal_sequences_never_go_backwards", 24),
    ("host_waits_honour_any_timeout", 24),
    ("buffer_sizes_and_ranges_are_checked", 24),
    ("image_descriptions_are_created_or_refused", 32),
    ("image_layouts_are_accepted_or_refused", 24),
];

fn cases(name: &str) -> u32 {
    if let Some(n) = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    CASES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(16, |&(_, c)| c)
}

/// Runs `test` over `strategy` for the property's case count, then checks the fd count.
fn check<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> anyhow::Result<()>
where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: cases(name),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    // One warm-up case, so lazily made objects (loaders, pools) are not counted as leaks.
    let mut warm = TestRunner::new(Config {
        cases: 1,
        failure_persistence: None,
        ..Config::default()
    });
    warm.run(&strategy, &test)
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let fds = common::open_fds();
    runner
        .run(&strategy, &test)
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let after = common::open_fds();
    ensure!(after == fds, "{name}: open fds went from {fds} to {after}");
    Ok(())
}

/// A typed error is a pass; the names of the variants the properties expect.
fn typed<T>(r: &vkcuda::Result<T>) -> bool {
    match r {
        Ok(_) => true,
        Err(
            Error::InvalidArgument { .. }
            | Error::Unsupported { .. }
            | Error::MissingExtension { .. }
            | Error::OutOfMemory { .. }
            | Error::Timeout { .. }
            | Error::Io { .. }
            | Error::ConnectionBroken { .. }
            | Error::Vulkan { .. },
        ) => true,
        Err(_) => false,
    }
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// A `VkFormat`: mostly real ones, sometimes any raw value.
fn any_format() -> impl Strategy<Value = vk::Format> {
    prop_oneof![
        4 => (0i32..=130).prop_map(vk::Format::from_raw),
        1 => any::<i32>().prop_map(vk::Format::from_raw),
        1 => Just(vk::Format::from_raw(1_000_156_000)), // a multi-planar YUV format
    ]
}

/// An extent component: small, an edge, or absurd.
fn any_extent() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 0u32..=40,
        1 => Just(16_384u32),
        1 => Just(u32::MAX),
    ]
}

fn any_kind() -> impl Strategy<Value = ImageKind> {
    prop_oneof![
        Just(ImageKind::D2),
        Just(ImageKind::D2Array),
        Just(ImageKind::Cube),
        Just(ImageKind::CubeArray),
        Just(ImageKind::D3),
    ]
}

fn any_image_desc() -> impl Strategy<Value = ImageDesc> {
    (
        any_kind(),
        (any_extent(), any_extent(), any_extent()),
        prop_oneof![3 => 0u32..=8, 1 => Just(u32::MAX)],
        prop_oneof![3 => 0u32..=8, 1 => Just(u32::MAX)],
        any_format(),
        any::<u32>(),
        prop_oneof![
            Just(vk::ImageTiling::OPTIMAL),
            Just(vk::ImageTiling::LINEAR),
            any::<i32>().prop_map(vk::ImageTiling::from_raw)
        ],
        prop::sample::select(MemoryHandleType::ALL.to_vec()),
    )
        .prop_map(
            |(kind, (w, h, d), layers, mips, format, usage, tiling, handle)| {
                let mut desc = ImageDesc::d2(1, 1, format);
                desc.kind = kind;
                desc.extent = vk::Extent3D {
                    width: w,
                    height: h,
                    depth: d,
                };
                desc.layers = layers;
                desc.mip_levels = mips;
                desc.usage = vk::ImageUsageFlags::from_raw(usage & 0x3ff);
                desc.tiling = tiling;
                desc.handle_type = handle;
                desc
            },
        )
}

// ------------------------------------------------------------------ pure

fn formats_are_classified() -> anyhow::Result<()> {
    check(
        "formats_are_classified_without_panics",
        any_format(),
        |format| {
            let _ = texel_block(format);
            let _ = vkcuda::interop::format::cuda_format(format);
            Ok(())
        },
    )
}

fn cuda_array_descriptions() -> anyhow::Result<()> {
    check(
        "cuda_array_descriptions_are_derived_or_refused",
        any_image_desc(),
        |desc| {
            // A derived description of a bad image is checked again when it is mapped.
            let r = cuda_array_desc(&desc);
            prop_assert!(typed(&r), "{desc:?}: {r:?}");
            Ok(())
        },
    )
}

fn ipc_round_trip() -> anyhow::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    check(
        "ipc_messages_round_trip",
        (
            prop::collection::vec(any::<u8>(), 0..4096),
            0usize..=4,
            0usize..=4,
        ),
        |(payload, sent, max_fds)| {
            let (a, b) = UnixStream::pair().map_err(fail)?;
            let fds = vec![null.as_fd(); sent];
            ipc::send(&a, &payload, &fds).map_err(fail)?;
            match ipc::recv(&b, max_fds) {
                Ok((got, fds)) => {
                    prop_assert!(sent <= max_fds, "{sent} fds passed max_fds {max_fds}");
                    prop_assert_eq!(got, payload);
                    prop_assert_eq!(fds.len(), sent);
                }
                Err(Error::Io { source, .. }) => {
                    prop_assert!(sent > max_fds, "{source}");
                    prop_assert_eq!(source.kind(), std::io::ErrorKind::InvalidData);
                }
                Err(e) => return Err(fail(format!("untyped outcome {e}"))),
            }
            Ok(())
        },
    )
}

fn ipc_garbage() -> anyhow::Result<()> {
    check(
        "ipc_garbage_is_refused_typed",
        (
            prop::collection::vec(any::<u8>(), 0..64),
            any::<bool>(),
            0usize..=3,
        ),
        |(bytes, close, max_fds)| {
            use std::io::Write;
            let (a, b) = UnixStream::pair().map_err(fail)?;
            b.set_read_timeout(Some(Duration::from_millis(20)))
                .map_err(fail)?;
            (&a).write_all(&bytes).map_err(fail)?;
            // Closed: reads reach the end; kept open: they time out instead.
            let _writer = if close { None } else { Some(a) };
            // Read until the stream is exhausted or broken: each recv is Ok or typed.
            for _ in 0..4 {
                let r = ipc::recv(&b, max_fds);
                prop_assert!(typed(&r), "{r:?}");
                if r.is_err() {
                    break;
                }
            }
            Ok(())
        },
    )
}

// ---------------------------------------------------------------- device

fn host_signals(vk: &vulkan::Context) -> anyhow::Result<()> {
    check(
        "host_signal_sequences_never_go_backwards",
        (
            0u64..=8,
            prop::collection::vec(
                prop_oneof![3 => 0u64..=20, 1 => any::<u64>(), 1 => Just(u64::MAX)],
                1..12,
            ),
        ),
        |(initial, values)| {
            let tl = Semaphore::local(vk, SemaphoreKind::Timeline, initial).map_err(fail)?;
            let mut highest = initial;
            for v in values {
                let r = tl.signal(v);
                prop_assert!(typed(&r), "{r:?}");
                if r.is_ok() {
                    prop_assert!(v > highest, "accepted {v} after {highest}");
                    highest = v;
                }
                prop_assert_eq!(tl.value().map_err(fail)?, highest);
            }
            Ok(())
        },
    )
}

fn host_waits(vk: &vulkan::Context) -> anyhow::Result<()> {
    check(
        "host_waits_honour_any_timeout",
        (
            0u64..=4,
            0u64..=6,
            prop_oneof![
                Just(Duration::ZERO),
                (0u64..2000).prop_map(Duration::from_micros),
                Just(Duration::MAX),
            ],
        ),
        |(current, target, timeout)| {
            let tl = Semaphore::local(vk, SemaphoreKind::Timeline, current).map_err(fail)?;
            if target > current && timeout == Duration::MAX {
                return Ok(()); // would wait for ever, as asked
            }
            let r = tl.wait(target, timeout);
            if target <= current {
                prop_assert!(r.is_ok(), "{r:?}");
            } else {
                prop_assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
            }
            Ok(())
        },
    )
}

fn buffer_ranges(vk: &vulkan::Context) -> anyhow::Result<()> {
    let range = || {
        prop_oneof![
            3 => (0u64..5000, 0u64..5000).prop_map(|(a, b)| a..b),
            1 => (any::<u64>(), any::<u64>()).prop_map(|(a, b)| a..b),
        ]
    };
    check(
        "buffer_sizes_and_ranges_are_checked",
        (
            prop_oneof![4 => 1u64..=4096, 1 => Just(0u64), 1 => Just(u64::MAX)],
            prop_oneof![
                3 => Just(None),
                1 => (0u32..0x200).prop_map(|u| Some(vk::BufferUsageFlags::from_raw(u))),
            ],
            range(),
            range(),
            any::<u32>(),
        ),
        |(size, usage, read, fill, value)| {
            let desc = match usage {
                Some(u) => BufferDesc::new(size).usage(u),
                None => BufferDesc::new(size),
            };
            let buffer = match ExternalBuffer::new(vk, &desc) {
                Ok(b) => b,
                Err(Error::InvalidArgument { .. } | Error::OutOfMemory { .. }) => return Ok(()),
                Err(e) => return Err(fail(format!("size {size}: {e}"))),
            };
            let r = vk.fill_buffer(&buffer, fill.clone(), value);
            prop_assert!(typed(&r), "fill {fill:?}: {r:?}");
            let r = vk.read_buffer(&buffer, read.clone());
            prop_assert!(typed(&r), "read {read:?}: {r:?}");
            if let Ok(bytes) = r {
                prop_assert_eq!(bytes.len() as u64, read.end - read.start);
            }
            let data = vec![7u8; (read.end.saturating_sub(read.start)).min(8192) as usize];
            let r = vk.write_buffer(&buffer, read.start, &data);
            prop_assert!(typed(&r), "write at {}: {r:?}", read.start);
            Ok(())
        },
    )
}

fn image_descriptions(vk: &vulkan::Context) -> anyhow::Result<()> {
    check(
        "image_descriptions_are_created_or_refused",
        any_image_desc(),
        |desc| {
            let r = ExternalImage::new(vk, &desc);
            prop_assert!(typed(&r), "{desc:?}: {r:?}");
            Ok(())
        },
    )
}

fn image_layouts(vk: &vulkan::Context) -> anyhow::Result<()> {
    let image = ExternalImage::new(vk, &ImageDesc::d2(8, 8, vk::Format::R8G8B8A8_UNORM))?;
    check(
        "image_layouts_are_accepted_or_refused",
        prop_oneof![
            3 => (0i32..=8).prop_map(vk::ImageLayout::from_raw),
            1 => Just(vk::ImageLayout::DEPTH_STENCIL_ATTACHMENT_OPTIMAL),
            1 => Just(vk::ImageLayout::PRESENT_SRC_KHR),
            1 => any::<i32>().prop_map(vk::ImageLayout::from_raw),
        ],
        |layout| {
            let r = vk.release_image(&image);
            prop_assert!(typed(&r), "release: {r:?}");
            let r = vk.acquire_image(&image, layout);
            prop_assert!(typed(&r), "acquire {layout:?}: {r:?}");
            // What a colour image with the default usage allows (row 7); the rest refused.
            use vk::ImageLayout as L;
            let allowed = [
                L::GENERAL,
                L::TRANSFER_SRC_OPTIMAL,
                L::TRANSFER_DST_OPTIMAL,
                L::SHADER_READ_ONLY_OPTIMAL,
            ];
            prop_assert_eq!(r.is_ok(), allowed.contains(&layout), "acquire {:?}", layout);
            Ok(())
        },
    )
}

/// A property that needs no device.
type PureTest = fn() -> anyhow::Result<()>;

/// The trials of this file.
pub fn trials() -> Vec<Trial> {
    let none: common::Probe<()> = std::sync::Arc::new(Ok(()));
    let probe = common::vulkan_probe();
    let total: u32 = CASES.iter().map(|&(n, _)| cases(n)).sum();
    eprintln!("properties: {total} cases in all");
    let pure: [(&str, PureTest); 4] = [
        (
            "formats_are_classified_without_panics",
            formats_are_classified,
        ),
        (
            "cuda_array_descriptions_are_derived_or_refused",
            cuda_array_descriptions,
        ),
        ("ipc_messages_round_trip", ipc_round_trip),
        ("ipc_garbage_is_refused_typed", ipc_garbage),
    ];
    let device: [common::Test<vulkan::Context>; 5] = [
        ("host_signal_sequences_never_go_backwards", host_signals),
        ("host_waits_honour_any_timeout", host_waits),
        ("buffer_sizes_and_ranges_are_checked", buffer_ranges),
        (
            "image_descriptions_are_created_or_refused",
            image_descriptions,
        ),
        ("image_layouts_are_accepted_or_refused", image_layouts),
    ];
    let mut trials: Vec<Trial> = pure
        .into_iter()
        .map(|(name, f)| common::trial(name, &none, move |_: &()| f()))
        .collect();
    trials.extend(device.into_iter().map(|(name, f)| {
        common::trial(name, &probe, move |vk: &vulkan::Context| {
            let before = common::validation_snapshot(vk);
            f(vk)?;
            common::validation_since(vk, &before, &[])
        })
    }));
    common::note(&probe, "Vulkan device");
    trials
}
