//! Congestion control: NewReno (RFC 5681, RFC 6582) and CUBIC (RFC 9438).
//!
//! A connection's congestion state lives in its control block in the arena,
//! so it is one `#[repr(C)]` struct of plain numbers ([`CcState`]) whose
//! behaviour is chosen by [`CcAlgo`]; the TCP engine drives it only through
//! the [`CongestionControl`] trait. All windows are in bytes and all times
//! in nanoseconds from the stack's clock, so tests can use a virtual clock.

/// The events the TCP engine reports to a congestion controller.
pub trait CongestionControl {
    /// New data was cumulatively acknowledged outside loss recovery
    /// (`rtt_ns`: a fresh RTT sample, if this ACK gave one).
    fn on_ack(&mut self, acked: u32, rtt_ns: Option<u64>, now_ns: u64, mss: u32);
    /// Loss detected by duplicate ACKs or SACK (enter fast recovery).
    fn on_congestion_event(&mut self, now_ns: u64, mss: u32, flight: u32);
    /// The retransmission timer expired.
    fn on_rto(&mut self, now_ns: u64, mss: u32, flight: u32);
    /// Fast recovery ended with a full acknowledgment.
    fn on_recovery_exit(&mut self, mss: u32);
    /// The connection sends again after being idle for longer than an RTO
    /// (RFC 5681 4.1: restart from the initial window).
    fn on_idle_restart(&mut self, mss: u32);
    /// Congestion window, bytes.
    fn cwnd(&self) -> u32;
    /// Slow-start threshold, bytes.
    fn ssthresh(&self) -> u32;
}

/// Which algorithm a connection uses (the stack's `tcp_cc` setting).
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CcAlgo {
    /// RFC 5681 congestion avoidance with RFC 6582 recovery.
    NewReno = 0,
    /// RFC 9438, Linux's default and ours.
    #[default]
    Cubic = 1,
}

impl CcAlgo {
    /// From the arena's config byte (unknown values mean the default).
    pub fn from_u8(v: u8) -> CcAlgo {
        match v {
            0 => CcAlgo::NewReno,
            _ => CcAlgo::Cubic,
        }
    }

    /// Parses a user's setting (`newreno`, `reno`, `cubic`).
    pub fn parse(s: &str) -> Option<CcAlgo> {
        match s.to_ascii_lowercase().as_str() {
            "newreno" | "reno" => Some(CcAlgo::NewReno),
            "cubic" => Some(CcAlgo::Cubic),
            _ => None,
        }
    }

    /// Name as Linux's `tcp_congestion_control` spells it.
    pub fn name(self) -> &'static str {
        match self {
            CcAlgo::NewReno => "reno",
            CcAlgo::Cubic => "cubic",
        }
    }
}

/// CUBIC's multiplicative decrease factor (RFC 9438 4.6), in 1/1024ths.
const BETA_1024: u64 = 717;
/// CUBIC's scaling constant C (RFC 9438 4.2).
const CUBIC_C: f64 = 0.4;

/// Initial window (RFC 6928): 10 segments, at most max(2 MSS, 14600).
pub fn initial_window(mss: u32) -> u32 {
    (10 * mss).min((2 * mss).max(14600))
}

/// Per-connection congestion state, stored in the arena.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CcState {
    algo: u8,
    _pad: [u8; 3],
    cwnd: u32,
    ssthresh: u32,
    /// Bytes acknowledged towards the next one-MSS increase (NewReno's
    /// congestion avoidance and CUBIC's Reno-friendly estimate).
    acc: u32,
    /// CUBIC: window before the last reduction (W_max), bytes.
    w_max: u32,
    /// CUBIC: window at the start of the current epoch (cwnd_epoch), bytes.
    w_epoch: u32,
    /// CUBIC: the Reno-friendly estimate (W_est), bytes.
    w_est: u32,
    _pad2: u32,
    /// CUBIC: when the current congestion-avoidance epoch began (0: none yet).
    epoch_start_ns: u64,
    /// CUBIC: time to reach W_max from the epoch start (K), nanoseconds.
    k_ns: u64,
    /// Latest RTT sample, nanoseconds (CUBIC's target looks one RTT ahead).
    rtt_ns: u64,
}

impl CcState {
    /// The state of a closed control block.
    pub const INITIAL: CcState = CcState {
        algo: CcAlgo::Cubic as u8,
        _pad: [0; 3],
        cwnd: 14600,
        ssthresh: u32::MAX,
        acc: 0,
        w_max: 0,
        w_epoch: 0,
        w_est: 0,
        _pad2: 0,
        epoch_start_ns: 0,
        k_ns: 0,
        rtt_ns: 0,
    };

    /// A new connection's state: the initial window, no threshold yet.
    pub fn new(algo: CcAlgo, mss: u32) -> CcState {
        CcState {
            algo: algo as u8,
            cwnd: initial_window(mss),
            ..CcState::INITIAL
        }
    }

    /// The algorithm this connection uses.
    pub fn algo(&self) -> CcAlgo {
        CcAlgo::from_u8(self.algo)
    }

    fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }

    /// RFC 3465 slow start with L = 2: at most two segments per ACK.
    fn slow_start(&mut self, acked: u32, mss: u32) {
        self.cwnd = self.cwnd.saturating_add(acked.min(2 * mss));
    }

    /// Reno congestion avoidance: one MSS per window acknowledged.
    fn reno_avoid(&mut self, acked: u32, mss: u32) {
        self.acc = self.acc.saturating_add(acked);
        if self.acc >= self.cwnd {
            self.acc -= self.cwnd;
            self.cwnd = self.cwnd.saturating_add(mss);
        }
    }

    /// W_cubic(t) in bytes (RFC 9438 eq. 1), t in nanoseconds from the epoch start.
    fn w_cubic(&self, t_ns: u64, mss: u32) -> f64 {
        let t = (t_ns as f64 - self.k_ns as f64) / 1e9;
        let w_max_segs = self.w_max as f64 / mss as f64;
        (CUBIC_C * t * t * t + w_max_segs) * mss as f64
    }

    fn cubic_avoid(&mut self, acked: u32, now: u64, mss: u32) {
        if self.epoch_start_ns == 0 {
            // A new epoch (RFC 9438 4.2 and 4.8).
            self.epoch_start_ns = now.max(1);
            self.w_epoch = self.cwnd;
            self.w_est = self.cwnd;
            self.acc = 0;
            if self.cwnd < self.w_max {
                let segs = (self.w_max - self.cwnd) as f64 / mss as f64;
                self.k_ns = ((segs / CUBIC_C).cbrt() * 1e9) as u64;
            } else {
                self.k_ns = 0;
                self.w_max = self.cwnd;
            }
        }
        let t = now.saturating_sub(self.epoch_start_ns);
        // Reno-friendly estimate (RFC 9438 4.3): alpha = 3(1-b)/(1+b) per
        // window until W_est reaches W_max, then one MSS per window.
        let alpha_1024 = if self.w_est >= self.w_max {
            1024
        } else {
            3 * (1024 - BETA_1024) * 1024 / (1024 + BETA_1024)
        };
        self.acc = self.acc.saturating_add(acked);
        if self.acc >= self.cwnd {
            let windows = (self.acc / self.cwnd) as u64;
            self.acc %= self.cwnd;
            let inc = windows * alpha_1024 * mss as u64 / 1024;
            self.w_est = self.w_est.saturating_add(inc.min(u32::MAX as u64) as u32);
        }
        let w_now = self.w_cubic(t, mss);
        if w_now < self.w_est as f64 {
            self.cwnd = self.cwnd.max(self.w_est);
            return;
        }
        // Concave or convex region (RFC 9438 4.4, 4.5): aim at W_cubic one
        // RTT ahead, bounded to 1.5 cwnd, and move cwnd towards it by
        // (target - cwnd) / cwnd per acknowledged byte.
        let cwnd = self.cwnd as f64;
        let target = self.w_cubic(t + self.rtt_ns, mss).clamp(cwnd, 1.5 * cwnd);
        let inc = (target - cwnd) * acked as f64 / cwnd;
        self.cwnd = (cwnd + inc).min(u32::MAX as f64) as u32;
    }

    /// Shared multiplicative decrease: returns the new ssthresh.
    fn reduce(&mut self, mss: u32, flight: u32) -> u32 {
        match self.algo() {
            CcAlgo::NewReno => (flight / 2).max(2 * mss),
            CcAlgo::Cubic => {
                // Fast convergence (RFC 9438 4.7).
                self.w_max = if self.cwnd < self.w_max {
                    (self.cwnd as u64 * (1024 + BETA_1024) / 2048) as u32
                } else {
                    self.cwnd
                };
                self.epoch_start_ns = 0;
                ((flight as u64 * BETA_1024 / 1024) as u32).max(2 * mss)
            }
        }
    }
}

impl CongestionControl for CcState {
    fn on_ack(&mut self, acked: u32, rtt_ns: Option<u64>, now_ns: u64, mss: u32) {
        if let Some(r) = rtt_ns {
            self.rtt_ns = r;
        }
        if acked == 0 {
            return;
        }
        if self.in_slow_start() {
            self.slow_start(acked, mss);
            return;
        }
        match self.algo() {
            CcAlgo::NewReno => self.reno_avoid(acked, mss),
            CcAlgo::Cubic => self.cubic_avoid(acked, now_ns, mss),
        }
    }

    fn on_congestion_event(&mut self, _now_ns: u64, mss: u32, flight: u32) {
        self.ssthresh = self.reduce(mss, flight);
        self.cwnd = self.ssthresh;
        self.acc = 0;
    }

    fn on_rto(&mut self, _now_ns: u64, mss: u32, flight: u32) {
        self.ssthresh = self.reduce(mss, flight);
        self.cwnd = mss;
        self.acc = 0;
    }

    fn on_recovery_exit(&mut self, _mss: u32) {
        self.cwnd = self.ssthresh;
        self.acc = 0;
    }

    fn on_idle_restart(&mut self, mss: u32) {
        self.cwnd = self.cwnd.min(initial_window(mss));
        self.epoch_start_ns = 0;
        self.acc = 0;
    }

    fn cwnd(&self) -> u32 {
        self.cwnd
    }

    fn ssthresh(&self) -> u32 {
        self.ssthresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u32 = 1000;
    const MS: u64 = 1_000_000;

    /// Acknowledges one full window per RTT for `rtts` round trips.
    fn run(cc: &mut CcState, start: u64, rtt: u64, rtts: u32) -> u64 {
        let mut now = start;
        for _ in 0..rtts {
            now += rtt;
            let segs = cc.cwnd() / MSS;
            for _ in 0..segs {
                cc.on_ack(MSS, Some(rtt), now, MSS);
            }
        }
        now
    }

    #[test]
    fn slow_start_doubles_per_rtt_from_initial_window() {
        for algo in [CcAlgo::NewReno, CcAlgo::Cubic] {
            let mut cc = CcState::new(algo, MSS);
            assert_eq!(cc.cwnd(), 10 * MSS);
            run(&mut cc, 0, 10 * MS, 1);
            assert_eq!(cc.cwnd(), 20 * MSS);
        }
    }

    #[test]
    fn newreno_halves_and_grows_one_mss_per_rtt() {
        let mut cc = CcState::new(CcAlgo::NewReno, MSS);
        run(&mut cc, 0, 10 * MS, 3); // 80 segments
        cc.on_congestion_event(0, MSS, cc.cwnd());
        assert_eq!(cc.cwnd(), 40 * MSS);
        assert_eq!(cc.ssthresh(), 40 * MSS);
        run(&mut cc, 0, 10 * MS, 5);
        assert_eq!(cc.cwnd(), 45 * MSS);
    }

    #[test]
    fn cubic_reduces_by_beta_and_regrows_concave_then_convex() {
        // A long RTT, where the cubic curve (not the Reno-friendly estimate)
        // governs growth.
        let mut cc = CcState::new(CcAlgo::Cubic, MSS);
        let rtt = 100 * MS;
        let now = run(&mut cc, 0, rtt, 4); // 160 segments
        let w_max = cc.cwnd();
        assert_eq!(w_max, 160 * MSS);
        cc.on_congestion_event(now, MSS, w_max);
        let after = cc.cwnd();
        assert_eq!(after, (160 * MSS as u64 * BETA_1024 / 1024) as u32);
        cc.on_recovery_exit(MSS);
        // K = cbrt(W_max (1 - beta) / C) = cbrt(160 * 0.3 / 0.4) ~ 4.93 s.
        let mut samples = Vec::new();
        let mut t = now;
        for _ in 0..100 {
            t = run(&mut cc, t, rtt, 1);
            samples.push(cc.cwnd());
        }
        assert!((cc.k_ns as f64 / 1e9 - 4.93).abs() < 0.05, "K {}", cc.k_ns);
        // Growth is fast first, slows near W_max (plateau), then speeds up.
        let at = |s: f64| samples[(s * 10.0) as usize - 1] as i64;
        let early = at(1.0) - at(0.5);
        let plateau = at(5.0) - at(4.5);
        let late = at(9.5) - at(9.0);
        assert!(
            early > plateau && late > plateau,
            "{early} {plateau} {late}"
        );
        assert!(
            (at(5.0) - w_max as i64).abs() < 3 * MSS as i64,
            "{}",
            at(5.0)
        );
        assert!(at(9.5) > w_max as i64 + 20 * MSS as i64);
    }

    #[test]
    fn cubic_fast_convergence_lowers_w_max() {
        let mut cc = CcState::new(CcAlgo::Cubic, MSS);
        let now = run(&mut cc, 0, 10 * MS, 4);
        cc.on_congestion_event(now, MSS, cc.cwnd());
        cc.on_recovery_exit(MSS);
        let reduced = cc.cwnd();
        // A second loss below the old W_max: W_max = cwnd (1 + beta) / 2.
        cc.on_congestion_event(now, MSS, reduced);
        assert_eq!(
            cc.w_max,
            (reduced as u64 * (1024 + BETA_1024) / 2048) as u32
        );
    }

    #[test]
    fn cubic_is_at_least_reno_friendly_at_short_rtt() {
        // At a tiny RTT the cubic curve is almost flat over a few hundred
        // round trips; the Reno-friendly estimate must keep cwnd growing.
        let mut cc = CcState::new(CcAlgo::Cubic, MSS);
        let rtt = 100_000; // 100 us
        let now = run(&mut cc, 0, rtt, 4);
        cc.on_congestion_event(now, MSS, cc.cwnd());
        cc.on_recovery_exit(MSS);
        let start = cc.cwnd();
        run(&mut cc, now, rtt, 200);
        assert!(cc.cwnd() >= start + 50 * MSS, "{} -> {}", start, cc.cwnd());
    }

    #[test]
    fn rto_collapses_to_one_segment_and_idle_restart_to_initial_window() {
        for algo in [CcAlgo::NewReno, CcAlgo::Cubic] {
            let mut cc = CcState::new(algo, MSS);
            run(&mut cc, 0, 10 * MS, 3);
            cc.on_rto(0, MSS, cc.cwnd());
            assert_eq!(cc.cwnd(), MSS);
            assert!(cc.ssthresh() >= 2 * MSS);
            let mut cc = CcState::new(algo, MSS);
            run(&mut cc, 0, 10 * MS, 3);
            cc.on_idle_restart(MSS);
            assert_eq!(cc.cwnd(), 10 * MSS);
        }
    }

    #[test]
    fn parse_names() {
        assert_eq!(CcAlgo::parse("CUBIC"), Some(CcAlgo::Cubic));
        assert_eq!(CcAlgo::parse("reno"), Some(CcAlgo::NewReno));
        assert_eq!(CcAlgo::parse("bbr"), None);
        assert_eq!(CcAlgo::from_u8(CcAlgo::NewReno as u8), CcAlgo::NewReno);
    }
}
