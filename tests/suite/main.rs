//! The integration tests: one `harness = false` root (libtest-mimic), one module per
//! subject. Each module lists its trials over its own probe (see `common`): trials that need
//! a CUDA device are ignored without one and fail under `VKCUDA_REQUIRE_GPU=1`. A trial is
//! named `SUBJECT::NAME`, so `cargo test --test suite -- buffer::` runs one subject (and
//! `-- buffer:: linear::` two: any number of filters, as with libtest).
//!
//! Add a subject: a module `NAME` (file or folder) with `pub fn trials() -> Vec<Trial>`,
//! and a line in [`SUBJECTS`].

mod common;

mod alternation;
mod buffer;
mod demo;
mod image;
mod ipc;
mod linear;
mod pool;
mod properties;
mod semaphore;
mod soundness;
mod sync;
mod timestamps;
#[cfg(feature = "wgpu")]
mod wgpu;
#[cfg(feature = "window")]
mod window;

use std::collections::BTreeSet;

use libtest_mimic::{Arguments, Trial};

/// A subject module's list of trials.
type Trials = fn() -> Vec<Trial>;

/// Every subject and its trials, in the order they run.
const SUBJECTS: &[(&str, Trials)] = &[
    ("buffer", buffer::trials),
    ("image", image::trials),
    ("linear", linear::trials),
    ("semaphore", semaphore::trials),
    ("timestamps", timestamps::trials),
    ("pool", pool::trials),
    ("alternation", alternation::trials),
    ("sync", sync::trials),
    ("soundness", soundness::trials),
    ("properties", properties::trials),
    ("demo", demo::trials),
    ("ipc", ipc::trials),
    #[cfg(feature = "wgpu")]
    ("wgpu", wgpu::trials),
    #[cfg(feature = "window")]
    ("window", window::trials),
];

/// Trials that run after every other one (each was last in its own test binary before the
/// suite had one root): on NVIDIA 580 a refused foreign fd leaves later `vkAllocateMemory`
/// calls failing with OUT_OF_DEVICE_MEMORY (seen on the H100), so nothing runs after them.
const LAST: &[&str] = &["foreign_fd_is_refused", "hostile_fds_are_refused"];

/// Runs the trials one at a time (leak checks count process-wide fds and device memory)
/// and exits with libtest's status.
fn main() {
    let mut trials: Vec<Trial> = SUBJECTS
        .iter()
        .flat_map(|&(name, list)| common::subject(name, list))
        .collect();
    let mut names = BTreeSet::new();
    for t in &trials {
        assert!(
            names.insert(t.name().to_owned()),
            "two trials named {}",
            t.name()
        );
    }
    // Stable: each group keeps its order.
    trials.sort_by_key(|t| LAST.iter().any(|l| t.name().rsplit("::").next() == Some(l)));
    let (rest, filters) = filters(std::env::args());
    let mut args = Arguments::from_iter(rest);
    if !filters.is_empty() {
        let exact = args.exact;
        trials.retain(|t| {
            filters.iter().any(|f| {
                if exact {
                    t.name() == f
                } else {
                    t.name().contains(f.as_str())
                }
            })
        });
    }
    args.test_threads = Some(1);
    libtest_mimic::run(&args, trials).exit()
}

/// Splits libtest's command line into the rest and its positional filters, which libtest
/// takes any number of (`-- buffer:: linear::` runs both subjects) and libtest-mimic only one.
fn filters(args: impl Iterator<Item = String>) -> (Vec<String>, Vec<String>) {
    /// Options that take the next argument as their value.
    const VALUED: &[&str] = &[
        "--skip",
        "--logfile",
        "--test-threads",
        "--color",
        "--format",
        "-Z",
    ];
    let (mut rest, mut filters) = (Vec::new(), Vec::new());
    let mut args = args.peekable();
    rest.extend(args.next()); // the program
    while let Some(a) = args.next() {
        if VALUED.contains(&a.as_str()) {
            rest.push(a);
            rest.extend(args.next());
        } else if a.starts_with('-') {
            rest.push(a);
        } else {
            filters.push(a);
        }
    }
    (rest, filters)
}
