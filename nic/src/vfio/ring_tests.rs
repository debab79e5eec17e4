//! Full rounds of the RX and TX rings against the simulated igb, with a
//! real stack's packet pool: frames byte-exact, many wrap-arounds, batched
//! tail writes, full rings, bad frames, and every buffer back in the pool.

use std::path::PathBuf;

use rbypass_stack::{BufId, IfaceConfig, Stack, StackConfig};

use super::dma::{PKT_IOVA, RING_IOVA, RING_IOVA_STRIDE};
use super::igb_regs as r;
use super::ring::{Regs, RingError, RxRing, TxRing};
use super::sim::{SimIgb, RX_FIFO_FRAMES};

/// A simulated device wired to a private stack's pool and two rings.
/// Fields drop in order: the device before the memory it points into.
struct Rig {
    sim: SimIgb,
    rx: RxRing,
    tx: TxRing,
    stack: Stack,
}

fn rig(tag: &str, bufs: u32, rx_size: u32, tx_size: u32) -> Rig {
    let path = PathBuf::from(format!("/dev/shm/rbypass-igb{tag}{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut stack = Stack::create_at(
        &path,
        "",
        &StackConfig {
            max_bufs: bufs,
            ..StackConfig::default()
        },
        IfaceConfig::loopback(),
    )
    .unwrap();
    stack.set_remove_on_drop(true);
    let sim = SimIgb::new();
    let rx = RxRing::new(0, rx_size, RING_IOVA, PKT_IOVA).unwrap();
    let tx = TxRing::new(0, tx_size, RING_IOVA + RING_IOVA_STRIDE, PKT_IOVA).unwrap();
    {
        let c = stack.lock();
        let (p, len) = c.pool.data_region();
        // SAFETY: the pool region lives as long as the stack, which the rig
        // drops after the device; tests hold no reference into a buffer
        // across a register write.
        unsafe { sim.map_dma(p, PKT_IOVA, len) };
    }
    for d in [rx.desc_region(), tx.desc_region()] {
        // SAFETY: the rings' descriptor memory outlives the device (field order).
        unsafe { sim.map_dma(d.vaddr, d.iova, d.len) };
    }
    rx.configure(&sim);
    tx.configure(&sim);
    sim.write(r::RCTL, r::rctl::EN | r::rctl::BAM | r::rctl::SECRC);
    sim.write(r::TCTL, r::tctl::EN | r::tctl::PSP);
    Rig { sim, rx, tx, stack }
}

/// Frame `seq` of `len` bytes: an Ethernet header, the sequence number,
/// then a pattern that depends on both.
fn frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(18)];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    for (k, b) in f[18..].iter_mut().enumerate() {
        *b = (seq as usize * 31 + k * 7) as u8;
    }
    f
}

fn len_of(seq: u32) -> usize {
    60 + (seq as usize * 97) % 1455
}

#[test]
fn rx_receives_frames_byte_exact() {
    let mut g = rig("rx1", 512, 64, 64);
    let mut c = g.stack.lock();
    let start = c.pool.free_count();
    g.rx.refill_and_kick(&g.sim, &mut c.pool);
    assert_eq!(g.rx.posted(), 63, "one slot stays empty");
    assert_eq!(g.sim.read(r::rdt(0)), 63);
    assert_eq!(c.pool.free_count(), start - 63);

    let frames: Vec<_> = [60, 64, 128, 1000, 1514, 2048]
        .iter()
        .enumerate()
        .map(|(i, &l)| frame(i as u32, l))
        .collect();
    for f in &frames {
        assert!(g.sim.inject(f));
    }
    let mut out = [BufId(0); 32];
    let n = g.rx.receive(&mut c.pool, &mut out);
    assert_eq!(n, frames.len());
    for (&b, f) in out[..n].iter().zip(&frames) {
        assert_eq!(c.pool.frame(b), &f[..]);
        assert_eq!(c.pool.meta(b).off, 0);
        assert_eq!(c.pool.refcnt(b), 1, "the caller owns the only reference");
        c.pool.put(b);
    }
    assert_eq!(g.rx.receive(&mut c.pool, &mut out), 0, "nothing more");
    assert_eq!(g.sim.read(r::rdh(0)), 6);
    assert_eq!(g.sim.read(r::stats::GPRC), 6);
    assert_eq!(g.sim.read(r::stats::GPRC), 0, "statistics clear on read");
    let bytes: usize = frames.iter().map(Vec::len).sum();
    assert_eq!(g.sim.read(r::stats::GORCL) as usize, bytes);
    assert_eq!(g.rx.stats.frames, 6);
    assert_eq!(g.rx.stats.bytes as usize, bytes);
    assert_eq!(g.sim.dma_faults(), 0);
    g.rx.release_all(&mut c.pool);
    assert_eq!(c.pool.free_count(), start, "no buffer leaked");
}

#[test]
fn rx_wraps_many_times_with_one_tail_write_per_batch() {
    let mut g = rig("rx2", 512, 32, 32);
    let mut c = g.stack.lock();
    let start = c.pool.free_count();
    g.rx.refill_and_kick(&g.sim, &mut c.pool);
    let (mut sent, mut got) = (0u32, 0u32);
    let mut out = [BufId(0); 64];
    for round in 0..2000u32 {
        for _ in 0..(round * 7) % 31 + 1 {
            assert!(g.sim.inject(&frame(sent, len_of(sent))));
            sent += 1;
        }
        let n = g.rx.receive(&mut c.pool, &mut out);
        for &b in &out[..n] {
            assert_eq!(c.pool.frame(b), &frame(got, len_of(got))[..], "frame {got}");
            got += 1;
            c.pool.put(b);
        }
        g.rx.refill_and_kick(&g.sim, &mut c.pool);
    }
    // Drain what waits in the device's FIFO.
    for _ in 0..100 {
        let n = g.rx.receive(&mut c.pool, &mut out);
        for &b in &out[..n] {
            assert_eq!(c.pool.frame(b), &frame(got, len_of(got))[..], "frame {got}");
            got += 1;
            c.pool.put(b);
        }
        g.rx.refill_and_kick(&g.sim, &mut c.pool);
    }
    assert_eq!(got, sent);
    assert!(sent > 30_000, "wrapped the 32-slot ring about 1000 times");
    // Refills wait for 16 free slots: about one tail write per 16 frames.
    assert!(
        g.rx.stats.tail_writes <= u64::from(sent) / 16 + 2,
        "{} tail writes for {sent} frames",
        g.rx.stats.tail_writes
    );
    assert_eq!(g.rx.stats.errors, 0);
    assert_eq!(g.sim.dma_faults(), 0);
    g.rx.release_all(&mut c.pool);
    assert_eq!(c.pool.free_count(), start, "no buffer leaked");
}

#[test]
fn rx_full_ring_frames_wait_in_the_fifo_then_drop() {
    let mut g = rig("rx3", 512, 16, 16);
    let mut c = g.stack.lock();
    let start = c.pool.free_count();
    g.rx.refill_and_kick(&g.sim, &mut c.pool);
    assert_eq!(g.rx.posted(), 15);
    let total = 15 + RX_FIFO_FRAMES as u32;
    for seq in 0..total {
        assert!(g.sim.inject(&frame(seq, 100)));
    }
    assert_eq!(g.sim.rx_pending(), RX_FIFO_FRAMES);
    assert!(!g.sim.inject(&frame(999, 100)), "FIFO full: dropped");
    assert_eq!(g.sim.read(r::stats::MPC), 1, "counted as missed");

    let mut out = [BufId(0); 32];
    let mut got = 0;
    assert_eq!(g.rx.receive(&mut c.pool, &mut out), 15);
    for &b in &out[..15] {
        assert_eq!(c.pool.frame(b), &frame(got, 100)[..]);
        got += 1;
        c.pool.put(b);
    }
    assert_eq!(
        g.rx.receive(&mut c.pool, &mut out),
        0,
        "no descriptor posted yet"
    );
    while got < total {
        g.rx.refill_and_kick(&g.sim, &mut c.pool);
        let n = g.rx.receive(&mut c.pool, &mut out);
        assert!(n > 0);
        for &b in &out[..n] {
            assert_eq!(c.pool.frame(b), &frame(got, 100)[..]);
            got += 1;
            c.pool.put(b);
        }
    }
    assert_eq!(g.sim.rx_pending(), 0);
    g.rx.release_all(&mut c.pool);
    assert_eq!(c.pool.free_count(), start, "no buffer leaked");
}

#[test]
fn rx_pool_exhaustion_posts_what_there_is() {
    let mut g = rig("rx4", 512, 64, 16);
    let mut c = g.stack.lock();
    let start = c.pool.free_count();
    let hog: Vec<_> = (0..start - 10).map(|_| c.pool.alloc().unwrap()).collect();
    g.rx.refill_and_kick(&g.sim, &mut c.pool);
    assert_eq!(g.rx.posted(), 10);
    assert_eq!(g.rx.stats.no_buffers, 1);
    for seq in 0..12 {
        g.sim.inject(&frame(seq, 200));
    }
    let mut out = [BufId(0); 32];
    assert_eq!(g.rx.receive(&mut c.pool, &mut out), 10);
    for &b in &out[..10] {
        c.pool.put(b);
    }
    g.rx.refill_and_kick(&g.sim, &mut c.pool);
    assert_eq!(
        g.rx.receive(&mut c.pool, &mut out),
        2,
        "the two that waited"
    );
    assert_eq!(c.pool.frame(out[1]), &frame(11, 200)[..]);
    c.pool.put(out[0]);
    c.pool.put(out[1]);
    for b in hog {
        c.pool.put(b);
    }
    g.rx.release_all(&mut c.pool);
    assert_eq!(c.pool.free_count(), start, "no buffer leaked");
}

#[test]
fn rx_drops_bad_and_multi_descriptor_frames() {
    let mut g = rig("rx5", 512, 32, 16);
    let mut c = g.stack.lock();
    let start = c.pool.free_count();
    g.rx.refill_and_kick(&g.sim, &mut c.pool);
    g.sim.inject_with(&frame(0, 100), r::rx_error::RXE);
    g.sim.inject(&frame(1, 3000)); // two 2 KiB descriptors
    g.sim.inject(&frame(2, 100));
    let mut out = [BufId(0); 32];
    assert_eq!(g.rx.receive(&mut c.pool, &mut out), 1);
    assert_eq!(c.pool.frame(out[0]), &frame(2, 100)[..]);
    c.pool.put(out[0]);
    assert_eq!(g.rx.stats.errors, 2);
    assert_eq!(g.rx.stats.frames, 1);
    g.rx.release_all(&mut c.pool);
    assert_eq!(c.pool.free_count(), start, "no buffer leaked");
}

/// Buffers holding frames `seqs`, as the stack would hand them to a device.
fn tx_bufs(pool: &mut rbypass_stack::Pool<'_>, seqs: std::ops::Range<u32>) -> Vec<BufId> {
    seqs.map(|s| {
        let b = pool.alloc().unwrap();
        let f = frame(s, len_of(s));
        pool.frame_mut(b, f.len()).copy_from_slice(&f);
        b
    })
    .collect()
}

#[test]
fn tx_sends_a_batch_byte_exact_and_reclaims() {
    let mut g = rig("tx1", 512, 16, 64);
    let mut c = g.stack.lock();
    let start = c.pool.free_count();
    let bufs = tx_bufs(&mut c.pool, 0..32);
    let (n, tail) = g.tx.transmit(&mut c.pool, &bufs);
    assert_eq!((n, tail), (32, Some(32)));
    g.tx.kick(&g.sim, 32);
    let sent = g.sim.take_sent();
    assert_eq!(sent.len(), 32);
    for (s, f) in sent.iter().enumerate() {
        assert_eq!(f, &frame(s as u32, len_of(s as u32)));
    }
    assert_eq!(g.tx.in_flight(), 32);
    assert_eq!(g.tx.reclaim(&mut c.pool), 32);
    assert_eq!(g.tx.in_flight(), 0);
    assert_eq!(g.sim.read(r::tdh(0)), 32);
    assert_eq!(g.sim.read(r::stats::GPTC), 32);
    assert_eq!(g.tx.stats.tail_writes, 1, "one tail write for the batch");
    assert_eq!(c.pool.free_count(), start, "every buffer released");
    assert_eq!(g.sim.dma_faults(), 0);
}

#[test]
fn tx_full_ring_and_partial_completion() {
    let mut g = rig("tx2", 512, 16, 16);
    let mut c = g.stack.lock();
    let start = c.pool.free_count();
    g.sim.set_tx_auto(false);
    let bufs = tx_bufs(&mut c.pool, 0..20);
    let (n, tail) = g.tx.transmit(&mut c.pool, &bufs);
    assert_eq!((n, tail), (15, Some(15)), "one slot stays empty");
    g.tx.kick(&g.sim, 15);
    assert_eq!(
        g.tx.transmit(&mut c.pool, &bufs[15..]),
        (0, None),
        "ring full"
    );
    assert_eq!(g.tx.stats.ring_full, 2);
    assert_eq!(g.sim.complete_tx(0, 4), 4);
    let (n, tail) = g.tx.transmit(&mut c.pool, &bufs[15..]);
    assert_eq!(n, 4, "room for the 4 completed");
    assert_eq!(g.tx.stats.completed, 4, "reclaimed on the way");
    g.tx.kick(&g.sim, tail.unwrap());
    assert_eq!(g.sim.complete_tx(0, usize::MAX), 15);
    assert_eq!(g.tx.reclaim(&mut c.pool), 15);
    let (n, tail) = g.tx.transmit(&mut c.pool, &bufs[19..]);
    assert_eq!(n, 1);
    g.tx.kick(&g.sim, tail.unwrap());
    g.sim.complete_tx(0, usize::MAX);
    assert_eq!(g.tx.reclaim(&mut c.pool), 1);
    let sent = g.sim.take_sent();
    assert_eq!(sent.len(), 20);
    for (s, f) in sent.iter().enumerate() {
        assert_eq!(f, &frame(s as u32, len_of(s as u32)), "in order");
    }
    assert_eq!(c.pool.free_count(), start, "no buffer leaked");
}

#[test]
fn tx_wraps_many_times() {
    let mut g = rig("tx3", 512, 16, 32);
    let mut c = g.stack.lock();
    let start = c.pool.free_count();
    let (mut next, mut checked) = (0u32, 0u32);
    let mut kicks = 0;
    for round in 0..2000u32 {
        let k = round % 40 + 1;
        let bufs = tx_bufs(&mut c.pool, next..next + k);
        next += k;
        let mut done = 0;
        while done < bufs.len() {
            let (n, tail) = g.tx.transmit(&mut c.pool, &bufs[done..]);
            done += n;
            if let Some(t) = tail {
                g.tx.kick(&g.sim, t);
                kicks += 1;
            }
        }
        for f in g.sim.take_sent() {
            assert_eq!(f, frame(checked, len_of(checked)), "frame {checked}");
            checked += 1;
        }
    }
    g.tx.reclaim(&mut c.pool);
    assert_eq!(checked, next);
    assert_eq!(g.sim.sent_count(), u64::from(next));
    assert_eq!(g.tx.stats.tail_writes, kicks);
    assert_eq!(g.tx.in_flight(), 0);
    assert_eq!(c.pool.free_count(), start, "no buffer leaked");
    assert_eq!(g.sim.dma_faults(), 0);
}

#[test]
fn tx_drops_an_empty_frame_and_releases_it() {
    let mut g = rig("tx4", 512, 16, 16);
    let mut c = g.stack.lock();
    let start = c.pool.free_count();
    let b = c.pool.alloc().unwrap();
    assert_eq!(g.tx.transmit(&mut c.pool, &[b]), (1, None));
    assert_eq!(g.tx.stats.dropped, 1);
    assert_eq!(c.pool.free_count(), start);
}

#[test]
fn forwarding_received_buffers_is_zero_copy() {
    let mut g = rig("fwd", 512, 64, 64);
    let mut c = g.stack.lock();
    let start = c.pool.free_count();
    g.rx.refill_and_kick(&g.sim, &mut c.pool);
    for s in 0..40 {
        g.sim.inject(&frame(s, len_of(s)));
    }
    let mut out = [BufId(0); 64];
    let n = g.rx.receive(&mut c.pool, &mut out);
    assert_eq!(n, 40);
    let (taken, tail) = g.tx.transmit(&mut c.pool, &out[..n]);
    assert_eq!(taken, 40);
    g.tx.kick(&g.sim, tail.unwrap());
    let sent = g.sim.take_sent();
    for (s, f) in sent.iter().enumerate() {
        assert_eq!(f, &frame(s as u32, len_of(s as u32)));
    }
    assert_eq!(g.tx.reclaim(&mut c.pool), 40);
    g.rx.release_all(&mut c.pool);
    assert_eq!(c.pool.free_count(), start, "no buffer leaked");
}

#[test]
fn configure_programs_the_queue_registers() {
    let g = rig("cfg", 256, 64, 128);
    let s = &g.sim;
    assert_eq!(s.read(r::rdbal(0)), RING_IOVA as u32);
    assert_eq!(s.read(r::rdbah(0)), (RING_IOVA >> 32) as u32);
    assert_eq!(s.read(r::rdlen(0)), 64 * 16);
    assert_eq!(
        s.read(r::srrctl(0)),
        r::srrctl::DESCTYPE_ADV_ONEBUF | r::srrctl::DROP_EN | 2,
        "advanced one-buffer descriptors, 2 KiB buffers"
    );
    assert_ne!(s.read(r::rxdctl(0)) & r::dctl::ENABLE, 0);
    assert_eq!(s.read(r::tdbal(0)), (RING_IOVA + RING_IOVA_STRIDE) as u32);
    assert_eq!(s.read(r::tdlen(0)), 128 * 16);
    assert_ne!(s.read(r::txdctl(0)) & r::dctl::ENABLE, 0);
    for bad in [0, 4, 100, 8192] {
        assert!(matches!(
            RxRing::new(0, bad, 0, 0),
            Err(RingError::BadSize(x)) if x == bad
        ));
        assert!(TxRing::new(0, bad, 0, 0).is_err());
    }
}

#[test]
fn device_reset_stops_the_queues() {
    let mut g = rig("rst", 256, 16, 16);
    let mut c = g.stack.lock();
    let start = c.pool.free_count();
    g.rx.refill_and_kick(&g.sim, &mut c.pool);
    g.sim.write(r::CTRL, r::ctrl::RST);
    assert_eq!(g.sim.read(r::rxdctl(0)), 0);
    g.sim.inject(&frame(0, 64));
    let mut out = [BufId(0); 4];
    assert_eq!(
        g.rx.receive(&mut c.pool, &mut out),
        0,
        "a reset queue receives nothing"
    );
    g.rx.release_all(&mut c.pool);
    assert_eq!(c.pool.free_count(), start);
}

#[test]
fn full_bring_up_then_traffic_and_statistics() {
    use super::igb;
    let no_sleep = |_: std::time::Duration| {};
    let mut g = rig("up", 512, 64, 64);
    let mac = igb::init(&g.sim, &no_sleep).unwrap();
    assert_eq!(mac, super::sim::DEFAULT_MAC);
    // The reset wiped the queues: program them again, as the driver would.
    g.rx.configure(&g.sim);
    g.tx.configure(&g.sim);
    igb::wait_queue_enabled(&g.sim, &no_sleep, 0, true).unwrap();
    igb::wait_queue_enabled(&g.sim, &no_sleep, 0, false).unwrap();
    let mut c = g.stack.lock();
    let start = c.pool.free_count();
    g.rx.refill_and_kick(&g.sim, &mut c.pool);
    for s in 0..10 {
        g.sim.inject(&frame(s, 100));
    }
    let mut out = [BufId(0); 16];
    let n = g.rx.receive(&mut c.pool, &mut out);
    assert_eq!(n, 10);
    let (taken, tail) = g.tx.transmit(&mut c.pool, &out[..n]);
    assert_eq!(taken, 10);
    g.tx.kick(&g.sim, tail.unwrap());
    assert_eq!(g.tx.reclaim(&mut c.pool), 10);
    let mut st = igb::Stats::default();
    st.update(&g.sim);
    assert_eq!((st.rx_frames, st.rx_bytes), (10, 1000));
    assert_eq!((st.tx_frames, st.tx_bytes), (10, 1000));
    st.update(&g.sim);
    assert_eq!(st.rx_frames, 10, "registers cleared on read: nothing added");
    g.rx.release_all(&mut c.pool);
    assert_eq!(c.pool.free_count(), start, "no buffer leaked");
}
