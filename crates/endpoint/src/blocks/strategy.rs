//! When to add a block and which to cancel: a pure function of what the endpoint sees,
//! run every `strategy_period`.
//!
//! - **Floor**: while fewer than `min_blocks` blocks serve (alive and not draining),
//!   submit the difference at once.
//! - **Demand**: while tasks wait here for a manager and no block is still on its way
//!   (pending in the scheduler's queue, or started with no manager connected yet), submit
//!   one more, up to `max_blocks`: one block at a time waits in the queue, so a burst of
//!   tasks does not fill the queue with jobs that would find nothing to do.
//! - **Idle**: while no task waits, cancel blocks idle for `idle_timeout`, down to
//!   `min_blocks`: first those still on their way (nothing needs them), then running ones
//!   whose managers have held no task that long, the longest idle first. A block with
//!   work is never cancelled; a draining block ends by itself once its work is done.
//!
//! Submitting may be held back (a backoff after refusals, or paused); cancelling never
//! is.

use std::time::{Duration, Instant};

/// What the strategy knows of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockView {
    /// Not ended, and not being cancelled.
    pub alive: bool,
    /// On its way: no manager of it has connected yet.
    pub waiting: bool,
    /// Every manager it has connected drains (its walltime is near): it takes no tasks.
    pub draining: bool,
    /// Since when its managers hold no task (running blocks only).
    pub idle_since: Option<Instant>,
}

/// Everything the strategy decides on.
#[derive(Debug, Clone)]
pub struct View<'a> {
    pub now: Instant,
    /// Tasks here waiting for a manager.
    pub pending_tasks: u32,
    /// Since when no task has waited (`None` while some do).
    pub no_demand_since: Option<Instant>,
    /// False while submissions back off or are paused.
    pub may_submit: bool,
    pub blocks: &'a [BlockView],
}

/// The settings it reads.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min_blocks: u32,
    pub max_blocks: u32,
    pub idle_timeout: Duration,
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Blocks to submit.
    pub submit: u32,
    /// Blocks to cancel, by index into `View::blocks`.
    pub cancel: Vec<usize>,
}

/// Decides, by the rules of the module's doc.
pub fn decide(limits: Limits, view: &View<'_>) -> Plan {
    let alive: Vec<usize> = (0..view.blocks.len()).filter(|&i| view.blocks[i].alive).collect();
    let serving = alive.iter().filter(|&&i| !view.blocks[i].draining).count() as u32;
    let waiting = alive.iter().filter(|&&i| view.blocks[i].waiting).count();
    let room = limits.max_blocks.saturating_sub(alive.len() as u32);
    let mut plan = Plan::default();
    if view.may_submit {
        if serving < limits.min_blocks {
            plan.submit = (limits.min_blocks - serving).min(room);
        } else if view.pending_tasks > 0 && waiting == 0 && room > 0 {
            plan.submit = 1;
        }
    }
    if view.pending_tasks > 0 || plan.submit > 0 {
        return plan;
    }
    let idle_for = |since: Option<Instant>| since.map(|s| view.now.saturating_duration_since(s));
    let timed_out = |since: Option<Instant>| idle_for(since).is_some_and(|d| d >= limits.idle_timeout);
    // Waiting blocks first (the newest first), then running ones, the longest idle first.
    let mut candidates: Vec<(u8, Duration, usize)> = Vec::new();
    for &i in &alive {
        let b = view.blocks[i];
        if b.waiting && timed_out(view.no_demand_since) {
            candidates.push((0, Duration::ZERO, i));
        } else if !b.waiting && !b.draining && timed_out(b.idle_since) {
            let idle = idle_for(b.idle_since).unwrap_or_default();
            candidates.push((1, Duration::MAX - idle, i));
        }
    }
    candidates.sort_by_key(|&(group, key, i)| (group, key, std::cmp::Reverse(i)));
    let mut keep = alive.len() as u32;
    for (_, _, i) in candidates {
        if keep <= limits.min_blocks {
            break;
        }
        plan.cancel.push(i);
        keep -= 1;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        min_blocks: 0,
        max_blocks: 2,
        idle_timeout: Duration::from_secs(60),
    };

    fn running(idle_since: Option<Instant>) -> BlockView {
        BlockView {
            alive: true,
            waiting: false,
            draining: false,
            idle_since,
        }
    }

    fn waiting() -> BlockView {
        BlockView {
            alive: true,
            waiting: true,
            draining: false,
            idle_since: None,
        }
    }

    fn view(now: Instant, pending: u32, blocks: &[BlockView]) -> View<'_> {
        View {
            now,
            pending_tasks: pending,
            no_demand_since: (pending == 0).then(|| now - Duration::from_secs(120)),
            may_submit: true,
            blocks,
        }
    }

    #[test]
    fn waiting_tasks_bring_one_block_at_a_time() {
        let now = Instant::now();
        assert_eq!(decide(LIMITS, &view(now, 100, &[])).submit, 1);
        assert_eq!(
            decide(LIMITS, &view(now, 100, &[waiting()])).submit,
            0,
            "one block on its way is enough"
        );
        assert_eq!(decide(LIMITS, &view(now, 100, &[running(None)])).submit, 1);
        assert_eq!(
            decide(LIMITS, &view(now, 100, &[running(None), running(None)])).submit,
            0,
            "never past max_blocks"
        );
    }

    #[test]
    fn the_floor_is_kept_at_once() {
        let now = Instant::now();
        let limits = Limits {
            min_blocks: 2,
            max_blocks: 3,
            ..LIMITS
        };
        assert_eq!(decide(limits, &view(now, 0, &[])).submit, 2);
        let ended = BlockView {
            alive: false,
            ..running(None)
        };
        assert_eq!(decide(limits, &view(now, 0, &[ended, running(None)])).submit, 1);
    }

    #[test]
    fn a_draining_block_does_not_count_as_serving() {
        let now = Instant::now();
        let draining = BlockView {
            draining: true,
            ..running(None)
        };
        assert_eq!(decide(LIMITS, &view(now, 5, &[draining])).submit, 1);
    }

    #[test]
    fn nothing_is_submitted_while_submissions_are_held_back() {
        let now = Instant::now();
        let mut v = view(now, 100, &[]);
        v.may_submit = false;
        assert_eq!(decide(LIMITS, &v), Plan::default());
    }

    #[test]
    fn idle_blocks_are_cancelled_down_to_the_floor_longest_idle_first() {
        let now = Instant::now();
        let blocks = [
            running(Some(now - Duration::from_secs(70))),
            running(Some(now - Duration::from_secs(300))),
            running(Some(now - Duration::from_secs(10))),
        ];
        let limits = Limits {
            min_blocks: 1,
            max_blocks: 3,
            ..LIMITS
        };
        assert_eq!(decide(limits, &view(now, 0, &blocks)).cancel, vec![1, 0]);
        let limits = Limits {
            min_blocks: 2,
            ..limits
        };
        assert_eq!(decide(limits, &view(now, 0, &blocks)).cancel, vec![1]);
    }

    #[test]
    fn busy_or_draining_blocks_are_never_cancelled() {
        let now = Instant::now();
        let draining = BlockView {
            draining: true,
            ..running(Some(now - Duration::from_secs(600)))
        };
        assert!(
            decide(LIMITS, &view(now, 0, &[running(None), draining]))
                .cancel
                .is_empty()
        );
    }

    #[test]
    fn a_block_on_its_way_goes_first_once_demand_is_gone() {
        let now = Instant::now();
        let blocks = [running(Some(now - Duration::from_secs(600))), waiting()];
        assert_eq!(decide(LIMITS, &view(now, 0, &blocks)).cancel, vec![1, 0]);
        let mut v = view(now, 0, &blocks);
        v.no_demand_since = Some(now - Duration::from_secs(5));
        assert_eq!(
            decide(LIMITS, &v).cancel,
            vec![0],
            "recent demand keeps the waiting block"
        );
    }

    #[test]
    fn waiting_tasks_stop_any_cancel() {
        let now = Instant::now();
        let blocks = [running(Some(now - Duration::from_secs(600))), waiting()];
        assert!(decide(LIMITS, &view(now, 3, &blocks)).cancel.is_empty());
    }
}
