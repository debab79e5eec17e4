//! Stand-in (replaced by the full module): NewReno only.
pub trait CongestionControl {
    fn on_ack(&mut self, acked: u32, rtt_ns: Option<u64>, now_ns: u64, mss: u32);
    fn on_congestion_event(&mut self, now_ns: u64, mss: u32, flight: u32);
    fn on_rto(&mut self, now_ns: u64, mss: u32, flight: u32);
    fn on_recovery_exit(&mut self, mss: u32);
    fn cwnd(&self) -> u32;
    fn ssthresh(&self) -> u32;
}
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CcAlgo {
    NewReno = 0,
    #[default]
    Cubic = 1,
}
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CcState {
    cwnd: u32,
    ssthresh: u32,
    acc: u32,
}
impl CcState {
    pub const INITIAL: CcState = CcState {
        cwnd: 14600,
        ssthresh: u32::MAX,
        acc: 0,
    };
    pub fn new(_a: CcAlgo, mss: u32) -> CcState {
        CcState {
            cwnd: (10 * mss).min((2 * mss).max(14600)),
            ssthresh: u32::MAX,
            acc: 0,
        }
    }
}
impl CongestionControl for CcState {
    fn on_ack(&mut self, acked: u32, _r: Option<u64>, _n: u64, mss: u32) {
        if self.cwnd < self.ssthresh {
            self.cwnd = self.cwnd.saturating_add(acked.min(2 * mss));
        } else {
            self.acc = self.acc.saturating_add(acked);
            if self.acc >= self.cwnd {
                self.acc -= self.cwnd;
                self.cwnd = self.cwnd.saturating_add(mss);
            }
        }
    }
    fn on_congestion_event(&mut self, _n: u64, mss: u32, flight: u32) {
        self.ssthresh = (flight / 2).max(2 * mss);
        self.cwnd = self.ssthresh;
    }
    fn on_rto(&mut self, _n: u64, mss: u32, flight: u32) {
        self.ssthresh = (flight / 2).max(2 * mss);
        self.cwnd = mss;
    }
    fn on_recovery_exit(&mut self, _mss: u32) {
        self.cwnd = self.ssthresh;
    }
    fn cwnd(&self) -> u32 {
        self.cwnd
    }
    fn ssthresh(&self) -> u32 {
        self.ssthresh
    }
}
