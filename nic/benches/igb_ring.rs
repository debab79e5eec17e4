//! The igb descriptor rings against the simulated 82576, per batch of 32
//! frames: receive (the device fills 32 posted buffers; the ring hands them
//! over, they go back to the pool, the ring refills with one tail write) and
//! transmit (32 frames queued with one tail write, the device sends them,
//! the ring reclaims). Criterion reports time per batch and frames/s; the
//! simulated device's own work (descriptor reads, IOVA lookups, copying a
//! received frame into its buffer) is inside the figure.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rbypass_nic::vfio::dma::{PKT_IOVA, RING_IOVA, RING_IOVA_STRIDE};
use rbypass_nic::vfio::igb_regs as r;
use rbypass_nic::vfio::ring::{Regs, RxRing, TxRing};
use rbypass_nic::vfio::sim::SimIgb;
use rbypass_stack::{BufId, IfaceConfig, Stack, StackConfig};

const BATCH: usize = 32;

/// Fields drop in order: the device before the memory it points into.
struct Rig {
    sim: SimIgb,
    rx: RxRing,
    tx: TxRing,
    stack: Stack,
}

fn rig(tag: &str) -> Rig {
    let path = std::path::PathBuf::from(format!(
        "/dev/shm/rbypass-benchigb{tag}{}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let mut stack = Stack::create_at(&path, "", &StackConfig::default(), IfaceConfig::loopback())
        .expect("stack");
    stack.set_remove_on_drop(true);
    let sim = SimIgb::new();
    let rx = RxRing::new(0, 256, RING_IOVA, PKT_IOVA).expect("rx ring");
    let tx = TxRing::new(0, 256, RING_IOVA + RING_IOVA_STRIDE, PKT_IOVA).expect("tx ring");
    {
        let c = stack.lock();
        let (p, len) = c.pool.data_region();
        // SAFETY: the pool outlives the device (field order); no reference
        // into a buffer is held across a register write.
        unsafe { sim.map_dma(p, PKT_IOVA, len) };
    }
    for d in [rx.desc_region(), tx.desc_region()] {
        // SAFETY: the rings outlive the device (field order).
        unsafe { sim.map_dma(d.vaddr, d.iova, d.len) };
    }
    rx.configure(&sim);
    tx.configure(&sim);
    sim.write(r::RCTL, r::rctl::EN);
    sim.write(r::TCTL, r::tctl::EN);
    sim.set_tx_record(false);
    Rig { sim, rx, tx, stack }
}

fn receive(c: &mut Criterion) {
    let mut g = c.benchmark_group("igb_ring");
    g.throughput(Throughput::Elements(BATCH as u64));
    for len in [64usize, 1514] {
        let mut rig = rig(&format!("rx{len}"));
        let mut core = rig.stack.lock();
        rig.rx.refill_and_kick(&rig.sim, &mut core.pool);
        let frame = vec![0x5au8; len];
        let mut out = [BufId(0); BATCH];
        g.bench_function(format!("rx_refill_receive_32x{len}B"), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    rig.sim.inject(&frame);
                }
                let n = rig.rx.receive(&mut core.pool, &mut out);
                for &buf in &out[..n] {
                    core.pool.put(buf);
                }
                rig.rx.refill_and_kick(&rig.sim, &mut core.pool);
                black_box(n)
            })
        });
        assert_eq!(rig.rx.stats.errors, 0);
        assert_eq!(rig.sim.dma_faults(), 0);
        rig.rx.release_all(&mut core.pool);
    }
    g.finish();
}

fn transmit(c: &mut Criterion) {
    let mut g = c.benchmark_group("igb_ring");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut rig = rig("tx");
    let mut core = rig.stack.lock();
    let mut bufs = [BufId(0); BATCH];
    g.bench_function("tx_transmit_reclaim_32x64B", |b| {
        b.iter(|| {
            for slot in bufs.iter_mut() {
                let buf = core.pool.alloc().expect("buffer");
                core.pool.meta_mut(buf).len = 64;
                *slot = buf;
            }
            let (n, tail) = rig.tx.transmit(&mut core.pool, &bufs);
            if let Some(t) = tail {
                rig.tx.kick(&rig.sim, t);
            }
            black_box((n, rig.tx.reclaim(&mut core.pool)))
        })
    });
    assert_eq!(rig.tx.in_flight(), 0);
    assert_eq!(rig.sim.dma_faults(), 0);
    g.finish();
}

criterion_group!(benches, receive, transmit);
criterion_main!(benches);
