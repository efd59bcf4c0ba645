//! The thin layer over libsanlock_client (sanlock 3.8, `/usr/include/sanlock*.h`): the C
//! structures and the few calls peerflash uses, each wrapped in a function that returns a
//! [`SanlockError`] for a negative result. Every call goes to the local sanlock daemon over its
//! socket (`SANLOCK_RUN_DIR`, default `/run/sanlock`).

use std::ffi::{c_char, c_int};
use std::os::fd::{FromRawFd, OwnedFd};

/// `SANLK_NAME_LEN`.
pub const NAME_LEN: usize = 48;
/// `SANLK_PATH_LEN`.
pub const PATH_LEN: usize = 1024;

/// `SANLK_ACQUIRE_IDLIVE`: the lease's owner host is alive.
pub const ACQUIRE_IDLIVE: i32 = -243;
/// `SANLK_ACQUIRE_OWNED`: the lease is held.
pub const ACQUIRE_OWNED: i32 = -244;
/// `SANLK_ACQUIRE_OTHER`: another host took it meanwhile.
pub const ACQUIRE_OTHER: i32 = -245;
/// `SANLK_ACQUIRE_OWNED_RETRY`.
pub const ACQUIRE_OWNED_RETRY: i32 = -247;
/// `SANLK_RES_PERSISTENT`: the lease outlives its process (it becomes an orphan the host
/// keeps holding while its daemon renews the host's delta lease).
pub const RES_PERSISTENT: u32 = 0x8;
/// `SANLK_ACQUIRE_ORPHAN`: take over this host's orphan of the lease if there is one.
pub const ACQUIRE_ORPHAN: u32 = 0x2;
/// `SANLK_ACQUIRE_LOCKSPACE`: this host has not joined the lease's lockspace.
pub const ACQUIRE_LOCKSPACE: i32 = -241;

/// `struct sanlk_disk`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Disk {
    pub path: [c_char; PATH_LEN],
    pub offset: u64,
    pub pad1: u32,
    pub pad2: u32,
}

/// `struct sanlk_lockspace`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Lockspace {
    pub name: [c_char; NAME_LEN],
    pub host_id: u64,
    pub flags: u32,
    pub host_id_disk: Disk,
}

/// `struct sanlk_resource` followed by its single disk (the C struct ends in `disks[0]`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Resource {
    pub lockspace_name: [c_char; NAME_LEN],
    pub name: [c_char; NAME_LEN],
    pub lver: u64,
    pub data64: u64,
    pub data32: u32,
    pub unused: u32,
    pub flags: u32,
    pub num_disks: u32,
    pub disk: Disk,
}

/// `struct sanlk_host`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub host_id: u64,
    pub generation: u64,
    /// Last renewal of the host's delta lease, in the renewing daemon's `CLOCK_MONOTONIC`
    /// seconds.
    pub timestamp: u64,
    pub io_timeout: u32,
    pub flags: u32,
}

#[link(name = "sanlock_client")]
extern "C" {
    fn sanlock_write_lockspace(
        ls: *mut Lockspace,
        max_hosts: c_int,
        flags: u32,
        io_timeout: u32,
    ) -> c_int;
    fn sanlock_write_resource(
        res: *mut Resource,
        max_hosts: c_int,
        num_hosts: c_int,
        flags: u32,
    ) -> c_int;
    fn sanlock_add_lockspace_timeout(ls: *mut Lockspace, flags: u32, io_timeout: u32) -> c_int;
    fn sanlock_inq_lockspace(ls: *mut Lockspace, flags: u32) -> c_int;
    fn sanlock_get_hosts(
        ls_name: *const c_char,
        host_id: u64,
        hss: *mut *mut Host,
        count: *mut c_int,
        flags: u32,
    ) -> c_int;
    fn sanlock_register() -> c_int;
    fn sanlock_acquire(
        sock: c_int,
        pid: c_int,
        flags: u32,
        count: c_int,
        res: *mut *mut Resource,
        opt: *mut libc::c_void,
    ) -> c_int;
    fn sanlock_release(
        sock: c_int,
        pid: c_int,
        flags: u32,
        count: c_int,
        res: *mut *mut Resource,
    ) -> c_int;
}

/// A negative result of a sanlock call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sanlock {call} failed: {}", describe(*.code))]
pub struct SanlockError {
    /// The call.
    pub call: &'static str,
    /// Its result (a negative errno or a `SANLK_*` code).
    pub code: i32,
}

/// A message for a sanlock result code.
pub fn describe(code: i32) -> String {
    match code {
        ACQUIRE_IDLIVE => "the lease is held by a live host (-243)".into(),
        ACQUIRE_OWNED | ACQUIRE_OWNED_RETRY => format!("the lease is held ({code})"),
        ACQUIRE_OTHER => "another host acquired the lease meanwhile (-245)".into(),
        ACQUIRE_LOCKSPACE => "this host has not joined the lockspace (-241)".into(),
        -201 => "sanlock internal error (-201)".into(),
        -202 => "lease i/o timed out (-202)".into(),
        -220..=-210 => format!("lease i/o error or damaged lease on the datastore ({code})"),
        -229..=-221 => format!("no valid sanlock lease at that place on the datastore ({code})"),
        -262 => "the host id is in use by another host (-262)".into(),
        -2 | -111 => format!(
            "{} ({code}): is the sanlock daemon running (socket in $SANLOCK_RUN_DIR, default /run/sanlock), and does the datastore path exist?",
            std::io::Error::from_raw_os_error(-code)
        ),
        c if c < 0 && c > -200 => format!("{} ({c})", std::io::Error::from_raw_os_error(-c)),
        c => format!("error {c}"),
    }
}

fn check(call: &'static str, rv: c_int) -> Result<c_int, SanlockError> {
    if rv < 0 {
        Err(SanlockError { call, code: rv })
    } else {
        Ok(rv)
    }
}

/// Copies `s` into a NUL-terminated C field (cut to leave room for the NUL).
pub fn fill<const N: usize>(s: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    for (o, b) in out.iter_mut().zip(s.bytes().take(N - 1)) {
        *o = b as c_char;
    }
    out
}

/// A disk at `offset` bytes of `path`.
pub fn disk(path: &str, offset: u64) -> Disk {
    Disk {
        path: fill(path),
        offset,
        pad1: 0,
        pad2: 0,
    }
}

/// `max_hosts` as the C int sanlock takes.
fn host_count(call: &'static str, max_hosts: u32) -> Result<c_int, SanlockError> {
    c_int::try_from(max_hosts).map_err(|_| SanlockError {
        call,
        code: -libc::EINVAL,
    })
}

/// Writes an empty lockspace for `max_hosts` hosts (the daemon does the I/O).
pub fn write_lockspace(
    ls: &Lockspace,
    max_hosts: u32,
    io_timeout: u32,
) -> Result<(), SanlockError> {
    let mut ls = *ls;
    let max = host_count("write_lockspace", max_hosts)?;
    // SAFETY: `ls` is a valid, initialised `sanlk_lockspace` the call only reads.
    check("write_lockspace", unsafe {
        sanlock_write_lockspace(&mut ls, max, 0, io_timeout)
    })
    .map(drop)
}

/// Writes a free resource lease.
pub fn write_resource(res: &Resource, max_hosts: u32) -> Result<(), SanlockError> {
    let mut r = *res;
    let max = host_count("write_resource", max_hosts)?;
    // SAFETY: `r` is a `sanlk_resource` with `num_disks == 1` followed by that disk.
    check("write_resource", unsafe {
        sanlock_write_resource(&mut r, max, 0, 0)
    })
    .map(drop)
}

/// Joins the lockspace as `ls.host_id` (waits until the host's delta lease is held).
pub fn add_lockspace(ls: &Lockspace, io_timeout: u32) -> Result<(), SanlockError> {
    let mut ls = *ls;
    // SAFETY: `ls` is a valid `sanlk_lockspace`.
    check("add_lockspace", unsafe {
        sanlock_add_lockspace_timeout(&mut ls, 0, io_timeout)
    })
    .map(drop)
}

/// Whether this host has joined the lockspace (0), or why not.
pub fn inq_lockspace(ls: &Lockspace) -> Result<(), SanlockError> {
    let mut ls = *ls;
    // SAFETY: `ls` is a valid `sanlk_lockspace`.
    check("inq_lockspace", unsafe {
        sanlock_inq_lockspace(&mut ls, 0)
    })
    .map(drop)
}

/// What the local daemon knows of host `host_id` in `lockspace`.
pub fn get_host(lockspace: &str, host_id: u64) -> Result<Option<Host>, SanlockError> {
    let name: [c_char; NAME_LEN] = fill(lockspace);
    let mut hss: *mut Host = std::ptr::null_mut();
    let mut count: c_int = 0;
    // SAFETY: `name` is NUL-terminated; on success the library sets `hss` to a malloc'ed array
    // of `count` hosts, which is freed below.
    let rv = unsafe { sanlock_get_hosts(name.as_ptr(), host_id, &mut hss, &mut count, 0) };
    check("get_hosts", rv)?;
    let n = usize::try_from(count).unwrap_or(0);
    let out = if hss.is_null() || n == 0 {
        None
    } else {
        // SAFETY: `hss` points to `n` initialised `sanlk_host` structures.
        let hosts = unsafe { std::slice::from_raw_parts(hss, n) };
        hosts.iter().find(|h| h.host_id == host_id).copied()
    };
    if !hss.is_null() {
        // SAFETY: allocated with malloc by libsanlock_client and not used after this.
        unsafe { libc::free(hss.cast()) };
    }
    Ok(out)
}

/// Registers this process with the daemon: leases acquired through the returned connection
/// belong to this process and are released when it closes (or the process dies).
pub fn register() -> Result<OwnedFd, SanlockError> {
    // SAFETY: no arguments; returns a new socket fd or a negative error.
    let fd = check("register", unsafe { sanlock_register() })?;
    // SAFETY: `fd` is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Acquires `res` for the process registered on `sock` (`flags`: `SANLK_ACQUIRE_*`).
pub fn acquire(sock: c_int, res: &mut Resource, flags: u32) -> Result<(), SanlockError> {
    let mut p: *mut Resource = res;
    // SAFETY: `p` points to one valid resource with one disk; pid -1 means the registered
    // process of `sock`; no options.
    check("acquire", unsafe {
        sanlock_acquire(sock, -1, flags, 1, &mut p, std::ptr::null_mut())
    })
    .map(drop)
}

/// Releases `res` held by the process registered on `sock`.
pub fn release(sock: c_int, res: &mut Resource) -> Result<(), SanlockError> {
    let mut p: *mut Resource = res;
    // SAFETY: as for `acquire`.
    check("release", unsafe {
        sanlock_release(sock, -1, 0, 1, &mut p)
    })
    .map(drop)
}
