//! A fault-injecting wrapper around any device: in both directions, seeded,
//! it drops, duplicates, reorders, corrupts and delays frames at given rates.
//!
//! The kernels we run on have no netem qdisc, so this is how rbypass makes
//! loss; users can also use it to test their application under loss by
//! setting `RBYPASS_FAULTS`, e.g. `drop=0.01,dup=0.001,reorder=0.01,corrupt=0.001,delay=0.01@2ms,seed=7`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

use rbypass_stack::{BufId, Core};

use crate::{Nic, NicCaps};

/// Rates (probabilities per frame, 0..=1) of each fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    pub drop: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub corrupt: f64,
    pub delay: f64,
    /// How long a delayed frame is held.
    pub delay_ns: u64,
    pub seed: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            corrupt: 0.0,
            delay: 0.0,
            delay_ns: 1_000_000,
            seed: 1,
        }
    }
}

/// A bad fault specification.
#[derive(Debug, thiserror::Error)]
#[error("bad fault spec {spec:?}: {why} (expected e.g. drop=0.01,dup=0.001,reorder=0.01,corrupt=0.001,delay=0.01@2ms,seed=7)")]
pub struct FaultSpecError {
    spec: String,
    why: String,
}

fn parse_duration_ns(s: &str) -> Option<u64> {
    let (num, mul) = if let Some(v) = s.strip_suffix("ns") {
        (v, 1)
    } else if let Some(v) = s.strip_suffix("us") {
        (v, 1_000)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1_000_000)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1_000_000_000)
    } else {
        (s, 1_000_000)
    };
    num.parse::<u64>().ok().map(|n| n * mul)
}

impl std::str::FromStr for FaultConfig {
    type Err = FaultSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |why: String| FaultSpecError {
            spec: spec.to_string(),
            why,
        };
        let mut c = FaultConfig::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| err(format!("{part:?} is not key=value")))?;
            let rate = |v: &str| -> Result<f64, FaultSpecError> {
                match v.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(err(format!("{k}: {v:?} is not a probability in 0..=1"))),
                }
            };
            match k {
                "drop" => c.drop = rate(v)?,
                "dup" | "duplicate" => c.duplicate = rate(v)?,
                "reorder" => c.reorder = rate(v)?,
                "corrupt" => c.corrupt = rate(v)?,
                "delay" => {
                    let (r, d) = v.split_once('@').unwrap_or((v, "1ms"));
                    c.delay = rate(r)?;
                    c.delay_ns = parse_duration_ns(d)
                        .ok_or_else(|| err(format!("delay: bad duration {d:?}")))?;
                }
                "seed" => {
                    c.seed = v
                        .parse()
                        .map_err(|_| err(format!("seed: {v:?} is not an integer")))?
                }
                _ => return Err(err(format!("unknown key {k:?}"))),
            }
        }
        Ok(c)
    }
}

impl FaultConfig {
    /// The config from `RBYPASS_FAULTS`, if set.
    pub fn from_env() -> Result<Option<FaultConfig>, FaultSpecError> {
        match std::env::var("RBYPASS_FAULTS") {
            Ok(s) if !s.trim().is_empty() => s.parse().map(Some),
            _ => Ok(None),
        }
    }

    /// Whether any fault is enabled.
    pub fn is_active(&self) -> bool {
        self.drop + self.duplicate + self.reorder + self.corrupt + self.delay > 0.0
    }
}

/// Counts of faults injected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FaultStats {
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
    pub delayed: u64,
}

/// xorshift64*: small, fast, deterministic from the seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Faults for one direction.
#[derive(Debug)]
struct Direction {
    rng: Rng,
    /// Frame held back to be sent after the next one.
    held: Option<BufId>,
    /// Frames delayed until the given time.
    delayed: VecDeque<(u64, BufId)>,
}

impl Direction {
    fn new(seed: u64) -> Self {
        Direction {
            rng: Rng(seed | 1),
            held: None,
            delayed: VecDeque::new(),
        }
    }

    /// Applies faults to `frames`, appending survivors (in their new order) to `out`.
    fn apply(
        &mut self,
        cfg: &FaultConfig,
        stats: &mut FaultStats,
        core: &mut Core<'_>,
        frames: &[BufId],
        now: u64,
        out: &mut Vec<BufId>,
    ) {
        while self.delayed.front().is_some_and(|&(due, _)| due <= now) {
            if let Some((_, b)) = self.delayed.pop_front() {
                out.push(b);
            }
        }
        for &b in frames {
            if self.rng.chance(cfg.drop) {
                stats.dropped += 1;
                core.pool.put(b);
                continue;
            }
            if self.rng.chance(cfg.corrupt) {
                let len = core.pool.meta(b).len as usize;
                if len > 0 {
                    let i = (self.rng.next() % len as u64) as usize;
                    let bit = 1u8 << (self.rng.next() % 8);
                    core.pool.frame_mut(b, len)[i] ^= bit;
                    stats.corrupted += 1;
                }
            }
            if self.rng.chance(cfg.duplicate) {
                if let Ok(d) = core.pool.alloc() {
                    let len = core.pool.meta(b).len as usize;
                    let mut tmp = [0u8; rbypass_stack::pool::BUF_SIZE];
                    tmp[..len].copy_from_slice(core.pool.frame(b));
                    core.pool.frame_mut(d, len).copy_from_slice(&tmp[..len]);
                    out.push(d);
                    stats.duplicated += 1;
                }
            }
            if self.rng.chance(cfg.delay) {
                self.delayed.push_back((now + cfg.delay_ns, b));
                stats.delayed += 1;
                continue;
            }
            if self.held.is_none() && self.rng.chance(cfg.reorder) {
                self.held = Some(b);
                stats.reordered += 1;
                continue;
            }
            out.push(b);
            if let Some(h) = self.held.take() {
                out.push(h);
            }
        }
    }

    fn release_all(&mut self, core: &mut Core<'_>) {
        if let Some(h) = self.held.take() {
            core.pool.put(h);
        }
        for (_, b) in self.delayed.drain(..) {
            core.pool.put(b);
        }
    }
}

/// A device wrapped in faults.
#[derive(Debug)]
pub struct FaultyNic<N> {
    inner: N,
    cfg: FaultConfig,
    rx: Direction,
    tx: Direction,
    /// What was injected, per direction.
    pub rx_stats: FaultStats,
    pub tx_stats: FaultStats,
    scratch: Vec<BufId>,
    rx_ready: VecDeque<BufId>,
    tx_backlog: VecDeque<BufId>,
}

impl<N: Nic> FaultyNic<N> {
    /// Wraps `inner`.
    pub fn new(inner: N, cfg: FaultConfig) -> Self {
        FaultyNic {
            inner,
            rx: Direction::new(cfg.seed),
            tx: Direction::new(cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1)),
            cfg,
            rx_stats: FaultStats::default(),
            tx_stats: FaultStats::default(),
            scratch: Vec::with_capacity(64),
            rx_ready: VecDeque::new(),
            tx_backlog: VecDeque::new(),
        }
    }

    /// The wrapped device.
    pub fn inner(&self) -> &N {
        &self.inner
    }

    /// Returns every frame held in delay lines to the pool.
    pub fn release_held(&mut self, core: &mut Core<'_>) {
        self.rx.release_all(core);
        self.tx.release_all(core);
        for b in self.rx_ready.drain(..).chain(self.tx_backlog.drain(..)) {
            core.pool.put(b);
        }
    }
}

impl<N: Nic> Nic for FaultyNic<N> {
    fn name(&self) -> String {
        format!("faulty({})", self.inner.name())
    }

    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }

    fn caps(&self) -> NicCaps {
        self.inner.caps()
    }

    fn receive(&mut self, core: &mut Core<'_>, out: &mut [BufId], now: u64) -> io::Result<usize> {
        let mut got = [BufId(0); 64];
        let want = out.len().min(got.len());
        let n = self.inner.receive(core, &mut got[..want], now)?;
        self.scratch.clear();
        let mut scratch = std::mem::take(&mut self.scratch);
        self.rx.apply(
            &self.cfg,
            &mut self.rx_stats,
            core,
            &got[..n],
            now,
            &mut scratch,
        );
        self.rx_ready.extend(scratch.drain(..));
        self.scratch = scratch;
        let mut k = 0;
        while k < out.len() {
            let Some(b) = self.rx_ready.pop_front() else {
                break;
            };
            out[k] = b;
            k += 1;
        }
        Ok(k)
    }

    fn transmit(&mut self, core: &mut Core<'_>, frames: &[BufId], now: u64) -> io::Result<usize> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        self.tx.apply(
            &self.cfg,
            &mut self.tx_stats,
            core,
            frames,
            now,
            &mut scratch,
        );
        self.tx_backlog.extend(scratch.drain(..));
        self.scratch = scratch;
        // Everything given to us is now ours; push what we can to the device.
        while !self.tx_backlog.is_empty() {
            let batch: Vec<BufId> = self.tx_backlog.iter().take(64).copied().collect();
            let sent = self.inner.transmit(core, &batch, now)?;
            self.tx_backlog.drain(..sent);
            if sent < batch.len() {
                break;
            }
        }
        Ok(frames.len())
    }

    fn wait_fd(&self) -> Option<RawFd> {
        self.inner.wait_fd()
    }

    fn next_deadline(&self) -> Option<u64> {
        let a = self.rx.delayed.front().map(|d| d.0);
        let b = self.tx.delayed.front().map(|d| d.0);
        let c = (!self.rx_ready.is_empty() || !self.tx_backlog.is_empty()).then_some(0);
        [a, b, c, self.inner.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    fn sync_flows(&mut self, core: &Core<'_>) -> std::io::Result<()> {
        self.inner.sync_flows(core)
    }

    fn iface(&self) -> Option<rbypass_stack::IfaceConfig> {
        self.inner.iface()
    }

    fn attach(&mut self, core: &mut Core<'_>) -> std::io::Result<()> {
        self.inner.attach(core)
    }

    fn keep_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.inner.keep_fds()
    }

    fn shared_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.inner.shared_fds()
    }

    fn kernel_speaks_igmp(&self) -> bool {
        self.inner.kernel_speaks_igmp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spec() {
        let c: FaultConfig = "drop=0.1, dup=0.01,reorder=0.2,corrupt=0.001,delay=0.05@3ms,seed=9"
            .parse()
            .unwrap();
        assert_eq!(c.drop, 0.1);
        assert_eq!(c.duplicate, 0.01);
        assert_eq!(c.reorder, 0.2);
        assert_eq!(c.corrupt, 0.001);
        assert_eq!(c.delay, 0.05);
        assert_eq!(c.delay_ns, 3_000_000);
        assert_eq!(c.seed, 9);
        assert!(c.is_active());
        assert!("drop=2".parse::<FaultConfig>().is_err());
        assert!("bogus=0.1".parse::<FaultConfig>().is_err());
        assert!("drop".parse::<FaultConfig>().is_err());
    }

    #[test]
    fn rng_rate_is_about_right() {
        let mut r = Rng(42);
        let hits = (0..100_000).filter(|_| r.chance(0.1)).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
        assert!(!(0..1000).any(|_| r.chance(0.0)));
    }
}
