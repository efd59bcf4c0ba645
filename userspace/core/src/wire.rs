//! The peer wire protocol, version 2 (Documentation/wire-protocol.md): how two peerflash hosts
//! frame the messages of write-back with peers (wbp) on a TCP connection.
//!
//! A frame is a 32-byte header, a payload of the header's length and a 16-byte tag. All integers
//! are little-endian. The header is checked on its own (magic, version, command, flags, reserved
//! bytes, and the payload length against the command's) before a byte of the payload is read, so
//! a receiver never sizes a buffer from an unchecked length. After the handshake
//! (`handshake.rs`) the tag is a MAC (ChaCha20-Poly1305, `frame_mac.rs`) over the header (which
//! carries the per-direction sequence number) and the payload, with the direction and sequence
//! number as its nonce; the receiver checks the sequence and the tag before it decodes or acts on
//! the payload (`session.rs`).
//!
//! Decoding never panics on any input: the fuzz target `wire` and `tests/wire.rs` check this.

use super::format::{put, Le};
use super::geometry::SECTOR_SIZE;

/// Protocol version written by this code. Version 2 tags frames with ChaCha20-Poly1305 where
/// version 1 used HMAC-SHA256.
pub const VERSION: u8 = 2;
/// The lowest version this code speaks (a version 1 peer's frame tags would not verify).
pub const MIN_VERSION: u8 = 2;
/// First bytes of every frame.
pub const MAGIC: [u8; 4] = *b"PFNW";
/// Bytes of a frame header.
pub const HEADER_BYTES: usize = 32;
/// Bytes of a frame's tag.
pub const TAG_BYTES: usize = 16;
/// Bytes of the fixed part of a WRITE payload (serial, lba, sectors, flags); the data follows.
pub const WRITE_FIXED_BYTES: usize = 24;
/// Most sectors one WRITE carries (1 MiB); the primary splits a larger write.
pub const MAX_WRITE_SECTORS: u32 = 2048;
/// Bytes of a volume name field.
pub const NAME_BYTES: usize = 32;
/// Bytes of a handshake nonce.
pub const NONCE_BYTES: usize = 32;
/// Feature bits this code knows (none yet: version 2 has no optional parts).
pub const FEATURES_KNOWN: u64 = 0;
/// WRITE flag: the peer writes the record with FUA.
pub const WRITE_FUA: u32 = 1;
/// Every WRITE flag this version defines.
pub const WRITE_FLAGS: u32 = WRITE_FUA;

/// Which of a host pair's two connections a frame travels on: bulk data on one, acks, pings,
/// flushes and checkpoints on the other, so an ack never waits behind another host's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// WRITE messages.
    Data,
    /// Everything else after the handshake.
    Control,
}

impl Role {
    /// The code in HELLO and in the handshake transcript.
    pub fn code(self) -> u8 {
        match self {
            Role::Data => 1,
            Role::Control => 2,
        }
    }

    /// The role of a code of [`Role::code`].
    pub fn from_code(c: u8) -> Option<Role> {
        match c {
            1 => Some(Role::Data),
            2 => Some(Role::Control),
            _ => None,
        }
    }
}

/// Direction of a frame on a connection: from the host that dialed, or to it. It is part of
/// every MAC, so a frame sent back to its sender (a reflection) never verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the dialing host (client) to the listening host (server).
    ToServer,
    /// From the listening host to the dialing host.
    ToClient,
}

impl Dir {
    /// The byte that starts the MAC input.
    pub fn code(self) -> u8 {
        match self {
            Dir::ToServer => 0x43, // 'C': written by the client
            Dir::ToClient => 0x53, // 'S': written by the server
        }
    }
}

/// Message kinds, the header's command byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// Handshake, client: who it is, what it speaks, its nonce.
    Hello,
    /// Handshake, server: the version chosen, its nonce and its proof of the secret.
    Welcome,
    /// Handshake, client: its proof of the secret.
    Auth,
    /// Open a replica of a volume on the peer.
    Attach,
    /// The replica is open: where it stands.
    AttachOk,
    /// The replica cannot be opened.
    AttachRefuse,
    /// A write record for a replica.
    Write,
    /// A write is on the peer's flash.
    WriteAck,
    /// A write failed on the peer.
    WriteNack,
    /// Flush the peer's cache device.
    Flush,
    /// The flush is done (or failed).
    FlushAck,
    /// The primary's destager persisted a checkpoint.
    Checkpoint,
    /// The peer persisted the checkpoint in the replica slot.
    CheckpointAck,
    /// Liveness probe.
    Ping,
    /// Answer to a probe.
    PingAck,
    /// A clean end of the replica: the peer may free its slot.
    Detach,
}

impl Cmd {
    /// Every command, in code order.
    pub const ALL: [Cmd; 16] = [
        Cmd::Hello,
        Cmd::Welcome,
        Cmd::Auth,
        Cmd::Attach,
        Cmd::AttachOk,
        Cmd::AttachRefuse,
        Cmd::Write,
        Cmd::WriteAck,
        Cmd::WriteNack,
        Cmd::Flush,
        Cmd::FlushAck,
        Cmd::Checkpoint,
        Cmd::CheckpointAck,
        Cmd::Ping,
        Cmd::PingAck,
        Cmd::Detach,
    ];

    /// The command byte.
    pub fn code(self) -> u8 {
        match self {
            Cmd::Hello => 1,
            Cmd::Welcome => 2,
            Cmd::Auth => 3,
            Cmd::Attach => 16,
            Cmd::AttachOk => 17,
            Cmd::AttachRefuse => 18,
            Cmd::Write => 32,
            Cmd::WriteAck => 33,
            Cmd::WriteNack => 34,
            Cmd::Flush => 35,
            Cmd::FlushAck => 36,
            Cmd::Checkpoint => 48,
            Cmd::CheckpointAck => 49,
            Cmd::Ping => 64,
            Cmd::PingAck => 65,
            Cmd::Detach => 80,
        }
    }

    /// The command of a byte of [`Cmd::code`].
    pub fn from_code(c: u8) -> Option<Cmd> {
        Self::ALL.into_iter().find(|m| m.code() == c)
    }

    /// Its name in logs and counters.
    pub fn name(self) -> &'static str {
        match self {
            Cmd::Hello => "hello",
            Cmd::Welcome => "welcome",
            Cmd::Auth => "auth",
            Cmd::Attach => "attach",
            Cmd::AttachOk => "attach_ok",
            Cmd::AttachRefuse => "attach_refuse",
            Cmd::Write => "write",
            Cmd::WriteAck => "write_ack",
            Cmd::WriteNack => "write_nack",
            Cmd::Flush => "flush",
            Cmd::FlushAck => "flush_ack",
            Cmd::Checkpoint => "checkpoint",
            Cmd::CheckpointAck => "checkpoint_ack",
            Cmd::Ping => "ping",
            Cmd::PingAck => "ping_ack",
            Cmd::Detach => "detach",
        }
    }

    /// The payload length of a command with a fixed one (`None`: WRITE, whose length is the fixed
    /// part plus its data).
    pub fn fixed_len(self) -> Option<usize> {
        Some(match self {
            Cmd::Hello => 4 + 8 + 16 + 4 + 4 + NONCE_BYTES,
            Cmd::Welcome => 4 + 8 + NONCE_BYTES + 32,
            Cmd::Auth => 32,
            Cmd::Attach => 16 + 4 + 4 + 8 + 8 + 8 + NAME_BYTES + 8,
            Cmd::AttachOk => 16 + 8 + 8 + 8 + 8,
            Cmd::AttachRefuse => 16 + 4 + 4,
            Cmd::Write => return None,
            Cmd::WriteAck => 8 + 8,
            Cmd::WriteNack => 8 + 4 + 4,
            Cmd::Flush | Cmd::Ping | Cmd::PingAck => 8,
            Cmd::FlushAck => 8 + 4 + 4,
            Cmd::Checkpoint | Cmd::CheckpointAck => 8 + 8 + 8,
            Cmd::Detach => 16 + 8,
        })
    }

    /// Whether the command belongs to the handshake (its frames carry a zero tag).
    pub fn is_handshake(self) -> bool {
        matches!(self, Cmd::Hello | Cmd::Welcome | Cmd::Auth)
    }

    /// The connection it travels on after the handshake.
    pub fn role(self) -> Role {
        if matches!(self, Cmd::Write) {
            Role::Data
        } else {
            Role::Control
        }
    }
}

/// Why a frame was refused. Any of them ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than the item.
    Short,
    /// The first bytes are not [`MAGIC`].
    BadMagic,
    /// A version this code does not speak.
    BadVersion(u8),
    /// An unknown command byte.
    BadCmd(u8),
    /// Flag bits or reserved bytes that this version leaves zero are set.
    Reserved,
    /// The payload length does not fit the command.
    BadLength,
    /// The sequence number is not the next one expected (a replay, a drop or a reorder).
    BadSequence,
    /// The tag does not verify (a flipped bit, an injected or reflected frame, a wrong key).
    BadTag,
    /// The fields contradict each other.
    Inconsistent(&'static str),
}

impl WireError {
    /// A message for humans (logged; never contains payload bytes).
    pub fn describe(&self) -> &'static str {
        match self {
            WireError::Short => "a short frame",
            WireError::BadMagic => "not a peerflash frame",
            WireError::BadVersion(_) => "an unsupported protocol version",
            WireError::BadCmd(_) => "an unknown command",
            WireError::Reserved => "reserved bits set",
            WireError::BadLength => "a payload length that does not fit the command",
            WireError::BadSequence => "an out-of-sequence frame (replayed, dropped or reordered)",
            WireError::BadTag => "a frame whose tag does not verify",
            WireError::Inconsistent(why) => why,
        }
    }
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message kind.
    pub cmd: Cmd,
    /// Bytes of payload after the header.
    pub len: u32,
    /// The replica the message is about: the primary's index, set by ATTACH (0 for messages
    /// about the connection).
    pub volume: u32,
    /// Per-direction sequence number: 0 in the handshake, then 1, 2, ... in each direction.
    pub seq: u64,
}

impl Header {
    /// Encodes into the first [`HEADER_BYTES`] of `buf`.
    pub fn encode(&self, buf: &mut [u8]) {
        if let Some(b) = buf.get_mut(..HEADER_BYTES) {
            b.fill(0);
        }
        put(buf, 0, &MAGIC);
        put(buf, 4, &[VERSION, self.cmd.code()]);
        put(buf, 8, &self.len.to_le_bytes());
        put(buf, 12, &self.volume.to_le_bytes());
        put(buf, 16, &self.seq.to_le_bytes());
    }

    /// The encoded header.
    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        self.encode(&mut b);
        b
    }

    /// Decodes and checks a header: after this, `len` is the exact length the command allows.
    pub fn decode(buf: &[u8]) -> Result<Header, WireError> {
        if buf.len() < HEADER_BYTES {
            return Err(WireError::Short);
        }
        let r = Le(buf);
        if r.bytes::<4>(0) != MAGIC {
            return Err(WireError::BadMagic);
        }
        let version = r.u8(4);
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(WireError::BadVersion(version));
        }
        let code = r.u8(5);
        let cmd = Cmd::from_code(code).ok_or(WireError::BadCmd(code))?;
        if r.u16(6) != 0 || r.u64(24) != 0 {
            return Err(WireError::Reserved);
        }
        let len = r.u32(8);
        if !payload_len_ok(cmd, len) {
            return Err(WireError::BadLength);
        }
        Ok(Header { cmd, len, volume: r.u32(12), seq: r.u64(16) })
    }
}

/// Whether `len` is a payload length `cmd` can have.
pub fn payload_len_ok(cmd: Cmd, len: u32) -> bool {
    let len = len as usize;
    match cmd.fixed_len() {
        Some(n) => len == n,
        None => {
            let data = len.checked_sub(WRITE_FIXED_BYTES);
            data.is_some_and(|d| {
                let d = d as u64;
                d > 0 && d.is_multiple_of(SECTOR_SIZE) && d / SECTOR_SIZE <= u64::from(MAX_WRITE_SECTORS)
            })
        }
    }
}

/// The most payload bytes any frame carries (a receiver's buffer bound).
pub const MAX_PAYLOAD: usize = WRITE_FIXED_BYTES + MAX_WRITE_SECTORS as usize * SECTOR_SIZE as usize;

/// Handshake, client to server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The connection's role.
    pub role: Role,
    /// Lowest and highest protocol versions the client speaks.
    pub min_version: u8,
    /// See `min_version`.
    pub max_version: u8,
    /// Feature bits the client offers.
    pub features: u64,
    /// The cluster's id (from the configuration): a host of another cluster is refused at once.
    pub cluster: [u8; 16],
    /// The client's host id.
    pub from: u32,
    /// The host id the client means to reach.
    pub to: u32,
    /// Fresh random bytes.
    pub nonce: [u8; NONCE_BYTES],
}

/// Handshake, server to client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// The version both speak (the highest in common).
    pub version: u8,
    /// Feature bits both speak.
    pub features: u64,
    /// Fresh random bytes.
    pub nonce: [u8; NONCE_BYTES],
    /// The server's proof: `handshake::server_proof` over the transcript.
    pub proof: [u8; 32],
}

/// Open a replica (primary to peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attach {
    /// The volume's uuid: with `owner`, what finds the replica slot (never the name).
    pub uuid: [u8; 16],
    /// The primary's host id (the records' origin).
    pub owner: u32,
    /// The primary's logical block size of its cache records (512 or 4096).
    pub block_size: u32,
    /// The lock record's generation of the primary's ownership.
    pub gen: u64,
    /// The replica set's epoch the primary runs with.
    pub epoch: u64,
    /// Bytes the primary's own share of flash holds (the replica's size is at least this).
    pub region_bytes: u64,
    /// The volume's name, NUL-padded (informational).
    pub name: [u8; NAME_BYTES],
    /// The volume's size in sectors (records past it are not the volume's).
    pub sectors: u64,
}

/// The replica is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachOk {
    /// The volume's uuid, echoed.
    pub uuid: [u8; 16],
    /// The generation, echoed.
    pub gen: u64,
    /// The highest serial up to which the replica holds every record (0: none).
    pub contiguous: u64,
    /// The checkpoint the replica slot holds.
    pub checkpoint: u64,
    /// Bytes of records the primary may have unacknowledged at the peer.
    pub credit: u64,
}

/// The replica cannot be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachRefuse {
    /// The volume's uuid, echoed.
    pub uuid: [u8; 16],
    /// A negative errno (e.g. -ENOSPC: no room for the replica).
    pub errno: i32,
}

/// The fixed part of a write record; its data follows in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteHead {
    /// The primary's serial of the record (the replica keeps it).
    pub serial: u64,
    /// First sector.
    pub lba: u64,
    /// Sectors of data.
    pub sectors: u32,
    /// [`WRITE_FUA`] or 0.
    pub flags: u32,
}

/// A decoded message. A WRITE borrows its data from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg<'a> {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// The client's proof.
    Auth([u8; 32]),
    /// See [`Attach`].
    Attach(Attach),
    /// See [`AttachOk`].
    AttachOk(AttachOk),
    /// See [`AttachRefuse`].
    AttachRefuse(AttachRefuse),
    /// A record and its data.
    Write(WriteHead, &'a [u8]),
    /// The write of `serial` is on the peer's flash; `credit` is the peer's credit now.
    WriteAck { serial: u64, credit: u64 },
    /// The write of `serial` failed on the peer with a negative errno.
    WriteNack { serial: u64, errno: i32 },
    /// Flush request `id`.
    Flush { id: u64 },
    /// Flush `id` done (errno 0) or failed (negative errno).
    FlushAck { id: u64, errno: i32 },
    /// A checkpoint of (`gen`, `epoch`) at `serial`.
    Checkpoint { gen: u64, epoch: u64, serial: u64 },
    /// The checkpoint is persisted in the replica slot.
    CheckpointAck { gen: u64, epoch: u64, serial: u64 },
    /// A probe with the sender's clock.
    Ping { stamp: u64 },
    /// The probe's stamp, echoed.
    PingAck { stamp: u64 },
    /// The replica of `uuid` at `gen` ends cleanly.
    Detach { uuid: [u8; 16], gen: u64 },
}

impl Msg<'_> {
    /// Its command.
    pub fn cmd(&self) -> Cmd {
        match self {
            Msg::Hello(_) => Cmd::Hello,
            Msg::Welcome(_) => Cmd::Welcome,
            Msg::Auth(_) => Cmd::Auth,
            Msg::Attach(_) => Cmd::Attach,
            Msg::AttachOk(_) => Cmd::AttachOk,
            Msg::AttachRefuse(_) => Cmd::AttachRefuse,
            Msg::Write(..) => Cmd::Write,
            Msg::WriteAck { .. } => Cmd::WriteAck,
            Msg::WriteNack { .. } => Cmd::WriteNack,
            Msg::Flush { .. } => Cmd::Flush,
            Msg::FlushAck { .. } => Cmd::FlushAck,
            Msg::Checkpoint { .. } => Cmd::Checkpoint,
            Msg::CheckpointAck { .. } => Cmd::CheckpointAck,
            Msg::Ping { .. } => Cmd::Ping,
            Msg::PingAck { .. } => Cmd::PingAck,
            Msg::Detach { .. } => Cmd::Detach,
        }
    }

    /// Bytes of its payload.
    pub fn payload_len(&self) -> usize {
        match self {
            Msg::Write(_, data) => WRITE_FIXED_BYTES + data.len(),
            m => m.cmd().fixed_len().unwrap_or(0),
        }
    }

    /// Encodes the payload into `buf`, except a WRITE's data, which the sender sends from its own
    /// pages after the fixed part; returns the bytes written (`None`: `buf` is too short).
    pub fn encode_payload(&self, buf: &mut [u8]) -> Option<usize> {
        let n = match self {
            Msg::Write(..) => WRITE_FIXED_BYTES,
            m => m.payload_len(),
        };
        let b = buf.get_mut(..n)?;
        b.fill(0);
        match *self {
            Msg::Hello(h) => {
                put(b, 0, &[h.role.code(), h.min_version, h.max_version, 0]);
                put(b, 4, &h.features.to_le_bytes());
                put(b, 12, &h.cluster);
                put(b, 28, &h.from.to_le_bytes());
                put(b, 32, &h.to.to_le_bytes());
                put(b, 36, &h.nonce);
            }
            Msg::Welcome(w) => {
                put(b, 0, &[w.version]);
                put(b, 4, &w.features.to_le_bytes());
                put(b, 12, &w.nonce);
                put(b, 44, &w.proof);
            }
            Msg::Auth(proof) => put(b, 0, &proof),
            Msg::Attach(a) => {
                put(b, 0, &a.uuid);
                put(b, 16, &a.owner.to_le_bytes());
                put(b, 20, &a.block_size.to_le_bytes());
                put(b, 24, &a.gen.to_le_bytes());
                put(b, 32, &a.epoch.to_le_bytes());
                put(b, 40, &a.region_bytes.to_le_bytes());
                put(b, 48, &a.name);
                put(b, 80, &a.sectors.to_le_bytes());
            }
            Msg::AttachOk(a) => {
                put(b, 0, &a.uuid);
                put(b, 16, &a.gen.to_le_bytes());
                put(b, 24, &a.contiguous.to_le_bytes());
                put(b, 32, &a.checkpoint.to_le_bytes());
                put(b, 40, &a.credit.to_le_bytes());
            }
            Msg::AttachRefuse(a) => {
                put(b, 0, &a.uuid);
                put(b, 16, &a.errno.to_le_bytes());
            }
            Msg::Write(w, _) => {
                put(b, 0, &w.serial.to_le_bytes());
                put(b, 8, &w.lba.to_le_bytes());
                put(b, 16, &w.sectors.to_le_bytes());
                put(b, 20, &w.flags.to_le_bytes());
            }
            Msg::WriteAck { serial, credit } => {
                put(b, 0, &serial.to_le_bytes());
                put(b, 8, &credit.to_le_bytes());
            }
            Msg::WriteNack { serial: id, errno } | Msg::FlushAck { id, errno } => {
                put(b, 0, &id.to_le_bytes());
                put(b, 8, &errno.to_le_bytes());
            }
            Msg::Flush { id: v } | Msg::Ping { stamp: v } | Msg::PingAck { stamp: v } => {
                put(b, 0, &v.to_le_bytes())
            }
            Msg::Checkpoint { gen, epoch, serial } | Msg::CheckpointAck { gen, epoch, serial } => {
                put(b, 0, &gen.to_le_bytes());
                put(b, 8, &epoch.to_le_bytes());
                put(b, 16, &serial.to_le_bytes());
            }
            Msg::Detach { uuid, gen } => {
                put(b, 0, &uuid);
                put(b, 16, &gen.to_le_bytes());
            }
        }
        Some(n)
    }
}

/// Decodes the payload of a frame whose header [`Header::decode`] accepted. Every field is
/// checked: unknown codes, reserved bytes and contradictions are refused.
pub fn decode<'a>(h: &Header, payload: &'a [u8]) -> Result<Msg<'a>, WireError> {
    if payload.len() != h.len as usize || !payload_len_ok(h.cmd, h.len) {
        return Err(WireError::BadLength);
    }
    let r = Le(payload);
    let zero = |from: usize, to: usize| payload.get(from..to).is_some_and(|b| b.iter().all(|&x| x == 0));
    let errno = |at: usize| -> Result<i32, WireError> {
        let e = r.u32(at) as i32;
        if zero(at + 4, at + 8) && (-4095..=0).contains(&e) {
            Ok(e)
        } else {
            Err(WireError::Inconsistent("an errno out of range"))
        }
    };
    Ok(match h.cmd {
        Cmd::Hello => {
            let role = Role::from_code(r.u8(0)).ok_or(WireError::Inconsistent("an unknown connection role"))?;
            let (min_version, max_version) = (r.u8(1), r.u8(2));
            if min_version == 0 || min_version > max_version {
                return Err(WireError::Inconsistent("an empty version range"));
            }
            if !zero(3, 4) {
                return Err(WireError::Reserved);
            }
            Msg::Hello(Hello {
                role,
                min_version,
                max_version,
                features: r.u64(4),
                cluster: r.bytes(12),
                from: r.u32(28),
                to: r.u32(32),
                nonce: r.bytes(36),
            })
        }
        Cmd::Welcome => {
            if !zero(1, 4) {
                return Err(WireError::Reserved);
            }
            Msg::Welcome(Welcome { version: r.u8(0), features: r.u64(4), nonce: r.bytes(12), proof: r.bytes(44) })
        }
        Cmd::Auth => Msg::Auth(r.bytes(0)),
        Cmd::Attach => {
            let block_size = r.u32(20);
            if block_size != 512 && block_size != 4096 {
                return Err(WireError::Inconsistent("a block size other than 512 or 4096"));
            }
            Msg::Attach(Attach {
                uuid: r.bytes(0),
                owner: r.u32(16),
                block_size,
                gen: r.u64(24),
                epoch: r.u64(32),
                region_bytes: r.u64(40),
                name: r.bytes(48),
                sectors: r.u64(80),
            })
        }
        Cmd::AttachOk => Msg::AttachOk(AttachOk {
            uuid: r.bytes(0),
            gen: r.u64(16),
            contiguous: r.u64(24),
            checkpoint: r.u64(32),
            credit: r.u64(40),
        }),
        Cmd::AttachRefuse => {
            let e = errno(16)?;
            if e == 0 {
                return Err(WireError::Inconsistent("a refusal without a reason"));
            }
            Msg::AttachRefuse(AttachRefuse { uuid: r.bytes(0), errno: e })
        }
        Cmd::Write => {
            let w = WriteHead { serial: r.u64(0), lba: r.u64(8), sectors: r.u32(16), flags: r.u32(20) };
            let data = payload.get(WRITE_FIXED_BYTES..).ok_or(WireError::Short)?;
            if w.flags & !WRITE_FLAGS != 0 {
                return Err(WireError::Reserved);
            }
            if w.serial == 0 {
                return Err(WireError::Inconsistent("a write without a serial"));
            }
            if u64::from(w.sectors) * SECTOR_SIZE != data.len() as u64 {
                return Err(WireError::Inconsistent("a write whose sector count is not its data"));
            }
            if w.lba.checked_add(u64::from(w.sectors)).is_none() {
                return Err(WireError::Inconsistent("a write past the last sector"));
            }
            Msg::Write(w, data)
        }
        Cmd::WriteAck => Msg::WriteAck { serial: r.u64(0), credit: r.u64(8) },
        Cmd::WriteNack => {
            let e = errno(8)?;
            if e == 0 {
                return Err(WireError::Inconsistent("a nack without an errno"));
            }
            Msg::WriteNack { serial: r.u64(0), errno: e }
        }
        Cmd::Flush => Msg::Flush { id: r.u64(0) },
        Cmd::FlushAck => Msg::FlushAck { id: r.u64(0), errno: errno(8)? },
        Cmd::Checkpoint => Msg::Checkpoint { gen: r.u64(0), epoch: r.u64(8), serial: r.u64(16) },
        Cmd::CheckpointAck => Msg::CheckpointAck { gen: r.u64(0), epoch: r.u64(8), serial: r.u64(16) },
        Cmd::Ping => Msg::Ping { stamp: r.u64(0) },
        Cmd::PingAck => Msg::PingAck { stamp: r.u64(0) },
        Cmd::Detach => Msg::Detach { uuid: r.bytes(0), gen: r.u64(16) },
    })
}
