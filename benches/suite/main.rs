//! The benches: one criterion root (`harness = false`), one module per group. Each group
//! sets up its GPU environment (or says why there is none and registers nothing), runs its
//! benchmarks and prints its markdown table(s).
//!
//! `cargo bench --bench suite` runs every group; `-- GROUP` runs one group whole and
//! `-- GROUP/REGEX` the benchmarks of one group that REGEX matches; any other FILTER is
//! criterion's own, in every group. On the GPU host: `bash .gpu/run bench-suite --bench
//! GROUP`.
//!
//! Add a group: a module `NAME` with `pub fn run()`, and a line in [`GROUPS`].

mod common;

mod alternation;
mod buffer;
mod frames;
mod image;
mod pool;
mod sync;
#[cfg(feature = "wgpu")]
mod wgpu;

/// Every group, in the order a run without a group name runs them.
const GROUPS: &[(&str, fn())] = &[
    ("alternation", alternation::run),
    ("buffer", buffer::run),
    ("frames", frames::run),
    ("image", image::run),
    ("pool", pool::run),
    ("sync", sync::run),
    #[cfg(feature = "wgpu")]
    ("wgpu", wgpu::run),
];

fn main() {
    let filter = common::filter_arg();
    let named = filter.as_deref().and_then(|f| {
        GROUPS
            .iter()
            .find_map(|&(name, run)| match f.strip_prefix(name)? {
                "" => Some((run, None)),
                rest => rest.strip_prefix('/').map(|within| (run, Some(within))),
            })
    });
    match named {
        Some((run, within)) => {
            common::select_within(within);
            run();
        }
        None => GROUPS.iter().for_each(|(_, run)| run()),
    }
}
