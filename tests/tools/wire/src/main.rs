//! pf-wire: a userspace peer of the peerflash wire protocol (Documentation/wire-protocol.md),
//! built on the same codec and handshake as the module (`peerflash_core::wire`, `handshake`),
//! with HMAC-SHA256 from the `hmac`/`sha2` crates. It talks to the module's listener or
//! answers its dials, and mounts the attacks the wbp authentication must refuse. Each command
//! prints one line saying what happened and exits 0 when that is what was asked for.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use peerflash_core::handshake::{self, parse_cluster_id, parse_secret, Identity};
use peerflash_core::mac::{ChaChaPoly, HmacSha256};
use peerflash_core::session::*;
use peerflash_core::wire::*;

#[derive(Parser)]
#[command(about = "A userspace peer of the peerflash wire protocol, for tests")]
struct Cli {
    /// This tool's host id.
    #[arg(long)]
    me: u32,
    /// Cluster id (32 hex digits).
    #[arg(long)]
    cluster: String,
    /// File holding the cluster secret (64 hex digits).
    #[arg(long)]
    secret_file: String,
    #[command(subcommand)]
    cmd: Action,
}

/// The listener a command talks to.
#[derive(clap::Args)]
struct Target {
    /// The listener, A.B.C.D:PORT.
    #[arg(long)]
    to: SocketAddrV4,
    /// The listener's host id.
    #[arg(long)]
    server: u32,
    /// Source address to connect from.
    #[arg(long)]
    from: Option<Ipv4Addr>,
}

#[derive(Subcommand)]
enum Action {
    /// Dial the module's listener, authenticate and time pings.
    Ping {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10)]
        count: u64,
    },
    /// Mount one attack on the listener; succeeds when the listener refused it.
    Attack {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum)]
        kind: Attack,
        /// Connections (junk) to make.
        #[arg(long, default_value_t = 1)]
        count: u64,
    },
    /// Act as a primary on a data connection: ATTACH a replica of volume `uuid`, send `count`
    /// writes of `sectors` sectors (serials from `first`, data a pattern of the serial), FLUSH,
    /// and a CHECKPOINT when asked. With `flip`, the last write goes out with one data byte
    /// flipped after sealing: it succeeds when the peer cuts the connection without an ack.
    Replicate {
        #[command(flatten)]
        target: Target,
        /// Volume uuid, 32 hex digits.
        #[arg(long)]
        uuid: String,
        /// Volume size in sectors.
        #[arg(long, default_value_t = 1 << 21)]
        volume_sectors: u64,
        /// Bytes the replica region should hold.
        #[arg(long, default_value_t = 8 << 20)]
        region_bytes: u64,
        #[arg(long, default_value_t = 16)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        first: u64,
        #[arg(long, default_value_t = 8)]
        sectors: u32,
        #[arg(long)]
        checkpoint: Option<u64>,
        /// Send the checkpoint with this epoch (the attach's is 1): another one is stale, and it
        /// succeeds when the peer ends the connection without persisting or acknowledging it.
        #[arg(long, default_value_t = 1)]
        checkpoint_epoch: u64,
        #[arg(long)]
        flip: bool,
    },
    /// Listen as a peer: answer handshakes and pings until `connections` connections ended.
    Serve {
        #[arg(long)]
        listen: SocketAddrV4,
        /// The host id expected to dial, and the address it dials from.
        #[arg(long)]
        client: u32,
        #[arg(long)]
        client_addr: Ipv4Addr,
        #[arg(long, default_value_t = 1)]
        connections: u64,
        /// Also act as a member that stores nothing: acknowledge ATTACH (with `CREDIT` bytes of
        /// credit), every WRITE, FLUSH and CHECKPOINT at once, and end the connection at
        /// DETACH. A test double for the primary's side of wbp (its flow control) on one VM:
        /// what it acknowledges is not on any flash.
        #[arg(long)]
        ack_without_storing: bool,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Attack {
    /// The handshake under another secret (the proof sent anyway).
    WrongSecret,
    /// A handshake the listener must refuse at its HELLO: an unknown host id (`--me`), or a known
    /// one from another address (`--from`).
    Impostor,
    /// A replayed handshake: a recorded HELLO and AUTH on a new connection.
    Replay,
    /// The listener's own proof sent back as the client's.
    Reflect,
    /// A valid session, then a ping with one byte flipped.
    Flip,
    /// A valid session, then a ping sent twice (the same sequence number).
    ReplayFrame,
    /// Connections sending random bytes.
    Junk,
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).expect("/dev/urandom");
    b
}

fn identity(cli: &Cli, secret: Option<[u8; 32]>) -> Result<Identity> {
    let text = std::fs::read(&cli.secret_file).with_context(|| format!("cannot read {}", cli.secret_file))?;
    let secret = match secret {
        Some(s) => s,
        None => parse_secret(&text).context("the secret file does not hold 64 hex digits")?,
    };
    let cluster = parse_cluster_id(cli.cluster.as_bytes()).context("the cluster id is not 32 hex digits")?;
    Ok(Identity { cluster, host: cli.me, secret })
}

fn connect(to: SocketAddrV4, from: Option<Ipv4Addr>) -> Result<TcpStream> {
    let s = match from {
        None => TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))?,
        // std cannot bind a source address before connecting.
        Some(ip) => bind_connect(ip, to)?,
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Connects to `to` from source address `ip` (the wrong-address case needs a source other than
/// the one the kernel picks).
fn bind_connect(ip: Ipv4Addr, to: SocketAddrV4) -> Result<TcpStream> {
    use std::os::fd::FromRawFd;
    extern "C" {
        fn socket(domain: i32, ty: i32, proto: i32) -> i32;
        fn bind(fd: i32, addr: *const u8, len: u32) -> i32;
        fn connect(fd: i32, addr: *const u8, len: u32) -> i32;
        fn close(fd: i32) -> i32;
    }
    let sa = |a: Ipv4Addr, port: u16| -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&2u16.to_ne_bytes()); // AF_INET
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&a.octets());
        b
    };
    let (src, dst) = (sa(ip, 0), sa(*to.ip(), to.port()));
    // SAFETY: plain socket calls on a descriptor this function owns; the addresses are valid
    // sockaddr_in buffers of 16 bytes.
    unsafe {
        let fd = socket(2, 1, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        if bind(fd, src.as_ptr(), 16) != 0 || connect(fd, dst.as_ptr(), 16) != 0 {
            let e = std::io::Error::last_os_error();
            close(fd);
            bail!("connect from {ip}: {e}");
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

fn plain_frame(m: &Msg<'_>) -> Vec<u8> {
    let mut p = vec![0u8; m.payload_len()];
    m.encode_payload(&mut p).expect("sized");
    let h = Header { cmd: m.cmd(), len: p.len() as u32, volume: 0, seq: 0 }.to_bytes();
    [&h[..], &p, &[0u8; TAG_BYTES]].concat()
}

/// A frame as read: the decoded header, its bytes, the payload and the tag.
type Frame = (Header, [u8; HEADER_BYTES], Vec<u8>, [u8; TAG_BYTES]);

/// Reads one frame: header, payload, tag. `None` when the other side closed first.
fn read_frame(s: &mut TcpStream) -> Result<Option<Frame>> {
    let mut hb = [0u8; HEADER_BYTES];
    match s.read_exact(&mut hb) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let h = Header::decode(&hb).map_err(|e| anyhow::anyhow!("bad header: {}", e.describe()))?;
    let mut p = vec![0u8; h.len as usize];
    s.read_exact(&mut p)?;
    let mut t = [0u8; TAG_BYTES];
    s.read_exact(&mut t)?;
    Ok(Some((h, hb, p, t)))
}

/// Whether the other side closed the connection (EOF, or a reset: the module's sockets do not
/// linger, so its close is a reset) within the read timeout.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

struct Client {
    s: TcpStream,
    session: Session,
    sent: Vec<u8>,
    welcome: Welcome,
}

/// The client's handshake. `proof_key`: the secret the AUTH proof is made with (a wrong one for
/// the attack); the server's proof is checked only when it is the real one.
fn client(me: &Identity, to: SocketAddrV4, server: u32, from: Option<Ipv4Addr>, attack: Option<Attack>) -> Result<Client> {
    client_as(me, to, server, from, attack, Role::Control)
}

/// [`client`] for a connection of `role`.
fn client_as(me: &Identity, to: SocketAddrV4, server: u32, from: Option<Ipv4Addr>, attack: Option<Attack>, role: Role) -> Result<Client> {
    let mut s = connect(to, from)?;
    let hello = handshake::hello(me, server, role, random());
    let hf = plain_frame(&Msg::Hello(hello));
    s.write_all(&hf)?;
    let Some((_, _, p, _)) = read_frame(&mut s)? else { bail!("the listener closed the connection after the hello") };
    let h = Header { cmd: Cmd::Welcome, len: p.len() as u32, volume: 0, seq: 0 };
    let Msg::Welcome(w) = decode(&h, &p).map_err(|e| anyhow::anyhow!("bad welcome: {}", e.describe()))? else { bail!("not a welcome") };
    let (proof, key) = match attack {
        Some(Attack::WrongSecret) => {
            let t = handshake::Transcript::new(&me.cluster, me.host, server, role, w.version, w.features, &hello.nonce, &w.nonce);
            (t.client_proof::<HmacSha256>(&me.secret), t.session_key::<HmacSha256>(&me.secret))
        }
        Some(Attack::Reflect) => (w.proof, [0; 32]),
        _ => handshake::on_welcome::<HmacSha256>(me, &hello, &w).map_err(|e| anyhow::anyhow!("the listener's proof: {}", e.describe()))?,
    };
    let af = plain_frame(&Msg::Auth(proof));
    s.write_all(&af)?;
    Ok(Client { s, session: Session::new(key, Dir::ToServer), sent: [hf, af].concat(), welcome: w })
}

fn sealed(session: &mut Session, m: &Msg<'_>) -> Vec<u8> {
    let mut p = vec![0u8; m.payload_len()];
    // The codec encodes the fixed part; a WRITE's data follows it.
    let fixed = m.encode_payload(&mut p).expect("sized");
    if let Msg::Write(_, data) = m {
        p[fixed..].copy_from_slice(data);
    }
    let (h, t) = session.seal::<ChaChaPoly>(m.cmd(), 0, p.len(), [&p[..]]).expect("valid");
    [&h[..], &p, &t].concat()
}

/// One ping; `Ok(None)` when the listener closed instead of answering.
fn ping(c: &mut Client, stamp: u64) -> Result<Option<Duration>> {
    let t0 = Instant::now();
    let f = sealed(&mut c.session, &Msg::Ping { stamp });
    if c.s.write_all(&f).is_err() {
        return Ok(None);
    }
    let Some((_, hb, p, t)) = read_frame(&mut c.s)? else { return Ok(None) };
    match c.session.open::<ChaChaPoly>(&hb, &p, &t) {
        Ok((_, Msg::PingAck { stamp: s })) if s == stamp => Ok(Some(t0.elapsed())),
        Ok((_, m)) => bail!("a wrong answer to a ping: {:?}", m.cmd()),
        Err(e) => bail!("the listener's frame does not verify: {}", e.describe()),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Action::Ping { target: Target { to, server, from }, count } => {
            let me = identity(&cli, None)?;
            let mut c = client(&me, to, server, from, None)?;
            let mut total = Duration::ZERO;
            for i in 1..=count {
                total += ping(&mut c, i)?.context("the listener closed the session")?;
            }
            println!("ok: {count} authenticated pings, mean {} us", total.as_micros() / u128::from(count.max(1)));
        }
        Action::Attack { target: Target { to, server, from }, kind, count } => attack(&cli, to, server, from, kind, count)?,
        Action::Serve { listen, client, client_addr, connections, ack_without_storing } => {
            serve(&cli, listen, client, client_addr, connections, ack_without_storing)?
        }
        Action::Replicate { target: Target { to, server, from }, ref uuid, volume_sectors, region_bytes, count, first, sectors, checkpoint, checkpoint_epoch, flip } => {
            let uuid: [u8; 16] = handshake::parse_hex(uuid.as_bytes()).context("--uuid: expected 32 hex digits")?;
            let me = identity(&cli, None)?;
            let mut c = client_as(&me, to, server, from, None, Role::Data)?;
            let want = Replicate { uuid, volume_sectors, region_bytes, count, first, sectors, checkpoint, checkpoint_epoch, flip };
            replicate(&mut c, me.host, &want)?;
        }
    }
    Ok(())
}

fn attack(cli: &Cli, to: SocketAddrV4, server: u32, from: Option<Ipv4Addr>, kind: Attack, count: u64) -> Result<()> {
    let real = identity(cli, None)?;
    let refused = |what: &str| println!("refused: {what}");
    match kind {
        Attack::WrongSecret => {
            let mut wrong = real;
            wrong.secret[0] ^= 0xff;
            let mut c = client(&wrong, to, server, from, Some(kind))?;
            if ping(&mut c, 1)?.is_some() {
                bail!("the listener answered a session made with a wrong secret");
            }
            refused("the listener closed the connection after an AUTH made with a wrong secret");
        }
        Attack::Impostor => {
            match client(&real, to, server, from, None) {
                Err(e) => refused(&format!("{e:#}")),
                Ok(mut c) => {
                    if ping(&mut c, 1)?.is_some() {
                        bail!("the listener served host {} it does not know", real.host);
                    }
                    refused("closed after the handshake");
                }
            }
        }
        Attack::Replay => {
            let c = client(&real, to, server, from, None)?;
            let recorded = c.sent.clone();
            drop(c);
            let mut s = connect(to, from)?;
            let (hello, auth) = recorded.split_at(HEADER_BYTES + Cmd::Hello.fixed_len().unwrap_or(0) + TAG_BYTES);
            s.write_all(hello)?;
            let Some(_) = read_frame(&mut s)? else { bail!("no welcome to the replayed hello") };
            s.write_all(auth)?;
            if !closed_by_peer(&mut s) {
                bail!("the listener kept a connection whose AUTH was replayed");
            }
            refused("the listener closed the connection after a replayed AUTH");
        }
        Attack::Reflect => {
            let mut c = client(&real, to, server, from, Some(kind))?;
            let _ = &c.welcome;
            if !closed_by_peer(&mut c.s) {
                bail!("the listener kept a connection whose AUTH was its own proof");
            }
            refused("the listener closed the connection after its own proof came back");
        }
        Attack::Flip | Attack::ReplayFrame => {
            let mut c = client(&real, to, server, from, None)?;
            ping(&mut c, 1)?.context("no answer to a genuine ping")?;
            let f = sealed(&mut c.session, &Msg::Ping { stamp: 2 });
            let bad = if kind == Attack::Flip {
                let mut b = f.clone();
                let at = random::<1>()[0] as usize % b.len();
                b[at] ^= 1 << (random::<1>()[0] % 8);
                b
            } else {
                c.s.write_all(&f)?;
                read_frame(&mut c.s)?.context("no answer to the second genuine ping")?;
                f
            };
            c.s.write_all(&bad)?;
            match read_frame(&mut c.s) {
                Ok(None) | Err(_) => refused("the listener closed the connection without answering"),
                Ok(Some(_)) => bail!("the listener answered a tampered or replayed frame"),
            }
        }
        Attack::Junk => {
            let t0 = Instant::now();
            let mut bytes = 0u64;
            for i in 0..count {
                let Ok(mut s) = connect(to, from) else { continue };
                let r = random::<8>();
                let len = 1 + (u16::from_le_bytes([r[0], r[1]]) as usize % 4096);
                let mut junk = vec![0u8; len];
                std::fs::File::open("/dev/urandom")?.read_exact(&mut junk)?;
                // Every other one starts like a frame: the magic and version, a random command.
                if i % 2 == 1 && len >= 8 {
                    junk[..5].copy_from_slice(b"PFNW\x01");
                }
                let _ = s.write_all(&junk);
                // Nothing more comes: the listener sees the end rather than waiting for it.
                let _ = s.shutdown(std::net::Shutdown::Write);
                bytes += len as u64;
                let _ = closed_by_peer(&mut s);
            }
            refused(&format!("{count} junk connections ({bytes} bytes) in {:.1} s", t0.elapsed().as_secs_f64()));
        }
    }
    Ok(())
}

/// Credit granted by `serve --ack-without-storing`: more than any test's share.
const CREDIT: u64 = 1 << 30;

/// What a member that stores nothing answers to `m` (`None`: the connection ends).
fn member_answer(m: &Msg<'_>, n: &mut Served) -> Result<Option<Msg<'static>>> {
    Ok(Some(match *m {
        Msg::Ping { stamp } => {
            n.pings += 1;
            Msg::PingAck { stamp }
        }
        Msg::Attach(a) => Msg::AttachOk(AttachOk { uuid: a.uuid, gen: a.gen, contiguous: 0, checkpoint: 0, credit: CREDIT }),
        Msg::Write(h, _) => {
            n.writes += 1;
            Msg::WriteAck { serial: h.serial, credit: CREDIT }
        }
        Msg::Flush { id } => Msg::FlushAck { id, errno: 0 },
        Msg::Checkpoint { gen, epoch, serial } => {
            n.checkpoints += 1;
            Msg::CheckpointAck { gen, epoch, serial }
        }
        Msg::Detach { .. } => return Ok(None),
        ref m => bail!("unexpected {}", m.cmd().name()),
    }))
}

/// What `serve` answered on one connection.
#[derive(Default)]
struct Served {
    pings: u64,
    writes: u64,
    checkpoints: u64,
}

fn serve(cli: &Cli, at: SocketAddrV4, client_id: u32, client_addr: Ipv4Addr, connections: u64, member: bool) -> Result<()> {
    let me = identity(cli, None)?;
    let l = TcpListener::bind(at)?;
    for _ in 0..connections {
        let (mut s, from) = l.accept()?;
        // A member's connection is idle while its primary is (it pings every few seconds).
        s.set_read_timeout(Some(Duration::from_secs(if member { 120 } else { 10 })))?;
        let Some((h, _, p, _)) = read_frame(&mut s)? else { continue };
        let Ok(Msg::Hello(hello)) = decode(&h, &p) else { bail!("not a hello") };
        let SocketAddr::V4(from) = from else { bail!("not IPv4") };
        let table = |id: u32| (id == client_id).then_some(client_addr);
        handshake::check_hello(&me, &hello, table, from.ip(), None).map_err(|e| anyhow::anyhow!("hello refused: {}", e.describe()))?;
        let (w, pending) = handshake::welcome::<HmacSha256>(&me, &hello, random()).map_err(|e| anyhow::anyhow!("{}", e.describe()))?;
        s.write_all(&plain_frame(&Msg::Welcome(w)))?;
        let Some((h, _, p, _)) = read_frame(&mut s)? else { bail!("no auth") };
        let Ok(Msg::Auth(proof)) = decode(&h, &p) else { bail!("not an auth") };
        let key = pending.on_auth::<HmacSha256>(&proof).map_err(|e| anyhow::anyhow!("auth refused: {}", e.describe()))?;
        let mut session = Session::new(key, Dir::ToClient);
        let mut n = Served::default();
        while let Some((_, hb, p, t)) = read_frame(&mut s)? {
            let (_, m) = session.open::<ChaChaPoly>(&hb, &p, &t).map_err(|e| anyhow::anyhow!("frame refused: {}", e.describe()))?;
            let answer = if member {
                member_answer(&m, &mut n)?
            } else {
                let Msg::Ping { stamp } = m else { bail!("unexpected {:?}", m.cmd()) };
                n.pings += 1;
                Some(Msg::PingAck { stamp })
            };
            let Some(a) = answer else { break };
            s.write_all(&sealed(&mut session, &a))?;
        }
        if member {
            println!("served host {}: {} pings, {} writes and {} checkpoints acknowledged (nothing stored)", hello.from, n.pings, n.writes, n.checkpoints);
        } else {
            println!("served host {}: {} pings", hello.from, n.pings);
        }
    }
    Ok(())
}

/// What `replicate` sends.
struct Replicate {
    uuid: [u8; 16],
    volume_sectors: u64,
    region_bytes: u64,
    count: u64,
    first: u64,
    sectors: u32,
    checkpoint: Option<u64>,
    checkpoint_epoch: u64,
    flip: bool,
}

/// The data of the write with `serial`: every byte a function of the serial and its place.
fn pattern(serial: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (serial.wrapping_mul(31).wrapping_add(i as u64 / 512 * 7) & 0xff) as u8).collect()
}

/// Sends `m` and reads the answer; `None` when the peer closed instead.
fn call(c: &mut Client, m: &Msg<'_>) -> Result<Option<Vec<u8>>> {
    let f = sealed(&mut c.session, m);
    if c.s.write_all(&f).is_err() {
        return Ok(None);
    }
    answer_frame(c)
}

/// The next answer's payload, checked by the session, re-encoded for the caller to decode.
fn answer_frame(c: &mut Client) -> Result<Option<Vec<u8>>> {
    let Ok(Some((_, hb, p, t))) = read_frame(&mut c.s) else { return Ok(None) };
    c.session.open::<ChaChaPoly>(&hb, &p, &t).map_err(|e| anyhow::anyhow!("the peer's frame does not verify: {}", e.describe()))?;
    Ok(Some([&hb[..], &p].concat()))
}

fn decoded(frame: &[u8]) -> Result<Msg<'_>> {
    let h = Header::decode(&frame[..HEADER_BYTES]).map_err(|e| anyhow::anyhow!("{}", e.describe()))?;
    decode(&h, &frame[HEADER_BYTES..]).map_err(|e| anyhow::anyhow!("{}", e.describe()))
}

fn replicate(c: &mut Client, me: u32, w: &Replicate) -> Result<()> {
    let attach = Msg::Attach(Attach {
        uuid: w.uuid,
        owner: me,
        block_size: 4096,
        gen: 1,
        epoch: 1,
        region_bytes: w.region_bytes,
        name: *b"pf-wire-volume\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
        sectors: w.volume_sectors,
    });
    let f = call(c, &attach)?.context("the peer closed the connection at ATTACH")?;
    let ok = match decoded(&f)? {
        Msg::AttachOk(ok) => ok,
        Msg::AttachRefuse(r) => bail!("ATTACH refused: errno {}", r.errno),
        m => bail!("a wrong answer to ATTACH: {}", m.cmd().name()),
    };
    let mut acked = 0u64;
    let mut credit = ok.credit;
    let len = w.sectors as usize * 512;
    for i in 0..w.count {
        let serial = w.first + i;
        let lba = (serial * u64::from(w.sectors) * 3) % (w.volume_sectors - u64::from(w.sectors));
        let lba = lba - lba % 8;
        let data = pattern(serial, len);
        let m = Msg::Write(WriteHead { serial, lba, sectors: w.sectors, flags: if serial.is_multiple_of(4) { WRITE_FUA } else { 0 } }, &data);
        let last = i + 1 == w.count;
        if w.flip && last {
            let mut f = sealed(&mut c.session, &m);
            let at = HEADER_BYTES + WRITE_FIXED_BYTES + len / 2;
            f[at] ^= 0x10;
            c.s.write_all(&f)?;
            if answer_frame(c)?.is_some() {
                bail!("the peer answered a WRITE whose data was flipped in transit");
            }
            println!("refused: a write flipped in transit cut the connection ({acked} writes acked before it)");
            return Ok(());
        }
        let f = call(c, &m)?.context("the peer closed the connection at a WRITE")?;
        match decoded(&f)? {
            Msg::WriteAck { serial: s, credit: k } if s == serial => {
                acked += 1;
                credit = k;
            }
            Msg::WriteNack { serial: s, errno } => bail!("WRITE {s} refused: errno {errno}"),
            m => bail!("a wrong answer to WRITE {serial}: {}", m.cmd().name()),
        }
    }
    let f = call(c, &Msg::Flush { id: 7 })?.context("the peer closed the connection at FLUSH")?;
    match decoded(&f)? {
        Msg::FlushAck { id: 7, errno: 0 } => {}
        m => bail!("a wrong answer to FLUSH: {:?}", m),
    }
    let mut cp = String::new();
    if let Some(serial) = w.checkpoint {
        let m = Msg::Checkpoint { gen: 1, epoch: w.checkpoint_epoch, serial };
        if w.checkpoint_epoch != 1 {
            if call(c, &m)?.is_some() {
                bail!("the peer answered a checkpoint of another epoch");
            }
            println!("refused: a checkpoint of epoch {} cut the connection ({acked} writes acked before it)", w.checkpoint_epoch);
            return Ok(());
        }
        let f = call(c, &m)?.context("the peer closed the connection at CHECKPOINT")?;
        match decoded(&f)? {
            Msg::CheckpointAck { serial: s, .. } if s == serial => cp = format!(", checkpoint {serial} acked"),
            m => bail!("a wrong answer to CHECKPOINT: {:?}", m),
        }
    }
    // DETACH, then the peer's close: by then it has released the replica, so the next attach
    // of the same replica finds it free.
    let _ = c.s.write_all(&sealed(&mut c.session, &Msg::Detach { uuid: w.uuid, gen: 1 }));
    if !closed_by_peer(&mut c.s) {
        bail!("the peer did not close the connection after DETACH");
    }
    println!(
        "ok: replica attached (checkpoint {}, credit {} KiB), {acked} writes acked, flush ok{cp}, credit now {} KiB",
        ok.checkpoint,
        ok.credit / 1024,
        credit / 1024
    );
    Ok(())
}
