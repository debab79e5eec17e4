//! Repair after a process died inside the stack (it held the lock): the
//! buffers and queue nodes it had taken but not yet queued, or queued
//! halfway, are found by walking everything that may hold them, and the
//! pool's reference counts and free lists are rebuilt from what is found.
//!
//! The walk is bounded (every queue at most as long as there are queue
//! nodes) and runs with the lock held, when no other process is inside.
//! A stack on a device is only checked, not repaired: the device's rings
//! (AF_XDP fill and TX rings) hold buffers the stack cannot see.

use crate::pool::{BufId, PktQueue, QNode, NIL};
use crate::socket::kind;
use crate::stack::Core;

/// What a repair found and fixed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Repair {
    /// Buffers whose reference count was wrong (leaked or over-released).
    pub buffers_fixed: u32,
    /// Queue nodes no queue referred to, put back on their free list.
    pub qnodes_freed: u32,
    /// Queues cut where a link was broken (out of range or a loop).
    pub queues_cut: u32,
    /// Queues whose length field disagreed with their links.
    pub counts_fixed: u32,
    /// Seqlocks (the published state, socket identities) left odd by a
    /// writer that died: closed, so readers stop waiting for it (counted
    /// by the caller of [`Core::close_seqlocks`]).
    pub seqlocks_closed: u32,
}

impl Core<'_> {
    /// Rebuilds buffer reference counts and the free lists from the queues
    /// (see the module doc). `device_holds_buffers`: a device keeps buffers
    /// in rings of its own, so nothing is changed, only counted.
    pub fn repair_pool(&mut self, device_holds_buffers: bool) -> Repair {
        let nbufs = self.pool.capacity() as usize;
        let nq = self.pool.qnodes.len();
        let mut refs = vec![0u32; nbufs];
        let mut node_used = vec![false; nq];
        let mut r = Repair::default();

        // Every queue of the stack, walked and cut where broken.
        let mut queues: Vec<*mut PktQueue> = Vec::new();
        for i in 0..self.sockets.len() {
            if self.sockets[i].kind == kind::FREE {
                continue;
            }
            queues.push(&mut self.sockets[i].rxq);
            if self.sockets[i].kind == kind::TCP {
                let t = &mut self.tcbs[i];
                queues.push(&mut t.sndq);
                queues.push(&mut t.rcvq);
                queues.push(&mut t.oooq);
            }
        }
        queues.push(&mut self.st.tx_queue);
        for e in self.arp.iter_mut() {
            queues.push(&mut e.pending);
        }
        for q in queues {
            // SAFETY: each pointer is to a distinct queue in the arena tables
            // borrowed by `self` for this call; none is used twice or kept.
            let q = unsafe { &mut *q };
            walk_queue(self.pool.qnodes, q, &mut refs, &mut node_used, &mut r);
        }
        let cap = self.loop_ring.len() as u32;
        let pending = self.st.loop_tail.wrapping_sub(self.st.loop_head).min(cap);
        for k in 0..pending {
            let b = self.loop_ring[(self.st.loop_head.wrapping_add(k) % cap) as usize] as usize;
            if b < nbufs {
                refs[b] += 1;
            }
        }

        for (b, &want) in refs.iter().enumerate() {
            if self.pool.refcnt(BufId(b as u32)) != want {
                r.buffers_fixed += 1;
            }
        }
        if device_holds_buffers {
            return r;
        }
        // The free stack: every buffer nothing refers to, in index order.
        let mut top = 0usize;
        for (b, &want) in refs.iter().enumerate() {
            self.pool.meta[b]
                .refcnt
                .store(want, std::sync::atomic::Ordering::Relaxed);
            if want == 0 {
                self.pool.free[top] = b as u32;
                top += 1;
            }
        }
        *self.pool.free_top = top as u32;
        // The queue-node free list: every node no queue links.
        let before = self.count_free_qnodes();
        let mut head = NIL;
        for n in (0..nq).rev() {
            if !node_used[n] {
                self.pool.qnodes[n].next = head;
                self.pool.qnodes[n].buf = NIL;
                head = n as u32;
            }
        }
        *self.pool.qnode_free = head;
        let after = node_used.iter().filter(|u| !**u).count() as u32;
        r.qnodes_freed = after.saturating_sub(before);
        r
    }

    /// Makes every seqlock generation even again (a writer died between
    /// its two increments); returns how many were odd.
    pub fn close_seqlocks(&mut self) -> u32 {
        use std::sync::atomic::Ordering;
        let mut n = 0;
        if self.hdr.pub_gen.load(Ordering::Acquire) & 1 == 1 {
            self.hdr.pub_gen.fetch_add(1, Ordering::AcqRel);
            n += 1;
        }
        for s in self.sockets.iter() {
            if s.gen.load(Ordering::Acquire) & 1 == 1 {
                s.gen.fetch_add(1, Ordering::AcqRel);
                n += 1;
            }
        }
        n
    }

    fn count_free_qnodes(&self) -> u32 {
        let mut n = 0u32;
        let mut q = *self.pool.qnode_free;
        while q != NIL && (n as usize) < self.pool.qnodes.len() {
            n += 1;
            q = self.pool.qnodes[q as usize].next;
        }
        n
    }
}

/// Counts the buffers of one queue, cutting it at a broken link.
fn walk_queue(
    qnodes: &mut [QNode],
    q: &mut PktQueue,
    refs: &mut [u32],
    used: &mut [bool],
    r: &mut Repair,
) {
    let mut n = 0u32;
    let mut last = NIL;
    let mut cur = q.head;
    while cur != NIL {
        let i = cur as usize;
        if i >= used.len() || used[i] || qnodes[i].buf as usize >= refs.len() {
            // Out of range, shared with another queue, or a loop.
            r.queues_cut += 1;
            if last == NIL {
                q.head = NIL;
            } else {
                qnodes[last as usize].next = NIL;
            }
            break;
        }
        used[i] = true;
        refs[qnodes[i].buf as usize] += 1;
        n += 1;
        last = cur;
        cur = qnodes[i].next;
    }
    if q.head == NIL {
        q.tail = NIL;
    } else {
        q.tail = last;
    }
    if q.count != n {
        r.counts_fixed += 1;
        q.count = n;
        if n == 0 {
            q.bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use crate::{IfaceConfig, Stack, StackConfig};

    #[test]
    fn leaked_buffers_and_nodes_come_back_and_queued_ones_stay() {
        let cfg = StackConfig {
            max_sockets: 16,
            max_bufs: 64,
            ..StackConfig::default()
        };
        let path = std::env::temp_dir().join(format!("rbypass-repair-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut s = Stack::create_at(&path, "", &cfg, IfaceConfig::loopback()).unwrap();
        s.set_remove_on_drop(true);
        let mut c = s.lock();
        let rx = c.udp_open().unwrap();
        c.udp_bind(rx, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000))
            .unwrap();
        let tx = c.udp_open().unwrap();
        for _ in 0..3 {
            c.udp_send_to(tx, b"kept", SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000))
                .unwrap();
        }
        c.poll(1);
        let free = c.free_buffers();
        // What a process killed in the middle would leave: buffers taken
        // and never queued, and one more reference on a queued buffer.
        let leaked: Vec<_> = (0..5).map(|_| c.pool.alloc().unwrap()).collect();
        let queued = c.pool.peek(&c.sockets[rx.index() as usize].rxq).unwrap();
        c.pool.get(queued);
        assert_eq!(c.free_buffers(), free - 5);
        let r = c.repair_pool(false);
        assert_eq!(r.buffers_fixed, 6, "{r:?}");
        assert_eq!(c.free_buffers(), free, "the leaked buffers are free again");
        assert!(!leaked.is_empty());
        assert!(c.check_consistency().is_ok());
        let mut buf = [0u8; 16];
        for _ in 0..3 {
            let m = c.udp_recv_from(rx, &mut buf, false).unwrap();
            assert_eq!(&buf[..m.copied], b"kept", "queued datagrams survive");
        }
        assert_eq!(
            c.repair_pool(false),
            super::Repair::default(),
            "nothing left to fix"
        );
        // A writer that died inside a seqlock left it odd: closed again.
        c.sockets[0].begin_change();
        c.hdr
            .pub_gen
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        assert_eq!(c.close_seqlocks(), 2);
        assert_eq!(c.close_seqlocks(), 0);
        // On a device the count is reported and nothing changes.
        let _ = c.pool.alloc().unwrap();
        let before = c.free_buffers();
        assert_eq!(c.repair_pool(true).buffers_fixed, 1);
        assert_eq!(c.free_buffers(), before);
    }
}
