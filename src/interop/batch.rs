//! How many frames to hand across between Vulkan and CUDA at once.
//!
//! Alternating work between the two APIs on the GPU's graphics/compute engine costs a
//! fixed switch each way, whatever the work: the alternation floor
//! ([`super::alternation_floor`]). A pipeline that crosses once per frame pays it every
//! frame; one that renders K frames, crosses once, post-processes the K and crosses back
//! pays it once per K frames. With `W` the GPU time of one frame alone (render plus
//! post-process) and `F` the floor of one switch pair, K frames per crossing keep the GPU
//! busy with frames for a share
//!
//! ```text
//! efficiency(K) = K*W / (K*W + F)
//! ```
//!
//! of the time, at the cost of latency: the first frame of a batch is done only when the
//! whole batch is, `K*W + F` after its render started, K frames deep. [`choose_batch`]
//! picks the smallest K that reaches a target efficiency, capped by a latency budget.

use std::time::Duration;

use crate::error::{Error, Result};

/// Most frames [`choose_batch`] puts in one batch.
pub const MAX_BATCH_FRAMES: u32 = 1024;

/// What [`choose_batch`] chooses from: the measured costs and the user's goal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchGoal {
    /// The alternation floor: one switch pair (Vulkan to CUDA and back), measured in the
    /// same run ([`super::FloorReport::switch_pair`]). Zero where no switch is paid.
    pub floor: Duration,
    /// GPU time of one frame's work alone, render plus post-process (the GPU-busy bound
    /// per frame). Not zero.
    pub frame_gpu: Duration,
    /// Wanted share of GPU time spent on frames, strictly between 0 and 1 (e.g. 0.9).
    pub target_efficiency: f64,
    /// Longest acceptable batch latency (`K*W + F`); at least one frame plus the floor.
    pub latency_budget: Duration,
}

/// The batch size [`choose_batch`] chose, with what it achieves and costs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchPlan {
    /// K: frames per crossing (at least 1).
    pub frames: u32,
    /// `efficiency(K)`, in (0, 1].
    pub efficiency: f64,
    /// Whether `efficiency` reaches the target; `false` when the latency budget (or
    /// [`MAX_BATCH_FRAMES`]) capped K below the size that would.
    pub reached_target: bool,
    /// Latency in frames: a frame's result comes back with its whole batch, K frames deep.
    pub latency_frames: u32,
    /// Latency in time: `K*W + F`, from the batch's first render to its last result.
    pub latency: Duration,
}

/// `K*W / (K*W + F)`: the share of GPU time spent on frames when `frames` frames of
/// `frame_gpu` each cross per switch pair costing `floor`. 1 when both are zero.
pub fn efficiency(frames: u32, frame_gpu: Duration, floor: Duration) -> f64 {
    let work = f64::from(frames) * frame_gpu.as_secs_f64();
    let total = work + floor.as_secs_f64();
    if total > 0.0 {
        work / total
    } else {
        1.0
    }
}

/// The smallest K whose [`efficiency`] reaches `goal.target_efficiency`, capped by the
/// latency budget and [`MAX_BATCH_FRAMES`], with the efficiency and latency it gives.
///
/// ```
/// use std::time::Duration;
/// use vkcuda::interop::{choose_batch, BatchGoal};
///
/// let plan = choose_batch(&BatchGoal {
///     floor: Duration::from_micros(330),
///     frame_gpu: Duration::from_micros(73),
///     target_efficiency: 0.9,
///     latency_budget: Duration::from_millis(50),
/// })?;
/// assert_eq!(plan.frames, 41);
/// assert!(plan.reached_target && plan.efficiency >= 0.9);
/// assert_eq!(plan.latency, Duration::from_micros(41 * 73 + 330));
/// # Ok::<(), vkcuda::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] when `goal.target_efficiency` is not a number strictly
/// between 0 and 1, `goal.frame_gpu` is zero, or `goal.latency_budget` is shorter than one
/// frame plus the floor (no batch fits it).
pub fn choose_batch(goal: &BatchGoal) -> Result<BatchPlan> {
    let target = goal.target_efficiency;
    if !(target.is_finite() && target > 0.0 && target < 1.0) {
        return Err(Error::invalid(
            "goal.target_efficiency",
            format!("{target}"),
            "a number strictly between 0 and 1, e.g. 0.9",
        ));
    }
    if goal.frame_gpu.is_zero() {
        return Err(Error::invalid(
            "goal.frame_gpu",
            "zero",
            "the GPU time of one frame alone, above zero",
        ));
    }
    let one = goal.frame_gpu.saturating_add(goal.floor);
    if goal.latency_budget < one {
        return Err(Error::invalid(
            "goal.latency_budget",
            format!(
                "{:?} is shorter than one frame ({:?}) plus the floor ({:?})",
                goal.latency_budget, goal.frame_gpu, goal.floor
            ),
            format!("at least {one:?}"),
        ));
    }
    // Largest K the budget allows: K*W + F <= budget.
    let room = (goal.latency_budget - goal.floor).as_nanos() / goal.frame_gpu.as_nanos();
    let cap = u32::try_from(room)
        .unwrap_or(u32::MAX)
        .min(MAX_BATCH_FRAMES);
    let frames = smallest_reaching(target, goal.frame_gpu, goal.floor).min(cap);
    let efficiency = efficiency(frames, goal.frame_gpu, goal.floor);
    Ok(BatchPlan {
        frames,
        efficiency,
        reached_target: efficiency >= target,
        latency_frames: frames,
        latency: goal
            .frame_gpu
            .saturating_mul(frames)
            .saturating_add(goal.floor),
    })
}

/// The smallest K in `1..=MAX_BATCH_FRAMES` with `efficiency(K) >= target`, or
/// [`MAX_BATCH_FRAMES`] when none is. Solves `K >= t*F / ((1-t)*W)` and then settles the
/// rounding with the same formula [`efficiency`] uses, so the answer agrees with it.
fn smallest_reaching(target: f64, frame_gpu: Duration, floor: Duration) -> u32 {
    let exact = target * floor.as_secs_f64() / ((1.0 - target) * frame_gpu.as_secs_f64());
    let mut k = if exact.is_finite() {
        exact.ceil().clamp(1.0, f64::from(MAX_BATCH_FRAMES)) as u32
    } else {
        MAX_BATCH_FRAMES
    };
    while k > 1 && efficiency(k - 1, frame_gpu, floor) >= target {
        k -= 1;
    }
    while k < MAX_BATCH_FRAMES && efficiency(k, frame_gpu, floor) < target {
        k += 1;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::invalid_arg;

    const US: Duration = Duration::from_micros(1);

    fn goal(floor_us: u64, frame_ns: u64, target: f64, budget_us: u64) -> BatchGoal {
        BatchGoal {
            floor: US * floor_us as u32,
            frame_gpu: Duration::from_nanos(frame_ns),
            target_efficiency: target,
            latency_budget: US * budget_us as u32,
        }
    }

    #[test]
    fn table_cases() {
        // (floor us, frame ns, target, budget us) -> (K, reached)
        let cases = [
            // The H200's 1080p frame (30.5 us) against a 330 us floor: 98 frames for 0.9.
            ((330, 30_500, 0.9, 100_000), (98, true)),
            // 4K (73.8 us).
            ((330, 73_800, 0.9, 100_000), (41, true)),
            // Exactly on the boundary: 90/(90+90) = 0.5.
            ((90, 1_000, 0.5, 1_000), (90, true)),
            // No floor: one frame already reaches any target.
            ((0, 30_500, 0.99, 1_000), (1, true)),
            // The budget caps K: (1000 - 330) / 30.5 = 21 frames.
            ((330, 30_500, 0.9, 1_000), (21, false)),
            // A budget of exactly one frame plus the floor.
            ((330, 30_500, 0.9, 361), (1, false)),
            // Beyond MAX_BATCH_FRAMES.
            (
                (1_000_000, 1_000, 0.999, u32::MAX as u64),
                (MAX_BATCH_FRAMES, false),
            ),
        ];
        for ((f, w, t, b), (k, reached)) in cases {
            let plan = choose_batch(&goal(f, w, t, b)).unwrap();
            assert_eq!(
                (plan.frames, plan.reached_target),
                (k, reached),
                "{f} {w} {t} {b}"
            );
            assert_eq!(plan.latency_frames, plan.frames);
            assert_eq!(
                plan.latency,
                Duration::from_nanos(w) * plan.frames + US * f as u32
            );
            assert!(plan.latency <= US * b as u32);
        }
    }

    #[test]
    fn sweeps_give_the_smallest_k_within_the_budget() {
        for floor_us in [0, 1, 20, 160, 330, 1_000] {
            for frame_ns in [500, 8_500, 30_500, 73_800, 1_000_000] {
                for target in [0.01, 0.5, 0.8, 0.9, 0.95, 0.99] {
                    for budget_ms in [2, 20, 1_000] {
                        let g = goal(floor_us, frame_ns, target, budget_ms * 1_000);
                        let Ok(plan) = choose_batch(&g) else {
                            assert!(g.latency_budget < g.frame_gpu + g.floor, "{g:?}");
                            continue;
                        };
                        let k = plan.frames;
                        assert!((1..=MAX_BATCH_FRAMES).contains(&k), "{g:?}");
                        assert!(plan.latency <= g.latency_budget, "{g:?} {plan:?}");
                        assert_eq!(plan.efficiency, efficiency(k, g.frame_gpu, g.floor));
                        if plan.reached_target {
                            // Minimal: one frame fewer misses the target.
                            assert!(k == 1 || efficiency(k - 1, g.frame_gpu, g.floor) < target);
                        } else {
                            // Capped: one frame more breaks the budget or the maximum.
                            let more = g.frame_gpu * (k + 1) + g.floor;
                            assert!(more > g.latency_budget || k == MAX_BATCH_FRAMES, "{g:?}");
                        }
                        // Efficiency grows with K.
                        assert!(efficiency(k + 1, g.frame_gpu, g.floor) >= plan.efficiency);
                    }
                }
            }
        }
    }

    #[test]
    fn bad_goals_are_typed_errors() {
        for t in [
            0.0,
            1.0,
            -0.5,
            1.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let (arg, ..) = invalid_arg(choose_batch(&goal(330, 30_500, t, 10_000)));
            assert_eq!(arg, "goal.target_efficiency", "{t}");
        }
        let (arg, ..) = invalid_arg(choose_batch(&goal(330, 0, 0.9, 10_000)));
        assert_eq!(arg, "goal.frame_gpu");
        let (arg, problem, expected) = invalid_arg(choose_batch(&goal(330, 30_500, 0.9, 360)));
        assert_eq!(arg, "goal.latency_budget");
        assert!(problem.contains("360"), "{problem}");
        assert!(expected.contains("360.5"), "{expected}");
    }

    #[test]
    fn efficiency_edges() {
        assert_eq!(efficiency(1, Duration::ZERO, Duration::ZERO), 1.0);
        assert_eq!(efficiency(3, US, Duration::ZERO), 1.0);
        assert_eq!(efficiency(1, US, US), 0.5);
        assert_eq!(efficiency(0, US, US), 0.0);
    }
}
