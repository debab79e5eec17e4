//! The driver loop: moves frames between a [`Nic`] and a [`Stack`], advances
//! the stack's time, and sleeps on the device's file descriptor (bounded by
//! the next timer) when there is nothing to do.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rbypass_stack::clock::now_ns;
use rbypass_stack::{BufId, Core, Stack};

use crate::Nic;

/// Frames taken from the device per receive call.
pub const RX_BURST: usize = 32;
/// Frames handed to the device per transmit call.
pub const TX_BURST: usize = 64;

/// A stack driven by one device.
pub struct Driver<N: Nic> {
    stack: Arc<Stack>,
    nic: N,
}

impl<N: Nic> Driver<N> {
    /// Joins a stack and a device.
    pub fn new(stack: Arc<Stack>, nic: N) -> Self {
        Driver { stack, nic }
    }

    /// The stack.
    pub fn stack(&self) -> &Arc<Stack> {
        &self.stack
    }

    /// The device.
    pub fn nic(&self) -> &N {
        &self.nic
    }

    /// The device, mutably.
    pub fn nic_mut(&mut self) -> &mut N {
        &mut self.nic
    }

    /// One round: receive a burst, let the stack handle it and its timers,
    /// transmit what it produced. Returns whether any work was done.
    pub fn poll(&mut self, now: u64) -> io::Result<bool> {
        let mut core = self.stack.lock();
        Self::poll_locked(&mut self.nic, &mut core, now)
    }

    /// [`Driver::poll`] with the lock already held (the caller has a `Core`).
    pub fn poll_locked(nic: &mut N, core: &mut Core<'_>, now: u64) -> io::Result<bool> {
        core.take_pending_work();
        let mut did = false;
        let mut rx = [BufId(0); RX_BURST];
        for _ in 0..4 {
            let n = nic.receive(core, &mut rx, now)?;
            for &b in &rx[..n] {
                core.receive(b, now);
            }
            did |= n > 0;
            if n < RX_BURST {
                break;
            }
        }
        did |= core.poll(now);
        did |= Self::flush_tx(nic, core, now)?;
        Ok(did)
    }

    /// Hands queued frames to the device; what it cannot take stays queued.
    pub fn flush_tx(nic: &mut N, core: &mut Core<'_>, now: u64) -> io::Result<bool> {
        // Cheap when nothing changed (one comparison).
        if let Err(e) = nic.sync_flows(core) {
            tracing::warn!("{}: cannot update the flow filter: {e}", nic.name());
        }
        let mut did = false;
        let mut tx = [BufId(0); TX_BURST];
        loop {
            let mut n = 0;
            while n < TX_BURST {
                match core.dequeue_tx() {
                    Some(b) => {
                        tx[n] = b;
                        n += 1;
                    }
                    None => break,
                }
            }
            if n == 0 {
                // Let a delay line (fault injector) release frames even with nothing new to send.
                if nic.next_deadline().is_some_and(|d| d <= now) {
                    nic.transmit(core, &[], now)?;
                }
                return Ok(did);
            }
            let sent = match nic.transmit(core, &tx[..n], now) {
                Ok(s) => s.min(n),
                Err(e) => {
                    for &b in tx[..n].iter().rev() {
                        core.requeue_tx_front(b);
                    }
                    return Err(e);
                }
            };
            did |= sent > 0;
            for &b in tx[sent..n].iter().rev() {
                core.requeue_tx_front(b);
            }
            if sent < n {
                return Ok(did);
            }
        }
    }

    /// Sleeps until the device has frames, the stack's next timer is due, or
    /// `max` passes, whichever is first.
    pub fn wait(&self, max: Duration) -> io::Result<()> {
        let now = now_ns();
        let mut deadline = now + max.as_nanos() as u64;
        {
            let core = self.stack.lock();
            if let Some(d) = core.next_deadline() {
                deadline = deadline.min(d);
            }
            if core.has_tx() {
                deadline = now;
            }
        }
        if let Some(d) = self.nic.next_deadline() {
            deadline = deadline.min(d);
        }
        if deadline <= now {
            return Ok(());
        }
        let wait = deadline - now;
        match self.nic.wait_fd() {
            Some(fd) => {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = wait.div_ceil(1_000_000).min(i32::MAX as u64) as i32;
                // SAFETY: pfd is a valid pollfd array of length 1.
                let r = unsafe { libc::poll(&mut pfd, 1, ms) };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
            None => std::thread::sleep(Duration::from_nanos(wait.min(50_000))),
        }
        Ok(())
    }

    /// Polls and waits until `f` (called with the stack locked after every
    /// round) returns a value, or `timeout` passes. This is how the Rust API
    /// gives blocking calls: e.g. a blocking receive is
    /// `run_until(t, |c| c.udp_recv_from(s, buf, false).ok())`.
    pub fn run_until<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&mut Core<'_>) -> Option<T>,
    ) -> io::Result<Option<T>> {
        let start = now_ns();
        let end = start + timeout.as_nanos() as u64;
        loop {
            let now = now_ns();
            {
                let mut core = self.stack.lock();
                let did = Self::poll_locked(&mut self.nic, &mut core, now)?;
                if let Some(v) = f(&mut core) {
                    Self::flush_tx(&mut self.nic, &mut core, now)?;
                    return Ok(Some(v));
                }
                if did {
                    continue;
                }
            }
            if now >= end {
                return Ok(None);
            }
            self.wait(Duration::from_nanos((end - now).min(10_000_000)))?;
        }
    }
}
