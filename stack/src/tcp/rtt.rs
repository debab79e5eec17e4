//! The retransmission timer estimator of RFC 6298: SRTT and RTTVAR from
//! samples (alpha 1/8, beta 1/4), RTO = SRTT + max(G, 4 RTTVAR) clamped to
//! [200 ms, 120 s] like Linux, doubled per consecutive timeout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttEstimator {
    srtt: u64,
    rttvar: u64,
    rto: u64,
    backoff: u32,
    samples: u32,
}
pub const MIN_RTO_NS: u64 = 200_000_000;
pub const MAX_RTO_NS: u64 = 120_000_000_000;
impl RttEstimator {
    pub const INITIAL: RttEstimator = RttEstimator {
        srtt: 0,
        rttvar: 0,
        rto: 1_000_000_000,
        backoff: 0,
        samples: 0,
    };
    pub fn sample(&mut self, r: u64) {
        if self.samples == 0 {
            self.srtt = r;
            self.rttvar = r / 2;
        } else {
            let d = self.srtt.abs_diff(r);
            self.rttvar = (3 * self.rttvar + d) / 4;
            self.srtt = (7 * self.srtt + r) / 8;
        }
        self.samples += 1;
        self.rto = (self.srtt + (4 * self.rttvar).max(1_000_000)).clamp(MIN_RTO_NS, MAX_RTO_NS);
        self.backoff = 0;
    }
    pub fn rto_ns(&self) -> u64 {
        self.rto
            .saturating_mul(1 << self.backoff.min(20))
            .min(MAX_RTO_NS)
    }
    pub fn on_timeout(&mut self) {
        self.backoff = (self.backoff + 1).min(20);
    }
    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
    }
    pub fn srtt_ns(&self) -> u64 {
        self.srtt
    }
}
