// SPDX-License-Identifier: GPL-2.0

//! A replica on this host (policy wbp): a peer's volume's records, written into a replica slot
//! of this host's cache device in the on-flash format of the primary's own log (same serials,
//! the primary's uuid, `origin` = the primary's host id), so that a scan of this device finds
//! them as an offline replay would. Where each record goes is `pfcore::replica_log`: the log
//! never overwrites a record the replica's checkpoint does not cover; without room a write is
//! refused (`ENOSPC`), never dropped after an ack.
//!
//! A replica belongs to the one connection that attached it; its slot is claimed in the slot
//! registry (`cache::attach`) while it lives, so no second connection or forced attach can
//! take it.
//!
//! Records are written [`DEPTH`] at a time, each from its own [`WriteSlot`]; their answers go
//! out in the order the WRITEs came ([`Replica::take_write`], [`Replica::answer_head`]; the
//! order's rules are `pfcore::answer_order`'s).

use core::sync::atomic::Ordering;

use kernel::prelude::*;

use super::node::{bump, Node};
use crate::blk::bioset::BioSet;
use crate::blk::dir::Dir;
use crate::blk::io::{self, PageBuf, WriteSlot};
use crate::cache::attach::{self, Attached, Refusal, ReplicaWant};
use crate::cache::rebuild::read_checkpoint;
use crate::klib::crc32c;
use crate::pfcore::answer_order::{self, Taken};
use crate::pfcore::format::{self, Checkpoint, Found, RecordHeader, RECORD_DIRTY};
use crate::pfcore::rebuild::{self, SERIAL_LIMIT};
use crate::pfcore::replica_log::ReplicaLog;
use crate::pfcore::replication::checkpoint_applies;
use crate::pfcore::wire::{AttachOk, AttachRefuse, Msg, WriteHead, WRITE_FUA};

fn oom<E>(_: E) -> Refusal {
    ("out of memory for the replica", ENOMEM)
}

/// Records a replica writes at once; a WRITE beyond them waits for the oldest.
pub(crate) const DEPTH: usize = 16;

/// An open replica.
pub(crate) struct Replica {
    /// The records being written, one per slot (dropped first: `Drop` waits for them before
    /// the device and the bio set go).
    slots: KVec<Pin<KBox<WriteSlot>>>,
    /// The WRITEs taken and not answered, each at the index of its slot.
    taken: Taken<DEPTH>,
    att: Attached,
    /// Highest serial recorded per segment of the region (0: none).
    seg_max: KVVec<u64>,
    log: ReplicaLog,
    /// Seq of the newest checkpoint copy.
    checkpoint_seq: u64,
    /// A header block.
    block: KVec<u8>,
    bset: Pin<KBox<BioSet>>,
    /// The primary's ownership generation and replica-set epoch of the ATTACH: a CHECKPOINT of
    /// another is stale (`replication::checkpoint_applies`).
    gen: u64,
    epoch: u64,
}

impl Replica {
    /// Opens (or makes) the replica slot of `want` on the cache device numbered `dev`; an
    /// existing one is scanned so its log goes on after its newest record.
    pub(crate) fn open(dev: u32, want: &ReplicaWant<'_>, gen: u64) -> Result<Replica, Refusal> {
        let att = attach::attach_replica(dev, want)?;
        let bs = att.sb.block_size as usize;
        let n = usize::try_from(att.slot.segments).map_err(|_| ("the replica slot is damaged", EINVAL))?;
        let mut seg_max = KVVec::with_capacity(n, GFP_KERNEL).map_err(oom)?;
        for _ in 0..n {
            seg_max.push(0u64, GFP_KERNEL).map_err(oom)?;
        }
        let block = KVec::from_elem(0u8, bs, GFP_KERNEL).map_err(oom)?;
        // A replica is always replayed from what it holds: no copy readable is the floor.
        let (checkpoint, checkpoint_seq) = read_checkpoint(&att.dev, &att.sb, att.slot_index, &att.slot, true)?;
        let mut slots = KVec::with_capacity(DEPTH, GFP_KERNEL).map_err(oom)?;
        for _ in 0..DEPTH {
            // Room for a 4 KiB record; a larger one grows its slot when it comes.
            slots.push(KBox::pin_init(WriteSlot::new(bs + 4096), GFP_KERNEL).map_err(oom)?, GFP_KERNEL).map_err(oom)?;
        }
        let bset = KBox::pin_init(BioSet::new(), GFP_KERNEL).map_err(oom)?;
        let seg_sectors = u64::from(att.sb.segment_sectors);
        let mut r = Replica {
            log: ReplicaLog::full_at(att.slot.segments, seg_sectors, att.slot.segments.saturating_sub(1), checkpoint),
            att,
            seg_max,
            checkpoint_seq,
            slots,
            taken: Taken::new(),
            block,
            bset,
            gen,
            epoch: want.epoch,
        };
        if !r.att.created {
            let newest = r.scan()?;
            // Taken over from the volume's previous owner (`attach_replica`): what it holds is
            // on the SAN; the checkpoint moves past all of it, so a replay never brings it back.
            if !r.att.reclaimed.is_empty() {
                if let Some(serial) = newest {
                    r.set_checkpoint(serial).map_err(|e| ("cannot write the replica's checkpoint", e))?;
                }
            }
        }
        Ok(r)
    }

    /// Reads the region: the highest serial of each segment, and the log's head after the
    /// newest record. Returns the newest serial seen.
    fn scan(&mut self) -> Result<Option<u64>, Refusal> {
        let sb = &self.att.sb;
        let slot = &self.att.slot;
        let seg_bytes = sb.segment_sectors as usize * 512;
        let pages = PageBuf::new(seg_bytes).map_err(oom)?;
        let mut buf = KVVec::from_elem(0u8, seg_bytes, GFP_KERNEL).map_err(oom)?;
        let mut newest: Option<(u64, u64)> = None;
        let mut held = 0u64;
        for s in 0..slot.scan_segments() {
            let base = sb.segment_sector(slot.first_segment.checked_add(s).ok_or(("the replica slot is damaged", EINVAL))?);
            io::read_into(&self.att.dev, base, &pages, seg_bytes, &self.bset).map_err(|e| ("cannot read the replica's records", e))?;
            pages.read(0, &mut buf).map_err(|e| ("cannot read the replica's records", e))?;
            let mut max = 0u64;
            format::scan_segment(&buf, sb.block_size, crc32c, |_, found| {
                let h = match found {
                    Found::Valid(h) | Found::Torn(h) => h,
                };
                if h.uuid == slot.uuid && h.serial < SERIAL_LIMIT {
                    max = max.max(h.serial);
                    if h.serial > self.log.checkpoint {
                        held = held.saturating_add(1);
                    }
                }
            });
            if let Some(m) = usize::try_from(s).ok().and_then(|i| self.seg_max.get_mut(i)) {
                *m = max;
            }
            if max != 0 && newest.is_none_or(|(serial, _)| max > serial) {
                newest = Some((max, s));
            }
        }
        if let Some((_, s)) = newest {
            self.log = ReplicaLog::full_at(slot.segments, u64::from(sb.segment_sectors), s, self.log.checkpoint);
        }
        pr_info!(
            "replica of host {}'s volume (slot {}): {} records after checkpoint {}\n",
            slot.origin,
            self.att.slot_index,
            held,
            self.log.checkpoint
        );
        Ok(newest.map(|(serial, _)| serial))
    }

    /// The checkpoint the replica holds.
    pub(crate) fn checkpoint(&self) -> u64 {
        self.log.checkpoint
    }

    /// Bytes of records the replica can take now (its credit to the primary).
    pub(crate) fn credit(&self) -> u64 {
        self.log.free_sectors(&self.seg_max).saturating_mul(512)
    }

    /// Whether [`DEPTH`] WRITEs wait for their answers (the next waits for the oldest).
    pub(crate) fn full(&self) -> bool {
        self.taken.is_full()
    }

    /// How many WRITEs wait for their answers.
    pub(crate) fn pending(&self) -> usize {
        self.taken.len()
    }

    /// Whether the oldest WRITE waiting can be answered without waiting.
    pub(crate) fn head_finished(&self) -> bool {
        match self.taken.oldest() {
            None => false,
            Some((_, w)) if w.early.is_some() => true,
            Some((at, _)) => self.slots.get(at).is_some_and(|s| s.finished()),
        }
    }

    /// Takes one WRITE of the primary (`data`: its sectors): its record goes to this device
    /// (with FUA when the primary's write had it) and is answered by [`Replica::answer_head`],
    /// in order. A serial the checkpoint already covers is not written (it is on the SAN). With
    /// [`DEPTH`] WRITEs waiting, `EBUSY` (the caller answers the oldest first).
    pub(crate) fn take_write(&mut self, w: &WriteHead, data: &[u8]) -> Result {
        let at = self.taken.next_slot().ok_or(EBUSY)?;
        let early = match self.start_write(at, w, data) {
            Ok(true) => None,
            Ok(false) => Some(0),
            Err(e) => Some(e.to_errno()),
        };
        self.taken.push(answer_order::Write { serial: w.serial, bytes: data.len() as u64, early }).ok_or(EBUSY)?;
        Ok(())
    }

    /// Starts writing the record of `w` from slot `at`: `Ok(true)` when it was submitted,
    /// `Ok(false)` when the checkpoint covers it.
    fn start_write(&mut self, at: usize, w: &WriteHead, data: &[u8]) -> Result<bool> {
        let slot = &self.att.slot;
        let bs = self.att.sb.block_size as usize;
        if w.sectors == 0 || w.sectors > rebuild::MAX_RECORD_SECTORS || w.serial == 0 || w.serial >= SERIAL_LIMIT {
            return Err(EINVAL);
        }
        let len = w.sectors as usize * 512;
        if data.len() != len || len % bs != 0 {
            return Err(EINVAL);
        }
        if w.lba.checked_add(u64::from(w.sectors)).is_none_or(|end| end > slot.backing_sectors) {
            return Err(EINVAL);
        }
        if w.serial <= self.log.checkpoint {
            return Ok(false);
        }
        let footprint = RecordHeader::footprint(w.sectors, self.att.sb.block_size);
        let mut log = self.log;
        let Some((seg, off)) = log.place(&mut self.seg_max, footprint, w.serial) else {
            return Err(ENOSPC);
        };
        let mut h = RecordHeader {
            flags: RECORD_DIRTY,
            origin: slot.origin,
            len: w.sectors,
            uuid: slot.uuid,
            serial: w.serial,
            lba: w.lba,
            crc: 0,
        };
        h.crc = h.checksum([data], crc32c);
        h.encode(&mut self.block);
        let sector = self
            .att
            .sb
            .segment_sector(slot.first_segment.checked_add(seg).ok_or(EINVAL)?)
            .checked_add(off)
            .ok_or(EINVAL)?;
        let dir = if w.flags & WRITE_FUA != 0 { Dir::WriteFua } else { Dir::Write };
        let ws = self.slots.get_mut(at).ok_or(EINVAL)?;
        ws.as_mut().fill(&[&self.block, data])?;
        // The head moves even when the write fails: the place may hold part of a record, which
        // its checksum makes a torn one, never served.
        self.log = log;
        ws.as_mut().submit(&self.att.dev, sector, bs + len, dir, &self.bset)?;
        Ok(true)
    }

    /// Answers the oldest WRITE waiting (waiting for its record if needed): its serial, its
    /// bytes and whether its record is on this device.
    pub(crate) fn answer_head(&mut self) -> Option<(u64, u64, Result)> {
        let (at, w) = self.taken.pop()?;
        let r = match w.early {
            None => self.slots.get_mut(at)?.as_mut().wait(),
            Some(0) => Ok(()),
            Some(e) => Err(Error::from_errno(e)),
        };
        Some((w.serial, w.bytes, r))
    }

    /// Records epoch `epoch` of the primary's replica set in the slot (a replay uses a slot only
    /// at the epoch of the set in force).
    pub(crate) fn set_epoch(&mut self, epoch: u64) -> Result {
        if epoch == self.att.slot.epoch {
            self.epoch = epoch;
            return Ok(());
        }
        let mut slot = self.att.slot;
        slot.epoch = epoch;
        slot.generation = slot.generation.wrapping_add(1);
        self.block.fill(0);
        slot.encode(&mut self.block, crc32c);
        self.att.dev.write_sync(self.att.sb.slot_sector(self.att.slot_index), &self.block)?;
        self.att.slot = slot;
        self.epoch = epoch;
        Ok(())
    }

    /// Makes every acknowledged write of the replica stable.
    pub(crate) fn flush(&self) -> Result {
        io::flush(&self.att.dev)
    }

    /// Persists the primary's checkpoint at `serial` in the replica slot (both copies in turn,
    /// like the primary's); the records it covers may then be overwritten. An older one is a
    /// no-op.
    pub(crate) fn set_checkpoint(&mut self, serial: u64) -> Result {
        if serial >= SERIAL_LIMIT {
            return Err(EINVAL);
        }
        if serial <= self.log.checkpoint {
            return Ok(());
        }
        let seq = self.checkpoint_seq.wrapping_add(1);
        let cp = Checkpoint { uuid: self.att.slot.uuid, serial, seq };
        self.block.fill(0);
        cp.encode(&mut self.block, crc32c);
        self.att
            .dev
            .write_sync(self.att.sb.checkpoint_sector(self.att.slot_index, Checkpoint::copy_for(seq)), &self.block)?;
        self.checkpoint_seq = seq;
        self.log.checkpoint = serial;
        Ok(())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // Every record in flight ends before the device and the bio set it uses are released.
        for ws in self.slots.iter_mut() {
            let _ = ws.as_mut().wait();
        }
    }
}

/// What a data connection does with a replica message.
pub(crate) enum Reply {
    /// Send this answer, after the answers of every WRITE taken before.
    Send(Msg<'static>),
    /// A WRITE was taken: [`written`] answers it when its record is on this device.
    Taken,
}

/// The answer of a data connection to a replica message from host `peer` (`replica`: what the
/// connection has open); `None` for a message that is not one. `Err`: the connection must end
/// (a checkpoint that cannot be persisted: the primary must not count on it). A WRITE is taken
/// only when the replica is not [`Replica::full`]; the caller answers the oldest first.
pub(crate) fn answer(node: &Node, peer: u32, replica: &mut Option<Replica>, m: &Msg<'_>) -> Option<Result<Reply>> {
    let reply = match m {
        Msg::Attach(a) => Ok(attach(node, peer, replica, a)),
        Msg::Write(w, data) => match replica.as_mut() {
            None => Ok(Msg::WriteNack { serial: w.serial, errno: ENXIO.to_errno() }),
            Some(r) => return Some(r.take_write(w, data).map(|()| Reply::Taken)),
        },
        Msg::Flush { id } => Ok(Msg::FlushAck {
            id: *id,
            errno: match replica.as_ref().map(Replica::flush) {
                None => ENXIO.to_errno(),
                Some(Ok(())) => 0,
                Some(Err(e)) => e.to_errno(),
            },
        }),
        Msg::Checkpoint { gen, epoch, serial } => match replica.as_mut() {
            None => Err(ENXIO),
            // A stale primary's checkpoint (another ownership or set) is neither persisted nor
            // acknowledged: its connection ends.
            Some(r) if !checkpoint_applies(*gen, *epoch, r.gen, r.epoch) => Err(ESTALE),
            Some(r) => r.set_checkpoint(*serial).map(|()| {
                bump(&node.counters.replica_checkpoints);
                Msg::CheckpointAck { gen: *gen, epoch: *epoch, serial: *serial }
            }),
        },
        _ => return None,
    };
    Some(reply.map(Reply::Send))
}

/// The answer to the oldest WRITE `replica` took (waiting for its record if needed).
pub(crate) fn written(node: &Node, r: &mut Replica) -> Option<Msg<'static>> {
    let (serial, bytes, result) = r.answer_head()?;
    Some(match result {
        Ok(()) => {
            bump(&node.counters.replica_writes);
            node.counters.replica_bytes.fetch_add(bytes, Ordering::Relaxed);
            Msg::WriteAck { serial, credit: r.credit() }
        }
        Err(e) => {
            bump(&node.counters.replica_nacks);
            Msg::WriteNack { serial, errno: e.to_errno() }
        }
    })
}

/// ATTACH: the replica opened (or made) on the replica cache device, for its primary only.
fn attach(node: &Node, peer: u32, replica: &mut Option<Replica>, a: &crate::pfcore::wire::Attach) -> Msg<'static> {
    let refuse = |why: &str, e: Error| {
        bump(&node.counters.replicas_refused);
        pr_warn!("peer {}: replica refused: {}\n", peer, why);
        Msg::AttachRefuse(AttachRefuse { uuid: a.uuid, errno: e.to_errno() })
    };
    // The records' origin is the authenticated host, never what the message claims.
    if a.owner != peer {
        return refuse("the ATTACH names another host as the primary", EPERM);
    }
    let Ok(origin) = u16::try_from(peer) else {
        return refuse("host ids of replicas' primaries are at most 65535", EINVAL);
    };
    if let Some(r) = replica.as_mut() {
        // The same replica again at a newer epoch: the primary's set changed (a member left);
        // the slot records the epoch it now serves.
        if r.att.slot.uuid != a.uuid || r.gen != a.gen || a.epoch < r.epoch {
            return refuse("this connection has another replica open already", EBUSY);
        }
        if let Err(e) = r.set_epoch(a.epoch) {
            return refuse("cannot record the replica set's epoch", e);
        }
        return Msg::AttachOk(AttachOk {
            uuid: a.uuid,
            gen: a.gen,
            contiguous: r.checkpoint(),
            checkpoint: r.checkpoint(),
            credit: r.credit(),
        });
    }
    let Some(dev) = node.replica_cache.lock().as_ref().map(|&(dev, _)| dev) else {
        return refuse("this host holds no replicas (replica_cache is not set)", ENODEV);
    };
    let want = ReplicaWant {
        origin,
        uuid: a.uuid,
        name: format::unpad(&a.name),
        sectors: a.sectors,
        block_size: a.block_size,
        epoch: a.epoch,
        region_bytes: a.region_bytes,
    };
    match Replica::open(dev, &want, a.gen) {
        Ok(r) => {
            bump(&node.counters.replicas_attached);
            pr_info!(
                "peer {}: replica open in slot {} ({}; checkpoint {}, credit {} KiB)\n",
                peer,
                r.att.slot_index,
                if r.att.created { "new" } else { "found" },
                r.checkpoint(),
                r.credit() / 1024
            );
            let ok = Msg::AttachOk(AttachOk {
                uuid: a.uuid,
                gen: a.gen,
                // Everything after the checkpoint is sent again after an attach.
                contiguous: r.checkpoint(),
                checkpoint: r.checkpoint(),
                credit: r.credit(),
            });
            *replica = Some(r);
            ok
        }
        Err((why, e)) => refuse(why, e),
    }
}
